//! Indexes that turn a flow into a short list of candidate rules.
//!
//! Each rule is filed under its cheapest *anchor*: a condition that must hold whenever the rule
//! matches (an address range, a domain, a port or byte-count interval). A conjunction is filed
//! under its most selective indexable part; a disjunction under all of its branches. Rules
//! without any anchor are checked against every flow (and the compiler warns about them).

use super::{Cond, DomainSet};
use crate::schema::{NUM_SLOTS, NumField, Side, View, addr_key};
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// An interval that stabs more than this many elementary segments is kept in a linear list
/// instead, so that a few wide intervals cannot blow up the index.
const WIDE_SEGMENTS: usize = 64;

/// Start of the IPv4-mapped block in the address key space.
const V4_MAPPED: u128 = 0xffff_0000_0000;

/// Stabbing-query index over inclusive intervals: elementary segments, each with its rule list.
#[derive(Debug, Clone)]
pub struct IntervalIndex<K> {
    bounds: Vec<K>,
    /// Radix table: `buckets[i]` is the first bound above `base + (i << shift)`, so a lookup
    /// only binary-searches the few bounds of one bucket.
    buckets: Vec<u32>,
    base: K,
    shift: u32,
    lists: Vec<(u32, u32)>,
    flat: Vec<u32>,
    /// Intervals too wide to copy into every segment they cover: a segment tree over their
    /// elementary segments, so that a lookup visits O(log n) nodes however many there are.
    wide: WideTree<K>,
}

/// A static segment tree of intervals: `points` are the sorted distinct interval starts and
/// ends (+1); leaf `j` is the elementary segment `[points[j], points[j+1])`; each interval is
/// stored in the O(log n) nodes that exactly cover its segments. A stabbing lookup walks from
/// the key's leaf to the root and reports every node's rules.
#[derive(Debug, Clone)]
struct WideTree<K> {
    points: Vec<K>,
    /// Leaves (a power of two).
    size: usize,
    /// Per node (1-based heap order): range into `rules`.
    nodes: Vec<(u32, u32)>,
    rules: Vec<u32>,
}

impl<K> Default for WideTree<K> {
    fn default() -> Self {
        WideTree {
            points: Vec::new(),
            size: 0,
            nodes: Vec::new(),
            rules: Vec::new(),
        }
    }
}

impl<K: Key> WideTree<K> {
    fn build(entries: &[(K, K, u32)]) -> WideTree<K> {
        if entries.is_empty() {
            return WideTree::default();
        }
        let mut points: Vec<K> = Vec::with_capacity(entries.len() * 2);
        for &(lo, hi, _) in entries {
            points.push(lo);
            if hi < K::MAX {
                points.push(hi.next());
            }
        }
        points.sort_unstable();
        points.dedup();
        let size = points.len().next_power_of_two();
        let mut per_node: Vec<Vec<u32>> = vec![Vec::new(); 2 * size];
        for &(lo, hi, r) in entries {
            // Segments a..=b: from the one starting at `lo` to the last starting at or below `hi`.
            let a = points.partition_point(|&p| p < lo);
            let b = points.partition_point(|&p| p <= hi) - 1;
            let (mut l, mut h) = (a + size, b + size + 1);
            while l < h {
                if l & 1 == 1 {
                    per_node[l].push(r);
                    l += 1;
                }
                if h & 1 == 1 {
                    h -= 1;
                    per_node[h].push(r);
                }
                l >>= 1;
                h >>= 1;
            }
        }
        let mut tree = WideTree {
            points,
            size,
            nodes: Vec::with_capacity(2 * size),
            rules: Vec::new(),
        };
        for list in per_node {
            let start = tree.rules.len() as u32;
            tree.rules.extend_from_slice(&list);
            tree.nodes.push((start, tree.rules.len() as u32));
        }
        tree
    }

    fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    #[inline]
    fn lookup(&self, key: K, f: &mut impl FnMut(u32)) {
        if self.rules.is_empty() {
            return;
        }
        let j = self.points.partition_point(|&p| p <= key);
        if j == 0 {
            return; // below every interval
        }
        let mut node = j - 1 + self.size;
        while node >= 1 {
            let (s, e) = self.nodes[node];
            for &r in &self.rules[s as usize..e as usize] {
                f(r);
            }
            node >>= 1;
        }
    }
}

impl<K: Key> Default for IntervalIndex<K> {
    fn default() -> Self {
        IntervalIndex {
            bounds: Vec::new(),
            buckets: Vec::new(),
            base: K::MIN,
            shift: 0,
            lists: Vec::new(),
            flat: Vec::new(),
            wide: WideTree::default(),
        }
    }
}

/// Key types of an [`IntervalIndex`].
pub trait Key: Copy + Ord + std::fmt::Debug {
    /// The smallest key.
    const MIN: Self;
    /// The largest key.
    const MAX: Self;
    /// `self + 1`; only called when `self < MAX`.
    fn next(self) -> Self;
    /// `self - base` (self >= base), widened.
    fn offset(self, base: Self) -> u128;
}
impl Key for u64 {
    const MIN: Self = 0;
    const MAX: Self = u64::MAX;
    fn next(self) -> Self {
        self + 1
    }
    #[inline]
    fn offset(self, base: Self) -> u128 {
        u128::from(self - base)
    }
}
impl Key for u128 {
    const MIN: Self = 0;
    const MAX: Self = u128::MAX;
    fn next(self) -> Self {
        self + 1
    }
    #[inline]
    fn offset(self, base: Self) -> u128 {
        self - base
    }
}

/// Bits of the radix table of an [`IntervalIndex`].
const BUCKET_BITS: u32 = 12;

impl<K: Key> IntervalIndex<K> {
    /// Builds the index from `(lo, hi, rule)` entries (inclusive bounds).
    pub fn build(entries: &[(K, K, u32)]) -> IntervalIndex<K> {
        let mut points: Vec<K> = Vec::with_capacity(entries.len() * 2);
        for &(lo, hi, _) in entries {
            points.push(lo);
            if hi < K::MAX {
                points.push(hi.next());
            }
        }
        points.sort_unstable();
        points.dedup();
        let (mut narrow, wide): (Vec<_>, Vec<_>) = entries.iter().partition(|&&(lo, hi, _)| {
            let a = points.partition_point(|&p| p < lo);
            let b = points.partition_point(|&p| p <= hi);
            b - a <= WIDE_SEGMENTS
        });
        narrow.sort_unstable_by_key(|&(lo, _, _)| lo);
        let mut idx = IntervalIndex {
            wide: WideTree::build(&wide),
            ..Default::default()
        };
        let mut active: Vec<(K, u32)> = Vec::new();
        let mut next = 0;
        let mut current: Vec<u32> = Vec::new();
        for &p in &points {
            active.retain(|&(hi, _)| hi >= p);
            while next < narrow.len() && narrow[next].0 <= p {
                active.push((narrow[next].1, narrow[next].2));
                next += 1;
            }
            current.clear();
            current.extend(active.iter().map(|&(_, r)| r));
            current.sort_unstable();
            current.dedup();
            let same = idx
                .lists
                .last()
                .is_some_and(|&(s, e)| idx.flat[s as usize..e as usize] == current[..]);
            if same {
                continue;
            }
            if idx.bounds.is_empty() && current.is_empty() {
                continue;
            }
            let start = idx.flat.len() as u32;
            idx.flat.extend_from_slice(&current);
            idx.bounds.push(p);
            idx.lists.push((start, idx.flat.len() as u32));
        }
        idx.build_buckets();
        idx
    }

    fn build_buckets(&mut self) {
        if self.bounds.len() < 32 {
            return;
        }
        let base = self.bounds[0];
        let span = self.bounds[self.bounds.len() - 1].offset(base);
        let bits = 128 - span.leading_zeros();
        self.shift = bits.saturating_sub(BUCKET_BITS);
        let n = (span >> self.shift) as usize + 2;
        self.buckets = (0..n)
            .map(|i| {
                let edge = (i as u128) << self.shift;
                self.bounds.partition_point(|&b| b.offset(base) < edge) as u32
            })
            .collect();
        self.base = base;
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.flat.is_empty() && self.wide.is_empty()
    }

    /// Calls `f` for every rule whose interval contains `key`.
    #[inline]
    pub fn lookup(&self, key: K, mut f: impl FnMut(u32)) {
        let i = if self.buckets.is_empty() {
            self.bounds.partition_point(|&b| b <= key)
        } else if key < self.base {
            0
        } else {
            let bucket = (key.offset(self.base) >> self.shift) as usize;
            match (self.buckets.get(bucket), self.buckets.get(bucket + 1)) {
                (Some(&lo), Some(&hi)) => {
                    // bounds[..lo] are <= key, bounds[hi..] are > key (for in-table keys).
                    let (lo, hi) = (lo as usize, (hi as usize + 1).min(self.bounds.len()));
                    lo + self.bounds[lo..hi].partition_point(|&b| b <= key)
                }
                _ => self.bounds.len(),
            }
        };
        if i > 0 {
            let (s, e) = self.lists[i - 1];
            for &r in &self.flat[s as usize..e as usize] {
                f(r);
            }
        }
        self.wide.lookup(key, &mut f);
    }
}

/// Exact-name and suffix index over domain names.
#[derive(Debug, Clone, Default)]
pub struct DomainIndex {
    exact: FxHashMap<Box<str>, Vec<u32>>,
    suffix: FxHashMap<Box<str>, Vec<u32>>,
}

impl DomainIndex {
    fn add(&mut self, set: &DomainSet, rule: u32) {
        for n in &set.exact {
            self.exact.entry(n.clone()).or_default().push(rule);
        }
        for n in &set.suffixes {
            self.suffix.entry(n.clone()).or_default().push(rule);
        }
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.suffix.is_empty()
    }

    /// Calls `f` for every rule with `name` or one of its parent domains.
    #[inline]
    pub fn lookup(&self, name: &str, mut f: impl FnMut(u32)) {
        if let Some(rs) = self.exact.get(name) {
            rs.iter().for_each(|&r| f(r));
        }
        if self.suffix.is_empty() {
            return;
        }
        let mut rest = name;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(rs) = self.suffix.get(rest) {
                rs.iter().for_each(|&r| f(r));
            }
        }
    }
}

/// A condition every match of a rule satisfies, usable as an index key.
#[derive(Debug, Clone)]
pub enum Anchor {
    /// The address of a side is in these ranges.
    Addr(Side, Vec<(u128, u128)>),
    /// A numeric field is in these ranges.
    Num(NumField, Vec<(u64, u64)>),
    /// The name of a side is in this set.
    Domain(Side, Arc<DomainSet>),
}

/// Anchors of a condition and their cost (lower is more selective), or `None` when some match
/// of the condition is not covered by any anchor.
pub fn anchors(cond: &Cond) -> Option<(u32, Vec<Anchor>)> {
    match cond {
        Cond::And(cs) => cs.iter().filter_map(anchors).min_by_key(|(c, _)| *c),
        Cond::Or(cs) => {
            let mut cost = 0;
            let mut all = Vec::new();
            for c in cs.iter() {
                let (k, mut a) = anchors(c)?;
                cost = cost.max(k);
                all.append(&mut a);
            }
            Some((cost, all))
        }
        Cond::Not(_) | Cond::Regex { .. } | Cond::Flags { .. } => None,
        Cond::Num { negate: true, .. }
        | Cond::Addr { negate: true, .. }
        | Cond::Domain { negate: true, .. } => None,
        Cond::Addr { side, set, .. } => {
            let wide = set.ranges.iter().any(|&(lo, hi)| hi - lo >= 1 << 24);
            Some((
                if wide { 6 } else { 1 },
                vec![Anchor::Addr(*side, set.ranges.clone())],
            ))
        }
        Cond::Domain { side, set, .. } => Some((1, vec![Anchor::Domain(*side, set.clone())])),
        Cond::Num { field, ranges, .. } => {
            let width: u64 = ranges
                .iter()
                .map(|&(lo, hi)| hi.saturating_sub(lo))
                .fold(0, u64::saturating_add);
            let cost = match field {
                NumField::SideBytes(_) | NumField::Bytes | NumField::Duration
                    if width < 1 << 20 =>
                {
                    2
                }
                NumField::SidePackets(_) | NumField::Packets if width < 16 => 3,
                NumField::Port(Side::Peer) if width < 1024 => 3,
                NumField::Port(Side::Host) if width < 1024 => 4,
                NumField::Ttl(_) => 6,
                NumField::Proto => 8,
                NumField::IpVersion => 9,
                _ => 7,
            };
            Some((cost, vec![Anchor::Num(*field, ranges.to_vec())]))
        }
    }
}

/// All indexes of a ruleset.
#[derive(Debug, Default)]
pub struct Index {
    /// Per side: IPv4 (keys inside the IPv4-mapped block) and IPv6 ranges, kept apart so that
    /// the radix table of each covers a dense key space.
    addr4: [IntervalIndex<u128>; 2],
    addr6: [IntervalIndex<u128>; 2],
    num: Vec<IntervalIndex<u64>>,
    num_fields: Vec<NumField>,
    domain: [DomainIndex; 2],
    /// Rules checked against every flow.
    pub unindexed: Vec<u32>,
}

fn side_slot(s: Side) -> usize {
    usize::from(s == Side::Peer)
}

impl Index {
    /// Files every rule under its anchors. Returns the index; unindexable rules are listed in
    /// `unindexed`.
    pub fn build(conds: &[&Cond]) -> Index {
        let entries: Vec<(u32, &Cond)> = conds
            .iter()
            .enumerate()
            .map(|(i, c)| (i as u32, *c))
            .collect();
        Index::build_entries(&entries)
    }

    /// [`Index::build`] over `(id, condition)` entries: ids need not be dense nor cover every
    /// rule (transfer rules are filed by their group's gate, under an id past the rules).
    pub fn build_entries(conds: &[(u32, &Cond)]) -> Index {
        let mut addr4: [Vec<(u128, u128, u32)>; 2] = Default::default();
        let mut addr6: [Vec<(u128, u128, u32)>; 2] = Default::default();
        let mut num: Vec<Vec<(u64, u64, u32)>> = vec![Vec::new(); NUM_SLOTS];
        let mut num_fields: Vec<Option<NumField>> = vec![None; NUM_SLOTS];
        let mut idx = Index::default();
        for &(rule, cond) in conds {
            match anchors(cond) {
                None => idx.unindexed.push(rule),
                Some((_, list)) => {
                    for a in list {
                        match a {
                            Anchor::Addr(s, ranges) => {
                                for (lo, hi) in ranges {
                                    let (v4lo, v4hi) = (V4_MAPPED, V4_MAPPED | 0xffff_ffff);
                                    if lo <= v4hi && hi >= v4lo {
                                        addr4[side_slot(s)].push((
                                            lo.max(v4lo),
                                            hi.min(v4hi),
                                            rule,
                                        ));
                                    }
                                    if lo < v4lo {
                                        addr6[side_slot(s)].push((lo, hi.min(v4lo - 1), rule));
                                    }
                                    if hi > v4hi {
                                        addr6[side_slot(s)].push((lo.max(v4hi + 1), hi, rule));
                                    }
                                }
                            }
                            Anchor::Num(f, ranges) => {
                                num_fields[f.slot()] = Some(f);
                                num[f.slot()]
                                    .extend(ranges.into_iter().map(|(lo, hi)| (lo, hi, rule)))
                            }
                            Anchor::Domain(s, set) => idx.domain[side_slot(s)].add(&set, rule),
                        }
                    }
                }
            }
        }
        idx.addr4 = [
            IntervalIndex::build(&addr4[0]),
            IntervalIndex::build(&addr4[1]),
        ];
        idx.addr6 = [
            IntervalIndex::build(&addr6[0]),
            IntervalIndex::build(&addr6[1]),
        ];
        for (slot, entries) in num.iter().enumerate() {
            if let Some(f) = num_fields[slot] {
                idx.num.push(IntervalIndex::build(entries));
                idx.num_fields.push(f);
            }
        }
        idx
    }

    /// Calls `f` with every candidate rule for this view (a rule may be reported more than once).
    #[inline]
    pub fn candidates(&self, v: &View<'_>, mut f: impl FnMut(u32)) {
        for side in [Side::Host, Side::Peer] {
            let a = v.addr(side);
            let ix = if a.is_ipv4() {
                &self.addr4[side_slot(side)]
            } else {
                &self.addr6[side_slot(side)]
            };
            if !ix.is_empty() {
                ix.lookup(addr_key(a), &mut f);
            }
            let dx = &self.domain[side_slot(side)];
            if !dx.is_empty() {
                for name in v.names(side) {
                    dx.lookup(name, &mut f);
                }
            }
        }
        for (ix, &field) in self.num.iter().zip(&self.num_fields) {
            if let Some(x) = v.num(field) {
                ix.lookup(x, &mut f);
            }
        }
        self.unindexed.iter().for_each(|&r| f(r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn brute(entries: &[(u64, u64, u32)], key: u64) -> Vec<u32> {
        let mut v: Vec<u32> = entries
            .iter()
            .filter(|&&(lo, hi, _)| lo <= key && key <= hi)
            .map(|e| e.2)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    proptest! {
        #[test]
        fn interval_index_equals_linear_scan(
            raw in proptest::collection::vec((0u64..5_000, 0u64..2_000, 0u32..300), 0..400),
            keys in proptest::collection::vec(0u64..8_000, 1..100),
        ) {
            // Many short and some long intervals, so both the segment lists and the wide list
            // (and the radix buckets, above 32 bounds) are exercised.
            let entries: Vec<(u64, u64, u32)> = raw.iter().map(|&(lo, w, r)| {
                let w = if r % 7 == 0 { w * 4 } else { w % 20 };
                (lo, lo + w, r)
            }).collect();
            let idx = IntervalIndex::build(&entries);
            for k in keys.into_iter().chain([0, u64::MAX]) {
                let mut got = Vec::new();
                idx.lookup(k, |r| got.push(r));
                got.sort_unstable();
                got.dedup();
                prop_assert_eq!(got, brute(&entries, k), "key {}", k);
            }
        }
    }

    #[test]
    fn open_ended_intervals_reach_the_maximum() {
        let idx = IntervalIndex::build(&[(10u64, u64::MAX, 1), (5, 7, 2)]);
        let mut got = Vec::new();
        idx.lookup(u64::MAX, |r| got.push(r));
        assert_eq!(got, vec![1]);
        got.clear();
        idx.lookup(6, |r| got.push(r));
        assert_eq!(got, vec![2]);
        got.clear();
        idx.lookup(8, |r| got.push(r));
        assert!(got.is_empty());
    }
}
