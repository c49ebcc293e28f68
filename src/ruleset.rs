//! The compiled, immutable [`Ruleset`]: rules lowered to typed conditions, plus the indexes
//! that pick a short list of candidate rules for each flow. `Send + Sync`; share it behind `Arc`.

use crate::index::Index;
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

/// The compiled rules of one or more packs, with their indexes.
#[derive(Debug, Default)]
pub struct Ruleset {
    pub(crate) rules: Vec<Rule>,
    /// The conditions again, densely packed: the hot path touches only these.
    pub(crate) conds: Vec<Cond>,
    pub(crate) index: Index,
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
}
