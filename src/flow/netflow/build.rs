//! NetFlow v5, v9 and IPFIX export messages built from their parts: what the tests, the
//! benchmarks and `flowprint bench` send to the decoder and the collector. Lengths are filled
//! in; nothing else is checked, so that tests can build broken messages too.

/// A NetFlow v5 header.
#[derive(Debug, Clone, Copy, Default)]
pub struct V5Header {
    /// Sequence number (flows seen before this datagram).
    pub seq: u32,
    /// The exporter's uptime, ms.
    pub uptime_ms: u32,
    /// Export time, seconds since the epoch.
    pub secs: u32,
    /// Sampling mode and interval (the top two bits the mode).
    pub sampling: u16,
}

/// A NetFlow v5 record.
#[derive(Debug, Clone, Copy, Default)]
pub struct V5Record {
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// IP protocol.
    pub proto: u8,
    /// TCP flags.
    pub tcp_flags: u8,
    /// Packets.
    pub packets: u32,
    /// Bytes.
    pub bytes: u32,
    /// First packet, the exporter's uptime in ms.
    pub first_ms: u32,
    /// Last packet, the exporter's uptime in ms.
    pub last_ms: u32,
}

/// A NetFlow v5 datagram.
pub fn v5(h: &V5Header, records: &[V5Record]) -> Vec<u8> {
    let mut m = Vec::with_capacity(24 + 48 * records.len());
    m.extend_from_slice(&5u16.to_be_bytes());
    m.extend_from_slice(&(records.len() as u16).to_be_bytes());
    m.extend_from_slice(&h.uptime_ms.to_be_bytes());
    m.extend_from_slice(&h.secs.to_be_bytes());
    m.extend_from_slice(&0u32.to_be_bytes()); // nanoseconds
    m.extend_from_slice(&h.seq.to_be_bytes());
    m.extend_from_slice(&[0, 0]); // engine type and id
    m.extend_from_slice(&h.sampling.to_be_bytes());
    for r in records {
        m.extend_from_slice(&r.src);
        m.extend_from_slice(&r.dst);
        m.extend_from_slice(&[0; 8]); // next hop, interfaces
        m.extend_from_slice(&r.packets.to_be_bytes());
        m.extend_from_slice(&r.bytes.to_be_bytes());
        m.extend_from_slice(&r.first_ms.to_be_bytes());
        m.extend_from_slice(&r.last_ms.to_be_bytes());
        m.extend_from_slice(&r.src_port.to_be_bytes());
        m.extend_from_slice(&r.dst_port.to_be_bytes());
        m.extend_from_slice(&[0, r.tcp_flags, r.proto, 0]);
        m.extend_from_slice(&[0; 8]); // AS numbers, masks, padding
    }
    m
}

/// A NetFlow v9 header.
#[derive(Debug, Clone, Copy, Default)]
pub struct V9Header {
    /// Records in the packet (templates and data records); exporters differ, decoders ignore it.
    pub count: u16,
    /// The exporter's uptime, ms.
    pub uptime_ms: u32,
    /// Export time, seconds since the epoch.
    pub secs: u32,
    /// Sequence number.
    pub seq: u32,
    /// The exporter's source id (its template space).
    pub source_id: u32,
}

/// A NetFlow v9 export packet with the given flowsets (id, body).
pub fn v9(h: &V9Header, sets: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&9u16.to_be_bytes());
    m.extend_from_slice(&h.count.to_be_bytes());
    m.extend_from_slice(&h.uptime_ms.to_be_bytes());
    m.extend_from_slice(&h.secs.to_be_bytes());
    m.extend_from_slice(&h.seq.to_be_bytes());
    m.extend_from_slice(&h.source_id.to_be_bytes());
    push_sets(&mut m, sets);
    m
}

/// An IPFIX message (RFC 7011) with the given sets (id, body); the length is filled in.
pub fn ipfix(seq: u32, export_secs: u32, domain: u32, sets: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut m = vec![0, 10, 0, 0];
    m.extend_from_slice(&export_secs.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&domain.to_be_bytes());
    push_sets(&mut m, sets);
    let len = m.len() as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    m
}

fn push_sets(m: &mut Vec<u8>, sets: &[(u16, Vec<u8>)]) {
    for (id, body) in sets {
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
        m.extend_from_slice(body);
    }
}

/// A template record: its id, then (element id, length, enterprise number) per field; an
/// enterprise number other than 0 sets the element's enterprise bit (IPFIX). Put it in set 2
/// (IPFIX) or flowset 0 (v9).
pub fn template(id: u16, fields: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + fields.len() * 8);
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&(fields.len() as u16).to_be_bytes());
    for &(ie, len, pen) in fields {
        let ie = if pen != 0 { ie | 0x8000 } else { ie };
        b.extend_from_slice(&ie.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        if pen != 0 {
            b.extend_from_slice(&pen.to_be_bytes());
        }
    }
    b
}

/// A template's fields for plain IPv4 records (IANA elements, no enterprise number): source and
/// destination address, source and destination port, protocol, bytes, packets.
pub const BASIC_V4: &[(u16, u16, u32)] = &[
    (8, 4, 0),
    (12, 4, 0),
    (7, 2, 0),
    (11, 2, 0),
    (4, 1, 0),
    (1, 4, 0),
    (2, 4, 0),
];

/// A TCP data record of [`BASIC_V4`].
pub fn basic_v4_record(
    src: [u8; 4],
    dst: [u8; 4],
    src_port: u16,
    dst_port: u16,
    bytes: u32,
    packets: u32,
) -> Vec<u8> {
    let mut r = Vec::with_capacity(21);
    r.extend_from_slice(&src);
    r.extend_from_slice(&dst);
    r.extend_from_slice(&src_port.to_be_bytes());
    r.extend_from_slice(&dst_port.to_be_bytes());
    r.push(6);
    r.extend_from_slice(&bytes.to_be_bytes());
    r.extend_from_slice(&packets.to_be_bytes());
    r
}

/// `body` padded with zeros to a multiple of four bytes, as exporters pad their data sets.
pub fn padded(mut body: Vec<u8>) -> Vec<u8> {
    body.resize(body.len().div_ceil(4) * 4, 0);
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_decode_as_built() {
        let exporter: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let mut dec = super::super::Decoder::new();
        let mut flows = Vec::new();
        let r = V5Record {
            src: [10, 0, 0, 1],
            dst: [192, 0, 2, 80],
            src_port: 40_000,
            dst_port: 443,
            proto: 6,
            tcp_flags: 0x1b,
            packets: 3,
            bytes: 1_500,
            first_ms: 1_000,
            last_ms: 2_000,
        };
        let h = V5Header {
            seq: 0,
            uptime_ms: 10_000,
            secs: 1_700_000_000,
            sampling: 0,
        };
        dec.decode(exporter, &v5(&h, &[r]), &mut |f| flows.push(f))
            .unwrap();
        let fields = BASIC_V4;
        let rec = basic_v4_record([10, 0, 0, 2], [192, 0, 2, 53], 5353, 53, 99, 1);
        let v9h = V9Header {
            count: 2,
            uptime_ms: 10_000,
            secs: 1_700_000_000,
            seq: 0,
            source_id: 1,
        };
        let m = v9(
            &v9h,
            &[(0, template(300, fields)), (300, padded(rec.clone()))],
        );
        dec.decode(exporter, &m, &mut |f| flows.push(f)).unwrap();
        let m = ipfix(
            0,
            1_700_000_000,
            7,
            &[(2, template(300, fields)), (300, rec)],
        );
        dec.decode(exporter, &m, &mut |f| flows.push(f)).unwrap();
        assert_eq!(flows.len(), 3);
        assert_eq!(
            (flows[0].dst_port, flows[0].bytes, flows[0].packets),
            (443, 1_500, 3)
        );
        assert_eq!(
            (flows[1].dst_port, flows[1].proto, flows[1].bytes),
            (53, 6, 99)
        );
        assert_eq!((flows[2].src_port, flows[2].bytes), (5353, 99));
    }
}
