//! Header-driven CSV: nfdump `-o csv` (1.6/1.7 short names and the newer camelCase names),
//! nfdump `-o csv-fast`, and NFStream's CSV. Columns are found by their header name, so any
//! subset and order works as long as the source and destination addresses are there.
//!
//! nfdump ends its CSV with a `Summary` block (`Summary`, `flows,bytes,...`, values), which is
//! skipped; a new header line may follow and replaces the current one.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use super::Outcome;
use super::value::{
    FieldError, parse_addr, parse_dst_port, parse_proto, parse_seconds, parse_tcp_flags,
    parse_time, parse_uint, shown,
};
use crate::flow::{Flow, normalize_name, proto};

/// A flow field a CSV column can fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Start,
    End,
    Duration,
    Src,
    Dst,
    SrcPort,
    DstPort,
    Proto,
    Flags,
    Packets,
    Bytes,
    RevPackets,
    RevBytes,
    SrcTtl,
    DstTtl,
    SrcName,
    DstName,
    /// NFStream's `requested_server_name`: the server's name for TLS, HTTP and QUIC, the queried
    /// name for DNS, but the *client's* name for DHCP and a query for LLMNR/NetBIOS/mDNS/SSDP.
    ServerName,
    Exporter,
    Sampling,
    IcmpType,
    IcmpCode,
}

/// Header names (compared case-insensitively) and the field each fills.
const HEADER_NAMES: &[(&str, Column)] = &[
    // nfdump 1.6/1.7 `-o csv`
    ("ts", Column::Start),
    ("te", Column::End),
    ("td", Column::Duration),
    ("sa", Column::Src),
    ("da", Column::Dst),
    ("sp", Column::SrcPort),
    ("dp", Column::DstPort),
    ("pr", Column::Proto),
    ("flg", Column::Flags),
    ("ipkt", Column::Packets),
    ("ibyt", Column::Bytes),
    ("pkt", Column::Packets),
    ("byt", Column::Bytes),
    ("opkt", Column::RevPackets),
    ("obyt", Column::RevBytes),
    ("ra", Column::Exporter),
    // newer nfdump `-o csv` / `-o csv-fast` / `-o csv:%fmt`
    ("firstSeen", Column::Start),
    ("lastSeen", Column::End),
    ("duration", Column::Duration),
    ("srcAddr", Column::Src),
    ("dstAddr", Column::Dst),
    ("srcPort", Column::SrcPort),
    ("dstPort", Column::DstPort),
    ("proto", Column::Proto),
    ("flags", Column::Flags),
    ("packets", Column::Packets),
    ("inPackets", Column::Packets),
    ("bytes", Column::Bytes),
    ("inBytes", Column::Bytes),
    ("outPackets", Column::RevPackets),
    ("outBytes", Column::RevBytes),
    ("routerIP", Column::Exporter),
    ("minTTL", Column::SrcTtl),
    ("sniName", Column::DstName),
    ("icmpType", Column::IcmpType),
    ("icmpCode", Column::IcmpCode),
    // NFStream
    ("src_ip", Column::Src),
    ("dst_ip", Column::Dst),
    ("src_port", Column::SrcPort),
    ("dst_port", Column::DstPort),
    ("protocol", Column::Proto),
    ("bidirectional_first_seen_ms", Column::Start),
    ("bidirectional_last_seen_ms", Column::End),
    ("src2dst_packets", Column::Packets),
    ("src2dst_bytes", Column::Bytes),
    ("dst2src_packets", Column::RevPackets),
    ("dst2src_bytes", Column::RevBytes),
    ("requested_server_name", Column::ServerName),
    // flowprint's JSON key names, for hand-written CSV
    ("start", Column::Start),
    ("end", Column::End),
    ("src", Column::Src),
    ("dst", Column::Dst),
    ("tcp_flags", Column::Flags),
    ("rev_packets", Column::RevPackets),
    ("rev_bytes", Column::RevBytes),
    ("src_ttl", Column::SrcTtl),
    ("dst_ttl", Column::DstTtl),
    ("src_name", Column::SrcName),
    ("dst_name", Column::DstName),
    ("exporter", Column::Exporter),
    ("sampling", Column::Sampling),
];

fn column_of(name: &str) -> Option<Column> {
    HEADER_NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, c)| c)
}

/// The header names that fill `col`, for error messages.
fn names_of(col: Column) -> String {
    let names: Vec<String> = HEADER_NAMES
        .iter()
        .filter(|&&(_, c)| c == col)
        .map(|(n, _)| format!("`{n}`"))
        .collect();
    names.join(", ")
}

/// What is wrong with a quoted CSV field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// The line ends inside the quotes.
    #[error("unterminated quoted field")]
    Unterminated,
    /// Something other than `,` or the end of the line follows the closing quote.
    #[error("text after the closing quote of a field")]
    AfterQuote,
}

/// Why a CSV line is not a record, or (for the header kinds) why the rest of the input cannot
/// be read. Columns are 1-based; header names and quoted input are cut for display.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    /// A malformed quoted field.
    #[error("{error} in column {column}")]
    Quote {
        /// The column.
        column: usize,
        /// What is wrong with it.
        error: QuoteError,
    },
    /// A record with more or fewer fields than the header.
    #[error("{count} fields where the header has {columns}")]
    FieldCount {
        /// Fields of the record.
        count: usize,
        /// Columns of the header.
        columns: usize,
    },
    /// A field that cannot be read (the first one of the record).
    #[error("{error} in column {column} `{name}`")]
    Field {
        /// The column.
        column: usize,
        /// Its header name.
        name: String,
        /// What is wrong with its value (in the message, not as a source: the chain
        /// prints once).
        error: FieldError,
    },
    /// A record without a source or destination address.
    #[error("missing source or destination address")]
    MissingAddress,
    /// The first line is not a header.
    #[error(
        "expected a CSV header line naming the columns (like `ts,te,td,sa,da,sp,dp,pr,...`), \
         found `{found}`"
    )]
    NoHeader {
        /// The line, cut for display.
        found: String,
    },
    /// A header without a source or destination address column.
    #[error("the CSV header has no {what} column (one of {names}): `{header}`")]
    HeaderWithout {
        /// "source address" or "destination address".
        what: &'static str,
        /// The header names that would do, quoted.
        names: String,
        /// The header line, cut for display.
        header: String,
    },
}

/// Splits a CSV line into fields: `,`-separated, RFC 4180 quotes (`"a,b"`, `"say ""hi"""`),
/// surrounding spaces trimmed. Yields `Err` for an unterminated or malformed quoted field.
struct Fields<'a> {
    rest: &'a str,
    done: bool,
}

impl<'a> Fields<'a> {
    fn new(line: &'a str) -> Self {
        Fields {
            rest: line,
            done: false,
        }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Cow<'a, str>, QuoteError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let s = self.rest.trim_start_matches(' ');
        if let Some(quoted) = s.strip_prefix('"') {
            // Find the closing quote, skipping doubled quotes.
            let bytes = quoted.as_bytes();
            let mut i = 0;
            let mut escaped = false;
            loop {
                match bytes[i..].iter().position(|&b| b == b'"') {
                    None => {
                        self.done = true;
                        return Some(Err(QuoteError::Unterminated));
                    }
                    Some(j) if bytes.get(i + j + 1) == Some(&b'"') => {
                        escaped = true;
                        i += j + 2;
                    }
                    Some(j) => {
                        i += j;
                        break;
                    }
                }
            }
            let content = &quoted[..i];
            let after = quoted[i + 1..].trim_start_matches(' ');
            if after.is_empty() {
                self.done = true;
            } else if let Some(rest) = after.strip_prefix(',') {
                self.rest = rest;
            } else {
                self.done = true;
                return Some(Err(QuoteError::AfterQuote));
            }
            let field = if escaped {
                Cow::Owned(content.replace("\"\"", "\""))
            } else {
                Cow::Borrowed(content)
            };
            return Some(Ok(field));
        }
        let field = match s.bytes().position(|b| b == b',') {
            Some(i) => {
                self.rest = &s[i + 1..];
                &s[..i]
            }
            None => {
                self.done = true;
                s
            }
        };
        Some(Ok(Cow::Borrowed(field.trim_end_matches(' '))))
    }
}

/// Whether a line is a header: every field a name like `ts`, `src2dst_bytes` or
/// `mplsLabel1-10`. A record never passes, as its addresses start with a digit or hold a `:`.
fn looks_like_header(line: &str) -> bool {
    line.split(',').all(|f| {
        let f = f.trim_matches(' ');
        let mut b = f.bytes();
        matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
            && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
    })
}

/// Where the reader is in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first header.
    NeedHeader,
    /// Reading records.
    Data,
    /// After a `Summary` line: expecting `flows,bytes,...`.
    SummaryTitle,
    /// After the summary's header: expecting its values.
    SummaryValues,
}

/// The CSV reader of one input.
pub(super) struct CsvReader {
    state: State,
    /// Column index → field, from the current header.
    columns: Vec<Option<Column>>,
    /// Column index → header name, for error messages.
    names: Vec<Box<str>>,
}

impl CsvReader {
    /// A reader expecting a header line first.
    pub(super) fn new() -> Self {
        CsvReader {
            state: State::NeedHeader,
            columns: Vec::new(),
            names: Vec::new(),
        }
    }

    /// Handles one non-blank line.
    pub(super) fn line(&mut self, line: &str) -> Outcome {
        match self.state {
            State::NeedHeader => {
                if looks_like_header(line) {
                    self.header(line)
                } else {
                    let found = shown(line).into_owned();
                    Outcome::Fatal(CsvError::NoHeader { found })
                }
            }
            State::SummaryTitle if line.starts_with("flows,") => {
                self.state = State::SummaryValues;
                Outcome::Skip
            }
            State::SummaryValues if is_summary_values(line) => {
                self.state = State::Data;
                Outcome::Skip
            }
            State::Data | State::SummaryTitle | State::SummaryValues => {
                self.state = State::Data;
                if line.trim_ascii() == "Summary" {
                    self.state = State::SummaryTitle;
                    Outcome::Skip
                } else if looks_like_header(line) {
                    self.header(line)
                } else {
                    match self.record(line) {
                        Ok(flow) => Outcome::Flow(flow),
                        Err(error) => Outcome::Malformed(super::Reason::Csv(error)),
                    }
                }
            }
        }
    }

    /// Takes a header line as the new column layout.
    fn header(&mut self, line: &str) -> Outcome {
        self.columns.clear();
        self.names.clear();
        for name in line.split(',') {
            let name = name.trim_matches(' ');
            self.columns.push(column_of(name));
            self.names.push(name.into());
        }
        for (required, what) in [
            (Column::Src, "source address"),
            (Column::Dst, "destination address"),
        ] {
            if !self.columns.contains(&Some(required)) {
                self.state = State::NeedHeader;
                let error = CsvError::HeaderWithout {
                    what,
                    names: names_of(required),
                    header: shown(line).into_owned(),
                };
                return Outcome::Fatal(error);
            }
        }
        self.state = State::Data;
        Outcome::Skip
    }

    /// Parses one record with the current header.
    fn record(&self, line: &str) -> Result<Flow, CsvError> {
        let mut row = Row::default();
        let mut first_error: Option<CsvError> = None;
        let mut count = 0usize;
        for (i, field) in Fields::new(line).enumerate() {
            count = i + 1;
            let field = field.map_err(|error| CsvError::Quote {
                column: i + 1,
                error,
            })?;
            if first_error.is_none()
                && let Some(Some(col)) = self.columns.get(i)
                && let Err(error) = row.set(*col, &field)
            {
                first_error = Some(CsvError::Field {
                    column: i + 1,
                    name: shown(&self.names[i]).into_owned(),
                    error,
                });
            }
        }
        if count != self.columns.len() {
            return Err(CsvError::FieldCount {
                count,
                columns: self.columns.len(),
            });
        }
        match first_error {
            Some(e) => Err(e),
            None => row.finish(),
        }
    }
}

/// Whether a line is the values line of nfdump's summary (numbers only).
fn is_summary_values(line: &str) -> bool {
    line.split(',').all(|f| {
        let f = f.trim_matches(' ');
        !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    })
}

/// The fields of one record as they are parsed.
#[derive(Default)]
struct Row {
    start: Option<i64>,
    end: Option<i64>,
    duration: Option<i64>,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    src_port: u16,
    dst_port: u16,
    proto: u8,
    flags: u8,
    packets: u64,
    bytes: u64,
    rev_packets: u64,
    rev_bytes: u64,
    src_ttl: Option<u8>,
    dst_ttl: Option<u8>,
    src_name: Option<Arc<str>>,
    dst_name: Option<Arc<str>>,
    server_name: Option<Arc<str>>,
    exporter: Option<IpAddr>,
    sampling: Option<u32>,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
}

/// A TTL of 0 means "not exported".
fn ttl(v: &str, what: &'static str) -> Result<Option<u8>, FieldError> {
    Ok(Some(parse_uint::<u8>(v, what)?).filter(|&t| t != 0))
}

/// A host name column; `0` is what nfdump prints for "no name".
fn name(v: &str) -> Option<Arc<str>> {
    if v == "0" { None } else { normalize_name(v) }
}

impl Row {
    /// Parses one field into its slot. Empty fields leave optional slots unset.
    fn set(&mut self, col: Column, v: &str) -> Result<(), FieldError> {
        if v.is_empty() {
            return match col {
                Column::Src => Err(FieldError::Missing {
                    field: "source address",
                }),
                Column::Dst => Err(FieldError::Missing {
                    field: "destination address",
                }),
                _ => Ok(()),
            };
        }
        match col {
            Column::Start => self.start = Some(parse_time(v, "start time")?),
            Column::End => self.end = Some(parse_time(v, "end time")?),
            // A derived column: nfdump prints an end before the start as a huge unsigned
            // number, so an unreadable duration is ignored rather than losing the record.
            Column::Duration => self.duration = parse_seconds(v),
            Column::Src => self.src = Some(parse_addr(v, "source address")?),
            Column::Dst => self.dst = Some(parse_addr(v, "destination address")?),
            Column::SrcPort => self.src_port = parse_uint(v, "source port")?,
            Column::DstPort => self.dst_port = parse_dst_port(v)?,
            Column::Proto => self.proto = parse_proto(v)?,
            Column::Flags => self.flags = parse_tcp_flags(v)?,
            Column::Packets => self.packets = parse_uint(v, "packet count")?,
            Column::Bytes => self.bytes = parse_uint(v, "byte count")?,
            Column::RevPackets => self.rev_packets = parse_uint(v, "reverse packet count")?,
            Column::RevBytes => self.rev_bytes = parse_uint(v, "reverse byte count")?,
            Column::SrcTtl => self.src_ttl = ttl(v, "source TTL")?,
            Column::DstTtl => self.dst_ttl = ttl(v, "destination TTL")?,
            Column::SrcName => self.src_name = name(v),
            Column::DstName => self.dst_name = name(v),
            Column::ServerName => self.server_name = name(v),
            Column::Exporter => {
                let a = parse_addr(v, "exporter address")?;
                self.exporter = Some(a).filter(|a| !a.is_unspecified());
            }
            Column::Sampling => self.sampling = Some(parse_uint(v, "sampling interval")?),
            Column::IcmpType => self.icmp_type = Some(parse_uint(v, "ICMP type")?),
            Column::IcmpCode => self.icmp_code = Some(parse_uint(v, "ICMP code")?),
        }
        Ok(())
    }

    fn finish(self) -> Result<Flow, CsvError> {
        let (Some(src), Some(dst)) = (self.src, self.dst) else {
            return Err(CsvError::MissingAddress);
        };
        let start = self
            .start
            .or_else(|| Some(self.end?.saturating_sub(self.duration?)))
            .or(self.end)
            .unwrap_or(0);
        let end = self
            .end
            .or_else(|| Some(start.saturating_add(self.duration?)))
            .unwrap_or(start);
        // A server name only names the destination on ports whose protocols carry one (TLS SNI,
        // HTTP Host, QUIC, DNS query); IP literals are not names.
        let server_name = self.server_name.filter(|n| {
            n.parse::<std::net::IpAddr>().is_err()
                && matches!(
                    self.dst_port,
                    53 | 80 | 443 | 853 | 3128 | 8000 | 8008 | 8080 | 8443 | 8888
                )
        });
        let dst_name = self.dst_name.or(server_name);
        let mut dst_port = self.dst_port;
        if dst_port == 0
            && matches!(self.proto, proto::ICMP | proto::ICMPV6)
            && let Some(t) = self.icmp_type
        {
            dst_port = u16::from(t) << 8 | u16::from(self.icmp_code.unwrap_or(0));
        }
        Ok(Flow {
            start_ms: start,
            end_ms: end,
            src,
            dst,
            src_port: self.src_port,
            dst_port,
            proto: self.proto,
            bytes: self.bytes,
            packets: self.packets,
            rev_bytes: self.rev_bytes,
            rev_packets: self.rev_packets,
            tcp_flags: self.flags,
            src_ttl: self.src_ttl,
            dst_ttl: self.dst_ttl,
            src_name: self.src_name,
            dst_name,
            exporter: self.exporter,
            sampling: self.sampling.filter(|&s| s != 0).unwrap_or(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(line: &str) -> Vec<Result<String, QuoteError>> {
        Fields::new(line)
            .map(|f| f.map(|c| c.into_owned()))
            .collect()
    }

    #[test]
    fn splits_fields() {
        let ok = |v: &[&str]| v.iter().map(|s| Ok(s.to_string())).collect::<Vec<_>>();
        assert_eq!(fields("a,b,,c"), ok(&["a", "b", "", "c"]));
        assert_eq!(fields(""), ok(&[""]));
        assert_eq!(fields("a,"), ok(&["a", ""]));
        assert_eq!(fields("   0.000,x"), ok(&["0.000", "x"]));
        assert_eq!(fields(r#"x,"1,2,3",y"#), ok(&["x", "1,2,3", "y"]));
        assert_eq!(fields(r#""say ""hi""","#), ok(&[r#"say "hi""#, ""]));
        assert_eq!(fields(r#""""#), ok(&[""]));
        assert_eq!(
            fields(r#"a,"open"#),
            vec![Ok("a".into()), Err(QuoteError::Unterminated)]
        );
        assert_eq!(fields(r#""a"b,c"#), vec![Err(QuoteError::AfterQuote)]);
    }

    #[test]
    fn record_errors_carry_the_column_and_kind() {
        let mut r = CsvReader::new();
        assert!(matches!(r.line("ts,sa,da,dp"), Outcome::Skip));
        let e = r
            .record("2020-02-07 21:03:54,1.2.3,10.0.0.1,80")
            .unwrap_err();
        assert_eq!(
            e,
            CsvError::Field {
                column: 2,
                name: "sa".into(),
                error: FieldError::Text {
                    field: "source address",
                    text: "1.2.3".into()
                }
            }
        );
        assert_eq!(e.to_string(), "bad source address `1.2.3` in column 2 `sa`");
        let e = r.record("0,10.0.0.1,,80").unwrap_err();
        assert_eq!(
            e,
            CsvError::Field {
                column: 3,
                name: "da".into(),
                error: FieldError::Missing {
                    field: "destination address"
                }
            }
        );
        // The first bad field is the one reported.
        let e = r.record("x,10.0.0.1,10.0.0.2,y").unwrap_err();
        assert!(matches!(e, CsvError::Field { column: 1, .. }), "{e:?}");
        assert_eq!(
            r.record("0,10.0.0.1,10.0.0.2").unwrap_err(),
            CsvError::FieldCount {
                count: 3,
                columns: 4
            }
        );
        assert_eq!(
            r.record(r#"0,10.0.0.1,"10.0.0.2"x,1"#).unwrap_err(),
            CsvError::Quote {
                column: 3,
                error: QuoteError::AfterQuote
            }
        );
        let mut r = CsvReader::new();
        assert!(matches!(
            r.line("ts,sp"),
            Outcome::Fatal(CsvError::HeaderWithout {
                what: "source address",
                ..
            })
        ));
        let mut r = CsvReader::new();
        assert!(matches!(
            r.line("sa,sp"),
            Outcome::Fatal(CsvError::HeaderWithout {
                what: "destination address",
                ..
            })
        ));
        let mut r = CsvReader::new();
        assert!(matches!(
            r.line("1,2,3"),
            Outcome::Fatal(CsvError::NoHeader { found }) if found == "1,2,3"
        ));
        let mut r = CsvReader::new();
        assert!(matches!(r.line("ts,src_ip,dst_ip"), Outcome::Skip));
        assert_eq!(
            r.record("0,,").unwrap_err(),
            CsvError::Field {
                column: 2,
                name: "src_ip".into(),
                error: FieldError::Missing {
                    field: "source address"
                }
            }
        );
    }

    #[test]
    fn header_detection() {
        assert!(looks_like_header("ts,te,td,sa,da"));
        assert!(looks_like_header("pcap,id,src_ip,src2dst_bytes"));
        assert!(looks_like_header(
            "flows,bytes,packets,avg_bps,avg_pps,avg_bpp"
        ));
        assert!(!looks_like_header("1,2,3"));
        assert!(!looks_like_header("1kxun.pcap,0,0,192.168.5.44"));
        assert!(!looks_like_header("2020-02-07 21:03:54,x"));
        assert!(!looks_like_header("a,,b"));
        assert!(looks_like_header("firstSeen,srcAddr,dstAddr,mplsLabel1-10"));
        assert!(!looks_like_header("a.pcap,fe80::1,ff02::1"));
    }
}
