//! `flowprint pack` end to end through the binary: new → test → lint → build → sign → verify →
//! install, and every refusal (tampered file, wrong key, missing dependency, incompatible engine,
//! path escape) with nothing half-installed. Overrides and cross-pack lists too.

mod common;

use std::path::Path;
use std::process::Command;

use common::cli::{both as text, fails, fp, ok};

fn set_version(pack: &Path, v: &str) {
    let p = pack.join("pack.yaml");
    let t = std::fs::read_to_string(&p).unwrap();
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
    std::fs::write(p, t).unwrap();
}

#[test]
fn new_test_lint_build_sign_verify_install_round_trip() {
    let tmp = common::TempDir::new("pack-rt");
    let d = &tmp.0;
    ok(d, &["pack", "new", "acme"]);
    let out = ok(d, &["pack", "test", "acme"]);
    assert!(out.contains("2 passed, 0 failed"), "{out}");
    let out = ok(d, &["pack", "lint", "acme"]);
    assert!(out.contains("0 error(s), 0 warning(s)"), "{out}");
    ok(d, &["pack", "keygen", "acme.key"]);
    std::fs::create_dir_all(d.join("trusted")).unwrap();
    std::fs::copy(d.join("acme.key.pub"), d.join("trusted/acme.pub")).unwrap();
    let out = ok(
        d,
        &[
            "pack",
            "build",
            "acme",
            "--sign",
            "acme.key",
            "-o",
            "acme.tar.gz",
        ],
    );
    assert!(out.contains("signed"), "{out}");
    let out = ok(
        d,
        &[
            "pack",
            "verify",
            "acme.tar.gz",
            "--trusted-keys",
            "trusted",
            "--require-signature",
        ],
    );
    assert!(
        out.contains("4 files match") && out.contains("signed by trusted key"),
        "{out}"
    );
    let out = ok(
        d,
        &[
            "pack",
            "install",
            "acme.tar.gz",
            "--trusted-keys",
            "trusted",
        ],
    );
    assert!(out.contains("installed acme 0.1.0"), "{out}");
    let list = ok(d, &["pack", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("acme") && l.contains("0.1.0")),
        "{list}"
    );
    // The installed pack is used by analyze --packs-dir.
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
    assert!(out.contains("\"acme/vendor-agent\""), "{out}");
    // A new version replaces it; the link switches, the store keeps the previous version.
    set_version(&d.join("acme"), "0.2.0");
    ok(
        d,
        &[
            "pack",
            "build",
            "acme",
            "--sign",
            "acme.key",
            "-o",
            "acme2.tar.gz",
        ],
    );
    ok(
        d,
        &[
            "pack",
            "install",
            "acme2.tar.gz",
            "--trusted-keys",
            "trusted",
        ],
    );
    let list = ok(d, &["pack", "list", "--json"]);
    assert!(
        list.contains("\"name\":\"acme\",\"version\":\"0.2.0\""),
        "{list}"
    );
    let link = std::fs::read_link(d.join("packs/acme")).unwrap();
    assert!(link.to_string_lossy().contains("acme-0.2.0"), "{link:?}");
}

/// Writes MANIFEST.sha256 with sha256sum, as a pack made by other tools would be, unsigned.
fn rehash_by_hand(pack: &Path) {
    let ok = Command::new("sh")
        .current_dir(pack)
        .args([
            "-c",
            "rm -f MANIFEST.sig; find . -type f ! -name 'MANIFEST.*' ! -name '.*' | sed 's|^\\./||' | LC_ALL=C sort | xargs sha256sum > MANIFEST.sha256",
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn refusals_leave_nothing_installed() {
    let tmp = common::TempDir::new("pack-refuse");
    let d = &tmp.0;
    ok(d, &["pack", "new", "acme"]);
    ok(d, &["pack", "keygen", "good.key"]);
    ok(d, &["pack", "keygen", "evil.key"]);
    std::fs::create_dir_all(d.join("trusted")).unwrap();
    std::fs::copy(d.join("good.key.pub"), d.join("trusted/good.pub")).unwrap();
    let installed = |d: &Path| d.join("packs/acme").exists();

    // Signed by a key nobody trusts.
    ok(
        d,
        &[
            "pack",
            "build",
            "acme",
            "--sign",
            "evil.key",
            "-o",
            "evil.tar.gz",
        ],
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
    assert!(out.contains("not among the trusted keys"), "{out}");
    assert!(!installed(d));
    // Unsigned: refused unless explicitly allowed.
    ok(d, &["pack", "build", "acme", "-o", "unsigned.tar.gz"]);
    let out = fails(
        d,
        &[
            "pack",
            "install",
            "unsigned.tar.gz",
            "--trusted-keys",
            "trusted",
        ],
    );
    assert!(out.contains("not signed"), "{out}");
    assert!(!installed(d));

    // Tampered after signing: the file is named, by verify and by install.
    ok(d, &["pack", "build", "acme", "--sign", "good.key"]);
    std::fs::write(
        d.join("acme/rules/acme.rules"),
        std::fs::read_to_string(d.join("acme/rules/acme.rules"))
            .unwrap()
            .replace("0.7", "0.99"),
    )
    .unwrap();
    let out = fails(d, &["pack", "verify", "acme", "--trusted-keys", "trusted"]);
    assert!(out.contains("rules/acme.rules: modified"), "{out}");
    let out = fails(d, &["pack", "install", "acme", "--trusted-keys", "trusted"]);
    assert!(out.contains("rules/acme.rules: modified"), "{out}");
    assert!(!installed(d));
    // A file added after the build.
    ok(d, &["pack", "build", "acme", "--sign", "good.key"]);
    std::fs::write(d.join("acme/rules/extra.rules"), "# sneaked in\n").unwrap();
    let out = fails(d, &["pack", "verify", "acme", "--trusted-keys", "trusted"]);
    assert!(
        out.contains("rules/extra.rules: not in MANIFEST.sha256"),
        "{out}"
    );
    std::fs::remove_file(d.join("acme/rules/extra.rules")).unwrap();

    // A missing dependency: built where `base-pack` is installed, installed where it is not.
    ok(d, &["pack", "new", "base-pack"]);
    ok(
        d,
        &[
            "pack",
            "build",
            "base-pack",
            "--sign",
            "good.key",
            "-o",
            "base.tar.gz",
        ],
    );
    ok(
        d,
        &[
            "pack",
            "install",
            "base.tar.gz",
            "--packs-dir",
            "elsewhere",
            "--trusted-keys",
            "trusted",
        ],
    );
    let yaml = d.join("acme/pack.yaml");
    let orig = std::fs::read_to_string(&yaml).unwrap();
    std::fs::write(
        &yaml,
        orig.replace("depends: {}", "depends:\n  base-pack: \">=0.1\""),
    )
    .unwrap();
    ok(
        d,
        &[
            "pack",
            "build",
            "acme",
            "--sign",
            "good.key",
            "--packs-dir",
            "elsewhere",
        ],
    );
    let out = fails(d, &["pack", "install", "acme", "--trusted-keys", "trusted"]);
    assert!(out.contains("needs pack `base-pack`"), "{out}");
    assert!(!installed(d));
    // A dependency on a bundled pack in a version that does not exist: `pack build` refuses
    // it, and so does `pack install` when such a pack was made elsewhere (digests written by
    // hand with sha256sum, unsigned).
    std::fs::write(
        &yaml,
        orig.replace("depends: {}", "depends:\n  os-core: \">=99\""),
    )
    .unwrap();
    let out = fails(d, &["pack", "build", "acme", "--sign", "good.key"]);
    assert!(out.contains("FP0024") && out.contains("os-core"), "{out}");
    rehash_by_hand(&d.join("acme"));
    let out = fails(d, &["pack", "install", "acme", "--allow-unsigned"]);
    assert!(out.contains("needs pack `os-core` >=99"), "{out}");
    assert!(!installed(d));
    // Made for another flowprint.
    let engine: Vec<String> = orig
        .lines()
        .map(|l| {
            if l.starts_with("flowprint:") {
                "flowprint: \">=99\"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&yaml, engine.join("\n") + "\n").unwrap();
    rehash_by_hand(&d.join("acme"));
    let out = fails(d, &["pack", "install", "acme", "--allow-unsigned"]);
    assert!(out.contains("needs flowprint >=99"), "{out}");
    assert!(!installed(d));
    std::fs::write(&yaml, &orig).unwrap();

    // An archive whose entry climbs out of the target directory.
    let evil = d.join("escape.tar.gz");
    {
        let f = std::fs::File::create(&evil).unwrap();
        let gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
        let mut t = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        let name = b"acme-0.1.0/../../../escaped\0";
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        t.append(&h, &b"boom"[..]).unwrap();
        t.into_inner().unwrap().finish().unwrap();
    }
    let out = fails(d, &["pack", "install", "escape.tar.gz", "--allow-unsigned"]);
    assert!(out.contains("escapes the target directory"), "{out}");
    assert!(!installed(d));
    assert!(!d.join("escaped").exists() && !d.join("packs/escaped").exists());
    // Nothing half-installed anywhere in the store either.
    let leftovers: Vec<_> = std::fs::read_dir(d.join("packs/.store"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn lint_reports_missing_references_untested_rules_and_overlaps() {
    let tmp = common::TempDir::new("pack-lint");
    let d = &tmp.0;
    ok(d, &["pack", "new", "acme"]);
    let rules = d.join("acme/rules/acme.rules");
    let mut t = std::fs::read_to_string(&rules).unwrap();
    t.push_str(
        "\nrule bare {\n    when peer.port == 7 and peer.domain in vendor_update\n    then software = \"X\" confidence 0.5\n}\n\
         rule twin {\n    title \"t\"\n    references [\"r\"]\n    when peer.port == 7 and peer.domain in vendor_update\n    then software = \"Y\" confidence 0.5\n}\n",
    );
    std::fs::write(&rules, t).unwrap();
    let out = fp(d, &["pack", "lint", "acme"]);
    let out = text(&out);
    assert!(out.contains("acme/bare: no `references`"), "{out}");
    assert!(out.contains("acme/bare: no `title`"), "{out}");
    assert!(
        out.contains("acme/bare: no fixture case requires it to fire"),
        "{out}"
    );
    assert!(out.contains("never fired in the pack's own tests"), "{out}");
    assert!(out.contains("same condition as acme/twin"), "{out}");
    // Untested rules are listed, but only failing cases fail the run.
    let out = ok(d, &["pack", "test", "acme"]);
    assert!(out.contains("untested  acme/bare"), "{out}");
    // A failing case fails `pack test` (exit 1) and `pack build`.
    let fx = d.join("acme/tests/acme.yaml");
    let f = std::fs::read_to_string(&fx).unwrap();
    std::fs::write(
        &fx,
        f.replace("software: VendorAgent", "software: SomethingElse"),
    )
    .unwrap();
    let out = fails(d, &["pack", "test", "acme"]);
    assert!(
        out.contains("FAIL  tests/acme.yaml / the agent's update check"),
        "{out}"
    );
    let o = fp(d, &["pack", "build", "acme"]);
    assert!(
        !o.status.success() && text(&o).contains("fixture case(s) failed"),
        "{}",
        text(&o)
    );
}

#[test]
fn overrides_disable_and_modify_rules_and_packs_use_each_others_lists() {
    let tmp = common::TempDir::new("pack-over");
    let d = &tmp.0;
    // A pack that uses os-core's list by its qualified name, and says so in pack.yaml.
    ok(d, &["pack", "new", "extra"]);
    std::fs::write(
        d.join("extra/rules/extra.rules"),
        "rule android-probe-seen {\n    title \"Android connectivity probe, seen by another pack\"\n    references [\"https://source.android.com/\"]\n    when peer.domain in os-core/android_conncheck and peer.port == 80\n    then device = \"phone\" confidence 0.4\n}\n",
    )
    .unwrap();
    std::fs::write(d.join("extra/tests/extra.yaml"), "- name: probe\n  flows:\n    - {start: \"2024-05-01T07:00:00Z\", src: 192.168.3.16, src_port: 41200, dst: 142.250.185.99, dst_port: 80, proto: tcp, bytes: 380, packets: 5, dst_name: connectivitycheck.gstatic.com}\n  expect:\n    host: 192.168.3.16\n    rules: [android-probe-seen]\n").unwrap();
    // Without declaring the dependency: FP0024 is not raised, but the pack compiles only with
    // os-core loaded; declare it as packs should.
    let yaml = d.join("extra/pack.yaml");
    let y = std::fs::read_to_string(&yaml).unwrap();
    std::fs::write(
        &yaml,
        y.replace("depends: {}", "depends:\n  os-core: \">=0.2\""),
    )
    .unwrap();
    let out = ok(d, &["pack", "test", "extra"]);
    assert!(out.contains("1 passed, 0 failed"), "{out}");
    let out = ok(d, &["check", "extra"]);
    assert!(out.contains("0 error(s)"), "{out}");

    std::fs::write(
        d.join("flows.jsonl"),
        r#"{"start":"2024-05-01T07:00:00Z","src":"192.168.3.16","src_port":41200,"dst":"142.250.185.99","dst_port":80,"proto":"tcp","bytes":380,"packets":5,"dst_name":"connectivitycheck.gstatic.com"}
"#,
    )
    .unwrap();
    let plain = ok(d, &["analyze", "--format", "json", "flows.jsonl"]);
    assert!(
        plain.contains("os-core/android-connectivity-check"),
        "{plain}"
    );
    std::fs::write(
        d.join("overrides.yaml"),
        "disable:\n  - os-core/android-connectivity-check\n  - os-core/no-such-rule\nmodify:\n  extra/android-probe-seen:\n    confidence: 0.9\n",
    )
    .unwrap();
    let o = fp(
        d,
        &[
            "analyze",
            "--rules",
            "extra",
            "--overrides",
            "overrides.yaml",
            "--format",
            "json",
            "flows.jsonl",
        ],
    );
    let out = text(&o);
    assert!(!out.contains("os-core/android-connectivity-check"), "{out}");
    assert!(
        out.contains("FP0023") && out.contains("os-core/no-such-rule"),
        "{out}"
    );
    assert!(
        out.contains("\"rule\":\"extra/android-probe-seen\""),
        "{out}"
    );
    assert!(out.contains("\"confidence\":0.9"), "{out}");
    // A broken overrides file is an error that changes nothing.
    std::fs::write(d.join("bad.yaml"), "disable: os-core/x\n").unwrap();
    let o = fp(d, &["analyze", "--overrides", "bad.yaml", "flows.jsonl"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("FP0022"), "{}", text(&o));
}

/// A fixture whose verdict rests on a learned name (a TLS record names the server, a later
/// plain record to the same address is matched by `peer.domain`) passes `pack test`, and the
/// same flows through the daemon's own flow path (dispatcher, workers, shards) give the same
/// host the same evidence: fixtures and the daemon apply flows through one scanner.
#[test]
fn a_fixture_that_rests_on_a_learned_name_behaves_as_the_daemon() {
    use flowprint::flow::ingest::{InputFormat, read_flows};
    use std::sync::{Arc, RwLock};
    let tmp = common::TempDir::new("pack-learned");
    let d = &tmp.0;
    ok(d, &["pack", "new", "learn"]);
    std::fs::write(
        d.join("learn/rules/learn.rules"),
        "rule agent-update-check {\n    title \"The agent's update check, after its server was named once\"\n    references [\"https://example.com/agent\"]\n    when peer.domain == \"updates.agent.example\" and peer.port == 443\n    then software = \"Agent\" confidence 0.6\n}\n",
    )
    .unwrap();
    let flows = [
        // 10.9.0.1 names the server in its TLS record.
        r#"{"start": "2024-05-01T07:00:00Z", "src": "10.9.0.1", "src_port": 41200, "dst": "198.51.100.77", "dst_port": 443, "proto": "tcp", "bytes": 900, "packets": 7, "dst_name": "updates.agent.example"}"#,
        // 10.9.0.2 talks to the same address without a name: only the learned name matches.
        r#"{"start": "2024-05-01T07:01:00Z", "src": "10.9.0.2", "src_port": 41201, "dst": "198.51.100.77", "dst_port": 443, "proto": "tcp", "bytes": 900, "packets": 7}"#,
    ];
    let fixture = format!(
        "- name: learned name\n  flows:\n{}  expect:\n    host: 10.9.0.2\n    rules: [agent-update-check]\n    software: Agent\n",
        flows
            .iter()
            .map(|f| format!("    - {f}\n"))
            .collect::<String>()
    );
    std::fs::write(d.join("learn/tests/learn.yaml"), fixture).unwrap();
    let out = ok(d, &["pack", "test", "learn"]);
    assert!(out.contains("1 passed, 0 failed"), "{out}");

    // The daemon's path, in process: the pack loaded by a rule store, the flows pushed to the
    // dispatcher of three workers.
    let store = Arc::new(
        flowprint::store::RuleStore::open(flowprint::store::StoreConfig {
            sources: flowprint::sources::Selection {
                paths: vec![d.join("learn")],
                ..Default::default()
            },
            state_dir: None,
        })
        .unwrap(),
    );
    let counters = Arc::new(flowprint::serve::pipeline::Counters::default());
    let (mut dispatcher, workers) = flowprint::serve::pipeline::start(
        store,
        (0..3).map(|_| flowprint::infer::HostTable::new()).collect(),
        Arc::new(flowprint::eval::LocalNets::default()),
        Arc::new(RwLock::new(flowprint::dns::DnsMap::new())),
        counters.clone(),
        64,
    )
    .unwrap();
    // One record at a time, as two datagrams a minute apart arrive: the two hosts may be in
    // different shards, and a name learned by one shard's worker reaches the others when the
    // batch that carried it is done (within a shard, from the next flow on).
    for (i, line) in flows.iter().enumerate() {
        read_flows(
            line.as_bytes(),
            "flows",
            InputFormat::Jsonl,
            &mut |f| dispatcher.push(f),
            &mut |e| panic!("{e}"),
        )
        .unwrap();
        dispatcher.flush();
        let t = std::time::Instant::now();
        while counters.evaluated.load(std::sync::atomic::Ordering::SeqCst) < i as u64 + 1 {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(30),
                "not evaluated"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    drop(dispatcher);
    let shards = workers.shards.clone();
    workers.join();
    let mut evidence = Vec::new();
    for s in &shards {
        let g = s.lock();
        for h in g.hosts().summaries(&g.snapshot.ruleset) {
            if h.host == "10.9.0.2" {
                evidence.extend(h.evidence.iter().map(|e| e.rule.clone()));
                assert_eq!(h.software[0].name, "Agent");
            }
        }
    }
    assert_eq!(evidence, vec!["learn/agent-update-check".to_string()]);
}
