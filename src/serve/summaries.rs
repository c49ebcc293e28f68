//! Every host's summary, as the pages and `GET /hosts` read them: computed by one thread at a
//! time (single flight), off the shards' locks, and reused while it is fresh.
//!
//! Scoring every host is the most expensive thing a reader can ask for (about a second for
//! 100,000 hosts in a debug build). It is never done under a shard's lock: the hosts are copied
//! out a chunk of [`CHUNK`] at a time (the worker gets the lock back between chunks) and scored
//! afterwards. The list is reused for [`SUMMARY_TTL`], or ten times as long as it took to
//! compute (at most [`MAX_TTL`]), so that a stream of requests spends at most about a tenth of
//! one core on it; a request that finds it older gets it as it is and has it recomputed in the
//! background. Only the first request ever waits for a computation.
//!
//! Everything derived from the list is computed with it, once: `GET /hosts`, the hosts page,
//! the overview's cards and charts all read the same [`Summaries`], and the history's count of
//! labelled hosts is that of the last list computed ([`SummaryCache::peek`]). Nothing is scored
//! every 10 s only to be counted: when no reader has had the list computed for a minute, the
//! history has it computed once (`Daemon::sample_history`).

use super::Daemon;
use crate::infer::HostSummary;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How old the list of host summaries may be, at least (see the module docs).
pub const SUMMARY_TTL: Duration = Duration::from_secs(2);
/// How old it may be at most, however long it takes to compute.
pub const MAX_TTL: Duration = Duration::from_secs(60);
/// Hosts copied per hold of a shard's lock.
pub const CHUNK: usize = 1024;

/// One computed list.
#[derive(Debug, Clone)]
pub struct Summaries {
    /// When it was computed.
    pub at: Instant,
    /// When it was computed, ms since the epoch.
    pub at_ms: i64,
    /// How long computing it took.
    pub took: Duration,
    /// Every host's summary, by address.
    pub hosts: Arc<Vec<HostSummary>>,
    /// How many of them carry a label (an OS, software or a device).
    pub labelled: usize,
}

impl Summaries {
    /// Whether it should be recomputed.
    fn stale(&self) -> bool {
        self.at.elapsed() >= SUMMARY_TTL.max(self.took * 10).min(MAX_TTL)
    }
}

impl SummaryCache {
    /// The list last computed, as it is: never computes one (`None` before the first).
    pub fn peek(&self) -> Option<Summaries> {
        lock(&self.current).clone()
    }
}

/// The cached list and who computes it.
#[derive(Debug, Default)]
pub struct SummaryCache {
    current: Mutex<Option<Summaries>>,
    /// Held by the one thread computing.
    computing: Mutex<()>,
    /// A background recomputation is running or queued.
    refreshing: AtomicBool,
    /// Computations done.
    pub computed: AtomicU64,
    /// How long the last one took, µs.
    pub last_us: AtomicU64,
}

impl Daemon {
    /// Every host's summary, by address, computed now: copied out of each shard a chunk at a
    /// time, scored with the lock released.
    pub fn summaries(&self) -> Vec<HostSummary> {
        let mut all = Vec::new();
        for s in &self.shards {
            let addrs: Vec<IpAddr> = s.lock().hosts().addrs();
            for chunk in addrs.chunks(CHUNK) {
                let (copy, snapshot) = {
                    let g = s.lock();
                    (g.hosts().copy_hosts(chunk), g.snapshot.clone())
                };
                all.extend(copy.summaries(&snapshot.ruleset));
            }
        }
        all.sort_by_cached_key(|h| h.host.parse::<IpAddr>().ok());
        all
    }

    /// Every host's summary, by address, as fresh as the module docs say. Blocks only when
    /// nothing has been computed yet (call it off the async runtime).
    pub fn cached_summaries(self: &Arc<Self>) -> Summaries {
        let cache = &self.summary_cache;
        let current = lock(&cache.current).clone();
        match current {
            Some(s) => {
                if s.stale() {
                    self.refresh_summaries_in_background();
                }
                s
            }
            None => {
                let _one = lock(&cache.computing);
                // Another request may have computed them while this one waited.
                if let Some(s) = lock(&cache.current).clone() {
                    return s;
                }
                self.compute_locked()
            }
        }
    }

    /// Has the list recomputed on a thread of its own, unless that is already under way.
    pub fn refresh_summaries_in_background(self: &Arc<Self>) {
        let cache = &self.summary_cache;
        if cache.refreshing.swap(true, Ordering::SeqCst) {
            return;
        }
        let d = self.clone();
        let spawned = std::thread::Builder::new()
            .name("summaries".into())
            .spawn(move || {
                d.refresh_summaries();
                d.summary_cache.refreshing.store(false, Ordering::SeqCst);
            });
        if spawned.is_err() {
            cache.refreshing.store(false, Ordering::SeqCst);
        }
    }

    fn refresh_summaries(&self) -> Summaries {
        let _one = lock(&self.summary_cache.computing);
        self.compute_locked()
    }

    /// Computes and stores the list; the caller holds `computing`.
    fn compute_locked(&self) -> Summaries {
        let started = Instant::now();
        let hosts = Arc::new(self.summaries());
        let labelled = hosts.iter().filter(|h| is_labelled(h)).count();
        let took = started.elapsed();
        let s = Summaries {
            at: Instant::now(),
            at_ms: crate::dns::resolve::now_ms(),
            took,
            hosts,
            labelled,
        };
        let cache = &self.summary_cache;
        cache.computed.fetch_add(1, Ordering::Relaxed);
        cache
            .last_us
            .store(took.as_micros() as u64, Ordering::Relaxed);
        *lock(&cache.current) = Some(s.clone());
        s
    }
}

/// Whether a summary carries a label (an OS, software or a device): the overview's "hosts
/// labelled" and its history.
pub fn is_labelled(h: &HostSummary) -> bool {
    h.os.is_some() || !h.software.is_empty() || h.device.is_some()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
