//! Running the `flowprint` binary as a user does, for the CLI tests.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `flowprint ARGS` in `dir`.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowprint"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run flowprint")
}

/// Bytes of an output stream as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a pack command in `dir` with no trusted keys from the environment (the tests' keys are
/// given on the command line).
pub fn fp(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowprint"))
        .current_dir(dir)
        .args(args)
        .env("FLOWPRINT_TRUSTED_KEYS", dir.join("no-keys-here"))
        .output()
        .unwrap()
}

/// Standard output then standard error.
pub fn both(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// [`fp`], which must succeed; its output.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let o = fp(dir, args);
    assert!(o.status.success(), "{args:?}: {}", both(&o));
    both(&o)
}

/// [`fp`], which must fail with exit code 1; its output.
pub fn fails(dir: &Path, args: &[&str]) -> String {
    let o = fp(dir, args);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{args:?} should fail: {}",
        both(&o)
    );
    both(&o)
}
