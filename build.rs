//! Embeds the bundled rule packs (`rules/<pack>/**/*.rules`) into the binary.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "rules") {
            out.push(p);
        }
    }
}

fn main() {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let rules = root.join("rules");
    println!("cargo:rerun-if-changed=rules");
    let mut files = Vec::new();
    collect(&rules, &mut files);
    files.sort();
    let mut code = String::from(
        "/// `(pack, file name, text)` of every bundled rule file.\npub static FILES: &[(&str, &str, &str)] = &[\n",
    );
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let rel = f.strip_prefix(&root).expect("under the manifest dir");
        let pack = f
            .strip_prefix(&rules)
            .ok()
            .and_then(|p| p.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        writeln!(
            code,
            "    ({pack:?}, {:?}, include_str!({:?})),",
            rel.display().to_string(),
            f.display().to_string()
        )
        .expect("write to string");
    }
    code.push_str("];\n");
    // `version:` of each bundled pack's pack.yaml.
    code.push_str(
        "/// `(pack, version)` from each bundled pack's `pack.yaml`.\npub static PACK_VERSIONS: &[(&str, &str)] = &[\n",
    );
    let mut packs: Vec<PathBuf> = std::fs::read_dir(&rules)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    packs.sort();
    let mut manifests: Vec<(String, PathBuf)> = Vec::new();
    for p in packs {
        let manifest = p.join("pack.yaml");
        println!("cargo:rerun-if-changed={}", manifest.display());
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let version = text.lines().find_map(|l| {
            l.strip_prefix("version:")
                .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
        });
        if let (Some(name), Some(v)) = (p.file_name(), version) {
            writeln!(code, "    ({:?}, {v:?}),", name.to_string_lossy()).expect("write to string");
            manifests.push((name.to_string_lossy().into_owned(), manifest.clone()));
        }
    }
    code.push_str("];\n");
    code.push_str(
        "/// `(pack, pack.yaml text)` of each bundled pack.\npub static PACK_MANIFESTS: &[(&str, &str)] = &[\n",
    );
    for (name, path) in &manifests {
        writeln!(
            code,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .expect("write to string");
    }
    code.push_str("];\n");
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("embedded.rs");
    std::fs::write(out, code).expect("write embedded.rs");
}
