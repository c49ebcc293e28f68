//! The `flowprint` binary as a user runs it: exit codes, outputs, diagnostics.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flowprint"));
    c.current_dir(std::env::temp_dir());
    c
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example_flows() -> String {
    root()
        .join("examples/flows/home-network.jsonl")
        .display()
        .to_string()
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run flowprint")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn temp_file(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flowprint-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

#[test]
fn analyze_on_bundled_rules_prints_a_table_of_hosts() {
    let out = run(&["analyze", &example_flows()]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("HOST"), "{stdout}");
    let line = |host: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(host))
            .unwrap_or_else(|| panic!("{host} missing:\n{stdout}"))
            .to_string()
    };
    assert!(line("192.168.1.10 ").contains("Windows"), "{stdout}");
    assert!(line("192.168.1.40 ").contains("Android"), "{stdout}");
    assert!(
        line("192.168.1.50 ").contains("Linux") || line("192.168.1.50 ").contains("Ubuntu"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("8.8.8.8"),
        "non-local addresses are not hosts:\n{stdout}"
    );
    assert!(
        text(&out.stderr).contains("21 flows read"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn analyze_json_has_one_object_per_host_with_the_documented_fields() {
    let out = run(&["analyze", "--format", "json", &example_flows()]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7);
    for h in &lines {
        for key in [
            "host",
            "os",
            "software",
            "device",
            "alternatives",
            "evidence",
            "flows",
        ] {
            assert!(h.get(key).is_some(), "{key} missing in {h}");
        }
    }
    let win = lines.iter().find(|h| h["host"] == "192.168.1.10").unwrap();
    assert_eq!(win["os"]["family"], "Windows");
    let c = win["os"]["confidence"].as_f64().unwrap();
    assert!(c > 0.5 && c <= 1.0, "{c}");
    let ev = win["evidence"].as_array().unwrap();
    assert!(!ev.is_empty());
    // Evidence comes from the bundled packs (os-core for the OS; software-core sees Firefox's
    // captive-portal probe), each with at least one flow.
    let bundled: Vec<&str> = flowprint::embedded::PACK_MANIFESTS
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert!(
        ev.iter()
            .any(|e| e["rule"].as_str().unwrap().starts_with("os-core/"))
    );
    assert!(ev.iter().all(|e| {
        bundled
            .iter()
            .any(|p| e["rule"].as_str().unwrap().starts_with(&format!("{p}/")))
            && e["flows"].as_u64().unwrap() >= 1
    }));
    assert!(
        ev[0]["first_seen"]
            .as_str()
            .unwrap()
            .starts_with("2024-05-01T")
    );
}

#[test]
fn a_custom_rule_fires_and_is_explained() {
    let rules = root().join("examples/rules/my-rules.rules");
    let out = run(&[
        "analyze",
        "--explain",
        "--rules",
        rules.to_str().unwrap(),
        &example_flows(),
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("my-rules/firefox-users"), "{stdout}");
    assert!(
        stdout
            .contains("e.g. tcp 192.168.1.10:50130 -> 34.107.221.82:80 (detectportal.firefox.com)"),
        "{stdout}"
    );
}

#[test]
fn a_typo_is_reported_with_location_code_and_hint() {
    let p = temp_file(
        "typo.rules",
        "rule t {\n    when dst.prot == 80\n    then os.family = \"Windows\" confidence 0.9\n}\n",
    );
    let out = run(&["check", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("error[FP0002]: unknown field `dst.prot`"),
        "{err}"
    );
    assert!(err.contains("typo.rules:2:10"), "{err}");
    assert!(err.contains("did you mean `peer.port`?"), "{err}");
    assert!(err.contains("^^^^^^^^"), "{err}");

    let out = run(&["check", "--format", "json", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let d: serde_json::Value =
        serde_json::from_str(text(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(d["code"], "FP0002");
    assert_eq!(d["severity"], "error");
    assert_eq!(d["line"], 2);
    assert_eq!(d["column"], 10);
    assert!(d["file"].as_str().unwrap().ends_with("typo.rules"));
    assert!(d["hint"].as_str().unwrap().contains("peer.port"));
}

#[test]
fn all_errors_of_all_files_are_shown_and_good_rules_still_run() {
    let dir = std::env::temp_dir().join(format!("flowprint-pack-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("a.rules"),
        "rule bad-a {\n when peer.prot == 1\n then device = \"x\" confidence 0.5\n}\n",
    )
    .unwrap();
    std::fs::write(dir.join("b.rules"), "rule bad-b {\n when peer.port == 1\n then device = \"x\" confidence 7\n}\nrule good {\n when peer.domain == \"detectportal.firefox.com\"\n then software = \"Firefox\" confidence 0.5\n}\n").unwrap();
    let out = run(&["check", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("a.rules:2:7") && err.contains("b.rules:3:31"),
        "{err}"
    );
    assert!(err.contains("1 rule(s) compiled, 2 error(s)"), "{err}");
    let out = run(&[
        "analyze",
        "--no-default-rules",
        "--rules",
        dir.to_str().unwrap(),
        "--format",
        "json",
        &example_flows(),
    ]);
    assert_eq!(out.status.code(), Some(1), "rule errors give exit 1");
    assert!(
        text(&out.stdout).contains("flowprint-pack"),
        "the good rule still ran: {}",
        text(&out.stdout)
    );
}

#[test]
fn check_without_paths_checks_the_bundled_packs() {
    let out = run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("0 error(s)"));
}

#[test]
fn unreadable_input_exits_2_and_bad_usage_exits_2() {
    let out = run(&["analyze", "/nonexistent/flows.csv"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/flows.csv"));
    let out = run(&["analyze", "--format", "yaml", &example_flows()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn malformed_lines_are_reported_counted_and_skipped() {
    let good = std::fs::read_to_string(example_flows()).unwrap();
    let mut lines: Vec<&str> = good.lines().collect();
    lines.insert(
        3,
        "{\"src\": \"192.168.1.10\", \"dst\": \"not an address\"}",
    );
    lines.insert(5, "garbage");
    let p = temp_file("bad.jsonl", &(lines.join("\n") + "\n"));
    let out = run(&["analyze", "--format", "json", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("bad.jsonl:4:"), "{err}");
    assert!(err.contains("bad.jsonl:6:"), "{err}");
    assert!(
        err.contains("21 flows read") && err.contains("2 malformed line(s) skipped"),
        "{err}"
    );
}

#[test]
fn reads_stdin_and_local_nets_choose_the_hosts() {
    let mut child = bin()
        .args([
            "analyze",
            "--format",
            "json",
            "--local-net",
            "192.168.1.40/32",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(example_flows()).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let hosts: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0]["host"], "192.168.1.40");
    assert_eq!(hosts[0]["os"]["family"], "Android");
}

#[test]
fn reads_real_nfdump_csv_exports() {
    let dir = root().join("../shared/corpus/exports");
    if !dir.is_dir() {
        eprintln!("skipped: {} is absent", dir.display());
        return;
    }
    let file = dir.join("iphone.nfv9.nfdump.csv");
    let out = run(&["analyze", "--format", "json", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("0 malformed line(s)"), "{err}");
    let hosts: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let iphone = hosts
        .iter()
        .find(|h| h["host"] == "192.168.2.17")
        .expect("the iPhone is a host");
    assert!(iphone["flows"].as_u64().unwrap() > 0);
}

#[test]
fn bench_prints_a_rate() {
    let out = run(&[
        "bench", "eval", "--rules", "200", "--flows", "2000", "--passes", "1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("200 (") && s.contains("M flows/s"), "{s}");
}

#[test]
fn library_example_runs() {
    // The example is built by `cargo test` (examples are compiled with the test profile).
    let exe = Path::new(env!("CARGO_BIN_EXE_flowprint"))
        .parent()
        .unwrap()
        .join("examples/library");
    if !exe.exists() {
        eprintln!("skipped: {} not built", exe.display());
        return;
    }
    let out = Command::new(exe).output().unwrap();
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("\"family\": \"Windows\""));
}

/// An input that fails midway: the flows read before the failure are used and counted, the
/// failure says where (byte offset, line), and the exit code is 2.
#[test]
fn an_input_failing_midway_is_counted_and_located() {
    let head = "ts,te,td,sa,da,sp,dp,pr,flg,ipkt,ibyt\n\
        2020-02-07 21:03:54,2020-02-07 21:03:55,1.000,192.168.7.1,1.1.1.1,5353,53,UDP,........,1,64\n\
        2020-02-07 21:03:54,2020-02-07 21:03:55,1.000,192.168.7.2,1.1.1.1,5353,53,UDP,........,1,64\n\
        ts,te,sp,dp\n";
    let p = temp_file(
        "midway.csv",
        &format!("{head}2020-02-07 21:03:54,2020-02-07 21:03:55,1,2\n"),
    );
    let out = run(&["analyze", "--format", "json", p.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        text(&out.stdout).lines().count(),
        2,
        "the flows read are used"
    );
    assert!(
        err.contains("2 flows read from 1 input(s) (1 unreadable or cut short)"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "midway.csv to its end: stopped at byte {}, line 4 after 2 flow(s)",
            head.len()
        )),
        "{err}"
    );
    assert!(err.contains("midway.csv:4: the CSV header has no"), "{err}");

    // A capture cut by a corrupt record: every flow before it is counted.
    let pcap = root().join("../shared/corpus/exports/iphone.nfv9-export.pcap");
    if !pcap.is_file() {
        eprintln!("skipped: {} is absent", pcap.display());
        return;
    }
    let out = run(&["flows", "--count", pcap.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let whole: u64 = text(&out.stdout).trim().parse().unwrap();
    assert!(whole > 0);
    let mut bytes = std::fs::read(&pcap).unwrap();
    bytes.extend_from_slice(&[0xff; 16]); // a record header claiming 4 GiB
    let cut = temp_file("cut.pcap", "");
    std::fs::write(&cut, &bytes).unwrap();
    let out = run(&["flows", "--count", cut.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(text(&out.stdout).trim(), whole.to_string(), "{err}");
    assert!(err.contains(&format!("after {whole} flow(s)")), "{err}");
    assert!(err.contains("capture byte"), "{err}");
}

/// Terminal escape sequences in inputs (a CSV field, a JSON value, a DNS log line, a file name)
/// are shown escaped in errors and warnings, never sent to the terminal.
#[test]
fn terminal_escapes_in_inputs_are_not_echoed() {
    let csv = temp_file(
        "esc\u{1b}[31m.csv",
        "ts,te,td,sa,da,sp,dp,pr,flg,ipkt,ibyt\n\
         2020-02-07 21:03:54,2020-02-07 21:03:55,1.000,\u{1b}]0;pwned\u{7}\u{1b}[2J,1.1.1.1,1,53,UDP,........,1,64\n",
    );
    let jsonl = temp_file(
        "esc.jsonl",
        "{\"src\": \"\\u001b[2J\", \"dst\": \"1.1.1.1\"}\n",
    );
    let dns = temp_file(
        "esc-dns.log",
        "#separator \\x09\n#fields\tts\tuid\tquery\tanswers\tTTLs\n\u{1b}[2J\tC1\tq\t1.2.3.4\t60\n",
    );
    let out = run(&[
        "analyze",
        "--dns-log",
        dns.to_str().unwrap(),
        csv.to_str().unwrap(),
        jsonl.to_str().unwrap(),
        "/nonexistent/\u{1b}[5m",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains('\u{1b}') && !err.contains('\u{7}'), "{err:?}");
    assert!(err.contains("esc\\u{1b}[31m.csv:2: bad"), "{err}");
    assert!(err.contains("\\u{1b}]0;pwned\\u{7}\\u{1b}[2J"), "{err}");
    assert!(err.contains("esc.jsonl:1: bad"), "{err}");
    assert!(
        err.contains("esc-dns.log:3: bad `ts` `\\u{1b}[2J`"),
        "{err}"
    );
    assert!(err.contains("/nonexistent/\\u{1b}[5m"), "{err}");
    // A CSV input that cannot be read at all, and an error that ends the command (printed by
    // `main`).
    let bad = temp_file("esc-header.csv", "\u{1b}[2J\n");
    let out = run(&["analyze", bad.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(err.contains("found `\\u{1b}[2J`"), "{err}");
    let out = run(&[
        "evaluate",
        "--labels",
        "/nonexistent/\u{1b}[5m.csv",
        &example_flows(),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/nonexistent/\\u{1b}[5m.csv"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

/// A half-life of 0 is refused (it used to mean no decay, silently); `none` means no decay.
#[test]
fn a_half_life_of_zero_is_refused() {
    for zero in ["0s", "0ms", "0d"] {
        let out = run(&["analyze", "--half-life", zero, &example_flows()]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("a half-life must be longer than 0"), "{err}");
        assert!(err.contains("`none` means no decay"), "{err}");
    }
    let out = run(&["analyze", "--half-life", "none", &example_flows()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(&[
        "serve",
        "--check",
        "--no-default-rules",
        "--half-life",
        "0s",
    ]);
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("half_life: must be longer than 0"), "{err}");
}

/// An idle time of 0 is refused (it evicted every host at once); `none` means never.
#[test]
fn an_idle_time_of_zero_is_refused() {
    for zero in ["0s", "0ms"] {
        let out = run(&["analyze", "--idle", zero, &example_flows()]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("an idle time must be longer than 0"), "{err}");
    }
    let out = run(&["analyze", "--idle", "7d", &example_flows()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("192.168.1.10"));
    let out = run(&["serve", "--check", "--no-default-rules", "--idle", "0s"]);
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("idle: must be longer than 0"), "{err}");
}

/// `--max-hosts` bounds the hosts held, and the evictions are reported.
#[test]
fn max_hosts_bounds_the_hosts_and_counts_evictions() {
    let mut flows = String::new();
    for i in 0..2500u32 {
        flows.push_str(&format!(
            "{{\"start\": {}, \"src\": \"10.7.{}.{}\", \"dst\": \"1.1.1.1\", \"dst_port\": 53, \
             \"proto\": \"udp\"}}\n",
            1_700_000_000 + i,
            i >> 8,
            i & 255
        ));
    }
    let p = temp_file("many-hosts.jsonl", &flows);
    let out = run(&[
        "analyze",
        "--max-hosts",
        "1000",
        "--format",
        "json",
        p.to_str().unwrap(),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let held = text(&out.stdout).lines().count();
    assert!((900..=1000).contains(&held), "{held} hosts held\n{err}");
    assert!(
        err.contains(&format!(
            "{held} host(s) ({} evicted beyond --max-hosts 1000)",
            2500 - held
        )),
        "{err}"
    );
    // The most recent host is kept.
    assert!(text(&out.stdout).contains("\"10.7.9.195\""), "{err}");
}

/// One failure policy for rule sources (`flowprint::sources`): a rule path or an overrides
/// file that cannot be read is an FP0019 error beside the other diagnostics, in `analyze` as
/// in `check`; the rules that could be read still run and the command exits 1, not 2.
#[test]
fn unreadable_rule_sources_are_diagnostics_and_the_readable_rules_still_run() {
    let missing_rules = std::env::temp_dir().join("flowprint-no-such-dir/none.rules");
    let missing_overrides = std::env::temp_dir().join("flowprint-no-such-dir/overrides.yaml");
    let out = run(&[
        "analyze",
        "--rules",
        &missing_rules.display().to_string(),
        "--overrides",
        &missing_overrides.display().to_string(),
        "--format",
        "json",
        &example_flows(),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("error[FP0019]").count(), 2, "{err}");
    assert!(err.contains("none.rules"), "{err}");
    assert!(err.contains("cannot read the overrides"), "{err}");
    // The bundled packs were read and applied.
    let stdout = text(&out.stdout);
    assert!(stdout.contains("\"192.168.1.10\""), "{stdout}");
    assert!(stdout.contains("Windows"), "{stdout}");
    let out = run(&[
        "check",
        "--overrides",
        &missing_overrides.display().to_string(),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("error[FP0019]"), "{err}");
}
