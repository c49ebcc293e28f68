//! Where rules come from: the one loader of rule sources.
//!
//! [`Sources::read`] reads a [`Selection`] — the bundled packs, rule files, pack directories,
//! directories of installed packs and a local overrides file — into text: every rule file, every
//! `pack.yaml` (read once and parsed once, [`ManifestSource`]), the overrides, and what could
//! not be read ([`Problem`]). It never fails: a path that cannot be read, a file that is not
//! UTF-8 or too large, an entry a directory walk skipped are problems beside the sources that
//! could be read, and [`crate::compiler::Compiler::add_sources`] reports them as diagnostics
//! (FP0019 errors, FP0025 warnings) with the others. `analyze`, `check`, the pack commands and
//! the daemon's rule store all load rules here, so they agree on what a path means and on what
//! an unreadable one does.
//!
//! Directory walks go through [`crate::walk`] (each file once, links followed once, hidden
//! files and editors' lock files never read); files are read within
//! [`crate::limits::MAX_RULE_FILE`] and [`crate::limits::MAX_YAML_FILE`].

pub mod manifest;
pub mod overrides;

use manifest::{Manifest, ManifestError};
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Which rules to load.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The packs embedded in the binary (`rules/` of the source tree).
    pub embedded: bool,
    /// Rule files and pack directories: a file is a pack of its own, named after the file; a
    /// directory is one pack, named by its `pack.yaml` or after the directory.
    pub paths: Vec<PathBuf>,
    /// Directories of installed packs (`flowprint pack install`): every entry that is a
    /// directory (or a link to one) is a pack. A missing directory holds none.
    pub packs_dirs: Vec<PathBuf>,
    /// A local overrides file (`docs/packs.md`).
    pub overrides: Option<PathBuf>,
}

/// One rule file's text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceFile {
    /// The pack it belongs to (the namespace of its rule ids).
    pub pack: String,
    /// Its name in diagnostics (the path it was read from, or `rules/<pack>/<file>`).
    pub name: String,
    /// Its text.
    pub text: String,
}

impl Hash for SourceFile {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.pack.hash(h);
        self.name.hash(h);
        self.text.hash(h);
    }
}

/// A `pack.yaml`: its text and what parsing it once gave.
#[derive(Debug, Clone)]
pub struct ManifestSource {
    /// Its name in diagnostics.
    pub file: String,
    /// Its text.
    pub text: String,
    /// The manifest, or why it is not one.
    pub parsed: Result<Manifest, ManifestError>,
}

impl ManifestSource {
    /// Parses `text`.
    pub fn new(file: String, text: String) -> ManifestSource {
        let parsed = Manifest::parse(&text, &file);
        ManifestSource { file, text, parsed }
    }
}

// Kept as `(file, text)` (the rule store's last good set); parsed again when read back.
impl Serialize for ManifestSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.file, &self.text).serialize(s)
    }
}

impl<'de> Deserialize<'de> for ManifestSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ManifestSource, D::Error> {
        let (file, text) = <(String, String)>::deserialize(d)?;
        Ok(ManifestSource::new(file, text))
    }
}

/// A loaded pack.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PackInfo {
    /// The pack's name (the namespace of its rule ids).
    pub name: String,
    /// Its version (`version:` of its `pack.yaml`), when it has one.
    pub version: Option<String>,
    /// `embedded`, or the path it was read from.
    pub origin: String,
    /// Rule files.
    pub files: usize,
    /// Rules compiled from it (0 until someone compiles it and counts).
    pub rules: usize,
}

/// Something of a selection that was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A path, file, manifest or overrides file that could not be read, is larger than its
    /// limit or is not UTF-8: an error (FP0019).
    Unreadable {
        /// What it is, as named in diagnostics.
        path: String,
        /// Why.
        reason: String,
    },
    /// An entry a directory walk skipped (a link loop, a dangling link, too many files): a
    /// warning (FP0025).
    Skipped {
        /// The entry.
        path: String,
        /// Why.
        reason: String,
    },
}

/// (path, length, modification time) of a file read, to notice changes during a read.
pub type Stamp = (PathBuf, u64, Option<SystemTime>);

/// The text of a selection, as read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sources {
    /// Rule files, in the order read.
    pub files: Vec<SourceFile>,
    /// The packs, in the order read.
    pub packs: Vec<PackInfo>,
    /// `pack.yaml` files.
    #[serde(default)]
    pub manifests: Vec<ManifestSource>,
    /// The overrides file: (file name, text).
    #[serde(default)]
    pub overrides: Option<(String, String)>,
    /// What was not read, each with the number of rule files read before it (diagnostics keep
    /// the order of the reading).
    #[serde(skip)]
    pub problems: Vec<(usize, Problem)>,
    /// Every file and directory entry read, to tell whether one changed meanwhile.
    #[serde(skip)]
    pub stamps: Vec<Stamp>,
}

impl Sources {
    /// Reads a selection. Never fails: what cannot be read is in [`Sources::problems`].
    pub fn read(sel: &Selection) -> Sources {
        let mut s = Sources::default();
        if sel.embedded {
            s.add_embedded();
        }
        let mut paths: Vec<PathBuf> = sel.paths.clone();
        for dir in &sel.packs_dirs {
            match installed_packs(dir) {
                Ok(installed) => paths.extend(installed),
                Err(e) => s.problem(Problem::Unreadable {
                    path: dir.display().to_string(),
                    reason: format!("cannot read: {e}"),
                }),
            }
        }
        for path in &paths {
            s.add_path(path);
        }
        if let Some(o) = &sel.overrides {
            s.stamps.push(stamp(o));
            match crate::limits::read_text_bounded(
                o,
                crate::limits::MAX_YAML_FILE,
                "an overrides file",
            ) {
                Ok(text) => s.overrides = Some((o.display().to_string(), text)),
                Err(e) => s.problem(Problem::Unreadable {
                    path: o.display().to_string(),
                    reason: format!("cannot read the overrides: {e}"),
                }),
            }
        }
        s
    }

    /// Reads a selection until two stamps of its files agree (at most 5 tries, 50 ms apart), so
    /// that a file being written while it is read (an editor's save in progress) is not taken
    /// for a complete one.
    pub fn read_stable(sel: &Selection) -> Sources {
        let mut tries = 0;
        loop {
            let sources = Sources::read(sel);
            let after: Vec<Stamp> = sources.stamps.iter().map(|(p, _, _)| stamp(p)).collect();
            tries += 1;
            if after == sources.stamps || tries >= 5 {
                return sources;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The bundled packs alone.
    pub fn embedded() -> Sources {
        let mut s = Sources::default();
        s.add_embedded();
        s
    }

    fn problem(&mut self, p: Problem) {
        self.problems.push((self.files.len(), p));
    }

    fn add_embedded(&mut self) {
        for (pack, text) in crate::embedded::PACK_MANIFESTS {
            self.manifests.push(ManifestSource::new(
                format!("rules/{pack}/{}", manifest::FILE),
                text.to_string(),
            ));
        }
        let mut per_pack: Vec<(String, usize)> = Vec::new();
        for (pack, name, text) in crate::embedded::FILES {
            self.files.push(SourceFile {
                pack: pack.to_string(),
                name: name.to_string(),
                text: text.to_string(),
            });
            match per_pack.iter_mut().find(|(p, _)| p == pack) {
                Some((_, n)) => *n += 1,
                None => per_pack.push((pack.to_string(), 1)),
            }
        }
        for (name, files) in per_pack {
            self.packs.push(PackInfo {
                version: crate::embedded::PACK_VERSIONS
                    .iter()
                    .find(|(p, _)| *p == name)
                    .map(|(_, v)| v.to_string()),
                name,
                origin: "embedded".into(),
                files,
                rules: 0,
            });
        }
    }

    /// Adds a rule file (a pack of its own, named after the file) or a pack directory (one
    /// pack, named by its `pack.yaml` or after the directory, every `*.rules` file below it in
    /// path order).
    pub fn add_path(&mut self, path: &Path) {
        self.add(path, None);
    }

    /// [`Sources::add_path`] of a pack directory only if it has a valid manifest that `keep`
    /// accepts: the rule files of a pack that is not wanted are not read. Whether it was added.
    pub fn add_path_if(&mut self, path: &Path, keep: impl Fn(&Manifest) -> bool) -> bool {
        path.is_dir() && self.add(path, Some(&keep))
    }

    fn add(&mut self, path: &Path, keep: Option<&dyn Fn(&Manifest) -> bool>) -> bool {
        let is_dir = path.is_dir();
        // The pack's manifest, read and parsed once: it names the pack and gives its version.
        let mut manifest: Option<ManifestSource> = None;
        if is_dir {
            let file = path.join(manifest::FILE);
            let stamp = stamp(&file);
            if file.is_file() {
                match manifest::read_text(path) {
                    Ok(text) => {
                        let m = ManifestSource::new(file.display().to_string(), text);
                        if let Some(keep) = keep
                            && !m.parsed.as_ref().is_ok_and(keep)
                        {
                            return false;
                        }
                        manifest = Some(m);
                    }
                    Err(_) if keep.is_some() => return false,
                    Err(e) => self.problem(Problem::Unreadable {
                        path: file.display().to_string(),
                        reason: e.to_string(),
                    }),
                }
            } else if keep.is_some() {
                return false;
            }
            self.stamps.push(stamp);
        }
        let parsed = manifest.as_ref().and_then(|m| m.parsed.as_ref().ok());
        let version = parsed.map(|m| m.version.to_string());
        let pack = match parsed {
            Some(m) => m.name.clone(),
            None => file_pack_name(path),
        };
        self.manifests.extend(manifest);
        let walk = match rule_files(path) {
            Ok(w) => w,
            Err(e) => {
                self.problem(Problem::Unreadable {
                    path: path.display().to_string(),
                    reason: format!("cannot read: {e}"),
                });
                return true;
            }
        };
        for k in walk.skipped {
            self.problem(Problem::Skipped {
                path: k.path.display().to_string(),
                reason: k.reason,
            });
        }
        for f in &walk.files {
            self.stamps.push(stamp(f));
            let name = f.display().to_string();
            match crate::limits::read_bounded(f, crate::limits::MAX_RULE_FILE, "a rule file") {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => self.files.push(SourceFile {
                        pack: pack.clone(),
                        name,
                        text,
                    }),
                    Err(e) => {
                        let reason = format!(
                            "{name} is not valid UTF-8 (byte {})",
                            e.utf8_error().valid_up_to()
                        );
                        self.problem(Problem::Unreadable { path: name, reason });
                    }
                },
                Err(e) => self.problem(Problem::Unreadable {
                    path: name,
                    reason: e.to_string(),
                }),
            }
        }
        match self.packs.iter_mut().find(|p| p.name == pack) {
            Some(p) => p.files += walk.files.len(),
            None => self.packs.push(PackInfo {
                name: pack,
                version,
                origin: path.display().to_string(),
                files: walk.files.len(),
                rules: 0,
            }),
        }
        true
    }

    /// How many paths, files, manifests or overrides could not be read.
    pub fn unreadable(&self) -> usize {
        self.problems
            .iter()
            .filter(|(_, p)| matches!(p, Problem::Unreadable { .. }))
            .count()
    }

    /// A hash of the text read (files, manifests, overrides), to tell whether anything changed.
    pub fn digest(&self) -> u64 {
        let mut h = rustc_hash::FxHasher::default();
        self.files.hash(&mut h);
        for m in &self.manifests {
            (&m.file, &m.text).hash(&mut h);
        }
        self.overrides.hash(&mut h);
        h.finish()
    }
}

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok();
    (
        path.to_path_buf(),
        m.as_ref().map_or(u64::MAX, |m| m.len()),
        m.and_then(|m| m.modified().ok()),
    )
}

/// A pack named after its file or directory, without extension.
fn file_pack_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "rules".into())
}

/// The rule files of a path: the file itself, or every `*.rules` file below a directory, in
/// path order, read through [`crate::walk`] (each file once, links followed once, hidden files
/// and editors' lock files never read); what the walk skipped is in [`Walk::skipped`].
///
/// [`Walk::skipped`]: crate::walk::Walk::skipped
pub fn rule_files(path: &Path) -> std::io::Result<crate::walk::Walk> {
    if path.is_dir() {
        crate::walk::walk(path, &|p| {
            p.extension().is_some_and(|e| e == "rules")
                && p.file_name()
                    .is_some_and(|n| loadable_name(&n.to_string_lossy()))
        })
    } else {
        Ok(crate::walk::Walk {
            files: vec![path.to_path_buf()],
            skipped: Vec::new(),
        })
    }
}

/// Whether a file or directory name below a pack's root is part of the pack: not hidden
/// (`.name`, which also covers editor lock and swap files such as `.#x.rules` and
/// `.x.rules.swp`) and not an editor backup or autosave (`name~`, `#name#`). Every loader of
/// pack directories (rule files, `pack.yaml`, fixtures, the digest manifest, archives, the
/// store) skips, at every level below the pack's root, the names for which this is false, so
/// a file that `MANIFEST.sha256` cannot cover is never loaded.
pub fn loadable_name(name: &str) -> bool {
    !(name.is_empty()
        || name.starts_with('.')
        || name.ends_with('~')
        || (name.len() > 1 && name.starts_with('#') && name.ends_with('#')))
}

/// [`loadable_name`] for every component of a relative path (`/`-separated).
pub fn loadable_path(rel: &str) -> bool {
    rel.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .all(loadable_name)
}

/// The packs installed in a packs directory: its entries that are directories (or links to
/// one), with a [`loadable_name`], sorted. A missing directory has none.
pub fn installed_packs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut v: Vec<_> = entries
        .flatten()
        .filter(|e| loadable_name(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fp-sources-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_pack_directory_is_named_by_its_manifest_read_once() {
        let d = tmp("named");
        let pack = d.join("dir-name");
        std::fs::create_dir_all(pack.join("sub")).unwrap();
        std::fs::write(
            pack.join("pack.yaml"),
            "name: real-name\nversion: 1.2.3\nlicense: MIT\n",
        )
        .unwrap();
        std::fs::write(pack.join("b.rules"), "# b\n").unwrap();
        std::fs::write(pack.join("sub/a.rules"), "# a\n").unwrap();
        std::fs::write(pack.join(".hidden.rules"), "# never\n").unwrap();
        let s = Sources::read(&Selection {
            paths: vec![pack.clone()],
            ..Default::default()
        });
        assert_eq!(s.manifests.len(), 1);
        assert!(s.manifests[0].parsed.is_ok());
        assert_eq!(s.packs.len(), 1);
        assert_eq!(s.packs[0].name, "real-name");
        assert_eq!(s.packs[0].version.as_deref(), Some("1.2.3"));
        assert_eq!(s.packs[0].files, 2);
        assert!(s.files.iter().all(|f| f.pack == "real-name"));
        assert!(!s.files.iter().any(|f| f.name.contains("hidden")));
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn what_cannot_be_read_is_a_problem_beside_what_can() {
        let d = tmp("problems");
        std::fs::write(d.join("good.rules"), "# good\n").unwrap();
        std::fs::write(d.join("bad.rules"), b"# \xff\xfe\n").unwrap();
        let s = Sources::read(&Selection {
            paths: vec![
                d.join("good.rules"),
                d.join("missing.rules"),
                d.join("bad.rules"),
            ],
            overrides: Some(d.join("no-overrides.yaml")),
            ..Default::default()
        });
        assert_eq!(s.files.len(), 1);
        assert_eq!(s.unreadable(), 3, "{:?}", s.problems);
        let reasons: Vec<&str> = s
            .problems
            .iter()
            .map(|(_, p)| match p {
                Problem::Unreadable { reason, .. } => reason.as_str(),
                Problem::Skipped { reason, .. } => reason.as_str(),
            })
            .collect();
        assert!(
            reasons[1].contains("not valid UTF-8 (byte 2)"),
            "{reasons:?}"
        );
        assert!(
            reasons[2].starts_with("cannot read the overrides"),
            "{reasons:?}"
        );
        // Each problem knows how many files were read before it.
        assert_eq!(s.problems[0].0, 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_last_good_form_keeps_manifests_as_file_and_text() {
        let s = Sources::embedded();
        let json = serde_json::to_string(&s).unwrap();
        let back: Sources = serde_json::from_str(&json).unwrap();
        assert_eq!(back.digest(), s.digest());
        assert!(back.manifests.iter().all(|m| m.parsed.is_ok()));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(v["manifests"][0][1].is_string(), "{}", v["manifests"][0]);
    }
}
