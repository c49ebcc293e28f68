//! Active resolution: flowprint asks DNS itself for the addresses of the names its rules test,
//! and keeps them in the [`DnsMap`] while they change.
//!
//! [`Resolve`] hides the resolver library: one blocking call per name, A and AAAA together,
//! CNAME chains followed (the addresses belong to the name asked for), a name that does not
//! exist or has no address as an empty answer, and only an unreachable or failing server as an
//! error. [`HickoryResolver`] implements it with `hickory-resolver` on a small tokio runtime of
//! its own, with hickory's cache off so that the TTLs seen are the server's.
//!
//! [`resolve_all`] resolves a list of names once. A [`Refresher`] keeps re-resolving them: each
//! name again after `refresh_fraction` of its (clamped) TTL, so that answers that rotate faster
//! than their TTL are caught; a failing server leaves the last answers in the map, marks the
//! name stale and is retried with a doubling backoff. It runs on a background thread
//! ([`Refresher::spawn`]) or is driven by [`Refresher::refresh_due`], which tests call with the
//! time of their choosing. Never more than `concurrency` lookups run at once.

use super::{DnsMap, Source};
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

/// Why a lookup failed: the server could not be asked, or did not answer usefully. A name that
/// does not exist or has no address is not an error but an empty [`Answer`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No answer within the timeout, after every attempt.
    #[error("timed out")]
    Timeout,
    /// The server answered with an error code (`SERVFAIL`, `REFUSED`, ...).
    #[error("server answered {0}")]
    Server(String),
    /// The server could not be reached (connection refused, no route, ...).
    #[error("cannot reach the server: {0}")]
    Network(String),
    /// The name is not a valid domain name.
    #[error("`{0}` is not a valid domain name")]
    InvalidName(String),
    /// The resolver could not be set up (no `/etc/resolv.conf`, no server given, ...).
    #[error("resolver configuration: {0}")]
    Config(String),
    /// Any other failure of the resolver.
    #[error("{0}")]
    Other(String),
}

/// Addresses of a name, each with its TTL in seconds.
pub type Addresses = Vec<(IpAddr, u32)>;

/// What kind of answer a name got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// At least one address.
    Addresses,
    /// The name exists but has no A or AAAA record.
    NoData,
    /// The name does not exist (NXDOMAIN).
    NxDomain,
}

/// The addresses of a name with their TTLs in seconds, and the kind of answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// A then AAAA addresses, each with its TTL in seconds (the smallest along a CNAME chain).
    pub addrs: Vec<(IpAddr, u32)>,
    /// Whether there were addresses, and if not, whether the name exists.
    pub kind: AnswerKind,
}

impl Answer {
    /// An answer from addresses alone (an empty list is [`AnswerKind::NoData`]).
    pub fn from_addrs(addrs: Vec<(IpAddr, u32)>) -> Answer {
        let kind = if addrs.is_empty() {
            AnswerKind::NoData
        } else {
            AnswerKind::Addresses
        };
        Answer { addrs, kind }
    }
}

/// A DNS resolver as flowprint needs it: addresses (A and AAAA) of a name with their TTLs.
///
/// CNAME chains are followed and the addresses returned belong to the name asked for. A name
/// that does not exist or has no address is `Ok(vec![])`; timeouts and server failures are
/// errors.
pub trait Resolve: Send + Sync {
    /// The A and AAAA addresses of `name`, each with its TTL in seconds.
    fn lookup(&self, name: &str) -> Result<Vec<(IpAddr, u32)>, ResolveError>;

    /// Like [`Resolve::lookup`], and tells a name without address from one that does not exist
    /// where the resolver knows.
    fn lookup_answer(&self, name: &str) -> Result<Answer, ResolveError> {
        self.lookup(name).map(Answer::from_addrs)
    }
}

/// Timeout and attempts of each query.
#[derive(Debug, Clone, Copy)]
pub struct ResolverSettings {
    /// How long to wait for each answer.
    pub timeout: Duration,
    /// How many times a query is sent before giving up (at least 1).
    pub attempts: usize,
}

impl Default for ResolverSettings {
    /// 2 s, 2 attempts.
    fn default() -> Self {
        ResolverSettings {
            timeout: Duration::from_secs(2),
            attempts: 2,
        }
    }
}

/// [`Resolve`] with `hickory-resolver`: a current-thread tokio runtime of its own drives it, so
/// callers block on plain threads (not from inside another async runtime). Its cache and the
/// hosts file are off: every lookup asks a server, and the TTLs are the server's.
pub struct HickoryResolver {
    runtime: tokio::runtime::Runtime,
    resolver: TokioResolver,
    servers: Vec<SocketAddr>,
}

impl std::fmt::Debug for HickoryResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HickoryResolver")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

impl HickoryResolver {
    /// Uses the servers of the system configuration (`/etc/resolv.conf` on Unix); its search
    /// domains are not used (names are asked as given, fully qualified).
    pub fn from_system(settings: ResolverSettings) -> Result<HickoryResolver, ResolveError> {
        let (config, options) = hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| ResolveError::Config(format!("system configuration: {e}")))?;
        if config.name_servers().is_empty() {
            return Err(ResolveError::Config(
                "the system configuration names no DNS server".into(),
            ));
        }
        HickoryResolver::build(config, options, settings)
    }

    /// Uses these servers (UDP, and TCP for truncated answers); hickory asks two at once and
    /// prefers the fastest.
    pub fn with_servers(
        servers: &[SocketAddr],
        settings: ResolverSettings,
    ) -> Result<HickoryResolver, ResolveError> {
        if servers.is_empty() {
            return Err(ResolveError::Config("no DNS server given".into()));
        }
        let name_servers = servers
            .iter()
            .map(|s| {
                let mut udp = ConnectionConfig::udp();
                udp.port = s.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = s.port();
                NameServerConfig::new(s.ip(), true, vec![udp, tcp])
            })
            .collect();
        HickoryResolver::build(
            ResolverConfig::from_name_servers(name_servers),
            ResolverOpts::default(),
            settings,
        )
    }

    fn build(
        config: ResolverConfig,
        mut options: ResolverOpts,
        settings: ResolverSettings,
    ) -> Result<HickoryResolver, ResolveError> {
        let mut servers = Vec::new();
        for ns in config.name_servers() {
            for c in &ns.connections {
                let s = SocketAddr::new(ns.ip, c.port);
                if !servers.contains(&s) {
                    servers.push(s);
                }
            }
        }
        apply_settings(&mut options, settings);
        let runtime = new_runtime()?;
        let resolver = {
            // hickory spawns its connection tasks on the runtime it is built in.
            let _context = runtime.enter();
            Resolver::builder_with_config(config, TokioRuntimeProvider::default())
                .with_options(options)
                .build()
                .map_err(|e| ResolveError::Config(e.to_string()))?
        };
        Ok(HickoryResolver {
            runtime,
            resolver,
            servers,
        })
    }

    /// The servers asked, in order.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }
}

fn new_runtime() -> Result<tokio::runtime::Runtime, ResolveError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ResolveError::Config(format!("cannot start the resolver runtime: {e}")))
}

fn apply_settings(opts: &mut ResolverOpts, settings: ResolverSettings) {
    opts.timeout = settings.timeout;
    // hickory counts retries after the first query.
    opts.attempts = settings.attempts.max(1) - 1;
    // Every lookup asks the server (tests/dns_live.rs sees stale answers otherwise).
    opts.cache_size = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.preserve_intermediates = true;
    opts.positive_min_ttl = None;
    opts.positive_max_ttl = None;
}

impl Resolve for HickoryResolver {
    fn lookup(&self, name: &str) -> Result<Vec<(IpAddr, u32)>, ResolveError> {
        self.lookup_answer(name).map(|a| a.addrs)
    }

    fn lookup_answer(&self, name: &str) -> Result<Answer, ResolveError> {
        let trimmed = name.trim_end_matches('.');
        let mut fqdn =
            Name::from_utf8(trimmed).map_err(|_| ResolveError::InvalidName(name.to_string()))?;
        if trimmed.is_empty() || fqdn.is_root() {
            return Err(ResolveError::InvalidName(name.to_string()));
        }
        fqdn.set_fqdn(true);
        let (a, aaaa) = self.runtime.block_on(futures_util::future::join(
            self.resolver.lookup(fqdn.clone(), RecordType::A),
            self.resolver.lookup(fqdn, RecordType::AAAA),
        ));
        combine(part_of(a), part_of(aaaa))
    }
}

/// The answer to one query type.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Addrs(Vec<(IpAddr, u32)>),
    NoData,
    NxDomain,
}

fn part_of(r: Result<Lookup, NetError>) -> Result<Part, ResolveError> {
    match r {
        Ok(lookup) => {
            // With a CNAME chain the answer holds its CNAME records too: the addresses at its
            // end are the query name's for as long as every link holds (hickory lowers the
            // TTLs itself only when it follows the chain over several queries).
            let answers = lookup.answers();
            let chain_ttl = answers
                .iter()
                .filter(|r| r.record_type() == RecordType::CNAME)
                .map(|r| r.ttl)
                .min()
                .unwrap_or(u32::MAX);
            let addrs: Vec<(IpAddr, u32)> = answers
                .iter()
                .filter_map(|r| r.data.ip_addr().map(|ip| (ip, r.ttl.min(chain_ttl))))
                .collect();
            Ok(if addrs.is_empty() {
                Part::NoData
            } else {
                Part::Addrs(addrs)
            })
        }
        Err(e) if e.is_nx_domain() => Ok(Part::NxDomain),
        Err(e) if e.is_no_records_found() => Ok(Part::NoData),
        Err(e) => Err(error_of(e)),
    }
}

fn error_of(e: NetError) -> ResolveError {
    match e {
        NetError::Timeout => ResolveError::Timeout,
        // SERVFAIL, REFUSED, ... as DNS tools write them.
        NetError::Dns(DnsError::ResponseCode(code)) => {
            ResolveError::Server(format!("{code:?}").to_uppercase())
        }
        NetError::Io(io) => ResolveError::Network(io.to_string()),
        NetError::NoConnections | NetError::Busy => ResolveError::Network(e.to_string()),
        e => ResolveError::Other(e.to_string()),
    }
}

/// Joins the A and AAAA answers. One query failing while the other has addresses gives those
/// addresses (as a stub resolver does); failing while the other says "no data" is an error,
/// since nothing is known then about the failed type.
fn combine(
    a: Result<Part, ResolveError>,
    aaaa: Result<Part, ResolveError>,
) -> Result<Answer, ResolveError> {
    let nx = Answer {
        addrs: Vec::new(),
        kind: AnswerKind::NxDomain,
    };
    match (a, aaaa) {
        (Ok(x), Ok(y)) => {
            let mut addrs = Vec::new();
            let mut nxdomain = false;
            for p in [x, y] {
                match p {
                    Part::Addrs(v) => {
                        for (ip, ttl) in v {
                            match addrs.iter_mut().find(|(a, _)| *a == ip) {
                                Some((_, t)) => *t = ttl.min(*t),
                                None => addrs.push((ip, ttl)),
                            }
                        }
                    }
                    Part::NxDomain => nxdomain = true,
                    Part::NoData => {}
                }
            }
            if addrs.is_empty() && nxdomain {
                Ok(nx)
            } else {
                Ok(Answer::from_addrs(addrs))
            }
        }
        (Ok(Part::Addrs(v)), Err(_)) | (Err(_), Ok(Part::Addrs(v))) => Ok(Answer::from_addrs(v)),
        (Ok(Part::NxDomain), Err(_)) | (Err(_), Ok(Part::NxDomain)) => Ok(nx),
        (Ok(Part::NoData), Err(e)) | (Err(e), Ok(Part::NoData)) | (Err(e), Err(_)) => Err(e),
    }
}

/// Runs `f` over `items` on at most `concurrency` threads at once (on the calling thread when
/// that is 1), results in the order of `items`.
fn bounded_map<T: Send>(
    items: &[String],
    concurrency: usize,
    f: &(dyn Fn(&str) -> T + Sync),
) -> Vec<T> {
    let workers = concurrency.max(1).min(items.len());
    if workers <= 1 {
        return items.iter().map(|s| f(s)).collect();
    }
    let next = AtomicUsize::new(0);
    let mut out: Vec<Option<T>> = (0..items.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        for h in handles {
            let done = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            for (i, t) in done {
                out[i] = Some(t);
            }
        }
    });
    out.into_iter().flatten().collect()
}

/// Resolves every name once, at most `concurrency` at a time; results in the order of `names`.
pub fn resolve_all<R: Resolve + ?Sized>(
    resolver: &R,
    names: &[String],
    concurrency: usize,
) -> Vec<(String, Result<Addresses, ResolveError>)> {
    resolve_all_answers(resolver, names, concurrency)
        .into_iter()
        .map(|(n, r)| (n, r.map(|a| a.addrs)))
        .collect()
}

/// [`resolve_all`] with the kind of each answer (no data, or no such name).
pub fn resolve_all_answers<R: Resolve + ?Sized>(
    resolver: &R,
    names: &[String],
    concurrency: usize,
) -> Vec<(String, Result<Answer, ResolveError>)> {
    let results = bounded_map(names, concurrency, &|n| resolver.lookup_answer(n));
    names.iter().cloned().zip(results).collect()
}

/// How a [`Refresher`] schedules lookups.
#[derive(Debug, Clone, Copy)]
pub struct RefreshSettings {
    /// TTLs below this count as this (servers that answer with TTL 0 or 1 are not hammered).
    pub min_ttl: Duration,
    /// TTLs above this count as this (a name is checked at least this often).
    pub max_ttl: Duration,
    /// Re-resolve after this fraction of the TTL (0 < f ≤ 1): below 1, answers that rotate
    /// faster than their TTL says are caught.
    pub refresh_fraction: f64,
    /// When to ask again about a name that has no address or does not exist.
    pub negative_ttl: Duration,
    /// Most lookups at once.
    pub concurrency: usize,
    /// Wait after a first failure; doubled after each further one.
    pub backoff: Duration,
    /// Longest wait after failures.
    pub max_backoff: Duration,
}

impl Default for RefreshSettings {
    /// TTLs clamped to 30 s – 1 h, refreshed at half of it, names without address every
    /// 5 min, 8 lookups at once, failures retried after 5 s doubling up to 5 min.
    fn default() -> Self {
        RefreshSettings {
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(3600),
            refresh_fraction: 0.5,
            negative_ttl: Duration::from_secs(300),
            concurrency: 8,
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// The shortest wait between two lookups of a name, whatever the settings.
const MIN_INTERVAL_MS: i64 = 1_000;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl RefreshSettings {
    /// Milliseconds until the next lookup of a name that got `answer`.
    pub fn delay_after_answer_ms(&self, answer: &Answer) -> i64 {
        let Some(ttl) = answer.addrs.iter().map(|(_, t)| *t).min() else {
            return ms(self.negative_ttl).max(MIN_INTERVAL_MS);
        };
        let ttl_ms = (i64::from(ttl) * 1000)
            .max(ms(self.min_ttl))
            .min(ms(self.max_ttl));
        let fraction = if self.refresh_fraction > 0.0 {
            self.refresh_fraction.min(1.0)
        } else {
            1.0
        };
        ((ttl_ms as f64 * fraction).round() as i64).max(MIN_INTERVAL_MS)
    }

    /// Milliseconds until the next lookup after `failures` failures in a row (≥ 1).
    pub fn delay_after_failures_ms(&self, failures: u32) -> i64 {
        let doublings = failures.saturating_sub(1).min(62);
        ms(self.backoff)
            .saturating_mul(1i64 << doublings)
            .min(ms(self.max_backoff))
            .max(MIN_INTERVAL_MS)
    }
}

/// What a [`Refresher`] knows about one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameStatus {
    /// The name.
    pub name: String,
    /// The addresses of the last successful lookup, with their TTLs.
    pub answers: Vec<(IpAddr, u32)>,
    /// The kind of the last successful answer.
    pub kind: Option<AnswerKind>,
    /// When the last lookup succeeded (ms since the epoch).
    pub last_success_ms: Option<i64>,
    /// The last failure and when it happened.
    pub last_error: Option<(i64, ResolveError)>,
    /// Failures since the last success.
    pub failures: u32,
    /// When the name is looked up next; `None`: at once (never tried yet).
    pub next_refresh_ms: Option<i64>,
}

impl NameStatus {
    fn new(name: String) -> NameStatus {
        NameStatus {
            name,
            answers: Vec::new(),
            kind: None,
            last_success_ms: None,
            last_error: None,
            failures: 0,
            next_refresh_ms: None,
        }
    }

    /// Whether the last lookup failed: the answers kept are older than the last attempt.
    pub fn is_stale(&self) -> bool {
        self.failures > 0
    }

    fn is_due(&self, now_ms: i64) -> bool {
        self.next_refresh_ms.is_none_or(|t| t <= now_ms)
    }
}

/// What one [`Refresher::refresh_due`] round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Names looked up.
    pub looked_up: usize,
    /// Lookups that gave addresses.
    pub with_addresses: usize,
    /// Lookups that gave no address (no data, or no such name).
    pub empty: usize,
    /// Lookups that failed.
    pub failed: usize,
    /// (address, name) answers written to the map.
    pub inserted: usize,
}

/// Keeps a [`DnsMap`] up to date with the addresses of a set of names (see the module docs).
pub struct Refresher {
    resolver: Arc<dyn Resolve>,
    map: Arc<RwLock<DnsMap>>,
    settings: RefreshSettings,
    /// Sorted by name.
    names: Mutex<Vec<NameStatus>>,
    /// Held during a round: rounds never overlap, so lookups never exceed `concurrency`.
    round: Mutex<()>,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher")
            .field("settings", &self.settings)
            .field("names", &lock(&self.names).len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn status_list(names: impl IntoIterator<Item = impl Into<String>>) -> Vec<String> {
    let mut v: Vec<String> = names
        .into_iter()
        .map(|n| n.into().trim_end_matches('.').to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(ms)
        .unwrap_or(0)
}

impl Refresher {
    /// A refresher of `names` (lower-cased, deduplicated; all due at once) into `map`.
    pub fn new(
        names: impl IntoIterator<Item = impl Into<String>>,
        resolver: Arc<dyn Resolve>,
        map: Arc<RwLock<DnsMap>>,
        settings: RefreshSettings,
    ) -> Refresher {
        let names = status_list(names)
            .into_iter()
            .map(NameStatus::new)
            .collect();
        Refresher {
            resolver,
            map,
            settings,
            names: Mutex::new(names),
            round: Mutex::new(()),
        }
    }

    /// Replaces the set of names (after a rules reload): names kept keep their status, new
    /// ones are due at once, names gone are no longer looked up (their answers stay in the map
    /// until they expire).
    pub fn set_names(&self, names: impl IntoIterator<Item = impl Into<String>>) {
        let mut current = lock(&self.names);
        let old = std::mem::take(&mut *current);
        *current = status_list(names)
            .into_iter()
            .map(
                |n| match old.binary_search_by(|s| s.name.as_str().cmp(&n)) {
                    Ok(i) => old[i].clone(),
                    Err(_) => NameStatus::new(n),
                },
            )
            .collect();
    }

    /// The map kept up to date.
    pub fn map(&self) -> &Arc<RwLock<DnsMap>> {
        &self.map
    }

    /// The settings.
    pub fn settings(&self) -> &RefreshSettings {
        &self.settings
    }

    /// Looks up every name due at `now_ms` (at most `concurrency` at once) and writes the
    /// answers into the map as seen at `now_ms`. Blocks until all are done; rounds called from
    /// several threads run one after the other.
    pub fn refresh_due(&self, now_ms: i64) -> RoundReport {
        let _round = lock(&self.round);
        let due: Vec<String> = lock(&self.names)
            .iter()
            .filter(|s| s.is_due(now_ms))
            .map(|s| s.name.clone())
            .collect();
        let mut report = RoundReport {
            looked_up: due.len(),
            ..RoundReport::default()
        };
        if due.is_empty() {
            return report;
        }
        let results = resolve_all_answers(&*self.resolver, &due, self.settings.concurrency);
        let mut names = lock(&self.names);
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        for (name, result) in results {
            let status = match names.binary_search_by(|s| s.name.cmp(&name)) {
                Ok(i) => &mut names[i],
                Err(_) => continue, // dropped by set_names meanwhile
            };
            match result {
                Ok(answer) => {
                    if answer.addrs.is_empty() {
                        report.empty += 1;
                    } else {
                        report.with_addresses += 1;
                    }
                    for &(addr, ttl) in &answer.addrs {
                        map.insert(addr, &name, now_ms, ttl, Source::Resolved);
                        report.inserted += 1;
                    }
                    status.next_refresh_ms =
                        Some(now_ms.saturating_add(self.settings.delay_after_answer_ms(&answer)));
                    status.kind = Some(answer.kind);
                    status.answers = answer.addrs;
                    status.last_success_ms = Some(now_ms);
                    status.failures = 0;
                }
                Err(e) => {
                    report.failed += 1;
                    status.failures = status.failures.saturating_add(1);
                    status.last_error = Some((now_ms, e));
                    status.next_refresh_ms = Some(
                        now_ms
                            .saturating_add(self.settings.delay_after_failures_ms(status.failures)),
                    );
                }
            }
        }
        report
    }

    /// When the next name is due (ms since the epoch); `None` without names.
    pub fn next_due(&self) -> Option<i64> {
        lock(&self.names)
            .iter()
            .map(|s| s.next_refresh_ms.unwrap_or(i64::MIN))
            .min()
    }

    /// The status of every name, sorted by name.
    pub fn status(&self) -> Vec<NameStatus> {
        lock(&self.names).clone()
    }

    /// The status of one name.
    pub fn status_of(&self, name: &str) -> Option<NameStatus> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let names = lock(&self.names);
        names
            .binary_search_by(|s| s.name.cmp(&name))
            .ok()
            .map(|i| names[i].clone())
    }

    /// Names whose last lookup failed (their last answers are kept).
    pub fn stale_names(&self) -> Vec<String> {
        lock(&self.names)
            .iter()
            .filter(|s| s.is_stale())
            .map(|s| s.name.clone())
            .collect()
    }

    /// Refreshes on the clock until `stop` is set: a round, then a sleep until the next name
    /// is due (waking every 100 ms to look at `stop`).
    pub fn run(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            self.refresh_due(now_ms());
            let until = self.next_due().unwrap_or(i64::MAX);
            loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let now = now_ms();
                if now >= until {
                    break;
                }
                let nap = (until - now).min(100) as u64;
                std::thread::sleep(Duration::from_millis(nap));
            }
        }
    }

    /// Runs [`Refresher::run`] on a thread of its own, named `dns-refresh`.
    pub fn spawn(
        self: &Arc<Self>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("dns-refresh".into())
            .spawn(move || me.run(&stop))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str, ttl: u32) -> (IpAddr, u32) {
        (s.parse().unwrap(), ttl)
    }

    #[test]
    fn a_and_aaaa_answers_combine() {
        let a = Ok(Part::Addrs(vec![v4("192.0.2.1", 60)]));
        let aaaa = Ok(Part::Addrs(vec![v4("2001:db8::1", 30)]));
        let got = combine(a, aaaa).unwrap();
        assert_eq!(got.kind, AnswerKind::Addresses);
        assert_eq!(got.addrs.len(), 2);

        let got = combine(Ok(Part::NoData), Ok(Part::NxDomain)).unwrap();
        assert_eq!(got.kind, AnswerKind::NxDomain);
        let got = combine(Ok(Part::NoData), Ok(Part::NoData)).unwrap();
        assert_eq!(got.kind, AnswerKind::NoData);

        // One type failing: addresses of the other are kept, "no data" is not trusted.
        let got = combine(
            Ok(Part::Addrs(vec![v4("192.0.2.1", 60)])),
            Err(ResolveError::Timeout),
        )
        .unwrap();
        assert_eq!(got.addrs, [v4("192.0.2.1", 60)]);
        assert_eq!(
            combine(Ok(Part::NoData), Err(ResolveError::Timeout)),
            Err(ResolveError::Timeout)
        );
        // The same address twice keeps the smaller TTL.
        let got = combine(
            Ok(Part::Addrs(vec![v4("192.0.2.1", 60), v4("192.0.2.1", 20)])),
            Ok(Part::NoData),
        )
        .unwrap();
        assert_eq!(got.addrs, [v4("192.0.2.1", 20)]);
    }

    #[test]
    fn delays_follow_ttl_fraction_clamps_and_backoff() {
        let s = RefreshSettings {
            min_ttl: Duration::from_secs(10),
            max_ttl: Duration::from_secs(100),
            refresh_fraction: 0.5,
            negative_ttl: Duration::from_secs(60),
            concurrency: 1,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(20),
        };
        let ans =
            |ttls: &[u32]| Answer::from_addrs(ttls.iter().map(|&t| v4("192.0.2.1", t)).collect());
        assert_eq!(
            s.delay_after_answer_ms(&ans(&[40, 80])),
            20_000,
            "smallest TTL"
        );
        assert_eq!(s.delay_after_answer_ms(&ans(&[1])), 5_000, "min_ttl");
        assert_eq!(s.delay_after_answer_ms(&ans(&[86_400])), 50_000, "max_ttl");
        assert_eq!(s.delay_after_answer_ms(&ans(&[])), 60_000, "negative");
        let backoff: Vec<i64> = (1..=6).map(|f| s.delay_after_failures_ms(f)).collect();
        assert_eq!(backoff, [2_000, 4_000, 8_000, 16_000, 20_000, 20_000]);
        assert_eq!(s.delay_after_failures_ms(u32::MAX), 20_000);
    }

    #[test]
    fn bounded_map_keeps_order_and_bound() {
        let items: Vec<String> = (0..50).map(|i| i.to_string()).collect();
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let out = bounded_map(&items, 4, &|s| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
            running.fetch_sub(1, Ordering::SeqCst);
            s.parse::<usize>().unwrap()
        });
        assert_eq!(out, (0..50).collect::<Vec<_>>());
        assert!(most.load(Ordering::SeqCst) <= 4);
    }

    #[test]
    fn invalid_names_are_errors_not_queries() {
        let r = HickoryResolver::with_servers(
            &["127.0.0.1:9".parse().unwrap()],
            ResolverSettings::default(),
        )
        .unwrap();
        assert!(matches!(r.lookup(""), Err(ResolveError::InvalidName(_))));
        assert!(matches!(
            r.lookup("a..b"),
            Err(ResolveError::InvalidName(_))
        ));
    }
}
