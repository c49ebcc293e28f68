//! Tests of the inventory's bounds and of evidence carried across rulesets.

use super::*;
use crate::compiler::Compiler;
use crate::eval::LocalNets;
use crate::scan::Scanner;
use std::sync::Arc;

/// Applies `flows` through the one per-flow path into `inv`.
fn apply(inv: &mut Inventory, rules: &Arc<Ruleset>, flows: impl IntoIterator<Item = Flow>) {
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
            Inventory::with_config(InferConfig {
                max_hosts: max,
                ..Default::default()
            }),
        );
        let dns = crate::dns::DnsMap::new();
        let mut most = 0;
        for i in 0..2500u32 {
            s.apply(&flow(i, 4444, i64::from(i)), &dns);
            let inv = s.inventory();
            most = most.max(inv.len());
            assert!(inv.len() <= max, "{} hosts held with max {max}", inv.len());
            assert!(inv.dirty_len() <= inv.len(), "{}", inv.dirty_len());
            // The newest host is never the one evicted.
            assert!(inv.host(flow(i, 4444, 0).src).is_some());
        }
        let inv = s.inventory();
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
    let mut inv = Inventory::new();
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
    let mut only_a = Inventory::new();
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
    let mut again = Inventory::new();
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
    let mut inv = Inventory::new();
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
