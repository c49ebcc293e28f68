//! Readers that turn flow files (nfdump CSV, NFStream CSV, goflow2 JSON, flowprint JSON lines)
//! into [`Flow`]s.
//!
//! All readers work line by line on a [`BufRead`], reuse one line buffer, never keep more than
//! [`MAX_LINE`] bytes of a line, and never stop at a malformed line: each one is reported to
//! the caller as a [`ReadError`] with its 1-based line number and counted in
//! [`ReadStats::skipped`]. The formats and the detection of [`InputFormat::Auto`] are described
//! in `docs/flow-schema.md`.
//!
//! ```
//! use flowprint::flow::ingest::{read_flows, InputFormat};
//!
//! let csv = "ts,te,td,sa,da,sp,dp,pr,flg,ipkt,ibyt\n\
//!            2020-02-07 21:03:54,2020-02-07 21:03:55,1.000,10.0.0.2,1.1.1.1,5353,53,UDP,........,1,64\n";
//! let mut flows = Vec::new();
//! let stats = read_flows(csv.as_bytes(), "example.csv", InputFormat::Auto,
//!                        &mut |f| flows.push(f), &mut |e| panic!("{e}")).unwrap();
//! assert_eq!((stats.flows, flows[0].dst_port), (1, 53));
//! ```

pub mod binary;
mod goflow2;
mod jsonl;
pub(crate) mod lines;
pub mod nfcapd;
mod nfdump_csv;
mod value;

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::Flow;
pub use jsonl::flow_to_json;
use lines::Line;
pub use nfdump_csv::{CsvError, QuoteError};
pub use value::{FieldError, JsonError};

/// The longest line accepted, in bytes; a longer line is reported and skipped.
pub const MAX_LINE: usize = 1 << 20;

/// Buffer size of the readers made by [`open_input`].
const INPUT_BUFFER: usize = 256 * 1024;

/// The format of a flow file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// Detect from the first non-empty line: `{` starts JSON lines (goflow2 when the first
    /// object has goflow2 keys such as `src_addr`, else flowprint's schema), anything else is CSV.
    Auto,
    /// Header-driven CSV: nfdump `-o csv` (old and new headers), `-o csv-fast`, NFStream.
    NfdumpCsv,
    /// goflow2 JSON lines (v2 snake_case keys or v1 CamelCase keys).
    Goflow2,
    /// flowprint's own JSON lines schema (see [`flow_to_json`]).
    Jsonl,
    /// A pcap or pcapng capture of NetFlow/IPFIX/sFlow export datagrams (any UDP port).
    Pcap,
    /// An IPFIX file (RFC 5655).
    Ipfix,
    /// nfdump's binary `nfcapd.*` file.
    Nfcapd,
}

named_values!(InputFormat {
    Auto = "auto": "detect from the content",
    NfdumpCsv = "nfdump-csv": "header-driven CSV: nfdump -o csv, -o csv-fast, NFStream",
    Goflow2 = "goflow2": "goflow2 JSON lines",
    Jsonl = "jsonl": "flowprint's JSON lines schema",
    Pcap = "pcap": "a pcap or pcapng capture",
    Ipfix = "ipfix": "an IPFIX file (RFC 5655)",
    Nfcapd = "nfcapd": "nfdump's binary nfcapd file",
});

/// One malformed line of an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    /// The name of the input (a path, or `-` for stdin) as given to [`read_flows`].
    pub source: String,
    /// 1-based line number.
    pub line: u64,
    /// What is wrong, e.g. ``bad source address `1.2.3` in column 4 `sa` ``.
    pub reason: Reason,
}

/// What is wrong with one skipped line, record or datagram of an input (the `reason` of a
/// [`ReadError`]): the reader's own typed error where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// A line longer than [`MAX_LINE`].
    #[error("line longer than {MAX_LINE} bytes")]
    LineTooLong,
    /// A line that is not UTF-8: the 1-based byte of the first bad one.
    #[error("invalid UTF-8 at byte {0}")]
    NotUtf8(usize),
    /// A JSON line (flowprint's schema or goflow2).
    #[error(transparent)]
    Json(JsonError),
    /// A CSV row.
    #[error(transparent)]
    Csv(CsvError),
    /// A datagram of a capture.
    #[error("datagram from {from}: {error}")]
    Datagram {
        /// Its sender (address:port).
        from: std::net::SocketAddr,
        /// What is wrong with it.
        error: binary::DatagramError,
    },
    /// A capture that ends inside a packet, at this byte.
    #[error("capture cut short at byte {0}")]
    CaptureCutShort(u64),
    /// An IPFIX file that ends inside a message header: bytes of it there are.
    #[error("file ends inside a message header ({0} of 4 bytes)")]
    IpfixHeaderCut(usize),
    /// An IPFIX file whose next message is not one; the rest of the file is skipped.
    #[error(
        "not an IPFIX message (version {version}, length {len}); the rest of the file is skipped"
    )]
    NotIpfix {
        /// The version field.
        version: u16,
        /// The length field.
        len: usize,
    },
    /// An IPFIX file that ends inside a message.
    #[error("file ends inside a message ({got} of {len} bytes)")]
    IpfixCut {
        /// Bytes of the message there are.
        got: usize,
        /// Its length.
        len: usize,
    },
    /// An IPFIX message of a file that does not decode.
    #[error(transparent)]
    Ipfix(crate::flow::netflow::DecodeError),
    /// A block of an nfcapd file.
    #[error(transparent)]
    Block(nfcapd::BlockError),
    /// A line of a passive DNS log that is not an answer: what is wrong with it.
    #[error("{0}")]
    DnsLog(String),
}

impl fmt::Display for ReadError {
    /// `source:line: reason`, with control characters of the input escaped
    /// ([`crate::text::printable`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::text::printable;
        write!(
            f,
            "{}:{}: {}",
            printable(&self.source),
            self.line,
            printable(&self.reason.to_string())
        )
    }
}

impl std::error::Error for ReadError {}

/// The `InvalidData` error [`read_flows`] returns when the rest of a CSV input cannot be read
/// (no header, or a header without the address columns), inside the `io::Error`
/// (`io::Error::get_ref` and `downcast_ref` give it back).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input}:{line}: {error}")]
pub struct FormatError {
    /// The name of the input as given to [`read_flows`].
    pub input: String,
    /// 1-based line number.
    pub line: u64,
    /// What is wrong (in the message, not as a source: the chain prints once).
    pub error: CsvError,
}

/// Counts of one [`read_flows`] call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Lines read, including blank, header and summary lines.
    pub lines: u64,
    /// Flows passed to `on_flow`.
    pub flows: u64,
    /// Malformed lines passed to `on_error`.
    pub skipped: u64,
}

/// An input that could not be read to its end: what was read before, where and why it stopped.
/// The flows read before were passed to `on_flow` (they are not taken back).
#[derive(Debug)]
pub struct ReadFailure {
    /// What was read before the failure.
    pub stats: ReadStats,
    /// Bytes of the input read when it stopped.
    pub offset: u64,
    /// Why (for a format error, its message names the input and line).
    pub error: io::Error,
}

impl ReadFailure {
    /// The kind of the underlying error.
    pub fn kind(&self) -> io::ErrorKind {
        self.error.kind()
    }
}

impl fmt::Display for ReadFailure {
    /// The error's message, with control characters escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::text::printable(&self.error.to_string()))
    }
}

impl std::error::Error for ReadFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<ReadFailure> for io::Error {
    fn from(f: ReadFailure) -> io::Error {
        f.error
    }
}

/// A reader that counts the bytes taken from it, to say where a read stopped.
struct Counted<R> {
    inner: R,
    taken: u64,
}

impl<R: BufRead> io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.taken += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.taken += amt as u64;
        self.inner.consume(amt);
    }
}

/// What a format reader made of one non-blank line.
enum Outcome {
    /// A flow record.
    Flow(Flow),
    /// A line that is part of the format but not a record (header, summary block).
    Skip,
    /// A malformed line, with the reason.
    Malformed(Reason),
    /// The rest of the input cannot be read (e.g. a CSV header without addresses).
    Fatal(CsvError),
}

/// The per-format state of one read.
enum Reader {
    /// `Auto` before the first non-blank line.
    Undetected,
    Csv(nfdump_csv::CsvReader),
    Goflow2,
    Jsonl,
}

impl Reader {
    fn line(&mut self, line: &str) -> Outcome {
        match self {
            Reader::Undetected => {
                if line.starts_with('{') {
                    match json_kind(line) {
                        Ok(kind) => *self = kind,
                        Err(error) => return Outcome::Malformed(Reason::Json(error)),
                    }
                } else {
                    *self = Reader::Csv(nfdump_csv::CsvReader::new());
                }
                self.line(line)
            }
            Reader::Csv(csv) => csv.line(line),
            Reader::Goflow2 => match goflow2::parse_line(line) {
                Ok(flow) => Outcome::Flow(flow),
                Err(error) => Outcome::Malformed(Reason::Json(error)),
            },
            Reader::Jsonl => match jsonl::parse_line(line) {
                Ok(flow) => Outcome::Flow(flow),
                Err(error) => Outcome::Malformed(Reason::Json(error)),
            },
        }
    }
}

/// Keys that only goflow2 writes; their presence in the first object selects goflow2.
#[derive(Deserialize)]
struct GoflowProbe {
    src_addr: Option<IgnoredAny>,
    #[serde(rename = "SrcAddr")]
    src_addr_v1: Option<IgnoredAny>,
    dst_addr: Option<IgnoredAny>,
    #[serde(rename = "DstAddr")]
    dst_addr_v1: Option<IgnoredAny>,
}

/// Which JSON reader fits a first line, from its keys.
fn json_kind(line: &str) -> Result<Reader, JsonError> {
    let probe: GoflowProbe = serde_json::from_str(line)?;
    let goflow = probe.src_addr.is_some()
        || probe.src_addr_v1.is_some()
        || probe.dst_addr.is_some()
        || probe.dst_addr_v1.is_some();
    Ok(if goflow {
        Reader::Goflow2
    } else {
        Reader::Jsonl
    })
}

/// Reads flows from `reader` until its end, passing each flow to `on_flow` and each malformed
/// line to `on_error` (which never stops the read).
///
/// `source` names the input in errors. Fails with an `InvalidData` error only when the rest of
/// the input cannot be interpreted (a CSV file whose header lacks the address columns, or that
/// has no header; a corrupt capture or nfcapd file); other errors come from the reader itself.
/// A failure carries what was read before it and the byte offset where reading stopped.
pub fn read_flows<R: BufRead>(
    reader: R,
    source: &str,
    format: InputFormat,
    on_flow: &mut dyn FnMut(Flow),
    on_error: &mut dyn FnMut(ReadError),
) -> Result<ReadStats, ReadFailure> {
    let mut reader = Counted {
        inner: reader,
        taken: 0,
    };
    let (mut flows, mut skipped) = (0, 0);
    let mut stats = ReadStats::default();
    let result = read_any(
        &mut reader,
        source,
        format,
        &mut |f| {
            flows += 1;
            on_flow(f)
        },
        &mut |e| {
            skipped += 1;
            on_error(e)
        },
        &mut stats,
    );
    result.map_err(|error| ReadFailure {
        stats: ReadStats {
            lines: stats.lines,
            flows,
            skipped,
        },
        offset: reader.taken,
        error,
    })
}

/// [`read_flows`] of any format; line-based formats count in `stats` as they go.
fn read_any<R: BufRead>(
    mut reader: R,
    source: &str,
    format: InputFormat,
    on_flow: &mut dyn FnMut(Flow),
    on_error: &mut dyn FnMut(ReadError),
    stats: &mut ReadStats,
) -> io::Result<ReadStats> {
    let format = match format {
        InputFormat::Auto => {
            let head = reader.fill_buf()?;
            if crate::flow::capture::is_capture(head) {
                InputFormat::Pcap
            } else if nfcapd::is_nfcapd(head) {
                InputFormat::Nfcapd
            } else if binary::is_ipfix_file(head) {
                InputFormat::Ipfix
            } else {
                InputFormat::Auto
            }
        }
        f => f,
    };
    match format {
        InputFormat::Pcap => return binary::read_capture_flows(reader, source, on_flow, on_error),
        InputFormat::Ipfix => return binary::read_ipfix_file(reader, source, on_flow, on_error),
        InputFormat::Nfcapd => {
            return nfcapd::read_nfcapd(reader, source, on_flow, on_error);
        }
        _ => {}
    }
    let mut state = match format {
        InputFormat::Auto | InputFormat::Pcap | InputFormat::Ipfix | InputFormat::Nfcapd => {
            Reader::Undetected
        }
        InputFormat::NfdumpCsv => Reader::Csv(nfdump_csv::CsvReader::new()),
        InputFormat::Goflow2 => Reader::Goflow2,
        InputFormat::Jsonl => Reader::Jsonl,
    };
    let mut buf = Vec::with_capacity(1024);
    let mut report = |stats: &mut ReadStats, reason: Reason| {
        stats.skipped += 1;
        on_error(ReadError {
            source: source.to_owned(),
            line: stats.lines,
            reason,
        });
    };
    loop {
        let kind = lines::read_line(&mut reader, &mut buf, MAX_LINE)?;
        if kind == Line::Eof {
            return Ok(stats.clone());
        }
        stats.lines += 1;
        if kind == Line::TooLong {
            report(stats, Reason::LineTooLong);
            continue;
        }
        let mut bytes = buf.as_slice();
        if stats.lines == 1 {
            bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
        }
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let line = match std::str::from_utf8(bytes) {
            Ok(line) => line,
            Err(e) => {
                report(stats, Reason::NotUtf8(e.valid_up_to() + 1));
                continue;
            }
        };
        if line.trim_ascii().is_empty() {
            continue;
        }
        match state.line(line) {
            Outcome::Flow(flow) => {
                stats.flows += 1;
                on_flow(flow);
            }
            Outcome::Skip => {}
            Outcome::Malformed(reason) => report(stats, reason),
            Outcome::Fatal(error) => {
                let error = FormatError {
                    input: source.to_owned(),
                    line: stats.lines,
                    error,
                };
                return Err(io::Error::new(io::ErrorKind::InvalidData, error));
            }
        }
    }
}

/// Expands directories into the flow files below them, recursively, in path order — which is
/// time order for nfcapd's `nfcapd.YYYYMMDDhhmm` names and its year/month/day folders (as
/// `nfdump -R`). Hidden files and nfcapd's `nfcapd.current.*` are skipped; `-` and files pass
/// through. Directories are read through [`crate::walk`]: each file once however many links
/// lead to it, no link loop followed; what was skipped is returned beside the files.
pub fn expand_inputs(inputs: &[String]) -> io::Result<(Vec<String>, Vec<crate::walk::Skipped>)> {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for i in inputs {
        let p = std::path::Path::new(i);
        if i != "-" && p.is_dir() {
            let w = crate::walk::walk(p, &|f| {
                !f.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("nfcapd.current"))
            })
            .map_err(|e| io::Error::new(e.kind(), format!("{i}: {e}")))?;
            out.extend(w.files.into_iter().map(|f| f.display().to_string()));
            skipped.extend(w.skipped);
        } else {
            out.push(i.clone());
        }
    }
    Ok((out, skipped))
}

/// Opens a flow file for [`read_flows`] with a 256 KiB buffer; `-` is standard input.
/// Errors name the path.
pub fn open_input(path: &str) -> io::Result<Box<dyn BufRead>> {
    if path == "-" {
        return Ok(Box::new(BufReader::with_capacity(
            INPUT_BUFFER,
            io::stdin().lock(),
        )));
    }
    let file = File::open(path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    Ok(Box::new(BufReader::with_capacity(INPUT_BUFFER, file)))
}

#[cfg(test)]
mod tests;
