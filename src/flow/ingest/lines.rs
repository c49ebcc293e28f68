//! Reading lines with a length cap, so one endless line cannot exhaust memory.

use std::io::{self, BufRead};

/// What [`read_line`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Line {
    /// A line is in the buffer (without its `\n`).
    Text,
    /// A line longer than the cap was skipped up to and including its `\n`; the buffer is empty.
    TooLong,
    /// End of input: no bytes were left.
    Eof,
}

/// Reads the next line into `buf` (cleared first), without its `\n`.
///
/// A line of more than `max` bytes is not buffered: the rest of it is read and discarded, and
/// [`Line::TooLong`] is returned. The last line of the input need not end with `\n`.
pub(crate) fn read_line<R: BufRead + ?Sized>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => Line::Eof,
                (true, true) => Line::TooLong,
                (true, false) => Line::Text,
            });
        }
        any = true;
        let newline = avail.iter().position(|&b| b == b'\n');
        let chunk = &avail[..newline.unwrap_or(avail.len())];
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = newline.map_or(avail.len(), |i| i + 1);
        r.consume(used);
        if newline.is_some() {
            return Ok(if too_long { Line::TooLong } else { Line::Text });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn all(input: &[u8], max: usize, cap: usize) -> Vec<(Line, Vec<u8>)> {
        let mut r = BufReader::with_capacity(cap, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            let l = read_line(&mut r, &mut buf, max).unwrap();
            if l == Line::Eof {
                return out;
            }
            out.push((l, buf.clone()));
        }
    }

    #[test]
    fn splits_and_caps() {
        let t = |s: &str| (Line::Text, s.as_bytes().to_vec());
        let long = (Line::TooLong, Vec::new());
        for cap in [1, 2, 3, 7, 64] {
            assert_eq!(all(b"", 5, cap), vec![]);
            assert_eq!(all(b"a\nbb\n", 5, cap), vec![t("a"), t("bb")]);
            assert_eq!(all(b"a\n\nbb", 5, cap), vec![t("a"), t(""), t("bb")]);
            assert_eq!(
                all(b"12345\n123456\nx\n1234567890", 5, cap),
                vec![t("12345"), long.clone(), t("x"), long.clone()]
            );
        }
    }
}
