//! Per-host state of stateful rules: the recent matching flows of one rule, and the running
//! totals of the host's transfers (one per connection, shared by every transfer rule).
//!
//! Everything is bounded: at most [`MAX_EVENTS`] events per (host, rule) and
//! [`MAX_TRANSFERS`] open transfers per host; older ones fall out of the window or are dropped
//! first.

use crate::flow::Flow;
use crate::ruleset::Stateful;
use crate::schema::{NumField, Side, View, addr_key};
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

/// Most events kept per (host, rule).
pub const MAX_EVENTS: usize = 1024;
/// Most transfers tracked at once per (host, rule).
pub const MAX_TRANSFERS: usize = 16;

/// One matching flow, reduced to what aggregates need.
#[derive(Debug, Clone, Copy)]
struct Event {
    at: i64,
    peer: u64,
    domain: u64,
}

/// Bytes the peer sent over the records of one transfer (same endpoints and ports, adjacent).
#[derive(Debug, Clone, Copy)]
pub struct TransferAcc {
    key: u64,
    last_end: i64,
    /// Bytes the peer sent so far.
    pub bytes: u64,
    /// Packets the peer sent so far.
    pub packets: u64,
    /// The coarsest packet sampling among the records (1: unsampled).
    pub rate: u32,
}

impl TransferAcc {
    /// How far from `size` the total may be: `tolerance` for unsampled records, wider for
    /// sampled ones (see [`sampled_tolerance`]).
    pub fn tolerance_for(&self, size: u64, tolerance: u64) -> u64 {
        let widened = (size as f64 * sampled_tolerance(self.rate, self.packets)) as u64;
        tolerance.max(widened)
    }
}

/// A host's running transfer totals: one per connection (peer, ports, protocol; records no
/// more than the transfer gap apart), shared by every transfer rule. At most
/// [`MAX_TRANSFERS`]; the least recently extended goes first.
#[derive(Debug, Clone, Default)]
pub struct Transfers(Vec<TransferAcc>);

impl Transfers {
    /// Adds a record that passed a transfer gate to its connection's total; returns the total.
    pub fn add(&mut self, view: &View<'_>, gap_ms: i64) -> TransferAcc {
        let f = view.flow;
        let now = f.end_ms.max(f.start_ms);
        let key = hash_of((
            addr_key(view.addr(Side::Peer)),
            view.num(NumField::Port(Side::Host)),
            view.num(NumField::Port(Side::Peer)),
            f.proto,
        ));
        let bytes = view.num(NumField::SideBytes(Side::Peer)).unwrap_or(0);
        let packets = view.num(NumField::SidePackets(Side::Peer)).unwrap_or(0);
        let acc = match self
            .0
            .iter_mut()
            .position(|t| t.key == key && f.start_ms.saturating_sub(t.last_end) <= gap_ms)
        {
            Some(i) => &mut self.0[i],
            None => {
                if self.0.len() == MAX_TRANSFERS {
                    let oldest = (0..self.0.len())
                        .min_by_key(|&i| self.0[i].last_end)
                        .unwrap_or(0);
                    self.0.swap_remove(oldest);
                }
                self.0.push(TransferAcc {
                    key,
                    last_end: now,
                    bytes: 0,
                    packets: 0,
                    rate: 1,
                });
                self.0.last_mut().expect("just pushed")
            }
        };
        acc.bytes = acc.bytes.saturating_add(bytes);
        acc.packets = acc.packets.saturating_add(packets);
        acc.last_end = acc.last_end.max(now);
        acc.rate = acc.rate.max(f.sampling);
        *acc
    }
}

/// The state of one stateful rule for one host.
#[derive(Debug, Clone)]
pub struct RuleState {
    /// Position of the rule in the ruleset.
    pub rule: u32,
    events: VecDeque<Event>,
}

fn hash_of(v: impl Hash) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    v.hash(&mut h);
    h.finish() | 1
}

/// Relative tolerance that a sampled byte count needs: the estimate of a 1-in-`rate` packet
/// sample of `packets` packets has a relative standard error of about √((rate−1)/packets);
/// three of those cover 99.7 % of transfers of the right size.
pub fn sampled_tolerance(rate: u32, packets: u64) -> f64 {
    if rate <= 1 || packets == 0 {
        return 0.0;
    }
    3.0 * ((f64::from(rate) - 1.0) / packets as f64).sqrt()
}

impl RuleState {
    /// Empty state for rule `rule`.
    pub fn new(rule: u32) -> RuleState {
        RuleState {
            rule,
            events: VecDeque::new(),
        }
    }

    /// Records a matching flow and tells whether the rule's aggregates now hold. A transfer
    /// rule comes here only once its transfer's total is within its window
    /// ([`Transfers`]); its other aggregates, if any, are judged over those flows.
    pub fn observe(&mut self, s: &Stateful, view: &View<'_>) -> bool {
        let flow: &Flow = view.flow;
        let now = flow.end_ms.max(flow.start_ms);
        let horizon = now.saturating_sub(s.window_ms as i64);
        while self.events.front().is_some_and(|e| e.at < horizon) {
            self.events.pop_front();
        }
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        let event = Event {
            at: flow.start_ms,
            peer: hash_of(addr_key(view.addr(Side::Peer))),
            domain: view.names(Side::Peer).next().map_or(0, hash_of),
        };
        // Keep events ordered by time even when records arrive slightly out of order.
        let pos = self.events.partition_point(|e| e.at <= event.at);
        self.events.insert(pos, event);
        self.aggregates_hold(s, s.transfer.is_some())
    }

    fn aggregates_hold(&self, s: &Stateful, transfer_only_counts: bool) -> bool {
        let in_range = |r: Option<(u64, u64)>, n: u64| r.is_none_or(|(lo, hi)| lo <= n && n <= hi);
        if let Some(p) = &s.period {
            let need = s.count.map_or(3, |(lo, _)| lo);
            return periodic_contacts(
                self.events.iter().map(|e| e.at),
                p.every_ms as i64,
                p.tolerance_ms as i64,
            ) >= need
                && in_range(s.peers, self.distinct(|e| e.peer))
                && in_range(s.domains, self.distinct(|e| e.domain));
        }
        let count_ok = transfer_only_counts && s.count.is_none()
            || in_range(s.count, self.events.len() as u64);
        count_ok
            && in_range(s.peers, self.distinct(|e| e.peer))
            && in_range(s.domains, self.distinct(|e| e.domain))
    }

    fn distinct(&self, key: impl Fn(&Event) -> u64) -> u64 {
        let mut v: Vec<u64> = self.events.iter().map(key).filter(|&k| k != 0).collect();
        v.sort_unstable();
        v.dedup();
        v.len() as u64
    }
}

/// Contacts on schedule, counted back from the latest one.
///
/// Contacts closer to the previous one than the tolerance are one contact (a check often opens
/// several flows). Walking back from the latest contact, an earlier contact continues the chain
/// when its gap to the chain's oldest contact is a whole number k ≥ 1 of periods within the
/// tolerance, with up to three missed contacts (k ≤ 4); contacts off schedule in between (a user
/// opening the same site) are skipped, not fatal; a gap longer than four periods ends the chain.
/// Jitter does not accumulate: every gap is measured between actual contacts.
pub fn periodic_contacts(times: impl Iterator<Item = i64>, period: i64, tolerance: i64) -> u64 {
    let mut contacts: Vec<i64> = Vec::new();
    for t in times {
        match contacts.last() {
            Some(&last) if t - last <= tolerance => {}
            _ => contacts.push(t),
        }
    }
    let Some(&latest) = contacts.last() else {
        return 0;
    };
    let mut chain = 1;
    let mut oldest = latest;
    for &t in contacts.iter().rev().skip(1) {
        let gap = oldest - t;
        let k = (gap + period / 2) / period;
        if (1..=4).contains(&k) && (gap - k * period).abs() <= tolerance {
            chain += 1;
            oldest = t;
        } else if gap > 4 * period + tolerance {
            break;
        }
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_chain_tolerates_jitter_missed_contacts_and_noise() {
        let m = 60_000;
        // every 15 min with ±30 s jitter, one contact missed, one extra contact in between
        let times = [
            0,
            15 * m + m / 2,
            30 * m - m / 2,
            37 * m,
            60 * m + m / 2,
            75 * m,
        ];
        assert_eq!(periodic_contacts(times.into_iter(), 15 * m, 90_000), 5);
        // irregular contacts are not periodic
        let irregular = [0, 3 * m, 11 * m, 40 * m, 41 * m];
        assert!(periodic_contacts(irregular.into_iter(), 15 * m, 90_000) <= 2);
        // bursts count once
        let bursts = [0, 1000, 2000, 15 * m, 15 * m + 500, 30 * m];
        assert_eq!(periodic_contacts(bursts.into_iter(), 15 * m, 90_000), 3);
    }

    #[test]
    fn sampled_tolerance_shrinks_with_more_packets() {
        assert_eq!(sampled_tolerance(1, 1000), 0.0);
        let few = sampled_tolerance(100, 1_000);
        let many = sampled_tolerance(100, 1_000_000);
        assert!(few > 0.9 && many < 0.03, "{few} {many}");
    }
}
