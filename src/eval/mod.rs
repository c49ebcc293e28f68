//! Per-flow matching: a flow → the rules it satisfies, for each local endpoint.
//!
//! [`Matcher::scan`] is the one matching step: each flow is viewed once per local endpoint (a
//! flow between two local hosts counts for both), each endpoint's peer is looked up in DNS
//! once, candidates come from the ruleset's indexes, and only those are checked in full. The
//! per-flow path that records what matched is [`crate::scan::Scanner`]; [`Evaluator`] is
//! matching alone.

use crate::flow::Flow;
use crate::ruleset::{AddrSet, Ruleset};
use crate::schema::{Side, View, addr_key};
use ipnet::IpNet;
use std::net::IpAddr;

/// Which addresses are hosts (the local endpoints that are fingerprinted).
#[derive(Debug, Clone)]
pub struct LocalNets {
    set: AddrSet,
    /// The set's IPv4 part as (first, span) of plain 32-bit addresses: most flows are IPv4,
    /// and a few networks are checked without a branch per network.
    v4: Vec<(u32, u32)>,
    nets: Vec<IpNet>,
}

/// IPv4 ranges up to which [`LocalNets::contains`] checks every range (no early exit, no
/// mispredicted branch); beyond, it searches them.
const LINEAR_V4_RANGES: usize = 8;

/// RFC 1918, RFC 4193 unique-local and the link-local ranges.
pub const DEFAULT_LOCAL_NETS: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
];

impl Default for LocalNets {
    fn default() -> Self {
        let nets: Vec<IpNet> = DEFAULT_LOCAL_NETS
            .iter()
            .map(|s| s.parse().expect("built-in networks are valid"))
            .collect();
        LocalNets::new(nets)
    }
}

impl LocalNets {
    /// The given networks (replacing the default).
    pub fn new(nets: Vec<IpNet>) -> LocalNets {
        let set = AddrSet::from_ranges(
            nets.iter()
                .map(|n| (addr_key(n.network()), addr_key(n.broadcast())))
                .collect(),
        );
        // IPv4 keys are 0xffff_<address> (IPv4-mapped): the ranges within that block.
        const V4_LO: u128 = 0xffff_0000_0000;
        const V4_HI: u128 = 0xffff_ffff_ffff;
        let v4 = set
            .ranges
            .iter()
            .filter(|&&(lo, hi)| hi >= V4_LO && lo <= V4_HI)
            .map(|&(lo, hi)| {
                let (lo, hi) = (lo.max(V4_LO) as u32, hi.min(V4_HI) as u32);
                (lo, hi - lo)
            })
            .collect();
        LocalNets { set, v4, nets }
    }

    /// Whether `a` is a host address.
    #[inline]
    pub fn contains(&self, a: IpAddr) -> bool {
        match a {
            IpAddr::V4(v4) if self.v4.len() <= LINEAR_V4_RANGES => {
                let k = u32::from(v4);
                // `k - first <= span` (wrapping) is `first <= k <= first + span`.
                self.v4
                    .iter()
                    .fold(false, |hit, &(lo, span)| hit | (k.wrapping_sub(lo) <= span))
            }
            _ => self.set.contains(addr_key(a)),
        }
    }

    /// The networks, as given.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

/// One rule satisfied by one flow, seen from one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Match {
    /// Position of the rule in [`Ruleset::rules`].
    pub rule: u32,
    /// The local endpoint the match is evidence about.
    pub host: IpAddr,
    /// Whether that host is the record's source.
    pub host_is_src: bool,
    /// Weight of the evidence in permille: 1000, or less when the match rests on names of a
    /// peer address shared by many unrelated names (see [`crate::dns::shared_weight`]).
    pub weight: u16,
}

impl Match {
    /// The match of rule `r` (whose condition holds) for the host of `view`: its weight below
    /// 1000 when it rests on the names of a shared address (`shared`, from the DNS look-up),
    /// that is when the condition does not hold without the peer's names.
    #[inline]
    pub fn of(rules: &Ruleset, r: u32, view: &View<'_>, shared: f32) -> Match {
        let weight = if shared < 1.0
            && !rules.cond(r).matches(&View {
                peer_names: &[],
                ..*view
            }) {
            (shared * 1000.0) as u16
        } else {
            1000
        };
        Match {
            rule: r,
            host: view.addr(Side::Host),
            host_is_src: view.host_is_src,
            weight,
        }
    }
}

/// The reusable state of matching: which rules were already checked for the current view
/// (stamped, so that nothing is cleared per flow) and the buffers of one flow's matches and
/// peer names. It belongs to one caller and follows the ruleset it is used with (resized when
/// the number of rules changes). [`crate::scan::Scanner`] and [`Evaluator`] both match
/// through it: [`Matcher::scan`] is the one matching step.
#[derive(Debug, Default)]
pub struct Matcher {
    seen: Vec<u32>,
    stamp: u32,
    matches: Vec<Match>,
    gates: Vec<u32>,
    names: [Vec<std::sync::Arc<str>>; 2],
}

/// What matching a flow reads besides the flow.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    /// The rules.
    pub rules: &'a Ruleset,
    /// Which endpoints are hosts.
    pub local: &'a LocalNets,
    /// `(count, index)`: only hosts whose [`shard_of`] is `index` are this caller's.
    pub shard: Option<(u32, u32)>,
    /// The names peer addresses answered for (none: `peer.domain` sees only the records'
    /// own names).
    pub dns: Option<&'a crate::dns::DnsMap>,
    /// Names learned from records since the map was last written (the scanner's own, visible
    /// to the next flow before they reach the shared map).
    pub recent: Option<&'a crate::dns::DnsMap>,
}

/// One local endpoint of a flow, as [`Matcher::scan`] hands it on.
pub struct HostView<'a> {
    /// The flow seen from the host (its `peer_names` are the names below).
    pub view: View<'a>,
    /// The names the peer's address answered for at the time of the flow.
    pub peer_names: &'a [std::sync::Arc<str>],
    /// The rules it satisfies (transfer rules excepted: they are judged on their transfer's
    /// total, [`crate::ruleset::TransferGroup`]).
    pub matches: &'a [Match],
    /// The transfer groups whose gate the record passes: it is part of a transfer for them.
    pub gates: &'a [u32],
    /// Weight of a match that rests on the peer's DNS names (below 1 for a shared address).
    pub shared: f32,
}

/// What [`Matcher::scan`] found out about a flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scanned {
    /// Local endpoints of this caller's shard that were matched (0–2).
    pub hosts: usize,
    /// Whether the flow counts as evaluated here: always without shards; with them, when
    /// this is the shard of the flow's first local endpoint (or shard 0 when it has none),
    /// the same choice as [`flow_shards`].
    pub primary: bool,
}

impl Matcher {
    /// A matcher for `rules`.
    pub fn new(rules: &Ruleset) -> Matcher {
        let mut m = Matcher::default();
        m.fit(rules);
        m
    }

    /// Follows a ruleset with another number of rules.
    #[inline]
    fn fit(&mut self, rules: &Ruleset) {
        let n = rules.len() + rules.transfer_groups().len();
        if self.seen.len() != n {
            self.seen.clear();
            self.seen.resize(n, 0);
            self.stamp = 0;
        }
    }

    /// The one matching step. Classifies the flow's endpoints once, keeps the hosts of this
    /// shard, looks each one's peer up in DNS once, collects the rules each satisfies, and
    /// calls `host` for each (with what was found, to be recorded without recomputing it).
    #[inline]
    pub fn scan(
        &mut self,
        scope: &Scope<'_>,
        flow: &Flow,
        mut host: impl FnMut(HostView<'_>),
    ) -> Scanned {
        self.fit(scope.rules);
        let mut views = hosts(scope.local, flow);
        let mut primary = true;
        if let Some((count, index)) = scope.shard {
            let first = views
                .iter()
                .flatten()
                .next()
                .map_or(0, |v| shard_of(v.addr(Side::Host), count));
            primary = first == index;
            for v in &mut views {
                if v.as_ref()
                    .is_some_and(|v| shard_of(v.addr(Side::Host), count) != index)
                {
                    *v = None;
                }
            }
        }
        let mut n = 0;
        for (i, view) in views.into_iter().enumerate() {
            let Some(mut view) = view else { continue };
            n += 1;
            let names = &mut self.names[i];
            names.clear();
            let mut shared = 1.0f32;
            let peer = view.addr(Side::Peer);
            if let Some(dns) = scope.dns {
                shared = dns.lookup_into(peer, flow.start_ms, names);
            }
            if let Some(recent) = scope.recent {
                let before = names.len();
                recent.lookup_into(peer, flow.start_ms, names);
                if names.len() > before {
                    names.sort_unstable();
                    names.dedup();
                    shared = crate::dns::shared_weight(names.iter().map(|n| &**n));
                }
            }
            view.peer_names = names;
            self.stamp = self.stamp.wrapping_add(1);
            if self.stamp == 0 {
                self.seen.iter_mut().for_each(|s| *s = 0);
                self.stamp = 1;
            }
            let (stamp, seen, rules) = (self.stamp, &mut self.seen, scope.rules);
            let matches = &mut self.matches;
            matches.clear();
            let gates = &mut self.gates;
            gates.clear();
            let n_rules = rules.len() as u32;
            rules.index().candidates(&view, |r| {
                let slot = &mut seen[r as usize];
                if *slot == stamp {
                    return;
                }
                *slot = stamp;
                if r >= n_rules {
                    let g = r - n_rules;
                    if rules.transfer_groups()[g as usize].gate.matches(&view) {
                        gates.push(g);
                    }
                    return;
                }
                if rules.cond(r).matches(&view) {
                    matches.push(Match::of(rules, r, &view, shared));
                }
            });
            host(HostView {
                view,
                peer_names: names,
                matches,
                gates,
                shared,
            });
        }
        Scanned { hosts: n, primary }
    }
}

/// Matching alone, over one borrowed ruleset: the rules a flow satisfies, without recording
/// anything (`bench eval`, the tests of the indexes). Everything that records evidence goes
/// through [`crate::scan::Scanner`]; both match through [`Matcher::scan`].
pub struct Evaluator<'r> {
    scope: Scope<'r>,
    matcher: Matcher,
}

/// The shard (of `count`) that a host address belongs to: a stable hash of the address, the
/// same in every process and version, so that each host's evidence is always gathered by one
/// worker.
pub fn shard_of(addr: IpAddr, count: u32) -> u32 {
    if count <= 1 {
        return 0;
    }
    // FNV-1a over the address bytes (16 for IPv6, 4 for IPv4): stable and well mixed.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes: &[u8] = match &addr {
        IpAddr::V4(a) => &a.octets(),
        IpAddr::V6(a) => &a.octets(),
    };
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(count)) as u32
}

impl<'r> Evaluator<'r> {
    /// An evaluator over `rules`, with `local` deciding which endpoints are hosts.
    pub fn new(rules: &'r Ruleset, local: &'r LocalNets) -> Evaluator<'r> {
        Evaluator {
            scope: Scope {
                rules,
                local,
                shard: None,
                dns: None,
                recent: None,
            },
            matcher: Matcher::new(rules),
        }
    }

    /// Also matches `peer.domain` against the names the peer's address answered for at the time
    /// of each flow.
    pub fn with_dns(mut self, dns: &'r crate::dns::DnsMap) -> Evaluator<'r> {
        self.scope.dns = (!dns.is_empty()).then_some(dns);
        self
    }

    /// Calls `on_match` for every (rule, host) the flow satisfies. Returns how many local
    /// endpoints the flow had (0 when it is between two non-local addresses).
    #[inline]
    pub fn eval(&mut self, flow: &Flow, mut on_match: impl FnMut(Match)) -> usize {
        self.matcher
            .scan(&self.scope, flow, |h| {
                h.matches.iter().for_each(|&m| on_match(m))
            })
            .hosts
    }
}

#[inline]
/// The endpoints of a flow that are hosts: local addresses, except a destination that is the
/// source itself or a broadcast address (x.x.x.255).
pub fn host_addrs(local: &LocalNets, flow: &Flow) -> [Option<IpAddr>; 2] {
    hosts(local, flow).map(|v| v.map(|v| v.addr(crate::schema::Side::Host)))
}

/// The shards (of `count`) a flow must go to: the shard of its first local host (or 0 when it
/// has none), where it counts as evaluated, and the shard of its second local host when that
/// is another one, where only that host is evaluated.
pub fn flow_shards(local: &LocalNets, flow: &Flow, count: u32) -> (u32, Option<u32>) {
    let [a, b] = host_addrs(local, flow);
    let sa = a.map(|x| shard_of(x, count));
    let sb = b.map(|x| shard_of(x, count));
    let first = sa.or(sb).unwrap_or(0);
    (first, sb.filter(|&y| sa.is_some() && y != first))
}

fn hosts<'f>(local: &LocalNets, flow: &'f Flow) -> [Option<View<'f>>; 2] {
    let src = local.contains(flow.src).then_some(View {
        flow,
        host_is_src: true,
        peer_names: &[],
    });
    // A destination ending in .255 is, in practice, a subnet's broadcast address (NetBIOS,
    // Dropbox LAN sync...): not a host, unless it sends something itself.
    let broadcast = matches!(flow.dst, IpAddr::V4(v4) if v4.octets()[3] == 255);
    let dst = (local.contains(flow.dst) && flow.dst != flow.src && !broadcast).then_some(View {
        flow,
        host_is_src: false,
        peer_names: &[],
    });
    [src, dst]
}

/// The reference evaluator: checks every rule against every flow. For tests of the indexes.
pub fn eval_naive(
    rules: &Ruleset,
    local: &LocalNets,
    flow: &Flow,
    mut on_match: impl FnMut(Match),
) {
    for view in hosts(local, flow).into_iter().flatten() {
        for (i, rule) in rules.rules().iter().enumerate() {
            // Transfer rules are judged on their transfer's total, not record by record.
            let transfer = rule.stateful.as_ref().is_some_and(|s| s.transfer.is_some());
            if !transfer && rule.cond.matches(&view) {
                on_match(Match {
                    rule: i as u32,
                    host: view.addr(crate::schema::Side::Host),
                    host_is_src: view.host_is_src,
                    weight: 1000,
                });
            }
        }
    }
}
