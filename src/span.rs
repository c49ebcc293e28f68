//! Byte spans into rule sources and the source map that turns them into lines and columns.
//!
//! Spans are cheap (two `u32`s and a file id); line and column are computed only when a
//! diagnostic is rendered.

use std::sync::Arc;

/// Identifies one source file inside a [`SourceMap`].
pub type FileId = usize;

/// A half-open byte range `start..end` in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// The file the span points into.
    pub file: FileId,
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

impl Span {
    /// A span from a byte range of `file`.
    pub fn new(file: FileId, start: usize, end: usize) -> Span {
        Span {
            file,
            start: start as u32,
            end: end as u32,
        }
    }

    /// The smallest span covering both `self` and `other` (same file).
    pub fn to(self, other: Span) -> Span {
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    /// The byte range, for slicing the source.
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// One named source text.
#[derive(Debug, Clone)]
pub struct Source {
    /// Name shown in diagnostics (usually the path).
    pub name: String,
    /// The text.
    pub text: Arc<str>,
    line_starts: Vec<usize>,
}

/// All sources of one compilation, indexed by [`FileId`].
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    sources: Vec<Source>,
}

impl SourceMap {
    /// Adds a source and returns its id.
    pub fn add(&mut self, name: impl Into<String>, text: impl Into<Arc<str>>) -> FileId {
        let text = text.into();
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        self.sources.push(Source {
            name: name.into(),
            text,
            line_starts,
        });
        self.sources.len() - 1
    }

    /// The source with this id.
    pub fn get(&self, id: FileId) -> &Source {
        &self.sources[id]
    }

    /// All sources in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (FileId, &Source)> {
        self.sources.iter().enumerate()
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, id: FileId, offset: u32) -> (usize, usize) {
        let src = &self.sources[id];
        let offset = (offset as usize).min(src.text.len());
        let line = src.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = src.line_starts[line];
        let col = src.text[start..]
            .char_indices()
            .take_while(|(i, _)| start + i < offset)
            .count();
        (line + 1, col + 1)
    }

    /// Byte range of the line holding `offset`, without its newline.
    pub fn line_bounds(&self, id: FileId, offset: usize) -> (usize, usize) {
        let src = &self.sources[id];
        let offset = offset.min(src.text.len());
        let line = src.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = src.line_starts[line];
        let end = src
            .line_starts
            .get(line + 1)
            .map_or(src.text.len(), |&n| n - 1);
        (start, end.max(start))
    }

    /// The text a span covers.
    pub fn snippet(&self, span: Span) -> &str {
        let text = &self.sources[span.file].text;
        text.get(span.range()).unwrap_or("")
    }
}

impl<'a> codespan_reporting::files::Files<'a> for SourceMap {
    type FileId = FileId;
    type Name = &'a str;
    type Source = &'a str;

    fn name(&'a self, id: FileId) -> Result<&'a str, codespan_reporting::files::Error> {
        self.sources
            .get(id)
            .map(|s| s.name.as_str())
            .ok_or(codespan_reporting::files::Error::FileMissing)
    }

    fn source(&'a self, id: FileId) -> Result<&'a str, codespan_reporting::files::Error> {
        self.sources
            .get(id)
            .map(|s| &*s.text)
            .ok_or(codespan_reporting::files::Error::FileMissing)
    }

    fn line_index(
        &'a self,
        id: FileId,
        byte: usize,
    ) -> Result<usize, codespan_reporting::files::Error> {
        let src = self
            .sources
            .get(id)
            .ok_or(codespan_reporting::files::Error::FileMissing)?;
        Ok(src.line_starts.partition_point(|&s| s <= byte) - 1)
    }

    fn line_range(
        &'a self,
        id: FileId,
        line: usize,
    ) -> Result<std::ops::Range<usize>, codespan_reporting::files::Error> {
        let src = self
            .sources
            .get(id)
            .ok_or(codespan_reporting::files::Error::FileMissing)?;
        let start =
            *src.line_starts
                .get(line)
                .ok_or(codespan_reporting::files::Error::LineTooLarge {
                    given: line,
                    max: src.line_starts.len() - 1,
                })?;
        let end = src
            .line_starts
            .get(line + 1)
            .copied()
            .unwrap_or(src.text.len());
        Ok(start..end)
    }
}
