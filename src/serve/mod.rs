//! `flowprint serve`: the daemon beside the flow collectors.
//!
//! ```text
//!  UDP sockets ─▶ collector (decode) ─▶ dispatcher ─▶ bounded queue ─▶ worker 0 (shard 0 hosts)
//!                                                   └─▶ bounded queue ─▶ worker N (shard N hosts)
//!  rule files ─▶ watcher / SIGHUP / POST /reload ─▶ RuleStore (compile aside, swap) ─▶ workers
//!  DNS refresher ─▶ DnsMap ─▶ workers        flusher ─▶ inventory database (SQLite/PostgreSQL)
//!  HTTP API (axum): /health /hosts /hosts/{addr} /rules /reload /metrics
//! ```
//!
//! Every stage is bounded; what a full queue drops is counted (`/metrics`). SIGINT/SIGTERM stop
//! intake, drain the queues, write the inventory and exit. SIGHUP reloads the rules.

pub mod api;
pub mod config;
mod error;
pub mod fleet;
pub mod http;
pub mod outbox;
pub mod pipeline;
pub mod prom;
pub mod retry;
pub mod summaries;
pub mod token;
pub mod web;

use crate::collect::{Collector, CollectorConfig};
use crate::dns::DnsMap;
use crate::dns::resolve::{HickoryResolver, RefreshSettings, Refresher, ResolverSettings};
use crate::eval::{LocalNets, shard_of};
use crate::infer::{HostSummary, InferConfig, Inventory};
use crate::store::watch::{WatchConfig, WatchStatus, Watcher};
use crate::store::{ReloadReport, RuleStore, StoreConfig};
use config::ServeConfig;
use error::Part;
pub use error::ServeError;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use pipeline::{Counters, Shard, ShardState};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// What the API and the background threads share.
pub struct Daemon {
    /// The configuration it runs with.
    pub config: ServeConfig,
    /// The rules.
    pub store: Arc<RuleStore>,
    /// The shards of the host inventory.
    pub shards: Vec<Arc<Shard>>,
    /// Flow counters.
    pub counters: Arc<Counters>,
    /// Names ↔ addresses.
    pub dns: Arc<RwLock<DnsMap>>,
    /// Active resolution of the rules' names, when enabled.
    pub refresher: Option<Arc<Refresher>>,
    /// The bearer token.
    pub token: String,
    /// When it started.
    pub started: Instant,
    /// Collector counters, refreshed by the collector thread.
    pub collector: Mutex<crate::collect::CollectorStats>,
    /// The bound collector sockets.
    pub listeners: Vec<crate::collect::Listener>,
    /// The bound API address.
    pub api_addr: SocketAddr,
    /// Worker role: what the fleet members report.
    pub fleet: Option<Arc<fleet::FleetStatus>>,
    /// Every host's summary, for the pages and `/hosts` ([`summaries`]).
    summary_cache: summaries::SummaryCache,
    /// (ms, flows evaluated, hosts labelled) every [`HISTORY_EVERY`], the last day at most.
    history: Mutex<std::collections::VecDeque<(i64, u64, usize)>>,
    inventory_db: Mutex<Option<Box<dyn crate::inventory::Store>>>,
    flushes: Mutex<(u64, u64)>,
    /// The DNS map's version at the last write of its pairs that succeeded (pairs read from
    /// the inventory are not changes): a flush writes only the pairs changed since.
    dns_saved: std::sync::atomic::AtomicU64,
    /// The API's connections and refused requests.
    pub http: Arc<http::HttpStats>,
    /// Slots of the expensive requests (`api.max_concurrent`).
    pub expensive: Arc<tokio::sync::Semaphore>,
    /// Reloads that failed reading files, retried.
    pub retry: retry::ReloadRetry,
    /// The rule watcher's state, when the rules are watched.
    pub watch: OnceLock<Arc<WatchStatus>>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("api", &self.api_addr)
            .finish_non_exhaustive()
    }
}

fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Only the first daemon of a process installs the global recorder.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Logs a reload's outcome: what changed, or why it failed.
pub fn log_reload(r: &ReloadReport) {
    if !r.ok {
        tracing::error!(
            trigger = %r.trigger,
            errors = r.errors,
            generation = r.generation,
            "rules reload failed; the running rules stay:\n{}",
            r.diagnostics.join("")
        );
    } else if !r.unchanged {
        tracing::info!(
            trigger = %r.trigger,
            generation = r.generation,
            rules = r.rules,
            compile_ms = format!("{:.1}", r.compile_ms),
            added = ?r.added,
            removed = ?r.removed,
            modified = ?r.modified,
            packs = ?r.packs_changed,
            "rules reloaded"
        );
    } else {
        tracing::debug!(trigger = %r.trigger, "rules unchanged");
    }
}

impl Daemon {
    /// Reloads the rules. Workers move to a new set at their next batch (or within 200 ms when
    /// idle); readers always see a shard with the snapshot its evidence refers to.
    pub fn reload(&self, trigger: &str) -> ReloadReport {
        let r = self.store.reload(trigger);
        log_reload(&r);
        self.after_reload(&r);
        r
    }

    fn after_reload(&self, r: &ReloadReport) {
        self.retry.note(r);
        if let Some(r) = &self.refresher {
            r.set_names(self.store.current().ruleset.domain_names());
        }
    }

    /// Takes a sample of the history the overview charts (called by the flusher).
    pub fn sample_history(self: &Arc<Self>) {
        let labelled = self
            .cached_summaries()
            .hosts
            .iter()
            .filter(|h| h.os.is_some() || !h.software.is_empty() || h.device.is_some())
            .count();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut h = self
            .history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        h.push_back((
            now,
            self.counters.evaluated.load(Ordering::Relaxed),
            labelled,
        ));
        while h.len() > HISTORY_SAMPLES {
            h.pop_front();
        }
    }

    /// The samples of the history, oldest first.
    pub fn history(&self) -> Vec<(i64, u64, usize)> {
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
    }

    /// A host's epochs: (number, start, reason).
    pub fn host_epochs(&self, addr: IpAddr) -> Vec<(u32, String, String)> {
        let n = self.shards.len() as u32;
        let g = self.shards[shard_of(addr, n) as usize].lock();
        let Some(h) = g.inventory().host(addr) else {
            return Vec::new();
        };
        let mut out = vec![(
            0,
            crate::flow::time::format_rfc3339(h.first_seen),
            String::new(),
        )];
        out.truncate(usize::from(h.epochs().is_empty()));
        out.extend(h.epochs().iter().map(|e| {
            (
                e.epoch,
                crate::flow::time::format_rfc3339(e.started),
                e.reason.clone(),
            )
        }));
        out
    }

    /// One host's summary and explanation.
    pub fn host(&self, addr: IpAddr) -> Option<(HostSummary, String)> {
        let n = self.shards.len() as u32;
        let g = self.shards[shard_of(addr, n) as usize].lock();
        let summary = g.inventory().summary(&g.snapshot.ruleset, addr)?;
        let explanation = g
            .inventory()
            .explain(&g.snapshot.ruleset, addr)
            .unwrap_or_default();
        Some((summary, explanation))
    }

    /// Writes the inventory (and the DNS map) to the database, if there is one.
    pub fn flush(&self) -> Result<usize, crate::inventory::DbError> {
        let mut db = self
            .inventory_db
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(db) = db.as_mut() else {
            return Ok(0);
        };
        // Only the hosts changed since the last write, a few thousand at a time, so that a
        // shard's worker waits for at most one chunk; and only as many as had changed when the
        // write began (oldest change first, the shards in turn), so that hosts changing again
        // during a write under load cannot keep the others (or another shard) waiting for it.
        let mut written = 0;
        let mut result = Ok(());
        // Worker role: the fleet members write their shards (with their marks) themselves.
        let shards: &[Arc<Shard>] = if self.fleet.is_some() {
            &[]
        } else {
            &self.shards
        };
        let mut left: Vec<usize> = shards
            .iter()
            .map(|s| s.lock().inventory().dirty_len())
            .collect();
        'rounds: while left.iter().any(|&n| n > 0) {
            for (s, left) in shards.iter().zip(left.iter_mut()) {
                if *left == 0 {
                    continue;
                }
                let take = (*left).min(FLUSH_CHUNK);
                let rows = {
                    let mut g = s.lock();
                    let ShardState {
                        scanner, snapshot, ..
                    } = &mut *g;
                    scanner.inventory_mut().take_dirty(&snapshot.ruleset, take)
                };
                *left = if rows.len() < take { 0 } else { *left - take };
                if rows.is_empty() {
                    continue;
                }
                written += rows.len();
                if let Err(e) = db.save(&rows) {
                    // Written again by the next flush.
                    let mut g = s.lock();
                    for r in &rows {
                        if let Ok(a) = r.host.parse() {
                            g.inventory_mut().mark_dirty(a);
                        }
                    }
                    result = Err(e);
                    break 'rounds;
                }
            }
        }
        let result = result.and_then(|()| {
            // Only the pairs changed since the last write that succeeded: a large map is not
            // written again every flush.
            let saved = self.dns_saved.load(Ordering::Relaxed);
            let (pairs, version) = {
                let map = self
                    .dns
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                (
                    crate::inventory::StoredDnsPair::changed_in(&map, Some(saved)),
                    map.version(),
                )
            };
            db.save_dns(&pairs)?;
            self.dns_saved.fetch_max(version, Ordering::Relaxed);
            self.counters
                .dns_pairs_written
                .fetch_add(pairs.len() as u64, Ordering::Relaxed);
            if self.fleet.is_some() {
                // The fleet's workers agree on names through the database: what the others
                // learned comes back here.
                let stored = db.load_dns()?;
                let mut map = self
                    .dns
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for p in stored {
                    if let Ok(addr) = p.addr.parse() {
                        map.insert_saved(
                            addr,
                            &p.name,
                            p.first_seen,
                            p.last_seen,
                            p.ttl,
                            crate::dns::Source::parse(&p.source),
                        );
                    }
                }
            }
            Ok(())
        });
        let mut f = self
            .flushes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok(()) => {
                f.0 += 1;
                Ok(written)
            }
            Err(e) => {
                f.1 += 1;
                Err(e)
            }
        }
    }
}

/// Hosts written per transaction (and per hold of a shard's lock) by a flush.
const FLUSH_CHUNK: usize = 2000;
/// How often the overview's history is sampled.
pub const HISTORY_EVERY: Duration = Duration::from_secs(10);
/// Samples kept (a day at one every 10 s).
const HISTORY_SAMPLES: usize = 8640;

/// Where the collector's flows go: the local workers, or (collector role) the fleet's bus.
struct Intake<'a> {
    dispatcher: pipeline::Dispatcher,
    outbox: Option<outbox::Outbox>,
    counters: &'a Counters,
}

impl Intake<'_> {
    fn push(&mut self, flow: crate::flow::Flow) {
        match self.outbox.as_mut() {
            Some(o) => {
                self.counters.received.fetch_add(1, Ordering::Relaxed);
                o.push(flow);
            }
            None => self.dispatcher.push(flow),
        }
    }

    /// Sends every partial batch: to the workers, or published (and counted).
    fn flush(&mut self) {
        self.dispatcher.flush();
        if let Some(o) = self.outbox.as_mut() {
            o.flush(self.counters);
        }
    }
}

/// `<hostname>-<pid>-<random>`: unique per process, readable in the lease bucket.
/// `N` random bytes from the system (member ids, publisher ids, API tokens).
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], ServeError> {
    use std::io::Read;
    let path = std::path::Path::new("/dev/urandom");
    let mut bytes = [0u8; N];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(ServeError::file("random source", path))?;
    Ok(bytes)
}

fn default_member_id() -> Result<String, ServeError> {
    let host =
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "worker".into());
    let host: String = host
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let r: [u8; 3] = random_bytes()?;
    Ok(format!(
        "{host}-{}-{:02x}{:02x}{:02x}",
        std::process::id(),
        r[0],
        r[1],
        r[2]
    ))
}

/// The rule store's configuration of a daemon configuration.
pub fn store_config(config: &ServeConfig) -> StoreConfig {
    StoreConfig {
        embedded: config.rules.embedded,
        paths: config.rules.paths.clone(),
        packs_dirs: config.rules.packs_dir.iter().cloned().collect(),
        overrides: config.rules.overrides.clone(),
        state_dir: Some(config.state_dir.clone()),
    }
}

/// Runs the daemon until SIGINT/SIGTERM (or `stop` is set). `on_ready` gets the daemon once
/// every socket is bound.
pub fn run(mut config: ServeConfig, stop: Arc<AtomicBool>) -> Result<(), ServeError> {
    config.validate().map_err(ServeError::Config)?;
    let worker_role = config.fleet.consume.clone();
    if worker_role.is_some() && config.fleet.packs && config.rules.packs_dir.is_none() {
        // Published packs are installed here, and loaded like any installed pack.
        config.rules.packs_dir = Some(config.state_dir.join("packs"));
    }
    if worker_role.is_some() && config.inventory.is_none() {
        tracing::warn!(
            "fleet worker without an inventory database: a shard taken over starts empty, and a worker that dies loses its evidence"
        );
    }
    let _ = prometheus();
    // Rules first: without good rules there is nothing to run.
    if let Some(d) = &config.rules.packs_dir {
        std::fs::create_dir_all(d).map_err(ServeError::file("packs directory", d))?;
    }
    let store = Arc::new(RuleStore::open(store_config(&config))?);
    let boot = store.boot_status();
    if boot.from_last_good {
        tracing::error!(
            saved_at = boot.last_good_saved_at.as_deref().unwrap_or("?"),
            "THE RULES ON DISK DO NOT COMPILE: running the last good set instead; fix them and save (or SIGHUP) to load them:\n{}",
            boot.disk_diagnostics.join("")
        );
    }
    let snap = store.current();
    tracing::info!(
        rules = snap.ruleset.len(),
        packs = ?snap.packs.iter().map(|p| format!("{} {}", p.name, p.version.as_deref().unwrap_or("-"))).collect::<Vec<_>>(),
        "rules loaded"
    );
    let local = Arc::new(if config.local_nets.is_empty() {
        LocalNets::default()
    } else {
        LocalNets::new(config.local_nets.clone())
    });
    let infer = InferConfig {
        half_life_ms: config.half_life.0.map(|d| d.as_millis() as i64),
        max_hosts: config.max_hosts,
        idle_ms: config.idle.0.map(|d| d.as_millis() as i64),
        ..InferConfig::default()
    };
    // The inventory database: what it holds is where we start from.
    let mut db = match &config.inventory {
        Some(spec) => Some(crate::inventory::open(spec)?),
        None => None,
    };
    let mut dns = DnsMap::new();
    let mut full = Inventory::with_config(infer.clone());
    if let Some(db) = db.as_mut() {
        // Worker role: each shard's hosts are read when its lease is taken.
        let stored = if worker_role.is_some() {
            Vec::new()
        } else {
            db.load_all()?
        };
        // Evidence of rules not loaded (a pack removed, other rules than those that wrote the
        // inventory) is kept and written back, never deleted by the daemon.
        let restored = full.restore(&stored, &snap.ruleset);
        if let Some(note) = restored.kept_note() {
            tracing::warn!("inventory: {note}");
        }
        for p in db.load_dns()? {
            if let Ok(addr) = p.addr.parse() {
                dns.insert_saved(
                    addr,
                    &p.name,
                    p.first_seen,
                    p.last_seen,
                    p.ttl,
                    crate::dns::Source::parse(&p.source),
                );
            }
        }
        tracing::info!(
            hosts = full.len(),
            kept_rows = restored.kept_rows,
            kept_rules = restored.kept_rules.len(),
            bad_hosts = restored.bad_hosts,
            dns_pairs = dns.len(),
            "inventory restored"
        );
    }
    for log in &config.dns.logs {
        let path = log.display().to_string();
        let n = crate::dns::passive::load_into(&mut dns, &path, &mut |e| {
            tracing::warn!("{e}");
        })
        .part("passive DNS")?;
        tracing::info!(path, answers = n, "passive DNS loaded");
    }
    // Worker role: one shard state per shard of the fleet (empty until owned).
    let n = if worker_role.is_some() {
        config.fleet.shards as usize
    } else {
        config.workers
    };
    let mut inventories = Vec::with_capacity(n);
    for i in 0..n {
        let rest = full.split_off(|a| shard_of(a, n as u32) == i as u32);
        inventories.push(full);
        full = rest;
    }
    if worker_role.is_none() {
        // `max_hosts` bounds the daemon's hosts: each worker holds its share.
        for inv in &mut inventories {
            inv.set_max_hosts((config.max_hosts / n).max(1));
        }
    }
    let dns = Arc::new(RwLock::new(dns));
    let counters = Arc::new(Counters::default());
    let (dispatcher, workers) = pipeline::start(
        store.clone(),
        inventories,
        local,
        dns.clone(),
        counters.clone(),
        config.queue,
    )
    .part("workers")?;
    let refresher = if config.dns.resolve {
        let settings = ResolverSettings::default();
        let resolver = if config.dns.servers.is_empty() {
            HickoryResolver::from_system(settings).part("DNS resolver")?
        } else {
            HickoryResolver::with_servers(&config.dns.servers, settings).part("DNS resolver")?
        };
        Some(Arc::new(Refresher::new(
            snap.ruleset.domain_names(),
            Arc::new(resolver),
            dns.clone(),
            RefreshSettings {
                min_ttl: config.dns.min_ttl.0,
                max_ttl: config.dns.max_ttl.0,
                ..RefreshSettings::default()
            },
        )))
    } else {
        None
    };
    let mut collector = Collector::bind(&CollectorConfig {
        // Worker role: flows come from the bus, not from sockets.
        listen: if worker_role.is_some() {
            Vec::new()
        } else {
            config.listen.clone()
        },
        recv_buffer: config.recv_buffer,
        decoder: config.collector.decoder(),
        max_exporter_series: config.collector.max_exporter_series,
        ..CollectorConfig::default()
    })
    .part("collector")?;
    for l in collector.listeners() {
        tracing::info!(
            addr = %l.addr,
            granted_kib = l.granted / 1024,
            requested_kib = l.requested / 1024,
            "collecting"
        );
    }
    let token = token::api_token(&config)?;
    let listen_failed = |error| ServeError::Listen {
        what: "API",
        addr: config.api.listen.to_string(),
        error,
    };
    let api_listener = std::net::TcpListener::bind(config.api.listen).map_err(listen_failed)?;
    api_listener.set_nonblocking(true).map_err(listen_failed)?;
    let api_addr = api_listener.local_addr().map_err(listen_failed)?;
    if !api_addr.ip().is_loopback() {
        tracing::warn!(%api_addr, "the API listens off loopback: every endpoint but /health needs the token");
    }
    let daemon = Arc::new(Daemon {
        listeners: collector.listeners().to_vec(),
        config: config.clone(),
        store: store.clone(),
        shards: workers.shards.clone(),
        counters,
        dns,
        refresher: refresher.clone(),
        token,
        started: Instant::now(),
        collector: Mutex::new(collector.stats()),
        api_addr,
        fleet: worker_role
            .as_ref()
            .map(|_| Arc::new(fleet::FleetStatus::default())),
        summary_cache: Default::default(),
        history: Mutex::new(Default::default()),
        inventory_db: Mutex::new(db),
        flushes: Mutex::new((0, 0)),
        dns_saved: Default::default(),
        http: Default::default(),
        expensive: Arc::new(tokio::sync::Semaphore::new(config.api.max_concurrent)),
        retry: Default::default(),
        watch: OnceLock::new(),
    });
    // A boot that could not read every file is retried like a reload.
    daemon.retry.note(&store.last_report());

    // Threads: signals, watcher, DNS refresher, flusher, API.
    let bg_stop = Arc::new(AtomicBool::new(false));
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .part("signal handler")?;
    let signals_handle = signals.handle();
    let signal_thread = {
        let d = daemon.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if sig == signal_hook::consts::SIGHUP {
                        // Also watch every rules directory again, whatever became of them.
                        if let Some(w) = d.watch.get() {
                            w.rewatch();
                        }
                        d.reload("signal");
                    } else {
                        tracing::info!(signal = sig, "stopping");
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            })
            .part("starting a thread")?
    };
    let _watcher: Option<Watcher> = if config.rules.watch
        && (!config.rules.paths.is_empty()
            || config.rules.packs_dir.is_some()
            || config.rules.overrides.is_some())
    {
        let d = daemon.clone();
        let w = crate::store::watch::spawn(
            store.clone(),
            WatchConfig {
                debounce: config.rules.debounce.0,
                poll: config.rules.poll.0,
            },
            move |r| match r {
                Ok(r) => {
                    log_reload(&r);
                    d.after_reload(&r);
                }
                Err(e) => tracing::warn!("{e}"),
            },
        )
        .part("rules watcher")?;
        tracing::info!(dirs = ?w.watched, mode = w.status.mode(), "watching the rules");
        let _ = daemon.watch.set(w.status.clone());
        Some(w)
    } else {
        None
    };
    let refresh_thread = match &refresher {
        Some(r) => Some(r.spawn(bg_stop.clone()).part("thread dns-refresh")?),
        None => None,
    };
    // Reloads that could not read the files are retried (see `retry`).
    let retry_thread = {
        let d = daemon.clone();
        let stop = bg_stop.clone();
        std::thread::Builder::new()
            .name("rule-retry".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if d.retry.take_due() {
                        d.reload("retry");
                    }
                }
            })
            .part("starting a thread")?
    };
    let flush_thread = {
        let d = daemon.clone();
        let stop = bg_stop.clone();
        let every = config.flush_interval.0.max(Duration::from_millis(100));
        std::thread::Builder::new()
            .name("flush".into())
            .spawn(move || {
                let mut last = Instant::now();
                let mut sampled: Option<Instant> = None;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    d.store.release_retired();
                    if sampled.is_none_or(|t| t.elapsed() >= HISTORY_EVERY) {
                        sampled = Some(Instant::now());
                        d.sample_history();
                    }
                    if last.elapsed() >= every {
                        last = Instant::now();
                        if let Err(e) = d.flush() {
                            tracing::error!("writing the inventory: {e}");
                        }
                    }
                }
            })
            .part("starting a thread")?
    };
    let (api_stop_tx, api_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let api_thread = {
        let d = daemon.clone();
        std::thread::Builder::new()
            .name("api".into())
            .spawn(move || -> std::io::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(api_listener)?;
                    let limits = http::Limits {
                        max_connections: d.config.api.max_connections,
                        header_timeout: d.config.api.header_timeout.0,
                        idle_timeout: d.config.api.idle_timeout.0,
                    };
                    let stats = d.http.clone();
                    http::serve(listener, api::router(d), limits, stats, api_stop_rx).await;
                    Ok::<(), std::io::Error>(())
                })
            })
            .part("starting a thread")?
    };
    let (members, pack_thread) = match &worker_role {
        Some(url) => {
            let id = match &config.fleet.id {
                Some(id) => id.clone(),
                None => default_member_id()?,
            };
            let set = config.fleet.owned_set().map_err(ServeError::Config)?;
            let local = Arc::new(if config.local_nets.is_empty() {
                LocalNets::default()
            } else {
                LocalNets::new(config.local_nets.clone())
            });
            let members = fleet::start(
                daemon.clone(),
                url,
                config.fleet.bus(),
                &id,
                &set,
                config.workers,
                local,
                infer.clone(),
                bg_stop.clone(),
            )?;
            tracing::info!(url, id, shards = %set, threads = config.workers, "fleet worker");
            let packs = if config.fleet.packs {
                Some(fleet::follow_packs(daemon.clone(), url, bg_stop.clone())?)
            } else {
                None
            };
            (members, packs)
        }
        None => (Vec::new(), None),
    };
    tracing::info!(api = %api_addr, workers = n, "flowprint serve is running");

    // The collector runs on this thread until stopped.
    let collector_stop = collector.stop_flag();
    let mut on_warning = |w: String| tracing::warn!("{w}");
    // Collector role: flows go to the bus, sharded by host, instead of to the local workers.
    let outbox = match &config.fleet.publish {
        Some(url) => {
            let bus = crate::fleet::Bus::connect(url, config.fleet.bus())?;
            let id: [u8; 16] = random_bytes()?;
            let publisher = crate::fleet::Publisher::new(
                if config.local_nets.is_empty() {
                    LocalNets::default()
                } else {
                    LocalNets::new(config.local_nets.clone())
                },
                config.fleet.shards,
                id,
            );
            tracing::info!(
                url,
                shards = config.fleet.shards,
                "publishing flows to the fleet"
            );
            Some(outbox::Outbox::new(
                bus,
                publisher,
                config.fleet.confirm_wait.0,
            ))
        }
        None => None,
    };
    let mut intake = Intake {
        dispatcher,
        outbox,
        counters: &daemon.counters,
    };
    while !stop.load(Ordering::Relaxed) {
        if collector.listeners().is_empty() {
            // Worker role: nothing to collect here.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        collector.run(
            Some(Instant::now() + Duration::from_millis(50)),
            &mut |f| intake.push(f),
            &mut on_warning,
        );
        intake.flush();
        *daemon
            .collector
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = collector.stats();
    }
    // Shutdown: stop intake, drain, write.
    collector_stop.store(true, Ordering::Relaxed);
    let stats = collector.shutdown(&mut |f| intake.push(f), &mut on_warning);
    intake.flush();
    // Collector role: refused batches get their remaining retries before the exit.
    let t = Instant::now();
    while intake.outbox.as_ref().is_some_and(outbox::Outbox::retrying)
        && t.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(200));
        intake.flush();
    }
    *daemon
        .collector
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = stats;
    let Intake { dispatcher, .. } = intake;
    drop(dispatcher);
    workers.join();
    bg_stop.store(true, Ordering::Relaxed);
    // Fleet members write, acknowledge and leave.
    for m in members {
        let _ = m.join();
    }
    if let Some(t) = pack_thread {
        let _ = t.join();
    }
    let _ = flush_thread.join();
    let _ = retry_thread.join();
    if let Some(t) = refresh_thread {
        let _ = t.join();
    }
    match daemon.flush() {
        Ok(n) if config.inventory.is_some() => tracing::info!(hosts = n, "inventory written"),
        Ok(_) => {}
        Err(e) => tracing::error!("writing the inventory: {e}"),
    }
    let _ = api_stop_tx.send(());
    match api_thread.join() {
        Ok(Err(e)) => tracing::error!("API: {e}"),
        Err(_) => tracing::error!("API thread panicked"),
        Ok(Ok(())) => {}
    }
    signals_handle.close();
    let _ = signal_thread.join();
    tracing::info!(
        received = daemon.counters.received.load(Ordering::Relaxed),
        evaluated = daemon.counters.evaluated.load(Ordering::Relaxed),
        dropped = daemon.counters.dropped.load(Ordering::Relaxed),
        "stopped"
    );
    Ok(())
}
