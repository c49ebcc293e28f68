//! The API's bearer token: `api.token`, `FLOWPRINT_API_TOKEN`, or one generated into
//! `<state_dir>/api-token` and reused at the next start.
//!
//! The file is a secret, and the state directory may be shared: it is created as a new file of
//! mode 0600 beside its final name (`O_CREAT | O_EXCL`, which never follows a link), then
//! renamed into place, so an existing link or file there is replaced, never written through. A
//! link found at that name is refused (its target could be anything); an existing token file
//! that others may read has its mode set back to 0600, with a warning.

use super::ServeError;
use super::config::ServeConfig;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The file's name in the state directory.
pub const FILE: &str = "api-token";
/// Shortest token accepted.
pub const MIN_LEN: usize = 16;
/// What the errors call the file.
const WHAT: &str = "API token file";

fn refused(path: &Path, why: &str) -> ServeError {
    ServeError::Refused {
        what: WHAT,
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// The token the API checks (see the module docs).
pub fn api_token(config: &ServeConfig) -> Result<String, ServeError> {
    if let Some(t) = &config.api.token {
        return Ok(t.clone());
    }
    if let Ok(t) = std::env::var("FLOWPRINT_API_TOKEN")
        && t.len() >= MIN_LEN
    {
        return Ok(t);
    }
    let path = config.state_dir.join(FILE);
    if let Some(t) = read_token_file(&path)? {
        return Ok(t);
    }
    let bytes: [u8; 24] = super::random_bytes()?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_token_file(&path, &token)?;
    tracing::info!(path = %path.display(), "generated an API token");
    Ok(token)
}

/// An existing token file's token; `None` when there is none (or it is too short to use).
pub fn read_token_file(path: &Path) -> Result<Option<String>, ServeError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ServeError::file(WHAT, path)(e)),
    };
    if meta.file_type().is_symlink() {
        return Err(refused(
            path,
            "is a symbolic link; refusing to follow it (remove it to have a token generated, or set api.token)",
        ));
    }
    if !meta.is_file() {
        return Err(refused(path, "not a regular file"));
    }
    let f = std::fs::File::open(path).map_err(ServeError::file(WHAT, path))?;
    let opened = f.metadata().map_err(ServeError::file(WHAT, path))?;
    if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
        return Err(refused(path, "replaced while it was opened; refusing it"));
    }
    if opened.mode() & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| {
                refused(
                    path,
                    &format!(
                        "readable by others (mode {:o}) and its mode cannot be fixed: {e}",
                        opened.mode() & 0o777
                    ),
                )
            })?;
        tracing::warn!(
            path = %path.display(),
            was = format!("{:o}", opened.mode() & 0o777),
            "the API token file was readable by others: its mode is now 600 (the token may have leaked; delete the file to have a new one generated)"
        );
    }
    // A token is a line of text: 4 KiB is plenty.
    let mut text = String::new();
    f.take(4096)
        .read_to_string(&mut text)
        .map_err(ServeError::file(WHAT, path))?;
    let t = text.trim();
    Ok((t.len() >= MIN_LEN).then(|| t.to_string()))
}

/// Writes `token` to `path` as a new 0600 file renamed into place (see the module docs).
pub fn write_token_file(path: &Path, token: &str) -> Result<(), ServeError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(ServeError::file("state directory", dir))?;
    let tmp = dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
    // A leftover of this pid (or a link planted there) goes; remove_file never follows links.
    let _ = std::fs::remove_file(&tmp);
    let fail = ServeError::file(WHAT, &tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    let written = (|| {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        std::io::Write::write_all(&mut f, token.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(ServeError::file(WHAT, path)(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("fp-token-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn config(d: &Path) -> ServeConfig {
        ServeConfig {
            state_dir: d.to_path_buf(),
            ..ServeConfig::default()
        }
    }

    #[test]
    fn a_generated_token_is_a_new_0600_file_and_is_reused() {
        let d = dir("new");
        let t = api_token(&config(&d)).unwrap();
        let m = std::fs::symlink_metadata(d.join(FILE)).unwrap();
        assert!(m.is_file());
        assert_eq!(m.mode() & 0o777, 0o600);
        assert_eq!(api_token(&config(&d)).unwrap(), t);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_link_is_refused_and_never_written_through() {
        let d = dir("link");
        let target = d.join("elsewhere");
        std::os::unix::fs::symlink(&target, d.join(FILE)).unwrap();
        let e = api_token(&config(&d)).unwrap_err();
        assert!(
            matches!(&e, ServeError::Refused { what: WHAT, path, .. } if *path == d.join(FILE)),
            "{e}"
        );
        let e = e.to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(!target.exists(), "written through the link");
        // The writer alone replaces a link rather than following it.
        write_token_file(&d.join(FILE), "0123456789abcdef0123").unwrap();
        assert!(!target.exists());
        assert!(
            !std::fs::symlink_metadata(d.join(FILE))
                .unwrap()
                .is_symlink()
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_token_file_others_can_read_gets_mode_0600() {
        let d = dir("mode");
        let p = d.join(FILE);
        std::fs::write(&p, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(api_token(&config(&d)).unwrap(), "0123456789abcdef0123");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&d);
    }
}
