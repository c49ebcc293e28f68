//! The daemon's flow path: collector → dispatcher → N evaluator workers, each owning a shard of
//! the hosts (by [`shard_of`](crate::eval::shard_of) their address), connected by bounded queues whose drops are
//! counted.
//!
//! A flow goes to the shard of each of its local endpoints (one queue entry per shard, marked
//! primary for the first), or to shard 0 when it has none, so that every flow is evaluated once
//! and each host's evidence is gathered by one worker. A worker takes the running rule snapshot
//! once per batch; when the generation changed since its last batch it first moves its hosts'
//! evidence to the new rule positions ([`HostTable::remap_rules`]).

use crate::dns::DnsMap;
use crate::eval::{LocalNets, flow_shards};
use crate::flow::Flow;
use crate::infer::HostTable;
use crate::scan::Scanner;
use crate::store::{RuleStore, Snapshot};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

/// One worker's hosts (in its scanner, the per-flow path), and the snapshot their rule
/// positions refer to.
pub struct ShardState {
    /// The per-flow path, with the hosts; its rules are the snapshot's.
    pub scanner: Scanner,
    /// The rules the inventory's positions refer to.
    pub snapshot: Arc<Snapshot>,
    /// Fleet worker role: the token of the member's tenure that filled these hosts (each
    /// takeover of the shard gets a new one; 0: none). A member applies, writes or clears the
    /// hosts only under its own token, so that a member that lost the shard never touches the
    /// hosts of the one (in the same process) that took it over.
    pub owner: u64,
}

impl ShardState {
    /// A shard's state: `inventory` applied to by a scanner over `snapshot`'s rules, for
    /// shard `index` of `count`.
    pub fn new(
        inventory: HostTable,
        snapshot: Arc<Snapshot>,
        local: Arc<LocalNets>,
        count: u32,
        index: u32,
        owner: u64,
    ) -> ShardState {
        ShardState {
            scanner: Scanner::new(snapshot.ruleset.clone(), local, inventory)
                .with_shard(count, index),
            snapshot,
            owner,
        }
    }

    /// The hosts.
    pub fn hosts(&self) -> &HostTable {
        self.scanner.hosts()
    }

    /// The hosts, to change.
    pub fn hosts_mut(&mut self) -> &mut HostTable {
        self.scanner.hosts_mut()
    }

    /// Moves the inventory to `snap` when it is newer (the scanner's matching state is kept
    /// from one batch to the next and follows the rules only then).
    pub fn sync(&mut self, snap: &Arc<Snapshot>) {
        if self.snapshot.generation != snap.generation {
            let map = snap.remap_from(&self.snapshot);
            self.scanner.replace_rules(snap.ruleset.clone(), &map);
            self.snapshot = snap.clone();
        }
    }
}

impl std::fmt::Debug for ShardState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardState")
            .field("hosts", &self.hosts().len())
            .field("generation", &self.snapshot.generation)
            .field("owner", &self.owner)
            .finish()
    }
}

/// A shard, shared between its worker and the API.
#[derive(Debug)]
pub struct Shard {
    /// The state.
    pub state: Mutex<ShardState>,
    /// Batches queued for the worker.
    pub queued: AtomicI64,
    /// Threads other than the worker waiting for the state: the worker lets them in between
    /// batches (a mutex is not fair, and a busy worker would otherwise starve the API).
    waiting: AtomicUsize,
}

impl Shard {
    /// Locks the state for a reader other than the worker (the API, the flusher). A poisoned
    /// lock is taken over: the state is plain data.
    pub fn lock(&self) -> MutexGuard<'_, ShardState> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let g = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        g
    }

    fn lock_worker(&self) -> MutexGuard<'_, ShardState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called by the worker with the lock released: gives waiting readers their turn.
    fn let_readers_in(&self) {
        for _ in 0..1000 {
            if self.waiting.load(Ordering::SeqCst) == 0 {
                return;
            }
            std::thread::yield_now();
        }
    }
}

/// Counters of the flow path.
#[derive(Debug, Default)]
pub struct Counters {
    /// Flows decoded by the collector.
    pub received: AtomicU64,
    /// (address, name) pairs of the DNS map written to the inventory (only changed pairs are
    /// written).
    pub dns_pairs_written: AtomicU64,
    /// Flows evaluated (each once, by its primary shard).
    pub evaluated: AtomicU64,
    /// Flows dropped at a full worker queue.
    pub dropped: AtomicU64,
    /// Secondary copies (second local endpoint) dropped at a full worker queue.
    pub dropped_secondary: AtomicU64,
    /// Collector role: batches stored by JetStream.
    pub published_batches: AtomicU64,
    /// Collector role: batches JetStream refused (stream full, server away) and still refused
    /// after retrying: dropped.
    pub refused_batches: AtomicU64,
    /// Collector role: refusals kept for a retry.
    pub retried_batches: AtomicU64,
    /// Collector role: batches waiting for a retry.
    pub retry_queue: AtomicU64,
    /// Collector role: retried batches the server already had (their first acknowledgement
    /// was lost), not stored again.
    pub duplicate_batches: AtomicU64,
    /// Collector role: stored batches held until a worker confirms them.
    pub held_batches: AtomicU64,
    /// Collector role: batches confirmed by a worker (their evidence written).
    pub confirmed_batches: AtomicU64,
    /// Collector role: batches sent again because no worker confirmed them and the stream no
    /// longer held them where the server had said it stored them.
    pub resent_batches: AtomicU64,
    /// Collector role: confirmation messages that were not a whole number of batch sequences
    /// (ignored).
    pub malformed_confirmations: AtomicU64,
    /// Collector role: batches given up unconfirmed (held for `CONFIRM_FOR`, or not held at
    /// all because `HOLD_BYTES` were held): their fate is the stream's.
    pub unconfirmed_batches: AtomicU64,
}

/// One queued flow (a flow between two local hosts of two shards is queued to both; the
/// scanner of each knows which copy counts).
pub struct Item {
    flow: Flow,
}

/// Splits flows by shard into batches and queues them.
pub struct Dispatcher {
    senders: Vec<SyncSender<Vec<Item>>>,
    batches: Vec<Vec<Item>>,
    shards: Vec<Arc<Shard>>,
    local: Arc<LocalNets>,
    counters: Arc<Counters>,
    batch_size: usize,
}

impl Dispatcher {
    /// Queues one flow (in a batch; [`Dispatcher::flush`] sends partial batches).
    pub fn push(&mut self, flow: Flow) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let (first, second) = flow_shards(&self.local, &flow, self.senders.len() as u32);
        let first = first as usize;
        if let Some(y) = second {
            self.batches[y as usize].push(Item { flow: flow.clone() });
            self.maybe_send(y as usize);
        }
        self.batches[first].push(Item { flow });
        self.maybe_send(first);
    }

    fn maybe_send(&mut self, shard: usize) {
        if self.batches[shard].len() >= self.batch_size {
            self.send(shard);
        }
    }

    fn send(&mut self, shard: usize) {
        if self.batches[shard].is_empty() {
            return;
        }
        let batch = std::mem::replace(
            &mut self.batches[shard],
            Vec::with_capacity(self.batch_size),
        );
        self.shards[shard].queued.fetch_add(1, Ordering::Relaxed);
        match self.senders[shard].try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(batch) | TrySendError::Disconnected(batch)) => {
                self.shards[shard].queued.fetch_sub(1, Ordering::Relaxed);
                let primary = batch
                    .iter()
                    .filter(|i| {
                        flow_shards(&self.local, &i.flow, self.senders.len() as u32).0 as usize
                            == shard
                    })
                    .count() as u64;
                self.counters.dropped.fetch_add(primary, Ordering::Relaxed);
                self.counters
                    .dropped_secondary
                    .fetch_add(batch.len() as u64 - primary, Ordering::Relaxed);
            }
        }
    }

    /// Sends every partial batch.
    pub fn flush(&mut self) {
        for s in 0..self.batches.len() {
            self.send(s);
        }
    }
}

/// The workers and what they share.
pub struct Workers {
    /// The shards.
    pub shards: Vec<Arc<Shard>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Waits for the workers to finish their queues (after the dispatcher is dropped).
    pub fn join(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Starts `inventories.len()` workers (one per shard) and the dispatcher that feeds them.
pub fn start(
    store: Arc<RuleStore>,
    inventories: Vec<HostTable>,
    local: Arc<LocalNets>,
    dns: Arc<RwLock<DnsMap>>,
    counters: Arc<Counters>,
    queue: usize,
) -> std::io::Result<(Dispatcher, Workers)> {
    let n = inventories.len();
    let snap = store.current();
    let mut shards = Vec::with_capacity(n);
    let mut senders = Vec::with_capacity(n);
    let mut threads = Vec::with_capacity(n);
    for (i, inventory) in inventories.into_iter().enumerate() {
        let shard = Arc::new(Shard {
            state: Mutex::new(ShardState::new(
                inventory,
                snap.clone(),
                local.clone(),
                n as u32,
                i as u32,
                0,
            )),
            queued: AtomicI64::new(0),
            waiting: AtomicUsize::new(0),
        });
        let (tx, rx) = sync_channel::<Vec<Item>>(queue);
        senders.push(tx);
        let worker = Worker {
            shard: shard.clone(),
            store: store.clone(),
            dns: dns.clone(),
            counters: counters.clone(),
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("eval-{i}"))
                .spawn(move || worker.run(rx))?,
        );
        shards.push(shard);
    }
    let batch_size = 512;
    Ok((
        Dispatcher {
            senders,
            batches: (0..n).map(|_| Vec::with_capacity(batch_size)).collect(),
            shards: shards.clone(),
            local,
            counters,
            batch_size,
        },
        Workers { shards, threads },
    ))
}

struct Worker {
    shard: Arc<Shard>,
    store: Arc<RuleStore>,
    dns: Arc<RwLock<DnsMap>>,
    counters: Arc<Counters>,
}

impl Worker {
    fn run(self, rx: Receiver<Vec<Item>>) {
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(batch) => {
                    self.shard.queued.fetch_sub(1, Ordering::Relaxed);
                    self.process(batch);
                    self.shard.let_readers_in();
                }
                Err(RecvTimeoutError::Timeout) => {
                    // Keep the shard on the running rules even without traffic.
                    let snap = self.store.current();
                    self.shard.lock_worker().sync(&snap);
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn process(&self, batch: Vec<Item>) {
        // One snapshot for the whole batch: every flow sees exactly one ruleset.
        let snap = self.store.current();
        let dns = self.dns.read().unwrap_or_else(PoisonError::into_inner);
        let mut guard = self.shard.lock_worker();
        guard.sync(&snap);
        let (primary, learned) = guard
            .scanner
            .apply_batch(batch.iter().map(|i| &i.flow), &dns);
        drop(guard);
        drop(dns);
        // Names the batch's records carry: learned into the map after the batch, so that plain
        // records to the same addresses match too.
        if !learned.is_empty() {
            learned.write_into(&mut self.dns.write().unwrap_or_else(PoisonError::into_inner));
        }
        self.counters
            .evaluated
            .fetch_add(primary, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::shard_of;
    use crate::store::StoreConfig;
    use std::net::IpAddr;

    #[test]
    fn every_flow_is_evaluated_once_and_hosts_land_in_one_shard() {
        let dir = std::env::temp_dir().join(format!("fp-pipe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("r.rules"),
            r#"rule web { when peer.port == 80 then os.family = "X" confidence 0.5 }"#,
        )
        .unwrap();
        let store = Arc::new(
            RuleStore::open(StoreConfig {
                sources: crate::sources::Selection {
                    paths: vec![dir.join("r.rules")],
                    ..Default::default()
                },
                state_dir: None,
            })
            .unwrap(),
        );
        let counters = Arc::new(Counters::default());
        let (mut d, workers) = start(
            store,
            (0..3).map(|_| HostTable::new()).collect(),
            Arc::new(LocalNets::default()),
            Arc::new(RwLock::new(DnsMap::new())),
            counters.clone(),
            1024,
        )
        .unwrap();
        let mut sent = 0;
        for i in 0..5000u32 {
            let src: IpAddr = format!("10.0.{}.{}", i % 7, i % 250).parse().unwrap();
            // Every third flow is between two local hosts; some have no local end.
            let dst: IpAddr = match i % 3 {
                0 => format!("192.168.1.{}", i % 200).parse().unwrap(),
                _ => "198.51.100.7".parse().unwrap(),
            };
            let src = if i % 11 == 0 {
                "203.0.113.9".parse().unwrap()
            } else {
                src
            };
            d.push(Flow::new(src, 40000, dst, 80, 6));
            sent += 1;
        }
        d.flush();
        drop(d);
        let shards = workers.shards.clone();
        workers.join();
        assert_eq!(counters.received.load(Ordering::Relaxed), sent);
        assert_eq!(counters.evaluated.load(Ordering::Relaxed), sent);
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 0);
        // Each host is in exactly one shard, the one its address hashes to.
        let mut seen = std::collections::HashSet::new();
        for (i, s) in shards.iter().enumerate() {
            let g = s.lock();
            for h in g.hosts().summaries(&g.snapshot.ruleset) {
                let a: IpAddr = h.host.parse().unwrap();
                assert_eq!(shard_of(a, 3), i as u32, "{a}");
                assert!(seen.insert(a), "{a} twice");
            }
        }
        assert!(seen.len() > 100);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
