//! The inventory through the binary: what `analyze --db` and the daemon keep of evidence written
//! by rules they do not load, what `--prune-unknown-rules` removes, and that commands that only
//! read never create a database. Against SQLite always, and PostgreSQL when
//! `FLOWPRINT_TEST_POSTGRES` names a server (each test in its own schema; skipped without it,
//! as in tests/inventory.rs).

mod common;

use common::serve::{Serve, get_json, http, metric, wait_until};
use common::{TempDir, send, v5_now};
use std::path::Path;
use std::time::Duration;

use common::cli::{run as flowprint, text};

/// An inventory for one test: a SQLite file in `dir`, or a fresh PostgreSQL schema.
enum Db {
    Sqlite(String),
    /// The schema is dropped with it.
    Postgres(common::postgres::PgSchema),
}

impl Db {
    fn sqlite(dir: &Path) -> Db {
        Db::Sqlite(dir.join("inv.db").to_str().unwrap().to_string())
    }

    fn postgres(case: &str) -> Option<Db> {
        common::postgres::PgSchema::new(case).map(Db::Postgres)
    }

    fn spec(&self) -> &str {
        match self {
            Db::Sqlite(p) => p,
            Db::Postgres(pg) => &pg.spec,
        }
    }

    /// Evidence rows of `rule`: (host, flows, first_seen, last_seen), by host.
    fn evidence(&self, rule: &str) -> Vec<(String, i64, i64, i64)> {
        let sql = "SELECT host, flows, first_seen, last_seen FROM evidence WHERE rule = $1 \
                   ORDER BY host";
        match self {
            Db::Sqlite(p) => {
                let c = rusqlite::Connection::open_with_flags(
                    p,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .unwrap();
                let mut st = c.prepare(&sql.replace('$', "?")).unwrap();
                st.query_map([rule], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            }
            Db::Postgres(pg) => ::postgres::Client::connect(&pg.spec, ::postgres::NoTls)
                .unwrap()
                .query(sql, &[&rule])
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect(),
        }
    }
}

const HOSTS: u8 = 20;

/// Two packs in `dir/packs`: `alpha` (a rule on port 4444) and `beta` (a rule on port 5555),
/// each concluding below the strength that opens a new epoch; and flows in which each of
/// `HOSTS` hosts matches both.
fn packs_and_flows(dir: &Path) -> String {
    for (pack, rule, port, then) in [
        ("alpha", "a", 4444, "os.family = \"Linux\" confidence 0.5"),
        ("beta", "b", 5555, "software = \"Beta\" confidence 0.5"),
    ] {
        let d = dir.join("packs").join(pack);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join(format!("{rule}.rules")),
            format!("rule {rule} {{\n    when peer.port == {port}\n    then {then}\n}}\n"),
        )
        .unwrap();
    }
    let mut flows = String::new();
    for h in 1..=HOSTS {
        for (i, port) in [4444, 5555, 5555].iter().enumerate() {
            flows.push_str(&format!(
                "{{\"start\": \"2024-05-01T10:00:{:02}Z\", \"src\": \"10.1.0.{h}\", \"src_port\": 40000, \
                 \"dst\": \"203.0.113.9\", \"dst_port\": {port}, \"proto\": \"tcp\", \"bytes\": 100, \
                 \"packets\": 1}}\n",
                h as usize + i
            ));
        }
    }
    let path = dir.join("flows.jsonl");
    std::fs::write(&path, flows).unwrap();
    path.to_str().unwrap().to_string()
}

fn pack(dir: &Path, name: &str) -> String {
    dir.join("packs").join(name).to_str().unwrap().to_string()
}

/// `analyze --db` without the rules that wrote part of the inventory keeps their evidence as it
/// is (not scored, but shown as kept); `--prune-unknown-rules` removes it and says how much.
fn analyze_keeps_unknown_rules_evidence(db: &Db) {
    let tmp = TempDir::new("inv-cli-keep");
    let dir = &tmp.0;
    let flows = packs_and_flows(dir);
    let (alpha, beta) = (pack(dir, "alpha"), pack(dir, "beta"));
    let spec = db.spec();
    let both = [
        "analyze",
        "--no-default-rules",
        "--rules",
        &alpha,
        "--rules",
        &beta,
    ];
    let out = flowprint(dir, &[&both[..], &["--db", spec, &flows]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let b_before = db.evidence("beta/b");
    assert_eq!(b_before.len(), usize::from(HOSTS), "{b_before:?}");
    assert!(b_before.iter().all(|(_, n, _, _)| *n == 2), "{b_before:?}");
    assert_eq!(db.evidence("alpha/a").len(), usize::from(HOSTS));

    // Only alpha: beta's rows stay exactly as they were, and the run says so.
    let only_a = [
        "analyze",
        "--no-default-rules",
        "--rules",
        &alpha,
        "--db",
        spec,
    ];
    let out = flowprint(dir, &[&only_a[..], &["--format", "json", &flows]].concat());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "20 stored evidence row(s) of 1 rule(s) not loaded (beta/b) kept, not scored"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("--prune-unknown-rules"), "{stderr}");
    assert_eq!(db.evidence("beta/b"), b_before, "beta's evidence changed");
    let a = db.evidence("alpha/a");
    assert!(
        a.iter().all(|(_, n, _, _)| *n == 2),
        "alpha accumulates: {a:?}"
    );
    let host: serde_json::Value = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .find(|v: &serde_json::Value| v["host"] == "10.1.0.1")
        .expect("host 10.1.0.1");
    assert_eq!(host["unscored"][0]["rule"], "beta/b", "{host}");
    assert_eq!(host["unscored"][0]["flows"], 2, "{host}");
    assert!(host["software"].as_array().unwrap().is_empty(), "{host}");

    // beta loaded again: its kept evidence counts again, and accumulates.
    let out = flowprint(dir, &[&both[..], &["--db", spec, &flows]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let b = db.evidence("beta/b");
    assert_eq!(b.len(), usize::from(HOSTS));
    assert!(b.iter().all(|(_, n, _, _)| *n == 4), "{b:?}");

    // Pruning, on request only, without inputs.
    let out = flowprint(dir, &[&only_a[..], &["--prune-unknown-rules"]].concat());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("pruned: 20 stored evidence row(s) of 1 rule(s) not loaded removed"),
        "{stderr}"
    );
    assert!(db.evidence("beta/b").is_empty());
    assert_eq!(db.evidence("alpha/a").len(), usize::from(HOSTS));
}

#[test]
fn analyze_keeps_unknown_rules_evidence_sqlite() {
    let tmp = TempDir::new("inv-cli-sqlite");
    analyze_keeps_unknown_rules_evidence(&Db::sqlite(&tmp.0));
}

#[test]
fn analyze_keeps_unknown_rules_evidence_postgres() {
    if let Some(db) = Db::postgres("keep") {
        analyze_keeps_unknown_rules_evidence(&db);
    }
}

/// The daemon neither: booted without a pack that wrote evidence, or losing a pack while it
/// runs, it keeps that pack's evidence and writes it back with the hosts it updates.
#[test]
fn serve_keeps_evidence_of_a_removed_pack() {
    let tmp = TempDir::new("inv-cli-serve");
    let dir = &tmp.0;
    let flows = packs_and_flows(dir);
    let db = Db::sqlite(dir);
    let packs = dir.join("packs").to_str().unwrap().to_string();
    let args = [
        "--no-default-rules",
        "--packs-dir",
        &packs,
        "--db",
        db.spec(),
    ];
    let out = flowprint(dir, &[&["analyze"][..], &args, &[&flows]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let b_before = db.evidence("beta/b");
    assert_eq!(b_before.len(), usize::from(HOSTS));

    // Flows on alpha's port from every host, so that every host is written again.
    let alpha_flows = |serve: &Serve, seq: u32| {
        let f: Vec<([u8; 4], [u8; 4], u16)> = (1..=HOSTS)
            .map(|h| ([10, 1, 0, h], [203, 0, 113, 9], 4444))
            .collect();
        let before = metric(
            &http(serve.api, "GET", "/metrics", None, b"").1,
            "flowprint_flows_evaluated_total",
        );
        send("127.0.0.1", serve.udp.port(), &[v5_now(seq, &f)]);
        wait_until("flows evaluated", Duration::from_secs(30), || {
            let (_, m) = http(serve.api, "GET", "/metrics", None, b"");
            metric(&m, "flowprint_flows_evaluated_total") >= before + u64::from(HOSTS)
        });
    };

    // Running with both packs; beta's pack is removed (a reload), flows arrive.
    let serve = Serve::start(dir, &args);
    alpha_flows(&serve, 1);
    std::fs::remove_dir_all(dir.join("packs/beta")).unwrap();
    wait_until("the reload without beta", Duration::from_secs(30), || {
        get_json(serve.api, "/rules")["rules"] == 1
    });
    alpha_flows(&serve, 2);
    let log = serve.stop();
    assert_eq!(db.evidence("beta/b"), b_before, "after a reload:\n{log}");
    assert_eq!(db.evidence("alpha/a").len(), usize::from(HOSTS));

    // Booting without beta: restored, kept, written back, and shown on the host's page.
    let serve = Serve::start(dir, &args);
    alpha_flows(&serve, 3);
    let (status, page) = http(serve.api, "GET", "/ui/hosts/10.1.0.1", None, b"");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Kept, not scored"), "{page}");
    assert!(page.contains("<td>beta/b</td>"), "{page}");
    let log = serve.stop();
    assert_eq!(db.evidence("beta/b"), b_before, "after a restart:\n{log}");
    assert!(
        log.contains("20 stored evidence row(s) of 1 rule(s) not loaded (beta/b) kept"),
        "{log}"
    );
    let a = db.evidence("alpha/a");
    assert!(a.iter().all(|(_, n, _, _)| *n == 4), "{a:?}");
}

/// `hosts` and `dns lookup` only read: a mistyped path is an error and creates nothing.
#[test]
fn read_only_commands_never_create_a_database() {
    let tmp = TempDir::new("inv-cli-ro");
    let dir = &tmp.0;
    let typo = dir.join("typo.db");
    let typo = typo.to_str().unwrap();
    for args in [
        &["hosts", "--db", typo][..],
        &["dns", "lookup", "10.0.0.1", "--db", typo][..],
    ] {
        let out = flowprint(dir, args);
        let stderr = text(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.contains("no such inventory"), "{args:?}: {stderr}");
        let left: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
        assert!(left.is_empty(), "{args:?} created {left:?}");
    }
    // An existing inventory is read.
    let db = Db::sqlite(dir);
    let flows = packs_and_flows(dir);
    let out = flowprint(
        dir,
        &[
            "analyze",
            "--no-default-rules",
            "--rules",
            &pack(dir, "alpha"),
            "--db",
            db.spec(),
            &flows,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = flowprint(dir, &["hosts", "--db", db.spec(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), usize::from(HOSTS));
    let out = flowprint(dir, &["dns", "lookup", "10.0.0.1", "--db", db.spec()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
