//! NetFlow v5, NetFlow v9 and IPFIX decoding into normalized [`Flow`]s.
//!
//! Templates are kept per session — (exporter address, source id / observation domain) — and
//! compiled into flat [`fields::Plan`]s when they arrive, so decoding a record is one pass over
//! a short list of steps. Data that arrives before its template is held and decoded when the
//! template comes; templates expire when not refreshed (when a timeout is set). Sessions,
//! templates, held data and per-exporter counters are all capped, least recently used first
//! (`state.rs`, [`DecoderConfig`]). Variable-length fields (length 65535) are read as RFC 7011
//! §7 says, in IPFIX and in v9 alike (as nfdump does). Every problem and every eviction is
//! counted per exporter in [`ExporterStats`]; nothing panics and no length field makes it
//! allocate more than the datagram it came in.
//!
//! Written for flowprint rather than wrapping `netflow_parser`: that crate drops whole sets
//! silently on zero-length variable fields, loses a datagram on one bad set, leaves uptime
//! arithmetic to the caller and decodes below the 3 M records/s flowprint needs.

#[doc(hidden)]
pub mod build;
pub mod fields;
mod records;
mod sets;
mod state;

use crate::flow::Flow;
pub use records::RecordError;
pub use sets::SetError;
use sets::{decode_sets, track_sequence};
use state::State;
pub use state::{MAX_TEMPLATE_FIELDS, StateStats};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

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
    /// Sessions (source ids / observation domains) of this exporter evicted to stay within
    /// the decoder's caps.
    pub sessions_evicted: u64,
    /// Templates evicted to stay within the caps (with their session, or beyond
    /// `max_templates_per_session`).
    pub templates_evicted: u64,
    /// Templates not refreshed within the template timeout, forgotten.
    pub templates_expired: u64,
}

impl ExporterStats {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &ExporterStats) {
        self.zip(other, |a, b| *a += b);
    }

    /// What these counts gained since `before` (field by field, never negative).
    pub fn since(&self, before: &ExporterStats) -> ExporterStats {
        let mut d = self.clone();
        d.zip(before, |a, b| *a = a.saturating_sub(b));
        d
    }

    fn zip(&mut self, o: &ExporterStats, f: impl Fn(&mut u64, u64)) {
        f(&mut self.datagrams, o.datagrams);
        f(&mut self.records, o.records);
        f(&mut self.templates, o.templates);
        f(&mut self.options_records, o.options_records);
        f(&mut self.malformed, o.malformed);
        f(&mut self.missing_template, o.missing_template);
        f(
            &mut self.unknown_enterprise_fields,
            o.unknown_enterprise_fields,
        );
        f(&mut self.sequence_lost, o.sequence_lost);
        f(&mut self.without_addresses, o.without_addresses);
        f(&mut self.sessions_evicted, o.sessions_evicted);
        f(&mut self.templates_evicted, o.templates_evicted);
        f(&mut self.templates_expired, o.templates_expired);
    }
}

/// A datagram that could not be decoded at all: its header, or (for v9 and IPFIX) nothing of
/// its sets was usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A version other than 5, 9 or 10 (IPFIX).
    #[error("unsupported version {0}")]
    Version(u16),
    /// Not even the version field.
    #[error("datagram of {0} bytes is too short")]
    TooShort(usize),
    /// A header cut short.
    #[error("{protocol} header needs {need} bytes, got {got}")]
    Header {
        /// "NetFlow v5", "NetFlow v9" or "IPFIX".
        protocol: &'static str,
        /// The header's size.
        need: usize,
        /// The bytes received.
        got: usize,
    },
    /// A NetFlow v5 record count outside 1..=30.
    #[error("NetFlow v5 record count {0} is outside 1..=30")]
    V5Count(usize),
    /// A NetFlow v5 datagram shorter than its records.
    #[error("NetFlow v5 datagram of {len} bytes is too short for {count} records")]
    V5Records {
        /// The bytes received.
        len: usize,
        /// The records its header announces.
        count: usize,
    },
    /// An IPFIX message length that does not fit the datagram.
    #[error("IPFIX message length {length} does not fit the {len} bytes received")]
    IpfixLength {
        /// The length the header announces.
        length: usize,
        /// The bytes received.
        len: usize,
    },
    /// No set of a v9 or IPFIX datagram was usable: the first set's problem.
    #[error(transparent)]
    Sets(SetError),
}

/// Settings of a [`Decoder`]: the template timeout and the caps on what datagrams can make
/// it keep (docs/limits.md, "Collector"). Every cap evicts the least recently used entry.
#[derive(Debug, Clone)]
pub struct DecoderConfig {
    /// A template not refreshed for this long (by the exporter's clock) is forgotten, and data
    /// waiting this long for its template is given up. `None` (the default, for files) keeps
    /// templates until replaced, withdrawn or evicted, as nfdump does: a capture or file may
    /// carry a template once at its start. The collector uses [`DecoderConfig::collector`].
    pub template_timeout_ms: Option<i64>,
    /// Data sets held per session while waiting for their template.
    pub pending_max: usize,
    /// Bytes of data sets held per session while waiting for their template.
    pub pending_bytes_max: usize,
    /// Exporters whose counters (and sessions) are kept.
    pub max_exporters: usize,
    /// Sessions (exporter × source id / observation domain) kept in all.
    pub max_sessions: usize,
    /// Sessions kept per exporter.
    pub max_sessions_per_exporter: usize,
    /// Templates kept per session.
    pub max_templates_per_session: usize,
    /// Bytes of templates and pending data kept over all sessions.
    pub max_state_bytes: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            template_timeout_ms: None,
            pending_max: 64,
            pending_bytes_max: 256 << 10,
            max_exporters: 4096,
            max_sessions: 16_384,
            max_sessions_per_exporter: 256,
            max_templates_per_session: 1024,
            max_state_bytes: 128 << 20,
        }
    }
}

impl DecoderConfig {
    /// The settings of a network collector: the defaults with a one-hour template timeout
    /// (exporters over UDP resend their templates, Cisco's default every 30 minutes; twice
    /// that survives one lost refresh).
    pub fn collector() -> DecoderConfig {
        DecoderConfig {
            template_timeout_ms: Some(3_600_000),
            ..DecoderConfig::default()
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

/// Decodes NetFlow v5/v9 and IPFIX datagrams of any number of exporters.
pub struct Decoder {
    state: State,
    config: DecoderConfig,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::with_config(DecoderConfig::default())
    }
}

fn u16_at(d: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([d[i], d[i + 1]])
}

fn u32_at(d: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]])
}

impl Decoder {
    /// A decoder with default settings.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// A decoder with the given settings.
    pub fn with_config(config: DecoderConfig) -> Decoder {
        Decoder {
            state: State::new(),
            config,
        }
    }

    /// Counters of every exporter kept (at most `max_exporters`; the evicted ones' counters
    /// are added up in [`StateStats::evicted`]).
    pub fn stats(&self) -> HashMap<IpAddr, ExporterStats> {
        self.state
            .all_stats()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    /// Counters of one exporter, if kept.
    pub fn exporter_stats(&self, exporter: &IpAddr) -> Option<&ExporterStats> {
        self.state.peek_stats(exporter)
    }

    /// What the last [`Decoder::decode`] added to the counters of exporters other than its
    /// own (their sessions evicted to make room), per exporter.
    pub fn counted_elsewhere(&self) -> &[(IpAddr, ExporterStats)] {
        self.state.elsewhere()
    }

    /// Sizes of the state and what was evicted from it.
    pub fn state_stats(&self) -> StateStats {
        self.state.figures()
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
        self.state.begin(exporter);
        self.state.stats(exporter, &self.config).datagrams += 1;
        let result = match payload.get(..2).map(|v| u16::from_be_bytes([v[0], v[1]])) {
            Some(5) => self.decode_v5(exporter, payload, out),
            Some(9) => self.decode_v9(exporter, payload, out),
            Some(10) => self.decode_ipfix(exporter, payload, out),
            Some(v) => Err(DecodeError::Version(v)),
            None => Err(DecodeError::TooShort(payload.len())),
        };
        let stats = self.state.stats(exporter, &self.config);
        match result {
            Ok(n) => {
                stats.records += n;
                Ok(n)
            }
            Err(e) => {
                stats.malformed += 1;
                Err(e)
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
    ) -> Result<u64, DecodeError> {
        let mut total = 0;
        loop {
            let n = match self.decode_v5_pdu(exporter, d, out) {
                Ok(n) => n,
                // Earlier PDUs of the buffer were handed out: count them, and the bad one.
                Err(_) if total > 0 => {
                    self.state.stats(exporter, &self.config).malformed += 1;
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
    ) -> Result<u64, DecodeError> {
        if d.len() < 24 {
            return Err(DecodeError::Header {
                protocol: "NetFlow v5",
                need: 24,
                got: d.len(),
            });
        }
        let count = usize::from(u16_at(d, 2));
        if count == 0 || count > 30 {
            return Err(DecodeError::V5Count(count));
        }
        if d.len() < 24 + count * 48 {
            return Err(DecodeError::V5Records {
                len: d.len(),
                count,
            });
        }
        let uptime = u32_at(d, 4);
        let export_ms = i64::from(u32_at(d, 8)) * 1000 + i64::from(u32_at(d, 12) / 1_000_000);
        let seq = u32_at(d, 16);
        let engine = u32::from(u16_at(d, 20));
        let sampling = u16_at(d, 22) & 0x3fff;
        let (session, stats) = self.state.session(exporter, engine, &self.config);
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
    ) -> Result<u64, DecodeError> {
        if d.len() < 20 {
            return Err(DecodeError::Header {
                protocol: "NetFlow v9",
                need: 20,
                got: d.len(),
            });
        }
        let ctx = Ctx {
            exporter,
            export_ms: i64::from(u32_at(d, 8)) * 1000,
            uptime_ms: Some(u32_at(d, 4)),
        };
        let seq = u32_at(d, 12);
        let domain = u32_at(d, 16);
        let before = self.state.session_bytes(exporter, domain);
        let (session, stats) = self.state.session(exporter, domain, &self.config);
        track_sequence(session, stats, seq, 1, false);
        let result = decode_sets(session, stats, &self.config, &d[20..], ctx, false, out);
        let after = self.state.session_bytes(exporter, domain);
        self.state.settle(before, after, &self.config);
        result.map_err(DecodeError::Sets)
    }

    fn decode_ipfix(
        &mut self,
        exporter: IpAddr,
        d: &[u8],
        out: &mut dyn FnMut(Flow),
    ) -> Result<u64, DecodeError> {
        if d.len() < 16 {
            return Err(DecodeError::Header {
                protocol: "IPFIX",
                need: 16,
                got: d.len(),
            });
        }
        let len = usize::from(u16_at(d, 2));
        if len < 16 || len > d.len() {
            return Err(DecodeError::IpfixLength {
                length: len,
                len: d.len(),
            });
        }
        let ctx = Ctx {
            exporter,
            export_ms: i64::from(u32_at(d, 4)) * 1000,
            uptime_ms: None,
        };
        let seq = u32_at(d, 8);
        let domain = u32_at(d, 12);
        let mut records = 0u64;
        let before = self.state.session_bytes(exporter, domain);
        let (session, stats) = self.state.session(exporter, domain, &self.config);
        let result = decode_sets(
            session,
            stats,
            &self.config,
            &d[16..len],
            ctx,
            true,
            &mut |f| {
                records += 1;
                out(f)
            },
        );
        track_sequence(session, stats, seq, records as u32, true);
        let after = self.state.session_bytes(exporter, domain);
        self.state.settle(before, after, &self.config);
        result.map_err(DecodeError::Sets)
    }

    /// Data sets still waiting for their template, over all sessions.
    pub fn pending(&self) -> usize {
        self.state.figures().pending
    }
}

/// How long before the header's sysUpTime an uptime-stamped event happened, across the 32-bit
/// wrap (about every 49.7 days). Signed, because exporters sometimes stamp a flow's last packet
/// a few milliseconds after the header.
pub(super) fn uptime_delta(header_uptime: u32, event: u32) -> i64 {
    i64::from(header_uptime.wrapping_sub(event) as i32)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_limits;
