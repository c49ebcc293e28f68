//! Pack integrity: a manifest of SHA-256 digests of every file, an optional Ed25519 signature
//! over it, and safe `.tar.gz` archives.
//!
//! - `MANIFEST.sha256` lists every file of the pack as `<hex digest>  <path>` lines, sorted by
//!   path (the format of `sha256sum`, so `sha256sum -c MANIFEST.sha256` checks it too).
//! - `MANIFEST.sig` holds `ed25519 <public key hex> <signature hex>`: the signature of the exact
//!   bytes of `MANIFEST.sha256`.
//! - Keys are 32-byte Ed25519 seeds (secret, hex, mode 0600) and public keys (hex, `.pub`).
//!
//! Verification refuses, naming the file: a file whose digest differs, a listed file that is
//! missing, a file that is not listed, a symlink or special file, a signature that does not
//! verify or whose key is not trusted. Archives are extracted with every entry checked: only
//! regular files and directories, relative paths without `..`, bounded sizes and counts.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// The digest manifest's file name.
pub const DIGESTS: &str = "MANIFEST.sha256";
/// The signature's file name.
pub const SIGNATURE: &str = "MANIFEST.sig";

/// What went wrong with a pack's integrity.
#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    /// Reading or writing.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The files do not match the manifest (each problem names its file).
    #[error("the pack does not match its manifest:\n  {}", .0.join("\n  "))]
    Mismatch(Vec<String>),
    /// No manifest.
    #[error("{0}: no {DIGESTS} (build the pack with `flowprint pack build`)")]
    Unbuilt(String),
    /// A signature that does not verify, or is missing when required.
    #[error("signature: {0}")]
    Signature(String),
    /// A key file that cannot be used.
    #[error("{path}: {message}")]
    Key {
        /// The key file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// An archive entry that would escape the target or is not a plain file.
    #[error("archive entry `{entry}`: {message}")]
    Archive {
        /// The entry's path in the archive.
        entry: String,
        /// What is wrong.
        message: String,
    },
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IntegrityError + '_ {
    move |source| IntegrityError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The files of a pack directory, relative paths with `/`, sorted; names that are not
/// [`crate::sources::loadable_name`] (hidden files, editor backups) and the integrity files themselves
/// are left out. Symlinks and special files are errors.
pub fn pack_files(dir: &Path) -> Result<Vec<String>, IntegrityError> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), IntegrityError> {
        for e in std::fs::read_dir(dir).map_err(io(dir))? {
            let e = e.map_err(io(dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !crate::sources::loadable_name(&name) {
                continue;
            }
            let path = e.path();
            let ft = e.file_type().map_err(io(&path))?;
            let rel = path
                .strip_prefix(root)
                .expect("below the root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            if ft.is_dir() {
                walk(root, &path, out)?;
            } else if ft.is_file() {
                if rel != DIGESTS && rel != SIGNATURE {
                    out.push(rel);
                }
            } else {
                return Err(IntegrityError::Mismatch(vec![format!(
                    "{rel}: not a regular file (symlinks and special files are not allowed in a pack)"
                )]));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

fn digest_file(path: &Path) -> Result<String, IntegrityError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// The digest manifest text of a directory as it is now.
pub fn digests_text(dir: &Path) -> Result<String, IntegrityError> {
    let mut text = String::new();
    for rel in pack_files(dir)? {
        let d = digest_file(&dir.join(&rel))?;
        text.push_str(&format!("{d}  {rel}\n"));
    }
    Ok(text)
}

/// Writes `MANIFEST.sha256` (and, with a key, `MANIFEST.sig`) into the pack directory.
/// Returns the number of files listed.
pub fn write_manifest(dir: &Path, key: Option<&SigningKey>) -> Result<usize, IntegrityError> {
    let text = digests_text(dir)?;
    let path = dir.join(DIGESTS);
    std::fs::write(&path, &text).map_err(io(&path))?;
    let sig_path = dir.join(SIGNATURE);
    match key {
        Some(k) => {
            let sig = k.sign(text.as_bytes());
            let line = format!(
                "ed25519 {} {}\n",
                hex(k.verifying_key().as_bytes()),
                hex(&sig.to_bytes())
            );
            std::fs::write(&sig_path, line).map_err(io(&sig_path))?;
        }
        None => {
            if sig_path.exists() {
                std::fs::remove_file(&sig_path).map_err(io(&sig_path))?;
            }
        }
    }
    Ok(text.lines().count())
}

/// The outcome of a successful verification.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verified {
    /// Files checked.
    pub files: usize,
    /// The public key (hex) that signed the manifest, when signed.
    pub signed_by: Option<String>,
}

/// Checks a pack directory against its manifest and signature. `trusted` are the public keys
/// accepted; with `require_signature`, an unsigned pack is refused.
pub fn verify_dir(
    dir: &Path,
    trusted: &[VerifyingKey],
    require_signature: bool,
) -> Result<Verified, IntegrityError> {
    let text = read_digests(dir)?;
    let mut listed: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some((d, rel)) = line.split_once("  ") else {
            problems.push(format!("{DIGESTS}:{}: not `<digest>  <path>`", i + 1));
            continue;
        };
        if d.len() != 64 || unhex(d).is_none() {
            problems.push(format!(
                "{DIGESTS}:{}: `{d}` is not a SHA-256 digest",
                i + 1
            ));
            continue;
        }
        if !safe_relative(rel) {
            problems.push(format!(
                "{DIGESTS}:{}: `{rel}` is not a relative path inside the pack",
                i + 1
            ));
            continue;
        }
        if !crate::sources::loadable_path(rel) {
            problems.push(format!(
                "{DIGESTS}:{}: `{rel}` is a hidden or editor-backup name, which is never part of a pack",
                i + 1
            ));
            continue;
        }
        listed.insert(rel.to_string(), d.to_string());
    }
    let present = pack_files(dir)?;
    for rel in &present {
        match listed.get(rel) {
            None => problems.push(format!(
                "{rel}: not in {DIGESTS} (added after the pack was built)"
            )),
            Some(want) => {
                let got = digest_file(&dir.join(rel))?;
                if &got != want {
                    problems.push(format!(
                        "{rel}: modified (SHA-256 {got}, manifest says {want})"
                    ));
                }
            }
        }
    }
    for rel in listed.keys() {
        if !present.contains(rel) {
            problems.push(format!("{rel}: missing (listed in {DIGESTS})"));
        }
    }
    if !problems.is_empty() {
        return Err(IntegrityError::Mismatch(problems));
    }
    let signed_by = match read_signature(dir)? {
        Some(sig) => Some(check_signature(&sig, text.as_bytes(), trusted)?),
        None => {
            if require_signature {
                return Err(IntegrityError::Signature(
                    "the pack is not signed (build it with `pack build --sign KEY`, or accept unsigned packs explicitly)".into(),
                ));
            }
            None
        }
    };
    Ok(Verified {
        files: present.len(),
        signed_by,
    })
}

/// Largest `MANIFEST.sig` read (one line of about 200 bytes).
const MAX_SIGNATURE_FILE: u64 = 4096;

fn bounded_text(
    path: &Path,
    limit: u64,
    what: &'static str,
) -> Result<Option<String>, IntegrityError> {
    match crate::limits::read_text_bounded(path, limit, what) {
        Ok(t) => Ok(Some(t)),
        Err(crate::limits::ReadError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(crate::limits::ReadError::Io { source, .. }) => Err(io(path)(source)),
        Err(e) => Err(IntegrityError::Mismatch(vec![e.to_string()])),
    }
}

/// The text of a pack's `MANIFEST.sha256`, read within [`crate::limits::MAX_SIDE_FILE`].
pub fn read_digests(dir: &Path) -> Result<String, IntegrityError> {
    bounded_text(
        &dir.join(DIGESTS),
        crate::limits::MAX_SIDE_FILE,
        "a digest manifest",
    )?
    .ok_or_else(|| IntegrityError::Unbuilt(dir.display().to_string()))
}

/// The text of a pack's `MANIFEST.sig`, if it has one.
pub fn read_signature(dir: &Path) -> Result<Option<String>, IntegrityError> {
    bounded_text(&dir.join(SIGNATURE), MAX_SIGNATURE_FILE, "a signature file")
}

/// Every file below `dir` whatever its name, relative with `/`, sorted; symlinks and special
/// files are named as problems.
fn every_file(dir: &Path) -> Result<(Vec<String>, Vec<String>), IntegrityError> {
    fn walk(
        root: &Path,
        dir: &Path,
        files: &mut Vec<String>,
        problems: &mut Vec<String>,
    ) -> Result<(), IntegrityError> {
        for e in std::fs::read_dir(dir).map_err(io(dir))? {
            let e = e.map_err(io(dir))?;
            let path = e.path();
            let ft = e.file_type().map_err(io(&path))?;
            let rel = path
                .strip_prefix(root)
                .expect("below the root")
                .to_string_lossy()
                .into_owned();
            if ft.is_dir() {
                walk(root, &path, files, problems)?;
            } else if ft.is_file() {
                files.push(rel);
            } else {
                problems.push(format!("{rel}: not a regular file"));
            }
        }
        Ok(())
    }
    let (mut files, mut problems) = (Vec::new(), Vec::new());
    walk(dir, dir, &mut files, &mut problems)?;
    files.sort();
    Ok((files, problems))
}

/// Checks that a copy of a pack (a directory of the install store) holds exactly the files of
/// the manifest `digests` (the integrity files, and `extra` names such as the install record,
/// aside), each with its digest, and the integrity files `digests` and `signature` byte for
/// byte. Unlike [`verify_dir`], hidden files count: nothing may be there that the manifest
/// does not cover.
pub fn verify_copy(
    dir: &Path,
    digests: &str,
    signature: Option<&str>,
    extra: &[&str],
) -> Result<(), IntegrityError> {
    let (present, mut problems) = every_file(dir)?;
    let mut listed: BTreeMap<&str, &str> = BTreeMap::new();
    for line in digests.lines() {
        if let Some((d, rel)) = line.split_once("  ") {
            listed.insert(rel, d);
        }
    }
    for rel in &present {
        if rel == DIGESTS
            || (rel == SIGNATURE && signature.is_some())
            || extra.contains(&rel.as_str())
        {
            continue;
        }
        match listed.get(rel.as_str()) {
            None => problems.push(format!("{rel}: not in {DIGESTS}")),
            Some(want) => {
                if digest_file(&dir.join(rel))? != *want {
                    problems.push(format!("{rel}: modified"));
                }
            }
        }
    }
    for rel in listed.keys() {
        if !present.iter().any(|p| p == rel) {
            problems.push(format!("{rel}: missing"));
        }
    }
    if read_digests(dir).ok().as_deref() != Some(digests) {
        problems.push(format!("{DIGESTS}: differs"));
    }
    if read_signature(dir)?.as_deref() != signature {
        problems.push(format!("{SIGNATURE}: differs"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(IntegrityError::Mismatch(problems))
    }
}

fn check_signature(
    line: &str,
    message: &[u8],
    trusted: &[VerifyingKey],
) -> Result<String, IntegrityError> {
    let parts: Vec<&str> = line.split_whitespace().collect();
    let [alg, key, sig] = parts.as_slice() else {
        return Err(IntegrityError::Signature(format!(
            "{SIGNATURE} is not `ed25519 <key> <signature>`"
        )));
    };
    if *alg != "ed25519" {
        return Err(IntegrityError::Signature(format!(
            "unknown algorithm `{alg}`"
        )));
    }
    let key_bytes: [u8; 32] = unhex(key).and_then(|b| b.try_into().ok()).ok_or_else(|| {
        IntegrityError::Signature("the key in MANIFEST.sig is not 32 hex bytes".into())
    })?;
    let sig_bytes: [u8; 64] = unhex(sig)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| IntegrityError::Signature("the signature is not 64 hex bytes".into()))?;
    let Some(vk) = trusted.iter().find(|k| k.as_bytes() == &key_bytes) else {
        return Err(IntegrityError::Signature(format!(
            "signed by key {key}, which is not among the trusted keys ({} trusted)",
            trusted.len()
        )));
    };
    vk.verify(message, &Signature::from_bytes(&sig_bytes))
        .map_err(|_| IntegrityError::Signature(format!("the signature by key {key} does not verify: MANIFEST.sha256 was changed after signing")))?;
    Ok(key.to_string())
}

/// A new signing key from the system's randomness.
pub fn generate_key() -> std::io::Result<SigningKey> {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes a key pair: `<path>` (secret, mode 0600) and `<path>.pub`.
pub fn write_key(path: &Path, key: &SigningKey) -> Result<PathBuf, IntegrityError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    writeln!(f, "{}", hex(key.as_bytes())).map_err(io(path))?;
    let public = PathBuf::from(format!("{}.pub", path.display()));
    std::fs::write(
        &public,
        format!("{}\n", hex(key.verifying_key().as_bytes())),
    )
    .map_err(io(&public))?;
    Ok(public)
}

/// Reads a secret key file.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, IntegrityError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let seed: [u8; 32] = unhex(&text)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| IntegrityError::Key {
            path: path.display().to_string(),
            message: "not a secret key (32 hex bytes)".into(),
        })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Reads a public key file.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, IntegrityError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let bytes: [u8; 32] = unhex(&text)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| IntegrityError::Key {
            path: path.display().to_string(),
            message: "not a public key (32 hex bytes)".into(),
        })?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| IntegrityError::Key {
        path: path.display().to_string(),
        message: format!("not a valid Ed25519 public key: {e}"),
    })
}

/// The public keys in a directory (`*.pub`) and in the given files.
pub fn trusted_keys(
    dirs: &[PathBuf],
    files: &[PathBuf],
) -> Result<Vec<VerifyingKey>, IntegrityError> {
    let mut keys = Vec::new();
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(d) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "pub"))
            .collect();
        paths.sort();
        for p in paths {
            keys.push(read_public_key(&p)?);
        }
    }
    for f in files {
        keys.push(read_public_key(f)?);
    }
    Ok(keys)
}

/// Whether an archive or manifest path stays inside its root: relative, no `..`, no root or
/// prefix components, not empty.
pub fn safe_relative(p: &str) -> bool {
    let path = Path::new(p);
    !p.is_empty()
        && !p.contains('\\')
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::archive::{extract_archive, write_archive};

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fp-integrity-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn manifest_signature_and_tampering() {
        let d = tmp("sig");
        std::fs::create_dir_all(d.join("rules")).unwrap();
        std::fs::write(
            d.join("pack.yaml"),
            "name: p\nversion: 1.0.0\nlicense: MIT\n",
        )
        .unwrap();
        std::fs::write(d.join("rules/a.rules"), "# rules\n").unwrap();
        let key = generate_key().unwrap();
        assert_eq!(write_manifest(&d, Some(&key)).unwrap(), 2);
        let trusted = vec![key.verifying_key()];
        let v = verify_dir(&d, &trusted, true).unwrap();
        assert_eq!(v.files, 2);
        // Another key is not trusted.
        let other = generate_key().unwrap().verifying_key();
        let e = verify_dir(&d, &[other], true).unwrap_err();
        assert!(e.to_string().contains("not among the trusted keys"), "{e}");
        // A changed file is named.
        std::fs::write(d.join("rules/a.rules"), "# changed\n").unwrap();
        let e = verify_dir(&d, &trusted, true).unwrap_err();
        assert!(e.to_string().contains("rules/a.rules: modified"), "{e}");
        // Rebuilt without the key, the old signature is gone and signatures can be required.
        write_manifest(&d, None).unwrap();
        assert!(verify_dir(&d, &trusted, false).unwrap().signed_by.is_none());
        assert!(matches!(
            verify_dir(&d, &trusted, true),
            Err(IntegrityError::Signature(_))
        ));
        // A manifest edited after signing fails the signature.
        write_manifest(&d, Some(&key)).unwrap();
        std::fs::write(d.join("extra.rules"), "").unwrap();
        let e = verify_dir(&d, &trusted, true).unwrap_err();
        assert!(e.to_string().contains("extra.rules: not in"), "{e}");
        std::fs::remove_file(d.join("extra.rules")).unwrap();
        let text = std::fs::read_to_string(d.join(DIGESTS)).unwrap();
        std::fs::write(
            d.join(DIGESTS),
            text.replace("rules/a.rules", "rules/a.rules\n"),
        )
        .unwrap();
        assert!(verify_dir(&d, &trusted, true).is_err());
    }

    #[test]
    fn archives_round_trip_and_escapes_are_refused() {
        let d = tmp("arch");
        let pack = d.join("src");
        std::fs::create_dir_all(pack.join("tests")).unwrap();
        std::fs::write(
            pack.join("pack.yaml"),
            "name: p\nversion: 1.0.0\nlicense: MIT\n",
        )
        .unwrap();
        std::fs::write(pack.join("tests/t.yaml"), "[]\n").unwrap();
        write_manifest(&pack, None).unwrap();
        let out = d.join("p.tar.gz");
        write_archive(&pack, "p-1.0.0", &out).unwrap();
        let into = d.join("x");
        std::fs::create_dir_all(&into).unwrap();
        let top = extract_archive(&out, &into).unwrap();
        assert_eq!(top, into.join("p-1.0.0"));
        verify_dir(&top, &[], false).unwrap();

        // An archive whose entry climbs out of the target.
        let evil = d.join("evil.tar.gz");
        {
            let f = std::fs::File::create(&evil).unwrap();
            let gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
            let mut t = tar::Builder::new(gz);
            let data = b"x";
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            // The tar crate refuses to write `..` through the safe API: set the name raw.
            h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"p/../../evil\0");
            h.set_cksum();
            t.append(&h, &data[..]).unwrap();
            t.into_inner().unwrap().finish().unwrap();
        }
        let into2 = d.join("y");
        std::fs::create_dir_all(&into2).unwrap();
        let e = extract_archive(&evil, &into2).unwrap_err();
        assert!(e.to_string().contains("escapes"), "{e}");
        assert!(!d.join("evil").exists());
    }
}
