//! Using flowprint as a library: compile rules, evaluate flows, print host verdicts.
//!
//! Run with `cargo run --example library`.

use flowprint::compiler::Compiler;
use flowprint::dns::DnsMap;
use flowprint::eval::LocalNets;
use flowprint::flow::Flow;
use flowprint::infer::HostTable;
use flowprint::scan::Scanner;
use std::sync::Arc;

fn main() {
    let mut compiler = Compiler::new();
    compiler.add_source(
        "example",
        "inline.rules",
        r#"
        rule windows-ncsi {
            title "Windows connectivity check"
            when  peer.domain == "www.msftconnecttest.com" and peer.port == 80
            then  os.family = "Windows" confidence 0.9
        }
        "#,
    );
    let compiled = compiler.compile();
    for d in &compiled.diagnostics {
        eprint!("{}", d.render(&compiled.sources));
    }

    let mut flow = Flow::new(
        "192.168.1.10".parse().unwrap(),
        50123,
        "13.107.4.52".parse().unwrap(),
        80,
        flowprint::flow::proto::TCP,
    );
    flow.dst_name = flowprint::flow::normalize_name("www.msftconnecttest.com");

    // The one per-flow path: match, record, learn the names records carry.
    let mut scanner = Scanner::new(
        compiled.ruleset.clone(),
        Arc::new(LocalNets::default()),
        HostTable::new(),
    );
    let mut dns = DnsMap::new();
    scanner.apply_learning(&flow, &mut dns);
    for host in scanner.hosts().summaries(scanner.rules()) {
        println!("{}", serde_json::to_string_pretty(&host).unwrap());
    }
}
