//! A safe LZO1X decompressor (the format nfdump writes with `-z`/`-z=lzo`, through minilzo's
//! `lzo1x_1_compress`).
//!
//! Written from the published description of the LZO1X instruction stream (as documented in
//! the MIT-licensed lzokay sources). Every read is bounds-checked, output never grows past the
//! slice it is given, and any malformed stream is an [`Error`], never a panic. No maintained,
//! permissively licensed pure-Rust decoder exists on crates.io (`lzo1x` is GPL-2.0,
//! `minilzo-rs` is GPL-3.0 C bindings, `lzokay-native` 0.1 can underflow and index out of
//! bounds on corrupt input), hence this one.
//!
//! Instruction summary (`state` is the number of literals the previous instruction copied,
//! 4 meaning "4 or more"):
//!
//! | first byte        | meaning                                                            |
//! |-------------------|--------------------------------------------------------------------|
//! | `1LLDDDSS`, `01LDDDSS` + `H` | match of 5–8 / 3–4 bytes, distance `(H << 3) + D + 1`   |
//! | `001LLLLL` + `DS16`          | match of `L + 2` bytes (L = 0: run length + 33), distance `D + 1` |
//! | `0001HLLL` + `DS16`          | match of `L + 2` bytes (L = 0: run + 9), distance `16384 + (H << 14) + D`; distance 16384 ends the stream |
//! | `0000LLLL`, state 0          | `L + 3` literals (L = 0: run + 18)                       |
//! | `0000DDSS` + `H`, state 1–3  | 2-byte match, distance `(H << 2) + D + 1`                |
//! | `0000DDSS` + `H`, state 4    | 3-byte match, distance `(H << 2) + D + 2049`             |
//!
//! After a match, `S` (0–3) literals follow. A "run" is a count of zero bytes `z` followed by a
//! non-zero byte `b`, worth `255 * z + b`.

use std::fmt;

/// Why an LZO1X stream could not be decompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The stream ended before its end marker.
    InputOverrun,
    /// The decompressed data would not fit in the output buffer.
    OutputOverrun,
    /// A match refers to data before the start of the output.
    LookbehindOverrun,
    /// Bytes follow the end marker.
    InputNotConsumed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::InputOverrun => "LZO stream ends before its end marker",
            Error::OutputOverrun => "LZO data decompresses to more than the block size limit",
            Error::LookbehindOverrun => "LZO match refers to data before the start of the block",
            Error::InputNotConsumed => "bytes follow the end of the LZO stream",
        })
    }
}

impl std::error::Error for Error {}

/// A cursor over the compressed bytes.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> Result<usize, Error> {
        let b = *self.data.get(self.pos).ok_or(Error::InputOverrun)?;
        self.pos += 1;
        Ok(usize::from(b))
    }

    fn le16(&mut self) -> Result<usize, Error> {
        Ok(self.byte()? | self.byte()? << 8)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(n).ok_or(Error::InputOverrun)?;
        let s = self.data.get(self.pos..end).ok_or(Error::InputOverrun)?;
        self.pos = end;
        Ok(s)
    }

    /// `base + 255 * zero_bytes + next_non_zero_byte`.
    fn run_length(&mut self, base: usize) -> Result<usize, Error> {
        let mut zeros = 0usize;
        loop {
            let b = self.byte()?;
            if b != 0 {
                return Ok(base + zeros * 255 + b);
            }
            zeros += 1;
        }
    }
}

/// The decompressed bytes written so far.
struct Output<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Output<'_> {
    fn literals(&mut self, src: &[u8]) -> Result<(), Error> {
        let end = self.len + src.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(Error::OutputOverrun)?
            .copy_from_slice(src);
        self.len = end;
        Ok(())
    }

    fn copy_match(&mut self, dist: usize, len: usize) -> Result<(), Error> {
        if dist > self.len {
            return Err(Error::LookbehindOverrun);
        }
        let end = self.len + len;
        if end > self.buf.len() {
            return Err(Error::OutputOverrun);
        }
        let from = self.len - dist;
        if dist >= len {
            self.buf.copy_within(from..from + len, self.len);
        } else {
            // Overlapping: the match repeats the last `dist` bytes.
            for i in 0..len {
                self.buf[self.len + i] = self.buf[from + i];
            }
        }
        self.len = end;
        Ok(())
    }
}

/// Decompresses one LZO1X stream into `out`, returning the number of bytes written.
pub fn decompress(input: &[u8], out: &mut [u8]) -> Result<usize, Error> {
    let mut inp = Input {
        data: input,
        pos: 0,
    };
    let mut out = Output { buf: out, len: 0 };
    let mut state = 0usize;
    match input.first().copied().map(usize::from) {
        None => return Err(Error::InputOverrun),
        Some(first) if first >= 18 => {
            inp.pos = 1;
            let n = first - 17;
            out.literals(inp.take(n)?)?;
            state = if first >= 22 { 4 } else { n };
        }
        Some(_) => {}
    }
    loop {
        let inst = inp.byte()?;
        let (dist, len, next);
        if inst >= 64 {
            let h = inp.byte()?;
            dist = (h << 3) + ((inst >> 2) & 7) + 1;
            len = (inst >> 5) + 1;
            next = inst & 3;
        } else if inst >= 32 {
            len = match inst & 31 {
                0 => inp.run_length(33)?,
                l => l + 2,
            };
            let d = inp.le16()?;
            dist = (d >> 2) + 1;
            next = d & 3;
        } else if inst >= 16 {
            len = match inst & 7 {
                0 => inp.run_length(9)?,
                l => l + 2,
            };
            let d = inp.le16()?;
            let far = ((inst & 8) << 11) + (d >> 2);
            if far == 0 {
                break;
            }
            dist = far + 16384;
            next = d & 3;
        } else if state == 0 {
            let n = match inst {
                0 => inp.run_length(18)?,
                l => l + 3,
            };
            out.literals(inp.take(n)?)?;
            state = 4;
            continue;
        } else {
            let h = inp.byte()?;
            let base = if state < 4 { 1 } else { 2049 };
            dist = (inst >> 2) + (h << 2) + base;
            len = if state < 4 { 2 } else { 3 };
            next = inst & 3;
        }
        out.copy_match(dist, len)?;
        out.literals(inp.take(next)?)?;
        state = next;
    }
    if inp.pos != input.len() {
        return Err(Error::InputNotConsumed);
    }
    Ok(out.len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The end marker: an M4 instruction with distance 16384.
    const EOS: [u8; 3] = [0x11, 0, 0];

    fn run(input: &[u8], cap: usize) -> Result<Vec<u8>, Error> {
        let mut out = vec![0; cap];
        let n = decompress(input, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    #[test]
    fn literal_only_stream() {
        let mut s = vec![17 + 5];
        s.extend_from_slice(b"hello");
        s.extend_from_slice(&EOS);
        assert_eq!(run(&s, 64).unwrap(), b"hello");
    }

    #[test]
    fn long_literal_run_and_overlapping_match() {
        // 0 then run: 18 + 2 = 20 literals, then M2 copying 8 bytes from distance 1.
        let mut s = vec![0, 2];
        s.extend_from_slice(&[b'a'; 20]);
        // 1LLDDDSS with L=3 (len 8), D=0, S=0; H=0 → distance 1.
        s.extend_from_slice(&[0b1110_0000, 0]);
        s.extend_from_slice(&EOS);
        assert_eq!(run(&s, 64).unwrap(), vec![b'a'; 28]);
    }

    #[test]
    fn malformed_streams_are_errors() {
        assert_eq!(run(&[], 8), Err(Error::InputOverrun));
        assert_eq!(run(&[17 + 5, b'a'], 8), Err(Error::InputOverrun));
        // Match before any output (an M4 match of distance 16385 as the first instruction).
        assert_eq!(run(&[0x11, 4, 0], 8), Err(Error::LookbehindOverrun));
        // A match behind the start after some literals.
        assert_eq!(
            run(&[17 + 2, b'a', b'b', 0b0100_0100, 1], 8),
            Err(Error::LookbehindOverrun)
        );
        // Output larger than the buffer.
        let mut s = vec![17 + 5];
        s.extend_from_slice(b"hello");
        s.extend_from_slice(&EOS);
        assert_eq!(run(&s, 4), Err(Error::OutputOverrun));
        s.push(0);
        assert_eq!(run(&s, 64), Err(Error::InputNotConsumed));
        // A zero run that never ends.
        assert_eq!(run(&[0, 0, 0, 0], 64), Err(Error::InputOverrun));
    }

    #[test]
    fn random_input_never_panics() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut out = vec![0; 4096];
        for len in 0..2000 {
            let input: Vec<u8> = (0..len % 300)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decompress(&input, &mut out);
        }
    }
}
