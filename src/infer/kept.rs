//! Evidence of rules that are not loaded: restored from an inventory written with other rules
//! (another pack, a pack since removed, the daemon's own rules), or left by a reload that
//! removed a rule. It is kept exactly as stored — not scored, never changed — and written back
//! with its host on every save, so that no run with fewer rules loses it. When a rule of the same
//! id is loaded again, its evidence counts again ([`HostTable::restore`],
//! [`HostTable::remap_rules`]). Only an explicit request removes it
//! (`analyze --db INV --prune-unknown-rules`). Like all evidence of an epoch, it is left behind
//! when the address starts a new epoch (another machine).
//!
//! Here too: carrying an inventory over from one ruleset to another, from the store
//! ([`HostTable::restore`]) or across a reload ([`HostTable::remap_rules`]).

use super::stored::{StoredEvidence, StoredHost};
use super::{EpochChange, EvidenceAgg, HostState, HostTable};
use crate::ruleset::Ruleset;
use crate::schema::addr_key;
use rustc_hash::FxHashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// One stored evidence row of a rule that is not loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptEvidence {
    /// `pack/id` of the rule (shared between the hosts that have evidence of it).
    pub rule: Arc<str>,
    /// Matching flows, as stored.
    pub flows: u64,
    /// First matching flow, ms.
    pub first_seen: i64,
    /// Last matching flow, ms.
    pub last_seen: i64,
}

impl KeptEvidence {
    /// The row as stored.
    pub fn to_stored(&self) -> StoredEvidence {
        StoredEvidence {
            rule: self.rule.to_string(),
            flows: self.flows,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
        }
    }
}

/// One `Arc<str>` per rule id, so that a rule's id is held once however many hosts keep its
/// evidence.
#[derive(Debug, Default)]
pub(super) struct Interner {
    ids: FxHashMap<Arc<str>, u64>,
}

impl Interner {
    /// The shared id, counting one more row of it.
    pub(super) fn intern(&mut self, id: &str) -> Arc<str> {
        let k = match self.ids.get_key_value(id) {
            Some((k, _)) => k.clone(),
            None => id.into(),
        };
        *self.ids.entry(k.clone()).or_insert(0) += 1;
        k
    }

    /// `(rule, rows)`, in id order.
    pub(super) fn counts(self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .ids
            .into_iter()
            .map(|(k, n)| (k.to_string(), n))
            .collect();
        v.sort_unstable();
        v
    }
}

/// What [`super::HostTable::restore`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// Hosts restored.
    pub hosts: usize,
    /// Stored hosts whose address did not parse (left in the store, not loaded).
    pub bad_hosts: u64,
    /// Evidence rows of rules that are not loaded, kept unscored.
    pub kept_rows: u64,
    /// Those rules, with their rows, in id order.
    pub kept_rules: Vec<(String, u64)>,
}

impl Restored {
    /// A one-line note for people when evidence of rules not loaded was kept (`None` when
    /// every row's rule is loaded): how many rows, of how many rules, a few of their ids.
    pub fn kept_note(&self) -> Option<String> {
        if self.kept_rows == 0 {
            return None;
        }
        let shown: Vec<_> = self
            .kept_rules
            .iter()
            .take(3)
            .map(|(r, _)| crate::text::printable(r))
            .collect();
        let more = if self.kept_rules.len() > 3 {
            format!(", +{} more", self.kept_rules.len() - 3)
        } else {
            String::new()
        };
        Some(format!(
            "{} stored evidence row(s) of {} rule(s) not loaded ({}{more}) kept, not scored",
            self.kept_rows,
            self.kept_rules.len(),
            shown.join(", ")
        ))
    }
}

impl HostTable {
    /// Restores hosts saved by [`HostTable::to_stored`]. Evidence of rules that are not loaded
    /// is kept as stored, unscored, and saved back with its host ([`crate::infer::kept`]); the returned
    /// [`Restored`] counts it. Beyond [`InferConfig::max_hosts`](super::InferConfig::max_hosts), the least recently seen hosts
    /// are evicted (and counted) as when flows arrive; they stay in the store as they are.
    pub fn restore(&mut self, stored: &[StoredHost], rules: &Ruleset) -> Restored {
        let index: FxHashMap<&str, u32> = rules
            .rules()
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.as_str(), i as u32))
            .collect();
        let mut out = Restored::default();
        let mut ids = Interner::default();
        for s in stored {
            let Ok(addr) = s.host.parse::<IpAddr>() else {
                out.bad_hosts += 1;
                continue;
            };
            let mut h = HostState {
                flows: s.flows,
                first_seen: s.first_seen,
                last_seen: s.last_seen,
                epoch: s.epoch,
                ..Default::default()
            };
            for e in &s.evidence {
                match index.get(e.rule.as_str()) {
                    Some(&rule) => h.evidence.push(EvidenceAgg {
                        rule,
                        flows: e.flows.min(u64::from(u32::MAX)) as u32,
                        first_seen: e.first_seen,
                        last_seen: e.last_seen,
                        weight: 1000,
                    }),
                    None => {
                        let rule = ids.intern(&e.rule);
                        h.extra().kept.push(KeptEvidence {
                            rule,
                            flows: e.flows,
                            first_seen: e.first_seen,
                            last_seen: e.last_seen,
                        });
                        out.kept_rows += 1;
                    }
                }
            }
            for e in s.epochs.iter().filter(|e| e.epoch > 0) {
                h.extra().epochs.push(EpochChange {
                    epoch: e.epoch,
                    started: e.started,
                    reason: e.reason.clone(),
                });
            }
            self.now_ms = self.now_ms.max(s.last_seen);
            self.hosts.insert(addr_key(addr), h);
            out.hosts += 1;
        }
        out.kept_rules = ids.counts();
        if self.hosts.len() > self.config.max_hosts {
            self.evict_oldest(None);
        }
        out
    }

    /// Carries the state over from ruleset `old` to `new` after a reload: `map[old]` is the new
    /// position of the rule at position `old`, or `None` when it is gone or its condition
    /// changed. Evidence, stateful windows, samples and hit counts of mapped rules move to their
    /// new positions. The evidence of a rule whose condition changed is dropped (what it gathered
    /// no longer means the same); the evidence of a rule no longer loaded is kept unscored
    /// ([`crate::infer::kept`]), and kept evidence of a rule loaded again counts again.
    pub fn remap_rules(&mut self, map: &[Option<u32>], old: &Ruleset, new: &Ruleset) {
        let new_len = new.len();
        let to = |r: u32| map.get(r as usize).copied().flatten();
        let new_index: FxHashMap<&str, u32> = new
            .rules()
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.as_str(), i as u32))
            .collect();
        let mut ids = Interner::default();
        for h in self.hosts.values_mut() {
            let mut gone = Vec::new();
            h.evidence.retain_mut(|e| match to(e.rule) {
                Some(n) => {
                    e.rule = n;
                    true
                }
                None => {
                    let id = old.rules()[e.rule as usize].id.as_str();
                    if !new_index.contains_key(id) {
                        gone.push(KeptEvidence {
                            rule: ids.intern(id),
                            flows: u64::from(e.flows),
                            first_seen: e.first_seen,
                            last_seen: e.last_seen,
                        });
                    }
                    false
                }
            });
            let mut back = Vec::new();
            if let Some(x) = h.extra.as_mut() {
                x.kept.retain(|k| match new_index.get(&*k.rule) {
                    Some(&rule) => {
                        back.push((rule, k.clone()));
                        false
                    }
                    None => true,
                });
            }
            for (rule, k) in back {
                adopt(h, rule, &k);
            }
            if !gone.is_empty() {
                h.extra().kept.extend(gone);
            }
            if let Some(x) = h.extra.as_mut() {
                x.stateful.retain_mut(|s| match to(s.rule) {
                    Some(n) => {
                        s.rule = n;
                        true
                    }
                    None => false,
                });
                x.samples.retain_mut(|(r, _)| match to(*r) {
                    Some(n) => {
                        *r = n;
                        true
                    }
                    None => false,
                });
            }
        }
        let mut hits = vec![0; new_len];
        for (old, &c) in self.rule_hits.iter().enumerate() {
            if let Some(n) = to(old as u32)
                && let Some(slot) = hits.get_mut(n as usize)
            {
                *slot = c;
            }
        }
        self.rule_hits = hits;
    }

    /// Removes the kept evidence of rules not loaded from every host (after the store deleted
    /// it on request, so that no save writes it back); returns the rows removed.
    pub fn drop_kept(&mut self) -> u64 {
        let mut n = 0;
        for h in self.hosts.values_mut() {
            if let Some(x) = h.extra.as_mut() {
                n += x.kept.len() as u64;
                x.kept.clear();
            }
        }
        n
    }
}

/// Kept evidence of a rule loaded again (at position `rule`) counts again: merged into the
/// host's evidence of that rule.
fn adopt(h: &mut HostState, rule: u32, k: &KeptEvidence) {
    let flows = k.flows.min(u64::from(u32::MAX)) as u32;
    match h.evidence.iter_mut().find(|e| e.rule == rule) {
        Some(e) => {
            e.flows = e.flows.saturating_add(flows);
            e.first_seen = e.first_seen.min(k.first_seen);
            e.last_seen = e.last_seen.max(k.last_seen);
        }
        None => h.evidence.push(EvidenceAgg {
            rule,
            flows,
            first_seen: k.first_seen,
            last_seen: k.last_seen,
            weight: 1000,
        }),
    }
}
