//! What the daemon's parts share ([`Daemon`]) and the queries over it that the API and the pages
//! ask: one host, its epochs, the history the overview charts, a reload.
//!
//! A query takes one shard's lock at a time and never two; every list of all hosts, and every
//! count over them, comes from the cached summaries ([`super::summaries`]), never from a pass
//! of its own over the shards.

use super::config::ServeConfig;
use super::pipeline::{Counters, Shard};
use super::{http, log_reload, member, retry, summaries};
use crate::dns::DnsMap;
use crate::dns::resolve::Refresher;
use crate::eval::shard_of;
use crate::infer::HostSummary;
use crate::store::watch::WatchStatus;
use crate::store::{ReloadReport, RuleStore};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// How often the overview's history is sampled.
pub const HISTORY_EVERY: Duration = Duration::from_secs(10);
/// How old the last list of host summaries may get before a history sample has it computed
/// (nobody reading the pages or `/hosts` meanwhile).
pub const HISTORY_REFRESH: Duration = Duration::from_secs(60);
/// Samples kept (a day at one every 10 s).
const HISTORY_SAMPLES: usize = 8640;

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
    pub fleet: Option<Arc<member::FleetStatus>>,
    /// Every host's summary, for the pages and `/hosts` ([`summaries`]).
    pub(super) summary_cache: summaries::SummaryCache,
    /// Every [`HISTORY_EVERY`], the last day at most: (ms, flows evaluated, hosts labelled
    /// in the summaries computed since the sample before, if any were).
    pub(super) history: Mutex<VecDeque<(i64, u64, Option<usize>)>>,
    /// When the summaries counted by the last sample were computed (ms).
    pub(super) history_counted: std::sync::atomic::AtomicI64,
    /// The inventory database, when there is one ([`super::flush`]).
    pub(super) inventory_db: Mutex<Option<Box<dyn crate::inventory::Store>>>,
    /// Flushes (succeeded, failed).
    pub(super) flushes: Mutex<(u64, u64)>,
    /// The DNS map's version at the last write of its pairs that succeeded (pairs read from
    /// the inventory are not changes): a flush writes only the pairs changed since.
    pub(super) dns_saved: AtomicU64,
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

impl Daemon {
    /// Reloads the rules. Workers move to a new set at their next batch (or within 200 ms when
    /// idle); readers always see a shard with the snapshot its evidence refers to.
    pub fn reload(&self, trigger: &str) -> ReloadReport {
        let r = self.store.reload(trigger);
        log_reload(&r);
        self.after_reload(&r);
        r
    }

    /// What follows every reload, whoever triggered it: the retry's bookkeeping and the names
    /// the refresher resolves.
    pub(super) fn after_reload(&self, r: &ReloadReport) {
        self.retry.note(r);
        if let Some(r) = &self.refresher {
            r.set_names(self.store.current().ruleset.domain_names());
        }
    }

    /// Takes a sample of the history the overview charts (called by the flusher): the flows
    /// evaluated so far, and the count of labelled hosts of the summaries computed since the
    /// last sample. The pages and `/hosts` compute them while they are read; when nobody has
    /// for [`HISTORY_REFRESH`], the sample has them computed in the background (for a later
    /// sample), so that the chart of a daemon nobody watches still gets a point a minute
    /// without every host being scored every 10 s.
    pub fn sample_history(self: &Arc<Self>) {
        let last = self.summary_cache.peek().map_or(self.started, |s| s.at);
        if last.elapsed() >= HISTORY_REFRESH {
            self.refresh_summaries_in_background();
        }
        let labelled = self.summary_cache.peek().and_then(|s| {
            let before = self.history_counted.swap(s.at_ms, Ordering::Relaxed);
            (before != s.at_ms).then_some(s.labelled)
        });
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut h = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        h.push_back((
            now,
            self.counters.evaluated.load(Ordering::Relaxed),
            labelled,
        ));
        while h.len() > HISTORY_SAMPLES {
            h.pop_front();
        }
    }

    /// The samples of the history, oldest first: (ms, flows evaluated, hosts labelled when
    /// the summaries were computed since the sample before).
    pub fn history(&self) -> Vec<(i64, u64, Option<usize>)> {
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
    }

    /// A host's epochs: (number, start, reason).
    pub fn host_epochs(&self, addr: IpAddr) -> Vec<(u32, String, String)> {
        let n = self.shards.len() as u32;
        let g = self.shards[shard_of(addr, n) as usize].lock();
        let Some(h) = g.hosts().host(addr) else {
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
        let summary = g.hosts().summary(&g.snapshot.ruleset, addr)?;
        let explanation = g
            .hosts()
            .explain(&g.snapshot.ruleset, addr)
            .unwrap_or_default();
        Some((summary, explanation))
    }
}
