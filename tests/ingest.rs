//! Reads the real exports in `../shared/corpus` with `InputFormat::Auto` and checks them
//! against nfdump's own summary counts and a few known records.

use std::fs;
use std::io::BufReader;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use flowprint::flow::ingest::{InputFormat, ReadError, read_flows};
use flowprint::flow::{Flow, proto, tcp_flags};

const EXPORTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/exports");
const NDPI: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/corpus/enriched/ndpi-flows.csv"
);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Reads a whole file with `Auto`, returning its flows and malformed-line errors.
fn read_file(path: &Path) -> (Vec<Flow>, Vec<ReadError>) {
    let file = fs::File::open(path).unwrap();
    let mut flows = Vec::new();
    let mut errors = Vec::new();
    let stats = read_flows(
        BufReader::new(file),
        &path.display().to_string(),
        InputFormat::Auto,
        &mut |f| flows.push(f),
        &mut |e| errors.push(e),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.flows, flows.len() as u64);
    assert_eq!(stats.skipped, errors.len() as u64);
    (flows, errors)
}

/// The sum of the `flows` values of the file's `Summary` blocks.
fn summary_flows(text: &str) -> u64 {
    let lines: Vec<&str> = text.lines().collect();
    let mut total = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.trim() == "Summary" {
            assert!(
                lines[i + 1].starts_with("flows,"),
                "summary header after line {i}"
            );
            let flows = lines[i + 2].split(',').next().unwrap();
            total += flows.parse::<u64>().unwrap();
        }
    }
    total
}

fn nfdump_exports() -> Option<Vec<PathBuf>> {
    let dir = Path::new(EXPORTS);
    if !dir.is_dir() {
        println!("skipped: {EXPORTS} is absent");
        return None;
    }
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".nfdump.csv"))
        .collect();
    files.sort();
    Some(files)
}

#[test]
fn every_nfdump_export_reads_cleanly_and_matches_its_summary() {
    let Some(files) = nfdump_exports() else {
        return;
    };
    assert!(!files.is_empty(), "no *.nfdump.csv in {EXPORTS}");
    let mut total = 0;
    for path in &files {
        let text = fs::read_to_string(path).unwrap();
        let (flows, errors) = read_file(path);
        let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(errors.is_empty(), "{}", msgs.join("\n"));
        let want = summary_flows(&text);
        assert!(want > 0, "{} has no summary", path.display());
        assert_eq!(flows.len() as u64, want, "{}", path.display());
        // Some captures have 1970 clocks (spotify_tcp, teamviewer, windowsupdate_over_http),
        // so only the order of the times is checked.
        for f in &flows {
            assert!(f.start_ms >= 0 && f.end_ms >= f.start_ms, "{f:?}");
        }
        total += flows.len();
    }
    println!("{} files, {total} flows", files.len());
}

#[test]
fn known_nfdump_records() {
    if nfdump_exports().is_none() {
        return;
    }
    // 443-chrome.ipfix.nfdump.csv, its only record:
    // 2020-02-07 21:03:54,2020-02-07 21:03:54,0.000,178.62.197.130,192.168.1.13,443,53059,TCP,
    // ...A....,0,0,1,1492,0,0,...,127.0.0.1,0/0,1,2026-11-27 03:50:16.398
    let (flows, _) = read_file(&Path::new(EXPORTS).join("443-chrome.ipfix.nfdump.csv"));
    let mut want = Flow::new(
        ip("178.62.197.130"),
        443,
        ip("192.168.1.13"),
        53059,
        proto::TCP,
    );
    want.start_ms = 1_581_109_434_000; // date -u -d '2020-02-07 21:03:54' +%s
    want.end_ms = want.start_ms;
    want.tcp_flags = tcp_flags::ACK;
    want.packets = 1;
    want.bytes = 1492;
    want.exporter = Some(ip("127.0.0.1"));
    assert_eq!(flows, vec![want]);

    // android.ipfix.nfdump.csv: an ICMPv6 neighbour solicitation (type 135 → dp 34560) and the
    // same record in the v9 export, where nfdump 1.7.1 prints dp 0.
    let ns = |file: &str| {
        let (flows, _) = read_file(&Path::new(EXPORTS).join(file));
        flows
            .into_iter()
            .find(|f| f.proto == proto::ICMPV6 && f.dst == ip("ff02::1:ff9f:f627"))
            .unwrap()
    };
    let ipfix = ns("android.ipfix.nfdump.csv");
    assert_eq!(
        (ipfix.src, ipfix.src_port, ipfix.dst_port),
        (ip("::"), 0, 34560)
    );
    assert_eq!(ipfix.start_ms, 1_582_454_865_000); // 2020-02-23 10:47:45 UTC
    assert_eq!(ns("android.nfv9.nfdump.csv").dst_port, 0);
}

#[test]
fn nfstream_csv_reads_with_server_names() {
    let path = Path::new(NDPI);
    if !path.is_file() {
        println!("skipped: {NDPI} is absent");
        return;
    }
    let (flows, errors) = read_file(path);
    let msgs: Vec<String> = errors.iter().take(20).map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{}", msgs.join("\n"));
    let text = fs::read_to_string(path).unwrap();
    assert_eq!(flows.len(), text.lines().count() - 1);
    let named = flows.iter().filter(|f| f.dst_name.is_some()).count();
    assert!(named > 1000, "only {named} flows with dst_name");

    // 1kxun.pcap flow 14 (line 16): HTTP to jp.kankan.1kxun.mobi, quoted user agent with commas.
    let f = &flows[14];
    let mut want = Flow::new(
        ip("192.168.115.8"),
        49597,
        ip("106.185.35.110"),
        80,
        proto::TCP,
    );
    want.start_ms = 1_470_104_377_754;
    want.end_ms = 1_470_104_422_913;
    want.packets = 10;
    want.bytes = 1394;
    want.rev_packets = 4;
    want.rev_bytes = 1464;
    want.dst_name = flowprint::flow::normalize_name("jp.kankan.1kxun.mobi");
    assert_eq!(f, &want);
}
