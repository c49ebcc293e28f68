//! Debian and Ubuntu `Packages` indexes.

use super::*;

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
