//! sFlow version 5 decoding into normalized [`Flow`]s.
//!
//! sFlow does not export flows but single sampled packets: each flow sample (format 1) or
//! expanded flow sample (format 3) becomes one [`Flow`] standing for `sampling_rate` packets.
//! The packet is read from the raw packet header record (format 1; Ethernet with VLAN tags,
//! IPv4 or IPv6 header protocols) down to addresses, protocol, ports (ICMP type and code as
//! `type * 256 + code` in the destination port), TCP flags and TTL; when a sample has no
//! usable raw header, the sampled IPv4 (3) or IPv6 (4) record is used instead (no TTL then).
//! `bytes` is the sampled frame length (record 3/4: the IP packet length) times the sampling
//! rate — for Ethernet that length includes the link header and FCS, unlike NetFlow's L3
//! byte counts. sFlow has no flow times: `start_ms` and `end_ms` are the receive time the
//! caller passes.
//!
//! Counter samples, samples and records of enterprises other than 0, and flow samples without
//! a usable packet are counted in [`SflowStats`] and skipped. Every length is checked against
//! the datagram; a sample or record that overruns it ends the datagram with an error (flows
//! already handed out stay handed out). Nothing panics and nothing is allocated from a length
//! field.
//!
//! No sFlow exporter was available when this was written (softflowd does not speak sFlow): the
//! reference is the sFlow version 5 specification (sflow.org/sflow_version_5.txt), and the
//! tests build datagrams field by field from it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::capture::{Ip, be16, ethernet_payload, parse_ip};
use super::{Flow, proto};

/// Counts of one [`decode_sflow`] call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SflowStats {
    /// Sample records in the datagram, of every kind.
    pub samples: u64,
    /// Flows handed out (one per usable flow sample).
    pub flows: u64,
    /// Samples that gave no flow: counter samples, unknown or enterprise samples, flow samples
    /// without a usable packet record.
    pub skipped: u64,
    /// Of `skipped`, the counter samples (formats 2 and 4).
    pub counter_samples: u64,
    /// Flow records of enterprises other than 0 inside flow samples (skipped).
    pub enterprise_records: u64,
}

/// Whether `payload` starts with an sFlow version 5 datagram header (version 5 as a 32-bit
/// word and a known agent address type, with room for the rest of the header).
pub fn is_sflow(payload: &[u8]) -> bool {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(
            payload.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    let addr_len = match word(4) {
        Some(0) => 0,
        Some(1) => 4,
        Some(2) => 16,
        _ => return false,
    };
    word(0) == Some(5) && payload.len() >= 8 + addr_len + 16
}

/// Why an sFlow datagram could not be decoded, and where (offsets are datagram offsets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SflowError {
    /// A field runs past the end of the datagram (or of the record holding it).
    #[error("sFlow: {what} at byte {offset} needs {need} bytes, {left} left")]
    Truncated {
        /// The field.
        what: &'static str,
        /// Its offset.
        offset: usize,
        /// Bytes it needs.
        need: usize,
        /// Bytes left.
        left: usize,
    },
    /// Not version 5.
    #[error("sFlow: version {0}, expected 5")]
    Version(u32),
    /// An agent address type other than 0 (unknown), 1 (IPv4) or 2 (IPv6), at byte 4.
    #[error("sFlow: unknown agent address type {0}")]
    AgentAddressType(u32),
}

impl SflowError {
    /// The datagram offset the error is about.
    pub fn offset(&self) -> usize {
        match self {
            SflowError::Truncated { offset, .. } => *offset,
            SflowError::Version(_) => 0,
            SflowError::AgentAddressType(_) => 4,
        }
    }
}

/// Decodes one sFlow v5 datagram received from `exporter` at `now_ms`, calling `out` for each
/// sampled packet. The flows' `exporter` is the agent address of the datagram (or `exporter`
/// when the agent address is unknown or unspecified).
pub fn decode_sflow(
    exporter: IpAddr,
    payload: &[u8],
    now_ms: i64,
    out: &mut dyn FnMut(Flow),
) -> Result<SflowStats, SflowError> {
    let mut x = Xdr::new(payload);
    let version = x.u32("version")?;
    if version != 5 {
        return Err(SflowError::Version(version));
    }
    let agent = match x.u32("agent address type")? {
        0 => None,
        1 => Some(IpAddr::V4(Ipv4Addr::from(x.array::<4>("agent address")?))),
        2 => Some(IpAddr::V6(Ipv6Addr::from(x.array::<16>("agent address")?))),
        t => return Err(SflowError::AgentAddressType(t)),
    };
    let exporter = agent.filter(|a| !a.is_unspecified()).unwrap_or(exporter);
    x.take(12, "header")?; // sub-agent id, sequence number, uptime
    let count = x.u32("sample count")?;
    let mut stats = SflowStats::default();
    for _ in 0..count {
        let (enterprise, format, mut sample) = x.record("sample")?;
        stats.samples += 1;
        let flow = match (enterprise, format) {
            (0, 1) => flow_sample(&mut sample, false, &mut stats)?,
            (0, 3) => flow_sample(&mut sample, true, &mut stats)?,
            (0, 2) | (0, 4) => {
                stats.counter_samples += 1;
                None
            }
            _ => None,
        };
        match flow {
            Some(p) => {
                stats.flows += 1;
                out(p.to_flow(exporter, now_ms));
            }
            None => stats.skipped += 1,
        }
    }
    Ok(stats)
}

/// A big-endian (XDR) reader over part of a datagram; offsets in errors are datagram offsets.
struct Xdr<'a> {
    b: &'a [u8],
    pos: usize,
    /// Offset of `b` in the datagram.
    base: usize,
}

impl<'a> Xdr<'a> {
    fn new(b: &'a [u8]) -> Xdr<'a> {
        Xdr { b, pos: 0, base: 0 }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SflowError> {
        let Some(s) = self
            .pos
            .checked_add(n)
            .and_then(|end| self.b.get(self.pos..end))
        else {
            return Err(SflowError::Truncated {
                what,
                offset: self.base + self.pos,
                need: n,
                left: self.b.len() - self.pos,
            });
        };
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], SflowError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, SflowError> {
        Ok(u32::from_be_bytes(self.array::<4>(what)?))
    }

    /// A `data_format` word and a length-prefixed body: (enterprise, format, body).
    fn record(&mut self, what: &'static str) -> Result<(u32, u32, Xdr<'a>), SflowError> {
        let tag = self.u32(what)?;
        let len = self.u32(what)? as usize;
        let base = self.base + self.pos;
        let b = self.take(len, what)?;
        Ok((tag >> 12, tag & 0xfff, Xdr { b, pos: 0, base }))
    }
}

/// What one sampled packet says, before it becomes a [`Flow`].
#[derive(Debug, Clone, Copy)]
struct Packet {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    src_port: u16,
    dst_port: u16,
    tcp_flags: u8,
    ttl: Option<u8>,
    /// Frame (or IP packet) length in bytes.
    length: u64,
    sampling: u32,
}

impl Packet {
    fn to_flow(self, exporter: IpAddr, now_ms: i64) -> Flow {
        // IPv4-mapped IPv6 addresses become IPv4, as in every other reader (flow-schema.md).
        let (src, dst) = (self.src.to_canonical(), self.dst.to_canonical());
        let mut f = Flow::new(src, self.src_port, dst, self.dst_port, self.proto);
        f.start_ms = now_ms;
        f.end_ms = now_ms;
        f.packets = u64::from(self.sampling);
        f.bytes = self.length * u64::from(self.sampling);
        f.tcp_flags = self.tcp_flags;
        f.src_ttl = self.ttl;
        f.exporter = Some(exporter.to_canonical());
        f.sampling = self.sampling;
        f
    }
}

/// A flow sample (expanded or not): the packet of its raw header record, else of its IPv4/IPv6
/// record.
fn flow_sample(
    s: &mut Xdr<'_>,
    expanded: bool,
    stats: &mut SflowStats,
) -> Result<Option<Packet>, SflowError> {
    // sequence_number, source_id (expanded: source_id_type, source_id_index)
    s.take(if expanded { 12 } else { 8 }, "flow sample")?;
    // A rate of 0 is invalid; read it as unsampled rather than as no packets.
    let sampling = s.u32("sampling rate")?.max(1);
    // sample_pool, drops, input, output (expanded: input and output as format + value)
    s.take(if expanded { 24 } else { 16 }, "flow sample")?;
    let count = s.u32("flow record count")?;
    let (mut header, mut fallback) = (None, None);
    for _ in 0..count {
        let (enterprise, format, mut r) = s.record("flow record")?;
        match (enterprise, format) {
            (0, 1) if header.is_none() => header = sampled_header(&mut r)?,
            (0, 3) if fallback.is_none() => fallback = Some(sampled_ip(&mut r, false)?),
            (0, 4) if fallback.is_none() => fallback = Some(sampled_ip(&mut r, true)?),
            (0, _) => {} // Ethernet, extended switch/router/gateway/user... records
            _ => stats.enterprise_records += 1,
        }
    }
    Ok(header.or(fallback).map(|p| Packet { sampling, ..p }))
}

/// Raw packet header record: `None` when the header is not (or not enough) IPv4/IPv6.
fn sampled_header(r: &mut Xdr<'_>) -> Result<Option<Packet>, SflowError> {
    let protocol = r.u32("header protocol")?;
    let frame_length = r.u32("frame length")?;
    r.take(4, "stripped")?;
    let len = r.u32("header length")? as usize;
    let header = r.take(len, "sampled header")?;
    let packet = match protocol {
        1 => ethernet_payload(header),
        11 | 12 => Some(header),
        _ => None,
    };
    let Some(ip) = packet.and_then(parse_ip) else {
        return Ok(None);
    };
    let length = match frame_length {
        0 => u64::from(ip.total_len),
        n => u64::from(n),
    };
    let (src_port, dst_port, tcp_flags) = transport(&ip);
    Ok(Some(Packet {
        src: ip.src,
        dst: ip.dst,
        proto: ip.proto,
        src_port,
        dst_port,
        tcp_flags,
        ttl: Some(ip.ttl),
        length,
        sampling: 1,
    }))
}

/// Ports and TCP flags from the captured part of the transport header (zeros where absent).
fn transport(ip: &Ip<'_>) -> (u16, u16, u8) {
    if ip.later_fragment {
        return (0, 0, 0);
    }
    let l4 = ip.l4;
    match ip.proto {
        proto::TCP | proto::UDP | proto::SCTP | 136 => (
            be16(l4, 0).unwrap_or(0),
            be16(l4, 2).unwrap_or(0),
            if ip.proto == proto::TCP {
                l4.get(13).copied().unwrap_or(0)
            } else {
                0
            },
        ),
        proto::ICMP | proto::ICMPV6 => (0, be16(l4, 0).unwrap_or(0), 0),
        _ => (0, 0, 0),
    }
}

/// Sampled IPv4 (format 3) or IPv6 (format 4) record.
fn sampled_ip(r: &mut Xdr<'_>, v6: bool) -> Result<Packet, SflowError> {
    let length = r.u32("IP length")?;
    let protocol = r.u32("IP protocol")?;
    let (src, dst) = if v6 {
        let s = r.array::<16>("source address")?;
        let d = r.array::<16>("destination address")?;
        (IpAddr::from(s), IpAddr::from(d))
    } else {
        let s = r.array::<4>("source address")?;
        let d = r.array::<4>("destination address")?;
        (IpAddr::from(s), IpAddr::from(d))
    };
    let src_port = r.u32("source port")?;
    let dst_port = r.u32("destination port")?;
    let tcp_flags = r.u32("TCP flags")?;
    r.take(4, "type of service")?;
    Ok(Packet {
        src,
        dst,
        proto: u8::try_from(protocol).unwrap_or(u8::MAX),
        src_port: src_port as u16,
        dst_port: dst_port as u16,
        tcp_flags: tcp_flags as u8,
        ttl: None,
        length: u64::from(length),
        sampling: 1,
    })
}

#[cfg(test)]
mod tests {
    //! Datagrams built field by field from the sFlow v5 specification (sflow_version_5.txt):
    //! no sFlow exporter was available to record real ones.

    use super::*;
    use crate::flow::tcp_flags;

    const EXPORTER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 254));
    const NOW: i64 = 1_700_000_000_000;

    fn word(v: &mut Vec<u8>, x: u32) {
        v.extend_from_slice(&x.to_be_bytes());
    }

    /// `data_format` (enterprise << 12 | format), `length`, body: how samples and records are
    /// framed.
    fn tagged(enterprise: u32, format: u32, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        word(&mut v, enterprise << 12 | format);
        word(&mut v, body.len() as u32);
        v.extend_from_slice(body);
        v
    }

    /// The datagram header, then the samples.
    fn datagram(agent: Option<IpAddr>, samples: &[Vec<u8>]) -> Vec<u8> {
        let mut d = Vec::new();
        word(&mut d, 5); // version
        match agent {
            None => word(&mut d, 0), // address type UNKNOWN, no address bytes
            Some(IpAddr::V4(a)) => {
                word(&mut d, 1); // address type IP_V4
                d.extend_from_slice(&a.octets());
            }
            Some(IpAddr::V6(a)) => {
                word(&mut d, 2); // address type IP_V6
                d.extend_from_slice(&a.octets());
            }
        }
        word(&mut d, 0); // sub_agent_id
        word(&mut d, 42); // sequence_number
        word(&mut d, 3_600_000); // uptime, ms
        word(&mut d, samples.len() as u32); // number of samples
        for s in samples {
            d.extend_from_slice(s);
        }
        d
    }

    /// Flow sample (enterprise 0, format 1).
    fn flow_sample(rate: u32, records: &[Vec<u8>]) -> Vec<u8> {
        let mut b = Vec::new();
        word(&mut b, 7); // sequence_number
        word(&mut b, 3); // source_id: type 0 (ifIndex) << 24 | index 3
        word(&mut b, rate); // sampling_rate
        word(&mut b, 1_000_000); // sample_pool
        word(&mut b, 0); // drops
        word(&mut b, 3); // input ifIndex
        word(&mut b, 4); // output ifIndex
        word(&mut b, records.len() as u32); // number of flow records
        for r in records {
            b.extend_from_slice(r);
        }
        tagged(0, 1, &b)
    }

    /// Expanded flow sample (enterprise 0, format 3).
    fn expanded_sample(rate: u32, records: &[Vec<u8>]) -> Vec<u8> {
        let mut b = Vec::new();
        word(&mut b, 8); // sequence_number
        word(&mut b, 0); // source_id_type
        word(&mut b, 70_000); // source_id_index
        word(&mut b, rate); // sampling_rate
        word(&mut b, 9_000_000); // sample_pool
        word(&mut b, 0); // drops
        word(&mut b, 0); // input format
        word(&mut b, 70_000); // input value
        word(&mut b, 0); // output format
        word(&mut b, 70_001); // output value
        word(&mut b, records.len() as u32); // number of flow records
        for r in records {
            b.extend_from_slice(r);
        }
        tagged(0, 3, &b)
    }

    /// Raw packet header record (flow record format 1).
    fn raw_header(protocol: u32, frame_length: u32, header: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        word(&mut b, protocol); // header_protocol: 1 Ethernet, 11 IPv4, 12 IPv6
        word(&mut b, frame_length); // frame_length, before sampling
        word(&mut b, 4); // stripped (the FCS)
        word(&mut b, header.len() as u32); // header length
        b.extend_from_slice(header); // header bytes, padded to 4
        b.resize(b.len().next_multiple_of(4), 0);
        tagged(0, 1, &b)
    }

    /// Sampled IPv4 record (flow record format 3).
    fn ipv4_record(length: u32, protocol: u32, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut b = Vec::new();
        word(&mut b, length); // length of the IP packet
        word(&mut b, protocol); // protocol
        b.extend_from_slice(&src); // src_ip
        b.extend_from_slice(&dst); // dst_ip
        word(&mut b, 51_000); // src_port
        word(&mut b, 443); // dst_port
        word(&mut b, 0x18); // tcp_flags: PSH ACK
        word(&mut b, 0); // tos
        tagged(0, 3, &b)
    }

    /// Ethernet header with one 802.1Q tag, then `payload`.
    fn ethernet_vlan(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2]; // dst, src MAC
        f.extend_from_slice(&0x8100u16.to_be_bytes()); // TPID
        f.extend_from_slice(&10u16.to_be_bytes()); // TCI: VLAN 10
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// IPv4 header (no options) with `l4` after it; `total` is the length field.
    fn ipv4(proto: u8, ttl: u8, src: [u8; 4], dst: [u8; 4], total: u16, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0]; // version 4, IHL 5; DSCP
        p.extend_from_slice(&total.to_be_bytes()); // total length
        p.extend_from_slice(&[0, 1, 0x40, 0]); // identification; DF, offset 0
        p.extend_from_slice(&[ttl, proto, 0, 0]); // TTL, protocol, checksum
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(l4);
        p
    }

    /// TCP header start: ports, sequence, ack, data offset, flags, window.
    fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&sport.to_be_bytes());
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&[0; 8]); // sequence, acknowledgement
        t.extend_from_slice(&[0x50, flags, 0xfa, 0xf0]); // offset 5, flags, window
        t.extend_from_slice(&[0; 4]); // checksum, urgent pointer
        t
    }

    fn decode(d: &[u8]) -> (Result<SflowStats, SflowError>, Vec<Flow>) {
        let mut flows = Vec::new();
        let r = decode_sflow(EXPORTER, d, NOW, &mut |f| flows.push(f));
        (r, flows)
    }

    fn ethernet_tcp_sample() -> Vec<u8> {
        let syn = tcp(49_152, 443, tcp_flags::SYN);
        let packet = ipv4(6, 128, [10, 0, 0, 5], [93, 184, 216, 34], 52, &syn);
        flow_sample(400, &[raw_header(1, 70, &ethernet_vlan(0x0800, &packet))])
    }

    #[test]
    fn raw_ethernet_header_becomes_one_flow() {
        let agent = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let d = datagram(Some(agent), &[ethernet_tcp_sample()]);
        assert!(is_sflow(&d));
        let (r, flows) = decode(&d);
        let stats = r.unwrap();
        assert_eq!((stats.samples, stats.flows, stats.skipped), (1, 1, 0));
        let f = &flows[0];
        assert_eq!(f.src, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(f.dst, IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34)));
        assert_eq!((f.src_port, f.dst_port, f.proto), (49_152, 443, 6));
        assert_eq!((f.tcp_flags, f.src_ttl), (tcp_flags::SYN, Some(128)));
        assert_eq!((f.packets, f.bytes, f.sampling), (400, 70 * 400, 400));
        assert_eq!((f.start_ms, f.end_ms), (NOW, NOW));
        assert_eq!(f.exporter, Some(agent));
    }

    #[test]
    fn expanded_sample_with_ipv6_header() {
        let agent: IpAddr = "2001:db8::1".parse().unwrap();
        let mut p = vec![0x60, 0, 0, 0]; // version 6, traffic class, flow label
        p.extend_from_slice(&20u16.to_be_bytes()); // payload length
        p.extend_from_slice(&[17, 64]); // next header UDP, hop limit 64
        p.extend_from_slice(&"2001:db8::5".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"2001:db8::53".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&[0xd4, 0x31, 0, 53, 0, 20, 0, 0]); // UDP 54321 -> 53, length 20
        let d = datagram(Some(agent), &[expanded_sample(1, &[raw_header(12, 0, &p)])]);
        let (r, flows) = decode(&d);
        assert_eq!(r.unwrap().flows, 1);
        let f = &flows[0];
        assert_eq!((f.src_port, f.dst_port, f.proto), (54_321, 53, 17));
        assert_eq!(f.src_ttl, Some(64));
        // Frame length 0: the IPv6 length (40 + 20) stands in.
        assert_eq!((f.packets, f.bytes, f.sampling), (1, 60, 1));
        assert_eq!(f.exporter, Some(agent));
    }

    #[test]
    fn ipv4_record_when_no_raw_header() {
        let rec = ipv4_record(1500, 6, [10, 1, 1, 1], [10, 2, 2, 2]);
        let d = datagram(None, &[flow_sample(1000, &[rec])]);
        let (r, flows) = decode(&d);
        assert_eq!(r.unwrap().flows, 1);
        let f = &flows[0];
        assert_eq!((f.src_port, f.dst_port, f.tcp_flags), (51_000, 443, 0x18));
        assert_eq!((f.bytes, f.packets, f.src_ttl), (1_500_000, 1000, None));
        // Agent address type 0: the datagram's sender is the exporter.
        assert_eq!(f.exporter, Some(EXPORTER));
    }

    #[test]
    fn raw_header_wins_over_ipv4_record() {
        // Both records: the IPv4 record first, the raw header second.
        let syn = tcp(49_152, 443, tcp_flags::SYN);
        let packet = ipv4(6, 128, [10, 0, 0, 5], [93, 184, 216, 34], 52, &syn);
        let s = flow_sample(
            400,
            &[
                ipv4_record(9, 17, [1, 1, 1, 1], [2, 2, 2, 2]),
                raw_header(1, 70, &ethernet_vlan(0x0800, &packet)),
            ],
        );
        let (r, flows) = decode(&datagram(None, &[s]));
        assert_eq!(r.unwrap().flows, 1);
        assert_eq!((flows[0].proto, flows[0].bytes), (6, 70 * 400));
    }

    #[test]
    fn icmp_type_and_code_in_destination_port() {
        let echo = [8, 0, 0, 0, 0, 1, 0, 1]; // echo request: type 8, code 0
        let packet = ipv4(1, 64, [10, 0, 0, 5], [10, 0, 0, 1], 28, &echo);
        let d = datagram(None, &[flow_sample(1, &[raw_header(11, 28, &packet)])]);
        let (r, flows) = decode(&d);
        assert_eq!(r.unwrap().flows, 1);
        assert_eq!((flows[0].src_port, flows[0].dst_port), (0, 8 * 256));
    }

    #[test]
    fn counters_enterprise_and_unusable_samples_are_counted() {
        let mut counters = Vec::new();
        word(&mut counters, 1); // sequence_number
        word(&mut counters, 3); // source_id
        word(&mut counters, 1); // number of counter records
        counters.extend(tagged(0, 1, &[0; 88])); // generic interface counters (contents unread)
        let arp = ethernet_vlan(0x0806, &[0; 28]);
        let samples = [
            tagged(0, 2, &counters),
            tagged(4413, 5, &[1, 2, 3, 4]), // an enterprise sample
            flow_sample(10, &[raw_header(1, 64, &arp)]), // not IP
            flow_sample(
                10,
                &[
                    tagged(9, 1, &[0; 8]), // an enterprise flow record, skipped
                    ipv4_record(40, 6, [1, 1, 1, 1], [2, 2, 2, 2]),
                ],
            ),
        ];
        let (r, flows) = decode(&datagram(None, &samples));
        let stats = r.unwrap();
        assert_eq!(flows.len(), 1);
        assert_eq!(
            stats,
            SflowStats {
                samples: 4,
                flows: 1,
                skipped: 3,
                counter_samples: 1,
                enterprise_records: 1,
            }
        );
    }

    #[test]
    fn header_checks() {
        let d = datagram(None, &[]);
        assert!(is_sflow(&d));
        assert_eq!(decode(&d).0.unwrap(), SflowStats::default());
        assert!(!is_sflow(&d[..d.len() - 1]));
        // A NetFlow v5 header starts with the 16-bit version 5, not the 32-bit one.
        assert!(!is_sflow(&[
            0, 5, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
        ]));
        let mut v4 = d.clone();
        v4[3] = 4;
        assert!(!is_sflow(&v4));
        let e = decode(&v4).0.unwrap_err();
        assert_eq!(e, SflowError::Version(4));
        assert!(e.to_string().contains("version 4"), "{e}");
        let mut bad_type = d.clone();
        bad_type[7] = 3;
        assert!(!is_sflow(&bad_type));
        assert_eq!(
            decode(&bad_type).0.unwrap_err(),
            SflowError::AgentAddressType(3)
        );
    }

    #[test]
    fn overrunning_lengths_end_the_datagram() {
        let good = ethernet_tcp_sample();
        let mut d = datagram(None, &[good.clone(), good]);
        // Second sample claims 4 bytes more than the datagram has.
        let second = d.len() - ethernet_tcp_sample().len();
        let len = u32::from_be_bytes(d[second + 4..second + 8].try_into().unwrap());
        d[second + 4..second + 8].copy_from_slice(&(len + 4).to_be_bytes());
        let (r, flows) = decode(&d);
        let e = r.unwrap_err();
        // The body starts after the sample's tag and length words and is 4 bytes short.
        let SflowError::Truncated {
            what,
            offset,
            need,
            left,
        } = e.clone()
        else {
            panic!("{e:?}");
        };
        assert_eq!((what, offset), ("sample", second + 8));
        assert_eq!((need, left), (len as usize + 4, d.len() - second - 8));
        assert_eq!(e.offset(), second + 8);
        let e = e.to_string();
        assert!(e.contains("sample at byte") && e.contains("needs"), "{e}");
        assert_eq!(flows.len(), 1, "the first sample was handed out");
        // A record length larger than its sample.
        let mut s = ethernet_tcp_sample();
        // sample header (8) + 7 words + record count (4) + record tag (4) -> record length word
        let at = 8 + 28 + 4 + 4;
        s[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(&datagram(None, &[s])).0.is_err());
        // More samples announced than present.
        let mut d = datagram(None, &[ethernet_tcp_sample()]);
        d[23] = 2; // number of samples, after version, address type 0, three header words
        let (r, flows) = decode(&d);
        assert!(r.is_err());
        assert_eq!(flows.len(), 1);
    }

    #[test]
    fn truncated_or_corrupted_never_panics() {
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let d = datagram(
            Some(v6),
            &[
                ethernet_tcp_sample(),
                flow_sample(3, &[ipv4_record(40, 6, [1, 1, 1, 1], [2, 2, 2, 2])]),
            ],
        );
        assert_eq!(decode(&d).0.unwrap().flows, 2);
        for n in 0..d.len() {
            let (r, _) = decode(&d[..n]);
            assert!(r.is_err(), "cut at {n} decoded: {r:?}");
            let _ = is_sflow(&d[..n]);
        }
        let mut m = d.clone();
        for i in 0..d.len() {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                m[i] = v;
                let _ = decode(&m);
                let _ = is_sflow(&m);
            }
            m[i] = d[i];
        }
    }

    proptest::proptest! {
        /// Random bytes after a valid header: an error or a result, never a panic.
        #[test]
        fn random_samples_never_panic(body in proptest::collection::vec(0u8..=255, 0..400)) {
            let mut d = datagram(None, &[]);
            d.truncate(20);
            d.extend_from_slice(&body);
            let _ = decode(&d);
        }
    }
}
