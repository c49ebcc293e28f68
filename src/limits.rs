//! The limits flowprint puts on what it reads, in one place, so that no file size, length field
//! or nesting depth can make it allocate without bound or recurse off its stack. Each limit is
//! documented in `docs/limits.md` with what happens when it is reached.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest rule file read (16 MiB); the bundled packs together are under 1 MiB.
pub const MAX_RULE_FILE: u64 = 16 << 20;
/// Largest side input read whole: overrides, labels, configuration, `pack.yaml`, fixtures
/// (64 MiB). Flow inputs are streamed and have no such limit.
pub const MAX_SIDE_FILE: u64 = 64 << 20;
/// Deepest nesting of parentheses, brackets and braces in a rule file.
pub const MAX_RULE_NESTING: usize = 64;
/// Longest source line quoted in a diagnostic; longer lines are shown cut, with a mark.
pub const MAX_SNIPPET_LINE: usize = 240;

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
}
