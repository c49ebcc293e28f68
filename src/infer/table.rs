//! The host table: every host's state in one dense array, found through a compact address →
//! slot index.
//!
//! The per-flow cost of a large inventory is the first touch of a host's state: with tens of
//! thousands of hosts in random order each flow's host is a cache miss, two with an index in
//! front. Both are taken off the path by reading ahead: the index of IPv4 hosts is a small
//! open-addressing table (8 bytes a host, linear probing, at most half full) whose bucket for
//! an address is known from its hash alone, so that [`SlotIndex::prefetch_index`] can ask
//! for it two steps ahead and [`SlotIndex::prefetch`] for the host's state one step ahead,
//! while earlier flows are still being applied ([`crate::scan::Scanner::apply_all`]). No
//! hash map crate exposes where a key's bucket is, which is why this one is written here.
//! IPv6 hosts, rarer, are in a hash map.
//!
//! The hash is seeded per table at random, so that which addresses share a bucket cannot be
//! chosen by whoever sends the flows.
//!
//! Slots are not stable: removing a host moves the last one into its slot. Nothing outside
//! this module keeps a slot across a change of the table.

use super::HostState;
use rustc_hash::FxHashMap;

/// Hosts keyed by [`crate::schema::addr_key`], in a dense array.
#[derive(Debug, Default, Clone)]
pub(crate) struct SlotIndex {
    /// IPv4 hosts (keys `::ffff:a.b.c.d`) by their 32-bit address.
    v4: V4Index,
    /// The other hosts by their whole key.
    v6: FxHashMap<u128, u32>,
    /// Each slot's key, for iteration and for moving the last slot into a freed one.
    keys: Vec<u128>,
    states: Vec<HostState>,
}

/// The 32-bit address of an IPv4 key.
#[inline]
fn v4_of(key: u128) -> Option<u32> {
    (key >> 32 == 0xffff).then_some(key as u32)
}

impl SlotIndex {
    /// The slot of `key`, if the table holds it.
    #[inline]
    pub fn slot(&self, key: u128) -> Option<u32> {
        match v4_of(key) {
            Some(a) => self.v4.get(a),
            None => self.v6.get(&key).copied(),
        }
    }

    fn set_slot(&mut self, key: u128, slot: u32) {
        match v4_of(key) {
            Some(a) => self.v4.insert(a, slot),
            None => {
                self.v6.insert(key, slot);
            }
        }
    }

    fn unset_slot(&mut self, key: u128) -> Option<u32> {
        match v4_of(key) {
            Some(a) => self.v4.remove(a),
            None => self.v6.remove(&key),
        }
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    pub fn contains_key(&self, key: u128) -> bool {
        self.slot(key).is_some()
    }

    pub fn get(&self, key: u128) -> Option<&HostState> {
        self.slot(key).map(|s| &self.states[s as usize])
    }

    pub fn get_mut(&mut self, key: u128) -> Option<&mut HostState> {
        let s = self.slot(key)?;
        Some(&mut self.states[s as usize])
    }

    /// The slot of `key`, inserting `new()` when absent; and whether it was inserted.
    #[inline]
    pub fn slot_or_insert(&mut self, key: u128, new: impl FnOnce() -> HostState) -> (u32, bool) {
        if let Some(s) = self.slot(key) {
            return (s, false);
        }
        let s = self.push(key, new());
        (s, true)
    }

    fn push(&mut self, key: u128, h: HostState) -> u32 {
        // More than 4 billion hosts cannot happen: the table is bounded far below
        // (`InferConfig::max_hosts`).
        let s = u32::try_from(self.states.len()).expect("host table within u32 slots");
        self.keys.push(key);
        self.states.push(h);
        self.set_slot(key, s);
        s
    }

    #[inline]
    pub fn at_mut(&mut self, slot: u32) -> &mut HostState {
        &mut self.states[slot as usize]
    }

    /// Inserts or replaces the state of `key`.
    pub fn insert(&mut self, key: u128, h: HostState) {
        match self.slot(key) {
            Some(s) => self.states[s as usize] = h,
            None => {
                self.push(key, h);
            }
        }
    }

    /// Removes `key`; the last slot's host moves into its slot.
    pub fn remove(&mut self, key: u128) -> Option<HostState> {
        let s = self.unset_slot(key)? as usize;
        let h = self.states.swap_remove(s);
        self.keys.swap_remove(s);
        if let Some(&moved) = self.keys.get(s) {
            self.set_slot(moved, s as u32);
        }
        Some(h)
    }

    /// Keeps the hosts for which `keep` is true, in their order (one pass, the index rebuilt
    /// for the slots that moved).
    pub fn retain(&mut self, mut keep: impl FnMut(u128, &HostState) -> bool) {
        let mut w = 0;
        for r in 0..self.states.len() {
            let key = self.keys[r];
            if keep(key, &self.states[r]) {
                if w != r {
                    self.states.swap(w, r);
                    self.keys[w] = key;
                    self.set_slot(key, w as u32);
                }
                w += 1;
            } else {
                self.unset_slot(key);
            }
        }
        self.states.truncate(w);
        self.keys.truncate(w);
    }

    pub fn iter(&self) -> impl Iterator<Item = (u128, &HostState)> {
        self.keys.iter().copied().zip(&self.states)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut HostState> {
        self.states.iter_mut()
    }

    pub fn keys(&self) -> impl Iterator<Item = u128> + '_ {
        self.keys.iter().copied()
    }

    /// Asks the processor to bring `key`'s state into cache, if the table holds it: a hint,
    /// with no effect on what the table holds. Best after [`SlotIndex::prefetch_index`] for
    /// the same key, a step earlier.
    #[inline]
    pub fn prefetch(&self, key: u128) {
        if let Some(s) = self.slot(key) {
            let h = &self.states[s as usize];
            // A state may straddle two cache lines.
            prefetch_read((h as *const HostState).cast());
            prefetch_read(
                (h as *const HostState)
                    .cast::<u8>()
                    .wrapping_add(std::mem::size_of::<HostState>() - 1),
            );
        }
    }

    /// Asks the processor for the index bucket where `key` would be: a hint.
    #[inline]
    pub fn prefetch_index(&self, key: u128) {
        if let Some(a) = v4_of(key) {
            self.v4.prefetch(a);
        }
    }
}

/// A prefetch of the cache line at `p`.
#[inline]
fn prefetch_read(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 processor has (it is part of the
        // x86_64 baseline the target is built for). A prefetch never faults, even for an
        // address that is not mapped, reads nothing into the program and writes no memory: it
        // is a hint to the cache.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// An empty bucket of [`V4Index`].
const EMPTY: u32 = u32::MAX;

/// IPv4 address → slot, open addressing with linear probing, at most half full; removal by
/// backward shift (no tombstones), so a look-up stops at the first empty bucket.
#[derive(Debug, Clone)]
struct V4Index {
    /// `(address, slot)`; `slot == EMPTY` marks an empty bucket.
    buckets: Vec<(u32, u32)>,
    len: usize,
    seed: u64,
}

impl Default for V4Index {
    fn default() -> V4Index {
        use std::hash::{BuildHasher, Hasher};
        // A random seed per table: `RandomState` is seeded from the operating system.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(0);
        V4Index {
            buckets: Vec::new(),
            len: 0,
            seed: h.finish() | 1,
        }
    }
}

impl V4Index {
    #[inline]
    fn home(&self, a: u32) -> usize {
        // Multiplicative hashing of the seeded address; the high bits are the best mixed.
        let h = (u64::from(a) ^ self.seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let h = h ^ (h >> 29);
        (h as usize) & (self.buckets.len() - 1)
    }

    #[inline]
    fn get(&self, a: u32) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let mask = self.buckets.len() - 1;
        let mut i = self.home(a);
        loop {
            let (k, s) = self.buckets[i];
            if s == EMPTY {
                return None;
            }
            if k == a {
                return Some(s);
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    fn prefetch(&self, a: u32) {
        if self.len > 0 {
            prefetch_read(self.buckets[self.home(a)..].as_ptr().cast());
        }
    }

    fn insert(&mut self, a: u32, slot: u32) {
        debug_assert_ne!(slot, EMPTY);
        if (self.len + 1) * 2 > self.buckets.len() {
            self.grow();
        }
        let mask = self.buckets.len() - 1;
        let mut i = self.home(a);
        loop {
            let b = &mut self.buckets[i];
            if b.1 == EMPTY {
                *b = (a, slot);
                self.len += 1;
                return;
            }
            if b.0 == a {
                b.1 = slot;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let cap = (self.buckets.len() * 2).max(16);
        let old = std::mem::replace(&mut self.buckets, vec![(0, EMPTY); cap]);
        self.len = 0;
        for (a, s) in old {
            if s != EMPTY {
                self.insert(a, s);
            }
        }
    }

    fn remove(&mut self, a: u32) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let mask = self.buckets.len() - 1;
        let mut i = self.home(a);
        let slot = loop {
            let (k, s) = self.buckets[i];
            if s == EMPTY {
                return None;
            }
            if k == a {
                break s;
            }
            i = (i + 1) & mask;
        };
        // Backward shift: later entries of the run move into the hole when their home allows.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            let (k, s) = self.buckets[j];
            if s == EMPTY {
                break;
            }
            let home = self.home(k);
            // The entry at `j` may move to `hole` if its home is not in (hole, j].
            let moves = if hole <= j {
                home <= hole || home > j
            } else {
                home <= hole && home > j
            };
            if moves {
                self.buckets[hole] = (k, s);
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.buckets[hole] = (0, EMPTY);
        self.len -= 1;
        Some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::addr_key;
    use std::net::IpAddr;

    fn key(s: &str) -> u128 {
        addr_key(s.parse::<IpAddr>().unwrap())
    }

    /// The next of a xorshift sequence: random operations, the same in every run.
    fn next(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    fn state(flows: u64) -> HostState {
        HostState {
            flows,
            ..Default::default()
        }
    }

    #[test]
    fn insert_remove_and_retain_keep_the_index_true() {
        let mut t = SlotIndex::default();
        let addrs = [
            "10.0.0.1",
            "10.0.0.2",
            "2001:db8::1",
            "10.0.0.3",
            "::ffff:1.2.3.4",
        ];
        for (i, a) in addrs.iter().enumerate() {
            let (s, new) = t.slot_or_insert(key(a), || state(i as u64));
            assert!(new);
            assert_eq!(s as usize, i);
        }
        // An IPv4-mapped IPv6 address is the same host as its IPv4 address.
        assert_eq!(t.get(key("1.2.3.4")).unwrap().flows, 4);
        let (s, new) = t.slot_or_insert(key("10.0.0.2"), || state(99));
        assert!(!new);
        t.at_mut(s).flows += 10;
        assert_eq!(t.get(key("10.0.0.2")).unwrap().flows, 11);
        // Removing the first moves the last into its slot; every key still finds its state.
        assert_eq!(t.remove(key("10.0.0.1")).unwrap().flows, 0);
        assert!(t.remove(key("10.0.0.1")).is_none());
        assert_eq!(t.len(), 4);
        for (a, f) in [
            ("10.0.0.2", 11),
            ("2001:db8::1", 2),
            ("10.0.0.3", 3),
            ("1.2.3.4", 4),
        ] {
            assert_eq!(t.get(key(a)).unwrap().flows, f, "{a}");
        }
        t.retain(|_, h| h.flows % 2 == 1);
        assert_eq!(t.len(), 2);
        assert!(t.contains_key(key("10.0.0.2")) && t.contains_key(key("10.0.0.3")));
        assert!(!t.contains_key(key("2001:db8::1")) && !t.contains_key(key("1.2.3.4")));
        assert_eq!(t.get(key("10.0.0.3")).unwrap().flows, 3);
        let mut keys: Vec<u128> = t.iter().map(|(k, _)| k).collect();
        keys.sort();
        assert_eq!(keys, vec![key("10.0.0.2"), key("10.0.0.3")]);
        t.insert(key("10.0.0.3"), state(7));
        t.insert(key("2001:db8::9"), state(8));
        assert_eq!(t.get(key("10.0.0.3")).unwrap().flows, 7);
        assert_eq!(t.get(key("2001:db8::9")).unwrap().flows, 8);
        t.prefetch(key("10.0.0.3"));
        t.prefetch(key("10.9.9.9"));
    }

    #[test]
    fn the_v4_index_agrees_with_a_map_through_growth_and_removals() {
        let mut ix = V4Index::default();
        let mut m = std::collections::HashMap::new();
        let mut x: u64 = 12345;
        for step in 0..200_000u32 {
            next(&mut x);
            // Dense neighbours (as in a /16) and a few far ones.
            let a = if x.is_multiple_of(10) {
                x as u32
            } else {
                0x0a00_0000 + (x % 5000) as u32
            };
            if x.is_multiple_of(4) {
                assert_eq!(ix.remove(a), m.remove(&a), "step {step}");
            } else {
                ix.insert(a, step);
                m.insert(a, step);
            }
            assert_eq!(ix.len, m.len());
        }
        for (a, s) in &m {
            assert_eq!(ix.get(*a), Some(*s));
        }
        for a in 0x0a00_0000..0x0a00_0000 + 6000u32 {
            assert_eq!(ix.get(a), m.get(&a).copied());
        }
    }

    #[test]
    fn many_removals_in_any_order_agree_with_a_map() {
        let mut t = SlotIndex::default();
        let mut m = std::collections::HashMap::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..20_000u64 {
            next(&mut x);
            let k = if x.is_multiple_of(5) {
                u128::from(x % 300) << 64
            } else {
                0xffff_0000_0000 | u128::from(x % 300)
            };
            if x.is_multiple_of(3) {
                assert_eq!(t.remove(k).map(|h| h.flows), m.remove(&k), "step {step}");
            } else {
                let (s, _) = t.slot_or_insert(k, || state(0));
                t.at_mut(s).flows += 1;
                *m.entry(k).or_insert(0) += 1;
            }
            if step % 4_000 == 0 {
                t.retain(|k, _| k % 7 != 0);
                m.retain(|k, _| k % 7 != 0);
            }
        }
        assert_eq!(t.len(), m.len());
        for (k, f) in &m {
            assert_eq!(t.get(*k).map(|h| h.flows), Some(*f));
        }
    }
}
