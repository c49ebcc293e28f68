//! `flowprint serve` under a flood of NetFlow v9 datagrams with new source ids: its memory stays
//! bounded, evictions are counted in `/metrics`, and an exporter active throughout keeps
//! decoding. Datagrams go over loopback UDP from 127.0.0.x addresses; nothing leaves 127/8.

use flowprint::flow::netflow::build;

mod common;

use common::serve::{Serve, http, metric, wait_until};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// A NetFlow v9 export packet of now with the given flowsets (id, body).
fn v9(seq: u32, source_id: u32, sets: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    let header = build::V9Header {
        count: sets.len() as u16,
        uptime_ms: 100_000,
        secs: now,
        seq,
        source_id,
    };
    build::v9(&header, sets)
}

/// Template `id`: src/dst IPv4, ports, protocol, bytes, packets.
fn template(id: u16) -> Vec<u8> {
    build::template(id, build::BASIC_V4)
}

fn record() -> Vec<u8> {
    build::basic_v4_record([10, 7, 0, 1], [198, 51, 100, 1], 40000, 443, 1500, 3)
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn metrics(serve: &Serve) -> String {
    let (status, body) = http(serve.api, "GET", "/metrics", None, b"");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of `name{label}` in the Prometheus text.
fn labelled(text: &str, name: &str, label: &str) -> u64 {
    let prefix = format!("{name}{{{label}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[test]
fn a_flood_of_new_source_ids_leaves_memory_bounded_and_the_active_exporter_decoding() {
    let tmp = common::TempDir::new("collector-flood");
    let serve = Serve::start(&tmp.0, &["--no-db", "--no-watch", "--workers", "1"]);
    let pid = serve.child.id();
    let to = serve.udp;
    let legit = UdpSocket::bind("127.0.0.1:0").unwrap();
    legit.send_to(&v9(0, 0, &[(0, template(300))]), to).unwrap();
    let mut legit_sent = 1u64;
    let legit_records = |text: &str| {
        labelled(
            text,
            "flowprint_exporter_records_total",
            "exporter=\"127.0.0.1\"",
        )
    };
    // Warm up: the legitimate exporter's data decodes.
    wait_until("the first record", Duration::from_secs(60), || {
        legit.send_to(&v9(1, 0, &[(300, record())]), to).unwrap();
        legit_sent += 1;
        std::thread::sleep(Duration::from_millis(20));
        legit_records(&metrics(&serve)) > 0
    });
    let rss_before = vm_rss_kib(pid);

    // 300,000 datagrams from 100 addresses, each with a new source id, a template and a data
    // set whose template never comes. Sent in chunks paced by what the daemon decoded.
    let senders: Vec<UdpSocket> = (2..102)
        .map(|x| UdpSocket::bind(format!("127.0.0.{x}:0")).unwrap())
        .collect();
    let total = 300_000u32;
    let chunk = 5_000u32;
    let started = Instant::now();
    let mut seq = 2;
    for c in 0..total / chunk {
        for i in c * chunk..(c + 1) * chunk {
            let s = &senders[(i % 100) as usize];
            let d = v9(i, 1_000 + i, &[(0, template(256)), (4000, record())]);
            let _ = s.send_to(&d, to);
        }
        legit.send_to(&v9(seq, 0, &[(300, record())]), to).unwrap();
        legit_sent += 1;
        seq += 1;
        // Let the daemon catch up (kernel drops are possible and fine: counted).
        let want = u64::from((c + 1) * chunk) * 9 / 10;
        let t = Instant::now();
        while metric(&metrics(&serve), "flowprint_exporter_datagrams_total") < want
            && t.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let text = metrics(&serve);
    let decoded = metric(&text, "flowprint_exporter_datagrams_total");
    assert!(
        decoded > 200_000,
        "the flood reached the decoder: {decoded} datagrams in {:?}",
        started.elapsed()
    );
    let rss_after = vm_rss_kib(pid);
    let growth_mib = rss_after.saturating_sub(rss_before) / 1024;
    eprintln!(
        "VmRSS {} MiB -> {} MiB (+{growth_mib} MiB) after {decoded} datagrams",
        rss_before / 1024,
        rss_after / 1024
    );
    // Unbounded, each new session cost ~1.9 KB: +550 MiB. Bounded: 16,384 sessions at most.
    assert!(growth_mib < 150, "VmRSS grew by {growth_mib} MiB");
    assert!(
        metric(&text, "flowprint_collector_sessions") <= 16_384,
        "{text}"
    );
    let evicted = labelled(
        &text,
        "flowprint_collector_evictions_total",
        "what=\"session\"",
    );
    assert!(evicted > 200_000, "evictions are counted: {text}");
    assert_eq!(
        metric(&text, "flowprint_exporter_sessions_evicted_total"),
        evicted,
        "each exporter's series counts the evictions of its sessions"
    );
    // The legitimate exporter kept its template all along.
    let before = legit_records(&text);
    assert!(
        before * 2 >= legit_sent,
        "{before} of {legit_sent} legitimate records decoded"
    );
    wait_until("a record after the flood", Duration::from_secs(60), || {
        legit.send_to(&v9(seq, 0, &[(300, record())]), to).unwrap();
        seq += 1;
        std::thread::sleep(Duration::from_millis(20));
        legit_records(&metrics(&serve)) > before
    });
    serve.stop();
}
