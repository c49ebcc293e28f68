//! The limits flowprint puts on what it reads, in one place, so that no file size, length field
//! or nesting depth can make it allocate without bound or recurse off its stack. Each limit is
//! documented in `docs/limits.md` with what happens when it is reached.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest rule file read (256 MiB): the bundled packs together are under 1 MiB, but a pack
/// generated from a whole archive's catalogue (`pack gen`) writes about 850 bytes a rule, and
/// 20,000 rules in one file pass 16 MiB. Spans are 32-bit, so far above this would not do.
pub const MAX_RULE_FILE: u64 = 256 << 20;
/// Largest side input read whole: overrides, labels, configuration, `pack.yaml`, fixtures
/// (64 MiB). Flow inputs are streamed and have no such limit.
pub const MAX_SIDE_FILE: u64 = 64 << 20;
/// Deepest nesting of parentheses, brackets and braces in a rule file.
pub const MAX_RULE_NESTING: usize = 64;
/// Longest source line quoted in a diagnostic; longer lines are shown cut, with a mark.
pub const MAX_SNIPPET_LINE: usize = 240;

/// Largest YAML file read: `pack.yaml`, overrides, the serve configuration, pack fixtures
/// (8 MiB). The YAML parser holds every event of a document in memory (about 100 bytes per
/// scalar), so YAML gets a tighter bound than other side inputs.
pub const MAX_YAML_FILE: u64 = 8 << 20;
/// Deepest nesting of YAML collections (block indentation levels, `- ` and `? ` indicators,
/// `[` and `{`), as counted by [`check_yaml`].
pub const MAX_YAML_NESTING: usize = 64;

/// A file that could not be read within its limit.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening or reading failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than the limit for its kind.
    #[error("{}: larger than the limit of {limit} bytes for {what} (see docs/limits.md)", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
        /// What kind of input (`rule file`, `overrides file`, ...).
        what: &'static str,
    },
    /// The file is not UTF-8 text.
    #[error("{}: not UTF-8 text (at byte {at})", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// Offset of the first invalid byte.
        at: usize,
    },
}

/// Reads a whole file of at most `limit` bytes. Reads at most `limit + 1` bytes whatever the file
/// claims to be (a device such as `/dev/zero`, a growing file, a FIFO), so nothing beyond the
/// limit is ever allocated.
pub fn read_bounded(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    if let Ok(meta) = file.metadata()
        && meta.is_file()
        && meta.len() > limit
    {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            limit,
            what,
        });
    }
    let mut out = Vec::new();
    file.take(limit + 1).read_to_end(&mut out).map_err(io)?;
    if out.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            limit,
            what,
        });
    }
    Ok(out)
}

/// [`read_bounded`], then UTF-8.
pub fn read_text_bounded(path: &Path, limit: u64, what: &'static str) -> Result<String, ReadError> {
    let bytes = read_bounded(path, limit, what)?;
    String::from_utf8(bytes).map_err(|e| ReadError::NotUtf8 {
        path: path.to_path_buf(),
        at: e.utf8_error().valid_up_to(),
    })
}

/// YAML text refused before it reaches the parser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YamlRefusal {
    /// More bytes than [`MAX_YAML_FILE`].
    #[error("{len} bytes of YAML, more than the limit of {limit} bytes (see docs/limits.md)")]
    TooLarge {
        /// The text's length.
        len: usize,
        /// The limit.
        limit: u64,
    },
    /// Collections nested deeper than the limit.
    #[error(
        "nested more than {limit} levels deep, at line {line} column {column} (see docs/limits.md)"
    )]
    TooDeep {
        /// The nesting limit.
        limit: usize,
        /// 1-based line of the collection that goes one level too deep.
        line: usize,
        /// 1-based column (characters).
        column: usize,
    },
    /// An alias (`*name`): aliases can expand a small file into a huge document.
    #[error(
        "an alias (`*name`) at line {line} column {column}: YAML aliases are not accepted (see docs/limits.md)"
    )]
    Alias {
        /// 1-based line.
        line: usize,
        /// 1-based column (characters).
        column: usize,
    },
}

/// Checks YAML text before it is parsed: at most [`MAX_YAML_FILE`] bytes, collections nested at
/// most `max_depth` levels, no aliases. The scan is lexical and linear in the text: block
/// indentation levels, `- `, `? ` and `: ` indicators and flow brackets outside quoted scalars,
/// comments and block scalars each count as a level. It never counts fewer levels than the
/// parser builds (a block sequence written at its mapping key's indentation counts as one level
/// for two), so a text it accepts cannot nest more than `2 * max_depth + 1` levels.
pub fn check_yaml(text: &str, max_depth: usize) -> Result<(), YamlRefusal> {
    if text.len() as u64 > MAX_YAML_FILE {
        return Err(YamlRefusal::TooLarge {
            len: text.len(),
            limit: MAX_YAML_FILE,
        });
    }
    let mut scan = YamlScan {
        b: text.as_bytes(),
        text,
        blocks: Vec::new(),
        flow: 0,
        max: max_depth,
        line_start: 0,
    };
    scan.run()
}

/// The state of [`check_yaml`]'s scan.
struct YamlScan<'a> {
    b: &'a [u8],
    text: &'a str,
    /// Columns of the open block collections.
    blocks: Vec<usize>,
    /// Open flow collections.
    flow: usize,
    max: usize,
    /// Offset of the line the scan is on.
    line_start: usize,
}

fn blank_or_end(b: &[u8], at: usize) -> bool {
    at >= b.len() || matches!(b[at], b' ' | b'\t' | b'\n' | b'\r')
}

fn flow_indicator(c: u8) -> bool {
    matches!(c, b',' | b'[' | b']' | b'{' | b'}')
}

impl YamlScan<'_> {
    fn at(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    fn check(&self, offset: usize) -> Result<(), YamlRefusal> {
        if self.blocks.len() + self.flow > self.max {
            let (line, column) = self.at(offset);
            return Err(YamlRefusal::TooDeep {
                limit: self.max,
                line,
                column,
            });
        }
        Ok(())
    }

    fn alias(&self, offset: usize) -> YamlRefusal {
        let (line, column) = self.at(offset);
        YamlRefusal::Alias { line, column }
    }

    fn push(&mut self, column: usize, offset: usize) -> Result<(), YamlRefusal> {
        self.blocks.push(column);
        self.check(offset)
    }

    fn run(&mut self) -> Result<(), YamlRefusal> {
        let b = self.b;
        let mut i = if b.starts_with("\u{feff}".as_bytes()) {
            3
        } else {
            0
        };
        // Inside a block scalar: lines indented more than this (or blank) are its text.
        let mut scalar_parent: Option<isize> = None;
        while i < b.len() {
            self.line_start = i;
            let end = b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |n| i + n);
            let indent = b[i..end].iter().take_while(|&&c| c == b' ').count();
            let first = i + indent;
            let empty = b[first..end]
                .iter()
                .all(|c| matches!(c, b' ' | b'\t' | b'\r'));
            let blank = empty || b[first] == b'#';
            if let Some(parent) = scalar_parent {
                if empty || indent as isize > parent {
                    i = end + 1;
                    continue;
                }
                scalar_parent = None;
            }
            if blank {
                i = end + 1;
                continue;
            }
            let marker = indent == 0
                && (b[i..].starts_with(b"---") || b[i..].starts_with(b"..."))
                && blank_or_end(b, i + 3);
            let from = if marker {
                self.blocks.clear();
                i + 3
            } else {
                while self.blocks.last().is_some_and(|&t| t > indent) {
                    self.blocks.pop();
                }
                if self.blocks.last().is_none_or(|&t| t < indent) {
                    self.push(indent, first)?;
                }
                first
            };
            let (next, scalar) = self.block_line(from)?;
            scalar_parent = scalar;
            i = next;
        }
        Ok(())
    }

    /// Scans a line in block context from `pos`, where a node may start. Flow collections and
    /// quoted scalars may go on over later lines. Returns where the next line starts and, when
    /// a block scalar starts on the line, the indentation its text must exceed.
    fn block_line(&mut self, mut pos: usize) -> Result<(usize, Option<isize>), YamlRefusal> {
        let b = self.b;
        let mut node_start = true;
        let mut after_node = false;
        loop {
            while pos < b.len() && matches!(b[pos], b' ' | b'\t' | b'\r') {
                pos += 1;
            }
            if pos >= b.len() {
                return Ok((pos, None));
            }
            let c = b[pos];
            if c == b'\n' {
                return Ok((pos + 1, None));
            }
            let after_space = pos == 0 || matches!(b[pos - 1], b' ' | b'\t' | b'\n' | b'\r');
            if c == b'#' && after_space {
                let end = b[pos..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |n| pos + n);
                return Ok((end + 1, None));
            }
            if node_start {
                match c {
                    b'-' | b'?' | b':' if blank_or_end(b, pos + 1) => {
                        pos += 1;
                        let mut q = pos;
                        while q < b.len() && matches!(b[q], b' ' | b'\t') {
                            q += 1;
                        }
                        self.push(q - self.line_start, pos - 1)?;
                        continue;
                    }
                    b'&' | b'!' => {
                        while !blank_or_end(b, pos) {
                            pos += 1;
                        }
                        continue;
                    }
                    b'*' => return Err(self.alias(pos)),
                    b'[' | b'{' => {
                        pos = self.flow_scan(pos)?;
                        node_start = false;
                        after_node = true;
                        continue;
                    }
                    b'"' | b'\'' => {
                        pos = self.quoted(pos);
                        node_start = false;
                        after_node = true;
                        continue;
                    }
                    b'|' | b'>' => {
                        let mut q = pos + 1;
                        while q < b.len() && matches!(b[q], b'0'..=b'9' | b'+' | b'-') {
                            q += 1;
                        }
                        if blank_or_end(b, q) {
                            let end = b[q..]
                                .iter()
                                .position(|&c| c == b'\n')
                                .map_or(b.len(), |n| q + n);
                            let parent = self.blocks.last().map_or(-1, |&t| t as isize);
                            return Ok((end + 1, Some(parent)));
                        }
                        node_start = false;
                    }
                    _ => node_start = false,
                }
            }
            // In a plain scalar, or after a quoted scalar or a flow collection: `: ` starts
            // the value (right after a quoted key or a collection, `:` alone does).
            if c == b':' && (blank_or_end(b, pos + 1) || after_node) {
                node_start = true;
                after_node = false;
            }
            pos += 1;
        }
    }

    /// Scans a flow collection from its opening bracket at `pos` to just after its end (or the
    /// end of the text). Returns the offset after it.
    fn flow_scan(&mut self, mut pos: usize) -> Result<usize, YamlRefusal> {
        let b = self.b;
        let mut node_start = true;
        let mut in_plain = false;
        while pos < b.len() {
            let c = b[pos];
            match c {
                b'[' | b'{' => {
                    self.flow += 1;
                    self.check(pos)?;
                    node_start = true;
                    in_plain = false;
                }
                b']' | b'}' => {
                    self.flow = self.flow.saturating_sub(1);
                    node_start = false;
                    in_plain = false;
                    if self.flow == 0 {
                        return Ok(pos + 1);
                    }
                }
                b',' => {
                    node_start = true;
                    in_plain = false;
                }
                b'\n' => self.line_start = pos + 1,
                b' ' | b'\t' | b'\r' => {}
                b'#' if pos == 0 || matches!(b[pos - 1], b' ' | b'\t' | b'\n' | b'\r') => {
                    pos = b[pos..]
                        .iter()
                        .position(|&c| c == b'\n')
                        .map_or(b.len(), |n| pos + n);
                    continue;
                }
                b':' if !in_plain || blank_or_end(b, pos + 1) || flow_indicator(b[pos + 1]) => {
                    node_start = true;
                    in_plain = false;
                }
                b'"' | b'\'' if node_start => {
                    pos = self.quoted(pos);
                    node_start = false;
                    continue;
                }
                b'*' if node_start => return Err(self.alias(pos)),
                b'&' | b'!' | b'?' if node_start => {
                    while !blank_or_end(b, pos) && !flow_indicator(b[pos]) {
                        pos += 1;
                    }
                    continue;
                }
                _ => {
                    if node_start {
                        in_plain = true;
                    }
                    node_start = false;
                }
            }
            pos += 1;
        }
        Ok(pos)
    }

    /// Skips a quoted scalar whose opening quote is at `pos`; returns the offset after it.
    fn quoted(&mut self, mut pos: usize) -> usize {
        let b = self.b;
        let quote = b[pos];
        pos += 1;
        while pos < b.len() {
            match b[pos] {
                b'\n' => self.line_start = pos + 1,
                b'\\' if quote == b'"' => {
                    if b.get(pos + 1) == Some(&b'\n') {
                        self.line_start = pos + 2;
                    }
                    pos += 1;
                }
                c if c == quote => {
                    if quote == b'\'' && b.get(pos + 1) == Some(&b'\'') {
                        pos += 1;
                    } else {
                        return pos + 1;
                    }
                }
                _ => {}
            }
            pos += 1;
        }
        pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_large_files_stop_at_the_limit() {
        // /dev/zero never ends: the read must stop at limit + 1 bytes.
        let e = read_bounded(Path::new("/dev/zero"), 1024, "test input").unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { limit: 1024, .. }), "{e}");
        let dir = std::env::temp_dir().join(format!("fp-limits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("big");
        std::fs::write(&f, vec![b'a'; 2000]).unwrap();
        assert!(read_bounded(&f, 1999, "x").is_err());
        assert_eq!(read_bounded(&f, 2000, "x").unwrap().len(), 2000);
        std::fs::write(&f, [0x61, 0xff]).unwrap();
        let e = read_text_bounded(&f, 10, "x").unwrap_err();
        assert!(matches!(e, ReadError::NotUtf8 { at: 1, .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn depth_of(text: &str) -> usize {
        (0..=200).find(|&d| check_yaml(text, d).is_ok()).unwrap()
    }

    #[test]
    fn yaml_depth_counts_blocks_indicators_and_flows() {
        assert_eq!(depth_of("a: 1\nb: 2\n"), 1);
        assert_eq!(depth_of("a:\n  b:\n    c: 1\n"), 3);
        assert_eq!(depth_of("- - - x\n"), 4);
        assert_eq!(depth_of("a: [1, {b: [2]}]\n"), 4);
        assert_eq!(depth_of("[[[]]]"), 4);
        // Brackets inside quoted scalars, comments and block scalars are text.
        assert_eq!(
            depth_of("a: \"[[[[\"\nb: '{{''[['\n# [[[[[\nc: |\n  [[[[[\n  {{{\nd: 1\n"),
            1
        );
        assert_eq!(depth_of("a: ['[[[', \"]]\\\"[[\"]\n"), 2);
        // A flow plain scalar may hold a quote: what follows is still counted.
        assert_eq!(depth_of("[it's, [[x]]]\n"), 4);
        assert_eq!(depth_of("[a:'b, [[x]]]\n"), 4);
        // A sibling key after a block scalar is structure again.
        assert_eq!(depth_of("- k: |\n    text [[[\n  o: [[[1]]]\n"), 5);
        // Documents start over.
        assert_eq!(depth_of("a:\n  b: 1\n---\nc: 1\n"), 2);
        // A BOM does not hide what follows.
        assert_eq!(depth_of("\u{feff}[[[1]]]"), 4);
        // The bundled fixtures and manifests are far from the limit.
        for dir in ["rules/os-core", "rules/software-core"] {
            for e in std::fs::read_dir(format!("{dir}/tests")).unwrap().flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap();
                let d = depth_of(&text);
                assert!(d <= 8, "{}: {d}", e.path().display());
            }
            let text = std::fs::read_to_string(format!("{dir}/pack.yaml")).unwrap();
            check_yaml(&text, MAX_YAML_NESTING).unwrap();
        }
    }

    #[test]
    fn deep_wide_and_aliased_yaml_is_refused_quickly() {
        let started = std::time::Instant::now();
        let flow = format!(
            "name: x\nversion: {}1{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let e = check_yaml(&flow, MAX_YAML_NESTING).unwrap_err();
        assert_eq!(
            e,
            YamlRefusal::TooDeep {
                limit: 64,
                line: 2,
                column: 73
            }
        );
        assert!(e.to_string().contains("line 2 column 73"), "{e}");
        let compact = "- ".repeat(100_000) + "x\n";
        assert!(matches!(
            check_yaml(&compact, MAX_YAML_NESTING),
            Err(YamlRefusal::TooDeep { line: 1, .. })
        ));
        let mut indented = String::new();
        for i in 0..2_000 {
            indented.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
        }
        assert!(matches!(
            check_yaml(&indented, MAX_YAML_NESTING),
            Err(YamlRefusal::TooDeep { line: 65, .. })
        ));
        // Wide is fine, and linear.
        let wide = "- {a: 1, b: [1, 2]}\n".repeat(200_000);
        check_yaml(&wide, MAX_YAML_NESTING).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let big = "a".repeat(MAX_YAML_FILE as usize + 1);
        assert!(matches!(
            check_yaml(&big, MAX_YAML_NESTING),
            Err(YamlRefusal::TooLarge { .. })
        ));
        let laughs = "a: &a [x, x]\nb: &b [*a, *a]\n";
        assert_eq!(
            check_yaml(laughs, MAX_YAML_NESTING),
            Err(YamlRefusal::Alias { line: 2, column: 8 })
        );
        assert!(matches!(
            check_yaml("<<: *base\n", 64),
            Err(YamlRefusal::Alias { .. })
        ));
        // An asterisk inside a scalar is not an alias.
        check_yaml("disable: [\"os-core/*\", os-core/*]\nk: a*b\n", 64).unwrap();
    }

    fn parsed_depth(v: &yaml_serde::Value) -> usize {
        match v {
            yaml_serde::Value::Sequence(s) => 1 + s.iter().map(parsed_depth).max().unwrap_or(0),
            yaml_serde::Value::Mapping(m) => {
                1 + m
                    .iter()
                    .map(|(k, v)| parsed_depth(k).max(parsed_depth(v)))
                    .max()
                    .unwrap_or(0)
            }
            yaml_serde::Value::Tagged(t) => parsed_depth(&t.value),
            _ => 0,
        }
    }

    #[test]
    fn yaml_depth_never_undercounts_the_parser() {
        for text in [
            "a:\n- b:\n  - c:\n    - d: 1\n",
            "- - - [x, {a: [1]}]\n",
            "a: !!seq [ [1], ? [2] : [3] ]\n",
            "? [a, [b]]\n: {c: {d: [e]}}\n",
            "\"k\": [{\"j\":[[1]]}]\n",
            "a: |\n  [[[\nb:\n  - [x]\n",
            "- k: >-\n    text\n  o: [[[1]]]\n",
            "a: 'it''s'\nb: [\"x\\\"\", [y]]\n",
            "[a b, c: [d], 'e': {f: g}]\n",
            "---\n- x\n---\n[[y]]\n",
            "a: &anchor\n  b: [1]\n",
        ] {
            let parsed: yaml_serde::Value = match yaml_serde::from_str(text) {
                Ok(v) => v,
                Err(_) => continue,
            };
            let real = parsed_depth(&parsed);
            let counted = depth_of(text);
            assert!(
                real <= 2 * counted + 1,
                "{text:?}: parser {real}, counted {counted}"
            );
            assert!(counted >= real / 2, "{text:?}");
        }
    }
}
