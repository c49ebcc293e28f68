//! `flowprint serve` under abuse, as a process: floods of host-list requests while flows come
//! in, idle and slow connections, a low file-descriptor limit, its rules directory deleted and
//! recreated, kill -9 under load. Everything is on loopback, against the real binary.

mod common;

use common::serve::{Serve, get_json, http, metric, unsafe_kill, wait_until};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Local host number `i`: 10.a.b.c.
fn host(i: u32) -> [u8; 4] {
    let i = i + 1;
    [10, (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

/// NetFlow v5 datagrams of 30 flows, one flow per host of `range`, to port 443 of public peers.
fn datagrams(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
    let flows: Vec<([u8; 4], [u8; 4], u16)> = range
        .map(|i| (host(i), [203, 0, 113, (i % 250) as u8], 443))
        .collect();
    flows
        .chunks(30)
        .enumerate()
        .map(|(k, c)| common::v5_now((k * 30) as u32, c))
        .collect()
}

const RULES: &str = r#"
rule https-client {
    when peer.port == 443 and bytes < 1 KiB
    then software = "TLS client" confidence 0.2
}
rule small-flows {
    when bytes < 1 KiB
    then os.family = "Small" confidence 0.1
}
"#;

fn probe_rule(family: &str) -> String {
    format!(
        "rule probe {{\n    when peer.port == 4444\n    then os.family = \"{family}\" confidence 0.9\n}}\n"
    )
}

/// Saves a file as editors do: a temporary file renamed over it.
fn save(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Sends `datagrams` round and round at `rate` flows/s (30 a datagram) until `stop`.
fn sender(
    to: SocketAddr,
    datagrams: Vec<Vec<u8>>,
    rate: u64,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let started = Instant::now();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let due = (started.elapsed().as_secs_f64() * rate as f64 / 30.0) as u64;
            while n < due {
                sock.send_to(&datagrams[n as usize % datagrams.len()], to)
                    .unwrap();
                n += 1;
                sent.fetch_add(30, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

/// Sends every datagram once, at most `rate` flows/s; returns the flows sent.
fn send_paced(to: SocketAddr, datagrams: &[Vec<u8>], rate: u64) -> u64 {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    for (n, d) in datagrams.iter().enumerate() {
        while (started.elapsed().as_secs_f64() * rate as f64 / 30.0) < n as f64 {
            std::thread::sleep(Duration::from_millis(1));
        }
        sock.send_to(d, to).unwrap();
    }
    30 * datagrams.len() as u64
}

fn metrics(api: SocketAddr) -> String {
    // /metrics is an expensive request: a 503 while others run is retried.
    for _ in 0..100 {
        let (status, m) = http(api, "GET", "/metrics", None, b"");
        if status == 200 {
            return m;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("/metrics kept failing");
}

/// Issue 15, defect 9: 64 clients asking for host lists (API and pages) as fast as they can,
/// over 21,000 hosts, while flows come in: no flow is dropped; the requests beyond the
/// expensive requests' slots get a 503 that says so, and are counted.
#[test]
fn host_list_floods_do_not_starve_the_flow_path() {
    let tmp = common::TempDir::new("daemon-flood");
    let pack = tmp.0.join("mine");
    std::fs::create_dir_all(&pack).unwrap();
    std::fs::write(pack.join("r.rules"), RULES).unwrap();
    let serve = Serve::start(
        &tmp.0,
        &[
            "--no-default-rules",
            "--rules",
            pack.to_str().unwrap(),
            "--no-db",
            "--workers",
            "2",
            // 128 batches of 512 flows a worker: about 13 s of this test's flows, so that a
            // loaded machine's pauses drop nothing; a flow path waiting for the API's reads does.
            "--queue",
            "128",
        ],
    );
    let api = serve.api;
    let hosts = 21_000;
    let all = datagrams(0..hosts);
    let mut sent = send_paced(serve.udp, &all, 50_000);
    wait_until("every host tracked", Duration::from_secs(60), || {
        metric(&metrics(api), "flowprint_hosts_tracked") == u64::from(hosts)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let flowing = Arc::new(AtomicU64::new(0));
    let rate = 10_000;
    let send = sender(serve.udp, all, rate, stop.clone(), flowing.clone());
    let (ok, busy, other) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let started = Instant::now();
    let hammer: Vec<_> = (0..64)
        .map(|i| {
            let (ok, busy, other) = (ok.clone(), busy.clone(), other.clone());
            std::thread::spawn(move || {
                let path = match i % 4 {
                    0 | 1 => "/hosts?limit=500",
                    2 => "/ui/hosts?page=3",
                    _ => "/hosts?q=10.0.1",
                };
                while started.elapsed() < Duration::from_secs(8) {
                    match http(api, "GET", path, None, b"").0 {
                        200 => ok.fetch_add(1, Ordering::Relaxed),
                        503 => busy.fetch_add(1, Ordering::Relaxed),
                        _ => other.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for h in hammer {
        h.join().unwrap();
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    send.join().unwrap();
    sent += flowing.load(Ordering::Relaxed);
    wait_until("every flow evaluated", Duration::from_secs(60), || {
        metric(&metrics(api), "flowprint_flows_evaluated_total")
            + metric(&metrics(api), "flowprint_flows_dropped_total")
            >= sent
    });
    let m = metrics(api);
    let (ok, busy, other) = (
        ok.load(Ordering::Relaxed),
        busy.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
    );
    eprintln!(
        "{} flows/s for {took:?} under 64 clients: {ok} host lists served ({:.0}/s), {busy} refused busy; {} summaries computed, the last in {} ms",
        rate,
        ok as f64 / took.as_secs_f64(),
        metric(&m, "flowprint_host_summaries_computed_total"),
        m.lines()
            .find(|l| l.starts_with("flowprint_host_summaries_compute_seconds "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map_or(0.0, |s| s * 1e3)
    );
    assert_eq!(metric(&m, "flowprint_flows_dropped_total"), 0, "{m}");
    assert_eq!(metric(&m, "flowprint_datagrams_dropped_total"), 0, "{m}");
    assert_eq!(metric(&m, "flowprint_flows_received_total"), sent, "{m}");
    assert_eq!(metric(&m, "flowprint_flows_evaluated_total"), sent, "{m}");
    assert!(ok > 0, "no host list served");
    assert_eq!(other, 0, "statuses other than 200 and 503");
    assert!(
        busy > 0,
        "64 clients and 2 slots: some must have been refused"
    );
    let refused = m
        .lines()
        .find(|l| l.starts_with("flowprint_api_requests_rejected_total{reason=\"busy\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    // Every 503 the clients saw is counted (the test's own /metrics retries may add some).
    assert!(refused.is_some_and(|n| n >= busy), "{m}");
    let hosts_page = get_json(api, "/hosts?limit=1");
    assert_eq!(hosts_page["total"], hosts, "{hosts_page}");
    assert!(hosts_page["as_of"].is_string(), "{hosts_page}");
    serve.stop();
}

/// Whether the server closed `s` within `limit` (EOF or reset); false when it is still open.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a response (a 408, say): read on to the end
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Issue 15, defect 10: 100 connections that send nothing, 20 that send a request head a byte
/// at a time and one kept alive after its request are all closed by the daemon; `/health`
/// answers meanwhile, and the closes are counted.
#[test]
fn idle_and_slow_connections_are_closed_and_health_still_answers() {
    let tmp = common::TempDir::new("daemon-idle");
    let pack = tmp.0.join("mine");
    std::fs::create_dir_all(&pack).unwrap();
    std::fs::write(pack.join("probe.rules"), probe_rule("One")).unwrap();
    let serve = Serve::start(
        &tmp.0,
        &[
            "--no-default-rules",
            "--rules",
            pack.to_str().unwrap(),
            "--no-db",
            "--api-header-timeout",
            "1s",
            "--api-idle-timeout",
            "2s",
            "--api-max-connections",
            "32",
        ],
    );
    let api = serve.api;
    let started = Instant::now();
    let mut idle: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(api).unwrap()).collect();
    let slow: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(api).unwrap();
                let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ");
                let t = Instant::now();
                // One byte every 200 ms: never a whole head. True when the daemon closed it
                // (a write after the close fails).
                while t.elapsed() < Duration::from_secs(30) {
                    if s.write_all(b"a").is_err() {
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                false
            })
        })
        .collect();
    // /health gets its turn although 120 connections wait ahead of it.
    let t = Instant::now();
    let (status, body) = http(api, "GET", "/health", None, b"");
    let health_took = t.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(
        health_took < Duration::from_secs(15),
        "/health took {health_took:?}"
    );
    // A connection kept alive after one request: closed idle.
    let mut kept = TcpStream::connect(api).unwrap();
    write!(kept, "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    kept.read_exact(&mut head).unwrap();
    assert_eq!(&head[9..12], b"200");
    assert!(
        closed_within(&mut kept, Duration::from_secs(20)),
        "a kept-alive connection stayed open"
    );
    for (i, s) in idle.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(20)),
            "idle connection {i} still open after {:?}",
            started.elapsed()
        );
    }
    for (i, t) in slow.into_iter().enumerate() {
        assert!(t.join().unwrap(), "slow connection {i} never closed");
    }
    let all_closed = started.elapsed();
    let m = metrics(api);
    eprintln!(
        "/health answered in {health_took:?} behind 120 idle and slow connections; all closed after {all_closed:?}"
    );
    assert_eq!(metric(&m, "flowprint_api_connections_limit"), 32, "{m}");
    assert!(
        metric(&m, "flowprint_api_connections_closed_total") >= 120,
        "{m}"
    );
    assert!(
        metric(&m, "flowprint_api_connection_waits_at_limit_total") > 0,
        "{m}"
    );
    serve.stop();
}

/// Issue 15, defect 10: with a low file-descriptor limit, 150 connections cannot starve the
/// daemon's rule reloads (the connection cap stays at half the limit); and a reload that hits
/// the limit anyway (EMFILE) is retried until it succeeds, shown by `/health` and a metric.
#[test]
fn a_reload_that_hits_the_file_descriptor_limit_is_retried() {
    if !common::have("prlimit") {
        eprintln!("skipped: no prlimit");
        return;
    }
    let tmp = common::TempDir::new("daemon-emfile");
    let pack = tmp.0.join("mine");
    std::fs::create_dir_all(&pack).unwrap();
    std::fs::write(pack.join("probe.rules"), probe_rule("One")).unwrap();
    let serve = Serve::start_via(
        &tmp.0,
        &[
            "--no-default-rules",
            "--rules",
            pack.to_str().unwrap(),
            "--no-db",
            "--api-header-timeout",
            "2s",
            "--api-max-connections",
            "1000",
        ],
        &["prlimit", "--nofile=96:96", "--"],
    );
    let api = serve.api;
    let pid = serve.child.id();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let probe = common::v5_now(0, &[([10, 9, 0, 1], [198, 51, 100, 1], 4444)]);
    sock.send_to(&probe, serve.udp).unwrap();
    let family = || {
        let v = get_json(api, "/hosts/10.9.0.1");
        v["host"]["os"]["family"].as_str().map(str::to_string)
    };
    wait_until("first verdict", Duration::from_secs(10), || {
        family().as_deref() == Some("One")
    });
    let m = metrics(api);
    assert_eq!(metric(&m, "flowprint_api_connections_limit"), 48, "{m}");
    assert!(
        serve
            .log()
            .contains("API connections capped at half the file-descriptor limit")
    );
    // 150 connections while a rule is edited: the reload still has descriptors.
    let idle: Vec<TcpStream> = (0..150).map(|_| TcpStream::connect(api).unwrap()).collect();
    save(&pack.join("probe.rules"), &probe_rule("Two"));
    wait_until("the edit live", Duration::from_secs(30), || {
        family().as_deref() == Some("Two")
    });
    drop(idle);
    assert!(
        !serve.log().contains("Too many open files"),
        "{}",
        serve.log()
    );

    // No descriptor left at all: the next edit's reload fails reading, and is retried.
    let limit = |soft: u32| {
        let ok = std::process::Command::new("prlimit")
            .args(["--pid", &pid.to_string(), &format!("--nofile={soft}:96")])
            .status()
            .unwrap()
            .success();
        assert!(ok, "prlimit --pid");
    };
    limit(3);
    save(&pack.join("probe.rules"), &probe_rule("Three"));
    wait_until("the reload failed reading", Duration::from_secs(30), || {
        serve
            .log()
            .contains("rules could not be read: retrying the reload")
    });
    limit(96);
    wait_until("the retried reload live", Duration::from_secs(60), || {
        family().as_deref() == Some("Three")
    });
    let health = get_json(api, "/health");
    assert_eq!(health["status"], "ok", "{health}");
    let m = metrics(api);
    assert!(
        metric(&m, "flowprint_rule_reload_retries_total") >= 1,
        "{m}"
    );
    assert_eq!(metric(&m, "flowprint_rule_reload_retry_pending"), 0, "{m}");
    assert!(
        serve
            .log()
            .contains("rules reload succeeded after retrying")
    );
    serve.stop();
}

/// Issue 15, defect 11: the watched rules directory deleted (`/health` degraded), recreated
/// (watched again, its rules loaded), edited, renamed aside and replaced, and after a SIGHUP:
/// every edit goes live.
#[test]
fn a_deleted_and_recreated_rules_directory_is_watched_again() {
    let tmp = common::TempDir::new("daemon-rewatch");
    let pack = tmp.0.join("mine");
    std::fs::create_dir_all(&pack).unwrap();
    std::fs::write(pack.join("probe.rules"), probe_rule("One")).unwrap();
    let serve = Serve::start(
        &tmp.0,
        &[
            "--no-default-rules",
            "--rules",
            pack.to_str().unwrap(),
            "--no-db",
        ],
    );
    let api = serve.api;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let probe = common::v5_now(0, &[([10, 9, 0, 1], [198, 51, 100, 1], 4444)]);
    sock.send_to(&probe, serve.udp).unwrap();
    let family = || {
        let v = get_json(api, "/hosts/10.9.0.1");
        v["host"]["os"]["family"].as_str().map(str::to_string)
    };
    let live = |f: &str| {
        wait_until(&format!("{f} live"), Duration::from_secs(15), || {
            family().as_deref() == Some(f)
        });
    };
    live("One");
    assert_eq!(get_json(api, "/health")["status"], "ok");

    std::fs::remove_dir_all(&pack).unwrap();
    wait_until(
        "degraded without the directory",
        Duration::from_secs(10),
        || {
            let h = get_json(api, "/health");
            h["status"] == "degraded" && h["problems"].to_string().contains("not watching")
        },
    );
    std::fs::create_dir_all(&pack).unwrap();
    save(&pack.join("probe.rules"), &probe_rule("Two"));
    live("Two");
    wait_until("ok again", Duration::from_secs(10), || {
        get_json(api, "/health")["status"] == "ok"
    });
    save(&pack.join("probe.rules"), &probe_rule("Three"));
    live("Three");

    // Renamed aside and replaced by another directory, as a deployment swaps them.
    let next = tmp.0.join("next");
    std::fs::create_dir_all(&next).unwrap();
    std::fs::write(next.join("probe.rules"), probe_rule("Four")).unwrap();
    std::fs::rename(&pack, tmp.0.join("old")).unwrap();
    std::fs::rename(&next, &pack).unwrap();
    live("Four");
    save(&pack.join("probe.rules"), &probe_rule("Five"));
    live("Five");

    // After a SIGHUP, still watching.
    unsafe_kill(serve.child.id(), 1);
    save(&pack.join("probe.rules"), &probe_rule("Six"));
    live("Six");
    let h = get_json(api, "/health");
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["watch"]["watching"], true, "{h}");
    assert!(h["watch"]["rewatches"].as_u64().unwrap() >= 2, "{h}");
    serve.stop();
}

/// Issue 15, small item: after kill -9 under load, at most about one flush interval of new
/// hosts is missing from the SQLite inventory. 1,000 hosts are kept busy (every one changed ten
/// times a second, so each write has them all to write again) while 3,000 new ones arrive;
/// six flush intervals later the daemon is killed: every host is in the inventory. (Before,
/// a write went on with the first shard as long as its hosts kept changing, newest change
/// first, and the other shard's hosts were never written.)
#[test]
fn kill_9_under_load_loses_at_most_about_one_flush_interval() {
    let tmp = common::TempDir::new("daemon-kill9");
    let pack = tmp.0.join("mine");
    std::fs::create_dir_all(&pack).unwrap();
    std::fs::write(pack.join("r.rules"), RULES).unwrap();
    let db = tmp.0.join("inv.db");
    let mut serve = Serve::start(
        &tmp.0,
        &[
            "--no-default-rules",
            "--rules",
            pack.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--workers",
            "2",
        ],
    );
    let api = serve.api;
    let busy = 1_020;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let hot = sender(
        serve.udp,
        datagrams(0..busy),
        10_000,
        stop.clone(),
        sent.clone(),
    );
    let fresh = 100_000..103_000u32;
    send_paced(serve.udp, &datagrams(fresh.clone()), 1_000);
    let all_sent = Instant::now();
    wait_until("every host tracked", Duration::from_secs(30), || {
        metric(&metrics(api), "flowprint_hosts_tracked") == u64::from(busy) + 3_000
    });
    // Six flush intervals (the test daemon's is 1 s) under the same load.
    while all_sent.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let writes = metric(&metrics(api), "flowprint_inventory_writes_total");
    unsafe_kill(serve.child.id(), 9);
    let _ = serve.child.wait();
    stop.store(true, Ordering::Relaxed);
    hot.join().unwrap();
    let stored: std::collections::HashSet<String> =
        flowprint::inventory::open(db.to_str().unwrap())
            .unwrap()
            .load_all()
            .unwrap()
            .into_iter()
            .map(|h| h.host)
            .collect();
    let missing: Vec<String> = (0..busy)
        .chain(fresh)
        .map(|i| std::net::Ipv4Addr::from(host(i)).to_string())
        .filter(|h| !stored.contains(h))
        .collect();
    eprintln!(
        "kill -9 {:?} after the last new host, {writes} writes done: {} stored, {} of the {} hosts missing",
        all_sent.elapsed(),
        stored.len(),
        missing.len(),
        busy + 3_000
    );
    assert!(
        missing.is_empty(),
        "{} hosts lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(writes >= 2, "{writes} writes in 6 s with a 1 s interval");
}
