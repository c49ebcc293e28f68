//! Data records: from a compiled template's steps to a [`Flow`].

use super::fields::{Plan, Step, Target, VARLEN};
use super::{Ctx, ExporterStats, uptime_delta};
use crate::flow::{Flow, normalize_name, proto};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

fn be(s: &[u8]) -> u64 {
    let s = if s.len() > 8 { &s[s.len() - 8..] } else { s };
    s.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// Milliseconds since the Unix epoch of a 64-bit NTP timestamp.
fn ntp_to_ms(v: u64) -> i64 {
    let secs = (v >> 32) as i64 - 2_208_988_800;
    let frac = ((v & 0xffff_ffff) * 1000) >> 32;
    secs * 1000 + frac as i64
}

/// Why a data set ended in a broken record (the records before it were decoded). `record` is
/// 1-based; `at` is the record's byte offset in the data set's body (after the 4-byte set
/// header).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The template's records have no bytes at all.
    #[error("template describes zero-length records")]
    ZeroLength,
    /// A variable-length field's length byte(s) are past the end of the set.
    #[error("record {record} at byte {at}: variable-length field runs past the set")]
    VarLength {
        /// The record.
        record: u64,
        /// Its offset in the set.
        at: usize,
    },
    /// A field's value runs past the end of the set.
    #[error(
        "record {record} at byte {at}: field of {len} bytes runs past the set ({left} bytes left)"
    )]
    Field {
        /// The record.
        record: u64,
        /// Its offset in the set.
        at: usize,
        /// The field's length.
        len: usize,
        /// The bytes left in the set where the field starts.
        left: usize,
    },
    /// Non-zero bytes after the last record, too few for another one (templates with
    /// variable-length fields only; fixed-length records are padded).
    #[error("record {record} at byte {at}: {left} bytes left, a record needs at least {need}")]
    Short {
        /// The record.
        record: u64,
        /// Its offset in the set.
        at: usize,
        /// The bytes left.
        left: usize,
        /// The smallest record of the template.
        need: usize,
    },
}

impl RecordError {
    /// The offset of the broken record in the data set's body (0 for [`RecordError::ZeroLength`]).
    pub fn at(&self) -> usize {
        match self {
            RecordError::ZeroLength => 0,
            RecordError::VarLength { at, .. }
            | RecordError::Field { at, .. }
            | RecordError::Short { at, .. } => *at,
        }
    }
}

/// The values of one data record before they become a [`Flow`].
#[derive(Default)]
struct Raw {
    bytes: u64,
    packets: u64,
    rev_bytes: u64,
    rev_packets: u64,
    proto: u8,
    flags: u8,
    sp: u16,
    dp: u16,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    icmp: Option<u16>,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    start_up: Option<u32>,
    end_up: Option<u32>,
    start_abs: Option<i64>,
    end_abs: Option<i64>,
    start_delta: Option<u64>,
    end_delta: Option<u64>,
    system_init: Option<i64>,
    min_ttl: Option<u8>,
    ttl: Option<u8>,
    rev_ttl: Option<u8>,
    exporter: Option<IpAddr>,
    sampling: Option<u32>,
    name: Option<Arc<str>>,
}

impl Raw {
    #[inline]
    fn set(&mut self, target: Target, v: &[u8]) {
        use Target::*;
        match target {
            Skip => {}
            Bytes => self.bytes = be(v),
            Packets => self.packets = be(v),
            RevBytes => self.rev_bytes = be(v),
            RevPackets => self.rev_packets = be(v),
            Proto => self.proto = be(v) as u8,
            TcpFlags => self.flags = be(v) as u8,
            SrcPort => self.sp = be(v) as u16,
            DstPort => self.dp = be(v) as u16,
            SrcV4 if v.len() == 4 => {
                self.src = Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3])))
            }
            DstV4 if v.len() == 4 => {
                self.dst = Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3])))
            }
            SrcV6 if v.len() == 16 => self.src = Some(v6(v)),
            DstV6 if v.len() == 16 => self.dst = Some(v6(v)),
            ExporterV4 if v.len() == 4 => {
                self.exporter = Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3])))
            }
            ExporterV6 if v.len() == 16 => self.exporter = Some(v6(v)),
            SrcV4 | DstV4 | SrcV6 | DstV6 | ExporterV4 | ExporterV6 => {}
            IcmpTypeCode => self.icmp = Some(be(v) as u16),
            IcmpType => self.icmp_type = Some(be(v) as u8),
            IcmpCode => self.icmp_code = Some(be(v) as u8),
            StartUptime => self.start_up = Some(be(v) as u32),
            EndUptime => self.end_up = Some(be(v) as u32),
            StartSecs => self.start_abs = Some((be(v) as i64).saturating_mul(1000)),
            EndSecs => self.end_abs = Some((be(v) as i64).saturating_mul(1000)),
            StartMillis => self.start_abs = Some(be(v) as i64),
            EndMillis => self.end_abs = Some(be(v) as i64),
            StartMicros => self.start_abs = Some(be(v) as i64 / 1000),
            EndMicros => self.end_abs = Some(be(v) as i64 / 1000),
            StartNtp => self.start_abs = Some(ntp_to_ms(be(v))),
            EndNtp => self.end_abs = Some(ntp_to_ms(be(v))),
            StartDeltaMicros => self.start_delta = Some(be(v)),
            EndDeltaMicros => self.end_delta = Some(be(v)),
            SystemInit => self.system_init = Some(be(v) as i64),
            MinTtl => self.min_ttl = Some(be(v) as u8),
            MaxTtl => {}
            Ttl => self.ttl = Some(be(v) as u8),
            RevMinTtl | RevTtl => self.rev_ttl = Some(be(v) as u8),
            Sampling => self.sampling = Some(be(v) as u32),
            DstName | DnsName => {
                let text = String::from_utf8_lossy(v);
                let text = text.trim_end_matches('\0');
                if !text.is_empty() && text.parse::<IpAddr>().is_err() {
                    self.name = normalize_name(text);
                }
            }
        }
    }

    fn time(
        &self,
        abs: Option<i64>,
        delta: Option<u64>,
        up: Option<u32>,
        ctx: &Ctx,
        boot: Option<i64>,
    ) -> Option<i64> {
        if let Some(t) = abs {
            return Some(t);
        }
        if let Some(d) = delta {
            return Some(ctx.export_ms - (d / 1000) as i64);
        }
        let up = up?;
        if let Some(boot) = self.system_init.or(boot) {
            return Some(boot.saturating_add(i64::from(up)));
        }
        // v9: relative to the header's sysUpTime, modulo its 32-bit wrap.
        let uptime = ctx.uptime_ms?;
        Some(ctx.export_ms - uptime_delta(uptime, up))
    }

    fn into_flow(
        self,
        ctx: &Ctx,
        session_sampling: Option<u32>,
        boot: Option<i64>,
    ) -> Option<Flow> {
        let (src, dst) = (self.src?, self.dst?);
        if src.is_unspecified() && dst.is_unspecified() {
            return None;
        }
        // ICMP has no ports: some exporters put the type in the source port; nfdump shows 0.
        let src_port = if matches!(self.proto, proto::ICMP | proto::ICMPV6) {
            0
        } else {
            self.sp
        };
        let start = self.time(self.start_abs, self.start_delta, self.start_up, ctx, boot);
        let end = self.time(self.end_abs, self.end_delta, self.end_up, ctx, boot);
        let start_ms = start.or(end).unwrap_or(ctx.export_ms);
        let end_ms = end.unwrap_or(start_ms);
        let mut dst_port = self.dp;
        if matches!(self.proto, proto::ICMP | proto::ICMPV6) && dst_port == 0 {
            if let Some(tc) = self.icmp {
                dst_port = tc;
            } else if let Some(t) = self.icmp_type {
                dst_port = u16::from(t) << 8 | u16::from(self.icmp_code.unwrap_or(0));
            }
        }
        let rate = self
            .sampling
            .or(session_sampling)
            .filter(|&r| r > 1)
            .unwrap_or(1);
        let scale = u64::from(rate);
        Some(Flow {
            start_ms,
            end_ms,
            src,
            dst,
            src_port,
            dst_port,
            proto: self.proto,
            bytes: self.bytes.saturating_mul(scale),
            packets: self.packets.saturating_mul(scale),
            rev_bytes: self.rev_bytes.saturating_mul(scale),
            rev_packets: self.rev_packets.saturating_mul(scale),
            // The forward direction's flags (RFC 5103). nfdump 1.7.1 instead shows the reverse
            // element's value for biflows, losing the forward flags.
            tcp_flags: self.flags,
            src_ttl: self.min_ttl.or(self.ttl),
            dst_ttl: self.rev_ttl,
            src_name: None,
            dst_name: self.name,
            exporter: Some(self.exporter.unwrap_or(ctx.exporter)),
            sampling: rate,
        })
    }
}

fn v6(v: &[u8]) -> IpAddr {
    let mut a = [0u8; 16];
    a.copy_from_slice(v);
    let ip = Ipv6Addr::from(a);
    match ip.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(ip),
    }
}

/// Decodes the records of one data set with `plan`: the number of flows handed to `out`,
/// and what was wrong if the set ended in a broken record (the records before it are kept).
/// Trailing zero bytes too short for a record are padding.
pub(super) fn decode_records(
    plan: &Plan,
    data: &[u8],
    ctx: &Ctx,
    session: &mut SessionView,
    out: &mut dyn FnMut(Flow),
) -> (u64, Option<RecordError>) {
    if plan.fixed_len == Some(0) {
        return (0, Some(RecordError::ZeroLength));
    }
    let mut pos = 0usize;
    let mut n = 0;
    while data.len() - pos >= plan.min_len.max(1) {
        if let Some(fl) = plan.fixed_len
            && data.len() - pos < fl
        {
            break;
        }
        let start = pos;
        let record = n + 1;
        let truncated = |error: RecordError| {
            if data[start..].iter().all(|&b| b == 0) {
                (n, None)
            } else {
                (n, Some(error))
            }
        };
        let varlen = RecordError::VarLength { record, at: start };
        let mut raw = Raw::default();
        for &Step { target, len } in &plan.steps {
            let len = if len == VARLEN {
                // RFC 7011 §7: one length byte; 255 means a two-byte length follows.
                let Some(&l) = data.get(pos) else {
                    return truncated(varlen);
                };
                pos += 1;
                if l == 255 {
                    let Some(l2) = data.get(pos..pos + 2) else {
                        return truncated(varlen);
                    };
                    pos += 2;
                    usize::from(u16::from_be_bytes([l2[0], l2[1]]))
                } else {
                    usize::from(l)
                }
            } else {
                usize::from(len)
            };
            let Some(v) = data.get(pos..pos + len) else {
                // Fixed templates never get here (checked above).
                return truncated(RecordError::Field {
                    record,
                    at: start,
                    len,
                    left: data.len() - pos,
                });
            };
            raw.set(target, v);
            pos += len;
        }
        if plan.options {
            if let Some(s) = raw.sampling.filter(|&s| s > 0) {
                *session.sampling = Some(s);
            }
            if let Some(b) = raw.system_init {
                *session.boot = Some(b);
            }
            session.stats.options_records += 1;
        } else if let Some(flow) = raw.into_flow(ctx, *session.sampling, *session.boot) {
            out(flow);
            n += 1;
        } else {
            session.stats.without_addresses += 1;
        }
    }
    // What is left is too short for a record: padding, or (with variable-length fields,
    // whose records have no fixed size to pad to) a record cut short.
    if plan.fixed_len.is_none() && data[pos..].iter().any(|&b| b != 0) {
        let left = data.len() - pos;
        return (
            n,
            Some(RecordError::Short {
                record: n + 1,
                at: pos,
                left,
                need: plan.min_len,
            }),
        );
    }
    (n, None)
}

pub(super) struct SessionView<'a> {
    pub sampling: &'a mut Option<u32>,
    pub boot: &'a mut Option<i64>,
    pub stats: &'a mut ExporterStats,
}
