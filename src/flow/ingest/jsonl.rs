//! flowprint's own JSON lines schema: one object per line, documented in
//! `docs/flow-schema.md`. [`flow_to_json`] writes it; [`parse_line`] reads it back.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::value::{FieldError, JsonError, Scalar};
use crate::flow::time::format_rfc3339;
use crate::flow::{Flow, proto, tcp_flags};

/// The keys of one flowprint JSON record; unknown keys are ignored.
#[derive(Deserialize)]
#[serde(expecting = "a JSON object with flow keys")]
struct Record<'a> {
    #[serde(borrow)]
    start: Option<Scalar<'a>>,
    #[serde(borrow)]
    end: Option<Scalar<'a>>,
    #[serde(borrow)]
    src: Option<Scalar<'a>>,
    #[serde(borrow)]
    dst: Option<Scalar<'a>>,
    #[serde(borrow)]
    src_port: Option<Scalar<'a>>,
    #[serde(borrow)]
    dst_port: Option<Scalar<'a>>,
    #[serde(borrow)]
    proto: Option<Scalar<'a>>,
    #[serde(borrow)]
    bytes: Option<Scalar<'a>>,
    #[serde(borrow)]
    packets: Option<Scalar<'a>>,
    #[serde(borrow)]
    rev_bytes: Option<Scalar<'a>>,
    #[serde(borrow)]
    rev_packets: Option<Scalar<'a>>,
    #[serde(borrow)]
    tcp_flags: Option<Scalar<'a>>,
    #[serde(borrow)]
    src_ttl: Option<Scalar<'a>>,
    #[serde(borrow)]
    dst_ttl: Option<Scalar<'a>>,
    #[serde(borrow)]
    src_name: Option<Scalar<'a>>,
    #[serde(borrow)]
    dst_name: Option<Scalar<'a>>,
    #[serde(borrow)]
    exporter: Option<Scalar<'a>>,
    #[serde(borrow)]
    sampling: Option<Scalar<'a>>,
}

/// `Some(f(value))` for a present, non-null key.
fn opt<'a, T>(
    v: &Option<Scalar<'a>>,
    f: impl FnOnce(&Scalar<'a>) -> Result<T, FieldError>,
) -> Result<Option<T>, FieldError> {
    match v {
        None | Some(Scalar::Null) => Ok(None),
        Some(s) => f(s).map(Some),
    }
}

const PORT: &str = "a port number 0-65535";
const COUNT: &str = "a non-negative integer";
const TTL: &str = "a TTL 0-255";

/// Parses one line of flowprint JSON into a flow.
pub(super) fn parse_line(line: &str) -> Result<Flow, JsonError> {
    if !line.trim_start().starts_with('{') {
        return Err(JsonError::NotObject);
    }
    let r: Record = serde_json::from_str(line)?;
    let src = opt(&r.src, |v| v.addr("src"))?.ok_or(JsonError::Missing { key: "src" })?;
    let dst = opt(&r.dst, |v| v.addr("dst"))?.ok_or(JsonError::Missing { key: "dst" })?;
    let start = opt(&r.start, |v| v.time_ms("start"))?.unwrap_or(0);
    let end = opt(&r.end, |v| v.time_ms("end"))?.unwrap_or(start);
    let count = |v: &Option<Scalar>, key: &'static str| opt(v, |s| s.uint::<u64>(key, COUNT));
    let ttl = |v: &Option<Scalar>, key: &'static str| opt(v, |s| s.uint::<u8>(key, TTL));
    Ok(Flow {
        start_ms: start,
        end_ms: end,
        src,
        dst,
        src_port: opt(&r.src_port, |v| v.uint("src_port", PORT))?.unwrap_or(0),
        dst_port: opt(&r.dst_port, |v| v.uint("dst_port", PORT))?.unwrap_or(0),
        proto: opt(&r.proto, |v| v.proto("proto"))?.unwrap_or(0),
        bytes: count(&r.bytes, "bytes")?.unwrap_or(0),
        packets: count(&r.packets, "packets")?.unwrap_or(0),
        rev_bytes: count(&r.rev_bytes, "rev_bytes")?.unwrap_or(0),
        rev_packets: count(&r.rev_packets, "rev_packets")?.unwrap_or(0),
        tcp_flags: opt(&r.tcp_flags, |v| v.tcp_flags("tcp_flags"))?.unwrap_or(0),
        src_ttl: ttl(&r.src_ttl, "src_ttl")?,
        dst_ttl: ttl(&r.dst_ttl, "dst_ttl")?,
        src_name: opt(&r.src_name, |v| v.name("src_name"))?.flatten(),
        dst_name: opt(&r.dst_name, |v| v.name("dst_name"))?.flatten(),
        exporter: opt(&r.exporter, |v| v.addr("exporter"))?,
        sampling: opt(&r.sampling, |v| {
            v.uint::<u32>("sampling", "a sampling interval")
        })?
        .filter(|&s| s != 0)
        .unwrap_or(1),
    })
}

/// A flow as one object of flowprint's JSON schema: times as RFC 3339, `proto` as its lower-case
/// name when it has one (else the number), `tcp_flags` as nfdump letters (`...AP.S.`); fields
/// that are `None` are left out. [`InputFormat::Jsonl`](super::InputFormat::Jsonl) reads it back
/// to an equal flow.
pub fn flow_to_json(flow: &Flow) -> Value {
    let mut m = Map::new();
    m.insert("start".into(), format_rfc3339(flow.start_ms).into());
    m.insert("end".into(), format_rfc3339(flow.end_ms).into());
    m.insert("src".into(), flow.src.to_string().into());
    m.insert("dst".into(), flow.dst.to_string().into());
    m.insert("src_port".into(), flow.src_port.into());
    m.insert("dst_port".into(), flow.dst_port.into());
    m.insert(
        "proto".into(),
        match proto::name(flow.proto) {
            Some(name) => name.into(),
            None => flow.proto.into(),
        },
    );
    m.insert("bytes".into(), flow.bytes.into());
    m.insert("packets".into(), flow.packets.into());
    m.insert("rev_bytes".into(), flow.rev_bytes.into());
    m.insert("rev_packets".into(), flow.rev_packets.into());
    m.insert(
        "tcp_flags".into(),
        tcp_flags::to_nfdump(flow.tcp_flags).into(),
    );
    if let Some(t) = flow.src_ttl {
        m.insert("src_ttl".into(), t.into());
    }
    if let Some(t) = flow.dst_ttl {
        m.insert("dst_ttl".into(), t.into());
    }
    if let Some(n) = &flow.src_name {
        m.insert("src_name".into(), n.as_ref().into());
    }
    if let Some(n) = &flow.dst_name {
        m.insert("dst_name".into(), n.as_ref().into());
    }
    if let Some(a) = flow.exporter {
        m.insert("exporter".into(), a.to_string().into());
    }
    m.insert("sampling".into(), flow.sampling.into());
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::normalize_name;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reads_every_key() {
        let line = r#"{"start":"2019-06-12T10:00:01Z","end":1560333601250,"src":"10.0.0.5",
            "dst":"2001:db8::1","src_port":"50000","dst_port":443,"proto":"TCP","bytes":1200,
            "packets":10,"rev_bytes":64000,"rev_packets":50,"tcp_flags":["syn","ack","fin"],
            "src_ttl":64,"dst_ttl":52,"src_name":null,"dst_name":"WWW.Example.COM.",
            "exporter":"192.0.2.1","sampling":0,"comment":{"any":["thing"]}}"#
            .replace('\n', "");
        let f = parse_line(&line).unwrap();
        assert_eq!(f.start_ms, 1_560_333_601_000);
        assert_eq!(f.end_ms, 1_560_333_601_250);
        assert_eq!((f.src, f.dst), (ip("10.0.0.5"), ip("2001:db8::1")));
        assert_eq!((f.src_port, f.dst_port, f.proto), (50000, 443, 6));
        assert_eq!(
            (f.bytes, f.packets, f.rev_bytes, f.rev_packets),
            (1200, 10, 64000, 50)
        );
        assert_eq!(
            f.tcp_flags,
            tcp_flags::SYN | tcp_flags::ACK | tcp_flags::FIN
        );
        assert_eq!((f.src_ttl, f.dst_ttl), (Some(64), Some(52)));
        assert_eq!(f.src_name, None);
        assert_eq!(f.dst_name.as_deref(), Some("www.example.com"));
        assert_eq!(f.exporter, Some(ip("192.0.2.1")));
        assert_eq!(f.sampling, 1);
    }

    #[test]
    fn minimal_record_and_defaults() {
        let f = parse_line(r#"{"src":"10.0.0.1","dst":"10.0.0.2","start":5}"#).unwrap();
        let mut want = Flow::new(ip("10.0.0.1"), 0, ip("10.0.0.2"), 0, 0);
        want.start_ms = 5;
        want.end_ms = 5;
        assert_eq!(f, want);
    }

    #[test]
    fn precise_errors() {
        let text = |key, text: &str, expected| {
            JsonError::Field(FieldError::JsonText {
                key,
                text: text.into(),
                expected,
            })
        };
        let number = |key, number: &str, expected| {
            JsonError::Field(FieldError::JsonNumber {
                key,
                number: number.into(),
                expected,
            })
        };
        let syntax = |column, message: &str| JsonError::Syntax {
            column,
            message: message.into(),
        };
        let cases = [
            (
                r#"{"dst":"10.0.0.2"}"#,
                JsonError::Missing { key: "src" },
                "missing `src`",
            ),
            (
                r#"{"src":"1.2.3","dst":"10.0.0.2"}"#,
                text("src", "1.2.3", "an IP address"),
                "bad `src` value `1.2.3`: expected an IP address",
            ),
            (
                r#"{"src":"10.0.0.1","dst":"10.0.0.2","dst_port":70000}"#,
                number("dst_port", "70000", PORT),
                "bad `dst_port` value 70000: expected a port number 0-65535",
            ),
            (
                r#"{"src":"10.0.0.1","dst":"10.0.0.2","proto":"tcpx"}"#,
                text("proto", "tcpx", "a protocol name or number"),
                "bad `proto` value `tcpx`: expected a protocol name or number",
            ),
            (
                r#"{"src":"10.0.0.1","dst":"10.0.0.2","tcp_flags":["syn","nope"]}"#,
                text("tcp_flags", "nope", "a TCP flag name like `syn`"),
                "bad `tcp_flags` value `nope`: expected a TCP flag name like `syn`",
            ),
            (
                r#"{"src":"10.0.0.1","dst":"10.0.0.2","start":"2019-13-01T00:00:00Z"}"#,
                text(
                    "start",
                    "2019-13-01T00:00:00Z",
                    "an RFC 3339 time or integer milliseconds",
                ),
                "bad `start` value `2019-13-01T00:00:00Z`: expected an RFC 3339 time or \
                 integer milliseconds",
            ),
            (
                r#"{"src":"10.0.0.1","dst":"10.0.0.2","bytes":-1}"#,
                number("bytes", "-1", COUNT),
                "bad `bytes` value -1: expected a non-negative integer",
            ),
            (
                r#"{"src":"10.0.0.1","src":"10.0.0.1"}"#,
                syntax(23, "duplicate field `src`"),
                "invalid JSON at column 23: duplicate field `src`",
            ),
            (
                r#"{"src":"10.0.0.1""#,
                syntax(17, "EOF while parsing an object"),
                "invalid JSON at column 17: EOF while parsing an object",
            ),
            (
                "[1]",
                JsonError::NotObject,
                "not a JSON object (a record line starts with `{`)",
            ),
        ];
        for (line, kind, message) in cases {
            let e = parse_line(line).unwrap_err();
            assert_eq!(e, kind, "{line}");
            assert_eq!(e.to_string(), message, "{line}");
        }
    }

    #[test]
    fn json_round_trip() {
        let mut f = Flow::new(ip("192.168.1.13"), 53096, ip("178.62.197.130"), 443, 6);
        f.start_ms = 1_581_109_488_000;
        f.end_ms = 1_581_109_496_439;
        f.bytes = 24071;
        f.packets = 316;
        f.tcp_flags = 0x1f;
        f.src_ttl = Some(64);
        f.dst_name = normalize_name("example.org");
        f.exporter = Some(ip("127.0.0.1"));
        f.sampling = 100;
        let v = flow_to_json(&f);
        assert_eq!(v["proto"], "tcp");
        assert_eq!(v["tcp_flags"], "...APRSF");
        assert_eq!(v["end"], "2020-02-07T21:04:56.439Z");
        assert!(v.get("dst_ttl").is_none() && v.get("src_name").is_none());
        assert_eq!(parse_line(&v.to_string()).unwrap(), f);

        let mut g = Flow::new(ip("::1"), 0, ip("::2"), 0, 41);
        g.start_ms = -1;
        g.end_ms = -1;
        let v = flow_to_json(&g);
        assert_eq!(v["proto"], 41);
        assert_eq!(parse_line(&v.to_string()).unwrap(), g);
    }
}
