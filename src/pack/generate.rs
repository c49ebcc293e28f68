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

// ------------------------------------------------------------------ Debian `Packages`

/// The fields of a stanza that matter here.
#[derive(Default)]
struct Stanza {
    start: u64,
    fields: [Option<String>; 6],
    /// The first problem found in it.
    problem: Option<String>,
    /// Index of the kept field the previous line set (continuations of those are malformed).
    last: Option<usize>,
}

const FIELDS: [&str; 6] = [
    "Package",
    "Version",
    "Architecture",
    "Size",
    "Filename",
    "SHA256",
];

struct PackagesParser {
    line: u64,
    stanza: Option<Stanza>,
    out: Catalogue,
}

impl PackagesParser {
    fn end_stanza(&mut self) -> Result<(), GenError> {
        let Some(s) = self.stanza.take() else {
            return Ok(());
        };
        match stanza_to_entry(s.fields, s.start, s.problem) {
            Err(message) => self.out.bad(s.start, message.to_string()),
            Ok(e) => self.out.push(e)?,
        }
        Ok(())
    }
}

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

fn stanza_to_entry(
    fields: [Option<String>; 6],
    line: u64,
    problem: Option<String>,
) -> Result<Entry, RowError> {
    if let Some(p) = problem {
        return Err(RowError::Stanza(p));
    }
    let [package, version, arch, size, file, sha256] = fields;
    let (Some(product), Some(version), Some(size)) = (package, version, size) else {
        return Err(RowError::IncompleteStanza);
    };
    let size = parse_size(&size)?;
    for (what, v) in [("Package", &product), ("Version", &version)] {
        check_label(what, v)?;
    }
    if let Some(a) = &arch {
        check_label("Architecture", a)?;
    }
    Ok(Entry {
        product,
        version,
        arch,
        size,
        servers: Vec::new(),
        file,
        sha256,
        line,
    })
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

impl Lines for PackagesParser {
    fn line(&mut self, line: Option<&[u8]>) -> Result<(), GenError> {
        self.line += 1;
        let n = self.line;
        let Some(raw) = line else {
            let s = self.stanza.get_or_insert_with(|| Stanza {
                start: n,
                ..Default::default()
            });
            s.problem
                .get_or_insert(format!("line {n} is longer than {MAX_LINE} bytes"));
            return Ok(());
        };
        let text = String::from_utf8_lossy(raw);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        if text.trim().is_empty() {
            return self.end_stanza();
        }
        if text.starts_with('#') && self.stanza.is_none() {
            return Ok(());
        }
        let s = self.stanza.get_or_insert_with(|| Stanza {
            start: n,
            ..Default::default()
        });
        if text.starts_with([' ', '\t']) {
            if s.start == n {
                s.problem
                    .get_or_insert(format!("line {n}: a continuation line starts the stanza"));
            } else if let Some(i) = s.last {
                s.problem.get_or_insert(format!(
                    "line {n}: field `{}` continues over several lines",
                    FIELDS[i]
                ));
            }
            return Ok(());
        }
        s.last = None;
        let Some((name, value)) = text.split_once(':') else {
            s.problem.get_or_insert(format!(
                "line {n}: `{}` is not a `Field: value` line",
                clip(text)
            ));
            return Ok(());
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            s.problem
                .get_or_insert(format!("line {n}: `{}` is not a field name", clip(name)));
            return Ok(());
        }
        if let Some(i) = FIELDS.iter().position(|f| f.eq_ignore_ascii_case(name)) {
            if s.fields[i].is_some() {
                s.problem
                    .get_or_insert(format!("line {n}: field `{}` is given twice", FIELDS[i]));
            }
            s.fields[i] = Some(value.trim().to_string());
            s.last = Some(i);
        }
        Ok(())
    }
}

/// Reads a Debian/Ubuntu `Packages` index (plain, gzip, xz, bzip2 or zstd): one entry per
/// stanza with `Package`, `Version` and `Size` (and `Architecture`, `Filename`, `SHA256` when
/// present). Malformed stanzas are counted and skipped.
pub fn read_packages(input: impl Read) -> Result<Catalogue, GenError> {
    let mut p = PackagesParser {
        line: 0,
        stanza: None,
        out: Catalogue::default(),
    };
    let compression = read_lines(input, &mut p)?;
    p.end_stanza()?;
    p.out.compression = compression;
    Ok(p.out)
}

// ------------------------------------------------------------------ CSV catalogues

struct CsvParser {
    line: u64,
    /// Column positions: product, version, size, servers, arch, file, sha256.
    columns: Option<[Option<usize>; 7]>,
    out: Catalogue,
}

const CSV_COLUMNS: [&str; 7] = [
    "product", "version", "size", "servers", "arch", "file", "sha256",
];

/// Splits one CSV line (RFC 4180 quoting, no line breaks inside quotes).
fn csv_fields(line: &str) -> Result<Vec<String>, RowError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, '"') if at_start => quoted = true,
            (false, '"') => return Err(RowError::QuoteInside),
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => {
                quoted = false;
                if !matches!(chars.peek(), None | Some(',')) {
                    return Err(RowError::TextAfterQuote);
                }
            }
            (false, ',') => {
                out.push(std::mem::take(&mut cur));
                at_start = true;
                continue;
            }
            _ => cur.push(c),
        }
        at_start = false;
    }
    if quoted {
        return Err(RowError::UnterminatedQuote);
    }
    out.push(cur);
    Ok(out)
}

impl Lines for CsvParser {
    fn line(&mut self, line: Option<&[u8]>) -> Result<(), GenError> {
        self.line += 1;
        let n = self.line;
        let Some(raw) = line else {
            if self.columns.is_none() {
                return Err(GenError::Header("the header line is too long".into()));
            }
            self.out
                .bad(n, format!("line {n} is longer than {MAX_LINE} bytes"));
            return Ok(());
        };
        let text = String::from_utf8_lossy(raw);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.trim().is_empty() || text.starts_with('#') {
            return Ok(());
        }
        let fields = match csv_fields(text) {
            Ok(f) => f,
            Err(e) if self.columns.is_none() => return Err(GenError::Header(e.to_string())),
            Err(e) => {
                self.out.bad(n, format!("line {n}: {e}"));
                return Ok(());
            }
        };
        let Some(columns) = self.columns else {
            let mut cols = [None; 7];
            for (i, name) in fields.iter().enumerate() {
                let name = name.trim().to_ascii_lowercase();
                if let Some(c) = CSV_COLUMNS.iter().position(|&k| k == name) {
                    cols[c] = Some(i);
                }
            }
            if let Some(missing) = (0..4).find(|&c| cols[c].is_none()) {
                return Err(GenError::Header(format!(
                    "line {n}: no `{}` column (required: product, version, size, servers; optional: arch, file, sha256)",
                    CSV_COLUMNS[missing]
                )));
            }
            self.columns = Some(cols);
            return Ok(());
        };
        match csv_row_to_entry(&fields, &columns, n) {
            Err(message) => self.out.bad(n, format!("line {n}: {message}")),
            Ok(e) => self.out.push(e)?,
        }
        Ok(())
    }
}

fn csv_row_to_entry(
    fields: &[String],
    cols: &[Option<usize>; 7],
    line: u64,
) -> Result<Entry, RowError> {
    let get = |c: usize| {
        cols[c]
            .and_then(|i| fields.get(i))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let product = get(0).ok_or(RowError::Missing("product"))?;
    let version = get(1).ok_or(RowError::Missing("version"))?;
    check_label("product", &product)?;
    check_label("version", &version)?;
    let size = parse_size(&get(2).ok_or(RowError::Missing("size"))?)?;
    let arch = get(4);
    if let Some(a) = &arch {
        check_label("arch", a)?;
    }
    let mut servers = Vec::new();
    for s in get(3).unwrap_or_default().split(';') {
        let s = s.trim();
        if !s.is_empty() {
            servers.push(normalize_server(s).map_err(|e| RowError::Server(e.to_string()))?);
        }
    }
    Ok(Entry {
        product,
        version,
        arch,
        size,
        servers,
        file: get(5),
        sha256: get(6),
        line,
    })
}

/// Reads a CSV catalogue: a header line naming the columns `product`, `version`, `size`
/// (bytes) and `servers` (`;`-separated domain names or `*.suffix` patterns; empty: the
/// default servers), optionally `arch`, `file` and `sha256`, in any order; other columns are
/// ignored. Malformed rows are counted and skipped.
pub fn read_sizes_csv(input: impl Read) -> Result<Catalogue, GenError> {
    let mut p = CsvParser {
        line: 0,
        columns: None,
        out: Catalogue::default(),
    };
    let compression = read_lines(input, &mut p)?;
    if p.columns.is_none() {
        return Err(GenError::Header("the input is empty".into()));
    }
    p.out.compression = compression;
    Ok(p.out)
}

/// Checks a server name or `*.suffix` pattern and returns it in lower case without a trailing
/// dot.
pub fn normalize_server(s: &str) -> Result<String, GenError> {
    let lower = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let name = lower.strip_prefix("*.").unwrap_or(&lower);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(lower)
    } else {
        Err(GenError::Server(s.to_string()))
    }
}

// ------------------------------------------------------------------ the overhead model

/// How many bytes a flow record counts for a download of a file of a given size: the file
/// plus `overhead_pct` percent (an IP+TCP header per packet, TLS records) plus `fixed` bytes
/// (HTTP response header, TLS handshake, handshake and teardown packets), within
/// `tolerance_pct` percent plus `slack` bytes. The presets are measured (`docs/pack-gen.md`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Model {
    /// Per-size overhead, percent of the file size.
    pub overhead_pct: f64,
    /// Allowed deviation, percent of the file size.
    pub tolerance_pct: f64,
    /// Constant overhead, bytes.
    pub fixed: u64,
    /// Allowed deviation of the constant, bytes.
    pub slack: u64,
}

/// The network the downloads cross, for [`Model::preset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// IPv4, with or without TCP timestamps, MTU 1500: 2.6–4.2 % (headers per packet, TLS records).
    Ipv4,
    /// IPv6, with or without TCP timestamps, MTU 1500: 4.0–5.6 %.
    Ipv6,
    /// Either: 2.6–5.6 %.
    Any,
}

named_values!(Transport {
    Ipv4 = "ipv4": "downloads over IPv4",
    Ipv6 = "ipv6": "downloads over IPv6",
    Any = "any": "either",
});

/// The protocol the downloads use, for [`Model::preset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP: 200–900 bytes of response header and control packets.
    Http,
    /// HTTPS: 1.5–6.5 kB of TLS handshake (certificate chains differ), header and control.
    Https,
    /// Either: 200 bytes – 6.5 kB.
    Both,
}

named_values!(Scheme {
    Http = "http": "plain HTTP",
    Https = "https": "HTTPS",
    Both = "both": "either",
});

impl Model {
    /// The measured preset for a transport and scheme.
    pub fn preset(transport: Transport, scheme: Scheme) -> Model {
        // Ranges of the relative and the constant overhead; the model is their midpoint ± half.
        let (lo, hi) = match transport {
            Transport::Ipv4 => (2.6, 4.2),
            Transport::Ipv6 => (4.0, 5.6),
            Transport::Any => (2.6, 5.6),
        };
        let (flo, fhi) = match scheme {
            Scheme::Http => (200, 900),
            Scheme::Https => (1_500, 6_500),
            Scheme::Both => (200, 6_500),
        };
        Model {
            overhead_pct: (lo + hi) / 2.0,
            tolerance_pct: (hi - lo) / 2.0,
            fixed: (flo + fhi) / 2,
            slack: (fhi - flo) / 2,
        }
    }

    /// The expected byte count of a download of `size` bytes and its allowed deviation.
    pub fn window(&self, size: u64) -> (u64, u64) {
        let s = size as f64;
        let center = s * (1.0 + self.overhead_pct / 100.0) + self.fixed as f64;
        let tol = s * self.tolerance_pct / 100.0 + self.slack as f64;
        (center.round() as u64, tol.round() as u64)
    }

    fn check(&self) -> Result<(), GenError> {
        let pct = |x: f64| x.is_finite() && (0.0..50.0).contains(&x);
        if pct(self.overhead_pct) && pct(self.tolerance_pct) {
            Ok(())
        } else {
            Err(GenError::Option(
                "overhead and tolerance are percentages from 0 to 50".into(),
            ))
        }
    }
}

impl Default for Model {
    fn default() -> Self {
        Model::preset(Transport::Ipv4, Scheme::Both)
    }
}

// ------------------------------------------------------------------ generation

/// How a download must appear in the flow records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matching {
    /// Stateful `transfer ~ S +- T`: the peer's bytes summed over the records of one
    /// connection (downloads split by the exporter's active timeout are found).
    Transfer,
    /// `peer.bytes ~ S +- T` on one record: indexed by size, cheapest for very large packs,
    /// but misses downloads split over several records.
    Record,
}

named_values!(Matching {
    Transfer = "transfer": "sum the records of one connection, sizes looked up by interval",
    Record = "record": "match single records, one rule per file",
});

/// What [`generate`] makes and from what.
#[derive(Debug, Clone)]
pub struct Options {
    /// The pack's name (lowercase letters, digits and `-`, starting with a letter).
    pub name: String,
    /// The pack's version (semver).
    pub version: String,
    /// One line for `pack.yaml`.
    pub description: String,
    /// The SPDX licence of the generated pack.
    pub license: String,
    /// Servers of entries that name none.
    pub servers: Vec<String>,
    /// The byte-count model.
    pub model: Model,
    /// Confidence of a rule whose size no other product shares.
    pub confidence: f64,
    /// Rules whose window admits more products than this are not written: they say too little.
    pub max_products: usize,
    /// Write rules only for products this matches (all entries still count as neighbours).
    pub select: Option<Regex>,
    /// Record or transfer matching.
    pub matching: Matching,
    /// Window of transfer rules, in ms.
    pub window_ms: u64,
    /// What the catalogue is, for `README.md` (e.g. "Debian package").
    pub kind: String,
    /// How the pack was made (the command line), for `README.md`.
    pub source: String,
}

/// Counts of how the rules came out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Entries read (after merging exact duplicates).
    pub entries: usize,
    /// Entries that `select` left out (they still count as neighbours).
    pub left_out: usize,
    /// Rules not written because more than `max_products` products are within reach.
    pub dropped: usize,
    /// Rules written.
    pub rules: usize,
    /// Rules that conclude product and version at full confidence.
    pub unique: usize,
    /// Rules whose window admits other versions of the same product (no version concluded).
    pub version_ambiguous: usize,
    /// Rules whose window admits other products (confidence divided).
    pub shared: usize,
}

/// A generated pack: relative paths and their text.
#[derive(Debug, Clone)]
pub struct GeneratedPack {
    /// `pack.yaml`, `README.md` and `rules/*.rules`, with their contents.
    pub files: Vec<(PathBuf, String)>,
    /// How the rules came out.
    pub stats: Stats,
}

/// Whether `name` can name a pack: lowercase letters, digits and `-`, starting with a letter.
pub fn valid_pack_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.len() <= 64
}

/// Products within reach are counted up to this many.
const COUNTED: usize = 100;

/// One rule to be: entries merged when product, version, size and servers are equal.
struct Item<'a> {
    entry: &'a Entry,
    archs: BTreeSet<&'a str>,
    servers: usize,
    center: u64,
    tol: u64,
}

/// What else a transfer that fires an item's rule could have been.
#[derive(Default)]
struct Near<'a> {
    /// Distinct products within reach, the item's own included; stops growing past the limit.
    products: std::collections::HashSet<&'a str>,
    /// Other versions of the item's own product within reach.
    versions: usize,
    /// A few "product version" names for the description.
    names: Vec<String>,
}

fn check_options(opts: &Options) -> Result<Vec<String>, GenError> {
    if !valid_pack_name(&opts.name) {
        return Err(GenError::Option(format!(
            "`{}` is not a pack name (lowercase letters, digits and `-`, starting with a letter)",
            opts.name
        )));
    }
    semver::Version::parse(&opts.version)
        .map_err(|e| GenError::Option(format!("version `{}`: {e}", opts.version)))?;
    if !(opts.confidence > 0.0 && opts.confidence <= 1.0) {
        return Err(GenError::Option("the confidence must be in (0, 1]".into()));
    }
    if opts.window_ms == 0 {
        return Err(GenError::Option("the window must be longer than 0".into()));
    }
    if opts.max_products == 0 {
        return Err(GenError::Option("at least one product per window".into()));
    }
    opts.model.check()?;
    opts.servers.iter().map(|s| normalize_server(s)).collect()
}

/// Turns a catalogue into a pack. Entries without servers get `opts.servers`; an entry
/// without any is an error.
pub fn generate(cat: &Catalogue, opts: &Options) -> Result<GeneratedPack, GenError> {
    let defaults = check_options(opts)?;
    // Server sets, numbered in order of first use.
    let mut server_sets: Vec<Vec<String>> = Vec::new();
    let mut set_index: HashMap<Vec<String>, usize> = HashMap::new();
    let mut items: Vec<Item<'_>> = Vec::new();
    let mut merged: HashMap<(&str, &str, u64, usize), usize> = HashMap::new();
    for e in &cat.entries {
        let mut set: Vec<String> = if e.servers.is_empty() {
            defaults.clone()
        } else {
            e.servers.clone()
        };
        if set.is_empty() {
            return Err(GenError::Option(format!(
                "line {}: {} {} has no servers, and no default servers (--from) are given",
                e.line, e.product, e.version
            )));
        }
        set.sort();
        set.dedup();
        let next = server_sets.len();
        let servers = *set_index.entry(set.clone()).or_insert(next);
        if servers == next {
            server_sets.push(set);
        }
        let key = (e.product.as_str(), e.version.as_str(), e.size, servers);
        if let Some(&i) = merged.get(&key) {
            items[i].archs.extend(e.arch.as_deref());
            continue;
        }
        merged.insert(key, items.len());
        let (center, tol) = opts.model.window(e.size);
        items.push(Item {
            entry: e,
            archs: e.arch.as_deref().into_iter().collect(),
            servers,
            center,
            tol,
        });
    }
    // Within each server set, by expected size: neighbours are found by scanning outwards.
    items.sort_by(|a, b| {
        (
            a.servers,
            a.center,
            &a.entry.product,
            &a.entry.version,
            &a.archs,
        )
            .cmp(&(
                b.servers,
                b.center,
                &b.entry.product,
                &b.entry.version,
                &b.archs,
            ))
    });
    let list_names: Vec<String> = if server_sets.len() == 1 {
        vec!["servers".into()]
    } else {
        (1..=server_sets.len())
            .map(|i| format!("servers_{i}"))
            .collect()
    };
    let mut stats = Stats {
        entries: items.len(),
        ..Default::default()
    };
    let mut ids: BTreeSet<String> = BTreeSet::new();
    let mut rules: BTreeMap<(&str, &str, u64), String> = BTreeMap::new();
    for i in 0..items.len() {
        let item = &items[i];
        if opts
            .select
            .as_ref()
            .is_some_and(|r| !r.is_match(&item.entry.product))
        {
            stats.left_out += 1;
            continue;
        }
        // Products are counted up to COUNTED: beyond, the confidence is at its floor anyway.
        let near = near(&items, i, opts.max_products.min(COUNTED));
        if near.products.len() > opts.max_products {
            stats.dropped += 1;
            continue;
        }
        let text = rule_text(item, &near, opts, &list_names, &mut ids, &mut stats);
        rules.insert(
            (&item.entry.product, &item.entry.version, item.entry.size),
            text,
        );
    }
    stats.rules = rules.len();
    let header = format!(
        "# Generated by `flowprint pack gen` ({}); regenerate instead of editing.\n\n",
        opts.kind
    );
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for ((product, _, _), text) in &rules {
        files
            .entry(file_for(product))
            .or_insert_with(|| header.clone())
            .push_str(text);
    }
    let mut lists = header.clone();
    for (name, set) in list_names.iter().zip(&server_sets) {
        let names: Vec<String> = set.iter().map(|s| format!("\"{}\"", escape(s))).collect();
        let _ = writeln!(lists, "list {name} = domains {{ {} }}", names.join(", "));
    }
    let mut out = vec![(PathBuf::from("rules/servers.rules"), lists)];
    for (file, body) in files {
        out.push((PathBuf::from(format!("rules/{file}.rules")), body));
    }
    out.push((PathBuf::from("pack.yaml"), manifest(opts)));
    let readme = readme(opts, cat, &stats, &server_sets);
    out.push((PathBuf::from("README.md"), readme));
    Ok(GeneratedPack { files: out, stats })
}

/// The items (with the same servers) whose windows overlap item `i`'s: a transfer that fires
/// its rule could have been any of those files. Items are sorted by expected size, and both
/// ends of a window grow with the size, so the scan stops at the first item out of reach on
/// each side, or once more than `limit` products are found.
fn near<'a>(items: &[Item<'a>], i: usize, limit: usize) -> Near<'a> {
    let it = &items[i];
    let mut n = Near::default();
    n.products.insert(it.entry.product.as_str());
    let (lo, hi) = (it.center.saturating_sub(it.tol), it.center + it.tol);
    let mut visit = |o: &Item<'a>| {
        let p = o.entry.product.as_str();
        if p == it.entry.product {
            if o.entry.version != it.entry.version {
                n.versions += 1;
            }
        } else {
            n.products.insert(p);
        }
        if n.names.len() < 8 && !std::ptr::eq(o, it) {
            let name = format!("{} {}", o.entry.product, o.entry.version);
            if !n.names.contains(&name)
                && (p != it.entry.product || o.entry.version != it.entry.version)
            {
                n.names.push(name);
            }
        }
        n.products.len() <= limit
    };
    for o in items[..i].iter().rev() {
        if o.servers != it.servers || o.center + o.tol < lo || !visit(o) {
            break;
        }
    }
    for o in &items[i + 1..] {
        if o.servers != it.servers || o.center.saturating_sub(o.tol) > hi || !visit(o) {
            break;
        }
    }
    n
}

/// The rules file of a product: its first letter or digit, or `other`.
fn file_for(product: &str) -> String {
    match product.chars().next() {
        Some(c) if c.is_ascii_alphabetic() => c.to_ascii_lowercase().to_string(),
        Some(c) if c.is_ascii_digit() => "0-9".into(),
        _ => "other".into(),
    }
}

/// A rule id from product, version and architectures, unique among `ids`.
fn rule_id(item: &Item<'_>, ids: &mut BTreeSet<String>) -> String {
    let mut raw = format!("{}-{}", item.entry.product, item.entry.version);
    for a in &item.archs {
        raw.push('-');
        raw.push_str(a);
    }
    let mut id = String::new();
    for c in raw.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '-'
        };
        if !(c == '-' && (id.is_empty() || id.ends_with('-'))) {
            id.push(c);
        }
    }
    let mut id = id.trim_end_matches('-').to_string();
    if !id.starts_with(|c: char| c.is_ascii_alphabetic()) {
        id.insert_str(0, "p-");
    }
    id.truncate(120);
    let base = id.trim_end_matches('-').to_string();
    let mut id = base.clone();
    let mut n = 2;
    while ids.contains(&id) {
        id = format!("{base}-{n}");
        n += 1;
    }
    ids.insert(id.clone());
    id
}

/// Escapes text for a string literal of the rule language.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn duration_text(ms: u64) -> String {
    for (unit, n) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms.is_multiple_of(n) {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

fn rule_text(
    item: &Item<'_>,
    near: &Near<'_>,
    opts: &Options,
    list_names: &[String],
    ids: &mut BTreeSet<String>,
    stats: &mut Stats,
) -> String {
    let e = item.entry;
    let k = near.products.len().max(1);
    let confidence = ((opts.confidence / k as f64) * 1000.0).floor().max(1.0) / 1000.0;
    let with_version = near.versions == 0;
    if k > 1 {
        stats.shared += 1;
    } else if with_version {
        stats.unique += 1;
    }
    if !with_version {
        stats.version_ambiguous += 1;
    }
    let id = rule_id(item, ids);
    let arch = if item.archs.is_empty() {
        String::new()
    } else {
        format!(
            " ({})",
            item.archs.iter().copied().collect::<Vec<_>>().join(", ")
        )
    };
    let mut desc = format!(
        "A download of {} ({} bytes",
        e.file.as_deref().unwrap_or("the file"),
        group_digits(e.size)
    );
    if let Some(h) = &e.sha256 {
        let _ = write!(desc, ", sha256 {h}");
    }
    let _ = write!(
        desc,
        "): {} ± {} bytes in flow records.",
        group_digits(item.center),
        group_digits(item.tol)
    );
    if !near.names.is_empty() {
        let _ = write!(
            desc,
            " Also within reach: {}{}; {}.",
            near.names.join(", "),
            if near.names.len() == 8 {
                " and maybe more"
            } else {
                ""
            },
            match (k, with_version) {
                (1, _) => "the version is left open".to_string(),
                (_, true) => format!("confidence divided by {k} products"),
                (_, false) => format!("confidence divided by {k} products, the version left open"),
            }
        );
    }
    let list = &list_names[item.servers];
    let mut t = String::new();
    let _ = writeln!(t, "rule {id} {{");
    let _ = writeln!(
        t,
        "    title       \"{} {}{} downloaded\"",
        escape(&e.product),
        escape(&e.version),
        escape(&arch)
    );
    let _ = writeln!(t, "    description \"{}\"", escape(&desc));
    let _ = writeln!(t, "    status      experimental");
    let _ = writeln!(
        t,
        "    tags        [\"software\", \"download\", \"generated\"]"
    );
    let hi = item.center + item.tol;
    match opts.matching {
        Matching::Transfer => {
            let _ = writeln!(
                t,
                "    when  peer.domain in {list} and proto == tcp and peer.bytes <= {hi} B"
            );
            let _ = writeln!(
                t,
                "    over  {} transfer ~ {} B +- {} B",
                duration_text(opts.window_ms),
                item.center,
                item.tol
            );
        }
        Matching::Record => {
            let _ = writeln!(
                t,
                "    when  peer.domain in {list} and proto == tcp and peer.bytes ~ {} B +- {} B",
                item.center, item.tol
            );
        }
    }
    let version = if with_version {
        format!(" version \"{}\"", escape(&e.version))
    } else {
        String::new()
    };
    let _ = writeln!(
        t,
        "    then  software = \"{}\"{version} confidence {confidence}",
        escape(&e.product)
    );
    t.push_str("}\n\n");
    t
}

fn manifest(opts: &Options) -> String {
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    format!(
        "name: {}\nversion: {}\ndescription: {}\nauthors: [\"flowprint pack gen\"]\nlicense: {}\n",
        opts.name,
        opts.version,
        q(&opts.description),
        q(&opts.license)
    )
}

fn readme(opts: &Options, cat: &Catalogue, stats: &Stats, sets: &[Vec<String>]) -> String {
    let m = &opts.model;
    let mut r = String::new();
    let _ = writeln!(r, "# {}\n", opts.name);
    let _ = writeln!(r, "{}\n", opts.description);
    let _ = writeln!(
        r,
        "Generated by `flowprint pack gen`: {}. Regenerate rather than edit; see \
         `docs/pack-gen.md` of flowprint.\n",
        opts.source
    );
    let _ = writeln!(r, "| | |\n|---|---|");
    let _ = writeln!(
        r,
        "| entries | {} (input {}) |",
        stats.entries, cat.compression
    );
    let _ = writeln!(r, "| malformed, skipped | {} |", cat.malformed_count);
    let _ = writeln!(
        r,
        "| left out by the selection (still counted as neighbours) | {} |",
        stats.left_out
    );
    let _ = writeln!(
        r,
        "| not written: more than {} products within reach | {} |",
        opts.max_products, stats.dropped
    );
    let _ = writeln!(r, "| rules | {} |", stats.rules);
    let _ = writeln!(r, "| product and version certain | {} |", stats.unique);
    let _ = writeln!(
        r,
        "| version left open (other versions within reach) | {} |",
        stats.version_ambiguous
    );
    let _ = writeln!(
        r,
        "| confidence divided (other products within reach) | {} |",
        stats.shared
    );
    let _ = writeln!(
        r,
        "| expected bytes | size × {:.4} + {} B, ± (size × {:.2} % + {} B) |",
        1.0 + m.overhead_pct / 100.0,
        m.fixed,
        m.tolerance_pct,
        m.slack
    );
    let _ = writeln!(
        r,
        "| matching | {} |",
        match opts.matching {
            Matching::Transfer => format!("transfer (over {})", duration_text(opts.window_ms)),
            Matching::Record => "one record".into(),
        }
    );
    let _ = writeln!(r, "| base confidence | {} |\n", opts.confidence);
    let _ = writeln!(r, "Servers:\n");
    for s in sets {
        let _ = writeln!(r, "- {}", s.join(", "));
    }
    r
}

impl GeneratedPack {
    /// Writes the pack into `dir` (created if missing). Existing generated `rules/*.rules`
    /// files that the pack no longer has are removed when `replace` is set; otherwise a
    /// directory that already holds a `pack.yaml` is refused.
    pub fn write_to(&self, dir: &Path, replace: bool) -> Result<(), GenError> {
        if dir.join("pack.yaml").exists() && !replace {
            return Err(GenError::Option(format!(
                "{} already holds a pack (use --force to replace it)",
                dir.display()
            )));
        }
        let rules = dir.join("rules");
        std::fs::create_dir_all(&rules)?;
        if replace {
            for e in std::fs::read_dir(&rules)? {
                let p = e?.path();
                if p.extension().is_some_and(|x| x == "rules") {
                    std::fs::remove_file(&p)?;
                }
            }
        }
        for (path, text) in &self.files {
            std::fs::write(dir.join(path), text)?;
        }
        Ok(())
    }
}
