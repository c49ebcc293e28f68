//! Pack archives (`.tar.gz`): written deterministically, extracted with every header checked
//! before anything it announces is read.
//!
//! Extraction reads the tar stream raw (the `tar` crate would otherwise read a whole GNU
//! long-name or PAX header into memory, whatever size it claims) and bounds every dimension
//! (`docs/limits.md`, "Pack archives"): the size of long-name and PAX headers, the length of
//! a path, the number of entries, the bytes extracted, and the bytes decompressed per
//! compressed byte. Only regular files and directories are extracted, under relative paths
//! without `..` and without hidden or editor-backup names ([`crate::sources::loadable_name`]): a pack's
//! files are exactly those its `MANIFEST.sha256` lists, and hidden files are never listed.

use super::integrity::{DIGESTS, IntegrityError, SIGNATURE, io, pack_files, safe_relative};
use std::cell::Cell;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

/// Most entries (tar headers, long-name and PAX headers included) in a pack archive.
pub const MAX_ARCHIVE_ENTRIES: usize = 10_000;
/// Largest total size of the files extracted from a pack archive (256 MiB).
pub const MAX_ARCHIVE_BYTES: u64 = 256 << 20;
/// Largest GNU long-name or PAX extended header (64 KiB): refused before it is read.
pub const MAX_ARCHIVE_HEADER: u64 = 64 << 10;
/// Longest path of an archive entry, in bytes.
pub const MAX_ARCHIVE_PATH: usize = 4096;
/// Most bytes the tar stream may decompress to per byte of the compressed archive, once past
/// its first MiB (gzip's own maximum is about 1,030).
pub const MAX_ARCHIVE_RATIO: u64 = 200;

/// At most this many characters of an entry's name are echoed in a message.
const SHOWN_NAME: usize = 160;

/// Writes the pack directory as a `.tar.gz` whose entries sit under `<top>/`, deterministic
/// (sorted, zero times and owners). Includes the integrity files.
pub fn write_archive(dir: &Path, top: &str, out: &Path) -> Result<(), IntegrityError> {
    let file = std::fs::File::create(out).map_err(io(out))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut files = pack_files(dir)?;
    for extra in [DIGESTS, SIGNATURE] {
        if dir.join(extra).is_file() {
            files.push(extra.to_string());
        }
    }
    files.sort();
    for rel in files {
        let path = dir.join(&rel);
        let data = std::fs::read(&path).map_err(io(&path))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, format!("{top}/{rel}"), data.as_slice())
            .map_err(io(out))?;
    }
    let gz = tar.into_inner().map_err(io(out))?;
    gz.finish().map_err(io(out))?;
    Ok(())
}

/// A name as it may be echoed: at most [`SHOWN_NAME`] characters, control characters escaped.
fn shown(name: &[u8]) -> String {
    let text = String::from_utf8_lossy(name);
    let mut out: String = text
        .chars()
        .take(SHOWN_NAME)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if text.chars().count() > SHOWN_NAME {
        out.push_str(&format!("… ({} bytes)", name.len()));
    }
    out
}

/// The decompressed stream, cut off (with an error) at `limit` bytes.
struct Bounded<R> {
    inner: R,
    read: u64,
    limit: u64,
    tripped: Rc<Cell<bool>>,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            self.tripped.set(true);
            return Err(std::io::Error::other("decompression bound reached"));
        }
        Ok(n)
    }
}

/// A header that announces the name (or the attributes) of the entry after it.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_size: Option<u64>,
}

/// Extracts a pack archive into `into` (which must exist and be empty), checking every entry.
/// Returns the pack's directory (the single top-level directory of the archive).
pub fn extract_archive(archive: &Path, into: &Path) -> Result<PathBuf, IntegrityError> {
    let file = std::fs::File::open(archive).map_err(io(archive))?;
    let compressed = file
        .metadata()
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    // The tar stream: the files, a header per entry and padding.
    let stream_max = MAX_ARCHIVE_BYTES + (MAX_ARCHIVE_ENTRIES as u64 + 2) * 1024;
    let limit = compressed.map_or(stream_max, |c| {
        stream_max.min(c.saturating_mul(MAX_ARCHIVE_RATIO).saturating_add(1 << 20))
    });
    let tripped = Rc::new(Cell::new(false));
    let reader = Bounded {
        inner: flate2::read::GzDecoder::new(std::io::BufReader::new(file)),
        read: 0,
        limit,
        tripped: tripped.clone(),
    };
    let whole = |message: String| IntegrityError::Archive {
        entry: archive.display().to_string(),
        message,
    };
    let stream_error = |e: std::io::Error| {
        if tripped.get() {
            whole(match compressed {
                Some(c) if limit < stream_max => format!(
                    "decompresses to more than {limit} bytes ({MAX_ARCHIVE_RATIO} times its {c} bytes plus 1 MiB): refused as a decompression bomb"
                ),
                _ => format!("decompresses to more than {limit} bytes"),
            })
        } else {
            IntegrityError::Io {
                path: archive.display().to_string(),
                source: e,
            }
        }
    };
    let mut tar = tar::Archive::new(reader);
    let entries = tar.entries().map_err(stream_error)?.raw(true);
    let mut total = 0u64;
    let mut tops = std::collections::BTreeSet::new();
    let mut pending = Pending::default();
    for (n, entry) in entries.enumerate() {
        if n >= MAX_ARCHIVE_ENTRIES {
            return Err(whole(format!("more than {MAX_ARCHIVE_ENTRIES} entries")));
        }
        let mut entry = entry.map_err(stream_error)?;
        let kind = entry.header().entry_type();
        let size = entry.size();
        let header_name = entry.path_bytes().into_owned();
        let fail = |name: &[u8], message: String| IntegrityError::Archive {
            entry: shown(name),
            message,
        };
        if kind.is_gnu_longname()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions()
        {
            let what = if kind.is_gnu_longname() {
                "GNU long-name"
            } else {
                "PAX"
            };
            if size > MAX_ARCHIVE_HEADER {
                return Err(fail(
                    &header_name,
                    format!(
                        "a {what} header of {size} bytes, more than the limit of {MAX_ARCHIVE_HEADER} (see docs/limits.md)"
                    ),
                ));
            }
            let mut data = Vec::with_capacity(size as usize);
            (&mut entry)
                .take(size)
                .read_to_end(&mut data)
                .map_err(stream_error)?;
            if kind.is_gnu_longname() {
                if pending.long_name.is_some() {
                    return Err(fail(&header_name, "two long names for one entry".into()));
                }
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                data.truncate(end);
                pending.long_name = Some(data);
            } else if kind.is_pax_local_extensions() {
                for ext in tar::PaxExtensions::new(&data) {
                    let ext =
                        ext.map_err(|_| fail(&header_name, "a malformed PAX header".into()))?;
                    match ext.key_bytes() {
                        b"path" => pending.pax_path = Some(ext.value_bytes().to_vec()),
                        b"size" => {
                            let v =
                                ext.value()
                                    .ok()
                                    .and_then(|v| v.parse().ok())
                                    .ok_or_else(|| {
                                        fail(
                                            &header_name,
                                            "a PAX `size` that is not a number".into(),
                                        )
                                    })?;
                            pending.pax_size = Some(v);
                        }
                        _ => {}
                    }
                }
            }
            // Global PAX headers (`git archive` writes one with the commit) carry nothing a
            // pack needs.
            continue;
        }
        let taken = std::mem::take(&mut pending);
        let name_bytes = taken.pax_path.or(taken.long_name).unwrap_or(header_name);
        if name_bytes.len() > MAX_ARCHIVE_PATH {
            return Err(fail(
                &name_bytes,
                format!(
                    "a path of {} bytes, more than the limit of {MAX_ARCHIVE_PATH}",
                    name_bytes.len()
                ),
            ));
        }
        // The size the `tar` crate would use is the PAX one: refuse archives read two ways.
        if taken.pax_size.is_some_and(|s| s != size) {
            return Err(fail(
                &name_bytes,
                "its PAX size differs from its header's size".into(),
            ));
        }
        let Ok(name) = std::str::from_utf8(&name_bytes) else {
            return Err(fail(&name_bytes, "the path is not UTF-8".into()));
        };
        if !safe_relative(name) {
            return Err(fail(
                &name_bytes,
                "the path escapes the target directory (absolute, or with `..`)".into(),
            ));
        }
        let rel = Path::new(name);
        let parts: Vec<&str> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(p) => p.to_str(),
                _ => None,
            })
            .collect();
        if let Some(bad) = parts.iter().find(|p| !crate::sources::loadable_name(p)) {
            return Err(fail(
                &name_bytes,
                format!(
                    "`{}` is a hidden or editor-backup name: such files are never part of a pack (none can be listed in {DIGESTS}), so an archive holding one is refused",
                    shown(bad.as_bytes())
                ),
            ));
        }
        if let Some(top) = parts.first() {
            tops.insert(top.to_string());
        }
        let target = into.join(rel);
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(io(&target))?;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            total = total.saturating_add(size);
            if total > MAX_ARCHIVE_BYTES {
                return Err(fail(
                    &name_bytes,
                    format!(
                        "the archive's files add up to more than {MAX_ARCHIVE_BYTES} bytes (see docs/limits.md)"
                    ),
                ));
            }
            if parts.len() < 2 {
                return Err(fail(
                    &name_bytes,
                    "a file outside the pack's top-level directory".into(),
                ));
            }
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            let mut out = std::fs::File::create(&target).map_err(io(&target))?;
            let copied = std::io::copy(&mut (&mut entry).take(size), &mut out).map_err(|e| {
                if tripped.get() {
                    stream_error(e)
                } else {
                    io(&target)(e)
                }
            })?;
            if copied != size {
                return Err(fail(
                    &name_bytes,
                    "the archive ends inside this file".into(),
                ));
            }
        } else {
            return Err(fail(
                &name_bytes,
                "not a regular file or directory (links and devices are refused)".into(),
            ));
        }
    }
    if pending.long_name.is_some() || pending.pax_path.is_some() {
        return Err(whole(
            "the archive ends with a long-name or PAX header that describes no entry".into(),
        ));
    }
    if tops.len() != 1 {
        return Err(whole(format!(
            "a pack archive holds exactly one top-level directory, this one {}",
            tops.len()
        )));
    }
    Ok(into.join(tops.into_iter().next().expect("one")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    /// A small pack as a tar stream (GNU headers, one long name), and its header offsets.
    fn pack_tar() -> (Vec<u8>, Vec<usize>) {
        let mut t = tar::Builder::new(Vec::new());
        let long = format!("p-1/rules/{}.rules", "n".repeat(120));
        for (p, data) in [
            (
                "p-1/pack.yaml",
                &b"name: p\nversion: 1.0.0\nlicense: MIT\n"[..],
            ),
            ("p-1/rules/a.rules", b"# a\n"),
            (long.as_str(), b"# long\n"),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            t.append_data(&mut h, p, data).unwrap();
        }
        let bytes = t.into_inner().unwrap();
        let mut a = tar::Archive::new(bytes.as_slice());
        let headers = a
            .entries()
            .unwrap()
            .raw(true)
            .map(|e| e.unwrap().raw_header_position() as usize)
            .collect();
        (bytes, headers)
    }

    fn extract(tar: &[u8], tag: &str) -> (Result<PathBuf, IntegrityError>, PathBuf) {
        let base = std::env::temp_dir().join(format!(
            "fp-archive-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("x")).unwrap();
        let f = std::fs::File::create(base.join("a.tar.gz")).unwrap();
        let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        gz.write_all(tar).unwrap();
        gz.finish().unwrap();
        (
            extract_archive(&base.join("a.tar.gz"), &base.join("x")),
            base,
        )
    }

    fn no_hidden_or_links(dir: &Path) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let ft = e.file_type().unwrap();
            assert!(crate::sources::loadable_name(
                &e.file_name().to_string_lossy()
            ));
            assert!(ft.is_dir() || ft.is_file(), "{}", e.path().display());
            if ft.is_dir() {
                no_hidden_or_links(&e.path());
            }
        }
    }

    #[test]
    fn the_pack_extracts_with_its_long_name() {
        let (tar, headers) = pack_tar();
        assert_eq!(headers.len(), 4, "a GNU long-name header and three files");
        let (r, base) = extract(&tar, "ok");
        let top = r.unwrap();
        assert!(
            top.join(format!("rules/{}.rules", "n".repeat(120)))
                .is_file()
        );
        std::fs::remove_dir_all(base).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
        /// Mutated headers (checksums fixed, so the mutation reaches the parser): never a
        /// panic, and an extraction holds only regular files and directories with loadable
        /// names, inside its target.
        #[test]
        fn mutated_archives_are_refused_or_extracted_safely(
            edits in proptest::collection::vec((0usize..4, 0usize..512, any::<u8>()), 1..8),
            cut in proptest::option::of(0usize..6000),
        ) {
            let (mut tar, headers) = pack_tar();
            for (h, at, byte) in &edits {
                let start = headers[*h];
                tar[start + at] = *byte;
            }
            for &start in &headers {
                let block = &mut tar[start..start + 512];
                block[148..156].copy_from_slice(b"        ");
                let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
                let field = format!("{sum:06o}\0 ");
                block[148..156].copy_from_slice(field.as_bytes());
            }
            if let Some(c) = cut {
                tar.truncate(c.min(tar.len()));
            }
            let (r, base) = extract(&tar, "prop");
            if let Ok(top) = r {
                prop_assert!(top.starts_with(base.join("x")));
                no_hidden_or_links(&base.join("x"));
                let beside = std::fs::read_dir(&base).unwrap().count();
                prop_assert_eq!(beside, 2);
            }
            std::fs::remove_dir_all(base).unwrap();
        }
    }
}
