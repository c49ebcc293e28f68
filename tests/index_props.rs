//! Property tests: the indexed evaluator and the naive one (every rule against every flow)
//! agree on random rules and random flows.

use flowprint::compiler::Compiler;
use flowprint::eval::{Evaluator, LocalNets, eval_naive};
use flowprint::flow::Flow;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Small value domains so that random rules and flows actually meet.
fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..4, 0u8..4).prop_map(|(a, b)| IpAddr::V4(Ipv4Addr::new(10, 0, a, b))),
        (0u8..4, 0u8..4).prop_map(|(a, b)| IpAddr::V4(Ipv4Addr::new(20, a, 0, b))),
        (0u16..4).prop_map(|a| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, a))),
        (0u16..4).prop_map(|a| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, a))),
    ]
}

fn atom() -> impl Strategy<Value = String> {
    let side = prop_oneof![Just("host"), Just("peer")];
    prop_oneof![
        (side.clone(), 0u8..4, 0u8..4).prop_map(|(s, a, b)| format!("{s}.addr == 20.{a}.0.{b}")),
        (side.clone(), 0u8..4, 23u8..33)
            .prop_map(|(s, a, l)| format!("{s}.addr in 20.{a}.0.0/{l}")),
        (side.clone(), 0u16..4)
            .prop_map(|(s, a)| format!("{s}.addr in {{ 2001:db8::{a:x}, fd00::/120 }}")),
        (side.clone(), 0u8..4).prop_map(|(s, a)| format!("{s}.addr != 10.0.0.{a}")),
        (side.clone(), 0u16..6).prop_map(|(s, p)| format!("{s}.port == {}", 440 + p)),
        (side.clone(), 0u16..6, 0u16..4).prop_map(|(s, p, w)| format!(
            "{s}.port in {} .. {}",
            440 + p,
            440 + p + w
        )),
        (0u64..5000, 0u64..500).prop_map(|(b, t)| format!("bytes ~ {b} +- {t}")),
        (side.clone(), 0u64..5000).prop_map(|(s, b)| format!("{s}.bytes > {b}")),
        (0u64..5000).prop_map(|b| format!("peer.bytes <= {b}")),
        prop_oneof![
            Just("proto == tcp"),
            Just("proto == udp"),
            Just("proto in { 1, 58 }")
        ]
        .prop_map(String::from),
        (0u8..4).prop_map(|d| format!("peer.domain in {{ \"a{d}.example\", \"*.b{d}.example\" }}")),
        (0u8..4).prop_map(|d| format!("peer.domain != \"a{d}.example\"")),
        (0u8..4).prop_map(|d| format!("peer.domain matches /^x{d}/")),
        Just("tcp.flags has syn".to_string()),
        (0u8..130).prop_map(|t| format!("host.ttl >= {t}")),
        (1u64..10).prop_map(|d| format!("duration < {d} s")),
    ]
}

fn condition() -> impl Strategy<Value = String> {
    atom().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} and {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} or {b})")),
            inner.prop_map(|a| format!("not ({a})")),
        ]
    })
}

fn flow() -> impl Strategy<Value = Flow> {
    (
        (addr(), addr(), 438u16..450, 438u16..450),
        (
            prop_oneof![Just(6u8), Just(17u8), Just(1u8)],
            0u64..6000,
            0u64..6000,
            any::<u8>(),
        ),
        (
            proptest::option::of(60u8..130),
            0i64..12_000,
            0u8..8,
            0u8..8,
        ),
    )
        .prop_map(
            |((src, dst, sp, dp), (proto, b, rb, flags), (ttl, dur, n1, n2))| {
                let mut f = Flow::new(src, sp, dst, dp, proto);
                f.bytes = b;
                f.rev_bytes = rb;
                f.packets = 1 + b / 1000;
                f.tcp_flags = flags;
                f.src_ttl = ttl;
                f.end_ms = dur;
                let name = |n: u8| match n {
                    0..=3 => Some(format!("a{n}.example")),
                    4 | 5 => Some(format!("x{}.b{}.example", n - 4, n - 3)),
                    _ => None,
                };
                f.dst_name = name(n1).and_then(|n| flowprint::flow::normalize_name(&n));
                f.src_name = name(n2).and_then(|n| flowprint::flow::normalize_name(&n));
                f
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn indexed_and_naive_evaluators_agree(conds in proptest::collection::vec(condition(), 1..12),
                                          flows in proptest::collection::vec(flow(), 1..30)) {
        let text: String = conds.iter().enumerate().map(|(i, c)| {
            format!("rule r{i} {{\n when {c}\n then device = \"d{i}\" confidence 0.5\n}}\n")
        }).collect();
        let mut compiler = Compiler::new();
        compiler.add_source("p", "random.rules", &text);
        let compiled = compiler.compile();
        prop_assert_eq!(compiled.errors(), 0, "{}", compiled.diagnostics.iter().map(|d| d.render(&compiled.sources)).collect::<String>());
        let local = LocalNets::default();
        let mut ev = Evaluator::new(&compiled.ruleset, &local);
        for f in &flows {
            let mut fast = Vec::new();
            ev.eval(f, |m| fast.push(m));
            let mut slow = Vec::new();
            eval_naive(&compiled.ruleset, &local, f, |m| slow.push(m));
            fast.sort();
            slow.sort();
            prop_assert_eq!(fast, slow, "flow {:?}", f);
        }
    }
}

/// A network around `a` (IPv4 or IPv6 of any prefix), for the local-network property.
fn net() -> impl Strategy<Value = ipnet::IpNet> {
    prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(a, l)| ipnet::IpNet::V4(
            ipnet::Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc()
        )),
        (any::<u128>(), 0u8..=128).prop_map(|(a, l)| ipnet::IpNet::V6(
            ipnet::Ipv6Net::new(Ipv6Addr::from(a), l).unwrap().trunc()
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// `LocalNets::contains` (a branch-free scan of the IPv4 ranges up to 8 of them, a search
    /// beyond) says what the networks say, for addresses inside, at the edges of and outside
    /// them; an IPv4 address and its IPv4-mapped IPv6 form count as one.
    #[test]
    fn local_nets_contain_exactly_their_networks(nets in proptest::collection::vec(net(), 0..20),
                                                  probes in proptest::collection::vec(any::<u32>(), 0..40)) {
        let local = LocalNets::new(nets.clone());
        let mut addrs: Vec<IpAddr> = probes.iter().map(|&a| IpAddr::V4(Ipv4Addr::from(a))).collect();
        for n in &nets {
            for a in [n.network(), n.broadcast()] {
                addrs.push(a);
                if let IpAddr::V4(v4) = a {
                    addrs.push(IpAddr::V4(Ipv4Addr::from(u32::from(v4).wrapping_sub(1))));
                    addrs.push(IpAddr::V4(Ipv4Addr::from(u32::from(v4).wrapping_add(1))));
                    addrs.push(IpAddr::V6(v4.to_ipv6_mapped()));
                }
            }
        }
        for a in addrs {
            // An IPv4 address and its IPv4-mapped IPv6 form are one address.
            let forms = match a {
                IpAddr::V4(v4) => [a, IpAddr::V6(v4.to_ipv6_mapped())],
                IpAddr::V6(v6) => [a, v6.to_ipv4_mapped().map_or(a, IpAddr::V4)],
            };
            let want = nets.iter().any(|n| forms.iter().any(|f| n.contains(f)));
            prop_assert_eq!(local.contains(a), want, "{} in {:?}", a, nets);
        }
    }
}
