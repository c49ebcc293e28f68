//! NetFlow v5, NetFlow v9 and IPFIX decoding into normalized [`Flow`]s.
//!
//! Templates are kept per session — (exporter address, source id / observation domain) — and
//! compiled into flat [`fields::Plan`]s when they arrive, so decoding a record is one pass over
//! a short list of steps. Data that arrives before its template is held (bounded) and decoded
//! when the template comes; templates expire when not refreshed. Every problem is counted per
//! exporter in [`ExporterStats`]; nothing panics and no length field makes it allocate more
//! than the datagram it came in.
//!
//! Written for flowprint rather than wrapping `netflow_parser`: that crate drops whole sets
//! silently on zero-length variable fields, loses a datagram on one bad set, leaves uptime
//! arithmetic to the caller and decodes below the 3 M records/s flowprint needs.

pub mod fields;

use crate::flow::{Flow, normalize_name, proto};
use fields::{Plan, REVERSE_PEN, Step, Target, VARLEN, enterprise_target, iana_target};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// Counters of one exporter.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExporterStats {
    /// Datagrams (export packets) received.
    pub datagrams: u64,
    /// Flow records decoded.
    pub records: u64,
    /// Templates and options templates learned or refreshed.
    pub templates: u64,
    /// Options data records (sampling, system init time...).
    pub options_records: u64,
    /// Datagrams or sets that were malformed (truncated, bad lengths, wrong version).
    pub malformed: u64,
    /// Data sets that could not be decoded because their template never came or expired.
    pub missing_template: u64,
    /// Elements of unknown enterprises in templates (skipped).
    pub unknown_enterprise_fields: u64,
    /// Estimated lost records (v5, IPFIX) or export packets (v9), from sequence numbers.
    pub sequence_lost: u64,
    /// Data records without source or destination address (e.g. WLC client statistics):
    /// counted, not turned into flows.
    pub without_addresses: u64,
}

/// A datagram that could not be decoded at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Settings of a [`Decoder`].
#[derive(Debug, Clone)]
pub struct DecoderConfig {
    /// A template not refreshed for this long (by the exporter's clock) is forgotten, and data
    /// waiting this long for its template is given up. `None` (the default) keeps templates
    /// until replaced or withdrawn, as nfdump does: exporters refresh rarely, and a replaced
    /// template overwrites the old one anyway.
    pub template_timeout_ms: Option<i64>,
    /// Data sets held per session while waiting for their template.
    pub pending_max: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            template_timeout_ms: None,
            pending_max: 64,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Ctx {
    exporter: IpAddr,
    /// Export time of the message, ms since the epoch.
    export_ms: i64,
    /// v9: sysUpTime of the message.
    uptime_ms: Option<u32>,
}

struct Pending {
    template: u16,
    ctx: Ctx,
    data: Vec<u8>,
}

#[derive(Default)]
struct Session {
    templates: HashMap<u16, (Arc<Plan>, i64)>,
    sampling: Option<u32>,
    boot_ms: Option<i64>,
    last_seq: Option<(u32, u32)>,
    pending: VecDeque<Pending>,
}

/// Decodes NetFlow v5/v9 and IPFIX datagrams of any number of exporters.
#[derive(Default)]
pub struct Decoder {
    sessions: HashMap<(IpAddr, u32), Session>,
    stats: HashMap<IpAddr, ExporterStats>,
    config: DecoderConfig,
}

fn be(s: &[u8]) -> u64 {
    let s = if s.len() > 8 { &s[s.len() - 8..] } else { s };
    s.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

fn u16_at(d: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([d[i], d[i + 1]])
}

fn u32_at(d: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]])
}

/// Milliseconds since the Unix epoch of a 64-bit NTP timestamp.
fn ntp_to_ms(v: u64) -> i64 {
    let secs = (v >> 32) as i64 - 2_208_988_800;
    let frac = ((v & 0xffff_ffff) * 1000) >> 32;
    secs * 1000 + frac as i64
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

/// Decodes the records of one data set with `plan`; returns records decoded.
fn decode_records(
    plan: &Plan,
    data: &[u8],
    ctx: &Ctx,
    session: &mut SessionView,
    out: &mut dyn FnMut(Flow),
) -> Result<u64, String> {
    if plan.fixed_len == Some(0) {
        return Err("template describes zero-length records".into());
    }
    let mut pos = 0usize;
    let mut n = 0;
    while data.len() - pos >= plan.min_len.max(1) {
        if let Some(fl) = plan.fixed_len
            && data.len() - pos < fl
        {
            break;
        }
        let mut raw = Raw::default();
        for &Step { target, len } in &plan.steps {
            let len = if len == VARLEN {
                let Some(&l) = data.get(pos) else {
                    return Err("variable-length field runs past the set".into());
                };
                pos += 1;
                if l == 255 {
                    let Some(l2) = data.get(pos..pos + 2) else {
                        return Err("variable-length field runs past the set".into());
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
                // Fixed templates never get here (checked above); variable ones may be padding.
                if plan.fixed_len.is_none() && n > 0 {
                    return Ok(n);
                }
                return Err(format!("record field of {len} bytes runs past the set"));
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
    Ok(n)
}

struct SessionView<'a> {
    sampling: &'a mut Option<u32>,
    boot: &'a mut Option<i64>,
    stats: &'a mut ExporterStats,
}

impl Decoder {
    /// A decoder with default settings.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// A decoder with the given settings.
    pub fn with_config(config: DecoderConfig) -> Decoder {
        Decoder {
            config,
            ..Default::default()
        }
    }

    /// Counters per exporter.
    pub fn stats(&self) -> &HashMap<IpAddr, ExporterStats> {
        &self.stats
    }

    /// Whether a payload looks like NetFlow v5/v9 or IPFIX.
    pub fn is_netflow(payload: &[u8]) -> bool {
        payload.len() >= 4 && matches!(u16_at(payload, 0), 5 | 9 | 10)
    }

    /// Decodes one datagram from `exporter`, calling `out` for every flow. Returns the number
    /// of flows. Set-level problems are counted and the other sets still decoded; an error is
    /// returned only when nothing of the datagram could be used.
    pub fn decode(
        &mut self,
        exporter: IpAddr,
        payload: &[u8],
        out: &mut dyn FnMut(Flow),
    ) -> Result<u64, DecodeError> {
        let stats = self.stats.entry(exporter).or_default();
        stats.datagrams += 1;
        let result = match payload.get(..2).map(|v| u16::from_be_bytes([v[0], v[1]])) {
            Some(5) => self.decode_v5(exporter, payload, out),
            Some(9) => self.decode_v9(exporter, payload, out),
            Some(10) => self.decode_ipfix(exporter, payload, out),
            Some(v) => Err(format!("unsupported version {v}")),
            None => Err(format!("datagram of {} bytes is too short", payload.len())),
        };
        let stats = self.stats.entry(exporter).or_default();
        match result {
            Ok(n) => {
                stats.records += n;
                Ok(n)
            }
            Err(e) => {
                stats.malformed += 1;
                Err(DecodeError(e))
            }
        }
    }

    /// NetFlow v5; a buffer may hold several PDUs back to back (as some capture tools store
    /// them), which are decoded in turn.
    fn decode_v5(
        &mut self,
        exporter: IpAddr,
        mut d: &[u8],
        out: &mut dyn FnMut(Flow),
    ) -> Result<u64, String> {
        let mut total = 0;
        loop {
            let n = match self.decode_v5_pdu(exporter, d, out) {
                Ok(n) => n,
                // Earlier PDUs of the buffer were handed out: count them, and the bad one.
                Err(_) if total > 0 => {
                    self.stats.entry(exporter).or_default().malformed += 1;
                    return Ok(total);
                }
                Err(e) => return Err(e),
            };
            total += n;
            d = &d[24 + n as usize * 48..];
            if d.len() < 24 || u16_at(d, 0) != 5 {
                return Ok(total);
            }
        }
    }

    fn decode_v5_pdu(
        &mut self,
        exporter: IpAddr,
        d: &[u8],
        out: &mut dyn FnMut(Flow),
    ) -> Result<u64, String> {
        if d.len() < 24 {
            return Err(format!("NetFlow v5 header needs 24 bytes, got {}", d.len()));
        }
        let count = usize::from(u16_at(d, 2));
        if count == 0 || count > 30 {
            return Err(format!("NetFlow v5 record count {count} is outside 1..=30"));
        }
        if d.len() < 24 + count * 48 {
            return Err(format!(
                "NetFlow v5 datagram of {} bytes is too short for {count} records",
                d.len()
            ));
        }
        let uptime = u32_at(d, 4);
        let export_ms = i64::from(u32_at(d, 8)) * 1000 + i64::from(u32_at(d, 12) / 1_000_000);
        let seq = u32_at(d, 16);
        let engine = u32::from(u16_at(d, 20));
        let sampling = u16_at(d, 22) & 0x3fff;
        let session = self.sessions.entry((exporter, engine)).or_default();
        let stats = self.stats.entry(exporter).or_default();
        track_sequence(session, stats, seq, count as u32, true);
        let ctx = Ctx {
            exporter,
            export_ms,
            uptime_ms: Some(uptime),
        };
        let rate = u64::from(sampling.max(1));
        for r in 0..count {
            let b = &d[24 + r * 48..24 + (r + 1) * 48];
            let first = u32_at(b, 24);
            let last = u32_at(b, 28);
            let start = ctx.export_ms - uptime_delta(uptime, first);
            let end = ctx.export_ms - uptime_delta(uptime, last);
            out(Flow {
                start_ms: start,
                end_ms: end,
                src: IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
                dst: IpAddr::V4(Ipv4Addr::new(b[4], b[5], b[6], b[7])),
                src_port: u16_at(b, 32),
                dst_port: u16_at(b, 34),
                proto: b[38],
                bytes: u64::from(u32_at(b, 20)) * rate,
                packets: u64::from(u32_at(b, 16)) * rate,
                rev_bytes: 0,
                rev_packets: 0,
                tcp_flags: b[37],
                src_ttl: None,
                dst_ttl: None,
                src_name: None,
                dst_name: None,
                exporter: Some(exporter),
                sampling: rate as u32,
            });
        }
        Ok(count as u64)
    }

    fn decode_v9(
        &mut self,
        exporter: IpAddr,
        d: &[u8],
        out: &mut dyn FnMut(Flow),
    ) -> Result<u64, String> {
        if d.len() < 20 {
            return Err(format!("NetFlow v9 header needs 20 bytes, got {}", d.len()));
        }
        let ctx = Ctx {
            exporter,
            export_ms: i64::from(u32_at(d, 8)) * 1000,
            uptime_ms: Some(u32_at(d, 4)),
        };
        let seq = u32_at(d, 12);
        let domain = u32_at(d, 16);
        {
            let session = self.sessions.entry((exporter, domain)).or_default();
            let stats = self.stats.entry(exporter).or_default();
            track_sequence(session, stats, seq, 1, false);
        }
        self.decode_sets(exporter, domain, &d[20..], ctx, false, out)
    }

    fn decode_ipfix(
        &mut self,
        exporter: IpAddr,
        d: &[u8],
        out: &mut dyn FnMut(Flow),
    ) -> Result<u64, String> {
        if d.len() < 16 {
            return Err(format!("IPFIX header needs 16 bytes, got {}", d.len()));
        }
        let len = usize::from(u16_at(d, 2));
        if len < 16 || len > d.len() {
            return Err(format!(
                "IPFIX message length {len} does not fit the {} bytes received",
                d.len()
            ));
        }
        let ctx = Ctx {
            exporter,
            export_ms: i64::from(u32_at(d, 4)) * 1000,
            uptime_ms: None,
        };
        let seq = u32_at(d, 8);
        let domain = u32_at(d, 12);
        let mut records = 0u64;
        let result = self.decode_sets(exporter, domain, &d[16..len], ctx, true, &mut |f| {
            records += 1;
            out(f)
        });
        let session = self.sessions.entry((exporter, domain)).or_default();
        let stats = self.stats.entry(exporter).or_default();
        track_sequence(session, stats, seq, records as u32, true);
        result
    }

    fn decode_sets(
        &mut self,
        exporter: IpAddr,
        domain: u32,
        mut body: &[u8],
        ctx: Ctx,
        ipfix: bool,
        out: &mut dyn FnMut(Flow),
    ) -> Result<u64, String> {
        let timeout = self.config.template_timeout_ms.unwrap_or(i64::MAX);
        let pending_max = self.config.pending_max;
        let session = self.sessions.entry((exporter, domain)).or_default();
        let stats = self.stats.entry(exporter).or_default();
        let mut flows = 0u64;
        let mut first_error = None;
        let mut usable = false;
        while body.len() >= 4 {
            let id = u16_at(body, 0);
            let len = usize::from(u16_at(body, 2));
            if len < 4 || len > body.len() {
                // Padding at the end of a v9 packet is zeros; anything else is malformed.
                if body.iter().all(|&b| b == 0) {
                    break;
                }
                stats.malformed += 1;
                first_error.get_or_insert(format!(
                    "set {id} claims {len} bytes, {} remain",
                    body.len()
                ));
                break;
            }
            let set = &body[4..len];
            body = &body[len..];
            let is_template = if ipfix {
                id == 2 || id == 3
            } else {
                id == 0 || id == 1
            };
            if is_template {
                let options = if ipfix { id == 3 } else { id == 1 };
                match parse_templates(set, ipfix, options) {
                    Ok(list) => {
                        usable = true;
                        for (tid, plan) in list {
                            stats.templates += 1;
                            match plan {
                                None => {
                                    session.templates.remove(&tid);
                                }
                                Some(plan) => {
                                    stats.unknown_enterprise_fields +=
                                        u64::from(plan.unknown_enterprise);
                                    let plan = Arc::new(plan);
                                    session.templates.insert(tid, (plan.clone(), ctx.export_ms));
                                    // Data that waited for this template.
                                    let waiting: Vec<Pending> = {
                                        let (take, keep): (VecDeque<Pending>, VecDeque<Pending>) =
                                            session
                                                .pending
                                                .drain(..)
                                                .partition(|p| p.template == tid);
                                        session.pending = keep;
                                        take.into_iter().collect()
                                    };
                                    for p in waiting {
                                        let mut view = SessionView {
                                            sampling: &mut session.sampling,
                                            boot: &mut session.boot_ms,
                                            stats,
                                        };
                                        match decode_records(&plan, &p.data, &p.ctx, &mut view, out)
                                        {
                                            Ok(n) => flows += n,
                                            Err(_) => stats.malformed += 1,
                                        }
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => {
                        stats.malformed += 1;
                        first_error.get_or_insert(e);
                    }
                }
            } else if id >= 256 {
                let plan = match session.templates.get(&id) {
                    Some((plan, seen)) if ctx.export_ms.saturating_sub(*seen) <= timeout => {
                        Some(plan.clone())
                    }
                    Some(_) => {
                        session.templates.remove(&id);
                        None
                    }
                    None => None,
                };
                match plan {
                    Some(plan) => {
                        let mut view = SessionView {
                            sampling: &mut session.sampling,
                            boot: &mut session.boot_ms,
                            stats,
                        };
                        match decode_records(&plan, set, &ctx, &mut view, out) {
                            Ok(n) => {
                                usable = true;
                                flows += n;
                            }
                            Err(e) => {
                                stats.malformed += 1;
                                first_error.get_or_insert(format!("data set {id}: {e}"));
                            }
                        }
                    }
                    None => {
                        usable = true;
                        if session.pending.len() >= pending_max {
                            session.pending.pop_front();
                            stats.missing_template += 1;
                        }
                        session.pending.push_back(Pending {
                            template: id,
                            ctx,
                            data: set.to_vec(),
                        });
                    }
                }
            } else {
                stats.malformed += 1;
                first_error.get_or_insert(format!("reserved set id {id}"));
            }
        }
        // Pending data whose template did not come in time is given up.
        let before = session.pending.len();
        session
            .pending
            .retain(|p| ctx.export_ms.saturating_sub(p.ctx.export_ms) <= timeout);
        stats.missing_template += (before - session.pending.len()) as u64;
        match first_error {
            Some(e) if !usable => Err(e),
            _ => Ok(flows),
        }
    }

    /// Data sets still waiting for their template, over all sessions.
    pub fn pending(&self) -> usize {
        self.sessions.values().map(|s| s.pending.len()).sum()
    }
}

/// How long before the header's sysUpTime an uptime-stamped event happened, across the 32-bit
/// wrap (about every 49.7 days). Signed, because exporters sometimes stamp a flow's last packet
/// a few milliseconds after the header.
fn uptime_delta(header_uptime: u32, event: u32) -> i64 {
    i64::from(header_uptime.wrapping_sub(event) as i32)
}

fn track_sequence(
    session: &mut Session,
    stats: &mut ExporterStats,
    seq: u32,
    count: u32,
    per_record: bool,
) {
    if let Some((last, last_count)) = session.last_seq {
        let expected = if per_record {
            last.wrapping_add(last_count)
        } else {
            last.wrapping_add(1)
        };
        let gap = seq.wrapping_sub(expected);
        if gap != 0 && gap < 1 << 30 {
            stats.sequence_lost += u64::from(gap);
        }
    }
    session.last_seq = Some((seq, count));
}

/// Parses a template or options-template set. `None` plans are withdrawals.
fn parse_templates(
    set: &[u8],
    ipfix: bool,
    options: bool,
) -> Result<Vec<(u16, Option<Plan>)>, String> {
    let mut out = Vec::new();
    let mut p = 0usize;
    let need = |p: usize, n: usize| -> Result<(), String> {
        if p + n > set.len() {
            Err(format!("template set truncated at byte {p}"))
        } else {
            Ok(())
        }
    };
    while set.len() - p >= 4 {
        let tid = u16_at(set, p);
        if tid == 0 && set[p..].iter().all(|&b| b == 0) {
            break; // padding
        }
        let (field_count, scope_count) = if ipfix {
            let fc = u16_at(set, p + 2);
            p += 4;
            if fc == 0 {
                out.push((tid, None));
                continue;
            }
            let sc = if options {
                need(p, 2)?;
                let sc = u16_at(set, p);
                p += 2;
                sc
            } else {
                0
            };
            (usize::from(fc), sc)
        } else if options {
            need(p, 6)?;
            let scope_len = usize::from(u16_at(set, p + 2));
            let opt_len = usize::from(u16_at(set, p + 4));
            p += 6;
            if scope_len % 4 != 0 || opt_len % 4 != 0 {
                return Err(format!(
                    "options template {tid}: lengths {scope_len}/{opt_len} are not multiples of 4"
                ));
            }
            ((scope_len + opt_len) / 4, (scope_len / 4) as u16)
        } else {
            let fc = u16_at(set, p + 2);
            p += 4;
            (usize::from(fc), 0)
        };
        if tid < 256 {
            return Err(format!("template id {tid} is below 256"));
        }
        let mut fields = Vec::with_capacity(field_count.min(512));
        let mut unknown = 0u16;
        for i in 0..field_count {
            need(p, 4)?;
            let raw_id = u16_at(set, p);
            let len = u16_at(set, p + 2);
            p += 4;
            let is_scope = i < usize::from(scope_count);
            let target = if ipfix && raw_id & 0x8000 != 0 {
                need(p, 4)?;
                let pen = u32_at(set, p);
                p += 4;
                let t = enterprise_target(pen, raw_id & 0x7fff);
                if t == Target::Skip && pen != REVERSE_PEN {
                    unknown = unknown.saturating_add(1);
                }
                t
            } else if !ipfix && options && is_scope {
                // v9 scope field types (system, interface, ...) are not IEs.
                Target::Skip
            } else {
                iana_target(raw_id, ipfix)
            };
            if len == VARLEN && !ipfix {
                return Err(format!(
                    "template {tid}: field {raw_id} has length 65535, which NetFlow v9 does not allow"
                ));
            }
            fields.push((target, len));
        }
        out.push((tid, Some(Plan::new(&fields, options, scope_count, unknown))));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
