//! The collector role's outbox: flows sharded into batches, published on the fleet's stream,
//! retried while the server refuses them, and held until a worker confirms that their evidence
//! is written.
//!
//! An acknowledgement from JetStream says that the server stored a batch; it does not say that
//! a worker will see it. Under a node's pause, nats-server 2.9 was seen to acknowledge batches
//! that no consumer ever delivered (a resumed node answered for copies that its peers' log
//! replaced; the stream then held other batches at those sequences, or none). So a batch stays
//! in the outbox after its acknowledgement, up to [`CONFIRM_FOR`], until the worker that wrote
//! it confirms it ([`crate::fleet::Bus::confirm`]). A batch still unconfirmed `fleet.confirm_wait`
//! ([`CONFIRM_WAIT`] by default) after it was stored is looked up in the stream at the sequence its acknowledgement named:
//! still there, it waits for its worker (checked again later); gone or replaced, it is sent
//! again as a new copy (`<id>.c<n>`), which the worker that already counted it skips by its
//! id, and which the worker that never saw it applies. The end-to-end argument: only the
//! writer of the evidence can say that it is written.
//!
//! Every queue is bounded: [`RETRY_BATCHES`] refused batches for [`RETRY_FOR`], and
//! [`HOLD_BYTES`] of held batches; beyond, a batch is dropped (refused) or not held
//! (unconfirmed) and counted. What is held is in memory: a collector killed loses the
//! protection of the batches it held (they are in the stream, or lost as before).

use super::pipeline::Counters;
use crate::fleet::{AtSeq, Bus, Confirmations, Publisher};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long the collector role keeps retrying a refused batch: within the time the server
/// remembers a batch's message id (at most half of it), so that a retry of a batch it stored is
/// not stored again; long enough for a node resumed after a pause, which answers without its
/// JetStream for tens of seconds.
pub const RETRY_FOR: Duration = Duration::from_secs(60);
const _: () = assert!(RETRY_FOR.as_secs() * 2 <= crate::fleet::DUPLICATE_WINDOW.as_secs());
/// The collector role's bounded queue of refused batches (about 40 MB of flows at most).
pub const RETRY_BATCHES: usize = 1024;
/// The collector role connects elsewhere at most this often when every publish fails.
const PUBLISH_RECONNECT_EVERY: Duration = Duration::from_secs(5);

/// How long after its storage an unconfirmed batch is looked up in the stream (and again
/// after each look-up that found it waiting there), by default (`fleet.confirm_wait`). Workers
/// confirm at each write (every second or so); a takeover takes a lease or two.
pub const CONFIRM_WAIT: Duration = Duration::from_secs(30);
/// How long a batch is held at most; after that, unconfirmed, it is left to the stream (its
/// workers away for that long: the stream keeps it for them) and counted.
pub const CONFIRM_FOR: Duration = Duration::from_secs(600);
/// The most bytes of batches held for confirmation; a batch stored beyond it is not held (and
/// is counted as unconfirmed).
pub const HOLD_BYTES: usize = 64 << 20;
/// Look-ups of unconfirmed batches per flush (one every 50 ms): a backlog of held batches is
/// looked up over several rounds rather than with a burst of requests.
const LOOKUPS_PER_FLUSH: usize = 16;

/// A stored batch waiting for its worker's confirmation.
struct Held {
    shard: u32,
    data: Vec<u8>,
    /// Where the server said it stored the batch's last copy, and under which copy number.
    seq: u64,
    copy: u32,
    /// First stored; last looked up (or stored).
    since: Instant,
    checked: Instant,
}

/// A batch to publish: (shard, bytes, copy number).
type Outgoing = (u32, Vec<u8>, u32);

/// The collector role's outbox (see the module docs).
pub struct Outbox {
    bus: Bus,
    publisher: Publisher,
    /// Encoded batches ready to publish.
    ready: Vec<Outgoing>,
    /// Batches the bus refused (stream full, no leader during an election, server away):
    /// retried for [`RETRY_FOR`], at most [`RETRY_BATCHES`] of them, then dropped and counted.
    retry: VecDeque<(Outgoing, Instant)>,
    last_retry: Instant,
    /// Publish rounds in a row in which every batch failed, and when the bus last connected
    /// again elsewhere because of them.
    failed_rounds: u32,
    last_reconnect: Instant,
    /// Confirmations of this publisher's batches (none when the subscription failed: batches
    /// are then not held).
    confirms: Option<Confirmations>,
    /// Stored batches by their publisher sequence, and their bytes.
    held: BTreeMap<u64, Held>,
    held_bytes: usize,
    confirm_wait: Duration,
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if let Some(c) = self.confirms.take() {
            self.bus.close_confirmations(c);
        }
    }
}

/// The publisher sequence of a batch, as [`crate::fleet::Bus::confirm`] sends it.
fn batch_seq(data: &[u8]) -> Option<u64> {
    let key = crate::fleet::codec::batch_key(data)?;
    Some(u64::from_be_bytes(key[16..].try_into().expect("8 bytes")))
}

impl Outbox {
    /// An outbox publishing `publisher`'s batches on `bus`; a batch unconfirmed
    /// `confirm_wait` after its storage is looked up in the stream.
    pub fn new(bus: Bus, publisher: Publisher, confirm_wait: Duration) -> Outbox {
        let confirms = match bus.confirmations(publisher.id()) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("{e}: batches are not held for confirmation");
                None
            }
        };
        Outbox {
            bus,
            publisher,
            ready: Vec::new(),
            retry: VecDeque::new(),
            last_retry: Instant::now(),
            failed_rounds: 0,
            last_reconnect: Instant::now(),
            confirms,
            held: BTreeMap::new(),
            held_bytes: 0,
            confirm_wait,
        }
    }

    /// Queues a flow; full batches wait for the next [`Outbox::flush`].
    pub fn push(&mut self, flow: crate::flow::Flow) {
        self.ready.extend(
            self.publisher
                .push(flow)
                .into_iter()
                .map(|(s, b)| (s, b, 0)),
        );
    }

    /// Whether refused batches wait for a retry.
    pub fn retrying(&self) -> bool {
        !self.retry.is_empty()
    }

    /// Publishes every partial batch, retries refused ones, forgets confirmed ones and sends
    /// again those the stream lost.
    pub fn flush(&mut self, counters: &Counters) {
        self.ready
            .extend(self.publisher.flush().into_iter().map(|(s, b)| (s, b, 0)));
        self.take_confirmed(counters);
        self.look_up_unconfirmed(counters);
        // Refused batches first (in their order), at most every 200 ms.
        let mut batches: Vec<(Outgoing, Option<Instant>)> = Vec::new();
        if !self.retry.is_empty() && self.last_retry.elapsed() >= Duration::from_millis(200) {
            self.last_retry = Instant::now();
            batches.extend(self.retry.drain(..).map(|(b, t)| (b, Some(t))));
        }
        batches.extend(self.ready.drain(..).map(|b| (b, None)));
        if !batches.is_empty() {
            self.publish(batches, counters);
        }
        counters
            .retry_queue
            .store(self.retry.len() as u64, Ordering::Relaxed);
        counters
            .held_batches
            .store(self.held.len() as u64, Ordering::Relaxed);
        if let Some(c) = &self.confirms {
            counters
                .malformed_confirmations
                .store(c.malformed, Ordering::Relaxed);
        }
    }

    fn publish(&mut self, batches: Vec<(Outgoing, Option<Instant>)>, counters: &Counters) {
        let results = self
            .bus
            .publish_copies(batches.iter().map(|((s, b, c), _)| (*s, b.as_slice(), *c)));
        if results.iter().all(Result::is_err) {
            self.failed_rounds += 1;
            // A server that answers but whose JetStream does not (a node resumed after a
            // pause) keeps the connection: after a few rounds, connect elsewhere (at most every
            // few seconds, so that a full stream, which refuses every batch too, costs little).
            if self.failed_rounds >= 3 && self.last_reconnect.elapsed() >= PUBLISH_RECONNECT_EVERY {
                self.bus.reconnect();
                self.failed_rounds = 0;
                self.last_reconnect = Instant::now();
            }
        } else {
            self.failed_rounds = 0;
        }
        let mut warned = false;
        for (r, ((shard, data, copy), first)) in results.into_iter().zip(batches) {
            match r {
                Ok(stored) => {
                    counters.published_batches.fetch_add(1, Ordering::Relaxed);
                    if stored.duplicate {
                        counters.duplicate_batches.fetch_add(1, Ordering::Relaxed);
                    }
                    // Where a retried batch went (rare, and what an accounting of a lost
                    // batch needs): stored now, or said to be a copy of one stored before.
                    if first.is_some() || stored.duplicate || copy > 0 {
                        tracing::info!(
                            shard,
                            seq = stored.sequence,
                            duplicate = stored.duplicate,
                            retried = first.is_some(),
                            copy,
                            id = crate::fleet::codec::batch_id(&data).unwrap_or_default(),
                            "fleet: batch stored"
                        );
                    }
                    self.hold(shard, data, copy, stored.sequence, counters);
                }
                Err(e) => {
                    let first = first.unwrap_or_else(Instant::now);
                    if first.elapsed() < RETRY_FOR && self.retry.len() < RETRY_BATCHES {
                        if !warned {
                            tracing::warn!("{e} (batches kept and retried)");
                            warned = true;
                        }
                        counters.retried_batches.fetch_add(1, Ordering::Relaxed);
                        self.retry.push_back(((shard, data, copy), first));
                    } else {
                        tracing::error!("{e}: batch of shard {shard} dropped");
                        counters.refused_batches.fetch_add(1, Ordering::Relaxed);
                        if let Some(h) = batch_seq(&data).and_then(|q| self.held.remove(&q)) {
                            self.held_bytes -= h.data.len();
                        }
                    }
                }
            }
        }
    }

    /// Keeps a stored batch until its worker confirms it.
    fn hold(&mut self, shard: u32, data: Vec<u8>, copy: u32, seq: u64, counters: &Counters) {
        let Some(key) = batch_seq(&data).filter(|_| self.confirms.is_some()) else {
            return;
        };
        let now = Instant::now();
        if let Some(h) = self.held.get_mut(&key) {
            // A copy sent again: held as before, looked up where it went now.
            h.seq = seq;
            h.copy = copy;
            h.checked = now;
            return;
        }
        if self.held_bytes + data.len() > HOLD_BYTES {
            counters.unconfirmed_batches.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.held_bytes += data.len();
        self.held.insert(
            key,
            Held {
                shard,
                data,
                seq,
                copy,
                since: now,
                checked: now,
            },
        );
    }

    fn take_confirmed(&mut self, counters: &Counters) {
        let Some(c) = self.confirms.as_mut() else {
            return;
        };
        for seq in self.bus.take_confirmed(c) {
            if let Some(h) = self.held.remove(&seq) {
                self.held_bytes -= h.data.len();
                counters.confirmed_batches.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Looks the oldest unconfirmed batches up in the stream; queues a new copy of those it no
    /// longer holds.
    fn look_up_unconfirmed(&mut self, counters: &Counters) {
        let due: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, h)| h.checked.elapsed() >= self.confirm_wait)
            .map(|(&k, _)| k)
            .take(LOOKUPS_PER_FLUSH)
            .collect();
        for key in due {
            let h = self.held.get_mut(&key).expect("held");
            if h.since.elapsed() >= CONFIRM_FOR {
                let h = self.held.remove(&key).expect("held");
                self.held_bytes -= h.data.len();
                counters.unconfirmed_batches.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    shard = h.shard,
                    id = crate::fleet::codec::batch_id(&h.data).unwrap_or_default(),
                    "fleet: no worker confirmed the batch in {}s: no longer held",
                    CONFIRM_FOR.as_secs()
                );
                continue;
            }
            let id = crate::fleet::codec::batch_id(&h.data).unwrap_or_default();
            let message_id = crate::fleet::copy_id(&id, h.copy);
            match self.bus.stored_at(h.seq, &message_id) {
                Ok(AtSeq::Same) => h.checked = Instant::now(),
                Ok(at) => {
                    // Acknowledged by a worker whose confirmation was lost, or lost by the
                    // stream: a new copy either way (skipped by a worker that counted it).
                    tracing::warn!(
                        shard = h.shard,
                        seq = h.seq,
                        id,
                        found = ?at,
                        "fleet: a stored batch no worker confirmed is not in the stream: sent again"
                    );
                    counters.resent_batches.fetch_add(1, Ordering::Relaxed);
                    h.checked = Instant::now();
                    let copy = (h.shard, h.data.clone(), h.copy + 1);
                    self.ready.push(copy);
                }
                Err(e) => {
                    tracing::debug!("fleet: looking a held batch up: {e}");
                    h.checked = Instant::now();
                }
            }
        }
    }
}
