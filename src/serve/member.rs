//! The worker role of `flowprint serve --consume`: shards of the fleet's stream, owned through
//! leases ([`crate::fleet::lease`]), evaluated into the daemon's shard inventories, written to
//! the inventory database with their applied marks in one transaction, and only then
//! acknowledged.
//!
//! Each of the daemon's `workers` threads is a member of the fleet of its own (id
//! `<fleet id>-<thread>`, its own connection to the bus and to the database), so a machine with
//! more cores takes more shards without anything shared between its threads but the shard
//! inventories the API reads.
//!
//! A shard changes hands like this:
//! 1. the new owner creates the lease (only possible once the old one expired or was
//!    released);
//! 2. it reads the shard's hosts and its mark (the highest stream sequence whose evidence is
//!    in those hosts) from the database;
//! 3. it deletes and re-creates the shard's durable consumer, so that every batch still in the
//!    stream (the work-queue stream keeps exactly the unacknowledged ones) is delivered again
//!    in stream order;
//! 4. it skips (and acknowledges) the batches at or below the mark, and applies the others.
//!
//! A releasing owner first writes and acknowledges everything it applied; a dead one leaves
//! batches unacknowledged, which step 3 delivers to its successor. Each claim of a shard (step
//! 2's, and a tenure's going back to its last write) gets a new fence from the database, and
//! every write carries its tenure's: the database refuses a write of any tenure but the last,
//! and one that would lower the shard's mark.
//!
//! A shard's hosts in memory are always the database's plus the batches after its mark, each
//! applied once, in order: a batch is applied only when its delivery follows the last one
//! (consumer sequence), is its first, and comes after the last applied in the stream; any doubt
//! sends the shard back to its last write (`Member::rewind`). Each takeover is a tenure with a
//! token kept with the hosts ([`ShardState::owner`]): a member that lost the shard never applies
//! to, writes or clears the hosts another member of the process took over.

use super::Daemon;
use super::error::Part;
use super::pipeline::{Counters, Shard, ShardState};
use crate::eval::{LocalNets, shard_of};
use crate::fleet::lease::{Change, Held, Membership, ShardSet};
use crate::fleet::{Bus, BusConfig, Delivered, ShardConsumer, codec};
use crate::infer::{HostTable, InferConfig};
use crate::inventory::{FleetMark, Store};

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What the fleet worker threads report (for `/metrics` and `/rules`).
#[derive(Debug, Default)]
pub struct FleetStatus {
    /// The shards each thread owns.
    pub owned: Mutex<BTreeMap<u32, String>>,
    /// Batches applied.
    pub applied: AtomicU64,
    /// Redelivered batches skipped because their evidence was already applied.
    pub skipped: AtomicU64,
    /// Batches skipped because a batch of the same id (publisher, sequence) was applied in the
    /// same tenure: the stream held one batch twice.
    pub duplicate_ids: AtomicU64,
    /// Batches that did not decode (acknowledged and counted, never retried).
    pub malformed: AtomicU64,
    /// Shards taken (at start, after another worker left or released them).
    pub takeovers: AtomicU64,
    /// Shards given up for a preferred worker.
    pub released: AtomicU64,
    /// Shards lost (lease not renewed in time, or a fenced write).
    pub lost: AtomicU64,
    /// Inventory writes (with marks) that failed.
    pub write_failures: AtomicU64,
    /// Per owned shard: batches waiting in the stream, and delivered but unacknowledged.
    pub backlog: Mutex<BTreeMap<u32, (u64, u64)>>,
    /// Published packs and what became of them.
    pub packs: Mutex<BTreeMap<String, PackStatus>>,
    /// Published packs refused.
    pub packs_rejected: AtomicU64,
    /// Flows applied in memory (evaluated counts them once written).
    pub flows_applied: AtomicU64,
    /// Shards that went back to their last write (a pull failed, a gap in deliveries).
    pub rewinds: AtomicU64,
    /// Batches confirmed to their publishers once written ([`crate::fleet::Bus::confirm`]).
    pub confirmed: AtomicU64,
    /// Batches at or below a shard's stored mark whose id the shard never recorded: never
    /// applied (a consumer that skipped them), applied late rather than acknowledged unseen.
    pub late: AtomicU64,
}

/// A published pack as this worker last saw it.
#[derive(Debug, Clone, Serialize)]
pub struct PackStatus {
    /// The object's digest in the bucket.
    pub digest: String,
    /// `installed` or `rejected`.
    pub state: &'static str,
    /// The installed version.
    pub version: Option<String>,
    /// Why it was refused.
    pub error: Option<String>,
}

/// One owned shard.
struct Active {
    consumer: ShardConsumer,
    /// Highest stream sequence applied (in memory).
    mark: u64,
    /// Highest stream sequence whose evidence is in the database (the stored mark).
    persisted: u64,
    /// Flows applied since the last write (counted as evaluated once written).
    unwritten: u64,
    /// The fence the database issued this tenure when it claimed the shard: the fence of its
    /// every write (a later claim, by anyone, refuses them).
    fence: u64,
    /// The lease's revision (names the shard's consumer).
    rev: u64,
    /// Applied, not yet written and acknowledged.
    pending: Vec<Delivered>,
    /// The consumer sequence of the last delivery seen: the next one must follow it, or a
    /// delivery was lost on the way.
    delivery: u64,
    /// This tenure's token in the daemon's shard state ([`ShardState::owner`]).
    token: u64,
    /// Ids of the batches seen in this tenure (applied, or skipped as written before), and
    /// those the shard's previous owners wrote.
    ids: RecentIds,
    /// The batches applied since the last write (stream sequence, id): written with the mark.
    applied: Vec<(u64, [u8; 24])>,
    /// When the consumer last delivered something (or the tenure began).
    delivered_at: Instant,
    /// The lowest stream sequence of the batch ids the shard's previous owners recorded: from
    /// it on, every batch they applied is recorded (a shard keeps its last
    /// [`crate::inventory::MAX_STORED_BATCHES`]), so a batch at or below the mark there whose id
    /// is not known was never applied. `None`: nothing recorded (no database, or a shard
    /// written before batch ids were kept): such batches are taken as applied.
    recorded_from: Option<u64>,
}

/// How often a worker asks the server for its shards' backlogs.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// How long a consumer may count batches waiting without delivering any before its shard goes
/// back to its last write (a pull asks every 20 ms when idle, so this is hundreds of empty
/// pulls; generous, because a rewind on a slow cluster costs seconds).
const SILENT_CONSUMER: Duration = Duration::from_secs(20);

/// Most batch ids remembered per shard and tenure.
pub const MAX_RECENT_IDS: usize = 65_536;

/// The ids ([`codec::batch_key`]: publisher and sequence) of a shard's recent batches, oldest
/// dropped first: a batch whose id is here is a second copy of one already counted (the
/// server's duplicate window missed it) and is acknowledged without being applied.
#[derive(Default)]
struct RecentIds {
    set: std::collections::HashSet<[u8; 24]>,
    order: std::collections::VecDeque<[u8; 24]>,
}

impl RecentIds {
    fn contains(&self, id: &[u8; 24]) -> bool {
        self.set.contains(id)
    }

    /// Remembers `id`; false when it was already there.
    fn insert(&mut self, id: [u8; 24]) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > MAX_RECENT_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// The shards a round of lease changes acquired, to be taken once the round is handled (in the
/// order acquired, each once, under its last revision): a later change of the same shard in the
/// round applies to the pending take.
#[derive(Debug, Default, PartialEq)]
struct Takes(Vec<(u32, u64)>);

impl Takes {
    fn acquired(&mut self, s: u32, rev: u64) {
        self.lost(s);
        self.0.push((s, rev));
    }

    fn renewed(&mut self, s: u32, rev: u64) {
        if let Some(t) = self.0.iter_mut().find(|t| t.0 == s) {
            t.1 = rev;
        }
    }

    /// Forgets a pending take (the lease was lost or is to be given up); true if there was one.
    fn lost(&mut self, s: u32) -> bool {
        let before = self.0.len();
        self.0.retain(|&(t, _)| t != s);
        self.0.len() != before
    }
}

/// The tokens of shard tenures, unique in the process.
static TENURES: AtomicU64 = AtomicU64::new(0);

/// Leases after which an evaluating thread that has not come round its loop (nor taken a
/// shard over) counts as stuck. Generous: taking shards over on a slow cluster takes seconds
/// per shard, and a false alarm moves shards for nothing.
const STALL_LEASES: u32 = 4;

/// Failed requests in a row (lease ticks, or consumers that could not be made) after which a
/// connection leaves its server for another one of the cluster.
const RECONNECT_AFTER_FAILURES: u32 = 3;

/// What a member's lease thread and its evaluating thread share.
struct Leases {
    /// The leases held, as of the last tick.
    held: Mutex<BTreeMap<u32, Held>>,
    /// Changes since the evaluating thread last looked.
    events: Mutex<Vec<Change>>,
    /// Shards the evaluating thread is done with (written and acknowledged, or never started):
    /// the lease thread releases them.
    give_back: Mutex<Vec<u32>>,
    /// Shards the evaluating thread could not start (their consumer could not be made): the
    /// lease thread releases them and leaves them to other workers for a while.
    failed: Mutex<Vec<u32>>,
    /// The lease connection's server stopped answering: the evaluating thread's connection,
    /// to the same server, connects again elsewhere too.
    reconnect: AtomicBool,
    /// The evaluating thread has written, acknowledged and dropped everything (at a stop).
    member_done: AtomicBool,
    /// When the evaluating thread last came round its loop, ms after `started`.
    member_loop_ms: AtomicU64,
    started: Instant,
    validity: Duration,
}

impl Leases {
    fn valid(&self, s: u32) -> bool {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&s)
            .is_some_and(|h| h.renewed.elapsed() < self.validity)
    }
}

/// A member's lease thread: heartbeat and renewals on their own connection, every quarter of
/// a lease, whatever the evaluating thread is busy with.
fn lease_loop(bus: Bus, mut membership: Membership, leases: Arc<Leases>, stop: Arc<AtomicBool>) {
    let mut next = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping && leases.member_done.load(Ordering::Relaxed) {
            break;
        }
        let back: Vec<u32> = std::mem::take(
            &mut *leases
                .give_back
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for s in back {
            membership.release(&bus, s);
        }
        let failed: Vec<u32> =
            std::mem::take(&mut *leases.failed.lock().unwrap_or_else(PoisonError::into_inner));
        for s in failed {
            membership.could_not_start(&bus, s);
        }
        if Instant::now() >= next && !stopping {
            next = Instant::now() + membership.interval();
            // An evaluating thread that has not come round its loop for four leases is stuck
            // (a hung database write, say): its leases are left to lapse so that another
            // worker takes the shards over; its late writes will be fenced.
            let stalled = Duration::from_millis(
                leases
                    .started
                    .elapsed()
                    .as_millis()
                    .saturating_sub(u128::from(leases.member_loop_ms.load(Ordering::Relaxed)))
                    as u64,
            ) > membership.lease * STALL_LEASES;
            if stalled {
                tracing::warn!(member = %membership.id, "the evaluating thread is stuck: leases left to lapse");
            }
            match membership.tick(&bus, !stalled) {
                Ok(changes) => leases
                    .events
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(changes),
                Err(e) => tracing::warn!(member = %membership.id, "fleet: {e}"),
            }
            // A server that answers but whose JetStream does not (a node resumed after a pause)
            // does not drop the connection: leave it, with both connections.
            if membership.failing() >= RECONNECT_AFTER_FAILURES {
                membership.reset_failing();
                bus.reconnect();
                leases.reconnect.store(true, Ordering::Relaxed);
            }
        } else if stopping && Instant::now() >= next {
            // Keep the leases while the evaluating thread writes its last batches.
            next = Instant::now() + membership.interval();
            let _ = membership.renew_only(&bus);
        }
        *leases.held.lock().unwrap_or_else(PoisonError::into_inner) = membership.held.clone();
        std::thread::sleep(Duration::from_millis(20));
    }
    membership.leave(&bus);
}

/// A member's evaluating thread.
struct Member {
    daemon: Arc<Daemon>,
    bus: Bus,
    id: String,
    leases: Arc<Leases>,
    db: Option<Box<dyn Store>>,
    stream: String,
    total: u32,
    local: Arc<LocalNets>,
    infer: InferConfig,
    active: BTreeMap<u32, Active>,
    status: Arc<FleetStatus>,
    counters: Arc<Counters>,
    flush_every: Duration,
    /// Consumers that could not be made, in a row.
    consumer_failures: u32,
    /// Set at a clean stop: what only informs (backlogs) is no longer asked of the server, so
    /// that a slow server does not hold the stop up.
    stopping: bool,
}

/// Starts `threads` members; they run until `stop`, then write, acknowledge and leave.
#[allow(clippy::too_many_arguments)]
pub fn start(
    daemon: Arc<Daemon>,
    url: &str,
    bus_config: BusConfig,
    id: &str,
    set: &ShardSet,
    threads: usize,
    local: Arc<LocalNets>,
    infer: InferConfig,
    stop: Arc<AtomicBool>,
) -> Result<Vec<std::thread::JoinHandle<()>>, super::ServeError> {
    let status = daemon
        .fleet
        .clone()
        .ok_or("no fleet status")
        .part("fleet")?;
    let mut handles = Vec::new();
    for t in 0..threads {
        let bus = Bus::connect(url, bus_config.clone())?;
        let lease_bus = Bus::connect(
            url,
            BusConfig {
                request_timeout: Some((bus_config.lease / 4).max(Duration::from_millis(250))),
                ..bus_config.clone()
            },
        )?;
        let member_id = format!("{id}-{t}");
        let membership = Membership::new(
            &lease_bus,
            member_id.clone(),
            set.clone(),
            daemon.config.fleet.shards,
        )?;
        let leases = Arc::new(Leases {
            held: Mutex::new(BTreeMap::new()),
            events: Mutex::new(Vec::new()),
            give_back: Mutex::new(Vec::new()),
            failed: Mutex::new(Vec::new()),
            reconnect: AtomicBool::new(false),
            member_done: AtomicBool::new(false),
            member_loop_ms: AtomicU64::new(0),
            started: Instant::now(),
            validity: membership.validity(),
        });
        {
            let (leases, stop) = (leases.clone(), stop.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("fleet-lease-{t}"))
                    .spawn(move || lease_loop(lease_bus, membership, leases, stop))
                    .part("starting a thread")?,
            );
        }
        let db = match &daemon.config.inventory {
            Some(spec) => Some(crate::inventory::open(spec)?),
            None => None,
        };
        let member = Member {
            daemon: daemon.clone(),
            stream: bus.stream_id(),
            bus,
            id: member_id,
            leases,
            db,
            total: daemon.config.fleet.shards,
            local: local.clone(),
            infer: infer.clone(),
            active: BTreeMap::new(),
            status: status.clone(),
            counters: daemon.counters.clone(),
            flush_every: daemon
                .config
                .flush_interval
                .0
                .clamp(Duration::from_millis(100), Duration::from_secs(5)),
            consumer_failures: 0,
            stopping: false,
        };
        let stop = stop.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("fleet-{t}"))
                .spawn(move || member.run(&stop))
                .part("starting a thread")?,
        );
    }
    Ok(handles)
}

impl Member {
    fn shard(&self, s: u32) -> &Arc<Shard> {
        &self.daemon.shards[s as usize]
    }

    fn run(mut self, stop: &AtomicBool) {
        let mut last_flush = Instant::now();
        let mut last_backlog = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            self.alive();
            if self.bus.take_suspect() {
                let shards: Vec<u32> = self.active.keys().copied().collect();
                for s in shards {
                    self.rewind(s, "the connection to NATS dropped");
                }
            }
            let changes = std::mem::take(
                &mut *self
                    .leases
                    .events
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            if self.leases.reconnect.swap(false, Ordering::Relaxed) {
                self.bus.reconnect();
            }
            if !changes.is_empty() {
                self.handle(changes);
            }
            // A lease not renewed in time: stop before anyone else may start.
            let lapsed: Vec<u32> = self
                .active
                .keys()
                .copied()
                .filter(|&s| !self.leases.valid(s))
                .collect();
            for s in lapsed {
                tracing::warn!(shard = s, "lease not renewed in time: giving the shard up");
                self.drop_shard(s);
                // The lease thread may still hold it (its renewal was only late): let it go,
                // so that the shard is taken again from the database, by whoever is preferred.
                self.give_back(s);
                self.status.lost.fetch_add(1, Ordering::Relaxed);
            }
            let mut got = 0;
            let shards: Vec<u32> = self.active.keys().copied().collect();
            for s in shards {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // Checked before every pull: a lease that lapsed during this round stops here.
                if self.leases.valid(s) {
                    got += self.pull(s);
                }
            }
            let pending: usize = self.active.values().map(|a| a.pending.len()).sum();
            if pending > 0 && (last_flush.elapsed() >= self.flush_every || pending >= 2000) {
                self.flush_all();
                last_flush = Instant::now();
            }
            if last_backlog.elapsed() >= BACKLOG_EVERY && !stop.load(Ordering::Relaxed) {
                self.check_backlogs();
                last_backlog = Instant::now();
            }
            if got == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Clean stop: write and acknowledge, then leave so that others take over at once.
        self.stopping = true;
        self.flush_all();
        let shards: Vec<u32> = self.active.keys().copied().collect();
        for s in shards {
            self.drop_shard(s);
        }
        self.leases.member_done.store(true, Ordering::Relaxed);
    }

    /// Tells the lease thread this thread is making progress.
    fn alive(&self) {
        self.leases.member_loop_ms.store(
            self.leases.started.elapsed().as_millis() as u64,
            Ordering::Relaxed,
        );
    }

    fn give_back(&self, s: u32) {
        self.leases
            .give_back
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(s);
    }

    fn handle(&mut self, changes: Vec<Change>) {
        // Taken after the round (takes are slow); a lease acquired then lost is not taken: its
        // tenure would claim the shard from its new owner.
        let mut taken = Takes::default();
        for c in changes {
            match c {
                Change::Acquired(s, rev) => taken.acquired(s, rev),
                Change::Renewed(s, rev) => {
                    taken.renewed(s, rev);
                    if let Some(a) = self.active.get_mut(&s) {
                        a.rev = rev;
                    }
                }
                Change::Lost(s) => {
                    taken.lost(s);
                    if self.active.contains_key(&s) {
                        self.drop_shard(s);
                        self.status.lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Change::ShouldRelease(s) => {
                    if taken.lost(s) {
                        // Not started yet: given back as it is.
                        self.give_back(s);
                    } else if !self.active.contains_key(&s) {
                        self.give_back(s);
                    } else if self.flush_shard(s) {
                        self.drop_shard(s);
                        self.give_back(s);
                        self.status.released.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(shard = s, "shard released to its preferred worker");
                    }
                }
            }
        }
        if !taken.0.is_empty() {
            self.take(taken.0);
        }
    }

    /// Takes shards over: each claimed in the database under the new lease (from then on, a
    /// late write of the previous owner is refused), then their hosts and marks read, their
    /// consumers re-created.
    fn take(&mut self, taken: Vec<(u32, u64)>) {
        // Per shard: the stored mark and the fence the database issued this tenure.
        let mut marks: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        let mut claimed = Vec::new();
        for (s, rev) in taken {
            match self.db.as_mut() {
                Some(db) => match db.claim_shard(&self.stream, s) {
                    Ok(claim) => {
                        marks.insert(s, claim);
                        claimed.push((s, rev));
                    }
                    Err(e) => {
                        tracing::error!(shard = s, "fleet: claiming the shard: {e}");
                        self.give_back(s);
                    }
                },
                None => claimed.push((s, rev)),
            }
        }
        if claimed.is_empty() {
            return;
        }
        let stored = match self.db.as_mut() {
            Some(db) => match db.load_all() {
                Ok(x) => x,
                Err(e) => {
                    // Without the shard's state we cannot start it: give the leases back.
                    tracing::error!("fleet: reading the inventory to take shards over: {e}");
                    for (s, _) in claimed {
                        self.give_back(s);
                    }
                    return;
                }
            },
            None => Vec::new(),
        };
        for (s, rev) in claimed {
            self.alive();
            // The ids of the batches the shard's previous owners wrote: a second copy of one
            // of them, later in the stream, is not counted again.
            let mut ids = RecentIds::default();
            let mut recorded_from = None;
            if let Some(db) = self.db.as_mut() {
                match db.load_batches(&self.stream, s) {
                    Ok(stored) => {
                        recorded_from = stored.iter().map(|&(seq, _)| seq).min();
                        for (_, id) in stored {
                            ids.insert(id);
                        }
                    }
                    Err(e) => {
                        tracing::error!(shard = s, "fleet: reading the shard's batch ids: {e}");
                        self.give_back(s);
                        continue;
                    }
                }
            }
            let consumer = match self.bus.take_over_consumer(s, rev) {
                Ok(c) => {
                    self.consumer_failures = 0;
                    c
                }
                Err(e) => {
                    tracing::error!(shard = s, "fleet: {e}");
                    self.consumer_failures += 1;
                    if self.consumer_failures >= RECONNECT_AFTER_FAILURES {
                        self.consumer_failures = 0;
                        self.bus.reconnect();
                    }
                    self.leases
                        .failed
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(s);
                    continue;
                }
            };
            let (mark, fence) = marks.get(&s).copied().unwrap_or((0, 0));
            let token = TENURES.fetch_add(1, Ordering::Relaxed) + 1;
            let delivery = consumer.last_delivery();
            let mine: Vec<_> = stored
                .iter()
                .filter(|h| h.host.parse().is_ok_and(|a| shard_of(a, self.total) == s))
                .cloned()
                .collect();
            {
                let snap = self.daemon.store.current();
                let mut g = self.shard(s).lock();
                let mut inv = HostTable::with_config(self.infer.clone());
                let restored = inv.restore(&mine, &snap.ruleset);
                if let Some(note) = restored.kept_note() {
                    tracing::info!(shard = s, "{note}");
                }
                *g = ShardState::new(inv, snap, self.local.clone(), self.total, s, token);
            }
            tracing::info!(
                shard = s,
                hosts = mine.len(),
                mark,
                fence,
                rev,
                "shard taken over"
            );
            self.active.insert(
                s,
                Active {
                    consumer,
                    mark,
                    persisted: mark,
                    unwritten: 0,
                    fence,
                    rev,
                    pending: Vec::new(),
                    delivery,
                    token,
                    ids,
                    applied: Vec::new(),
                    recorded_from,
                    delivered_at: Instant::now(),
                },
            );
            self.status.takeovers.fetch_add(1, Ordering::Relaxed);
            self.owned_changed();
        }
    }

    fn owned_changed(&self) {
        let mut o = self
            .status
            .owned
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        o.retain(|_, m| *m != self.id);
        for &s in self.active.keys() {
            o.insert(s, self.id.clone());
        }
    }

    /// Forgets a shard: its in-memory hosts go (they are in the database up to the last
    /// write), its unacknowledged batches will be delivered to the next owner. Hosts that
    /// another member of this process has taken over since are left alone.
    fn drop_shard(&mut self, s: u32) {
        if let Some(a) = self.active.remove(&s) {
            let snap = self.daemon.store.current();
            let mut g = self.shard(s).lock();
            if g.owner == a.token {
                *g = ShardState::new(
                    HostTable::with_config(self.infer.clone()),
                    snap,
                    self.local.clone(),
                    self.total,
                    s,
                    0,
                );
            }
            drop(g);
            self.status
                .backlog
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&s);
            self.owned_changed();
        }
    }

    /// Pulls and applies a shard's next batches; returns how many came.
    fn pull(&mut self, s: u32) -> usize {
        let Some(a) = self.active.get(&s) else {
            return 0;
        };
        let msgs = match self.bus.fetch(&a.consumer, 64) {
            Ok(m) => m,
            Err(e) => {
                // Batches may have been delivered and lost on the way: a later batch must not
                // be applied before them.
                self.rewind(s, &format!("pull failed: {e}"));
                return 0;
            }
        };
        let n = msgs.len();
        if n == 0 {
            return 0;
        }
        let snap = self.daemon.store.current();
        let dns = self
            .daemon
            .dns
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let shard = self.daemon.shards[s as usize].clone();
        let mut g = shard.lock();
        if g.owner != a.token {
            // Another member of this process took the shard over (this one was stalled): its
            // hosts are not this tenure's to change.
            drop(g);
            drop(dns);
            self.lost_to_another(s);
            return 0;
        }
        g.sync(&snap);
        let scanner = &mut g.scanner;
        let before = scanner.primary_flows;
        let a = self.active.get_mut(&s).expect("active");
        a.delivered_at = Instant::now();
        let mut doubt = None;
        for d in msgs {
            if d.consumer_seq != a.delivery + 1 {
                // A delivery between the last one and this one was lost on the way: applying
                // this one first would put the shard's batches out of order.
                doubt = Some(format!(
                    "delivery {} of the consumer came after delivery {}",
                    d.consumer_seq, a.delivery
                ));
                break;
            }
            a.delivery = d.consumer_seq;
            let id = codec::batch_key(&d.data);
            // At or below the stored mark, in the part of the stream whose applied batches are
            // all recorded, and not recorded: a batch no owner applied (a consumer that
            // skipped it while delivering the later ones). Applied now, late, rather than
            // acknowledged unseen: its flows would otherwise be lost.
            let late = d.stream_seq <= a.persisted
                && a.recorded_from.is_some_and(|from| d.stream_seq >= from)
                && id.is_some_and(|id| !a.ids.contains(&id));
            if d.stream_seq <= a.persisted && !late {
                // Applied and written by this shard's owner before: acknowledge, do not count.
                // Its id is remembered: a second copy of it later in the stream is skipped too.
                if let Some(id) = id {
                    a.ids.insert(id);
                }
                self.status.skipped.fetch_add(1, Ordering::Relaxed);
                a.pending.push(d);
                continue;
            }
            if late {
                tracing::warn!(
                    shard = s,
                    seq = d.stream_seq,
                    mark = a.persisted,
                    id = codec::batch_id(&d.data).unwrap_or_default(),
                    "fleet: a batch below the shard's mark was never applied: applied late"
                );
                self.status.late.fetch_add(1, Ordering::Relaxed);
                if let Some(id) = id {
                    a.ids.insert(id);
                }
            } else {
                if d.stream_seq <= a.mark || d.delivered > 1 {
                    // A batch after the last write delivered again, or out of order: the hosts
                    // in memory can no longer say whether they hold it. The rest of this pull
                    // stays unacknowledged; the shard goes back to its last write.
                    doubt = Some(format!(
                        "batch {} delivered {} time(s) after batch {} was applied",
                        d.stream_seq, d.delivered, a.mark
                    ));
                    break;
                }
                if let Some(id) = id
                    && !a.ids.insert(id)
                {
                    tracing::warn!(
                        shard = s,
                        seq = d.stream_seq,
                        id = codec::batch_id(&d.data).unwrap_or_default(),
                        "fleet: a second copy of a batch already counted: skipped"
                    );
                    self.status.duplicate_ids.fetch_add(1, Ordering::Relaxed);
                    a.mark = d.stream_seq;
                    a.pending.push(d);
                    continue;
                }
            }
            if let Some(id) = id {
                a.applied.push((d.stream_seq, id));
            }
            match codec::decode(&d.data) {
                Ok(batch) => {
                    scanner.apply_all(&batch.flows, &dns);
                    self.status.applied.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(shard = s, seq = d.stream_seq, "fleet: batch refused: {e}");
                    self.status.malformed.fetch_add(1, Ordering::Relaxed);
                }
            }
            // A late batch leaves the mark where it is: the batches after it are still to come.
            if !late {
                a.mark = d.stream_seq;
            }
            a.pending.push(d);
        }
        // The flows counted as evaluated here (their primary copy) and the names they carry,
        // learned as the local daemon's workers do.
        let evaluated = scanner.primary_flows - before;
        let learned = scanner.take_learned();
        a.unwritten += evaluated;
        self.status
            .flows_applied
            .fetch_add(evaluated, Ordering::Relaxed);
        drop(g);
        drop(dns);
        if !learned.is_empty() {
            learned.write_into(
                &mut self
                    .daemon
                    .dns
                    .write()
                    .unwrap_or_else(PoisonError::into_inner),
            );
        }
        if let Some(why) = doubt {
            self.rewind(s, &why);
        }
        n
    }

    /// Another member of this process holds the shard's hosts now: this tenure ends without
    /// touching them.
    fn lost_to_another(&mut self, s: u32) {
        tracing::warn!(
            shard = s,
            "the shard was taken over meanwhile: giving it up"
        );
        self.drop_shard(s);
        self.give_back(s);
        self.status.lost.fetch_add(1, Ordering::Relaxed);
    }

    /// Goes back to the shard's last write: its hosts and mark from the database, its consumer
    /// re-created (every unacknowledged batch delivered again, in order). Used when deliveries
    /// may have a gap.
    fn rewind(&mut self, s: u32, why: &str) {
        let Some(a) = self.active.get(&s) else {
            return;
        };
        let rev = a.rev;
        tracing::warn!(shard = s, "{why}: going back to the shard's last write");
        self.status.rewinds.fetch_add(1, Ordering::Relaxed);
        self.drop_shard(s);
        // A new tenure: claimed again, under a new fence.
        self.take(vec![(s, rev)]);
    }

    fn flush_all(&mut self) {
        let shards: Vec<u32> = self.active.keys().copied().collect();
        for s in shards {
            self.flush_shard(s);
        }
    }

    /// Writes a shard's changed hosts with its mark in one transaction, then acknowledges what
    /// was applied. False when the write failed (nothing acknowledged).
    fn flush_shard(&mut self, s: u32) -> bool {
        let Some(a) = self.active.get(&s) else {
            return true;
        };
        if let Some(db) = self.db.as_mut() {
            let rows = {
                let mut g = self.daemon.shards[s as usize].lock();
                let ShardState {
                    scanner,
                    snapshot,
                    owner,
                } = &mut *g;
                (*owner == a.token).then(|| {
                    scanner
                        .hosts_mut()
                        .take_dirty(&snapshot.ruleset, usize::MAX)
                })
            };
            let Some(rows) = rows else {
                self.lost_to_another(s);
                return false;
            };
            if a.pending.is_empty() && rows.is_empty() {
                self.refresh_backlog(s);
                return true;
            }
            let mark = FleetMark {
                stream: self.stream.clone(),
                shard: s,
                seq: a.mark,
                fence: a.fence,
                batches: a.applied.clone(),
            };
            if let Err(e) = db.save_marked(&rows, &[mark]) {
                self.status.write_failures.fetch_add(1, Ordering::Relaxed);
                if let crate::inventory::DbError::Fenced { .. } = e {
                    tracing::error!(shard = s, "fleet: {e}");
                    self.drop_shard(s);
                    // Released if this member's lease thread still holds it (a no-op when the
                    // lease is another worker's): the shard is taken again from the database.
                    self.give_back(s);
                    self.status.lost.fetch_add(1, Ordering::Relaxed);
                } else {
                    // Nothing acknowledged; the hosts are marked changed again for the next
                    // write, which carries the mark of everything applied by then.
                    tracing::error!(shard = s, "fleet: writing the inventory: {e}");
                    self.requeue_dirty(s, &rows);
                }
                return false;
            }
        }
        let a = self.active.get_mut(&s).expect("active");
        a.persisted = a.mark;
        a.applied.clear();
        let written = std::mem::take(&mut a.unwritten);
        self.counters.received.fetch_add(written, Ordering::Relaxed);
        self.counters
            .evaluated
            .fetch_add(written, Ordering::Relaxed);
        let done = std::mem::take(&mut a.pending);
        if let Err(e) = self.bus.ack(&done) {
            // Unacknowledged batches come back after ack_wait; the mark makes them no-ops.
            tracing::warn!(shard = s, "fleet: {e}");
        }
        // Their publishers may forget them now: every batch of the write (applied, or skipped
        // as counted before) is in the database.
        let ids: Vec<[u8; 24]> = done
            .iter()
            .filter_map(|d| codec::batch_key(&d.data))
            .collect();
        match self.bus.confirm(&ids) {
            Ok(()) => {
                self.status
                    .confirmed
                    .fetch_add(ids.len() as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(shard = s, "fleet: {e}"),
        }
        self.refresh_backlog(s);
        true
    }

    /// The shard's backlog for `/metrics`, as the server sees it now.
    fn refresh_backlog(&mut self, s: u32) -> Option<(u64, u64)> {
        if self.stopping {
            return None;
        }
        let a = self.active.get_mut(&s)?;
        let b = self.bus.backlog(&mut a.consumer).ok()?;
        self.status
            .backlog
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(s, b);
        Some(b)
    }

    /// Every owned shard's backlog, asked of the server; a shard whose consumer says batches
    /// are waiting but has delivered none for [`SILENT_CONSUMER`] goes back to its last write
    /// (its consumer re-created). Seen under load after a node's pause: consumers created
    /// while the cluster settled that never delivered the batches they counted as waiting.
    fn check_backlogs(&mut self) {
        let shards: Vec<u32> = self.active.keys().copied().collect();
        for s in shards {
            let Some((waiting, _)) = self.refresh_backlog(s) else {
                continue;
            };
            // Only with nothing in hand: a worker that holds unwritten batches (its database
            // away, say) may have the consumer's limit of unacknowledged batches reached.
            let silent = self
                .active
                .get(&s)
                .filter(|a| a.pending.is_empty())
                .map_or(Duration::ZERO, |a| a.delivered_at.elapsed());
            if waiting > 0 && silent >= SILENT_CONSUMER {
                self.rewind(
                    s,
                    &format!(
                        "the consumer counts {waiting} batch(es) waiting and delivered none for {}s",
                        silent.as_secs()
                    ),
                );
            }
        }
    }

    /// After a failed write, the hosts taken from the dirty set are marked changed again so
    /// that the next write includes them.
    fn requeue_dirty(&self, s: u32, rows: &[crate::inventory::StoredHost]) {
        let Some(token) = self.active.get(&s).map(|a| a.token) else {
            return;
        };
        let mut g = self.daemon.shards[s as usize].lock();
        if g.owner != token {
            return;
        }
        for r in rows {
            if let Ok(a) = r.host.parse() {
                g.hosts_mut().mark_dirty(a);
            }
        }
    }
}

/// The largest pack archive taken from the bucket.
const PACK_LIMIT: usize = 64 << 20;

/// Follows the fleet's pack bucket: every pack published (new digest) is fetched, installed
/// into the packs directory through the same verified, atomic path as `flowprint pack install`
/// (refused: files that do not match the manifest, a missing or untrusted signature unless
/// allowed, rules that do not compile), and the rules reloaded. A refused pack leaves the
/// running rules as they were; the refusal is logged, counted and shown by `/rules`.
pub fn follow_packs(
    daemon: Arc<Daemon>,
    url: &str,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, super::ServeError> {
    let bus = Bus::connect(url, daemon.config.fleet.bus())?;
    let os = bus.packs()?;
    let packs_dir = daemon
        .config
        .rules
        .packs_dir
        .clone()
        .unwrap_or_else(|| daemon.config.state_dir.join("packs"));
    let keys = crate::pack::integrity::trusted_keys(&[], &daemon.config.fleet.trusted_keys)
        .part("fleet trusted keys")?;
    let download = daemon.config.state_dir.join("fleet-packs");
    std::fs::create_dir_all(&download).map_err(super::ServeError::file(
        "pack download directory",
        &download,
    ))?;
    let status = daemon
        .fleet
        .clone()
        .ok_or("no fleet status")
        .part("fleet")?;
    std::thread::Builder::new()
        .name("fleet-packs".into())
        .spawn(move || {
            let mut seen: BTreeMap<String, String> = BTreeMap::new();
            while !stop.load(Ordering::Relaxed) {
                match bus.list_packs() {
                    Ok(list) => {
                        for (name, digest) in list {
                            if seen.get(&name) == Some(&digest) {
                                continue;
                            }
                            seen.insert(name.clone(), digest.clone());
                            let st = install_published(
                                &daemon, &bus, &os, &name, &digest, &download, &packs_dir, &keys,
                            );
                            if st.state == "rejected" {
                                status.packs_rejected.fetch_add(1, Ordering::Relaxed);
                            }
                            status
                                .packs
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .insert(name, st);
                        }
                    }
                    Err(e) => tracing::warn!("fleet packs: {e}"),
                }
                for _ in 0..5 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
        .part("starting a thread")
}

#[allow(clippy::too_many_arguments)]
fn install_published(
    daemon: &Daemon,
    bus: &Bus,
    os: &async_nats::jetstream::object_store::ObjectStore,
    name: &str,
    digest: &str,
    download: &std::path::Path,
    packs_dir: &std::path::Path,
    keys: &[ed25519_dalek::VerifyingKey],
) -> PackStatus {
    let rejected = |error: String| {
        tracing::error!(
            pack = name,
            digest,
            "published pack refused, the running rules stay: {error}"
        );
        PackStatus {
            digest: digest.to_string(),
            state: "rejected",
            version: None,
            error: Some(error),
        }
    };
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = download.join(format!("{safe}.tar.gz"));
    let bytes = match bus.get_pack(os, name, PACK_LIMIT) {
        Ok(b) => b,
        Err(e) => return rejected(e.to_string()),
    };
    if let Err(e) = std::fs::write(&path, &bytes) {
        return rejected(format!("{}: {e}", path.display()));
    }
    match crate::pack::install::install_pack(
        &path,
        packs_dir,
        keys,
        daemon.config.fleet.allow_unsigned,
    ) {
        Ok(rec) => {
            let r = daemon.reload(&format!("fleet pack {} {}", rec.name, rec.version));
            if !r.ok {
                return rejected(format!(
                    "installed, but the rules did not reload: {}",
                    r.diagnostics.join("")
                ));
            }
            tracing::info!(pack = %rec.name, version = %rec.version, "published pack installed");
            PackStatus {
                digest: digest.to_string(),
                state: "installed",
                version: Some(rec.version),
                error: None,
            }
        }
        Err(e) => rejected(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::Takes;

    /// A round of lease changes: a lease acquired then lost is not taken (its tenure would
    /// claim the shard from its new owner, as a run under load showed: the same shard taken
    /// twice in one round, the first tenure's claim overwritten by the second's); one acquired
    /// again is taken once, under its last revision; one to be given up before it started is
    /// not taken.
    #[test]
    fn a_round_of_changes_takes_each_shard_once_and_only_if_still_held() {
        let mut t = Takes::default();
        t.acquired(1, 520);
        t.acquired(2, 521);
        t.acquired(6, 522);
        assert!(t.lost(1));
        t.acquired(1, 587);
        t.renewed(1, 590);
        t.renewed(9, 600);
        assert_eq!(t, Takes(vec![(2, 521), (6, 522), (1, 590)]));
        assert!(t.lost(6));
        assert!(!t.lost(6));
        assert_eq!(t, Takes(vec![(2, 521), (1, 590)]));
    }
}
