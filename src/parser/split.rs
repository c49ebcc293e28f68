//! A lexical pass over a rule file before pest sees it: it cuts the file into its items (`rule`
//! and `list` declarations) so that a syntax error in one item never hides the others, and it
//! measures how deeply each item nests so that pest (a recursive-descent parser) is never handed
//! more nesting than [`MAX_RULE_NESTING`](crate::limits::MAX_RULE_NESTING): 100,000 nested
//! parentheses or `not`s are an error at the bracket too many, not a stack overflow.
//!
//! The pass is linear in the file and allocates only the list of items. It knows just enough of
//! the language to stay in step: strings (`"..."` with `\` escapes, ending at a newline at the
//! latest), comments (`#` and `//` to the end of the line) and regular expressions (`/.../` after
//! `matches`). An item starts at `rule NAME` or `list NAME` when that is at nesting depth 0 or
//! the first thing on its line (so an unclosed brace in one rule does not swallow the next),
//! and at whatever follows a `}` that closes depth 0 (so stray text after an item is reported on
//! its own).

/// One item of a file (or a stretch of stray text): a byte range to hand to pest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// Byte offset of the item's first token.
    pub start: usize,
    /// Byte offset just past the item (and the whitespace and comments after it).
    pub end: usize,
    /// Where the item first nests deeper than the limit: (start, end) of that token.
    pub too_deep: Option<(usize, usize)>,
    /// The first character outside strings, comments and regexes that no token of the language
    /// has (`é` in a name, a NUL byte): (start, end).
    pub stray_char: Option<(usize, usize)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Word,
    Open,
    Close,
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Tok {
    kind: Kind,
    start: usize,
    end: usize,
    /// Only whitespace (or a comment-only line) before it on its line.
    line_start: bool,
}

#[derive(Clone)]
struct Lexer<'t> {
    text: &'t [u8],
    pos: usize,
    after_matches: bool,
}

fn word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

impl<'t> Lexer<'t> {
    /// Skips whitespace and comments; tells whether a newline was crossed (or the start of file).
    fn skip_trivia(&mut self) -> bool {
        let t = self.text;
        let mut newline = self.pos == 0;
        // A byte-order mark is whitespace at the start of a file.
        if self.pos == 0 && t.starts_with(&[0xEF, 0xBB, 0xBF]) {
            self.pos = 3;
        }
        while self.pos < t.len() {
            match t[self.pos] {
                b'\n' => {
                    newline = true;
                    self.pos += 1;
                }
                b' ' | b'\t' | b'\r' => self.pos += 1,
                b'#' => self.skip_line(),
                b'/' if t.get(self.pos + 1) == Some(&b'/') => self.skip_line(),
                _ => break,
            }
        }
        newline
    }

    /// Skips a quoted token from its opening `quote` to its closing one, or to the end of its
    /// line (a newline ends it in the grammar too); `escapes(next)` tells whether a `\` before
    /// `next` escapes it.
    fn skip_quoted(&mut self, quote: u8, escapes: impl Fn(Option<&u8>) -> bool) {
        let t = self.text;
        self.pos += 1;
        while self.pos < t.len() {
            match t[self.pos] {
                b'\\' if escapes(t.get(self.pos + 1)) => self.pos += 2,
                b'\n' => break,
                b if b == quote => {
                    self.pos += 1;
                    break;
                }
                _ => self.pos += 1,
            }
        }
        self.pos = self.pos.min(t.len());
    }

    fn skip_line(&mut self) {
        match self.text[self.pos..].iter().position(|&b| b == b'\n') {
            Some(n) => self.pos += n,
            None => self.pos = self.text.len(),
        }
    }

    fn next(&mut self) -> Option<Tok> {
        let line_start = self.skip_trivia();
        let t = self.text;
        let start = self.pos;
        let b = *t.get(start)?;
        let after_matches = std::mem::replace(&mut self.after_matches, false);
        let kind = match b {
            // A string: any character after `\` is escaped, as in the grammar.
            b'"' => {
                self.skip_quoted(b'"', |_| true);
                Kind::Other
            }
            // A regular expression: only `\/` and `\\` are escapes.
            b'/' if after_matches => {
                self.skip_quoted(b'/', |next| matches!(next, Some(b'/' | b'\\')));
                Kind::Other
            }
            b'(' | b'[' | b'{' => {
                self.pos += 1;
                Kind::Open
            }
            b')' | b']' | b'}' => {
                self.pos += 1;
                Kind::Close
            }
            b if word_byte(b) => {
                while self.pos < t.len() && word_byte(t[self.pos]) {
                    self.pos += 1;
                }
                self.after_matches = &t[start..self.pos] == b"matches";
                Kind::Word
            }
            _ => {
                // One character (whole, if it is not ASCII).
                self.pos += 1;
                while self.pos < t.len() && (t[self.pos] & 0xC0) == 0x80 {
                    self.pos += 1;
                }
                Kind::Other
            }
        };
        Some(Tok {
            kind,
            start,
            end: self.pos,
            line_start,
        })
    }

    fn word(&self, tok: &Tok) -> &'t [u8] {
        &self.text[tok.start..tok.end]
    }

    /// Does `tok` begin an item: `rule NAME` or `list NAME`?
    fn starts_item(&self, tok: &Tok) -> bool {
        if tok.kind != Kind::Word || !matches!(self.word(tok), b"rule" | b"list") {
            return false;
        }
        let mut ahead = self.clone();
        ahead.next().is_some_and(|name| name.kind == Kind::Word)
    }
}

/// Cuts `text` into items, each with its nesting checked against `max_depth`.
pub(crate) fn split(text: &str, max_depth: usize) -> Vec<Chunk> {
    let mut lx = Lexer {
        text: text.as_bytes(),
        pos: 0,
        after_matches: false,
    };
    let mut chunks: Vec<Chunk> = Vec::new();
    // The item being read; `None` until its first token (leading whitespace, comments and a
    // byte-order mark belong to no item).
    let mut cur: Option<Chunk> = None;
    let mut depth = 0usize;
    let mut nots = 0usize;
    let mut closed_item = false;
    while let Some(tok) = lx.next() {
        let boundary = closed_item || ((depth == 0 || tok.line_start) && lx.starts_item(&tok));
        if boundary || cur.is_none() {
            if let Some(mut done) = cur.take() {
                done.end = tok.start;
                chunks.push(done);
            }
            cur = Some(Chunk {
                start: tok.start,
                end: 0,
                too_deep: None,
                stray_char: None,
            });
            depth = 0;
            nots = 0;
        }
        closed_item = false;
        match tok.kind {
            Kind::Open => depth += 1,
            Kind::Close => {
                depth = depth.saturating_sub(1);
                closed_item = depth == 0;
            }
            _ => {}
        }
        // `not not not x` nests in the grammar as deeply as `(((x)))`.
        if tok.kind == Kind::Word && lx.word(&tok) == b"not" {
            nots += 1;
        } else if tok.kind != Kind::Open {
            nots = 0;
        }
        if let Some(c) = cur.as_mut() {
            if c.too_deep.is_none() && depth + nots > max_depth {
                c.too_deep = Some((tok.start, tok.end));
            }
            if c.stray_char.is_none() && tok.kind == Kind::Other {
                let ch = text[tok.start..].chars().next().unwrap_or(' ');
                if (ch.is_control() || !ch.is_ascii()) && ch != '±' {
                    c.stray_char = Some((tok.start, tok.end));
                }
            }
        }
    }
    if let Some(mut done) = cur {
        done.end = text.len();
        chunks.push(done);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(text: &str) -> Vec<&str> {
        split(text, 64)
            .iter()
            .map(|c| text[c.start..c.end].trim())
            .collect()
    }

    #[test]
    fn items_are_cut_at_their_keywords() {
        let t = "# head\nrule a { when x == 1 then os.family = \"A\" }\nlist l = ports { 1, 2 }\n\
                 rule b { when y in { 1 } then software = \"rule c {\" }";
        assert_eq!(
            pieces(t),
            [
                "rule a { when x == 1 then os.family = \"A\" }",
                "list l = ports { 1, 2 }",
                "rule b { when y in { 1 } then software = \"rule c {\" }",
            ]
        );
    }

    #[test]
    fn an_unclosed_rule_does_not_swallow_the_next() {
        let t = "rule a {\n when (x == 1\n then os.family = \"A\"\nrule b { when y == 2 then software = \"B\" }\n";
        let p = pieces(t);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[1].starts_with("rule b"));
        // Stray text after an item is an item of its own.
        let p = pieces("rule a { when x == 1 then software = \"A\" } garbage here\nrule b { }");
        assert_eq!(
            p,
            [
                "rule a { when x == 1 then software = \"A\" }",
                "garbage here",
                "rule b { }"
            ]
        );
    }

    #[test]
    fn strings_comments_and_regexes_hide_brackets() {
        let t = "rule a { when x matches /a{(/ and y == \"}\" # }\n then software = \"A\" }\nrule b { }";
        assert_eq!(pieces(t).len(), 2);
        // `//` after `matches` is still a comment, as in the grammar.
        let t = "rule a { when x matches // {\n == 1 }\nrule b { }";
        assert_eq!(pieces(t).len(), 2);
    }

    #[test]
    fn nesting_is_measured_per_item() {
        let deep = format!(
            "rule d {{ when {}x == 1{} then software = \"D\" }}",
            "(".repeat(70),
            ")".repeat(70)
        );
        let t = format!("rule a {{ when (x == 1) then software = \"A\" }}\n{deep}\nrule b {{ }}");
        let c = split(&t, 64);
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].too_deep, None);
        let (s, _) = c[1].too_deep.expect("too deep");
        // The rule's `{` is level 1: the 64th `(` is level 65.
        assert_eq!(&t[s..s + 1], "(");
        assert_eq!(s - c[1].start, "rule d { when ".len() + 63);
        assert_eq!(c[2].too_deep, None);
        let nots = format!(
            "rule n {{ when {}x == 1 then software = \"N\" }}",
            "not ".repeat(100)
        );
        assert!(split(&nots, 64)[0].too_deep.is_some());
        // Siblings do not add up.
        let flat = format!(
            "rule f {{ when {} then software = \"F\" }}",
            vec!["not (x == 1)"; 200].join(" and ")
        );
        assert_eq!(split(&flat, 64)[0].too_deep, None);
    }

    #[test]
    fn characters_of_no_token_are_found() {
        let t = "rule a { when café == 1 and x == \"é\" then software = \"A\" }";
        let c = split(t, 64);
        assert_eq!(c[0].stray_char.map(|(s, e)| &t[s..e]), Some("é"));
        let t =
            "rule a { when x == 1 # é\n and y ~ 3 ± 1 and z matches /é/ then software = \"A\" }";
        assert_eq!(split(t, 64)[0].stray_char, None);
        assert_eq!(split("rule a { \0 }", 64)[0].stray_char, Some((9, 10)));
    }

    /// The limit leaves the stack room to spare: a rule nested to the limit (brackets and `not`s)
    /// parses and compiles on a 512 KiB stack, a quarter of a spawned thread's default, even in
    /// a debug build.
    #[test]
    fn the_limit_fits_a_small_stack() {
        let max = crate::limits::MAX_RULE_NESTING;
        let open = "(not ".repeat((max - 1) / 2);
        let close = ")".repeat((max - 1) / 2);
        let text = format!(
            "rule edge {{ when {open}peer.port == 80{close} then software = \"E\" confidence 0.5 }}"
        );
        assert_eq!(split(&text, max)[0].too_deep, None);
        let compiled = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                let mut c = crate::compiler::Compiler::new();
                c.add_source("t", "edge.rules", &text);
                let compiled = c.compile();
                (compiled.errors(), compiled.ruleset.len())
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(compiled, (0, 1));
    }

    #[test]
    fn odd_bytes_never_panic() {
        for t in [
            "\u{feff}rule a {",
            "\"unterminated",
            "/",
            "matches /",
            "\0\0",
            "é(",
            ")))",
            "rule",
            "list x",
            "\\",
        ] {
            let c = split(t, 4);
            for ch in &c {
                assert!(ch.start <= ch.end && ch.end <= t.len());
                assert!(t.is_char_boundary(ch.start) && t.is_char_boundary(ch.end));
            }
        }
    }
}
