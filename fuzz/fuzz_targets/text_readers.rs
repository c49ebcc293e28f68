//! The line readers of `flow::ingest::read_flows`: nfdump/NFStream CSV, goflow2 JSON, flowprint
//! JSON lines, and `Auto` detection (which also routes to the pcap, IPFIX-file and nfcapd
//! readers when the input starts with their magic).
#![no_main]

use flowprint::flow::ingest::{InputFormat, read_flows};
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    for format in [
        InputFormat::Auto,
        InputFormat::NfdumpCsv,
        InputFormat::Goflow2,
        InputFormat::Jsonl,
    ] {
        let (mut flows, mut errors) = (0u64, 0u64);
        let result = read_flows(
            data,
            "fuzz",
            format,
            &mut |f| {
                flows += 1;
                common::check_flow(&f);
            },
            &mut |e| {
                errors += 1;
                let _ = e.to_string();
            },
        );
        if let Ok(stats) = result {
            assert_eq!(stats.flows, flows, "{format:?} {stats:?}");
            assert_eq!(stats.skipped, errors, "{format:?} {stats:?}");
        }
    }
});
