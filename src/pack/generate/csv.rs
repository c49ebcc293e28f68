//! CSV catalogues.

use super::*;

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
