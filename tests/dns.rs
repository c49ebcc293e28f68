//! Passive DNS: log formats, answers from real captures, and the labelled hosts of the shared
//! corpus identified from plain NetFlow exports plus the DNS answers of the same capture.

mod common;

use flowprint::compiler::Compiler;
use flowprint::dns::passive::{load_into, read_capture_answers, read_log};
use flowprint::dns::{DnsMap, Source};
use flowprint::eval::LocalNets;
use flowprint::flow::ingest::{InputFormat, open_input, read_flows};
use flowprint::infer::HostTable;
use flowprint::scan::Scanner;
use std::net::IpAddr;
use std::sync::Arc;

#[test]
fn zeek_tsv_zeek_json_and_flowprint_json_lines_are_read() {
    let zeek_tsv = "#separator \\x09\n#fields\tts\tuid\tquery\tanswers\tTTLs\n\
        1714557600.5\tC1\twww.msftconnecttest.com\twww.msftconnecttest.com.edgesuite.net,13.107.4.52\t60.0,30.0\n\
        1714557601.0\tC2\tnx.example\t-\t-\n\
        garbage line\n";
    let mut got = Vec::new();
    let mut errors = Vec::new();
    read_log(
        zeek_tsv.as_bytes(),
        "dns.log",
        &mut |a| got.push(a),
        &mut |e| errors.push(e.to_string()),
    )
    .unwrap();
    assert_eq!(got.len(), 1, "the NXDOMAIN line has no answers");
    assert_eq!(got[0].query, "www.msftconnecttest.com");
    assert_eq!(
        got[0].addrs,
        vec!["13.107.4.52".parse::<IpAddr>().unwrap()],
        "CNAME targets are not addresses"
    );
    // The smallest TTL of the answer set: here the address's own (the CNAME's is 60).
    assert_eq!((got[0].at_ms, got[0].ttl), (1_714_557_600_500, 30));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("dns.log:5"), "{errors:?}");

    let json = r#"{"ts":1714557600.5,"query":"captive.apple.com","answers":["17.253.53.207","captive.g.aaplimg.com"],"TTLs":[30.0,20.0]}
{"ts":"2024-05-01T10:00:00Z","query":"time.android.com","answers":["216.239.35.0","2001:4860:4806::"],"ttl":300}
{"ts":"not a time","query":"x","answers":["1.2.3.4"]}"#;
    got.clear();
    errors.clear();
    read_log(
        json.as_bytes(),
        "dns.jsonl",
        &mut |a| got.push(a),
        &mut |e| errors.push(e.to_string()),
    )
    .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].addrs.len(), 2);
    assert_eq!(got[1].ttl, 300);
    assert_eq!(errors.len(), 1);
}

#[test]
fn peer_domain_matches_plain_netflow_through_passive_dns_at_the_right_time() {
    let mut c = Compiler::new();
    c.add_source(
        "t",
        "t.rules",
        r#"rule ncsi { when peer.domain in { "*.msftconnecttest.com", "www.msftconnecttest.com" } and peer.port == 80
                        then os.family = "Windows" confidence 0.9 }"#,
    );
    let compiled = c.compile();
    assert_eq!(compiled.errors(), 0);
    let mut dns = DnsMap::new();
    let peer: IpAddr = "13.107.4.52".parse().unwrap();
    dns.insert(peer, "www.msftconnecttest.com", 1_000_000, 60, Source::Log);
    let local = LocalNets::default();
    let flow_at = |t: i64, host: &str| {
        let mut f = flowprint::flow::Flow::new(host.parse().unwrap(), 50000, peer, 80, 6);
        f.start_ms = t;
        f.end_ms = t;
        f
    };
    let mut inv = Scanner::new(
        compiled.ruleset.clone(),
        Arc::new(local.clone()),
        HostTable::new(),
    );
    inv.apply(&flow_at(1_000_100, "10.0.0.1"), &dns); // just after the answer
    inv.apply(&flow_at(1_000_000 - 60_000, "10.0.0.2"), &dns); // a minute before it
    inv.apply(&flow_at(1_000_000 + 60_000 + 16 * 60_000, "10.0.0.3"), &dns); // after TTL + grace
    let s = inv.hosts().summaries(&compiled.ruleset);
    let fam = |h: &str| {
        s.iter()
            .find(|x| x.host == h)
            .and_then(|x| x.os.as_ref())
            .and_then(|o| o.family.clone())
    };
    assert_eq!(fam("10.0.0.1").as_deref(), Some("Windows"));
    assert_eq!(fam("10.0.0.2"), None);
    assert_eq!(fam("10.0.0.3"), None);
}

#[test]
fn dns_answers_are_extracted_from_a_real_capture() {
    let Some(pcaps) = common::corpus("pcaps") else {
        return;
    };
    let mut answers = Vec::new();
    read_capture_answers(
        open_input(pcaps.join("android.pcap").to_str().unwrap()).unwrap(),
        &mut |a| answers.push(a),
    )
    .unwrap();
    assert!(answers.len() >= 5, "{answers:?}");
    assert!(
        answers
            .iter()
            .any(|a| a.query == "connectivitycheck.gstatic.com."
                || a.query == "connectivitycheck.gstatic.com"),
        "{answers:?}"
    );
}

/// The labelled hosts of `../shared/corpus/labels/hosts.csv` whose captures carry DNS answers:
/// the softflowd NetFlow v9 export of the capture plus the capture's DNS answers give the label.
#[test]
fn labelled_hosts_get_their_os_from_exports_plus_passive_dns() {
    let (Some(exports), Some(pcaps)) = (common::corpus("exports"), common::corpus("pcaps")) else {
        return;
    };
    let mut c = Compiler::new();
    c.add_sources(&flowprint::sources::Sources::embedded());
    let compiled = c.compile();
    for (capture, host, family) in [
        ("android.pcap", "192.168.2.16", "Android"),
        ("iphone.pcap", "192.168.2.17", "iOS"),
        ("conncheck.pcap", "10.1.0.60", "Android"),
    ] {
        let mut dns = DnsMap::new();
        load_into(&mut dns, pcaps.join(capture).to_str().unwrap(), &mut |e| {
            panic!("{e}")
        })
        .unwrap();
        let local = LocalNets::default();
        let mut inv = Scanner::new(
            compiled.ruleset.clone(),
            Arc::new(local.clone()),
            HostTable::new(),
        );
        let stem = capture.trim_end_matches(".pcap");
        let export = exports.join(format!("{stem}.nfv9-export.pcap"));
        read_flows(
            open_input(export.to_str().unwrap()).unwrap(),
            "e",
            InputFormat::Auto,
            &mut |f| {
                inv.apply(&f, &dns);
            },
            &mut |e| panic!("{e}"),
        )
        .unwrap();
        let s = inv.hosts().summaries(&compiled.ruleset);
        let h = s
            .iter()
            .find(|x| x.host == host)
            .unwrap_or_else(|| panic!("{host} missing"));
        let os =
            h.os.as_ref()
                .unwrap_or_else(|| panic!("{capture} {host}: no OS"));
        assert_eq!(
            os.family.as_deref(),
            Some(family),
            "{capture} {host}: {h:?}"
        );
        assert!(
            os.confidence >= 0.6,
            "{capture} {host}: confidence {}",
            os.confidence
        );
    }
}

#[test]
fn evidence_resting_on_a_shared_address_weighs_less() {
    let mut c = Compiler::new();
    c.add_source(
        "t",
        "t.rules",
        r#"rule ncsi { when peer.domain == "www.msftconnecttest.com" and peer.port == 80
                        then os.family = "Windows" confidence 0.8 }"#,
    );
    let compiled = c.compile();
    let cdn: IpAddr = "192.0.2.80".parse().unwrap();
    let mut dns = DnsMap::new();
    for n in [
        "www.msftconnecttest.com",
        "shop.one.example",
        "news.two.example",
        "cdn.three.example",
    ] {
        dns.insert(cdn, n, 0, 300, Source::Log);
    }
    let local = LocalNets::default();
    let mut inv = Scanner::new(
        compiled.ruleset.clone(),
        Arc::new(local.clone()),
        HostTable::new(),
    );
    let mut via_dns = flowprint::flow::Flow::new("10.0.0.1".parse().unwrap(), 50000, cdn, 80, 6);
    via_dns.start_ms = 1000;
    via_dns.end_ms = 1000;
    let mut via_record = via_dns.clone();
    via_record.src = "10.0.0.2".parse().unwrap();
    via_record.dst_name = flowprint::flow::normalize_name("www.msftconnecttest.com");
    inv.apply(&via_dns, &dns);
    inv.apply(&via_record, &dns);
    let s = inv.hosts().summaries(&compiled.ruleset);
    let conf = |h: &str| {
        s.iter()
            .find(|x| x.host == h)
            .and_then(|x| x.os.as_ref())
            .map(|o| o.confidence)
    };
    // four unrelated registrable domains: weight 2/4
    assert_eq!(conf("10.0.0.1"), Some(0.4));
    assert_eq!(s[0].evidence[0].shared_address_weight, 0.5);
    // the record names the peer itself: full weight
    assert_eq!(conf("10.0.0.2"), Some(0.8));
}

/// The DNS map survives in the inventory: a later run over the same flows, without the DNS log,
/// still matches names (SQLite here; PostgreSQL too when `FLOWPRINT_TEST_POSTGRES` is set).
#[test]
fn the_dns_map_is_kept_in_the_inventory() {
    let (Some(exports), Some(pcaps)) = (common::corpus("exports"), common::corpus("pcaps")) else {
        return;
    };
    let tmp = common::TempDir::new("dnsdb");
    let mut dbs = vec![tmp.0.join("inv.db").display().to_string()];
    if let Ok(url) = std::env::var("FLOWPRINT_TEST_POSTGRES") {
        // A fresh schema of its own in the shared test database.
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let schema = format!("dnsmap_{}", std::process::id());
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ))
            .unwrap();
        let sep = if url.contains('?') { '&' } else { '?' };
        dbs.push(format!("{url}{sep}options=-csearch_path%3D{schema}"));
    }
    let bin = env!("CARGO_BIN_EXE_flowprint");
    let export = exports.join("android.nfv9-export.pcap");
    for db in dbs {
        let run = |extra: &[&str]| {
            let out = std::process::Command::new(bin)
                .args([
                    "analyze",
                    "--format",
                    "json",
                    "--half-life",
                    "none",
                    "--db",
                    &db,
                ])
                .args(extra)
                .arg(&export)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let with_log = run(&["--dns-log", pcaps.join("android.pcap").to_str().unwrap()]);
        assert!(with_log.contains("\"family\":\"Android\""), "{with_log}");
        // A fresh inventory file would know nothing; this one kept the DNS map (and evidence).
        let pairs = flowprint::inventory::open(&db).unwrap().load_dns().unwrap();
        assert!(
            pairs
                .iter()
                .any(|p| p.name == "connectivitycheck.gstatic.com"),
            "{pairs:?}"
        );
        let again = run(&[]);
        assert!(again.contains("\"family\":\"Android\""), "{again}");
        // `dns lookup --db` reads the stored map: the address the name had, at that time.
        let pair = pairs
            .iter()
            .find(|p| p.name == "connectivitycheck.gstatic.com")
            .unwrap();
        let at = flowprint::flow::time::format_rfc3339(pair.first_seen);
        let out = std::process::Command::new(bin)
            .args(["dns", "lookup", &pair.addr, "--at", &at, "--db", &db])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("connectivitycheck.gstatic.com"), "{text}");
        // A year later the answer is long expired.
        let later = flowprint::flow::time::format_rfc3339(pair.last_seen + 365 * 86_400_000);
        let out = std::process::Command::new(bin)
            .args(["dns", "lookup", &pair.addr, "--at", &later, "--db", &db])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// The issue's real-data check, with tshark as the passive DNS source: tshark turns each corpus
/// capture's DNS responses into a field log (the command in `docs/dns.md`), and `flowprint
/// analyze --dns-log` over the capture's softflowd IPFIX export gives the labelled hosts of
/// `../shared/corpus/labels/hosts.csv` their OS family.
#[test]
fn tshark_dns_log_plus_exports_give_labelled_hosts_their_os() {
    let (Some(exports), Some(pcaps), Some(labels)) = (
        common::corpus("exports"),
        common::corpus("pcaps"),
        common::corpus("labels"),
    ) else {
        return;
    };
    if !common::have("tshark") {
        return;
    }
    let labels = std::fs::read_to_string(labels.join("hosts.csv")).unwrap();
    let tmp = common::TempDir::new("tshark");
    let mut checked = 0;
    for capture in ["android.pcap", "iphone.pcap", "conncheck.pcap"] {
        let log = tmp.0.join(format!("{capture}.dns.tsv"));
        let out = std::process::Command::new("tshark")
            .args(["-r", pcaps.join(capture).to_str().unwrap()])
            .args([
                "-Y",
                "dns.flags.response == 1",
                "-T",
                "fields",
                "-E",
                "header=y",
            ])
            .args([
                "-E",
                "separator=/t",
                "-E",
                "occurrence=a",
                "-E",
                "aggregator=,",
            ])
            .args([
                "-e",
                "frame.time_epoch",
                "-e",
                "dns.qry.name",
                "-e",
                "dns.a",
            ])
            .args(["-e", "dns.aaaa", "-e", "dns.resp.ttl"])
            .stderr(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "tshark failed on {capture}");
        std::fs::write(&log, &out.stdout).unwrap();
        let stem = capture.trim_end_matches(".pcap");
        let export = exports.join(format!("{stem}.ipfix-export.pcap"));
        let run = std::process::Command::new(env!("CARGO_BIN_EXE_flowprint"))
            .args(["analyze", "--format", "json", "--dns-log"])
            .arg(&log)
            .arg(&export)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let hosts: Vec<serde_json::Value> = String::from_utf8_lossy(&run.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // The capture's labelled hosts: those labelled with high confidence must get their
        // family; any other that gets a family must get the labelled one.
        for line in labels.lines().skip(1) {
            let cols: Vec<&str> = line.split(',').collect();
            if cols.len() < 6 || cols[0] != capture {
                continue;
            }
            let (ip, family, sure) = (cols[1], cols[3], cols[5] == "high");
            let got = hosts
                .iter()
                .find(|h| h["host"] == ip)
                .and_then(|h| h["os"]["family"].as_str());
            if sure || got.is_some() {
                assert_eq!(got, Some(family), "{capture} {ip}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 3, "only {checked} labelled hosts checked");
}

/// `domains` counts the names peers answered for in DNS when the records carry none.
#[test]
fn stateful_domain_counts_use_names_from_dns() {
    let mut c = Compiler::new();
    c.add_source(
        "t",
        "t.rules",
        r#"rule many-vendor-hosts { when peer.port == 443 and peer.addr in 198.51.100.0/24
            over 1h domains >= 3 then software = "VendorSuite" confidence 0.6 }"#,
    );
    let compiled = c.compile();
    assert_eq!(compiled.errors(), 0);
    let mut dns = DnsMap::new();
    for (i, n) in ["a.vendor.example", "b.vendor.example", "c.vendor.example"]
        .iter()
        .enumerate()
    {
        dns.insert(
            format!("198.51.100.{}", i + 1).parse().unwrap(),
            n,
            0,
            3600,
            Source::Log,
        );
    }
    let local = LocalNets::default();
    let run = |dns: &DnsMap, peers: &[u8]| {
        let mut inv = Scanner::new(
            compiled.ruleset.clone(),
            Arc::new(local.clone()),
            HostTable::new(),
        );
        for (i, p) in peers.iter().enumerate() {
            let mut f = flowprint::flow::Flow::new(
                "10.0.0.5".parse().unwrap(),
                50000 + i as u16,
                format!("198.51.100.{p}").parse().unwrap(),
                443,
                6,
            );
            f.start_ms = 1000 + i as i64 * 1000;
            f.end_ms = f.start_ms + 10;
            inv.apply(&f, dns);
        }
        inv.hosts().summaries(&compiled.ruleset)[0].software.len()
    };
    assert_eq!(run(&dns, &[1, 2, 3]), 1, "three names via DNS");
    assert_eq!(run(&dns, &[1, 1, 2, 2]), 0, "two names only");
    assert_eq!(run(&DnsMap::new(), &[1, 2, 3]), 0, "no names without DNS");
}
