//! Live: softflowd (the Debian package) replays real captures and exports NetFlow v5, v9 and
//! IPFIX (also bidirectional) to nfcapd on loopback, which repeats every datagram to flowprint's
//! UDP collector (`nfcapd -R`; softflowd 1.1.0 sends to one destination only); both must see
//! the same flows.

mod common;

use flowprint::collect::{Collector, CollectorConfig};
use flowprint::flow::Flow;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn softflowd(
    pcap: &std::path::Path,
    version: &str,
    extra: &[&str],
    port: u16,
    tmp: &std::path::Path,
) {
    let mut child = Command::new("softflowd")
        .args(["-d", "-r"])
        .arg(pcap)
        .args(["-v", version])
        .args(extra)
        .args(["-n", &format!("127.0.0.1:{port}")])
        .arg("-p")
        .arg(tmp.join("softflowd.pid"))
        // No control socket: softflowd 1.1.0 hangs at exit with a control socket path longer
        // than a dozen characters.
        .args(["-c", "none"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start softflowd");
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("softflowd did not finish within 30 s: {pcap:?} v{version} {extra:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn softflowd_exports_reach_flowprint_and_nfcapd_alike() {
    let Some(pcaps) = common::corpus("pcaps") else {
        return;
    };
    if !common::have("softflowd") || !common::have("nfcapd") || !common::have("nfdump") {
        return;
    }
    let cases: &[(&str, &str, &[&str])] = &[
        ("iphone.pcap", "5", &[]),
        ("iphone.pcap", "9", &[]),
        ("windowsupdate_over_http.pcap", "10", &[]),
        ("teams.pcap", "10", &["-b"]),
        ("android.pcap", "9", &["-A", "milli"]),
    ];
    let mut failures = Vec::new();
    for &(name, version, extra) in cases {
        let tmp = common::TempDir::new("live");
        let mut collector = Collector::bind(&CollectorConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            ..Default::default()
        })
        .unwrap();
        let port = collector.listeners()[0].addr.port();
        let nfcapd = common::Nfcapd::start_repeating(&tmp.0, Some(port));
        let stop = collector.stop_flag();
        let runner = std::thread::spawn(move || {
            let mut flows: Vec<Flow> = Vec::new();
            collector.run(None, &mut |f| flows.push(f), &mut |w| eprintln!("{w}"));
            let stats = collector.shutdown(&mut |f| flows.push(f), &mut |_| {});
            (flows, stats)
        });
        softflowd(&pcaps.join(name), version, extra, nfcapd.port, &tmp.0);
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        let (ours, stats) = runner.join().unwrap();
        let theirs = nfcapd.stop_and_read();
        // For biflows nfdump 1.7.1 shows the reverse direction's TCP flags in place of the
        // forward ones (it overwrites them); flowprint keeps the forward flags (RFC 5103), so
        // flags are not compared there.
        let biflow = extra.contains(&"-b");
        let key = |f: &Flow| {
            let mut k = common::key(f);
            if biflow {
                k.7 = 0;
            }
            k
        };
        let mut a: Vec<_> = ours.iter().map(key).collect();
        let mut b: Vec<_> = theirs.iter().map(key).collect();
        a.sort();
        b.sort();
        eprintln!(
            "{name} v{version} {extra:?}: flowprint {} flows ({} datagrams, {} dropped), nfdump {}",
            a.len(),
            stats.received,
            stats.queue_drops,
            b.len()
        );
        if a.is_empty() || a != b {
            failures.push(format!(
                "{name} v{version} {extra:?}: flowprint {} flows, nfdump {}; first difference {:?} vs {:?}",
                a.len(),
                b.len(),
                a.iter().find(|k| !b.contains(k)),
                b.iter().find(|k| !a.contains(k))
            ));
        }
        let rev = |v: &[Flow]| {
            let mut r: Vec<_> = v
                .iter()
                .map(|f| (f.src, f.dst, f.src_port, f.rev_packets, f.rev_bytes))
                .collect();
            r.sort();
            r
        };
        if rev(&ours) != rev(&theirs) {
            failures.push(format!(
                "{name} v{version} {extra:?}: reverse counters differ"
            ));
        }
        if biflow {
            assert!(
                ours.iter().any(|f| f.rev_bytes > 0),
                "a bidirectional export carries reverse counters"
            );
        }
        assert_eq!(stats.queue_drops, 0);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
