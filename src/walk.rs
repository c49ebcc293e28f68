//! Walking directories of rule files and flow files, safely: every directory and every file is
//! read at most once, whatever symbolic links point where (`ln -s . dir/loop` neither hangs nor
//! counts a file twice), the depth is bounded, hidden entries (dot files, editors' lock files
//! such as Emacs' `.#x.rules`, Vim's `.x.rules.swp`) are never read, and an entry that cannot be
//! read (a dangling link, a directory without permission) is reported and skipped rather than
//! stopping the walk.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Deepest directory level read below the walked directory.
pub const MAX_DEPTH: usize = 32;
/// Most files one walk returns; a walk that finds more stops there and says so.
pub const MAX_FILES: usize = 1_000_000;

/// An entry the walk did not read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The entry.
    pub path: PathBuf,
    /// Why it was skipped (`dangling symbolic link`, `already read as ...`).
    pub reason: String,
}

/// The files found below a directory, in path order, and the entries skipped.
#[derive(Debug, Default)]
pub struct Walk {
    /// The files kept by the filter, each once.
    pub files: Vec<PathBuf>,
    /// What was skipped besides hidden entries and files the filter did not keep.
    pub skipped: Vec<Skipped>,
}

/// Whether a directory entry's name is hidden (and so never read): it starts with a dot.
pub fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

/// Walks `root` (a directory; an error when it cannot be read) and returns the files below it
/// whose path `keep` accepts, sorted by path, each file and each directory read once.
pub fn walk(root: &Path, keep: &dyn Fn(&Path) -> bool) -> io::Result<Walk> {
    let meta = std::fs::metadata(root)?;
    let mut w = Walker {
        dirs: HashSet::new(),
        files: HashSet::new(),
        out: Walk::default(),
        keep,
    };
    w.dirs.insert((meta.dev(), meta.ino()));
    let entries = sorted_entries(root)?;
    w.walk_entries(root, entries, 1);
    w.out.files.sort();
    Ok(w.out)
}

struct Walker<'k> {
    dirs: HashSet<(u64, u64)>,
    files: HashSet<(u64, u64)>,
    out: Walk,
    keep: &'k dyn Fn(&Path) -> bool,
}

fn sorted_entries(dir: &Path) -> io::Result<Vec<std::fs::DirEntry>> {
    let mut entries = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

impl Walker<'_> {
    fn skip(&mut self, path: PathBuf, reason: impl Into<String>) {
        self.out.skipped.push(Skipped {
            path,
            reason: reason.into(),
        });
    }

    fn walk_entries(&mut self, dir: &Path, entries: Vec<std::fs::DirEntry>, depth: usize) {
        for e in entries {
            if is_hidden(&e.file_name()) {
                continue;
            }
            if self.out.files.len() >= MAX_FILES {
                self.skip(
                    dir.to_path_buf(),
                    format!("more than {MAX_FILES} files: the rest is not read"),
                );
                return;
            }
            let path = e.path();
            // Follows links: what matters is what the entry leads to.
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(err) => {
                    let dangling =
                        std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
                    let reason = if dangling && err.kind() == io::ErrorKind::NotFound {
                        "dangling symbolic link".to_string()
                    } else if err.raw_os_error() == Some(40) {
                        "symbolic link loop (ELOOP)".to_string()
                    } else {
                        format!("cannot read: {err}")
                    };
                    self.skip(path, reason);
                    continue;
                }
            };
            let id = (meta.dev(), meta.ino());
            if meta.is_dir() {
                if depth >= MAX_DEPTH {
                    self.skip(path, format!("deeper than {MAX_DEPTH} directory levels"));
                    continue;
                }
                if !self.dirs.insert(id) {
                    self.skip(
                        path,
                        "a directory already read (a symbolic link loop or a second link)",
                    );
                    continue;
                }
                match sorted_entries(&path) {
                    Ok(sub) => self.walk_entries(&path, sub, depth + 1),
                    Err(err) => self.skip(path, format!("cannot read: {err}")),
                }
            } else if (self.keep)(&path) {
                if !self.files.insert(id) {
                    self.skip(path, "a file already read (through another link)");
                    continue;
                }
                self.out.files.push(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn loops_links_and_hidden_entries() {
        let root = std::env::temp_dir().join(format!("fp-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join("a.rules"), "").unwrap();
        std::fs::write(root.join("sub/b.rules"), "").unwrap();
        std::fs::write(root.join("sub/deeper/c.txt"), "").unwrap();
        std::fs::write(root.join(".hidden.rules"), "").unwrap();
        symlink(".", root.join("loop")).unwrap();
        symlink("..", root.join("sub/up")).unwrap();
        symlink("a.rules", root.join("again.rules")).unwrap();
        symlink("nowhere@host:123", root.join(".#a.rules")).unwrap();
        symlink("missing.rules", root.join("dangling.rules")).unwrap();
        let w = walk(&root, &|p| p.extension().is_some_and(|e| e == "rules")).unwrap();
        let names: Vec<_> = w
            .files
            .iter()
            .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
            .collect();
        // `a.rules` comes first in name order; the link to it is skipped.
        assert_eq!(names, ["a.rules", "sub/b.rules"]);
        let reasons: Vec<_> = w
            .skipped
            .iter()
            .map(|s| {
                format!(
                    "{}: {}",
                    s.path.strip_prefix(&root).unwrap().display(),
                    s.reason
                )
            })
            .collect();
        assert_eq!(
            reasons,
            [
                "again.rules: a file already read (through another link)",
                "dangling.rules: dangling symbolic link",
                "loop: a directory already read (a symbolic link loop or a second link)",
                "sub/up: a directory already read (a symbolic link loop or a second link)",
            ]
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn depth_is_bounded() {
        let root = std::env::temp_dir().join(format!("fp-walk-deep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut d = root.clone();
        for i in 0..MAX_DEPTH + 3 {
            d = d.join(format!("d{i}"));
        }
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("x.rules"), "").unwrap();
        let w = walk(&root, &|_| true).unwrap();
        assert!(w.files.is_empty());
        assert_eq!(w.skipped.len(), 1);
        assert!(w.skipped[0].reason.contains("deeper than"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
