//! Tests of the inventory's bounds and of evidence carried across rulesets.

use super::*;
use crate::compiler::Compiler;
use crate::eval::LocalNets;
use crate::scan::Scanner;
use std::sync::Arc;

/// Applies `flows` through the one per-flow path into `inv`.
fn apply(inv: &mut HostTable, rules: &Arc<Ruleset>, flows: impl IntoIterator<Item = Flow>) {
    let mut s = Scanner::new(
        rules.clone(),
        Arc::new(LocalNets::default()),
        std::mem::take(inv),
    );
    let dns = crate::dns::DnsMap::new();
    for f in flows {
        s.apply(&f, &dns);
    }
    *inv = s.into_parts().0;
}
use crate::flow::proto;

fn ruleset(packs: &[(&str, &str)]) -> std::sync::Arc<Ruleset> {
    let mut c = Compiler::new();
    for (pack, text) in packs {
        c.add_source(pack, &format!("{pack}.rules"), text);
    }
    let compiled = c.compile();
    assert_eq!(compiled.errors(), 0);
    compiled.ruleset
}

const ALPHA: (&str, &str) = (
    "alpha",
    "rule a {\n when peer.port == 4444\n then os.family = \"Linux\" confidence 0.5\n}\n",
);
const BETA: (&str, &str) = (
    "beta",
    "rule b {\n when peer.port == 5555\n then software = \"Beta\" confidence 0.5\n}\n",
);

fn flow(host: u32, port: u16, at: i64) -> Flow {
    let src = std::net::Ipv4Addr::from(0x0a00_0000 + host);
    let mut f = Flow::new(
        src.into(),
        40000,
        "203.0.113.9".parse().unwrap(),
        port,
        proto::TCP,
    );
    f.start_ms = at;
    f.end_ms = at;
    f
}

#[test]
fn max_hosts_holds_after_every_flow() {
    let rules = ruleset(&[ALPHA]);
    for max in [1, 7, 1000] {
        let mut s = Scanner::new(
            rules.clone(),
            Arc::new(LocalNets::default()),
            HostTable::with_config(InferConfig {
                max_hosts: max,
                ..Default::default()
            }),
        );
        let dns = crate::dns::DnsMap::new();
        let mut most = 0;
        for i in 0..2500u32 {
            s.apply(&flow(i, 4444, i64::from(i)), &dns);
            let inv = s.hosts();
            most = most.max(inv.len());
            assert!(inv.len() <= max, "{} hosts held with max {max}", inv.len());
            assert!(inv.dirty_len() <= inv.len(), "{}", inv.dirty_len());
            // The newest host is never the one evicted.
            assert!(inv.host(flow(i, 4444, 0).src).is_some());
        }
        let inv = s.hosts();
        assert_eq!(most, max);
        assert_eq!(inv.evicted, 2500 - inv.len() as u64, "max {max}");
        // Eviction runs once per tenth of the limit: the table stays above 90 % of it.
        assert!(
            inv.len() >= max - max / 10,
            "{} held with max {max}",
            inv.len()
        );
    }
}

#[test]
fn restore_keeps_the_evidence_of_rules_not_loaded() {
    let both = ruleset(&[ALPHA, BETA]);
    let mut inv = HostTable::new();
    apply(
        &mut inv,
        &both,
        (0..3).flat_map(|h| {
            [
                flow(h, 4444, 1000),
                flow(h, 5555, 2000),
                flow(h, 5555, 3000),
            ]
        }),
    );
    let stored = inv.to_stored(&both);
    let alpha = ruleset(&[ALPHA]);
    let mut only_a = HostTable::new();
    let r = only_a.restore(&stored, &alpha);
    assert_eq!((r.hosts, r.kept_rows, r.bad_hosts), (3, 3, 0));
    assert_eq!(r.kept_rules, vec![("beta/b".to_string(), 3)]);
    assert!(
        r.kept_note()
            .unwrap()
            .contains("3 stored evidence row(s) of 1 rule(s)")
    );
    // Written back exactly as it was; not scored, but shown.
    assert_eq!(
        only_a
            .to_stored(&alpha)
            .iter()
            .map(|h| &h.evidence)
            .collect::<Vec<_>>(),
        stored.iter().map(|h| &h.evidence).collect::<Vec<_>>()
    );
    let s = &only_a.summaries(&alpha)[0];
    assert!(s.software.is_empty(), "{s:?}");
    assert_eq!(s.unscored[0].rule, "beta/b");
    assert_eq!(s.unscored[0].flows, 2);
    // Both again: it counts again.
    let mut again = HostTable::new();
    let r = again.restore(&only_a.to_stored(&alpha), &both);
    assert_eq!(r.kept_rows, 0);
    assert_eq!(again.summaries(&both)[0].software[0].name, "Beta");
    assert_eq!(only_a.drop_kept(), 3);
    assert!(
        only_a
            .to_stored(&alpha)
            .iter()
            .all(|h| h.evidence.len() == 1)
    );
}

#[test]
fn a_reload_without_a_rule_keeps_its_evidence_and_a_reload_with_it_counts_it_again() {
    let both = ruleset(&[ALPHA, BETA]);
    let alpha = ruleset(&[ALPHA]);
    let mut inv = HostTable::new();
    apply(&mut inv, &both, [flow(1, 4444, 1000), flow(1, 5555, 2000)]);
    let before = inv.to_stored(&both);
    let pos = |from: &Ruleset, to: &Ruleset| -> Vec<Option<u32>> {
        from.rules()
            .iter()
            .map(|r| {
                to.rules()
                    .iter()
                    .position(|n| n.id == r.id)
                    .map(|p| p as u32)
            })
            .collect()
    };
    inv.remap_rules(&pos(&both, &alpha), &both, &alpha);
    let h = inv.host(flow(1, 0, 0).src).unwrap();
    assert_eq!(h.evidence.len(), 1);
    assert_eq!(&*h.kept()[0].rule, "beta/b");
    let sorted = |mut v: Vec<StoredHost>| {
        for h in &mut v {
            h.evidence.sort_by(|a, b| a.rule.cmp(&b.rule));
        }
        v.into_iter().map(|h| h.evidence).collect::<Vec<_>>()
    };
    assert_eq!(sorted(inv.to_stored(&alpha)), sorted(before.clone()));
    inv.remap_rules(&pos(&alpha, &both), &alpha, &both);
    let h = inv.host(flow(1, 0, 0).src).unwrap();
    assert!(h.kept().is_empty());
    assert_eq!(h.evidence.len(), 2);
    assert_eq!(sorted(inv.to_stored(&both)), sorted(before));
}

#[test]
fn catalogue_transfer_rules_share_one_total_per_connection() {
    let (text, sizes) = crate::bench::generate_transfer_rules(5_000, 3);
    let rules = ruleset(&[("catalogue", text.as_str())]);
    assert_eq!(
        rules.transfer_groups().len(),
        1,
        "one gate: the mirror list"
    );
    let mirror = std::net::IpAddr::from(crate::bench::MIRROR.1);
    let name = crate::flow::normalize_name(crate::bench::MIRROR.0);
    let record = |host: u32, port: u16, at: i64, bytes: u64| {
        let mut f = flow(host, 443, at);
        f.dst = mirror;
        f.src_port = port;
        f.dst_name = name.clone();
        f.rev_bytes = bytes;
        f.rev_packets = bytes / 1400 + 1;
        f.end_ms = at + 100;
        f
    };
    let k = 1234 % sizes.len();
    let size = sizes[k];
    let mut inv = HostTable::new();
    apply(
        &mut inv,
        &rules,
        [
            // Host 1 downloads file k in three records of one connection.
            record(1, 41000, 1000, size / 3),
            record(1, 41000, 2000, size / 3),
            record(1, 41000, 3000, size - 2 * (size / 3)),
            // Host 2: the same bytes over two connections, neither the whole file.
            record(2, 42000, 1000, size / 2),
            record(2, 42001, 1000, size - size / 2),
        ],
    );
    let fired = |host: u32| -> Vec<String> {
        inv.host(flow(host, 0, 0).src)
            .map(|h| {
                h.evidence
                    .iter()
                    .map(|e| rules.rules()[e.rule as usize].id.clone())
                    .collect()
            })
            .unwrap_or_default()
    };
    let one = fired(1);
    assert!(one.contains(&format!("catalogue/file-{k}")), "{one:?}");
    // Every rule that fired has a running total of the connection within its window: the
    // whole file, or (for another file that happens to be that size) the part received so far.
    let totals = [size / 3, 2 * (size / 3), size];
    for id in &one {
        let i: usize = id.rsplit('-').next().unwrap().parse().unwrap();
        let tol = sizes[i] / 500 + 2048;
        assert!(
            totals.iter().any(|&t| sizes[i].abs_diff(t) <= tol),
            "{id}: {} vs {totals:?}",
            sizes[i]
        );
    }
    let expected: usize = (0..sizes.len())
        .filter(|&i| {
            let tol = sizes[i] / 500 + 2048;
            totals.iter().any(|&t| sizes[i].abs_diff(t) <= tol)
        })
        .count();
    assert_eq!(one.len(), expected, "{one:?}");
    for id in fired(2) {
        let i: usize = id.rsplit('-').next().unwrap().parse().unwrap();
        let tol = sizes[i] / 500 + 2048;
        // Only a file of the size of one of the halves can match there.
        assert!(
            sizes[i].abs_diff(size / 2) <= tol || sizes[i].abs_diff(size - size / 2) <= tol,
            "{id}"
        );
    }
    // One total per connection, not one per rule and connection.
    let h = inv.host(flow(1, 0, 0).src).unwrap();
    assert!(h.extra.as_ref().unwrap().stateful.len() <= one.len());
}

#[test]
fn a_large_inventory_is_summarized_in_address_order_as_one_thread_would() {
    // More hosts than PARALLEL_SUMMARIES, IPv4 and IPv6 mixed (also IPv6 keys on either side
    // of the IPv4-mapped range), applied in no order.
    let rules = ruleset(&[ALPHA]);
    let mut inv = HostTable::new();
    let mut flows = Vec::new();
    for i in 0..(PARALLEL_SUMMARIES as u32 + 1000) {
        let h = i.wrapping_mul(2_654_435_761) % 50_000;
        let mut f = flow(h, 4444, i64::from(i));
        if i % 3 == 0 {
            // `::x:y` sorts below `::ffff:0:0` as an integer, `fd00::x:y` above it.
            let hi: u16 = if i % 2 == 0 { 0 } else { 0xfd00 };
            f.src = std::net::Ipv6Addr::new(hi, 0, 0, 0, 0, 0, (h >> 16) as u16, h as u16).into();
        }
        flows.push(f);
    }
    // Every address is local here.
    let local = LocalNets::new(vec!["10.0.0.0/8".parse().unwrap(), "::/0".parse().unwrap()]);
    let mut s = Scanner::new(rules.clone(), Arc::new(local), inv);
    let dns = crate::dns::DnsMap::new();
    for f in &flows {
        s.apply(f, &dns);
    }
    inv = s.into_parts().0;
    assert!(inv.len() > PARALLEL_SUMMARIES, "{} hosts", inv.len());
    let all = inv.summaries(&rules);
    assert_eq!(all.len(), inv.len());
    let addrs: Vec<std::net::IpAddr> = all.iter().map(|s| s.host.parse().unwrap()).collect();
    let mut sorted = addrs.clone();
    sorted.sort();
    assert_eq!(addrs, sorted, "summaries in address order");
    assert!(addrs.iter().any(|a| a.is_ipv4()) && addrs.iter().any(|a| a.is_ipv6()));
    // The same summary as one host alone gives, everywhere in the order.
    for (i, s) in all.iter().enumerate().step_by(997) {
        let one = inv.summary(&rules, addrs[i]).unwrap();
        assert_eq!(
            serde_json::to_string(s).unwrap(),
            serde_json::to_string(&one).unwrap()
        );
    }
}
