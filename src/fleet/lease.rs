//! Which worker owns which shard: leases in a JetStream key-value bucket.
//!
//! JetStream's own answer to "one consumer at a time per shard" — priority groups with a
//! pinned client — needs nats-server 2.11; Debian ships 2.9. A lease in a key-value bucket is
//! built from JetStream's own primitives and nothing else:
//!
//! - every worker writes a heartbeat `worker.<id>` (its shard range) every `lease / 3`; the
//!   bucket's `max_age` expires it `lease` after the last write, so the live workers are the
//!   bucket's `worker.*` keys;
//! - a shard is owned through `shard.<n>`: taken with a create (refused while another holds
//!   it), renewed with an update against the revision last written (refused once it expired or
//!   someone else took it), released with a delete;
//! - which live worker *should* own a shard is decided the same way by everyone, by rendezvous
//!   hashing over the workers whose range covers it: a worker takes the shards it is preferred
//!   for when they are free, and releases (after writing and acknowledging what it applied) the
//!   shards for which another live worker is preferred. A worker joining moves only the shards
//!   it is preferred for; a worker leaving frees only its own, once its leases expire;
//! - a worker stops pulling a shard when its last successful renewal was sent more than three
//!   quarters of a lease ago (without asking the server), so that it usually stops before
//!   anyone else can create the lease. That saves work; what keeps the counts right is the
//!   fence: the lease's revision is stored with every write of the shard's inventory, and a
//!   write with an older fence is refused by the database (a worker stopped by SIGSTOP right
//!   after its check wakes up past it).

use super::{Bus, FleetError, js_err};
use async_nats::jetstream::kv::Store as Kv;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A set of shards, written `0-15`, `3`, or `0-3,8-11`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSet(pub Vec<(u32, u32)>);

impl ShardSet {
    /// Every shard below `total`.
    pub fn all(total: u32) -> ShardSet {
        ShardSet(vec![(0, total.saturating_sub(1))])
    }

    /// Whether `shard` is in the set.
    pub fn contains(&self, shard: u32) -> bool {
        self.0.iter().any(|&(a, b)| (a..=b).contains(&shard))
    }

    /// The set's shards below `total`, in order.
    pub fn shards(&self, total: u32) -> Vec<u32> {
        (0..total).filter(|&s| self.contains(s)).collect()
    }

    /// The set without the shards `out` holds.
    pub fn without(&self, out: impl Fn(u32) -> bool) -> ShardSet {
        let mut ranges = Vec::new();
        for &(a, b) in &self.0 {
            let mut start = None;
            for s in a..=b {
                match (out(s), start) {
                    (false, None) => start = Some(s),
                    (true, Some(first)) => {
                        ranges.push((first, s - 1));
                        start = None;
                    }
                    _ => {}
                }
            }
            if let Some(first) = start {
                ranges.push((first, b));
            }
        }
        ShardSet(ranges)
    }
}

/// A shard set that does not parse: the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardSetError {
    /// Not a number nor a range of numbers.
    #[error("`{0}` is not a shard or a range of shards (`0-15`)")]
    NotAShard(String),
    /// A range whose end is below its start.
    #[error("`{0}`: the range is backwards")]
    Backwards(String),
}

impl std::str::FromStr for ShardSet {
    type Err = ShardSetError;
    fn from_str(s: &str) -> Result<ShardSet, ShardSetError> {
        let mut out = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let num = |x: &str| {
                x.parse::<u32>()
                    .map_err(|_| ShardSetError::NotAShard(part.to_string()))
            };
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(ShardSetError::Backwards(part.to_string()));
            }
            out.push((a, b));
        }
        Ok(ShardSet(out))
    }
}

impl std::fmt::Display for ShardSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// The live worker that should own `shard`: the highest rendezvous weight among the workers
/// whose set covers it. Every worker computes the same answer from the same membership.
pub fn preferred(shard: u32, members: &[(String, ShardSet)]) -> Option<&str> {
    members
        .iter()
        .filter(|(_, set)| set.contains(shard))
        .max_by_key(|(id, _)| (weight(shard, id), id.as_str()))
        .map(|(id, _)| id.as_str())
}

fn weight(shard: u32, id: &str) -> u64 {
    // FNV-1a over the shard and the id, then a final mix (splitmix64) so that close ids
    // spread well.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in shard.to_be_bytes().iter().chain(id.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A shard this worker holds.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    /// The lease's revision after the last successful create or renewal: the fence.
    pub revision: u64,
    /// When it was last renewed.
    pub renewed: Instant,
}

/// What changed in this worker's ownership at a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The lease was taken: the shard is this worker's, fenced by this revision.
    Acquired(u32, u64),
    /// Renewed under a new revision (the fence of the next writes).
    Renewed(u32, u64),
    /// The lease could not be renewed: the shard is no longer this worker's.
    Lost(u32),
    /// Another live worker is preferred: write, acknowledge, then call [`Membership::release`].
    ShouldRelease(u32),
}

/// This worker's view of the fleet's membership and its leases.
pub struct Membership {
    /// This worker's id.
    pub id: String,
    /// The shards it may own.
    pub set: ShardSet,
    /// Shards in the fleet.
    pub total: u32,
    /// The lease duration.
    pub lease: Duration,
    /// The shards held.
    pub held: BTreeMap<u32, Held>,
    /// The live workers at the last tick (id, set).
    pub members: Vec<(String, ShardSet)>,
    /// Shards this worker is preferred for but could not create yet, since when.
    waiting: BTreeMap<u32, Instant>,
    /// Shards this worker could not start (its connection's server could not make their
    /// consumer): left out of the set it advertises until the instant, so that the next
    /// preferred worker takes them; with the failures in a row.
    cooling: BTreeMap<u32, (Instant, u32)>,
    /// Heartbeats that failed in a row ([`Membership::failing`]).
    failures: u32,
    kv: Kv,
}

/// The first time a worker that could not start a shard stays away from it, in leases;
/// doubled at each failure in a row, up to [`MAX_COOLING_LEASES`].
pub const COOLING_LEASES: u32 = 2;
/// The longest it stays away, in leases.
pub const MAX_COOLING_LEASES: u32 = 32;

impl Membership {
    /// Heartbeats that failed in a row: the connection's server may answer without its
    /// JetStream (the caller then connects elsewhere, and calls [`Membership::reset_failing`]).
    pub fn failing(&self) -> u32 {
        self.failures
    }

    /// Starts counting failed heartbeats again.
    pub fn reset_failing(&mut self) {
        self.failures = 0;
    }

    /// Joins the fleet (opens the bucket; nothing is taken before the first tick).
    pub fn new(bus: &Bus, id: String, set: ShardSet, total: u32) -> Result<Membership, FleetError> {
        Ok(Membership {
            id,
            set,
            total,
            lease: bus.config.lease,
            held: BTreeMap::new(),
            members: Vec::new(),
            waiting: BTreeMap::new(),
            cooling: BTreeMap::new(),
            failures: 0,
            kv: bus.leases()?,
        })
    }

    /// How often [`Membership::tick`] should run: four times a lease.
    pub fn interval(&self) -> Duration {
        self.lease / 4
    }

    /// How long after a renewal was *sent* the shard may still be acted on: three quarters of
    /// a lease. The server wrote the renewal after it was sent, and nobody can create the
    /// lease before a whole lease has passed since that write, so a worker cut off from the
    /// server stops (checking locally) a quarter of a lease before anyone else may start.
    pub fn validity(&self) -> Duration {
        self.lease * 3 / 4
    }

    /// The worker could not start `shard` (say, its server answers "stream not found" while
    /// it catches up after a pause): it gives the lease up and leaves the shard out of the set
    /// it advertises for a while, doubling at each failure in a row, so that the next
    /// preferred worker takes it instead of this one taking it again and failing again.
    pub fn could_not_start(&mut self, bus: &Bus, shard: u32) {
        self.release(bus, shard);
        let now = Instant::now();
        let failures = match self.cooling.get(&shard) {
            // A failure long after the last cooling ended starts again from the first.
            Some(&(until, n))
                if now.saturating_duration_since(until) < self.lease * MAX_COOLING_LEASES =>
            {
                n + 1
            }
            _ => 1,
        };
        let leases = COOLING_LEASES
            .saturating_mul(1 << (failures - 1).min(5))
            .min(MAX_COOLING_LEASES);
        tracing::warn!(
            member = %self.id,
            shard,
            failures,
            away = ?self.lease * leases,
            "could not start the shard: leaving it to another worker for a while"
        );
        self.cooling
            .insert(shard, (now + self.lease * leases, failures));
    }

    /// Whether `shard` is left to others now.
    fn is_cooling(&self, shard: u32) -> bool {
        self.cooling
            .get(&shard)
            .is_some_and(|&(until, _)| Instant::now() < until)
    }

    /// Renewals first (they must not wait for anything else), then the heartbeat and the
    /// membership, then the shards to take or give up. When the membership cannot be read,
    /// the renewals still count and nothing is taken or given up.
    /// `renew` false lets the leases lapse (the evaluating thread is stuck: better another
    /// worker takes its shards).
    pub fn tick(&mut self, bus: &Bus, renew: bool) -> Result<Vec<Change>, FleetError> {
        let mut changes = if renew {
            self.renew_only(bus)
        } else {
            Vec::new()
        };
        let kv = &self.kv;
        let id = self.id.clone();
        let advertised = self.set.without(|s| self.is_cooling(s));
        let set_text = advertised.to_string();
        let candidates = self.set.shards(self.total);
        let members = bus.block_on(async {
            kv.put(format!("worker.{id}"), set_text.into())
                .await
                .map_err(|e| js_err("heartbeat")(&e))?;
            // The heartbeat subjects (one stream info request; the client's `keys` creates an
            // ordered consumer per call, slow on a busy cluster), then each heartbeat (a
            // deleted one reads as absent).
            let prefix = format!("$KV.{}.worker.", super::LEASE_BUCKET);
            let ids: Vec<String> = super::subjects(&kv.stream, &format!("{prefix}*"))
                .await?
                .into_iter()
                .filter_map(|s| s.strip_prefix(&prefix).map(str::to_string))
                .collect();
            let mut members = Vec::new();
            for w in ids {
                if let Ok(Some(v)) = kv.get(format!("worker.{w}")).await
                    && let Ok(set) = String::from_utf8_lossy(&v).parse::<ShardSet>()
                {
                    members.push((w, set));
                }
            }
            Ok::<_, FleetError>(members)
        });
        let members = match members {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(member = %self.id, "fleet membership: {e}");
                self.failures += 1;
                return Ok(changes);
            }
        };
        self.failures = 0;
        let ids = |m: &[(String, ShardSet)]| m.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();
        if ids(&members) != ids(&self.members) {
            tracing::info!(member = %self.id, members = ?ids(&members), "fleet membership");
        }
        self.members = members;
        // Shards to give up, shards to take.
        for &shard in &candidates {
            let pref = preferred(shard, &self.members);
            // A shard this worker could not start lately is left to the others, unless no one
            // advertises it (they all failed it): then any of them may take it, the lease
            // deciding which, rather than none until the coolings end.
            let mine = if self.is_cooling(shard) {
                pref.is_none()
            } else {
                pref == Some(self.id.as_str())
            };
            match self.held.entry(shard) {
                std::collections::btree_map::Entry::Occupied(_) => {
                    if !mine && pref.is_some() {
                        changes.push(Change::ShouldRelease(shard));
                    }
                }
                std::collections::btree_map::Entry::Vacant(slot) if mine => {
                    let key = format!("shard.{shard}");
                    let sent = Instant::now();
                    match bus.block_on(kv.create(&key, id.clone().into())) {
                        Ok(rev) => {
                            slot.insert(Held {
                                revision: rev,
                                renewed: sent,
                            });
                            self.waiting.remove(&shard);
                            changes.push(Change::Acquired(shard, rev));
                        }
                        Err(e) => {
                            // Held by a worker that left or is releasing it: normal for up to
                            // a lease; longer is worth a line.
                            let since = *self.waiting.entry(shard).or_insert_with(Instant::now);
                            if since.elapsed() > self.lease * 2 {
                                tracing::warn!(
                                    member = %self.id,
                                    shard,
                                    waited = ?since.elapsed(),
                                    "cannot take the shard it is preferred for: {e}"
                                );
                                self.waiting.insert(shard, Instant::now());
                            }
                        }
                    }
                }
                std::collections::btree_map::Entry::Vacant(_) => {}
            }
        }
        Ok(changes)
    }

    /// Renews the leases held, nothing else (while stopping).
    pub fn renew_only(&mut self, bus: &Bus) -> Vec<Change> {
        let mut changes = Vec::new();
        let held: Vec<(u32, u64)> = self.held.iter().map(|(&s, h)| (s, h.revision)).collect();
        for (shard, rev) in held {
            let sent = Instant::now();
            match bus.block_on(self.kv.update(
                format!("shard.{shard}"),
                self.id.clone().into(),
                rev,
            )) {
                Ok(new) => {
                    self.held.insert(
                        shard,
                        Held {
                            revision: new,
                            renewed: sent,
                        },
                    );
                    changes.push(Change::Renewed(shard, new));
                }
                Err(_) => {
                    self.held.remove(&shard);
                    changes.push(Change::Lost(shard));
                }
            }
        }
        changes
    }

    /// Gives a shard up (after its evidence is written and its batches acknowledged).
    pub fn release(&mut self, bus: &Bus, shard: u32) {
        if self.held.remove(&shard).is_some() {
            let key = format!("shard.{shard}");
            if let Err(e) = bus.block_on(self.kv.delete(&key)) {
                tracing::warn!(shard, "releasing the lease: {e} (it will expire)");
            }
        }
    }

    /// Leaves the fleet: releases every lease and the heartbeat (on a clean stop).
    pub fn leave(&mut self, bus: &Bus) {
        let shards: Vec<u32> = self.held.keys().copied().collect();
        for s in shards {
            self.release(bus, s);
        }
        let _ = bus.block_on(self.kv.delete(format!("worker.{}", self.id)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_sets_parse_and_print() {
        let s: ShardSet = "0-3, 8,10-11".parse().unwrap();
        assert_eq!(s.shards(16), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(s.to_string(), "0-3,8,10-11");
        assert_eq!(
            "3-1".parse::<ShardSet>(),
            Err(ShardSetError::Backwards("3-1".into()))
        );
        assert_eq!(
            "0, a-b".parse::<ShardSet>(),
            Err(ShardSetError::NotAShard("a-b".into()))
        );
        assert_eq!(ShardSet::all(4).shards(4), vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_set_without_some_shards_keeps_the_others() {
        let s: ShardSet = "0-7,10-11".parse().unwrap();
        let w = s.without(|x| x == 0 || x == 4 || x == 11);
        assert_eq!(w.to_string(), "1-3,5-7,10");
        assert_eq!(w.shards(16), vec![1, 2, 3, 5, 6, 7, 10]);
        assert_eq!(s.without(|_| false), s);
        // Nothing left: advertised as no set at all (the worker is preferred for nothing).
        assert!(s.without(|_| true).to_string().parse::<ShardSet>().is_err());
        // A worker that left shard 5 out is no longer preferred for it; the others keep theirs.
        let all = ShardSet::all(16);
        let members: Vec<(String, ShardSet)> = ["w-a", "w-b", "w-c"]
            .iter()
            .map(|w| (w.to_string(), all.clone()))
            .collect();
        let owner = preferred(5, &members).unwrap().to_string();
        let cooled: Vec<(String, ShardSet)> = members
            .iter()
            .map(|(id, set)| {
                let set = if *id == owner {
                    set.without(|x| x == 5)
                } else {
                    set.clone()
                };
                (id.clone(), set)
            })
            .collect();
        assert_ne!(preferred(5, &cooled).unwrap(), owner);
        for x in (0..16).filter(|&x| x != 5) {
            assert_eq!(preferred(x, &cooled), preferred(x, &members), "shard {x}");
        }
    }

    #[test]
    fn rendezvous_moves_only_the_shards_of_who_joins_or_leaves() {
        let all = ShardSet::all(64);
        let three: Vec<(String, ShardSet)> = ["w-a", "w-b", "w-c"]
            .iter()
            .map(|w| (w.to_string(), all.clone()))
            .collect();
        let before: Vec<&str> = (0..64).map(|s| preferred(s, &three).unwrap()).collect();
        // Spread: every worker gets a fair part.
        for w in ["w-a", "w-b", "w-c"] {
            let n = before.iter().filter(|&&o| o == w).count();
            assert!((10..=32).contains(&n), "{w}: {n}");
        }
        // w-b leaves: only its shards move.
        let two = vec![three[0].clone(), three[2].clone()];
        for s in 0..64u32 {
            let after = preferred(s, &two).unwrap();
            if before[s as usize] != "w-b" {
                assert_eq!(after, before[s as usize], "shard {s} moved");
            }
        }
        // A worker that covers only some shards is never preferred for others.
        let narrow = vec![
            ("w-a".to_string(), "0-7".parse().unwrap()),
            ("w-b".to_string(), "8-15".parse().unwrap()),
        ];
        for s in 0..16 {
            assert_eq!(
                preferred(s, &narrow).unwrap(),
                if s < 8 { "w-a" } else { "w-b" }
            );
        }
        assert_eq!(preferred(16, &narrow), None);
    }
}
