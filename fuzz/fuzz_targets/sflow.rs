//! sFlow v5: one datagram, the whole input.
#![no_main]

use flowprint::flow::sflow::{decode_sflow, is_sflow};
use libfuzzer_sys::fuzz_target;

mod common;
use std::net::{IpAddr, Ipv4Addr};

fuzz_target!(|data: &[u8]| {
    let _ = is_sflow(data);
    let exporter = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let mut emitted = 0u64;
    let result = decode_sflow(exporter, data, 1_700_000_000_000, &mut |f| {
        emitted += 1;
        common::check_flow(&f);
    });
    if let Ok(stats) = result {
        assert_eq!(stats.flows, emitted, "stats.flows vs flows handed out");
        assert_eq!(stats.samples, stats.flows + stats.skipped, "{stats:?}");
        assert!(stats.counter_samples <= stats.skipped, "{stats:?}");
    }
});
