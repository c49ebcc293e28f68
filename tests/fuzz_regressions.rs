//! Inputs found by fuzzing (`fuzz/`, see fuzz/README.md) that once made a decoder panic, kept
//! as byte strings so that `cargo test` (a debug build, with overflow checks) replays them.

use flowprint::flow::Flow;
use flowprint::flow::ingest::{InputFormat, flow_to_json, read_flows};
use flowprint::flow::netflow::Decoder;
use flowprint::flow::sflow::decode_sflow;
use std::net::{IpAddr, Ipv4Addr};

const EXPORTER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

/// The fuzz targets' check on every flow: `flow_to_json` output read back with
/// `InputFormat::Jsonl` is an equal flow (documented on `flow_to_json`).
fn assert_json_round_trip(f: &Flow) {
    let line = flow_to_json(f).to_string();
    let mut back = Vec::new();
    read_flows(
        line.as_bytes(),
        "round-trip",
        InputFormat::Jsonl,
        &mut |g| back.push(g),
        &mut |e| panic!("{e}: {line}"),
    )
    .unwrap();
    assert_eq!(back, std::slice::from_ref(f), "{line}");
}

fn sflow_flows(datagram: &[u8]) -> Vec<Flow> {
    let mut flows = Vec::new();
    let _ = decode_sflow(EXPORTER, datagram, 1_700_000_000_000, &mut |f| {
        flows.push(f)
    });
    flows
}

/// Decodes each datagram with one decoder; returns the flows' (start, end) times.
fn netflow_times(datagrams: &[&[u8]]) -> Vec<(i64, i64)> {
    let mut decoder = Decoder::new();
    let mut times = Vec::new();
    for d in datagrams {
        let _ = decoder.decode(EXPORTER, d, &mut |f| times.push((f.start_ms, f.end_ms)));
    }
    times
}

/// fuzz target `netflow`: an IPFIX `flowStartSeconds` (150) sent in 8 bytes with a value above
/// `i64::MAX / 1000` overflowed the conversion to milliseconds (`attempt to multiply with
/// overflow` in `Raw::set`). Found as a procera data set waiting for a mutated template.
#[test]
fn ipfix_flow_start_seconds_overflow() {
    let msg: &[u8] = b"\x00\x0a\x00\x38\x5f\x5e\x10\x00\x00\x00\x00\x01\x00\x00\x00\x00\
        \x00\x02\x00\x14\x01\x00\x00\x03\x00\x08\x00\x04\x00\x0c\x00\x04\x00\x96\x00\x08\
        \x01\x00\x00\x14\x0a\x00\x00\x01\x0a\x00\x00\x02\x7f\xff\xff\xff\xff\xff\xff\xff";
    assert_eq!(netflow_times(&[msg]).len(), 1);
    // NetFlow v9 reads field 150 the same way.
    let v9: &[u8] =
        b"\x00\x09\x00\x02\x00\x00\x00\x10\x5f\x5e\x10\x00\x00\x00\x00\x01\x00\x00\x00\x00\
        \x00\x00\x00\x14\x01\x00\x00\x03\x00\x08\x00\x04\x00\x0c\x00\x04\x00\x97\x00\x08\
        \x01\x00\x00\x14\x0a\x00\x00\x01\x0a\x00\x00\x02\x40\x00\x00\x00\x00\x00\x00\x00";
    assert_eq!(netflow_times(&[v9]).len(), 1);
}

/// An options record with `systemInitTimeMilliseconds` (160) near `i64::MAX`, then a data
/// record stamped with `flowStartSysUpTime` (22): boot time + uptime overflowed in
/// `Raw::time` (`attempt to add with overflow`). Found by reading the code around the previous
/// finding, not by the fuzzer; the same class of bug.
#[test]
fn ipfix_system_init_time_plus_uptime_overflow() {
    let msg: &[u8] = b"\x00\x0a\x00\x56\x5f\x5e\x10\x00\x00\x00\x00\x01\x00\x00\x00\x00\
        \x00\x03\x00\x12\x01\x01\x00\x02\x00\x01\x00\x95\x00\x04\x00\xa0\x00\x08\
        \x01\x01\x00\x10\x00\x00\x00\x00\x7f\xff\xff\xff\xff\xff\xff\xff\
        \x00\x02\x00\x14\x01\x00\x00\x03\x00\x08\x00\x04\x00\x0c\x00\x04\x00\x16\x00\x04\
        \x01\x00\x00\x10\x0a\x00\x00\x01\x0a\x00\x00\x02\x00\x00\x00\x01";
    assert_eq!(netflow_times(&[msg]).len(), 1);
}

/// fuzz target `sflow` (minimized): a raw Ethernet/IPv6 header whose destination is the
/// IPv4-mapped `::ffff:255.255.255.255`. The flow kept the IPv6 form, while every other reader
/// (and the JSON lines reader, on the way back) turns IPv4-mapped addresses into IPv4
/// (docs/flow-schema.md), so `flow_to_json` output read back was a different flow.
#[test]
fn sflow_ipv4_mapped_addresses_become_ipv4() {
    let found: &[u8] = b"\
        \x00\x00\x00\x05\x00\x00\x00\x01\x0a\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x2a\
        \x00\x36\xee\x80\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00\x00\x78\x00\x00\x00\x07\
        \x00\x00\x00\x03\x00\x00\x00\x05\x0f\x42\x40\x00\x00\x00\x00\x00\x00\x00\x00\x03\
        \x00\x00\x00\x04\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x50\x00\x00\x00\x01\
        \x00\x00\x00\x40\x00\x00\x00\x04\x00\x00\x00\x3e\x02\x00\x00\x00\x00\x01\x02\x00\
        \x00\x00\x00\x02\x86\xdd\x60\x00\x00\x00\x00\x08\x11\x09\x01\xb8\x40\x20\x00\x00\
        \x00\x00\x00\x00\x05\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
        \xff\xff\xff\xff\xff\xff\x00\x16\x00\x00\x00\x00\x00\x00\x00\x00";
    let flows = sflow_flows(found);
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].dst, IpAddr::V4(Ipv4Addr::BROADCAST));
    assert_json_round_trip(&flows[0]);

    // The same through a sampled-IPv6 record (format 4) and an IPv4-mapped agent address.
    let record: &[u8] = b"\
        \x00\x00\x00\x05\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\
        \x0a\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x2a\x00\x36\xee\x80\x00\x00\x00\x01\
        \x00\x00\x00\x01\x00\x00\x00\x60\x00\x00\x00\x07\x00\x00\x00\x03\x00\x00\x00\x0a\
        \x00\x0f\x42\x40\x00\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x04\x00\x00\x00\x01\
        \x00\x00\x00\x04\x00\x00\x00\x38\x00\x00\x05\xdc\x00\x00\x00\x11\x00\x00\x00\x00\
        \x00\x00\x00\x00\x00\x00\xff\xff\x0a\x00\x00\x05\x20\x01\x0d\xb8\x00\x00\x00\x00\
        \x00\x00\x00\x00\x00\x00\x00\x53\x00\x00\x14\xe9\x00\x00\x00\x35\x00\x00\x00\x00\
        \x00\x00\x00\x00";
    let flows = sflow_flows(record);
    assert_eq!(flows.len(), 1);
    let f = &flows[0];
    assert_eq!(f.src, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)));
    assert_eq!(f.dst, "2001:db8::53".parse::<IpAddr>().unwrap());
    assert_eq!(f.exporter, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
    assert_json_round_trip(f);
}
