//! Hostile and careless pack archives through the binary (issue 15): hidden files smuggled into
//! a signed archive, a pack whose name starts with another's, tar bombs, and YAML nested deep
//! enough to make the parser quadratic. Every archive is built here, by the test.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::cli::{both as text, fails, fp, ok};

/// `acme` (and `others`) created, a trusted key `good.key`, `acme` built signed into
/// `acme.tar.gz`.
fn setup(d: &Path, others: &[&str]) {
    ok(d, &["pack", "new", "acme"]);
    for o in others {
        ok(d, &["pack", "new", o]);
    }
    ok(d, &["pack", "keygen", "good.key"]);
    std::fs::create_dir_all(d.join("trusted")).unwrap();
    std::fs::copy(d.join("good.key.pub"), d.join("trusted/good.pub")).unwrap();
    ok(
        d,
        &[
            "pack",
            "build",
            "acme",
            "--sign",
            "good.key",
            "-o",
            "acme.tar.gz",
        ],
    );
}

/// The entries (path, data) of a `.tar.gz`.
fn entries(archive: &Path) -> Vec<(String, Vec<u8>)> {
    let f = std::fs::File::open(archive).unwrap();
    let mut t = tar::Archive::new(flate2::read::GzDecoder::new(f));
    t.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (p, data)
        })
        .collect()
}

/// Writes `files` as a `.tar.gz` (regular files, GNU headers, long names as the tar crate
/// writes them).
fn write_tar_gz(out: &Path, files: &[(String, Vec<u8>)]) {
    let f = std::fs::File::create(out).unwrap();
    let mut t = tar::Builder::new(flate2::write::GzEncoder::new(
        f,
        flate2::Compression::default(),
    ));
    for (p, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        t.append_data(&mut h, p, data.as_slice()).unwrap();
    }
    t.into_inner().unwrap().finish().unwrap();
}

const EVIL_RULE: &str =
    "rule evil {\n  when peer.port == 80\n  then os.family = \"Evil\" confidence 0.99\n}\n";

/// Defect 2: hidden files inside a signed archive are outside the manifest; they must refuse
/// the archive (verify and install), and a store copy holding one is never reused.
#[test]
fn hidden_files_in_a_signed_archive_are_refused_and_never_installed() {
    let tmp = common::TempDir::new("pack-hidden");
    let d = &tmp.0;
    setup(d, &[]);
    let genuine = entries(&d.join("acme.tar.gz"));
    for hidden in ["acme-0.1.0/rules/.evil.rules", "acme-0.1.0/.dir/x.rules"] {
        let mut files = genuine.clone();
        files.push((hidden.to_string(), EVIL_RULE.as_bytes().to_vec()));
        write_tar_gz(&d.join("evil.tar.gz"), &files);
        let args = [
            "pack",
            "verify",
            "evil.tar.gz",
            "--trusted-keys",
            "trusted",
            "--require-signature",
        ];
        let out = fails(d, &args);
        assert!(
            out.contains(hidden) && out.contains("hidden") && !out.contains("signed by trusted"),
            "{out}"
        );
        let out = fails(
            d,
            &[
                "pack",
                "install",
                "evil.tar.gz",
                "--trusted-keys",
                "trusted",
            ],
        );
        assert!(out.contains(hidden), "{out}");
        assert!(!d.join("packs/acme").exists());
    }
    // A non-hidden file the manifest does not list is named too.
    let mut files = genuine.clone();
    files.push((
        "acme-0.1.0/rules/extra.rules".into(),
        EVIL_RULE.as_bytes().to_vec(),
    ));
    write_tar_gz(&d.join("extra.tar.gz"), &files);
    let out = fails(
        d,
        &[
            "pack",
            "install",
            "extra.tar.gz",
            "--trusted-keys",
            "trusted",
        ],
    );
    assert!(
        out.contains("rules/extra.rules: not in MANIFEST.sha256"),
        "{out}"
    );

    // The genuine archive installs; a hidden file later found in its store copy (left by an
    // older flowprint, or put there by hand) is not reused by a reinstall.
    ok(
        d,
        &[
            "pack",
            "install",
            "acme.tar.gz",
            "--trusted-keys",
            "trusted",
        ],
    );
    let copy = d
        .join("packs")
        .join(std::fs::read_link(d.join("packs/acme")).unwrap());
    std::fs::write(copy.join("rules/.evil.rules"), EVIL_RULE).unwrap();
    ok(
        d,
        &[
            "pack",
            "install",
            "acme.tar.gz",
            "--trusted-keys",
            "trusted",
        ],
    );
    let now = d
        .join("packs")
        .join(std::fs::read_link(d.join("packs/acme")).unwrap());
    assert_ne!(now, copy, "the tampered copy was reused");
    assert!(!now.join("rules/.evil.rules").exists());
    let mut found: Vec<PathBuf> = Vec::new();
    walk(&now, &mut found);
    let names: Vec<String> = found
        .iter()
        .map(|p| p.strip_prefix(&now).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        [
            ".installed.json",
            "MANIFEST.sha256",
            "MANIFEST.sig",
            "README.md",
            "pack.yaml",
            "rules/acme.rules",
            "tests/acme.yaml"
        ],
        "{names:?}"
    );
    // Installed from a directory holding hidden files: only the listed files are copied.
    std::fs::write(d.join("acme/rules/.evil.rules"), EVIL_RULE).unwrap();
    std::fs::create_dir_all(d.join("acme/.dir")).unwrap();
    std::fs::write(d.join("acme/.dir/x.rules"), EVIL_RULE).unwrap();
    ok(
        d,
        &[
            "pack",
            "install",
            "acme",
            "--trusted-keys",
            "trusted",
            "--packs-dir",
            "p2",
        ],
    );
    let copy = d
        .join("p2")
        .join(std::fs::read_link(d.join("p2/acme")).unwrap());
    assert!(!copy.join("rules/.evil.rules").exists() && !copy.join(".dir").exists());
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut v: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    v.sort_by_key(|e| e.path());
    for e in v {
        if e.file_type().unwrap().is_dir() {
            walk(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
    out.sort();
}

/// Defect 3: installing `acme` must not delete the installed pack `acme-extra`; old copies of
/// `acme` itself are still cleaned up.
#[test]
fn installing_a_pack_keeps_packs_whose_names_start_with_its_name() {
    let tmp = common::TempDir::new("pack-prefix");
    let d = &tmp.0;
    setup(d, &["acme-extra"]);
    ok(
        d,
        &[
            "pack",
            "build",
            "acme-extra",
            "--sign",
            "good.key",
            "-o",
            "extra.tar.gz",
        ],
    );
    ok(
        d,
        &[
            "pack",
            "install",
            "extra.tar.gz",
            "--trusted-keys",
            "trusted",
        ],
    );
    let extra_copy = d
        .join("packs")
        .join(std::fs::read_link(d.join("packs/acme-extra")).unwrap());
    for v in ["0.1.0", "0.2.0", "0.3.0", "0.4.0"] {
        let yaml = d.join("acme/pack.yaml");
        let t = std::fs::read_to_string(&yaml).unwrap();
        let t: String = t
            .lines()
            .map(|l| {
                if l.starts_with("version:") {
                    format!("version: {v}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&yaml, t).unwrap();
        ok(
            d,
            &[
                "pack",
                "build",
                "acme",
                "--sign",
                "good.key",
                "-o",
                "acme.tar.gz",
            ],
        );
        ok(
            d,
            &[
                "pack",
                "install",
                "acme.tar.gz",
                "--trusted-keys",
                "trusted",
            ],
        );
        assert!(
            extra_copy.join("rules/acme-extra.rules").is_file(),
            "installing acme {v} removed acme-extra's files"
        );
    }
    // acme: the current copy and the one it replaced; acme-extra: its own.
    let mut store: Vec<String> = std::fs::read_dir(d.join("packs/.store"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    store.sort();
    assert_eq!(store.len(), 3, "{store:?}");
    assert!(
        store.iter().any(|s| s.starts_with("acme-0.4.0-")),
        "{store:?}"
    );
    assert!(
        store.iter().any(|s| s.starts_with("acme-0.3.0-")),
        "{store:?}"
    );
    assert!(
        store.iter().any(|s| s.starts_with("acme-extra-0.1.0-")),
        "{store:?}"
    );
    // Both packs' rules are used.
    std::fs::write(
        d.join("flows.jsonl"),
        r#"{"start":"2024-05-01T10:00:00Z","src":"192.168.1.20","src_port":50000,"dst":"203.0.113.10","dst_port":443,"proto":"tcp","bytes":2000,"packets":10,"dst_name":"update.vendor.example"}
"#,
    )
    .unwrap();
    let out = ok(
        d,
        &[
            "analyze",
            "--packs-dir",
            "packs",
            "--format",
            "json",
            "flows.jsonl",
        ],
    );
    assert!(
        out.contains("\"acme/vendor-agent\"") && out.contains("\"acme-extra/vendor-agent\""),
        "{out}"
    );
}

/// Defect 3 on a running daemon: after `pack install acme`, the daemon reloads and still has
/// `acme-extra`'s rules.
#[test]
fn a_daemon_keeps_the_other_packs_rules_when_a_pack_is_installed() {
    use common::serve::{Serve, get_json, wait_until};
    let tmp = common::TempDir::new("pack-prefix-serve");
    let d = &tmp.0;
    setup(d, &["acme-extra"]);
    ok(
        d,
        &[
            "pack",
            "build",
            "acme-extra",
            "--sign",
            "good.key",
            "-o",
            "extra.tar.gz",
        ],
    );
    ok(
        d,
        &[
            "pack",
            "install",
            "extra.tar.gz",
            "--trusted-keys",
            "trusted",
        ],
    );
    let serve = Serve::start(d, &["--packs-dir", "packs"]);
    let has = |rules: &serde_json::Value, pack: &str| {
        rules["packs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == pack && p["rules"] == 1)
    };
    let rules = get_json(serve.api, "/rules");
    assert!(has(&rules, "acme-extra"), "{rules}");
    ok(
        d,
        &[
            "pack",
            "install",
            "acme.tar.gz",
            "--trusted-keys",
            "trusted",
        ],
    );
    wait_until("the daemon loads acme", Duration::from_secs(60), || {
        has(&get_json(serve.api, "/rules"), "acme")
    });
    let rules = get_json(serve.api, "/rules");
    assert!(has(&rules, "acme-extra"), "{rules}");
    serve.stop();
}

/// A gzip stream of one tar header (plus `tail` bytes): enough for a refusal at the header.
fn header_only(out: &Path, kind: tar::EntryType, name: &str, size: u64, tail: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_cksum();
    let f = std::fs::File::create(out).unwrap();
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    gz.write_all(h.as_bytes()).unwrap();
    gz.write_all(tail).unwrap();
    gz.finish().unwrap();
}

/// Defect 7: a GNU long-name or PAX header claiming 1 GiB is refused at the header, before the
/// name is read (the archive here does not even hold it: reading it would fail differently),
/// and before any signature check; the message is short.
#[test]
fn tar_bombs_are_refused_at_the_header() {
    let tmp = common::TempDir::new("pack-tarbomb");
    let d = &tmp.0;
    let name_of_1gib = vec![b'a'; 1 << 20];
    for (kind, what) in [
        (tar::EntryType::GNULongName, "GNU long-name header"),
        (tar::EntryType::XHeader, "PAX header"),
    ] {
        header_only(
            &d.join("bomb.tar.gz"),
            kind,
            "././@LongLink",
            1 << 30,
            &name_of_1gib,
        );
        for cmd in ["verify", "install"] {
            let started = Instant::now();
            let out = fails(
                d,
                &["pack", cmd, "bomb.tar.gz", "--allow-unsigned"]
                    [..if cmd == "verify" { 3 } else { 4 }],
            );
            assert!(
                out.contains(&format!(
                    "a {what} of 1073741824 bytes, more than the limit of 65536"
                )),
                "{out}"
            );
            assert!(out.len() < 1000, "{} bytes of output", out.len());
            assert!(started.elapsed() < Duration::from_secs(20));
        }
    }
    // A long name that fits the header limit but not the path limit is refused, cut when shown.
    let long = format!("acme-0.1.0/{}", "n".repeat(10_000));
    write_tar_gz(&d.join("long.tar.gz"), &[(long, b"x".to_vec())]);
    let out = fails(d, &["pack", "verify", "long.tar.gz"]);
    assert!(
        out.contains("a path of 10011 bytes, more than the limit of 4096"),
        "{out}"
    );
    assert!(out.contains("… (10011 bytes)") && out.len() < 1000, "{out}");
    // Too many entries.
    let many: Vec<(String, Vec<u8>)> = (0..10_001)
        .map(|i| (format!("acme-0.1.0/f{i}"), Vec::new()))
        .collect();
    write_tar_gz(&d.join("many.tar.gz"), &many);
    let out = fails(d, &["pack", "verify", "many.tar.gz"]);
    assert!(out.contains("more than 10000 entries"), "{out}");
    // A decompression bomb: 64 MiB of zeros in a file, about 64 KiB compressed.
    write_tar_gz(
        &d.join("zeros.tar.gz"),
        &[("acme-0.1.0/zeros".into(), vec![0u8; 64 << 20])],
    );
    let out = fails(d, &["pack", "verify", "zeros.tar.gz"]);
    assert!(out.contains("refused as a decompression bomb"), "{out}");
    // Nothing left behind in the scratch directories of the store.
    let out = fails(d, &["pack", "install", "zeros.tar.gz", "--allow-unsigned"]);
    assert!(out.contains("decompression bomb"), "{out}");
    let left: Vec<_> = std::fs::read_dir(d.join("packs/.store"))
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn deep_flow(n: usize) -> String {
    format!("{}1{}", "[".repeat(n), "]".repeat(n))
}

/// Defect 8: YAML nested 60,000-100,000 deep, in every YAML input, is refused at once with
/// where; an unsigned archive is refused for its signature before its YAML is parsed.
#[test]
fn deep_yaml_is_refused_quickly_everywhere() {
    let tmp = common::TempDir::new("pack-deep-yaml");
    let d = &tmp.0;
    let quick = |args: &[&str]| {
        let started = Instant::now();
        let o = fp(d, args);
        let out = text(&o);
        // 1: refused; 2: `serve`'s exit code for an unusable configuration.
        assert!(matches!(o.status.code(), Some(1 | 2)), "{args:?}: {out}");
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "{args:?} took {took:?}: {out}"
        );
        // `check` quotes the offending line in its diagnostic (cut to a bounded snippet by
        // the diagnostics, docs/limits.md); the other commands' messages are short.
        if args[0] != "check" {
            assert!(out.len() < 2000, "{args:?}: {} bytes of output", out.len());
        }
        out
    };
    // pack.yaml in an unsigned archive (a few hundred bytes compressed).
    let manifest = format!(
        "name: acme\nversion: 0.1.0\nlicense: MIT\ndepends: {}\n",
        deep_flow(60_000)
    );
    let pack = d.join("deep");
    std::fs::create_dir_all(pack.join("rules")).unwrap();
    std::fs::write(pack.join("pack.yaml"), &manifest).unwrap();
    std::fs::write(pack.join("rules/a.rules"), "").unwrap();
    let digests = Command::new("sh")
        .current_dir(&pack)
        .args(["-c", "sha256sum pack.yaml rules/a.rules > MANIFEST.sha256"])
        .status()
        .unwrap();
    assert!(digests.success());
    let files: Vec<(String, Vec<u8>)> = ["MANIFEST.sha256", "pack.yaml", "rules/a.rules"]
        .iter()
        .map(|f| {
            (
                format!("acme-0.1.0/{f}"),
                std::fs::read(pack.join(f)).unwrap(),
            )
        })
        .collect();
    write_tar_gz(&d.join("deep.tar.gz"), &files);
    assert!(std::fs::metadata(d.join("deep.tar.gz")).unwrap().len() < 2000);
    let out = quick(&["pack", "install", "deep.tar.gz"]);
    assert!(out.contains("not signed"), "{out}");
    let out = quick(&["pack", "install", "deep.tar.gz", "--allow-unsigned"]);
    assert!(
        out.contains("nested more than 64 levels deep, at line 4 column 73"),
        "{out}"
    );
    let out = quick(&["pack", "verify", "deep.tar.gz"]);
    assert!(out.contains("nested more than 64 levels deep"), "{out}");
    // Overrides, the serve configuration, and a pack fixture, 100,000 deep.
    let deep = format!("disable: {}\n", deep_flow(100_000));
    std::fs::write(d.join("overrides.yaml"), &deep).unwrap();
    let out = quick(&[
        "check",
        "--overrides",
        "overrides.yaml",
        "deep/rules/a.rules",
    ]);
    assert!(
        out.contains("nested more than 64 levels deep, at line 1 column 73"),
        "{out}"
    );
    std::fs::write(
        d.join("serve.yaml"),
        format!("rules:\n  paths: {}\n", deep_flow(100_000)),
    )
    .unwrap();
    let out = quick(&["serve", "--config", "serve.yaml", "--check"]);
    assert!(
        out.contains("nested more than 64 levels deep, at line 2 column"),
        "{out}"
    );
    ok(d, &["pack", "new", "fixtures"]);
    std::fs::write(
        d.join("fixtures/tests/deep.yaml"),
        format!("- name: deep\n  flows: {}\n", "- ".repeat(100_000) + "x"),
    )
    .unwrap();
    let out = quick(&["pack", "test", "fixtures"]);
    assert!(
        out.contains("tests/deep.yaml: nested more than 64 levels deep, at line 2"),
        "{out}"
    );
    // Aliases (billion laughs) are refused in every YAML input.
    let laughs = "disable: &a [x, x]\nmodify: {x: *a}\n";
    std::fs::write(d.join("laughs.yaml"), laughs).unwrap();
    let out = quick(&["check", "--overrides", "laughs.yaml", "deep/rules/a.rules"]);
    assert!(
        out.contains("an alias (`*name`) at line 2 column 13"),
        "{out}"
    );
}
