//! The compiled, immutable [`Ruleset`]: rules lowered to typed conditions, plus the indexes
//! that pick a short list of candidate rules for each flow. `Send + Sync`; share it behind `Arc`.

pub mod index;

use index::Index;

/// Confidence at which a family conclusion can open a new epoch or flag several machines (a
/// strong rule, in [`crate::infer`]'s terms).
pub const STRONG: f64 = 0.7;
use crate::schema::{NumField, Side, View, addr_key};
use regex::Regex;
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// An attribute a rule can conclude about a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Attribute {
    /// `os.family`: Windows, macOS, Linux, Android, iOS, ChromeOS...
    #[serde(rename = "os.family")]
    OsFamily,
    /// `os.name`: Windows 10, Ubuntu, Fedora...
    #[serde(rename = "os.name")]
    OsName,
    /// `os.version`
    #[serde(rename = "os.version")]
    OsVersion,
    /// `software`: a software product, optionally with a version.
    #[serde(rename = "software")]
    Software,
    /// `device`: phone, laptop, tv, printer...
    #[serde(rename = "device")]
    Device,
}

impl Attribute {
    /// All attributes with their names in rules.
    pub const NAMES: &'static [(&'static str, Attribute)] = &[
        ("os.family", Attribute::OsFamily),
        ("os.name", Attribute::OsName),
        ("os.version", Attribute::OsVersion),
        ("software", Attribute::Software),
        ("device", Attribute::Device),
    ];

    /// The name as written in rules.
    pub fn name(self) -> &'static str {
        Attribute::NAMES
            .iter()
            .find(|(_, a)| *a == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

/// One conclusion of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conclusion {
    /// What it is about.
    pub attribute: Attribute,
    /// The label, e.g. "Windows".
    pub value: String,
    /// For software: the version, when the rule knows it.
    pub version: Option<String>,
    /// 0..=1.
    pub confidence: f64,
}

/// Maturity of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// New; may misfire.
    #[default]
    Experimental,
    /// Being validated.
    Test,
    /// Trusted.
    Stable,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `pack/id`, unique in the ruleset.
    pub id: String,
    /// Human title.
    pub title: Option<String>,
    /// Longer text.
    pub description: Option<String>,
    /// Who wrote it.
    pub author: Option<String>,
    /// Its version.
    pub version: Option<String>,
    /// Maturity.
    pub status: Status,
    /// Where the knowledge comes from.
    pub references: Vec<String>,
    /// Free tags.
    pub tags: Vec<String>,
    /// What a match says.
    pub conclusions: Vec<Conclusion>,
    /// The condition.
    pub cond: Cond,
    /// Aggregates over a window (`over ...`); `None` for rules judged flow by flow.
    pub stateful: Option<Stateful>,
    /// Source file name and 1-based line, for explanations.
    pub location: String,
}

/// The compiled `over` clause of a stateful rule: all given aggregates must hold over the
/// flows of one host that satisfy the rule's `when` condition within the sliding window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stateful {
    /// Window length, ms.
    pub window_ms: u64,
    /// Matching flows in the window, inclusive range.
    pub count: Option<(u64, u64)>,
    /// Distinct peer addresses in the window.
    pub peers: Option<(u64, u64)>,
    /// Distinct peer names in the window.
    pub domains: Option<(u64, u64)>,
    /// Periodic contact.
    pub period: Option<Period>,
    /// A transfer of about this many bytes (summed over the records of one transfer).
    pub transfer: Option<Transfer>,
}

/// `period ~ P +- T`: contacts every P (or a multiple of P, when some were missed) within T.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Period {
    /// The period, ms.
    pub every_ms: u64,
    /// Allowed deviation of each gap from a multiple of the period, ms.
    pub tolerance_ms: u64,
}

/// `transfer ~ S +- T`: the bytes the peer sent in one transfer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transfer {
    /// Expected size, bytes.
    pub bytes: u64,
    /// Allowed deviation for unsampled data, bytes.
    pub tolerance: u64,
}

/// A set of addresses: sorted, merged, inclusive ranges in the [`addr_key`] space.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AddrSet {
    /// Disjoint, sorted, non-adjacent inclusive ranges.
    pub ranges: Vec<(u128, u128)>,
}

impl AddrSet {
    /// Builds a set from arbitrary ranges.
    pub fn from_ranges(mut ranges: Vec<(u128, u128)>) -> AddrSet {
        AddrSet {
            ranges: merge_ranges(&mut ranges),
        }
    }

    /// Membership by binary search.
    #[inline]
    pub fn contains(&self, key: u128) -> bool {
        let i = self.ranges.partition_point(|&(lo, _)| lo <= key);
        i > 0 && self.ranges[i - 1].1 >= key
    }
}

/// Sorts and merges overlapping or adjacent inclusive ranges.
pub fn merge_ranges<T: Copy + Ord + num_like::Succ>(ranges: &mut [(T, T)]) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for &(lo, hi) in ranges.iter() {
        match out.last_mut() {
            Some(last) if lo <= last.1.succ() => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// Saturating successor for range merging.
pub mod num_like {
    /// `x + 1`, saturating.
    pub trait Succ {
        /// The successor.
        fn succ(self) -> Self;
    }
    impl Succ for u64 {
        fn succ(self) -> Self {
            self.saturating_add(1)
        }
    }
    impl Succ for u128 {
        fn succ(self) -> Self {
            self.saturating_add(1)
        }
    }
}

/// A set of domain names: exact names and `*.suffix` patterns, lower case.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DomainSet {
    /// Exact names.
    pub exact: FxHashSet<Box<str>>,
    /// Suffixes without the `*.`: `example.com` for `*.example.com` (matches strict subdomains).
    pub suffixes: FxHashSet<Box<str>>,
}

impl DomainSet {
    /// Whether `name` is in the set.
    pub fn contains(&self, name: &str) -> bool {
        if self.exact.contains(name) {
            return true;
        }
        if self.suffixes.is_empty() {
            return false;
        }
        let mut rest = name;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if self.suffixes.contains(rest) {
                return true;
            }
        }
        false
    }
}

/// A typed, compiled condition.
#[derive(Debug, Clone)]
pub enum Cond {
    /// All hold.
    And(Box<[Cond]>),
    /// One holds.
    Or(Box<[Cond]>),
    /// Logical negation.
    Not(Box<Cond>),
    /// The field is present and (unless `negate`) inside one of the inclusive ranges.
    Num {
        /// Which field.
        field: NumField,
        /// Sorted, merged inclusive ranges.
        ranges: NumRanges,
        /// `!=` / `not in`: present and outside.
        negate: bool,
    },
    /// The address of `side` is (not) in the set.
    Addr {
        /// Which endpoint.
        side: Side,
        /// The set.
        set: Arc<AddrSet>,
        /// `!=` / `not in`.
        negate: bool,
    },
    /// The name of `side` is present and (not) in the set.
    Domain {
        /// Which endpoint.
        side: Side,
        /// The set.
        set: Arc<DomainSet>,
        /// `!=` / `not in`.
        negate: bool,
    },
    /// The name of `side` is present and matches.
    Regex {
        /// Which endpoint.
        side: Side,
        /// The expression.
        re: Regex,
    },
    /// All of `mask` are set (`has`), or the flags equal `mask` exactly (`==`, `!=`).
    Flags {
        /// Bits.
        mask: u8,
        /// `==` instead of `has`.
        exact: bool,
        /// `!=`.
        negate: bool,
    },
}

/// Sorted inclusive ranges, stored inline when there is one (the common case), so that checking
/// a candidate rule does not chase another pointer.
#[derive(Debug, Clone, PartialEq)]
pub enum NumRanges {
    /// A single range.
    One([(u64, u64); 1]),
    /// Several ranges.
    Many(Box<[(u64, u64)]>),
}

impl std::ops::Deref for NumRanges {
    type Target = [(u64, u64)];
    #[inline]
    fn deref(&self) -> &[(u64, u64)] {
        match self {
            NumRanges::One(r) => r,
            NumRanges::Many(r) => r,
        }
    }
}

impl From<Vec<(u64, u64)>> for NumRanges {
    fn from(v: Vec<(u64, u64)>) -> NumRanges {
        match v.as_slice() {
            [one] => NumRanges::One([*one]),
            _ => NumRanges::Many(v.into_boxed_slice()),
        }
    }
}

#[inline]
fn in_ranges(ranges: &[(u64, u64)], v: u64) -> bool {
    if ranges.len() <= 4 {
        return ranges.iter().any(|&(lo, hi)| lo <= v && v <= hi);
    }
    let i = ranges.partition_point(|&(lo, _)| lo <= v);
    i > 0 && ranges[i - 1].1 >= v
}

impl Cond {
    /// Evaluates the condition on one oriented flow.
    pub fn matches(&self, v: &View<'_>) -> bool {
        match self {
            Cond::And(cs) => cs.iter().all(|c| c.matches(v)),
            Cond::Or(cs) => cs.iter().any(|c| c.matches(v)),
            Cond::Not(c) => !c.matches(v),
            Cond::Num {
                field,
                ranges,
                negate,
            } => match v.num(*field) {
                Some(x) => in_ranges(ranges, x) != *negate,
                None => false,
            },
            Cond::Addr { side, set, negate } => set.contains(addr_key(v.addr(*side))) != *negate,
            Cond::Domain { side, set, negate } => {
                // Present, and any name in the set (negated: present, and none in it).
                let mut names = v.names(*side).peekable();
                if names.peek().is_none() {
                    return false;
                }
                let hit = names.any(|n| set.contains(n));
                hit != *negate
            }
            Cond::Regex { side, re } => v.names(*side).any(|n| re.is_match(n)),
            Cond::Flags {
                mask,
                exact,
                negate,
            } => {
                let f = v.flow.tcp_flags;
                let hit = if *exact {
                    f == *mask
                } else {
                    f & mask == *mask
                };
                hit != *negate
            }
        }
    }
}

/// Transfer rules that share the rest of their `when` condition (their per-record byte bounds
/// left out, the *gate*), filed by the size they expect. A record that passes the gate adds to
/// its connection's running total (one per connection and host, shared by every transfer
/// rule); only the rules whose window holds that total are then checked in full. So 100,000
/// catalogue rules on one mirror cost one gate check and one stabbing query per record, not
/// 100,000 checks and 100,000 running totals.
#[derive(Debug)]
pub struct TransferGroup {
    /// What a record must satisfy to count towards a transfer of any of the group's rules.
    pub gate: Cond,
    /// The rules by window `[bytes - tolerance, bytes + tolerance]`.
    pub windows: crate::ruleset::index::IntervalIndex<u64>,
    /// `(expected bytes, tolerance, rule)`, sorted: the windows of sampled records are wider.
    pub sizes: Vec<(u64, u64, u32)>,
}

/// The compiled rules of one or more packs, with their indexes.
#[derive(Debug, Default)]
pub struct Ruleset {
    pub(crate) rules: Vec<Rule>,
    /// The conditions again, densely packed: the hot path touches only these.
    pub(crate) conds: Vec<Cond>,
    pub(crate) index: Index,
    /// The transfer rules, by gate (the index files each gate under id `rules.len() + g`).
    pub(crate) transfer_groups: Vec<TransferGroup>,
    /// Per rule: whether it concludes an OS family with a strong confidence (the only rules
    /// that can open a new epoch), so that recording a match need not read the rule.
    pub(crate) strong_family: Vec<bool>,
    /// Per rule: whether matching it needs per-host state of its own (a stateful rule other
    /// than a transfer rule with no other aggregate).
    pub(crate) needs_state: Vec<bool>,
    /// Per transfer rule: what its `when` asks beyond its group's gate (its bounds on byte and
    /// packet counts), `None` when nothing.
    pub(crate) transfer_rest: Vec<Option<Cond>>,
}

impl Ruleset {
    /// All rules; a rule's position is its id in [`crate::eval::Match`].
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every exact domain name the rules test `peer.domain` against (not `*.suffix` patterns,
    /// which cannot be resolved upfront), sorted: what active resolution resolves.
    pub fn domain_names(&self) -> Vec<String> {
        fn walk(c: &Cond, out: &mut Vec<String>) {
            match c {
                Cond::And(cs) | Cond::Or(cs) => cs.iter().for_each(|c| walk(c, out)),
                Cond::Not(c) => walk(c, out),
                Cond::Domain {
                    side: Side::Peer,
                    set,
                    negate: false,
                } => out.extend(set.exact.iter().map(|n| n.to_string())),
                _ => {}
            }
        }
        let mut out = Vec::new();
        for c in &self.conds {
            walk(c, &mut out);
        }
        out.sort();
        out.dedup();
        out
    }

    /// Rules that no index selects (checked against every flow).
    pub fn unindexed(&self) -> &[u32] {
        &self.index.unindexed
    }

    /// The condition of rule `r`, from the dense array.
    #[inline]
    pub fn cond(&self, r: u32) -> &Cond {
        &self.conds[r as usize]
    }

    pub(crate) fn index(&self) -> &Index {
        &self.index
    }

    /// Whether matching rule `r` needs per-host state of its own.
    #[inline]
    pub fn needs_state(&self, r: u32) -> bool {
        self.needs_state.get(r as usize).copied().unwrap_or(false)
    }

    /// What transfer rule `r` asks beyond its group's gate (`None`: nothing).
    #[inline]
    pub fn transfer_rest(&self, r: u32) -> Option<&Cond> {
        self.transfer_rest.get(r as usize).and_then(Option::as_ref)
    }

    /// Whether rule `r` concludes an OS family with a strong confidence.
    #[inline]
    pub fn strong_family(&self, r: u32) -> bool {
        self.strong_family.get(r as usize).copied().unwrap_or(false)
    }

    /// The transfer rules, grouped by gate.
    pub fn transfer_groups(&self) -> &[TransferGroup] {
        &self.transfer_groups
    }

    /// Builds the ruleset: the index of the rules, with transfer rules filed by the gate of
    /// their group instead of one by one.
    pub(crate) fn build(rules: Vec<Rule>) -> Ruleset {
        let conds: Vec<Cond> = rules.iter().map(|r| r.cond.clone()).collect();
        let mut keys: rustc_hash::FxHashMap<Vec<u64>, u32> = Default::default();
        // Per group: the gate, the rules' windows `(lo, hi, rule)`, their `(size, tol, rule)`.
        type Windows = Vec<(u64, u64, u32)>;
        let mut groups: Vec<(Cond, Windows, Windows)> = Vec::new();
        let mut transfer_rest: Vec<Option<Cond>> = vec![None; rules.len()];
        let mut entries: Vec<(u32, &Cond)> = Vec::with_capacity(conds.len());
        for (i, rule) in rules.iter().enumerate() {
            let Some(t) = rule.stateful.as_ref().and_then(|s| s.transfer) else {
                entries.push((i as u32, &conds[i]));
                continue;
            };
            let (gate, rest) = split_transfer(&rule.cond);
            transfer_rest[i] = rest;
            let mut key = Vec::new();
            cond_key(&gate, &mut key);
            let g = *keys.entry(key).or_insert_with(|| {
                groups.push((gate, Vec::new(), Vec::new()));
                groups.len() as u32 - 1
            });
            groups[g as usize].1.push((
                t.bytes.saturating_sub(t.tolerance),
                t.bytes.saturating_add(t.tolerance),
                i as u32,
            ));
            groups[g as usize].2.push((t.bytes, t.tolerance, i as u32));
        }
        let base = rules.len() as u32;
        let gate_entries: Vec<(u32, &Cond)> = groups
            .iter()
            .enumerate()
            .map(|(g, (gate, _, _))| (base + g as u32, gate))
            .collect();
        entries.extend(gate_entries);
        let index = Index::build_entries(&entries);
        let transfer_groups = groups
            .into_iter()
            .map(|(gate, windows, mut sizes)| {
                sizes.sort_unstable();
                TransferGroup {
                    gate,
                    windows: crate::ruleset::index::IntervalIndex::build(&windows),
                    sizes,
                }
            })
            .collect();
        let strong_family = rules
            .iter()
            .map(|r| {
                r.conclusions
                    .iter()
                    .any(|c| c.attribute == Attribute::OsFamily && c.confidence >= STRONG)
            })
            .collect();
        let needs_state = rules
            .iter()
            .map(|r| {
                r.stateful.as_ref().is_some_and(|s| {
                    s.transfer.is_none()
                        || s.count.is_some()
                        || s.peers.is_some()
                        || s.domains.is_some()
                        || s.period.is_some()
                })
            })
            .collect();
        Ruleset {
            rules,
            conds,
            index,
            transfer_groups,
            strong_family,
            needs_state,
            transfer_rest,
        }
    }
}

/// Whether a condition is a bound on a byte or packet count (left out of a transfer gate).
fn is_count(c: &Cond) -> bool {
    matches!(
        c,
        Cond::Num {
            field: NumField::Bytes
                | NumField::Packets
                | NumField::SideBytes(_)
                | NumField::SidePackets(_),
            negate: false,
            ..
        }
    )
}

/// A transfer rule's `when`, split into its gate (without the top-level bounds on byte or
/// packet counts: the size is judged on the transfer's total, not on each record) and what it
/// asks beyond the gate (those bounds; `None` when there are none).
fn split_transfer(cond: &Cond) -> (Cond, Option<Cond>) {
    match cond {
        Cond::And(cs) => {
            let (rest, gate): (Vec<Cond>, Vec<Cond>) = cs.iter().cloned().partition(is_count);
            let rest = match rest.len() {
                0 => None,
                1 => rest.into_iter().next(),
                _ => Some(Cond::And(rest.into())),
            };
            (Cond::And(gate.into()), rest)
        }
        c if is_count(c) => (Cond::And(Box::new([])), Some(c.clone())),
        c => (c.clone(), None),
    }
}

/// A structural key of a condition, to group equal gates: sets by identity (a list used by
/// many rules is one shared set), small inline sets by content.
fn cond_key(c: &Cond, out: &mut Vec<u64>) {
    use std::hash::{Hash, Hasher};
    let hash = |f: &dyn Fn(&mut rustc_hash::FxHasher)| {
        let mut h = rustc_hash::FxHasher::default();
        f(&mut h);
        h.finish()
    };
    match c {
        Cond::And(cs) | Cond::Or(cs) => {
            out.push(if matches!(c, Cond::And(_)) { 1 } else { 2 });
            out.push(cs.len() as u64);
            cs.iter().for_each(|c| cond_key(c, out));
        }
        Cond::Not(c) => {
            out.push(3);
            cond_key(c, out);
        }
        Cond::Num {
            field,
            ranges,
            negate,
        } => {
            out.push(4);
            out.push(field.slot() as u64 * 2 + u64::from(*negate));
            out.push(hash(&|h| ranges.hash(h)));
        }
        Cond::Addr { side, set, negate } => {
            out.push(5);
            out.push(u64::from(*side == Side::Peer) * 2 + u64::from(*negate));
            out.push(if set.ranges.len() <= 64 {
                hash(&|h| set.ranges.hash(h))
            } else {
                std::sync::Arc::as_ptr(set) as u64
            });
        }
        Cond::Domain { side, set, negate } => {
            out.push(6);
            out.push(u64::from(*side == Side::Peer) * 2 + u64::from(*negate));
            out.push(if set.exact.len() + set.suffixes.len() <= 64 {
                let mut names: Vec<(bool, &str)> = set
                    .exact
                    .iter()
                    .map(|n| (false, &**n))
                    .chain(set.suffixes.iter().map(|n| (true, &**n)))
                    .collect();
                names.sort_unstable();
                hash(&|h| names.hash(h))
            } else {
                std::sync::Arc::as_ptr(set) as u64
            });
        }
        Cond::Regex { side, re } => {
            out.push(7);
            out.push(u64::from(*side == Side::Peer));
            out.push(hash(&|h| re.as_str().hash(h)));
        }
        Cond::Flags {
            mask,
            exact,
            negate,
        } => {
            out.push(8);
            out.push(u64::from(*mask) << 2 | u64::from(*exact) << 1 | u64::from(*negate));
        }
    }
}
