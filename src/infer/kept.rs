//! Evidence of rules that are not loaded: restored from an inventory written with other rules
//! (another pack, a pack since removed, the daemon's own rules), or left by a reload that
//! removed a rule. It is kept exactly as stored — not scored, never changed — and written back
//! with its host on every save, so that no run with fewer rules loses it. When a rule of the same
//! id is loaded again, its evidence counts again ([`super::Inventory::restore`],
//! [`super::Inventory::remap_rules`]). Only an explicit request removes it
//! (`analyze --db INV --prune-unknown-rules`).

use crate::inventory::StoredEvidence;
use rustc_hash::FxHashMap;
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

/// What [`super::Inventory::restore`] did.
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
