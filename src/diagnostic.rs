//! Diagnostics: stable codes, labelled spans, hints; rendered rustc-style or as JSON.
//!
//! Every problem the parser or compiler finds becomes a [`Diagnostic`], built from a
//! [`DiagnosticKind`]: the kinds' messages and hints are written once, in `messages.rs`. Codes
//! are stable and never reused; `docs/errors.md` lists each with an example and a fix.

use crate::span::{SourceMap, Span};
use codespan_reporting::diagnostic as cs;
use serde::Serialize;

mod messages;
pub use messages::{DiagnosticKind, SyntaxHint};

/// Whether a diagnostic stops a rule from compiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The rule (or list) it points at is not compiled.
    Error,
    /// Compiled, but probably not what the author meant, or slow.
    Warning,
}

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $num:literal, $sev:ident;)*) => {
        /// Stable diagnostic codes (`FP0001`...). Never renumbered, never reused.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code { $($(#[$doc])* $name,)* }

        impl Code {
            /// All codes, in numeric order.
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            /// The number, e.g. 1 for `FP0001`.
            pub fn number(self) -> u16 { match self { $(Code::$name => $num,)* } }

            /// The severity this code always has.
            pub fn severity(self) -> Severity { match self { $(Code::$name => Severity::$sev,)* } }
        }
    };
}

codes! {
    /// The text does not follow the grammar.
    Syntax = 1, Error;
    /// A field name that does not exist.
    UnknownField = 2, Error;
    /// A list name that is not defined in the pack.
    UndefinedList = 3, Error;
    /// A value whose type does not fit the field or operator.
    TypeMismatch = 4, Error;
    /// An address, network or address range that is not valid.
    InvalidAddress = 5, Error;
    /// Two rules of one pack with the same id.
    DuplicateRule = 6, Error;
    /// Two lists of one pack with the same name.
    DuplicateList = 7, Error;
    /// A list that no rule uses.
    UnusedList = 8, Warning;
    /// A rule that no index can select; it is checked against every flow.
    NotIndexable = 9, Warning;
    /// A regular expression that does not compile.
    InvalidRegex = 10, Error;
    /// A metadata key that is unknown, repeated, or has a value of the wrong kind.
    InvalidMetadata = 11, Error;
    /// A confidence outside 0..=1, or a conclusion without any confidence.
    InvalidConfidence = 12, Error;
    /// A number or unit that is not valid here (unknown unit, overflow, fraction of a byte).
    InvalidNumber = 13, Error;
    /// A conclusion target that does not exist (`os.famly`).
    UnknownConclusion = 14, Error;
    /// Retired: `over` clauses were rejected before stateful rules existed. Never reused.
    Unsupported = 15, Error;
    /// A range whose lower end is above its upper end, or an empty set.
    InvalidRange = 16, Error;
    /// A string with an unknown escape sequence.
    InvalidEscape = 17, Error;
    /// A list kind that does not exist, or a value that does not fit the list's kind.
    InvalidList = 18, Error;
    /// A rule file that cannot be read.
    Io = 19, Error;
    /// A domain pattern that is not a valid name or `*.suffix`.
    InvalidDomain = 20, Error;
    /// An aggregate of an `over` clause that is unknown or used with the wrong test.
    InvalidAggregate = 21, Error;
    /// A local overrides file that is not valid (YAML, keys, confidences).
    InvalidOverrides = 22, Error;
    /// An override that names no loaded rule or pack.
    UnmatchedOverride = 23, Warning;
    /// A pack whose `pack.yaml` is invalid, that needs another flowprint version, or whose
    /// dependencies are missing.
    InvalidPack = 24, Error;
    /// An entry of a rule directory that was not read: a symbolic link loop, a second link to a
    /// file or directory already read, a dangling link, a directory too deep.
    SkippedPath = 25, Warning;
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FP{:04}", self.number())
    }
}

/// A labelled region of a source.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// Where.
    pub span: Span,
    /// What about it (may be empty).
    pub message: String,
    /// The main location (rendered with `^`) or a secondary one (`-`).
    pub primary: bool,
}

/// One problem found in rule sources.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Stable code.
    pub code: Code,
    /// One-line description.
    pub message: String,
    /// Locations; the first primary label gives file, line and column.
    pub labels: Vec<Label>,
    /// How to fix it, when we can say.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A diagnostic with a primary label at `span`. The parser and the compiler build theirs
    /// from a [`DiagnosticKind`] ([`DiagnosticKind::at`]), whose texts are declared once.
    pub fn new(code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            labels: vec![Label {
                span,
                message: String::new(),
                primary: true,
            }],
            hint: None,
        }
    }

    /// Sets the message of the primary label.
    pub fn label(mut self, message: impl Into<String>) -> Diagnostic {
        if let Some(l) = self.labels.first_mut() {
            l.message = message.into();
        }
        self
    }

    /// Adds a secondary label.
    pub fn secondary(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.labels.push(Label {
            span,
            message: message.into(),
            primary: false,
        });
        self
    }

    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    /// Error or warning, as fixed by the code.
    pub fn severity(&self) -> Severity {
        self.code.severity()
    }

    /// The main location.
    pub fn primary_span(&self) -> Span {
        self.labels
            .iter()
            .find(|l| l.primary)
            .map(|l| l.span)
            .unwrap_or_default()
    }

    /// Renders rustc-style: `error[FP0002]: ...`, `--> file:line:col`, snippet, carets, hint.
    pub fn render(&self, sources: &SourceMap) -> String {
        let mut d = match self.severity() {
            Severity::Error => cs::Diagnostic::error(),
            Severity::Warning => cs::Diagnostic::warning(),
        }
        .with_code(self.code.to_string())
        .with_message(&self.message)
        .with_labels(
            self.labels
                .iter()
                .map(|l| {
                    let label = if l.primary {
                        cs::Label::primary(l.span.file, l.span.range())
                    } else {
                        cs::Label::secondary(l.span.file, l.span.range())
                    };
                    label.with_message(&l.message)
                })
                .collect(),
        );
        if let Some(h) = &self.hint {
            d = d.with_notes(vec![format!("help: {h}")]);
        }
        let config = codespan_reporting::term::Config::default();
        // A long line is quoted cut around its labels; a line with control characters (an ESC
        // sequence in a rule file) is quoted with them replaced, never sent to the terminal.
        let long_line = self.labels.iter().any(|l| {
            let (start, end) = sources.line_bounds(l.span.file, l.span.start as usize);
            end - start > crate::limits::MAX_SNIPPET_LINE
                || sources.get(l.span.file).text[start..end]
                    .bytes()
                    .any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
        });
        let rendered = if long_line {
            // Quote a window of each long line around its labels, not the whole line.
            let (view, labels) = CutView::new(sources, &self.labels);
            d.labels = labels;
            codespan_reporting::term::emit_into_string(&config, &view, &d)
        } else {
            codespan_reporting::term::emit_into_string(&config, sources, &d)
        };
        rendered.unwrap_or_else(|e| {
            format!(
                "{}[{}]: {} ({e})\n",
                self.severity_word(),
                self.code,
                self.message
            )
        })
    }

    fn severity_word(&self) -> &'static str {
        match self.severity() {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }

    /// The JSON object of `--format json`: code, severity, file, line, column, message, hint.
    pub fn to_json(&self, sources: &SourceMap) -> serde_json::Value {
        let span = self.primary_span();
        let (line, column) = sources.line_col(span.file, span.start);
        let (end_line, end_column) = sources.line_col(span.file, span.end);
        serde_json::json!({
            "code": self.code.to_string(),
            "severity": self.severity(),
            "file": sources.get(span.file).name,
            "line": line,
            "column": column,
            "end_line": end_line,
            "end_column": end_column,
            "message": self.message,
            "hint": self.hint,
        })
    }
}

/// The lines of a diagnostic's labels, each cut to a window of at most
/// [`MAX_SNIPPET_LINE`](crate::limits::MAX_SNIPPET_LINE) characters around its label, with the
/// real line and column numbers: a diagnostic on a 1 GiB line quotes 240 characters of it.
struct CutView<'s> {
    sources: &'s SourceMap,
    text: String,
    /// Per view line: (file, its start in `text`, its real line index, the real offset its
    /// quoted text starts at, the length of the `…` put before it).
    lines: Vec<(crate::span::FileId, usize, usize, usize, usize)>,
}

impl<'s> CutView<'s> {
    fn new(sources: &'s SourceMap, labels: &[Label]) -> (CutView<'s>, Vec<cs::Label<usize>>) {
        let mut view = CutView {
            sources,
            text: String::new(),
            lines: Vec::new(),
        };
        let mut out = Vec::new();
        for l in labels {
            let file = l.span.file;
            let src = &sources.get(file).text;
            let at = (l.span.start as usize).min(src.len());
            let (ls, le) = sources.line_bounds(file, at);
            let half = crate::limits::MAX_SNIPPET_LINE / 3;
            let mut ws = at.saturating_sub(half).max(ls);
            while !src.is_char_boundary(ws) {
                ws -= 1;
            }
            let mut we = (ws + crate::limits::MAX_SNIPPET_LINE).min(le);
            while !src.is_char_boundary(we) {
                we -= 1;
            }
            let line_index = sources.line_col(file, at as u32).0 - 1;
            let view_start = view.text.len();
            let prefix = if ws > ls { "…" } else { "" };
            view.text.push_str(prefix);
            // Same length, so offsets map one to one: each control byte becomes `?`.
            view.text.extend(src[ws..we].chars().map(|c| {
                if c.is_ascii_control() && c != '\t' {
                    '?'
                } else {
                    c
                }
            }));
            if we < le {
                view.text.push('…');
            }
            view.text.push('\n');
            view.lines
                .push((file, view_start, line_index, ws, prefix.len()));
            let map = |o: usize| view_start + prefix.len() + (o.clamp(ws, we) - ws);
            let range = map(at)..map((l.span.end as usize).max(at));
            let label = if l.primary {
                cs::Label::primary(view.lines.len() - 1, range)
            } else {
                cs::Label::secondary(view.lines.len() - 1, range)
            };
            out.push(label.with_message(&l.message));
        }
        (view, out)
    }
}

/// Every label is a file of its own in the view (its id is its index in `lines`), so that a
/// label's line is found without searching.
impl<'a> codespan_reporting::files::Files<'a> for CutView<'_> {
    type FileId = usize;
    type Name = &'a str;
    type Source = &'a str;

    fn name(&'a self, id: usize) -> Result<&'a str, codespan_reporting::files::Error> {
        let (file, ..) = self.lines[id];
        Ok(self.sources.get(file).name.as_str())
    }

    fn source(&'a self, _id: usize) -> Result<&'a str, codespan_reporting::files::Error> {
        Ok(&self.text)
    }

    fn line_index(
        &'a self,
        id: usize,
        _byte: usize,
    ) -> Result<usize, codespan_reporting::files::Error> {
        Ok(id)
    }

    fn line_number(
        &'a self,
        id: usize,
        _line_index: usize,
    ) -> Result<usize, codespan_reporting::files::Error> {
        Ok(self.lines[id].2 + 1)
    }

    fn column_number(
        &'a self,
        id: usize,
        _line_index: usize,
        byte: usize,
    ) -> Result<usize, codespan_reporting::files::Error> {
        // The real column: characters from the real line start to the real offset.
        let (file, view_start, _, ws, prefix) = self.lines[id];
        let src = &self.sources.get(file).text;
        let real = (ws + byte.saturating_sub(view_start + prefix)).min(src.len());
        Ok(self.sources.line_col(file, real as u32).1)
    }

    fn line_range(
        &'a self,
        id: usize,
        _line_index: usize,
    ) -> Result<std::ops::Range<usize>, codespan_reporting::files::Error> {
        let start = self.lines[id].1;
        let end = self.lines.get(id + 1).map_or(self.text.len(), |l| l.1);
        Ok(start..end)
    }
}

/// Levenshtein distance, for "did you mean" hints.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The closest candidate to `name`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}
