//! `pack install`: a verified pack copied into the install store and switched in atomically.
//!
//! The store (`<packs_dir>/.store/`) holds one directory per installed copy, named
//! `<name>-<version>-<digest>` where the digest is the SHA-256 of the pack's `MANIFEST.sha256`
//! and `MANIFEST.sig`. A copy holds exactly the files its manifest lists (and its install
//! record, `.installed.json`), checked after copying; an existing copy is reused only when it
//! still holds exactly those files with those digests, otherwise the pack is copied afresh under
//! a new name. Old copies are found by their install record, never by their name.

use super::integrity::{self, DIGESTS, SIGNATURE};
use super::ops::{Context, PackError, compile_pack, io, open_pack, require_clean, unique};
use crate::compiler::{Compiled, Compiler};
use crate::sources::manifest::{self, Manifest};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The install record's file name, in each copy of the store.
pub const RECORD: &str = ".installed.json";

/// Where and how a pack was installed (`.installed.json` in its directory).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstallRecord {
    /// The pack.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Installed from.
    pub source: String,
    /// The signing key (hex), when signed.
    pub signed_by: Option<String>,
    /// When, RFC 3339.
    pub installed_at: String,
}

/// The install record of a store copy (or of an installed pack's link), if it has a readable one.
pub fn read_record(dir: &Path) -> Option<InstallRecord> {
    let bytes =
        crate::limits::read_bounded(&dir.join(RECORD), 64 << 10, "an install record").ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A directory removed on drop unless kept.
struct Scratch(Option<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(d) = &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Copies the files `digests` lists (and the integrity files) from `from` into `to`, nothing else.
fn copy_listed(from: &Path, to: &Path, digests: &str, signed: bool) -> Result<(), PackError> {
    std::fs::create_dir_all(to).map_err(io(to))?;
    let listed = digests
        .lines()
        .filter_map(|l| l.split_once("  ").map(|(_, rel)| rel));
    let integrity_files = [Some(DIGESTS), signed.then_some(SIGNATURE)];
    for rel in listed.chain(integrity_files.into_iter().flatten()) {
        let dest = to.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::copy(from.join(rel), &dest).map_err(io(&dest))?;
    }
    Ok(())
}

/// Installs a verified pack into `packs_dir` atomically: the pack is copied into
/// `.store/<name>-<version>-<digest>/`, then the link `<packs_dir>/<name>` is switched to it
/// with one `rename`, so a running daemon sees the whole old pack or the whole new one, never
/// a mix. Refused, with nothing installed: files that do not match the manifest (or that it
/// does not list, hidden ones included), a missing or untrusted signature (unless
/// `allow_unsigned`), checked before any file of the pack is parsed, a flowprint version the
/// pack does not support, a dependency that is not installed or bundled in a version it
/// accepts, rules that do not compile, paths that escape the target. The copy replaced is kept
/// (a daemon may be reading it, and it allows a rollback); older copies of the same pack (by
/// their install record) are removed, and no other pack's.
pub fn install_pack(
    source: &Path,
    packs_dir: &Path,
    trusted: &[VerifyingKey],
    allow_unsigned: bool,
) -> Result<InstallRecord, PackError> {
    std::fs::create_dir_all(packs_dir).map_err(io(packs_dir))?;
    let store = packs_dir.join(".store");
    std::fs::create_dir_all(&store).map_err(io(&store))?;
    let opened = open_pack(source, &store)?;
    // The digests and the signature before anything of the pack is parsed.
    let verified = integrity::verify_dir(&opened.dir, trusted, !allow_unsigned)?;
    let digests = integrity::read_digests(&opened.dir)?;
    let signature = integrity::read_signature(&opened.dir)?;
    // Exactly the listed files are staged, and the staged copy is checked: what is installed
    // is what was verified, whatever else the source directory holds or does meanwhile.
    let staging = Scratch(Some(unique(&store, "staging")));
    let staged = staging.0.clone().expect("set");
    copy_listed(&opened.dir, &staged, &digests, signature.is_some())?;
    drop(opened);
    integrity::verify_copy(&staged, &digests, signature.as_deref(), &[])?;
    let m = Manifest::read(&staged)?;
    if !m.engine_ok() {
        return Err(PackError::Requirement(format!(
            "pack `{}` {} needs flowprint {}, this is {}",
            m.name,
            m.version,
            m.flowprint,
            env!("CARGO_PKG_VERSION")
        )));
    }
    let link = packs_dir.join(&m.name);
    if link.exists() && !link.is_symlink() {
        return Err(PackError::Requirement(format!(
            "{} exists and is not a link made by `pack install`: move it away first",
            link.display()
        )));
    }
    // Dependencies: installed (other than itself) or bundled, in an accepted version.
    let mut available: BTreeMap<String, semver::Version> = BTreeMap::new();
    for (name, text) in crate::embedded::PACK_MANIFESTS {
        if let Ok(o) = Manifest::parse(text, name) {
            available.insert(o.name, o.version);
        }
    }
    for p in crate::sources::installed_packs(packs_dir).map_err(io(packs_dir))? {
        if let Ok(o) = Manifest::read(&p)
            && o.name != m.name
        {
            available.insert(o.name, o.version);
        }
    }
    for (dep, req) in &m.depends {
        match available.get(dep) {
            None => {
                return Err(PackError::Requirement(format!(
                    "pack `{}` needs pack `{dep}` ({req}), which is neither installed in {} nor bundled",
                    m.name,
                    packs_dir.display()
                )));
            }
            Some(v) if !manifest::req_matches(req, v) => {
                return Err(PackError::Requirement(format!(
                    "pack `{}` needs pack `{dep}` {req}, but {v} is installed",
                    m.name
                )));
            }
            Some(_) => {}
        }
    }
    let (_, compiled) = compile_pack(
        &staged,
        &Context {
            bundled: true,
            packs_dir: Some(packs_dir.to_path_buf()),
        },
    )?;
    require_clean(&compiled)?;
    let record = InstallRecord {
        name: m.name.clone(),
        version: m.version.to_string(),
        source: source.display().to_string(),
        signed_by: verified.signed_by.clone(),
        installed_at: crate::flow::time::format_rfc3339(crate::dns::resolve::now_ms()),
    };
    let record_json = serde_json::to_vec_pretty(&record).expect("serialisable");
    // Named by what it holds; an existing copy of that name is used only if it still holds
    // exactly that.
    let mut h = Sha256::new();
    h.update(digests.as_bytes());
    h.update(signature.as_deref().unwrap_or("").as_bytes());
    let digest: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let base = format!("{}-{}-{digest}", m.name, m.version);
    let mut final_dir = store.join(&base);
    let reuse = final_dir.is_dir()
        && integrity::verify_copy(&final_dir, &digests, signature.as_deref(), &[RECORD]).is_ok();
    if reuse {
        let rec_path = final_dir.join(RECORD);
        std::fs::write(&rec_path, &record_json).map_err(io(&rec_path))?;
    } else {
        if final_dir.exists() {
            // Changed since it was installed: never reused, left to the cleanup below.
            let n = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            final_dir = store.join(format!("{base}-{n}"));
        }
        let rec_path = staged.join(RECORD);
        std::fs::write(&rec_path, &record_json).map_err(io(&rec_path))?;
        std::fs::rename(&staged, &final_dir).map_err(io(&final_dir))?;
    }
    drop(staging);
    let tmp_link = unique(packs_dir, "link");
    let target = PathBuf::from(".store").join(final_dir.file_name().expect("named"));
    std::os::unix::fs::symlink(&target, &tmp_link).map_err(io(&tmp_link))?;
    let previous = std::fs::read_link(&link).ok();
    std::fs::rename(&tmp_link, &link).map_err(io(&link))?;
    remove_old_copies(packs_dir, &store, &m.name, [Some(target), previous]);
    Ok(record)
}

/// Removes the store copies of pack `name` (by their install record) other than those in
/// `keep` and those any link of `packs_dir` points to. Copies without a readable record, and
/// every other pack's, are left alone.
fn remove_old_copies(packs_dir: &Path, store: &Path, name: &str, keep: [Option<PathBuf>; 2]) {
    let mut kept: BTreeSet<std::ffi::OsString> = keep
        .into_iter()
        .flatten()
        .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
        .collect();
    if let Ok(entries) = std::fs::read_dir(packs_dir) {
        for e in entries.flatten() {
            if let Ok(t) = std::fs::read_link(e.path())
                && let Some(n) = t.file_name()
            {
                kept.insert(n.to_os_string());
            }
        }
    }
    let Ok(entries) = std::fs::read_dir(store) else {
        return;
    };
    for e in entries.flatten() {
        let file_name = e.file_name();
        if kept.contains(&file_name) || !crate::sources::loadable_name(&file_name.to_string_lossy())
        {
            continue;
        }
        let path = e.path();
        if path.is_symlink() || !path.is_dir() {
            continue;
        }
        if read_record(&path).is_some_and(|r| r.name == name) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// An installed or bundled pack, for `pack list`.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Rules it compiles to.
    pub rules: usize,
    /// `bundled`, or where it was installed from.
    pub origin: String,
    /// Signing key, when installed signed.
    pub signed_by: Option<String>,
    /// When installed.
    pub installed_at: Option<String>,
}

/// The bundled packs and those installed in `packs_dir`.
pub fn list_packs(packs_dir: &Path) -> Result<Vec<Listed>, PackError> {
    let mut out = Vec::new();
    let mut c = Compiler::new();
    c.add_sources(&crate::sources::Sources::embedded());
    let compiled = c.compile();
    for (name, text) in crate::embedded::PACK_MANIFESTS {
        let version = Manifest::parse(text, name).map_or("?".into(), |m| m.version.to_string());
        out.push(Listed {
            name: name.to_string(),
            version,
            rules: count_rules(&compiled, name),
            origin: "bundled".into(),
            signed_by: None,
            installed_at: None,
        });
    }
    for p in crate::sources::installed_packs(packs_dir).map_err(io(packs_dir))? {
        let (m, compiled) = compile_pack(
            &p,
            &Context {
                bundled: true,
                packs_dir: Some(packs_dir.to_path_buf()),
            },
        )?;
        let record = read_record(&p);
        out.push(Listed {
            rules: count_rules(&compiled, &m.name),
            name: m.name,
            version: m.version.to_string(),
            origin: record
                .as_ref()
                .map_or_else(|| p.display().to_string(), |r| r.source.clone()),
            signed_by: record.as_ref().and_then(|r| r.signed_by.clone()),
            installed_at: record.map(|r| r.installed_at),
        });
    }
    Ok(out)
}

fn count_rules(compiled: &Compiled, pack: &str) -> usize {
    let prefix = format!("{pack}/");
    compiled
        .ruleset
        .rules()
        .iter()
        .filter(|r| r.id.starts_with(&prefix))
        .count()
}
