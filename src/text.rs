//! Text from untrusted input shown to people: every error or warning that quotes an input (a
//! CSV field, a JSON value, a DNS log line, a file name) passes it through [`printable`], so that
//! no input can send terminal escape sequences (colours, cursor moves, a rewritten title, a
//! hidden line) to the terminal that reads flowprint's messages.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal as it is: control characters (C0, DEL, C1) and the
/// Unicode marks that reorder the display of a line (bidirectional embeddings, overrides and
/// isolates).
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every control character and display-reordering mark written as a Rust escape
/// (`ESC` as `\u{1b}`, a tab as `\t`, a newline as `\n`), as [`char::escape_debug`] writes them;
/// everything else, backslashes included, as it is. Borrowed when nothing needs escaping.
///
/// ```
/// use flowprint::text::printable;
/// assert_eq!(printable("a\u{1b}[31mb"), "a\\u{1b}[31mb");
/// assert_eq!(printable("plain, ünïcode"), "plain, ünïcode");
/// ```
pub fn printable(s: &str) -> Cow<'_, str> {
    escape(s, unsafe_char)
}

/// [`printable`] for a message of several lines (an error with its causes, rendered
/// diagnostics): newlines are kept, every other control character is escaped.
pub fn printable_lines(s: &str) -> Cow<'_, str> {
    escape(s, |c| c != '\n' && unsafe_char(c))
}

fn escape(s: &str, escaped: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(&escaped) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if escaped(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn controls_and_reordering_marks_are_escaped() {
        assert_eq!(printable("x\ty\r\n\0"), "x\\ty\\r\\n\\0");
        assert_eq!(printable("\u{7f}\u{9b}31m"), "\\u{7f}\\u{9b}31m");
        assert_eq!(printable("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(printable("C:\\path é 日本"), "C:\\path é 日本");
        assert!(matches!(printable("ok"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(
            super::printable_lines("a\n\u{1b}]0;t\u{7}\n"),
            "a\n\\u{1b}]0;t\\u{7}\n"
        );
    }
}
