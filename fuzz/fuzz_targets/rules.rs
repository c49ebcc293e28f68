//! The rule language: parse + compile + render every diagnostic (text and JSON). The input is
//! split at NUL bytes into up to four files of one pack (lists are shared by a pack's files).
//! When the rules compile, a few fixed flows are evaluated with the indexed evaluator and the
//! naive one (every rule against every flow), which must agree.
#![no_main]

use flowprint::compiler::Compiler;
use flowprint::eval::{Evaluator, LocalNets, eval_naive};
use flowprint::flow::{Flow, normalize_name, proto};
use flowprint::infer::HostTable;
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;

fn flows() -> Vec<Flow> {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let mut out = Vec::new();
    for (src, sp, dst, dp, p, name, ttl, bytes) in [
        (
            "192.168.1.20",
            50200,
            "17.253.53.207",
            80,
            proto::TCP,
            "captive.apple.com",
            64,
            300,
        ),
        (
            "10.0.0.5",
            40000,
            "142.250.74.99",
            443,
            proto::TCP,
            "connectivitycheck.gstatic.com",
            64,
            5000,
        ),
        (
            "192.168.1.30",
            51000,
            "13.107.4.52",
            80,
            proto::TCP,
            "www.msftconnecttest.com",
            128,
            420,
        ),
        (
            "10.0.0.7",
            123,
            "162.159.200.1",
            123,
            proto::UDP,
            "time.apple.com",
            64,
            76,
        ),
        (
            "172.16.0.9",
            5353,
            "224.0.0.251",
            5353,
            proto::UDP,
            "",
            255,
            120,
        ),
        (
            "fd00::20",
            40001,
            "2001:db8::53",
            53,
            proto::UDP,
            "ntp.ubuntu.com",
            64,
            90,
        ),
        ("10.0.0.8", 0, "8.8.8.8", 2048, proto::ICMP, "", 128, 84),
        (
            "10.0.0.9",
            44444,
            "10.0.0.10",
            22,
            proto::TCP,
            "",
            64,
            1 << 40,
        ),
    ] {
        let mut f = Flow::new(ip(src), sp, ip(dst), dp, p);
        f.dst_name = normalize_name(name);
        f.src_ttl = Some(ttl);
        f.bytes = bytes;
        f.packets = 3;
        f.rev_bytes = bytes / 2;
        f.rev_packets = 2;
        f.tcp_flags = if p == proto::TCP { 0x1b } else { 0 };
        f.end_ms = 1_500;
        out.push(f);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut compiler = Compiler::new();
    for (i, part) in text.split('\0').take(4).enumerate() {
        compiler.add_source("fuzz", &format!("fuzz{i}.rules"), part);
    }
    let compiled = compiler.compile();
    for d in &compiled.diagnostics {
        let _ = d.render(&compiled.sources);
        let _ = d.to_json(&compiled.sources);
    }
    if compiled.errors() != 0 || compiled.ruleset.len() == 0 {
        return;
    }
    let local = LocalNets::default();
    let mut evaluator = Evaluator::new(&compiled.ruleset, &local);
    let mut scanner = flowprint::scan::Scanner::new(
        compiled.ruleset.clone(),
        std::sync::Arc::new(local.clone()),
        HostTable::new(),
    );
    let mut dns = flowprint::dns::DnsMap::new();
    for flow in flows() {
        let mut indexed = Vec::new();
        evaluator.eval(&flow, |m| indexed.push(m));
        let mut naive = Vec::new();
        eval_naive(&compiled.ruleset, &local, &flow, |m| naive.push(m));
        indexed.sort();
        naive.sort();
        assert_eq!(
            indexed, naive,
            "indexed and naive evaluation differ on {flow:?}"
        );
        scanner.apply_learning(&flow, &mut dns);
    }
    let _ = scanner.hosts().summaries(&compiled.ruleset);
});
