//! Block decompression for the four codecs nfdump 1.7 writes, each bounded by [`MAX_BLOCK`].
//!
//! nfdump compresses every data block separately: LZ4 as a raw LZ4 *block* (`LZ4_compress_default`
//! / `LZ4_compress_HC`, no frame header), LZO1X with minilzo, BZ2 as one bzip2 stream, ZSTD as one
//! zstd frame (`ZSTD_compress`). All four decoders here are pure Rust and write into one buffer of
//! [`MAX_BLOCK`] bytes allocated on first use, so no length field can make them allocate more.

use std::fmt;

use super::{MAX_BLOCK, lzo};

/// Why a block could not be decompressed, or a file header's compression is unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A compression byte other than 0..=4 in the file header.
    #[error("unknown block compression {0} in the file header")]
    UnknownCompression(u8),
    /// The block decompresses to more than [`MAX_BLOCK`] bytes.
    #[error("decompresses to more than {} MiB", MAX_BLOCK >> 20)]
    TooLarge,
    /// A malformed LZ4 block (the decoder's message).
    #[error("{0}")]
    Lz4(String),
    /// A malformed LZO1X stream.
    #[error(transparent)]
    Lzo(#[from] lzo::Error),
    /// A malformed ZSTD frame (the decoder's message).
    #[error("{0}")]
    Zstd(String),
    /// The bzip2 decoder reported positions outside its buffers.
    #[error("bzip2 decoder overran its buffers")]
    Bz2Overrun,
    /// The bzip2 stream ends before its end-of-stream marker.
    #[error("bzip2 stream ends before its end marker")]
    Bz2Unterminated,
    /// A malformed bzip2 stream (the error in the message, not as a source: the chain prints
    /// once).
    #[error("bzip2: {0}")]
    Bz2(bzip2::Error),
}

/// The compression of an nfdump file's blocks (`compression` byte of the file header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// LZO1X (header value 1).
    Lzo,
    /// bzip2 (header value 2).
    Bz2,
    /// LZ4 raw block (header value 3).
    Lz4,
    /// Zstandard frame (header value 4).
    Zstd,
}

impl Compression {
    /// The codec for a file header's compression byte; `Ok(None)` is "not compressed".
    pub fn from_header(byte: u8) -> Result<Option<Compression>, CodecError> {
        Ok(Some(match byte {
            0 => return Ok(None),
            1 => Compression::Lzo,
            2 => Compression::Bz2,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            n => return Err(CodecError::UnknownCompression(n)),
        }))
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Lzo => "LZO",
            Compression::Bz2 => "BZ2",
            Compression::Lz4 => "LZ4",
            Compression::Zstd => "ZSTD",
        })
    }
}

/// Reusable decompression state of one file read.
#[derive(Default)]
pub struct Decompressor {
    /// Output buffer, `MAX_BLOCK` bytes once allocated (zeroed lazily by the allocator).
    out: Vec<u8>,
    zstd: Option<ruzstd::decoding::FrameDecoder>,
}

impl Decompressor {
    /// Decompresses one block payload; the error says what is wrong with it.
    pub fn run(&mut self, codec: Compression, input: &[u8]) -> Result<&[u8], CodecError> {
        if self.out.len() < MAX_BLOCK {
            self.out = vec![0; MAX_BLOCK];
        }
        let out = self.out.as_mut_slice();
        let n = match codec {
            Compression::Lz4 => {
                lz4_flex::block::decompress_into(input, out).map_err(|e| match e {
                    lz4_flex::block::DecompressError::OutputTooSmall { .. } => CodecError::TooLarge,
                    e => CodecError::Lz4(e.to_string()),
                })?
            }
            Compression::Lzo => lzo::decompress(input, out)?,
            Compression::Bz2 => bz2(input, out)?,
            Compression::Zstd => {
                let dec = self.zstd.get_or_insert_with(|| {
                    let mut d = ruzstd::decoding::FrameDecoder::new();
                    d.set_max_window_size(MAX_BLOCK as u64);
                    d
                });
                dec.decode_all(input, out).map_err(|e| match e {
                    ruzstd::decoding::errors::FrameDecoderError::TargetTooSmall => {
                        CodecError::TooLarge
                    }
                    e => CodecError::Zstd(e.to_string()),
                })?
            }
        };
        Ok(&self.out[..n])
    }
}

/// One bzip2 stream into `out`.
fn bz2(input: &[u8], out: &mut [u8]) -> Result<usize, CodecError> {
    let mut d = bzip2::Decompress::new(false);
    loop {
        let (read, written) = (d.total_in() as usize, d.total_out() as usize);
        let (Some(rest_in), Some(rest_out)) = (input.get(read..), out.get_mut(written..)) else {
            return Err(CodecError::Bz2Overrun);
        };
        match d.decompress(rest_in, rest_out) {
            Ok(bzip2::Status::StreamEnd) => return Ok(d.total_out() as usize),
            Ok(_) => {
                let (read2, written2) = (d.total_in() as usize, d.total_out() as usize);
                if written2 >= out.len() {
                    return Err(CodecError::TooLarge);
                }
                if read2 == read && written2 == written {
                    return Err(CodecError::Bz2Unterminated);
                }
            }
            Err(e) => return Err(CodecError::Bz2(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_errors_have_kinds() {
        assert_eq!(Compression::from_header(0), Ok(None));
        assert_eq!(Compression::from_header(3), Ok(Some(Compression::Lz4)));
        let e = Compression::from_header(9).unwrap_err();
        assert_eq!(e, CodecError::UnknownCompression(9));
        assert_eq!(
            e.to_string(),
            "unknown block compression 9 in the file header"
        );
        let mut d = Decompressor::default();
        let garbage = [0xffu8; 64];
        assert!(matches!(
            d.run(Compression::Lz4, &garbage),
            Err(CodecError::Lz4(_) | CodecError::TooLarge)
        ));
        assert!(matches!(
            d.run(Compression::Lzo, &garbage),
            Err(CodecError::Lzo(_))
        ));
        assert!(matches!(
            d.run(Compression::Bz2, &garbage),
            Err(CodecError::Bz2(_))
        ));
        assert!(matches!(
            d.run(Compression::Bz2, b"BZh9"),
            Err(CodecError::Bz2Unterminated)
        ));
        assert!(matches!(
            d.run(Compression::Zstd, &garbage),
            Err(CodecError::Zstd(_))
        ));
    }
}
