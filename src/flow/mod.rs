//! The normalized flow record every input is turned into, and the readers that produce it.
//!
//! A [`Flow`] is direction-aware: `src`/`dst` are as exported. Rules do not speak of source and
//! destination but of the *host* (the local endpoint being fingerprinted) and the *peer*; the
//! evaluator maps a flow onto those roles once per local endpoint (see [`crate::eval`]).

pub mod capture;
pub mod ingest;
pub mod netflow;
pub mod sflow;
pub mod time;

use std::net::IpAddr;
use std::sync::Arc;

/// IANA protocol numbers that rules may name.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// GRE.
    pub const GRE: u8 = 47;
    /// ESP.
    pub const ESP: u8 = 50;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;

    /// Protocol names understood in rules and flow files, with their numbers.
    pub const NAMES: &[(&str, u8)] = &[
        ("icmp", ICMP),
        ("igmp", 2),
        ("tcp", TCP),
        ("udp", UDP),
        ("gre", GRE),
        ("esp", ESP),
        ("ah", 51),
        ("icmpv6", ICMPV6),
        ("ipv6-icmp", ICMPV6),
        ("icmp6", ICMPV6),
        ("sctp", SCTP),
    ];

    /// The number for a protocol name (case-insensitive), e.g. `tcp` → 6.
    pub fn from_name(name: &str) -> Option<u8> {
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, p)| p)
    }

    /// The usual lower-case name for a protocol number, if it has one.
    pub fn name(p: u8) -> Option<&'static str> {
        NAMES.iter().find(|&&(_, n)| n == p).map(|&(s, _)| s)
    }
}

/// TCP flag bits as carried in flow records (`tcpControlBits`).
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;

    /// Flag names as written in rules (lower case) and their bits.
    pub const NAMES: &[(&str, u8)] = &[
        ("fin", FIN),
        ("syn", SYN),
        ("rst", RST),
        ("psh", PSH),
        ("ack", ACK),
        ("urg", URG),
        ("ece", ECE),
        ("cwr", CWR),
    ];

    /// The bit of a flag name (case-insensitive).
    pub fn from_name(name: &str) -> Option<u8> {
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, b)| b)
    }

    /// nfdump's eight-character rendering, e.g. `...AP.S.` (CWR ECE URG ACK PSH RST SYN FIN).
    pub fn to_nfdump(bits: u8) -> String {
        const LETTERS: [(u8, char); 8] = [
            (CWR, 'C'),
            (ECE, 'E'),
            (URG, 'U'),
            (ACK, 'A'),
            (PSH, 'P'),
            (RST, 'R'),
            (SYN, 'S'),
            (FIN, 'F'),
        ];
        LETTERS
            .iter()
            .map(|&(b, c)| if bits & b != 0 { c } else { '.' })
            .collect()
    }
}

/// One flow record, normalized. Times are milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    /// First packet, ms since the epoch.
    pub start_ms: i64,
    /// Last packet, ms since the epoch.
    pub end_ms: i64,
    /// Source address as exported.
    pub src: IpAddr,
    /// Destination address as exported.
    pub dst: IpAddr,
    /// Source port (0 when the protocol has none).
    pub src_port: u16,
    /// Destination port (for ICMP, exporters put type*256+code here).
    pub dst_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Bytes from `src` to `dst`.
    pub bytes: u64,
    /// Packets from `src` to `dst`.
    pub packets: u64,
    /// Bytes from `dst` to `src` (biflows; 0 when the record is unidirectional).
    pub rev_bytes: u64,
    /// Packets from `dst` to `src` (biflows).
    pub rev_packets: u64,
    /// TCP flags of the packets from `src` (0 for other protocols or when not exported).
    pub tcp_flags: u8,
    /// Minimum IP TTL / hop limit of the packets from `src`, when the record carries it.
    pub src_ttl: Option<u8>,
    /// Minimum IP TTL / hop limit of the packets from `dst` (biflows), when carried.
    pub dst_ttl: Option<u8>,
    /// A host name the record carries for `src` (lower case, no trailing dot).
    pub src_name: Option<Arc<str>>,
    /// A host name the record carries for `dst` (TLS SNI, HTTP Host, DNS query...).
    pub dst_name: Option<Arc<str>>,
    /// Address of the exporter that sent the record, when known.
    pub exporter: Option<IpAddr>,
    /// Sampling interval already applied to bytes/packets (1 = unsampled).
    pub sampling: u32,
}

impl Flow {
    /// A TCP/UDP flow with the given endpoints and all counters zero; handy in tests and examples.
    pub fn new(src: IpAddr, src_port: u16, dst: IpAddr, dst_port: u16, proto: u8) -> Flow {
        Flow {
            start_ms: 0,
            end_ms: 0,
            src,
            dst,
            src_port,
            dst_port,
            proto,
            bytes: 0,
            packets: 0,
            rev_bytes: 0,
            rev_packets: 0,
            tcp_flags: 0,
            src_ttl: None,
            dst_ttl: None,
            src_name: None,
            dst_name: None,
            exporter: None,
            sampling: 1,
        }
    }

    /// Duration in milliseconds (0 when the end precedes the start).
    pub fn duration_ms(&self) -> u64 {
        self.end_ms.saturating_sub(self.start_ms).max(0) as u64
    }
}

/// Lower-cases a host name and strips one trailing dot, as names are compared in rules.
pub fn normalize_name(name: &str) -> Option<Arc<str>> {
    let n = name.trim().trim_end_matches('.');
    if n.is_empty() {
        return None;
    }
    if n.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Arc::from(n.to_ascii_lowercase()))
    } else {
        Some(Arc::from(n))
    }
}
