//! The per-flow path: one [`Scanner`] takes a flow, finds the rules it matches, updates the
//! hosts it speaks about and learns the names it carries. Everything that applies flows goes
//! through it — `analyze`, `evaluate`, the daemon's workers, the fleet's workers, `pack test`
//! fixtures and every `bench` scenario — so that they cannot disagree.
//!
//! The model is yara-x's `Scanner`: one reusable object per worker. It owns
//! - the matching state for the current ruleset ([`Matcher`]; kept across flows and batches,
//!   changed only when the rules are replaced, [`Scanner::replace_rules`]);
//! - the host table ([`HostTable`]);
//! - the name-learning policy ([`learned_name`]): which records' names are learned. A learned
//!   name counts for `peer.domain` from the next flow on, wherever the map lives: the scanner
//!   looks its own recent names up with the map until the owner writes them into it
//!   ([`Scanner::learn_into`], after each batch in the daemon).
//!
//! Per flow, [`Scanner::apply`] classifies the local endpoints once, looks each one's peer up
//! in DNS once, evaluates, and hands the matches and the names straight to the inventory.

use crate::dns::DnsMap;
use crate::eval::{LocalNets, Matcher, Scanned, Scope};
use crate::flow::Flow;
use crate::infer::HostTable;
use crate::ruleset::Ruleset;
use crate::schema::addr_key;
use std::net::IpAddr;
use std::sync::Arc;

/// Flows after which a single-threaded caller's learned names are written into its map
/// ([`Scanner::apply_learning`]): the daemon's batch size. (They count from the next flow on
/// either way; this only bounds the scanner's own list.)
pub const LEARN_EVERY: u64 = 512;

/// How many flows ahead [`Scanner::apply_all`] prefetches host state: far enough for a memory
/// access to complete while the flows between are applied, near enough to stay in cache.
pub const PREFETCH_AHEAD: usize = 8;

/// Hosts from which [`Scanner::apply_all`] reads ahead: below, the host table (about 100 bytes
/// a host with its index) stays in the processor's cache.
pub const PREFETCH_MIN_HOSTS: usize = 4096;

/// Most learned (address, name) pairs waiting to be written into the map; more before the next
/// [`Scanner::learn_into`] are counted ([`Scanner::names_dropped`]) and not kept. The daemon
/// writes them after every batch of at most 512 flows, so only a caller that never does
/// reaches it.
pub const MAX_PENDING_NAMES: usize = 65_536;

/// The name-learning policy, in one place: a record that carries a name for its destination
/// (TLS SNI, HTTP Host) on a web port teaches that the destination address answers for that
/// name, so that plain records to the same address match `peer.domain` too. Only a flow's
/// primary copy is learned from (a flow between two local hosts in two shards is learned once).
#[inline]
pub fn learned_name(flow: &Flow) -> Option<(IpAddr, &Arc<str>)> {
    match &flow.dst_name {
        Some(n) if matches!(flow.dst_port, 80 | 443 | 8080 | 8443) => Some((flow.dst, n)),
        _ => None,
    }
}

/// Names learned by a [`Scanner`], not yet in a map.
#[derive(Debug, Default)]
#[must_use = "learned names count only once written into a map"]
pub struct Learned(DnsMap);

impl Learned {
    /// Writes them into `dns`; returns how many (address, name) pairs.
    pub fn write_into(self, dns: &mut DnsMap) -> usize {
        let pairs = self.0.pairs();
        let n = pairs.len();
        for (addr, name, first, last, ttl, source) in pairs {
            dns.insert_span(addr, &name, first, last, ttl, source);
        }
        n
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The per-flow path of one worker (see the module docs).
pub struct Scanner {
    rules: Arc<Ruleset>,
    local: Arc<LocalNets>,
    shard: Option<(u32, u32)>,
    matcher: Matcher,
    inventory: HostTable,
    /// The names learned since they were last taken, looked up with the shared map until
    /// they are written into it, so that a name is visible to the very next flow whoever owns
    /// the map.
    recent: DnsMap,
    since_learned: u64,
    /// Names learned (a record's sightings; the same name seen twice counts twice).
    pub names_learned: u64,
    /// Flows applied that counted as evaluated here (their primary copy).
    pub primary_flows: u64,
    /// Learned names not kept because [`MAX_PENDING_NAMES`] were waiting.
    pub names_dropped: u64,
}

impl Scanner {
    /// A scanner over `rules`, with `local` deciding which endpoints are hosts, recording into
    /// `inventory`.
    pub fn new(rules: Arc<Ruleset>, local: Arc<LocalNets>, inventory: HostTable) -> Scanner {
        Scanner {
            matcher: Matcher::new(&rules),
            rules,
            local,
            shard: None,
            inventory,
            recent: DnsMap::new(),
            since_learned: 0,
            names_learned: 0,
            primary_flows: 0,
            names_dropped: 0,
        }
    }

    /// Only the hosts of shard `index` of `count` are this scanner's (see
    /// [`crate::eval::shard_of`]); a flow counts as evaluated, and has its names learned, only
    /// in the shard of its first local endpoint.
    pub fn with_shard(mut self, count: u32, index: u32) -> Scanner {
        self.shard = (count > 1).then_some((count, index));
        self
    }

    /// The rules.
    pub fn rules(&self) -> &Arc<Ruleset> {
        &self.rules
    }

    /// The hosts.
    pub fn hosts(&self) -> &HostTable {
        &self.inventory
    }

    /// The hosts, to change (restore, evict, take the changed ones).
    pub fn hosts_mut(&mut self) -> &mut HostTable {
        &mut self.inventory
    }

    /// The hosts and the rules their evidence refers to, given up.
    pub fn into_parts(self) -> (HostTable, Arc<Ruleset>) {
        (self.inventory, self.rules)
    }

    /// Goes over to other rules: the hosts' evidence moves to the new positions (`map`: old
    /// position → new, as [`crate::store::Snapshot::remap_from`] computes it).
    pub fn replace_rules(&mut self, rules: Arc<Ruleset>, map: &[Option<u32>]) {
        self.inventory.remap_rules(map, &self.rules, &rules);
        self.rules = rules;
    }

    /// Applies one flow: matches it and records its hosts and their evidence; a name it
    /// carries is learned (see [`learned_name`]) and waits for [`Scanner::learn_into`].
    #[inline]
    pub fn apply(&mut self, flow: &Flow, dns: &DnsMap) -> Scanned {
        let scope = Scope {
            rules: &self.rules,
            local: &self.local,
            shard: self.shard,
            dns: (!dns.is_empty()).then_some(dns),
            recent: (!self.recent.is_empty()).then_some(&self.recent),
        };
        let inventory = &mut self.inventory;
        inventory.begin_flow(flow);
        let scanned = self.matcher.scan(&scope, flow, |h| {
            inventory.record_host(flow, &h, scope.rules);
        });
        inventory.end_flow(scanned.hosts);
        if scanned.primary {
            self.primary_flows += 1;
            if let Some((addr, name)) = learned_name(flow) {
                if self.recent.len() < MAX_PENDING_NAMES {
                    self.recent.grace_ms = dns.grace_ms;
                    self.recent
                        .insert(addr, name, flow.start_ms, 0, crate::dns::Source::Flow);
                    self.names_learned += 1;
                } else {
                    self.names_dropped += 1;
                }
            }
        }
        self.since_learned += 1;
        scanned
    }

    /// Applies a batch of flows under one read of a shared map (a daemon worker's batch):
    /// returns how many counted as evaluated here, and the names they taught, to be written
    /// into the map once the caller has let go of its locks.
    pub fn apply_batch<'f, I>(&mut self, flows: I, dns: &DnsMap) -> (u64, Learned)
    where
        I: IntoIterator<Item = &'f Flow>,
        I::IntoIter: Clone,
    {
        let before = self.primary_flows;
        self.apply_all(flows, dns);
        (self.primary_flows - before, self.take_learned())
    }

    /// Applies flows in order, each as [`Scanner::apply`] does, asking the processor for the
    /// host state of the flow [`PREFETCH_AHEAD`] places ahead while the current one is applied
    /// (the host table's first touch is the per-flow cost of a large inventory).
    pub fn apply_all<'f, I>(&mut self, flows: I, dns: &DnsMap)
    where
        I: IntoIterator<Item = &'f Flow>,
        I::IntoIter: Clone,
    {
        // Two steps ahead: the index bucket of the flow's endpoints; one step: their states
        // (the index bucket is in cache by then). Hints only: the flows are applied in order.
        // Only the local endpoints are hosts: a peer is not looked up.
        fn hosts<'a>(local: &'a LocalNets, f: &'a Flow) -> impl Iterator<Item = u128> + 'a {
            [f.src, f.dst]
                .into_iter()
                .filter(|a| local.contains(*a))
                .map(addr_key)
        }
        let flows = flows.into_iter();
        if !self.reads_ahead() {
            // A small table stays in cache: reading ahead would only cost.
            for f in flows {
                self.apply(f, dns);
            }
            return;
        }
        let mut far = flows.clone();
        let mut near = flows.clone();
        for f in far.by_ref().take(2 * PREFETCH_AHEAD) {
            hosts(&self.local, f).for_each(|k| self.inventory.prefetch_index(k));
        }
        for f in near.by_ref().take(PREFETCH_AHEAD) {
            hosts(&self.local, f).for_each(|k| self.inventory.prefetch(k));
        }
        for f in flows {
            if let Some(a) = far.next() {
                hosts(&self.local, a).for_each(|k| self.inventory.prefetch_index(k));
            }
            if let Some(a) = near.next() {
                hosts(&self.local, a).for_each(|k| self.inventory.prefetch(k));
            }
            self.apply(f, dns);
        }
    }

    /// Whether [`Scanner::apply_all`] reads host state ahead (the table holds at least
    /// [`PREFETCH_MIN_HOSTS`] hosts): a caller that would gather flows into a batch only for
    /// that can apply them one by one otherwise.
    pub fn reads_ahead(&self) -> bool {
        self.inventory.len() >= PREFETCH_MIN_HOSTS
    }

    /// [`Scanner::apply_all`] for a caller that owns its DNS map: the learned names are
    /// written into it every [`LEARN_EVERY`] flows, as [`Scanner::apply_learning`] does.
    pub fn apply_all_learning(&mut self, flows: &[Flow], dns: &mut DnsMap) {
        self.apply_all(flows, dns);
        if self.since_learned >= LEARN_EVERY {
            self.learn_into(dns);
        }
    }

    /// [`Scanner::apply`] for a caller that owns its DNS map: the learned names are written
    /// into it every [`LEARN_EVERY`] flows, as the daemon does after each batch.
    pub fn apply_learning(&mut self, flow: &Flow, dns: &mut DnsMap) -> Scanned {
        let applied = self.apply(flow, dns);
        if self.since_learned >= LEARN_EVERY {
            self.learn_into(dns);
        }
        applied
    }

    /// Writes the names learned since the last call into `dns` (from then on they count for
    /// `peer.domain`); returns how many.
    pub fn learn_into(&mut self, dns: &mut DnsMap) -> usize {
        self.take_learned().write_into(dns)
    }

    /// The names learned since the last call, to be written into a map once the caller has
    /// let go of what it must not hold meanwhile (a shard's lock).
    pub fn take_learned(&mut self) -> Learned {
        self.since_learned = 0;
        Learned(std::mem::take(&mut self.recent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Arc<Ruleset> {
        let mut c = crate::compiler::Compiler::new();
        c.add_source("t", "t.rules", text);
        let c = c.compile();
        assert_eq!(c.errors(), 0);
        c.ruleset
    }

    #[test]
    fn reading_ahead_changes_nothing_but_speed() {
        // Enough hosts for `apply_all` to read ahead, a rule that matches some of them, flows
        // between two local hosts and to peers; the same flows one by one must give the same
        // inventory.
        let r = rules(
            r#"rule p { when peer.port == 443 then os.family = "X" confidence 0.5 }
               rule q { when peer.addr in 10.1.0.0/16 then software = "Y" confidence 0.5 }"#,
        );
        let mut flows = Vec::new();
        let mut x: u32 = 7;
        for i in 0..60_000u32 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let host = std::net::Ipv4Addr::from(0x0a00_0000 | ((x >> 8) % 9_000));
            let peer = if i.is_multiple_of(3) {
                std::net::Ipv4Addr::from(0x0a01_0000 | (x % 500))
            } else {
                std::net::Ipv4Addr::from(0xcb00_7100 | (x % 200))
            };
            let port = if x.is_multiple_of(2) { 443 } else { 80 };
            let mut f = Flow::new(host.into(), 40000, peer.into(), port, 6);
            f.start_ms = i64::from(i);
            f.end_ms = i64::from(i) + 1;
            flows.push(f);
        }
        let dns = DnsMap::new();
        let local = Arc::new(LocalNets::default());
        let mut one = Scanner::new(r.clone(), local.clone(), HostTable::new());
        for f in &flows {
            one.apply(f, &dns);
        }
        let mut all = Scanner::new(r.clone(), local, HostTable::new());
        for chunk in flows.chunks(256) {
            all.apply_all(chunk, &dns);
        }
        assert!(all.reads_ahead(), "the table is large enough to read ahead");
        let (a, b) = (one.into_parts().0, all.into_parts().0);
        assert_eq!(a.len(), b.len());
        assert_eq!(a.to_stored(&r), b.to_stored(&r));
    }

    #[test]
    fn a_name_learned_from_one_record_matches_the_next_plain_one() {
        let r = rules(
            r#"rule cdn { when peer.domain == "updates.example.com" then os.family = "X" confidence 0.5 }"#,
        );
        let mut s = Scanner::new(r, Arc::new(LocalNets::default()), HostTable::new());
        let mut dns = DnsMap::new();
        let peer: IpAddr = "203.0.113.5".parse().unwrap();
        let mut named = Flow::new("10.0.0.1".parse().unwrap(), 40000, peer, 443, 6);
        named.dst_name = Some("updates.example.com".into());
        let plain = |host: &str| Flow::new(host.parse().unwrap(), 40001, peer, 443, 6);
        // Before the name is learned: no match.
        s.apply_learning(&plain("10.0.0.9"), &mut dns);
        s.apply_learning(&named, &mut dns);
        // The very next flow sees it, before it is written into the map...
        s.apply_learning(&plain("10.0.0.2"), &mut dns);
        assert!(dns.is_empty());
        for _ in 0..LEARN_EVERY {
            s.apply_learning(&plain("10.0.0.3"), &mut dns);
        }
        // ... and after.
        assert_eq!(dns.len(), 1);
        s.apply_learning(&plain("10.0.0.4"), &mut dns);
        let hit = |h: &str| {
            s.hosts()
                .summaries(s.rules())
                .iter()
                .find(|x| x.host == h)
                .is_some_and(|x| !x.evidence.is_empty())
        };
        assert!(!hit("10.0.0.9"), "not learned yet");
        assert!(hit("10.0.0.1"), "the record's own name");
        assert!(hit("10.0.0.2"), "learned, not yet in the map");
        assert!(hit("10.0.0.4"), "learned, in the map");
        assert_eq!(s.primary_flows, LEARN_EVERY + 4);
    }

    #[test]
    fn with_shards_a_flow_is_primary_once_and_names_learned_once() {
        let r = rules(r#"rule web { when peer.port == 443 then os.family = "X" confidence 0.5 }"#);
        let local = Arc::new(LocalNets::default());
        let mut scanners: Vec<Scanner> = (0..4)
            .map(|i| Scanner::new(r.clone(), local.clone(), HostTable::new()).with_shard(4, i))
            .collect();
        let dns = DnsMap::new();
        let mut hosts_seen = 0;
        for i in 0..200u32 {
            // Between two local hosts: both shards see it, one counts it.
            let mut f = Flow::new(
                format!("10.0.{}.{}", i % 5, i % 200).parse().unwrap(),
                40000,
                format!("192.168.0.{}", i % 100).parse().unwrap(),
                443,
                6,
            );
            f.dst_name = Some("a.example".into());
            let primaries: u32 = scanners
                .iter_mut()
                .map(|s| {
                    let a = s.apply(&f, &dns);
                    hosts_seen += a.hosts;
                    u32::from(a.primary)
                })
                .sum();
            assert_eq!(primaries, 1, "flow {i}");
        }
        assert_eq!(hosts_seen, 400);
        let learned: u64 = scanners.iter().map(|s| s.names_learned).sum();
        assert_eq!(learned, 200);
    }
}
