//! Records of a type-3 data block: nfdump 1.7's V3 flow records and the exporter and sampler
//! records they refer to.
//!
//! Every record starts with `type: u16, size: u16` (size includes these four bytes), all
//! integers little-endian as written by nfdump on x86/ARM. A V3 record (type 11) continues with
//! `numElements: u16, engineType: u8, engineID: u8, exporterID: u16, flags: u8, nfversion: u8`
//! and then `numElements` extension elements, each `type: u16, length: u16` (length includes
//! the element header) followed by a fixed C struct. The element layouts used here (offsets
//! into the element body):
//!
//! | id | element          | fields read                                                     |
//! |----|------------------|-----------------------------------------------------------------|
//! | 1  | EXgenericFlow    | msecFirst u64 @0, msecLast u64 @8, inPackets u64 @24, inBytes u64 @32, srcPort u16 @40, dstPort u16 @42 (ICMP: type << 8 \| code), proto u8 @44, tcpFlags u8 @45 |
//! | 2  | EXipv4Flow       | srcAddr u32 @0, dstAddr u32 @4 (numeric, host order)            |
//! | 3  | EXipv6Flow       | srcAddr u64[2] @0, dstAddr u64[2] @16: `[0]` holds the high 64 bits |
//! | 5  | EXcntFlow        | outPackets u64 @8, outBytes u64 @16                             |
//! | 12 | EXipReceivedV4   | exporter address u32 @0                                         |
//! | 13 | EXipReceivedV6   | exporter address u64[2] @0                                      |
//! | 18 | EXsamplerInfo    | selectorID u64 @0, exporter sysid u16 @8                        |
//! | 42 | EXipInfo         | fragment flags u8 @1, minTTL u8 @2, maxTTL u8 @3                |
//!
//! Other elements (flowMisc, vLan, macAddr, AS, next hops, MPLS, NSEL/NEL, payload, ...) are
//! skipped by their length.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rustc_hash::FxHashMap;

use crate::flow::Flow;

/// Record type of a V3 flow record.
const V3_RECORD: u16 = 11;
/// Record type of an exporter description (`exporter_info_record_t`, 32 bytes).
const EXPORTER_INFO: u16 = 7;
/// Record type of a sampler description (`sampler_record_t`, 24 bytes).
const SAMPLER: u16 = 15;
/// nfdump 1.6 flow record types, only found in layout-1 files.
const LEGACY_FLOW: [u16; 2] = [1, 10];

/// V3 record flag: packets and bytes were multiplied by the sampling interval.
const FLAG_SAMPLED: u8 = 2;

/// Most sampler records kept per file; more are reported and ignored.
const MAX_SAMPLERS: usize = 4096;

/// nfdump's sampler ids for samplers set on the command line or from v5/v9 generic fields.
const SAMPLER_OVERWRITE: i64 = -3;
const SAMPLER_DEFAULT: i64 = -2;
const SAMPLER_GENERIC: i64 = -1;

/// What one record is.
pub enum Outcome {
    /// A flow.
    Flow(Flow),
    /// A record that is not a flow (exporter, sampler, statistics, ident...).
    Meta,
    /// A malformed or unsupported record, with the reason.
    Malformed(RecordError),
}

/// Why one record of a data block is malformed or unsupported. Offsets are byte offsets in the
/// record (its 4-byte `type, size` header at 0).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A V3 record shorter than its 12-byte header.
    #[error("V3 record of {len} bytes is shorter than its 12-byte header")]
    V3Header {
        /// The record's size.
        len: usize,
    },
    /// Fewer elements than the header announces before the record ends.
    #[error("V3 record announces {announced} elements but holds {held}")]
    Elements {
        /// Elements announced.
        announced: u16,
        /// Elements found.
        held: u16,
    },
    /// An element whose length is below 4 or runs past the record.
    #[error(
        "element {element} (type {kind}) of length {len} overruns its record ({record_len} \
         bytes at offset {offset})"
    )]
    ElementOverrun {
        /// 1-based element number.
        element: u16,
        /// Element type.
        kind: u16,
        /// Its length field.
        len: usize,
        /// The record's size.
        record_len: usize,
        /// The element's offset.
        offset: usize,
    },
    /// An element too short for the fields read from it.
    #[error("{element} element has {len} bytes, needs {need}")]
    ElementShort {
        /// The element's name, e.g. `EXipInfo`.
        element: &'static str,
        /// The element's offset (of its header).
        offset: usize,
        /// Bytes of its body.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// A V3 record without the generic flow element (times, counters, ports).
    #[error("V3 record without EXgenericFlow element")]
    NoGeneric,
    /// A V3 record without an address element.
    #[error("V3 record without IPv4 or IPv6 address element")]
    NoAddress,
    /// An nfdump 1.6 flow record.
    #[error(
        "nfdump 1.6 flow record (type {0}) is not supported; rewrite the file with nfdump 1.7 \
         (`nfdump -r OLD -w NEW`)"
    )]
    Legacy(u16),
    /// An exporter record too short.
    #[error("exporter record of {len} bytes, needs at least 28")]
    ExporterShort {
        /// The record's size.
        len: usize,
    },
    /// A sampler record too short.
    #[error("sampler record of {len} bytes, needs 24")]
    SamplerShort {
        /// The record's size.
        len: usize,
    },
    /// A sampler beyond the `MAX_SAMPLERS` kept per file (ignored).
    #[error("more than {MAX_SAMPLERS} sampler records: sampler ignored")]
    TooManySamplers,
}

impl RecordError {
    /// The byte offset in the record the error is about (0 when it is about the whole record).
    pub fn offset(&self) -> usize {
        match self {
            RecordError::ElementOverrun { offset, .. }
            | RecordError::ElementShort { offset, .. } => *offset,
            _ => 0,
        }
    }
}

/// Per-file state: exporters and samplers announced by earlier records.
#[derive(Default)]
pub struct Decoder {
    exporters: FxHashMap<u16, IpAddr>,
    samplers: FxHashMap<(u16, i64), u32>,
}

#[inline(always)]
fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

#[inline(always)]
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// nfdump's IPv6 layout: two native u64, the first holding the high half of the address.
#[inline(always)]
fn ipv6(b: &[u8], at: usize) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(le64(b, at)) << 64 | u128::from(le64(b, at + 8)))
}

/// Milliseconds as stored (u64) to the signed representation of [`Flow`].
fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// An element body (found at `offset` in its record) with at least `need` bytes, or why not.
#[inline(always)]
fn sized<'a>(
    element: Option<(usize, &'a [u8])>,
    need: usize,
    name: &'static str,
) -> Result<Option<&'a [u8]>, RecordError> {
    match element {
        Some((offset, b)) if b.len() < need => Err(RecordError::ElementShort {
            element: name,
            offset,
            len: b.len(),
            need,
        }),
        e => Ok(e.map(|(_, b)| b)),
    }
}

impl Decoder {
    /// Decodes one record (`rec` spans exactly its `size` bytes, at least 4).
    #[inline]
    pub fn record(&mut self, rec: &[u8]) -> Outcome {
        match le16(rec, 0) {
            V3_RECORD => match self.v3(rec) {
                Ok(flow) => Outcome::Flow(flow),
                Err(reason) => Outcome::Malformed(reason),
            },
            EXPORTER_INFO => self.exporter(rec),
            SAMPLER => self.sampler(rec),
            t if LEGACY_FLOW.contains(&t) => Outcome::Malformed(RecordError::Legacy(t)),
            _ => Outcome::Meta,
        }
    }

    #[inline(always)]
    fn v3(&self, rec: &[u8]) -> Result<Flow, RecordError> {
        if rec.len() < 12 {
            return Err(RecordError::V3Header { len: rec.len() });
        }
        let elements = le16(rec, 4);
        let exporter_id = le16(rec, 8);
        let flags = rec[10];
        let (mut generic, mut v4, mut v6, mut counters) = (None, None, None, None);
        let (mut recv4, mut recv6, mut sampler, mut ip_info) = (None, None, None, None);
        let mut pos = 12;
        for i in 0..elements {
            let Some(h) = rec.get(pos..pos + 4) else {
                return Err(RecordError::Elements {
                    announced: elements,
                    held: i,
                });
            };
            let (kind, len) = (le16(h, 0), usize::from(le16(h, 2)));
            if len < 4 || pos + len > rec.len() {
                return Err(RecordError::ElementOverrun {
                    element: i + 1,
                    kind,
                    len,
                    record_len: rec.len(),
                    offset: pos,
                });
            }
            let body = Some((pos, &rec[pos + 4..pos + len]));
            match kind {
                1 => generic = body,
                2 => v4 = body,
                3 => v6 = body,
                5 => counters = body,
                12 => recv4 = body,
                13 => recv6 = body,
                18 => sampler = body,
                42 => ip_info = body,
                _ => {}
            }
            pos += len;
        }
        let Some(g) = sized(generic, 48, "EXgenericFlow")? else {
            return Err(RecordError::NoGeneric);
        };
        let (src, dst) = if let Some(b) = sized(v4, 8, "EXipv4Flow")? {
            (
                IpAddr::V4(Ipv4Addr::from(le32(b, 0))),
                IpAddr::V4(Ipv4Addr::from(le32(b, 4))),
            )
        } else if let Some(b) = sized(v6, 32, "EXipv6Flow")? {
            (IpAddr::V6(ipv6(b, 0)), IpAddr::V6(ipv6(b, 16)))
        } else {
            return Err(RecordError::NoAddress);
        };
        let (rev_packets, rev_bytes) = match sized(counters, 24, "EXcntFlow")? {
            Some(c) => (le64(c, 8), le64(c, 16)),
            None => (0, 0),
        };
        let received = if let Some(b) = sized(recv4, 4, "EXipReceivedV4")? {
            Some(IpAddr::V4(Ipv4Addr::from(le32(b, 0))))
        } else {
            sized(recv6, 16, "EXipReceivedV6")?.map(|b| IpAddr::V6(ipv6(b, 0)))
        };
        let exporter = received
            .filter(|a| !a.is_unspecified())
            .or_else(|| self.exporters.get(&exporter_id).copied());
        let src_ttl = sized(ip_info, 4, "EXipInfo")?
            .map(|b| b[2])
            .filter(|&t| t != 0);
        let sampling = if flags & FLAG_SAMPLED != 0 {
            let selector =
                sized(sampler, 10, "EXsamplerInfo")?.map(|b| (le16(b, 8), le64(b, 0) as i64));
            self.sampling(exporter_id, selector)
        } else {
            1
        };
        Ok(Flow {
            start_ms: ms(le64(g, 0)),
            end_ms: ms(le64(g, 8)),
            src,
            dst,
            src_port: le16(g, 40),
            dst_port: le16(g, 42),
            proto: g[44],
            bytes: le64(g, 32),
            packets: le64(g, 24),
            rev_bytes,
            rev_packets,
            tcp_flags: g[45],
            src_ttl,
            dst_ttl: None,
            src_name: None,
            dst_name: None,
            exporter,
            sampling,
        })
    }

    /// The interval of the sampler that applies to a sampled record, as nfcapd picks it:
    /// a command-line override, the record's own sampler, the exporter's generic sampler, a
    /// command-line default. 1 when none is known.
    fn sampling(&self, exporter_id: u16, selector: Option<(u16, i64)>) -> u32 {
        let keys = [
            Some((exporter_id, SAMPLER_OVERWRITE)),
            selector,
            Some((exporter_id, SAMPLER_GENERIC)),
            Some((exporter_id, SAMPLER_DEFAULT)),
        ];
        keys.into_iter()
            .flatten()
            .find_map(|k| self.samplers.get(&k).copied())
            .unwrap_or(1)
    }

    /// `exporter_info_record_t`: version u32 @4, ip[16] @8, sa_family u16 @24, sysid u16 @26.
    fn exporter(&mut self, rec: &[u8]) -> Outcome {
        if rec.len() < 28 {
            return Outcome::Malformed(RecordError::ExporterShort { len: rec.len() });
        }
        let family = le16(rec, 24);
        let ip = match family {
            // nfdump 1.7.0/1.7.1: ip_addr_t in host order, IPv4 in the third u32.
            2 => IpAddr::V4(Ipv4Addr::from(le32(rec, 16))),
            // Later 1.7 releases: 16 bytes in network order, IPv4 mapped into IPv6.
            0 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&rec[8..24]);
                let v6 = Ipv6Addr::from(a);
                v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
            }
            // Any other family (AF_INET6 is 10 on Linux, 24/28/30 on the BSDs): host order.
            _ => IpAddr::V6(ipv6(rec, 8)),
        };
        self.exporters.insert(le16(rec, 26), ip);
        Outcome::Meta
    }

    /// `sampler_record_t`: sysid u16 @4, algorithm u16 @6, id i64 @8, packetInterval u32 @16,
    /// spaceInterval u32 @20. The interval is (packet + space) / packet.
    fn sampler(&mut self, rec: &[u8]) -> Outcome {
        if rec.len() < 24 {
            return Outcome::Malformed(RecordError::SamplerShort { len: rec.len() });
        }
        let key = (le16(rec, 4), le64(rec, 8) as i64);
        let (packet, space) = (u64::from(le32(rec, 16)), u64::from(le32(rec, 20)));
        if packet == 0 {
            return Outcome::Meta;
        }
        if self.samplers.len() >= MAX_SAMPLERS && !self.samplers.contains_key(&key) {
            return Outcome::Malformed(RecordError::TooManySamplers);
        }
        let interval = ((packet + space) / packet).clamp(1, u64::from(u32::MAX)) as u32;
        self.samplers.insert(key, interval);
        Outcome::Meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut e = kind.to_le_bytes().to_vec();
        e.extend_from_slice(&(body.len() as u16 + 4).to_le_bytes());
        e.extend_from_slice(body);
        e
    }

    /// A V3 record announcing `announced` elements, holding `elements`.
    fn v3(announced: u16, elements: &[Vec<u8>]) -> Vec<u8> {
        let size = 12 + elements.iter().map(Vec::len).sum::<usize>();
        let mut r = V3_RECORD.to_le_bytes().to_vec();
        r.extend_from_slice(&(size as u16).to_le_bytes());
        r.extend_from_slice(&announced.to_le_bytes());
        r.extend_from_slice(&[0, 0, 1, 0, 0, 0]);
        for e in elements {
            r.extend_from_slice(e);
        }
        r
    }

    fn error(rec: &[u8]) -> RecordError {
        match Decoder::default().record(rec) {
            Outcome::Malformed(e) => e,
            Outcome::Flow(f) => panic!("a flow: {f:?}"),
            Outcome::Meta => panic!("a meta record"),
        }
    }

    #[test]
    fn record_errors_say_what_and_where() {
        let generic = element(1, &[0; 48]);
        let v4 = element(2, &[0; 8]);
        assert!(matches!(
            Decoder::default().record(&v3(2, &[generic.clone(), v4.clone()])),
            Outcome::Flow(_)
        ));
        assert_eq!(error(&v3(0, &[])[..8]), RecordError::V3Header { len: 8 });
        assert_eq!(
            error(&v3(3, &[generic.clone(), v4.clone()])),
            RecordError::Elements {
                announced: 3,
                held: 2
            }
        );
        let mut overrun = v3(2, &[generic.clone(), element(2, &[0; 8])]);
        let at = 12 + generic.len();
        overrun[at + 2..at + 4].copy_from_slice(&40u16.to_le_bytes());
        let e = error(&overrun);
        assert_eq!(
            e,
            RecordError::ElementOverrun {
                element: 2,
                kind: 2,
                len: 40,
                record_len: overrun.len(),
                offset: at
            }
        );
        assert_eq!(e.offset(), at);
        let e = error(&v3(3, &[generic.clone(), v4.clone(), element(42, &[0; 2])]));
        assert_eq!(
            e,
            RecordError::ElementShort {
                element: "EXipInfo",
                offset: 12 + generic.len() + v4.len(),
                len: 2,
                need: 4
            }
        );
        assert_eq!(e.to_string(), "EXipInfo element has 2 bytes, needs 4");
        assert_eq!(
            error(&v3(1, std::slice::from_ref(&v4))),
            RecordError::NoGeneric
        );
        assert_eq!(error(&v3(1, &[generic])), RecordError::NoAddress);
        let mut legacy = v3(0, &[]);
        legacy[..2].copy_from_slice(&10u16.to_le_bytes());
        assert_eq!(error(&legacy), RecordError::Legacy(10));
        let mut short = vec![0u8; 20];
        short[..2].copy_from_slice(&EXPORTER_INFO.to_le_bytes());
        assert_eq!(error(&short), RecordError::ExporterShort { len: 20 });
        short[..2].copy_from_slice(&SAMPLER.to_le_bytes());
        assert_eq!(error(&short), RecordError::SamplerShort { len: 20 });
    }
}
