//! Passive DNS sources: Zeek `dns.log` (TSV with a `#fields` header, or JSON lines), tshark's
//! field output with a header line (see `docs/dns.md` for the command), flowprint's own JSON
//! lines, and DNS answers inside packet captures.
//!
//! flowprint's format, one answer per line:
//! `{"ts": "2024-05-01T10:00:00Z" | 1714557600.25, "query": "www.example.com",
//!   "answers": ["93.184.216.34", "2606:2800:220:1::"], "ttl": 300}`.
//! Answers that are not addresses (CNAME targets in Zeek's `answers`) are skipped: every address
//! is recorded under the query name.

use super::{DnsMap, Source};
use crate::flow::ingest::{ReadError, ReadStats};
use serde::Deserialize;
use std::io::{BufRead, Read};
use std::net::IpAddr;

/// One DNS answer set.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// The name asked for.
    pub query: String,
    /// The addresses in the answer.
    pub addrs: Vec<IpAddr>,
    /// TTL, seconds.
    pub ttl: u32,
}

impl Answer {
    /// flowprint's JSON line for this answer.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ts": crate::flow::time::format_rfc3339(self.at_ms),
            "query": self.query,
            "answers": self.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "ttl": self.ttl,
        })
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Ts {
    Secs(f64),
    Text(String),
}

#[derive(Deserialize)]
struct JsonAnswer {
    ts: Ts,
    query: Option<String>,
    #[serde(default)]
    answers: Vec<String>,
    ttl: Option<f64>,
    #[serde(rename = "TTLs", default)]
    ttls: Vec<f64>,
}

fn ts_ms(ts: &Ts) -> Option<i64> {
    match ts {
        Ts::Secs(s) if s.is_finite() => Some((s * 1000.0) as i64),
        Ts::Secs(_) => None,
        Ts::Text(t) => crate::flow::time::parse_timestamp(t)
            .or_else(|| t.parse::<f64>().ok().map(|s| (s * 1000.0) as i64)),
    }
}

fn ttl_of(v: Option<f64>) -> u32 {
    v.filter(|t| t.is_finite() && *t >= 0.0)
        .map_or(0, |t| t.min(f64::from(u32::MAX)) as u32)
}

/// Reads a passive DNS log (Zeek TSV or JSON, or flowprint JSON lines), calling `on_answer` for
/// each answer with at least one address. Malformed lines are reported and skipped.
pub fn read_log<R: BufRead>(
    reader: R,
    source: &str,
    on_answer: &mut dyn FnMut(Answer),
    on_error: &mut dyn FnMut(ReadError),
) -> std::io::Result<ReadStats> {
    let mut stats = ReadStats::default();
    let mut zeek_fields: Option<Vec<String>> = None;
    let mut reader = reader;
    let mut buf = Vec::new();
    loop {
        // Lines are capped (`MAX_LINE`): an endless line is skipped, never buffered whole.
        let kind = crate::flow::ingest::lines::read_line(
            &mut reader,
            &mut buf,
            crate::flow::ingest::MAX_LINE,
        )?;
        if kind == crate::flow::ingest::lines::Line::Eof {
            break;
        }
        stats.lines += 1;
        if kind == crate::flow::ingest::lines::Line::TooLong {
            stats.skipped += 1;
            on_error(ReadError {
                source: source.to_string(),
                line: stats.lines,
                reason: crate::flow::ingest::Reason::LineTooLong,
            });
            continue;
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let mut fail = |stats: &mut ReadStats, reason: String| {
            stats.skipped += 1;
            on_error(ReadError {
                source: source.to_string(),
                line: stats.lines,
                reason: crate::flow::ingest::Reason::DnsLog(reason),
            });
        };
        if let Some(rest) = line.strip_prefix("#fields") {
            zeek_fields = Some(
                rest.split('\t')
                    .filter(|f| !f.is_empty())
                    .map(str::to_string)
                    .collect(),
            );
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        // tshark -T fields -E header=y: a header line of field names, tab-separated.
        if zeek_fields.is_none() && line.starts_with("frame.time_epoch\t") {
            fn role(f: &str) -> &str {
                match f {
                    "frame.time_epoch" => "ts",
                    "dns.qry.name" => "query",
                    "dns.a" => "answers",
                    "dns.aaaa" => "answers6",
                    "dns.resp.ttl" => "TTLs",
                    other => other,
                }
            }
            zeek_fields = Some(line.split('\t').map(|f| role(f).to_string()).collect());
            continue;
        }
        let answer = if line.starts_with('{') {
            match serde_json::from_str::<JsonAnswer>(line) {
                Ok(j) => {
                    let Some(at_ms) = ts_ms(&j.ts) else {
                        fail(&mut stats, "bad `ts`".into());
                        continue;
                    };
                    let ttl = ttl_of(j.ttl.or(j.ttls.first().copied()));
                    Answer {
                        at_ms,
                        query: j.query.unwrap_or_default(),
                        addrs: j.answers.iter().filter_map(|a| a.parse().ok()).collect(),
                        ttl,
                    }
                }
                Err(e) => {
                    fail(&mut stats, format!("not a DNS answer object: {e}"));
                    continue;
                }
            }
        } else if let Some(fields) = &zeek_fields {
            let cols: Vec<&str> = line.split('\t').collect();
            let get = |name: &str| {
                fields
                    .iter()
                    .position(|f| f == name)
                    .and_then(|i| cols.get(i).copied())
            };
            let (Some(ts), Some(query)) = (get("ts"), get("query")) else {
                fail(&mut stats, "missing `ts` or `query` column".into());
                continue;
            };
            let Some(at_ms) = ts_ms(&Ts::Text(ts.to_string())) else {
                fail(&mut stats, format!("bad `ts` `{ts}`"));
                continue;
            };
            let list = |v: Option<&str>| -> Vec<String> {
                match v {
                    None | Some("") | Some("-") | Some("(empty)") => Vec::new(),
                    Some(v) => v.split(',').map(str::to_string).collect(),
                }
            };
            let mut addrs: Vec<IpAddr> = list(get("answers"))
                .iter()
                .chain(list(get("answers6")).iter())
                .filter_map(|a| a.parse().ok())
                .collect();
            addrs.dedup();
            // The smallest TTL of the answer: a CNAME's TTL can be longer than its target's.
            let ttl = list(get("TTLs"))
                .iter()
                .filter_map(|t| t.parse::<f64>().ok())
                .reduce(f64::min);
            Answer {
                at_ms,
                // tshark aggregates several questions with commas; the first is the query.
                query: query.split(',').next().unwrap_or_default().to_string(),
                addrs,
                ttl: ttl_of(ttl),
            }
        } else {
            fail(
                &mut stats,
                "neither JSON nor a Zeek log (no `#fields` header before this line)".into(),
            );
            continue;
        };
        if answer.query.is_empty() || answer.query == "-" || answer.addrs.is_empty() {
            continue;
        }
        stats.flows += 1;
        on_answer(answer);
    }
    Ok(stats)
}

/// The DNS answers (A and AAAA) of the DNS responses in a pcap/pcapng capture.
pub fn read_capture_answers<R: Read>(
    reader: R,
    on_answer: &mut dyn FnMut(Answer),
) -> std::io::Result<u64> {
    use hickory_proto::op::Message;
    use hickory_proto::rr::RData;
    let mut n = 0;
    crate::flow::capture::read_capture(reader, &mut |d| {
        if d.src.port() != 53 && d.src.port() != 5353 {
            return;
        }
        let Ok(msg) = Message::from_vec(d.payload) else {
            return;
        };
        let Some(q) = msg.queries.first() else { return };
        let mut addrs = Vec::new();
        let mut ttl = u32::MAX;
        for r in &msg.answers {
            match &r.data {
                RData::A(a) => addrs.push(IpAddr::V4(a.0)),
                RData::AAAA(a) => addrs.push(IpAddr::V6(a.0)),
                _ => continue,
            }
            ttl = ttl.min(r.ttl);
        }
        if addrs.is_empty() {
            return;
        }
        n += 1;
        on_answer(Answer {
            at_ms: d.ts_ms,
            query: q.name().to_string().trim_end_matches('.').to_string(),
            addrs,
            ttl,
        });
    })?;
    Ok(n)
}

/// Loads a passive DNS source (a capture, or a log in any supported format) into `map`.
pub fn load_into(
    map: &mut DnsMap,
    path: &str,
    on_error: &mut dyn FnMut(ReadError),
) -> std::io::Result<u64> {
    let mut reader = crate::flow::ingest::open_input(path)?;
    let head = reader.fill_buf()?;
    let mut n = 0;
    if crate::flow::capture::is_capture(head) {
        read_capture_answers(reader, &mut |a| {
            n += 1;
            for addr in &a.addrs {
                map.insert(*addr, &a.query, a.at_ms, a.ttl, Source::Capture);
            }
        })?;
    } else {
        read_log(
            reader,
            path,
            &mut |a| {
                n += 1;
                for addr in &a.addrs {
                    map.insert(*addr, &a.query, a.at_ms, a.ttl, Source::Log);
                }
            },
            on_error,
        )?;
    }
    Ok(n)
}
