//! Generated packs: rules from vendors' catalogues of exact download sizes (the "reference
//! downloads" method).
//!
//! A catalogue lists (product, version, size, servers). A host that received a transfer of the
//! size a flow record would count for one of those files from one of those servers downloaded
//! it. Two readers build a [`Catalogue`]: [`read_packages`] for Debian/Ubuntu `Packages`
//! indexes (plain, gzip, xz, bzip2 or zstd, recognised by their magic bytes) and
//! [`read_sizes_csv`] for any CSV catalogue. [`generate`] turns a catalogue into the text of a
//! pack (`pack.yaml`, `rules/*.rules`, `README.md`), which [`GeneratedPack::write_to`] writes.
//!
//! Flow records count IP bytes, so the expected byte count of a download is its file size plus
//! HTTP/TLS framing and an IP+TCP header per packet: [`Model`] says how much, from measurements
//! recorded in `docs/pack-gen.md`. Sizes within reach of each other are ambiguous: a rule whose
//! window also admits files of other products concludes with a confidence divided by the number
//! of products, and one whose window admits other versions of its own product does not conclude
//! a version.

use regex::Regex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// Most bytes an index or catalogue may decompress to (a real `Packages` is under 100 MB).
pub const MAX_INPUT_BYTES: u64 = 1 << 30;
/// Longest line read; longer lines make their stanza or row malformed.
pub const MAX_LINE: usize = 1 << 20;
/// Most entries a catalogue may hold.
pub const MAX_ENTRIES: usize = 2_000_000;
/// Largest file size accepted (1 TiB); larger `Size` fields are malformed.
pub const MAX_SIZE: u64 = 1 << 40;
/// Longest product, version or architecture label accepted.
pub const MAX_LABEL: usize = 200;
/// Malformed stanzas or rows whose messages are kept (all are counted).
pub const MAX_REPORTED: usize = 100;

/// Why a catalogue could not be read or a pack not generated.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Compressed input that does not decompress.
    #[error("corrupt {format} data: {message}")]
    Corrupt {
        /// gzip, xz, bzip2 or zstd.
        format: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// The input decompresses to more than [`MAX_INPUT_BYTES`].
    #[error("the input is larger than {} bytes once decompressed", MAX_INPUT_BYTES)]
    TooLarge,
    /// More than [`MAX_ENTRIES`] entries.
    #[error("more than {MAX_ENTRIES} entries: select fewer (e.g. --packages-matching)")]
    TooManyEntries,
    /// A CSV catalogue without its header or a required column.
    #[error("CSV header: {0}")]
    Header(String),
    /// A server name that is neither a domain name nor `*.suffix`.
    #[error("`{0}` is not a domain name or `*.suffix` pattern")]
    Server(String),
    /// An option that cannot be used.
    #[error("{0}")]
    Option(String),
}

/// One downloadable file of a catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The product (a Debian package name).
    pub product: String,
    /// Its version.
    pub version: String,
    /// The architecture, when the catalogue says.
    pub arch: Option<String>,
    /// Exact file size in bytes.
    pub size: u64,
    /// Servers it is downloaded from (domain names or `*.suffix`); empty: the default servers.
    pub servers: Vec<String>,
    /// The file's path or URL, when known.
    pub file: Option<String>,
    /// Its SHA-256, when known.
    pub sha256: Option<String>,
    /// 1-based line where its stanza or row starts.
    pub line: u64,
}

/// A stanza or row that was skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    /// 1-based line where it starts.
    pub line: u64,
    /// What is wrong.
    pub message: String,
}

/// The entries of a catalogue and what was skipped while reading it.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    /// Usable entries, in input order.
    pub entries: Vec<Entry>,
    /// The first [`MAX_REPORTED`] malformed stanzas or rows.
    pub malformed: Vec<Malformed>,
    /// How many were malformed in all.
    pub malformed_count: u64,
    /// The compression the input had: plain, gzip, xz, bzip2 or zstd.
    pub compression: &'static str,
}

impl Catalogue {
    fn bad(&mut self, line: u64, message: String) {
        self.malformed_count += 1;
        if self.malformed.len() < MAX_REPORTED {
            self.malformed.push(Malformed { line, message });
        }
    }

    fn push(&mut self, e: Entry) -> Result<(), GenError> {
        if self.entries.len() >= MAX_ENTRIES {
            return Err(GenError::TooManyEntries);
        }
        self.entries.push(e);
        Ok(())
    }
}

/// Something that takes the input line by line.
trait Lines {
    /// One line without its end; `None` for a line longer than [`MAX_LINE`].
    fn line(&mut self, line: Option<&[u8]>) -> Result<(), GenError>;
}

/// Splits decompressed bytes into lines, bounding line length and total size.
struct Splitter<'a, L: Lines> {
    sink: &'a mut L,
    buf: Vec<u8>,
    overlong: bool,
    total: u64,
    error: Option<GenError>,
}

impl<L: Lines> Splitter<'_, L> {
    fn feed(&mut self, mut data: &[u8]) -> Result<(), GenError> {
        self.total += data.len() as u64;
        if self.total > MAX_INPUT_BYTES {
            return Err(GenError::TooLarge);
        }
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            self.take(&data[..nl]);
            let line = std::mem::take(&mut self.buf);
            let r = self.sink.line((!self.overlong).then_some(&line[..]));
            self.buf = line;
            self.buf.clear();
            self.overlong = false;
            r?;
            data = &data[nl + 1..];
        }
        self.take(data);
        Ok(())
    }

    fn take(&mut self, part: &[u8]) {
        if self.overlong || self.buf.len() + part.len() > MAX_LINE {
            self.overlong = true;
            self.buf.clear();
        } else {
            self.buf.extend_from_slice(part);
        }
    }

    fn finish(mut self) -> Result<(), GenError> {
        if !self.buf.is_empty() || self.overlong {
            let line = std::mem::take(&mut self.buf);
            self.sink.line((!self.overlong).then_some(&line[..]))?;
        }
        Ok(())
    }
}

impl<L: Lines> Write for Splitter<'_, L> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self.feed(data) {
            Ok(()) => Ok(data.len()),
            Err(e) => {
                self.error = Some(e);
                Err(std::io::Error::other("input rejected"))
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decompresses `input` (recognised by its magic bytes) and feeds its lines to `sink`; returns
/// the compression's name.
fn read_lines(input: impl Read, sink: &mut impl Lines) -> Result<&'static str, GenError> {
    let mut input = BufReader::with_capacity(1 << 16, input);
    let head = input.fill_buf()?.to_vec();
    let mut split = Splitter {
        sink,
        buf: Vec::new(),
        overlong: false,
        total: 0,
        error: None,
    };
    let corrupt = |format: &'static str, e: &dyn std::fmt::Display| GenError::Corrupt {
        format,
        message: e.to_string(),
    };
    let format = if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        let r = lzma_rs::xz_decompress(&mut input, &mut split);
        if let Some(e) = split.error.take() {
            return Err(e);
        }
        r.map_err(|e| corrupt("xz", &e))?;
        "xz"
    } else {
        let (format, mut reader): (&'static str, Box<dyn Read + '_>) =
            if head.starts_with(&[0x1f, 0x8b]) {
                ("gzip", Box::new(flate2::read::MultiGzDecoder::new(input)))
            } else if head.starts_with(b"BZh") {
                ("bzip2", Box::new(bzip2::read::MultiBzDecoder::new(input)))
            } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                let d = ruzstd::decoding::StreamingDecoder::new(input)
                    .map_err(|e| corrupt("zstd", &e))?;
                ("zstd", Box::new(d))
            } else {
                ("plain", Box::new(input))
            };
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            let n = match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if format == "plain" => return Err(e.into()),
                Err(e) => return Err(corrupt(format, &e)),
            };
            split.feed(&chunk[..n])?;
        }
        format
    };
    split.finish()?;
    Ok(format)
}

mod csv;
mod debian;
mod emit;
mod model;

pub use csv::{normalize_server, read_sizes_csv};
pub use debian::read_packages;
pub use emit::*;
pub use model::*;

/// Why one row of a catalogue (a stanza, a CSV line) is not used: counted, and reported with
/// its line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    /// The first problem of a stanza's fields (a field too long, a continuation line first).
    #[error("{0}")]
    Stanza(String),
    /// A stanza without Package, Version or Size.
    #[error("a stanza needs Package, Version and Size")]
    IncompleteStanza,
    /// A CSV row without a required column's value.
    #[error("no {0}")]
    Missing(&'static str),
    /// A size that is not digits.
    #[error("Size `{0}` is not a byte count")]
    SizeNotANumber(String),
    /// A size of 0.
    #[error("Size 0: an empty file cannot be told from a transfer")]
    SizeZero,
    /// A size beyond 1 TiB.
    #[error("Size `{0}` is larger than 1 TiB")]
    SizeTooLarge(String),
    /// An empty product, version or architecture.
    #[error("{0} is empty")]
    EmptyLabel(&'static str),
    /// A product, version or architecture longer than [`MAX_LABEL`] characters.
    #[error("{0} is longer than {MAX_LABEL} characters")]
    LongLabel(&'static str),
    /// Control characters in a product, version or architecture.
    #[error("{0} contains control characters")]
    ControlCharacters(&'static str),
    /// CSV: `a"b`.
    #[error("a quote inside an unquoted field")]
    QuoteInside,
    /// CSV: `"a"b`.
    #[error("text after a closing quote")]
    TextAfterQuote,
    /// CSV: `"a` to the end of the line.
    #[error("an unterminated quote (fields cannot span lines)")]
    UnterminatedQuote,
    /// A server that is not a name, an address or a network.
    #[error("{0}")]
    Server(String),
}

fn parse_size(s: &str) -> Result<u64, RowError> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RowError::SizeNotANumber(clip(s)));
    }
    match s.parse::<u64>() {
        Ok(0) => Err(RowError::SizeZero),
        Ok(n) if n <= MAX_SIZE => Ok(n),
        _ => Err(RowError::SizeTooLarge(clip(s))),
    }
}

fn check_label(what: &'static str, v: &str) -> Result<(), RowError> {
    if v.trim().is_empty() {
        Err(RowError::EmptyLabel(what))
    } else if v.chars().count() > MAX_LABEL {
        Err(RowError::LongLabel(what))
    } else if v.chars().any(char::is_control) {
        Err(RowError::ControlCharacters(what))
    } else {
        Ok(())
    }
}

fn clip(s: &str) -> String {
    if s.chars().count() <= 40 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(40).collect::<String>())
    }
}
