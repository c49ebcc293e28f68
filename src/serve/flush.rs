//! Writing the inventory: [`Daemon::flush`] and the thread that calls it every
//! `flush_interval` (and samples the overview's history every [`HISTORY_EVERY`]).
//!
//! A flush writes only the hosts changed since the last write, [`FLUSH_CHUNK`] at a time, so
//! that a shard's worker waits for at most one chunk; a chunk that fails is marked changed again
//! and written by the next flush. Then the DNS pairs changed since the last write that
//! succeeded. Worker role: the fleet members write their shards (with their fences) themselves,
//! and the flush reads back the names the other workers learned. The last flush runs at
//! shutdown, after the workers and the fleet members have stopped ([`super::lifecycle`]).

use super::Daemon;
use super::ServeError;
use super::error::Part;
use super::pipeline::{Shard, ShardState};
use super::state::HISTORY_EVERY;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Hosts written per transaction (and per hold of a shard's lock) by a flush.
const FLUSH_CHUNK: usize = 2000;

impl Daemon {
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
            .map(|s| s.lock().hosts().dirty_len())
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
                    scanner.hosts_mut().take_dirty(&snapshot.ruleset, take)
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
                            g.hosts_mut().mark_dirty(a);
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
                crate::inventory::StoredDnsPair::restore(&stored, &mut map);
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

/// Starts the thread that flushes every `flush_interval` (at least 100 ms), samples the
/// history and releases retired rulesets, until `stop`.
pub(super) fn spawn(
    daemon: &Arc<Daemon>,
    stop: &Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, ServeError> {
    let d = daemon.clone();
    let stop = stop.clone();
    let every = d.config.flush_interval.0.max(Duration::from_millis(100));
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
        .part("starting a thread")
}
