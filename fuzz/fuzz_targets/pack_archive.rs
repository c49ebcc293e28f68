//! Pack archives: `pack::archive::extract_archive`, then, when it extracts, `verify_dir`,
//! `verify_copy` and `Manifest::read` (YAML pre-check + parse) of what came out. Byte 0 picks
//! the form: even, the rest is a tar stream that the target gzips (so the fuzzer works on tar
//! headers, not on gzip checksums); odd, the rest is the `.tar.gz` file itself.
//! Oracles: an extraction never leaves a hidden or editor-backup name, a symlink or a special
//! file, nor more than `MAX_ARCHIVE_BYTES` of files, nor anything outside its directory.
#![no_main]

use flowprint::pack::archive::{self, MAX_ARCHIVE_BYTES};
use flowprint::pack::integrity;
use flowprint::sources::{loadable_name, manifest::Manifest};
use libfuzzer_sys::fuzz_target;
use std::io::Write;
use std::path::{Path, PathBuf};

fn scratch() -> PathBuf {
    std::env::temp_dir().join(format!("flowprint-fuzz-pack-{}", std::process::id()))
}

/// Every file below `dir` (relative), checking the oracles on the way; returns total bytes.
fn check_tree(root: &Path, dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let ft = e.file_type().unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            loadable_name(&name) || dir == root,
            "{}: extracted a name no pack may hold",
            e.path().display()
        );
        assert!(!ft.is_symlink(), "{}: a symlink", e.path().display());
        if ft.is_dir() {
            total += check_tree(root, &e.path());
        } else {
            assert!(ft.is_file(), "{}: a special file", e.path().display());
            total += e.metadata().unwrap().len();
        }
    }
    total
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let base = scratch();
    let _ = std::fs::remove_dir_all(&base);
    let into = base.join("x");
    std::fs::create_dir_all(&into).unwrap();
    let archive = base.join("in.tar.gz");
    if mode % 2 == 0 {
        let f = std::fs::File::create(&archive).unwrap();
        let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        gz.write_all(rest).unwrap();
        gz.finish().unwrap();
    } else {
        std::fs::write(&archive, rest).unwrap();
    }
    if let Ok(top) = archive::extract_archive(&archive, &into) {
        assert!(top.starts_with(&into), "{}", top.display());
        // Nothing next to `into`: only `in.tar.gz` and `x` in the scratch directory.
        let beside = std::fs::read_dir(&base).unwrap().count();
        assert_eq!(beside, 2, "an entry escaped the target directory");
        let total = check_tree(&into, &into);
        assert!(total <= MAX_ARCHIVE_BYTES);
        if top.is_dir() {
            let _ = integrity::verify_dir(&top, &[], false);
            if let Ok(digests) = integrity::read_digests(&top) {
                let sig = integrity::read_signature(&top).ok().flatten();
                let _ = integrity::verify_copy(&top, &digests, sig.as_deref(), &[]);
            }
            let _ = Manifest::read(&top);
        }
    }
    let _ = std::fs::remove_dir_all(&base);
});
