//! Binary inputs: packet captures of export datagrams (NetFlow v5/v9, IPFIX, sFlow v5), IPFIX
//! files (RFC 5655) and nfdump's own `nfcapd` files.

use super::{ReadError, ReadStats, Reason};
use crate::flow::Flow;
use crate::flow::netflow::Decoder;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr};

/// What a datagram stream decoder saw, for `flows --stats` and the collector.
#[derive(Debug, Default, Clone)]
pub struct DatagramStats {
    /// Datagrams that were neither NetFlow/IPFIX nor sFlow (e.g. DNS in a capture).
    pub other: u64,
    /// sFlow datagrams.
    pub sflow: u64,
}

/// Why an export datagram could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    /// A NetFlow v5/v9 or IPFIX datagram.
    #[error(transparent)]
    NetFlow(#[from] crate::flow::netflow::DecodeError),
    /// An sFlow v5 datagram (with the offset it is about).
    #[error(transparent)]
    Sflow(#[from] crate::flow::sflow::SflowError),
}

/// Decodes one export datagram (NetFlow v5/v9, IPFIX or sFlow v5) from `exporter`, received at
/// `now_ms`. Returns `Ok(false)` when the payload is not a flow export at all.
pub fn decode_datagram(
    decoder: &mut Decoder,
    exporter: IpAddr,
    payload: &[u8],
    now_ms: i64,
    out: &mut dyn FnMut(Flow),
) -> Result<bool, DatagramError> {
    if Decoder::is_netflow(payload) {
        decoder.decode(exporter, payload, out)?;
        Ok(true)
    } else if crate::flow::sflow::is_sflow(payload) {
        crate::flow::sflow::decode_sflow(exporter, payload, now_ms, out)?;
        Ok(true)
    } else {
        Ok(false)
    }
}

/// Reads a pcap/pcapng capture and decodes every export datagram in it, on any UDP port.
/// `lines` in the stats counts datagrams; `skipped` the malformed ones.
pub fn read_capture_flows<R: Read>(
    reader: R,
    source: &str,
    on_flow: &mut dyn FnMut(Flow),
    on_error: &mut dyn FnMut(ReadError),
) -> io::Result<ReadStats> {
    let mut decoder = Decoder::new();
    let mut stats = ReadStats::default();
    let capture = crate::flow::capture::read_capture(reader, &mut |d| {
        stats.lines += 1;
        let mut n = 0;
        match decode_datagram(&mut decoder, d.src.ip(), d.payload, d.ts_ms, &mut |f| {
            n += 1;
            on_flow(f)
        }) {
            Ok(_) => {}
            Err(reason) => {
                stats.skipped += 1;
                on_error(ReadError {
                    source: source.to_string(),
                    line: stats.lines,
                    reason: Reason::Datagram {
                        from: d.src,
                        error: reason,
                    },
                });
            }
        }
        stats.flows += n;
    })?;
    if let Some(at) = capture.truncated_at {
        on_error(ReadError {
            source: source.to_string(),
            line: stats.lines + 1,
            reason: Reason::CaptureCutShort(at),
        });
        stats.skipped += 1;
    }
    Ok(stats)
}

/// Whether `head` starts an IPFIX file (RFC 5655): a version 10 message header.
pub fn is_ipfix_file(head: &[u8]) -> bool {
    head.len() >= 4 && head[0] == 0 && head[1] == 10 && u16::from_be_bytes([head[2], head[3]]) >= 16
}

/// Reads an IPFIX file: IPFIX messages back to back. Each message is at most 65,535 bytes, so
/// no length field can make this allocate more.
pub fn read_ipfix_file<R: Read>(
    mut reader: R,
    source: &str,
    on_flow: &mut dyn FnMut(Flow),
    on_error: &mut dyn FnMut(ReadError),
) -> io::Result<ReadStats> {
    let mut decoder = Decoder::new();
    let mut stats = ReadStats::default();
    let exporter = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let mut buf = vec![0u8; 65_535];
    loop {
        let mut header = [0u8; 4];
        match read_full(&mut reader, &mut header)? {
            0 => return Ok(stats),
            4 => {}
            n => {
                stats.skipped += 1;
                on_error(ReadError {
                    source: source.to_string(),
                    line: stats.lines + 1,
                    reason: Reason::IpfixHeaderCut(n),
                });
                return Ok(stats);
            }
        }
        stats.lines += 1;
        let version = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if version != 10 || len < 16 {
            stats.skipped += 1;
            on_error(ReadError {
                source: source.to_string(),
                line: stats.lines,
                reason: Reason::NotIpfix { version, len },
            });
            return Ok(stats);
        }
        buf[..4].copy_from_slice(&header);
        let got = read_full(&mut reader, &mut buf[4..len])?;
        if got < len - 4 {
            stats.skipped += 1;
            on_error(ReadError {
                source: source.to_string(),
                line: stats.lines,
                reason: Reason::IpfixCut { got: got + 4, len },
            });
            return Ok(stats);
        }
        if let Err(e) = decoder.decode(exporter, &buf[..len], &mut |f| {
            stats.flows += 1;
            on_flow(f)
        }) {
            stats.skipped += 1;
            on_error(ReadError {
                source: source.to_string(),
                line: stats.lines,
                reason: Reason::Ipfix(e),
            });
        }
    }
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
