//! NetFlow v5 / v9 / IPFIX: several datagrams fed to ONE decoder, so that templates, options
//! data, pending data sets, withdrawals and expiry interact across datagrams and exporters.
//!
//! Input layout (see fuzz/README.md; `fuzz/seeds.py` frames the raw corpus datagrams):
//!
//! ```text
//! byte 0      decoder config: bit 0 = template timeout on, bits 1-3 = pending_max / 2
//!             (0 = default 64), bits 4-7 = timeout in seconds
//! then, repeated until the input ends:
//!   u16 BE    bits 14-15 = exporter (4 addresses), bits 0-13 = datagram length (clamped)
//!   bytes     the datagram
//! ```
#![no_main]

use flowprint::flow::netflow::{Decoder, DecoderConfig};
use libfuzzer_sys::fuzz_target;

mod common;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const EXPORTERS: [IpAddr; 4] = [
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
];

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, mut rest)) = data.split_first() else {
        return;
    };
    let mut config = DecoderConfig::default();
    if cfg & 1 != 0 {
        config.template_timeout_ms = Some(i64::from(cfg >> 4) * 1000);
    }
    let pending = usize::from((cfg >> 1) & 7);
    if pending != 0 {
        config.pending_max = pending * 2;
    }
    let mut decoder = Decoder::with_config(config);
    while rest.len() >= 2 {
        let head = u16::from_be_bytes([rest[0], rest[1]]);
        rest = &rest[2..];
        let exporter = EXPORTERS[usize::from(head >> 14)];
        let len = usize::from(head & 0x3fff).min(rest.len());
        let (datagram, tail) = rest.split_at(len);
        rest = tail;
        let _ = Decoder::is_netflow(datagram);
        let mut emitted = 0u64;
        let result = decoder.decode(exporter, datagram, &mut |f| {
            emitted += 1;
            common::check_flow(&f);
        });
        if let Ok(n) = result {
            // Documented: the number of flows handed out. It may undercount (a set that fails
            // half-way), but it must never claim flows that were not handed out.
            assert!(n <= emitted, "decode returned {n}, handed out {emitted}");
        }
    }
    let _ = decoder.pending();
    let _ = decoder.stats().len();
});
