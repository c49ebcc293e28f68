//! A reader for nfdump's binary flow files (`nfcapd.*`), safe on untrusted input.
//!
//! Supported: file layout version 2 as written by nfdump 1.7 (nfcapd, sfcapd, nfpcapd,
//! `nfdump -w`), data blocks of type 3 holding V3 records, blocks uncompressed or compressed
//! with LZO, BZ2, LZ4 or ZSTD (per file, with the per-block "uncompressed" flag honoured), and
//! the appendix blocks (ident and statistics records, skipped). Flow records are turned into
//! [`Flow`]s from their extension elements (see `nfcapd/record.rs` for the layouts);
//! exporter and sampler records fill [`Flow::exporter`] and [`Flow::sampling`] when a record
//! does not carry its exporter address itself.
//!
//! Not supported, and said so: layout version 1 files (nfdump 1.6, whose records use extension
//! maps; `nfdump -r OLD -w NEW` with nfdump 1.7 rewrites them), big-endian files, encrypted
//! files, and nfdump 1.8's layout version 3.
//!
//! File layout (all integers little-endian):
//!
//! ```text
//! file header (40 bytes): magic u16 = 0xA50C, version u16 = 2, nfdversion u32, created i64,
//!     compression u8 (0 none, 1 LZO, 2 BZ2, 3 LZ4, 4 ZSTD), encryption u8, appendixBlocks u16,
//!     creator u32, offAppendix u64, BlockSize u32, NumBlocks u32
//! data blocks, then appendix blocks, each: NumRecords u32, size u32 (payload bytes, as
//!     stored), type u16 (3 = records), flags u16 (bit 0: payload not compressed), payload
//! ```
//!
//! The reader streams: it needs only [`Read`], holds one block at a time, and never allocates
//! more than [`MAX_BLOCK`] bytes for a block however large a length field claims it is. A block
//! that cannot be decompressed, or a record that overruns its block, is reported to `on_error`
//! with the block's number and the read goes on with the next block; only a block header that
//! leaves the file's framing unknown (a size over the limit, a truncated file) ends the read.

mod codec;
mod lzo;
mod record;

use std::io::{self, Read};

use super::{ReadError, ReadStats};
use crate::flow::Flow;
use codec::Decompressor;
pub use codec::{CodecError, Compression};
pub use lzo::Error as LzoError;
pub use record::RecordError;
use record::{Decoder, Outcome};

/// The largest block payload accepted, compressed or decompressed: 16 MiB (nfdump writes
/// blocks of at most 5 MiB).
pub const MAX_BLOCK: usize = 16 << 20;

/// The file magic 0xA50C as stored by a little-endian writer.
const MAGIC_LE: [u8; 2] = [0x0C, 0xA5];
/// The same magic written by a big-endian machine.
const MAGIC_BE: [u8; 2] = [0xA5, 0x0C];
/// nfdump 1.6 file layout.
const LAYOUT_V1: u16 = 1;
/// nfdump 1.7 file layout.
const LAYOUT_V2: u16 = 2;
/// nfdump 1.8 file layout (V4 records, block directory).
const LAYOUT_V3: u16 = 3;
/// Size of the layout-2 file header.
const FILE_HEADER: usize = 40;
/// Size of a data block header.
const BLOCK_HEADER: usize = 12;
/// Block of individual records (V3 records, exporter/sampler records, appendix records).
const BLOCK_TYPE_3: u16 = 3;
/// Array block (nfdump's internal lookup tables); holds no flows.
const BLOCK_TYPE_4: u16 = 4;
/// nfdump 1.6 block type.
const BLOCK_TYPE_2: u16 = 2;
/// Block flag: this block's payload is stored uncompressed whatever the file's compression.
const FLAG_BLOCK_UNCOMPRESSED: u16 = 1;

/// Whether `head` (the first bytes of a file, at least 4) starts like an nfdump binary file:
/// the magic 0xA50C and a layout version 1, 2 or 3 (versions 1 and 3 are recognised so that
/// [`read_nfcapd`] can say they are not supported).
pub fn is_nfcapd(head: &[u8]) -> bool {
    head.len() >= 4
        && head[..2] == MAGIC_LE
        && matches!(
            u16::from_le_bytes([head[2], head[3]]),
            LAYOUT_V1 | LAYOUT_V2 | LAYOUT_V3
        )
}

/// The file header fields the reader needs.
struct Header {
    compression: Option<Compression>,
    /// Data blocks announced (0 while nfcapd is still writing the file).
    num_blocks: u32,
    /// Appendix blocks announced after the data blocks.
    appendix_blocks: u16,
}

/// Why a block of an nfcapd file (or the file after its last block) was skipped in part or in
/// whole. [`read_nfcapd`] reports it with the block's 1-based number; record numbers are 1-based
/// and offsets are byte offsets in the block's (decompressed) payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The file ends inside a block header; the read ends.
    #[error("file truncated inside a block header ({got} of {BLOCK_HEADER} bytes)")]
    HeaderTruncated {
        /// Bytes of the header present.
        got: usize,
    },
    /// A block size over [`MAX_BLOCK`]: the framing is lost, the read ends.
    #[error(
        "block of {size} bytes exceeds the {} MiB limit: corrupt file, rest not read",
        MAX_BLOCK >> 20
    )]
    TooLarge {
        /// The size the header claims.
        size: usize,
    },
    /// The file ends inside a block; the read ends.
    #[error("file truncated: block ends after {got} of {size} bytes")]
    Truncated {
        /// Bytes present.
        got: usize,
        /// Bytes the header claims.
        size: usize,
    },
    /// An nfdump 1.6 data block.
    #[error("nfdump 1.6 data block (type 2) is not supported")]
    Legacy,
    /// A block type other than 2, 3 and 4.
    #[error("unknown block type {0}, skipped")]
    UnknownType(u16),
    /// A block that cannot be decompressed.
    #[error("{codec} block: {error}; block skipped")]
    Decompress {
        /// The file's compression.
        codec: Compression,
        /// What is wrong (in the message, not as a source: the chain
        /// prints once).
        error: CodecError,
    },
    /// A block that announces no records but has a payload.
    #[error("block announces no records but holds {len} bytes")]
    NoRecords {
        /// Payload bytes.
        len: usize,
    },
    /// The payload ends before the records the block announces.
    #[error("block ends after {read} of its {announced} records ({len} bytes)")]
    RecordsMissing {
        /// Records read.
        read: u32,
        /// Records announced.
        announced: u32,
        /// Payload bytes.
        len: usize,
    },
    /// A record whose size is below 4 or runs past the payload; the rest of the block is
    /// skipped.
    #[error(
        "record {record} at byte {offset}: size {size} overruns the block ({len} bytes); rest \
         of the block skipped"
    )]
    RecordOverrun {
        /// The record.
        record: u32,
        /// Its offset.
        offset: usize,
        /// Its size field.
        size: usize,
        /// Payload bytes.
        len: usize,
    },
    /// A malformed or unsupported record (skipped; the next one is read).
    #[error("record {record}: {error}")]
    Record {
        /// The record.
        record: u32,
        /// Its offset in the payload.
        offset: usize,
        /// What is wrong with it (in the message, not as a source: the chain
        /// prints once).
        error: RecordError,
    },
    /// Fewer blocks than the file header announces (reported after the last block).
    #[error(
        "file truncated: the header announces {data} data and {appendix} appendix blocks, the \
         file holds {blocks} blocks"
    )]
    MissingBlocks {
        /// Data blocks announced.
        data: u32,
        /// Appendix blocks announced.
        appendix: u16,
        /// Blocks in the file.
        blocks: u64,
    },
}

impl BlockError {
    /// The byte offset in the block's payload the error is about, for record errors.
    pub fn offset(&self) -> Option<usize> {
        match self {
            BlockError::RecordOverrun { offset, .. } => Some(*offset),
            BlockError::Record { offset, error, .. } => Some(offset + error.offset()),
            _ => None,
        }
    }
}

/// Why an input is not a readable nfdump file: its file header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer than 4 bytes.
    #[error("not an nfdump file: only {0} bytes")]
    Short(usize),
    /// The magic of a big-endian writer.
    #[error("nfdump file written on a big-endian machine: not supported")]
    BigEndian,
    /// Not the nfdump magic 0xA50C (the value read, little-endian).
    #[error("not an nfdump file: magic {0:#06x}, expected 0xa50c")]
    Magic(u16),
    /// Layout version 1 (nfdump 1.6).
    #[error(
        "nfdump 1.6 file (layout version 1) is not supported; rewrite it with nfdump 1.7: \
         `nfdump -r OLD -w NEW`"
    )]
    Layout1,
    /// Layout version 3 (nfdump 1.8).
    #[error("nfdump 1.8 file (layout version 3) is not supported, only nfdump 1.7's layout 2")]
    Layout3,
    /// Another layout version.
    #[error("nfdump file layout version {0} is not supported (only version 2, nfdump 1.7)")]
    Layout(u16),
    /// The input ends inside the 40-byte header.
    #[error("file header truncated: {got} of {FILE_HEADER} bytes")]
    Truncated {
        /// Bytes present.
        got: usize,
    },
    /// An unknown compression byte (at offset 16).
    #[error(transparent)]
    Compression(#[from] CodecError),
    /// An encrypted file (the encryption byte, at offset 17).
    #[error("encrypted nfdump file (encryption {0}) is not supported")]
    Encrypted(u8),
}

/// The `InvalidData` error [`read_nfcapd`] returns for an unreadable file header, inside the
/// `io::Error` (`io::Error::get_ref` and `downcast_ref` give it back): the input's name and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input}: {error}")]
pub struct FileError {
    /// The input's name as given to [`read_nfcapd`].
    pub input: String,
    /// What is wrong with its header (in the message, not as a source: the chain prints
    /// once).
    pub error: HeaderError,
}

fn invalid(source: &str, error: HeaderError) -> io::Error {
    let input = source.to_owned();
    io::Error::new(io::ErrorKind::InvalidData, FileError { input, error })
}

/// How far [`read_block`] grows its buffer ahead of the data.
const GROW_STEP: usize = 256 << 10;

/// Reads a block of `size` bytes into `buf[..size]`; returns the bytes read (fewer when the
/// input ends). The buffer is kept from block to block and zeroed only where it grows, and it
/// grows [`GROW_STEP`] at a time ahead of the data: a block's claimed size never allocates
/// more than the input holds.
fn read_block<R: Read>(reader: &mut R, buf: &mut Vec<u8>, size: usize) -> io::Result<usize> {
    let mut got = 0;
    while got < size {
        if buf.len() <= got {
            buf.resize(got + (size - got).min(GROW_STEP), 0);
        }
        let end = buf.len().min(size);
        let n = read_full(reader, &mut buf[got..end])?;
        got += n;
        if got < end {
            break;
        }
    }
    Ok(got)
}

/// Reads into `buf` until it is full or the input ends; returns the bytes read.
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn read_header<R: Read>(reader: &mut R, source: &str) -> io::Result<Header> {
    let mut h = [0u8; FILE_HEADER];
    let n = read_full(reader, &mut h[..4])?;
    if n < 4 {
        return Err(invalid(source, HeaderError::Short(n)));
    }
    if h[..2] == MAGIC_BE {
        return Err(invalid(source, HeaderError::BigEndian));
    }
    if h[..2] != MAGIC_LE {
        let magic = u16::from_le_bytes([h[0], h[1]]);
        return Err(invalid(source, HeaderError::Magic(magic)));
    }
    match u16::from_le_bytes([h[2], h[3]]) {
        LAYOUT_V2 => {}
        LAYOUT_V1 => {
            return Err(invalid(source, HeaderError::Layout1));
        }
        LAYOUT_V3 => {
            return Err(invalid(source, HeaderError::Layout3));
        }
        v => {
            return Err(invalid(source, HeaderError::Layout(v)));
        }
    }
    let n = read_full(reader, &mut h[4..])?;
    if n < FILE_HEADER - 4 {
        return Err(invalid(source, HeaderError::Truncated { got: n + 4 }));
    }
    let compression =
        Compression::from_header(h[16]).map_err(|e| invalid(source, HeaderError::from(e)))?;
    if h[17] != 0 {
        return Err(invalid(source, HeaderError::Encrypted(h[17])));
    }
    Ok(Header {
        compression,
        num_blocks: u32::from_le_bytes([h[36], h[37], h[38], h[39]]),
        appendix_blocks: u16::from_le_bytes([h[18], h[19]]),
    })
}

/// Reads an nfdump 1.7 binary file from `reader` to its end, passing each flow record to
/// `on_flow` and each malformed block or record to `on_error` (as a [`ReadError`] whose `line`
/// is the 1-based block number).
///
/// `source` names the input in errors. Returns `InvalidData` when the input is not a readable
/// nfdump file (bad magic, unsupported layout version, encryption or compression); other
/// `Err`s come from the reader. In the returned [`ReadStats`], `lines` counts the records
/// seen (flows and exporter, sampler and appendix records), `skipped` the errors reported.
pub fn read_nfcapd<R: Read>(
    mut reader: R,
    source: &str,
    on_flow: &mut dyn FnMut(Flow),
    on_error: &mut dyn FnMut(ReadError),
) -> io::Result<ReadStats> {
    let header = read_header(&mut reader, source)?;
    let mut stats = ReadStats::default();
    let mut block_no = 0u64;
    let mut report = |stats: &mut ReadStats, block: u64, error: BlockError| {
        stats.skipped += 1;
        on_error(ReadError {
            source: source.to_owned(),
            line: block,
            reason: super::Reason::Block(error),
        });
    };
    let mut raw = Vec::new();
    let mut decompressor = Decompressor::default();
    let mut decoder = Decoder::default();
    loop {
        let mut bh = [0u8; BLOCK_HEADER];
        let n = read_full(&mut reader, &mut bh)?;
        if n == 0 {
            break;
        }
        block_no += 1;
        if n < BLOCK_HEADER {
            report(&mut stats, block_no, BlockError::HeaderTruncated { got: n });
            return Ok(stats);
        }
        let num_records = u32::from_le_bytes([bh[0], bh[1], bh[2], bh[3]]);
        let size = u32::from_le_bytes([bh[4], bh[5], bh[6], bh[7]]) as usize;
        let kind = u16::from_le_bytes([bh[8], bh[9]]);
        let flags = u16::from_le_bytes([bh[10], bh[11]]);
        if size > MAX_BLOCK {
            report(&mut stats, block_no, BlockError::TooLarge { size });
            return Ok(stats);
        }
        let got = read_block(&mut reader, &mut raw, size)?;
        if got < size {
            report(&mut stats, block_no, BlockError::Truncated { got, size });
            return Ok(stats);
        }
        match kind {
            BLOCK_TYPE_3 => {}
            BLOCK_TYPE_4 => continue,
            BLOCK_TYPE_2 => {
                report(&mut stats, block_no, BlockError::Legacy);
                continue;
            }
            k => {
                report(&mut stats, block_no, BlockError::UnknownType(k));
                continue;
            }
        }
        let codec = header
            .compression
            .filter(|_| flags & FLAG_BLOCK_UNCOMPRESSED == 0);
        let data = match codec {
            None => &raw[..size],
            Some(c) => match decompressor.run(c, &raw[..size]) {
                Ok(d) => d,
                Err(error) => {
                    let error = BlockError::Decompress { codec: c, error };
                    report(&mut stats, block_no, error);
                    continue;
                }
            },
        };
        if num_records == 0 && !data.is_empty() {
            let error = BlockError::NoRecords { len: data.len() };
            report(&mut stats, block_no, error);
            continue;
        }
        let mut pos = 0usize;
        for i in 0..num_records {
            let Some(rh) = data.get(pos..pos + 4) else {
                let error = BlockError::RecordsMissing {
                    read: i,
                    announced: num_records,
                    len: data.len(),
                };
                report(&mut stats, block_no, error);
                break;
            };
            let rsize = usize::from(u16::from_le_bytes([rh[2], rh[3]]));
            if rsize < 4 || pos + rsize > data.len() {
                let error = BlockError::RecordOverrun {
                    record: i + 1,
                    offset: pos,
                    size: rsize,
                    len: data.len(),
                };
                report(&mut stats, block_no, error);
                break;
            }
            stats.lines += 1;
            match decoder.record(&data[pos..pos + rsize]) {
                Outcome::Flow(flow) => {
                    stats.flows += 1;
                    on_flow(flow);
                }
                Outcome::Meta => {}
                Outcome::Malformed(error) => {
                    let error = BlockError::Record {
                        record: i + 1,
                        offset: pos,
                        error,
                    };
                    report(&mut stats, block_no, error);
                }
            }
            pos += rsize;
        }
    }
    // A closed file announces its blocks; nfcapd.current (still being written) announces none.
    let announced = u64::from(header.num_blocks) + u64::from(header.appendix_blocks);
    if header.num_blocks > 0 && block_no < announced {
        let error = BlockError::MissingBlocks {
            data: header.num_blocks,
            appendix: header.appendix_blocks,
            blocks: block_no,
        };
        report(&mut stats, block_no, error);
    }
    Ok(stats)
}
