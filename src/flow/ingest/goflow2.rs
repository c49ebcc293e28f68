//! goflow2 JSON lines: v2's snake_case keys (`src_addr`, `time_flow_start_ns`, ...) and the
//! CamelCase keys of goflow / goflow2 v1 (`SrcAddr`, `TimeFlowStart`, ...).
//!
//! Counters are taken as exported (goflow2 does not scale them); `sampling_rate` goes to
//! [`Flow::sampling`] with 0 read as 1. ICMP type and code go to `dst_port` as type*256+code
//! when the record's own `dst_port` is 0.

use serde::Deserialize;

use super::value::{FieldError, JsonError, Scalar};
use crate::flow::time::parse_timestamp;
use crate::flow::{Flow, proto};

/// The goflow2 keys flowprint uses, under both namings; unknown keys are ignored.
#[derive(Deserialize)]
#[serde(expecting = "a goflow2 JSON object")]
struct Record<'a> {
    #[serde(borrow, alias = "TimeFlowStartNs")]
    time_flow_start_ns: Option<Scalar<'a>>,
    #[serde(borrow, alias = "TimeFlowEndNs")]
    time_flow_end_ns: Option<Scalar<'a>>,
    #[serde(borrow, rename = "TimeFlowStartMs", alias = "time_flow_start_ms")]
    time_flow_start_ms: Option<Scalar<'a>>,
    #[serde(borrow, rename = "TimeFlowEndMs", alias = "time_flow_end_ms")]
    time_flow_end_ms: Option<Scalar<'a>>,
    #[serde(borrow, rename = "TimeFlowStart")]
    time_flow_start: Option<Scalar<'a>>,
    #[serde(borrow, rename = "TimeFlowEnd")]
    time_flow_end: Option<Scalar<'a>>,
    #[serde(borrow, alias = "SrcAddr")]
    src_addr: Option<Scalar<'a>>,
    #[serde(borrow, alias = "DstAddr")]
    dst_addr: Option<Scalar<'a>>,
    #[serde(borrow, alias = "SrcPort")]
    src_port: Option<Scalar<'a>>,
    #[serde(borrow, alias = "DstPort")]
    dst_port: Option<Scalar<'a>>,
    #[serde(borrow, alias = "Proto")]
    proto: Option<Scalar<'a>>,
    #[serde(borrow, alias = "Bytes")]
    bytes: Option<Scalar<'a>>,
    #[serde(borrow, alias = "Packets")]
    packets: Option<Scalar<'a>>,
    #[serde(borrow, alias = "TCPFlags")]
    tcp_flags: Option<Scalar<'a>>,
    #[serde(borrow, alias = "IPTTL")]
    ip_ttl: Option<Scalar<'a>>,
    #[serde(borrow, alias = "IcmpType")]
    icmp_type: Option<Scalar<'a>>,
    #[serde(borrow, alias = "IcmpCode")]
    icmp_code: Option<Scalar<'a>>,
    #[serde(borrow, alias = "SamplerAddress")]
    sampler_address: Option<Scalar<'a>>,
    #[serde(borrow, alias = "SamplingRate")]
    sampling_rate: Option<Scalar<'a>>,
}

/// The value of a present, non-null key.
fn get<'r, 'a>(v: &'r Option<Scalar<'a>>) -> Option<&'r Scalar<'a>> {
    v.as_ref().filter(|s| !matches!(s, Scalar::Null))
}

/// The unit of a goflow2 time key.
#[derive(Clone, Copy)]
enum Unit {
    Nanos,
    Millis,
    Seconds,
}

/// A time in `unit`: a number or a decimal string, or an RFC 3339 string (what goflow2's
/// `datetime` renderers write).
fn time(v: &Scalar, key: &'static str, unit: Unit) -> Result<i64, FieldError> {
    if let Scalar::Str(s) = v
        && let Some(ms) = parse_timestamp(s.trim())
    {
        return Ok(ms);
    }
    let n = v.int(key, "a timestamp number or RFC 3339 string")?;
    Ok(match unit {
        Unit::Nanos => n.div_euclid(1_000_000),
        Unit::Millis => n,
        Unit::Seconds => n.saturating_mul(1000),
    })
}

/// A protocol; goflow2 renders protocols it has no name for as `""`, read as 0.
fn protocol(v: &Scalar, key: &'static str) -> Result<u8, FieldError> {
    match v {
        Scalar::Str(s) if s.is_empty() || s.as_ref() == "unknown" => Ok(0),
        _ => v.proto(key),
    }
}

/// Parses one goflow2 JSON line into a flow.
pub(super) fn parse_line(line: &str) -> Result<Flow, JsonError> {
    if !line.trim_start().starts_with('{') {
        return Err(JsonError::NotObject);
    }
    let r: Record = serde_json::from_str(line)?;
    let src = get(&r.src_addr)
        .ok_or(JsonError::Missing { key: "src_addr" })?
        .addr("src_addr")?;
    let dst = get(&r.dst_addr)
        .ok_or(JsonError::Missing { key: "dst_addr" })?
        .addr("dst_addr")?;
    let start = if let Some(v) = get(&r.time_flow_start_ns) {
        Some(time(v, "time_flow_start_ns", Unit::Nanos)?)
    } else if let Some(v) = get(&r.time_flow_start_ms) {
        Some(time(v, "TimeFlowStartMs", Unit::Millis)?)
    } else if let Some(v) = get(&r.time_flow_start) {
        Some(time(v, "TimeFlowStart", Unit::Seconds)?)
    } else {
        None
    };
    let end = if let Some(v) = get(&r.time_flow_end_ns) {
        Some(time(v, "time_flow_end_ns", Unit::Nanos)?)
    } else if let Some(v) = get(&r.time_flow_end_ms) {
        Some(time(v, "TimeFlowEndMs", Unit::Millis)?)
    } else if let Some(v) = get(&r.time_flow_end) {
        Some(time(v, "TimeFlowEnd", Unit::Seconds)?)
    } else {
        None
    };
    let start_ms = start.or(end).unwrap_or(0);
    let u64_of = |v: &Option<Scalar>, key: &'static str| {
        get(v).map_or(Ok(0), |s| s.uint::<u64>(key, "a non-negative integer"))
    };
    let u8_of = |v: &Option<Scalar>, key: &'static str| {
        get(v).map_or(Ok(0), |s| s.uint::<u8>(key, "0-255"))
    };
    let port_of = |v: &Option<Scalar>, key: &'static str| {
        get(v).map_or(Ok(0), |s| s.uint::<u16>(key, "a port number 0-65535"))
    };
    let proto = get(&r.proto).map_or(Ok(0), |v| protocol(v, "proto"))?;
    let mut dst_port = port_of(&r.dst_port, "dst_port")?;
    let icmp_type = u8_of(&r.icmp_type, "icmp_type")?;
    let icmp_code = u8_of(&r.icmp_code, "icmp_code")?;
    if dst_port == 0 && matches!(proto, proto::ICMP | proto::ICMPV6) {
        dst_port = u16::from(icmp_type) << 8 | u16::from(icmp_code);
    }
    let exporter = match get(&r.sampler_address) {
        Some(Scalar::Str(s)) if s.is_empty() => None,
        Some(v) => Some(v.addr("sampler_address")?).filter(|a| !a.is_unspecified()),
        None => None,
    };
    let sampling = get(&r.sampling_rate).map_or(Ok(0), |v| {
        v.uint::<u32>("sampling_rate", "a sampling interval")
    })?;
    Ok(Flow {
        start_ms,
        end_ms: end.unwrap_or(start_ms),
        src,
        dst,
        src_port: port_of(&r.src_port, "src_port")?,
        dst_port,
        proto,
        bytes: u64_of(&r.bytes, "bytes")?,
        packets: u64_of(&r.packets, "packets")?,
        rev_bytes: 0,
        rev_packets: 0,
        tcp_flags: u8_of(&r.tcp_flags, "tcp_flags")?,
        src_ttl: Some(u8_of(&r.ip_ttl, "ip_ttl")?).filter(|&t| t != 0),
        dst_ttl: None,
        src_name: None,
        dst_name: None,
        exporter,
        sampling: if sampling == 0 { 1 } else { sampling },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v2_snake_case() {
        let line = r#"{"type":"IPFIX","time_received_ns":1681583295157626000,"sequence_num":2999,
            "sampling_rate":100,"sampler_address":"192.168.0.1",
            "time_flow_start_ns":1681583295157626000,"time_flow_end_ns":1681583296157626000,
            "bytes":1500,"packets":1,"src_addr":"fd01::1","dst_addr":"fd01::2","etype":"IPv6",
            "proto":"TCP","src_port":443,"dst_port":50001,"in_if":0,"out_if":0,
            "src_mac":"00:00:00:00:00:00","ip_ttl":57,"tcp_flags":18,"icmp_type":0,
            "icmp_code":0,"as_path":[],"bgp_communities":[],"layer_stack":["Ethernet","IPv6"]}"#
            .replace('\n', "");
        let f = parse_line(&line).unwrap();
        assert_eq!(f.start_ms, 1_681_583_295_157);
        assert_eq!(f.end_ms, 1_681_583_296_157);
        assert_eq!((f.src, f.dst), (ip("fd01::1"), ip("fd01::2")));
        assert_eq!((f.src_port, f.dst_port, f.proto), (443, 50001, 6));
        assert_eq!((f.bytes, f.packets, f.tcp_flags), (1500, 1, 18));
        assert_eq!(f.src_ttl, Some(57));
        assert_eq!(f.exporter, Some(ip("192.168.0.1")));
        assert_eq!(f.sampling, 100);
    }

    #[test]
    fn v1_camel_case_and_icmp() {
        let line = r#"{"Type":"NETFLOW_V5","TimeReceived":1581109435,"SamplingRate":0,
            "SamplerAddress":"127.0.0.1","TimeFlowStart":1581109434,"TimeFlowEnd":1581109435,
            "Bytes":84,"Packets":1,"SrcAddr":"192.168.1.159","DstAddr":"8.8.8.8","Etype":2048,
            "Proto":1,"SrcPort":0,"DstPort":0,"IPTTL":0,"TCPFlags":0,"IcmpType":8,"IcmpCode":0}"#
            .replace('\n', "");
        let f = parse_line(&line).unwrap();
        assert_eq!(
            (f.start_ms, f.end_ms),
            (1_581_109_434_000, 1_581_109_435_000)
        );
        assert_eq!((f.proto, f.dst_port), (1, 2048));
        assert_eq!((f.src_ttl, f.sampling), (None, 1));
        let ms = r#"{"TimeFlowStartMs":1581109434123,"SrcAddr":"::ffff:10.0.0.1","DstAddr":"10.0.0.2","Proto":"17"}"#;
        let f = parse_line(ms).unwrap();
        assert_eq!(
            (f.start_ms, f.end_ms, f.proto),
            (1_581_109_434_123, 1_581_109_434_123, 17)
        );
        assert_eq!(f.src, ip("10.0.0.1"));
    }

    #[test]
    fn unnamed_protocol_and_errors() {
        let f = parse_line(r#"{"src_addr":"10.0.0.1","dst_addr":"10.0.0.2","proto":""}"#).unwrap();
        assert_eq!(f.proto, 0);
        let e = parse_line(r#"{"src_addr":"10.0.0.1"}"#).unwrap_err();
        assert_eq!(e, JsonError::Missing { key: "dst_addr" });
        assert_eq!(e.to_string(), "missing `dst_addr`");
        let e = parse_line(r#"{"src_addr":"10.0.0.1","dst_addr":"","bytes":1}"#).unwrap_err();
        assert_eq!(
            e,
            JsonError::Field(FieldError::JsonText {
                key: "dst_addr",
                text: String::new(),
                expected: "an IP address"
            })
        );
        assert_eq!(
            e.to_string(),
            "bad `dst_addr` value ``: expected an IP address"
        );
        let e = parse_line(r#"{"src_addr":"10.0.0.1","dst_addr":"10.0.0.2","bytes":"many"}"#)
            .unwrap_err();
        assert_eq!(
            e,
            JsonError::Field(FieldError::JsonText {
                key: "bytes",
                text: "many".into(),
                expected: "a non-negative integer"
            })
        );
        assert_eq!(
            e.to_string(),
            "bad `bytes` value `many`: expected a non-negative integer"
        );
        let e = parse_line("[]").unwrap_err();
        assert_eq!(e, JsonError::NotObject);
    }
}
