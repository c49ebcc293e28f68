//! Names behind addresses, over time: a map from (address, time) to the domain names that the
//! address answered for, fed by passive DNS logs, by DNS answers found in packet captures, and
//! by names carried in flow records.
//!
//! Each (address, name) pair keeps when it was first and last seen, its TTL and its source. A
//! pair is valid from its first sighting (with a second of slack for clock skew between sensors)
//! until its last sighting plus its TTL plus a grace period (clients keep answers longer than the
//! TTL says). A lookup asks: which names did this address answer for at time t?
//!
//! CNAME chains: the name a client asked for is what rules should see, so every address of an
//! answer is recorded under the query name.

pub mod passive;
pub mod resolve;

use rustc_hash::FxHashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Where a pair was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A passive DNS log (Zeek, flowprint JSON lines).
    Log,
    /// A DNS answer in a packet capture.
    Capture,
    /// A name carried by a flow record (TLS SNI, HTTP Host), learned for its destination.
    Flow,
    /// An answer to flowprint's own query (active resolution, [`resolve`]).
    Resolved,
}

impl Source {
    /// The name stored in the inventory.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Log => "log",
            Source::Capture => "capture",
            Source::Flow => "flow",
            Source::Resolved => "resolved",
        }
    }

    /// Parses [`Source::as_str`]; unknown names are logs.
    pub fn parse(s: &str) -> Source {
        match s {
            "capture" => Source::Capture,
            "flow" => Source::Flow,
            "resolved" => Source::Resolved,
            _ => Source::Log,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    name: u32,
    first: i64,
    last: i64,
    ttl_ms: i64,
    source: Source,
    /// The map's [`DnsMap::version`] when this pair last changed by a sighting (0: as stored).
    changed: u64,
}

/// Most names kept per address (the most recently seen win); CDN addresses answer for many.
pub const MAX_NAMES_PER_ADDRESS: usize = 64;

/// The time-versioned address → names map.
#[derive(Debug, Clone)]
pub struct DnsMap {
    names: Vec<Arc<str>>,
    ids: FxHashMap<Arc<str>, u32>,
    by_addr: FxHashMap<u128, Vec<Entry>>,
    /// Validity after last sighting + TTL, ms.
    pub grace_ms: i64,
    pairs: usize,
    /// Counts the changes by sightings ([`DnsMap::pairs_since`]).
    version: u64,
}

impl Default for DnsMap {
    fn default() -> Self {
        DnsMap {
            names: Vec::new(),
            ids: FxHashMap::default(),
            by_addr: FxHashMap::default(),
            grace_ms: 15 * 60 * 1000,
            pairs: 0,
            version: 0,
        }
    }
}

/// Unrelated domains from which an address counts as shared.
pub const SHARED_MIN: usize = 3;

/// The registrable part of a name, approximated by its last two labels (`a.b.example.com` →
/// `example.com`); good enough to tell unrelated names apart.
pub fn registrable(name: &str) -> &str {
    let mut dots = name.rmatch_indices('.');
    match (dots.next(), dots.next()) {
        (Some(_), Some((i, _))) => &name[i + 1..],
        _ => name,
    }
}

/// Weight of evidence that rests on the names of one address: with k distinct registrable
/// domains among them, 1 for k < 3, else 2/k (3 → 0.67, 4 → 0.5, 10 → 0.2). An address that
/// answers for many unrelated names says little about which one a client wanted.
pub fn shared_weight<'a>(names: impl Iterator<Item = &'a str>) -> f32 {
    let mut domains: Vec<&str> = names.map(registrable).collect();
    domains.sort_unstable();
    domains.dedup();
    let k = domains.len();
    if k < SHARED_MIN { 1.0 } else { 2.0 / k as f32 }
}

/// Slack before a pair's first sighting, for clock skew between the DNS and flow sensors.
const SKEW_MS: i64 = 1_000;

impl DnsMap {
    /// An empty map with a 15-minute grace.
    pub fn new() -> DnsMap {
        DnsMap::default()
    }

    /// Number of (address, name) pairs.
    pub fn len(&self) -> usize {
        self.pairs
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.pairs == 0
    }

    /// Records that `addr` answered for `name` at `at_ms` with a TTL of `ttl_s` seconds.
    pub fn insert(&mut self, addr: IpAddr, name: &str, at_ms: i64, ttl_s: u32, source: Source) {
        self.insert_span(addr, name, at_ms, at_ms, ttl_s, source);
    }

    /// Records that `addr` answered for `name` from `first_ms` to `last_ms` (a sighting, or a
    /// pair from a log): a change [`DnsMap::pairs_since`] reports.
    pub fn insert_span(
        &mut self,
        addr: IpAddr,
        name: &str,
        first_ms: i64,
        last_ms: i64,
        ttl_s: u32,
        source: Source,
    ) {
        self.put(addr, name, first_ms, last_ms, ttl_s, source, true);
    }

    /// [`DnsMap::insert_span`] of a pair read back from the inventory: already stored, so not
    /// a change to write again (a pair changed since its last write stays changed).
    pub fn insert_saved(
        &mut self,
        addr: IpAddr,
        name: &str,
        first_ms: i64,
        last_ms: i64,
        ttl_s: u32,
        source: Source,
    ) {
        self.put(addr, name, first_ms, last_ms, ttl_s, source, false);
    }

    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        addr: IpAddr,
        name: &str,
        first_ms: i64,
        last_ms: i64,
        ttl_s: u32,
        source: Source,
        sighting: bool,
    ) {
        let at_ms = first_ms;
        let Some(name) = crate::flow::normalize_name(name) else {
            return;
        };
        let id = match self.ids.get(&name) {
            Some(&id) => id,
            None => {
                let id = self.names.len() as u32;
                self.names.push(name.clone());
                self.ids.insert(name, id);
                id
            }
        };
        let ttl_ms = i64::from(ttl_s) * 1000;
        let entries = self
            .by_addr
            .entry(crate::schema::addr_key(addr))
            .or_default();
        match entries.iter_mut().find(|e| e.name == id) {
            Some(e) => {
                let (first, last, ttl) = (
                    e.first.min(at_ms),
                    e.last.max(last_ms),
                    e.ttl_ms.max(ttl_ms),
                );
                if sighting && (first, last, ttl) != (e.first, e.last, e.ttl_ms) {
                    self.version += 1;
                    e.changed = self.version;
                }
                (e.first, e.last, e.ttl_ms) = (first, last, ttl);
            }
            None => {
                if entries.len() == MAX_NAMES_PER_ADDRESS {
                    let oldest = (0..entries.len())
                        .min_by_key(|&i| entries[i].last)
                        .unwrap_or(0);
                    entries.swap_remove(oldest);
                    self.pairs -= 1;
                }
                let changed = if sighting {
                    self.version += 1;
                    self.version
                } else {
                    0
                };
                entries.push(Entry {
                    name: id,
                    first: at_ms,
                    last: last_ms.max(at_ms),
                    ttl_ms,
                    source,
                    changed,
                });
                self.pairs += 1;
            }
        }
    }

    /// Appends to `out` the names `addr` answered for at `at_ms`, and returns the weight that
    /// evidence resting on those names gets: 1, or, for an address shared by names of k ≥ 3
    /// unrelated domains (a CDN or a hosting provider), 2/k — see [`shared_weight`].
    #[inline]
    pub fn lookup_into(&self, addr: IpAddr, at_ms: i64, out: &mut Vec<Arc<str>>) -> f32 {
        let start = out.len();
        if let Some(entries) = self.by_addr.get(&crate::schema::addr_key(addr)) {
            for e in entries {
                if e.first - SKEW_MS <= at_ms && at_ms <= e.last + e.ttl_ms + self.grace_ms {
                    out.push(self.names[e.name as usize].clone());
                }
            }
        }
        if out.len() - start < SHARED_MIN {
            return 1.0;
        }
        shared_weight(out[start..].iter().map(|n| &**n))
    }

    /// The names `addr` answered for at `at_ms`, with when each was first and last seen.
    pub fn lookup(&self, addr: IpAddr, at_ms: i64) -> Vec<(Arc<str>, i64, i64, Source)> {
        self.entries_where(addr, |e| {
            e.first - SKEW_MS <= at_ms && at_ms <= e.last + e.ttl_ms + self.grace_ms
        })
    }

    /// Every pair, for storing: (address, name, first, last, TTL seconds, source).
    pub fn pairs(&self) -> Vec<(IpAddr, Arc<str>, i64, i64, u32, Source)> {
        self.pairs_since(None)
    }

    /// How many changes by sightings the map has had: what [`DnsMap::pairs_since`] takes to
    /// report the pairs changed after this moment.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The pairs changed by a sighting after the map was at `version` (every pair for `None`),
    /// as [`DnsMap::pairs`] gives them: what a writer that stored the map at that version has
    /// to write again.
    pub fn pairs_since(
        &self,
        version: Option<u64>,
    ) -> Vec<(IpAddr, Arc<str>, i64, i64, u32, Source)> {
        let mut v = Vec::with_capacity(if version.is_none() { self.pairs } else { 0 });
        for (k, entries) in &self.by_addr {
            let v6 = std::net::Ipv6Addr::from(*k);
            let addr = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
            for e in entries
                .iter()
                .filter(|e| version.is_none_or(|at| e.changed > at))
            {
                let ttl = u32::try_from(e.ttl_ms / 1000).unwrap_or(u32::MAX);
                v.push((
                    addr,
                    self.names[e.name as usize].clone(),
                    e.first,
                    e.last,
                    ttl,
                    e.source,
                ));
            }
        }
        v
    }

    /// Every name ever seen for `addr`, with first/last sighting.
    pub fn history(&self, addr: IpAddr) -> Vec<(Arc<str>, i64, i64, Source)> {
        self.entries_where(addr, |_| true)
    }

    fn entries_where(
        &self,
        addr: IpAddr,
        keep: impl Fn(&Entry) -> bool,
    ) -> Vec<(Arc<str>, i64, i64, Source)> {
        self.by_addr
            .get(&crate::schema::addr_key(addr))
            .map(|entries| {
                entries
                    .iter()
                    .filter(|e| keep(e))
                    .map(|e| {
                        (
                            self.names[e.name as usize].clone(),
                            e.first,
                            e.last,
                            e.source,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_valid_from_first_sighting_to_last_plus_ttl_plus_grace() {
        let mut m = DnsMap::new();
        m.grace_ms = 60_000;
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        m.insert(a, "Update.Example.", 1_000_000, 300, Source::Log);
        m.insert(a, "update.example", 2_000_000, 300, Source::Log);
        m.insert(a, "other.example", 5_000_000, 60, Source::Log);
        let names = |t| {
            m.lookup(a, t)
                .into_iter()
                .map(|(n, ..)| n.to_string())
                .collect::<Vec<_>>()
        };
        assert!(names(900_000).is_empty(), "before the first answer");
        assert_eq!(names(1_500_000), ["update.example"]);
        assert_eq!(names(2_000_000 + 300_000 + 60_000), ["update.example"]);
        assert!(names(2_000_000 + 300_000 + 60_001).is_empty());
        assert_eq!(names(5_000_500), ["other.example"]);
        assert_eq!(m.len(), 2);
        assert_eq!(m.history(a).len(), 2);
    }

    #[test]
    fn addresses_shared_by_unrelated_names_weigh_less() {
        assert_eq!(registrable("a.b.example.com"), "example.com");
        assert_eq!(registrable("localhost"), "localhost");
        let mut m = DnsMap::new();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        m.insert(a, "www.one.example", 0, 60, Source::Log);
        m.insert(a, "api.one.example", 0, 60, Source::Log);
        let mut out = Vec::new();
        assert_eq!(m.lookup_into(a, 0, &mut out), 1.0, "one registrable domain");
        for d in ["two.example", "three.example", "four.example"] {
            m.insert(a, d, 0, 60, Source::Log);
        }
        out.clear();
        assert_eq!(m.lookup_into(a, 0, &mut out), 0.5, "four unrelated domains");
    }

    #[test]
    fn names_per_address_are_bounded() {
        let mut m = DnsMap::new();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        for i in 0..200 {
            m.insert(a, &format!("n{i}.cdn.example"), i, 60, Source::Log);
        }
        assert_eq!(m.len(), MAX_NAMES_PER_ADDRESS);
        assert_eq!(m.lookup(a, 199).len(), MAX_NAMES_PER_ADDRESS);
    }
}

#[cfg(test)]
mod changed_tests {
    use super::*;

    fn names(map: &DnsMap, at: Option<u64>) -> Vec<String> {
        let mut v: Vec<String> = map
            .pairs_since(at)
            .into_iter()
            .map(|(a, n, ..)| format!("{a} {n}"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn only_pairs_changed_by_sightings_are_reported_since_a_version() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        let mut m = DnsMap::new();
        // Read back from the inventory: stored already, no change.
        m.insert_saved(a, "stored.example", 1_000, 2_000, 60, Source::Log);
        assert_eq!(m.version(), 0);
        assert!(names(&m, Some(0)).is_empty());
        m.insert(a, "new.example", 3_000, 60, Source::Log);
        m.insert(b, "v6.example", 3_000, 60, Source::Flow);
        let v1 = m.version();
        assert_eq!(
            names(&m, Some(0)),
            ["192.0.2.1 new.example", "2001:db8::2 v6.example"]
        );
        assert!(names(&m, Some(v1)).is_empty());
        // The same sighting again changes nothing; a later one does, and so does a later
        // sighting of a stored pair.
        m.insert(b, "v6.example", 3_000, 60, Source::Flow);
        assert_eq!(m.version(), v1);
        m.insert(a, "stored.example", 5_000, 60, Source::Log);
        assert_eq!(names(&m, Some(v1)), ["192.0.2.1 stored.example"]);
        // A stored copy that extends a pair does not count as a change of it.
        let v2 = m.version();
        m.insert_saved(b, "v6.example", 1_000, 9_000, 60, Source::Flow);
        assert!(names(&m, Some(v2)).is_empty());
        assert_eq!(names(&m, None).len(), 3, "every pair for None");
    }
}
