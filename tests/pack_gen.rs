//! `flowprint pack gen`: measured download overhead, verdicts end to end, the reference
//! catalogue, and a large generated pack.
//!
//! The measurement serves files of 10 kB, 1 MB and 20 MB over HTTP (python3's http.server) and
//! HTTPS (`openssl s_server -WWW`, self-signed certificate made here) inside a network namespace
//! of its own (`unshare --net`; its loopback gets a 1500-byte MTU and no segmentation offload, so
//! packets are what an Ethernet link carries), downloads them with curl, captures with tcpdump,
//! turns the capture into NetFlow v9 with softflowd and receives it with flowprint's collector.
//! Run `cargo nextest run --test pack_gen --no-capture` to see the table (docs/pack-gen.md).

mod common;

use flowprint::collect::{Collector, CollectorConfig};
use flowprint::flow::Flow;
use flowprint::flow::ingest::flow_to_json;
use flowprint::pack::generate::{Model, Scheme, Transport};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const SERVER: &str = "updates.flowprint.test";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flowprint"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run flowprint");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Deterministic bytes that no transport compresses.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A catalogued product and version.
type Catalogued = Option<(&'static str, &'static str)>;

/// The served files: (name, size, catalogued product and version).
const FILES: &[(&str, usize, Catalogued)] = &[
    ("small.bin", 10_000, Some(("fp-small", "1.0"))),
    ("medium.bin", 1_000_000, Some(("fp-medium", "2.0"))),
    ("large.bin", 20_000_000, Some(("fp-large", "3.0"))),
    ("other.bin", 3_000_000, None),
];

/// One download: which file, over which variant, from which client port.
struct Download {
    file: usize,
    variant: &'static str,
    port: u16,
}

/// Runs the downloads of one namespace; returns the capture's path, or `None` to skip.
fn capture(dir: &Path, tag: &str, timestamps: bool, tls: bool, downloads: &[Download]) -> bool {
    let mut script = String::from(
        "set -e\nip link set lo up mtu 1500\nip link set dev lo gso_max_segs 1\n\
         ip link set dev lo gro_max_size 1500 2>/dev/null || true\n",
    );
    if !timestamps {
        script.push_str("sysctl -qw net.ipv4.tcp_timestamps=0\n");
    }
    script.push_str(&format!(
        "cd {www}\ntcpdump -i lo -w {pcap} -s 128 -U tcp 2>/dev/null & T=$!\n\
         python3 -m http.server 8080 --bind :: >/dev/null 2>&1 & P=$!\n",
        www = dir.join("www").display(),
        pcap = dir.join(format!("{tag}.pcap")).display()
    ));
    if tls {
        script.push_str(&format!(
            "openssl s_server -WWW -accept 127.0.0.3:8443 -cert {c} -key {k} -quiet >/dev/null 2>&1 & S=$!\n",
            c = dir.join("cert.pem").display(),
            k = dir.join("key.pem").display()
        ));
    } else {
        script.push_str("S=\n");
    }
    script
        .push_str("trap 'kill $P $S 2>/dev/null; sleep 1; kill $T 2>/dev/null' EXIT\nsleep 1.5\n");
    for d in downloads {
        let name = FILES[d.file].0;
        let url = match d.variant {
            "https" => format!("-k https://127.0.0.3:8443/{name}"),
            "ipv6" => format!("-g http://[::1]:8080/{name}"),
            _ => format!("http://127.0.0.3:8080/{name}"),
        };
        let bind = if d.variant == "ipv6" {
            String::new()
        } else {
            "--interface 127.0.0.2".into()
        };
        script.push_str(&format!(
            "curl -sS -f -o /dev/null --local-port {} {bind} {url}\n",
            d.port
        ));
    }
    let path = dir.join(format!("{tag}.sh"));
    std::fs::write(&path, script).unwrap();
    let out = Command::new("unshare")
        .arg("--net")
        .arg("sh")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            std::env::var("CI").as_deref() != Ok("true") || !err.contains("unshare"),
            "unshare --net failed under CI: {err}"
        );
        eprintln!("skipped: the download namespace failed: {err}");
        return false;
    }
    true
}

/// The flows softflowd makes of a capture, as flowprint's collector receives them (NetFlow v9).
fn flows_of(pcap: &Path, tmp: &Path) -> Vec<Flow> {
    let mut collector = Collector::bind(&CollectorConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        ..Default::default()
    })
    .unwrap();
    let port = collector.listeners()[0].addr.port();
    let stop = collector.stop_flag();
    let runner = std::thread::spawn(move || {
        let mut flows: Vec<Flow> = Vec::new();
        collector.run(None, &mut |f| flows.push(f), &mut |w| eprintln!("{w}"));
        collector.shutdown(&mut |f| flows.push(f), &mut |_| {});
        flows
    });
    let mut child = Command::new("softflowd")
        .args(["-d", "-r"])
        .arg(pcap)
        .args([
            "-v",
            "9",
            "-n",
            &format!("127.0.0.1:{port}"),
            "-c",
            "none",
            "-p",
        ])
        .arg(tmp.join("softflowd.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start softflowd");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("softflowd did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    runner.join().unwrap()
}

/// What the capture says of each download, per client port.
#[derive(Default, Clone, Copy)]
struct Seen {
    /// IP bytes of retransmitted server segments (payload the server had sent before).
    resent: u64,
    /// Payload bytes the server sent (its sequence numbers say so) that the capture does not
    /// hold: tcpdump dropped them under load, so the flow record, metered from the capture,
    /// cannot hold them either.
    missing: u64,
}

/// [`Seen`] per client port, read from a pcap of the test's traffic (Ethernet framing, IPv4 or
/// IPv6, TCP).
fn retransmitted(pcap: &Path) -> std::collections::HashMap<u16, Seen> {
    let data = std::fs::read(pcap).unwrap();
    let le = data[..4] == [0xd4, 0xc3, 0xb2, 0xa1] || data[..4] == [0x4d, 0x3c, 0xb2, 0xa1];
    let u32_at = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let be16 = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let mut seen: std::collections::HashSet<(u16, u32)> = Default::default();
    let mut out: std::collections::HashMap<u16, u64> = Default::default();
    // Per client port: first sequence number, end of the furthest segment (relative to the
    // first), payload bytes of first transmissions.
    let mut span: std::collections::HashMap<u16, (u32, u64, u64)> = Default::default();
    let mut at = 24;
    while at + 16 <= data.len() {
        let incl = u32_at(&data[at + 8..]) as usize;
        let pkt = &data[at + 16..(at + 16 + incl).min(data.len())];
        at += 16 + incl;
        if pkt.len() < 14 {
            continue;
        }
        let (ip, ip_len, hdr) = match be16(&pkt[12..]) {
            0x0800 if pkt.len() >= 34 && pkt[23] == 6 => {
                let ihl = usize::from(pkt[14] & 0xf) * 4;
                (&pkt[14..], usize::from(be16(&pkt[16..])), ihl)
            }
            0x86dd if pkt.len() >= 54 && pkt[20] == 6 => {
                (&pkt[14..], usize::from(be16(&pkt[18..])) + 40, 40)
            }
            _ => continue,
        };
        if ip.len() < hdr + 20 {
            continue;
        }
        let tcp = &ip[hdr..];
        let (sport, dport, seq) = (be16(tcp), be16(&tcp[2..]), be32(&tcp[4..]));
        let payload = ip_len.saturating_sub(hdr + usize::from(tcp[12] >> 4) * 4) as u32;
        if !matches!(sport, 8080 | 8443) || payload == 0 {
            continue;
        }
        // A segment whose first byte was sent before is a retransmission (the capture may
        // order packets of different CPUs differently, so no "highest sequence" is used).
        let (first, end, unique) = span.entry(dport).or_insert((seq, 0, 0));
        *end = (*end).max(u64::from(seq.wrapping_sub(*first)) + u64::from(payload));
        if !seen.insert((dport, seq)) {
            *out.entry(dport).or_default() += ip_len as u64;
        } else {
            *unique += u64::from(payload);
        }
    }
    span.into_iter()
        .map(|(port, (_, end, unique))| {
            let seen = Seen {
                resent: out.get(&port).copied().unwrap_or(0),
                missing: end.saturating_sub(unique),
            };
            (port, seen)
        })
        .collect()
}

/// Bytes and packets the server sent on the connection from client port `port`.
fn server_bytes(flows: &[Flow], port: u16) -> (u64, u64) {
    flows
        .iter()
        .filter(|f| f.dst_port == port && matches!(f.src_port, 8080 | 8443))
        .fold((0, 0), |(b, p), f| (b + f.bytes, p + f.packets))
}

fn write_flows(path: &Path, flows: &[&Flow]) {
    let text: String = flows
        .iter()
        .map(|f| format!("{}\n", flow_to_json(f)))
        .collect();
    std::fs::write(path, text).unwrap();
}

/// `analyze` of `flows` with the pack; the summaries of 127.0.0.2 (JSON), if any.
fn analyze(dir: &Path, pack: &Path, flows: &[&Flow], tag: &str) -> Option<serde_json::Value> {
    let path = dir.join(format!("{tag}.jsonl"));
    write_flows(&path, flows);
    let out = run(bin()
        .arg("analyze")
        .arg("--rules")
        .arg(pack)
        .args([
            "--no-default-rules",
            "--local-net",
            "127.0.0.2/32",
            "--format",
            "json",
        ])
        .arg("--dns-log")
        .arg(dir.join("dns.jsonl"))
        .arg(&path));
    assert_eq!(out.status.code(), Some(0), "analyze {tag}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|h| h["host"] == "127.0.0.2")
}

fn software(host: &Option<serde_json::Value>) -> Vec<(String, Option<String>)> {
    let Some(h) = host else { return Vec::new() };
    h["software"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["version"].as_str().map(String::from),
            )
        })
        .collect()
}

#[test]
fn download_overhead_is_measured_and_generated_rules_identify_downloads() {
    for p in ["tcpdump", "softflowd", "curl", "python3", "unshare", "ip"] {
        if !common::have(p) {
            return;
        }
    }
    let tls = common::have("openssl");
    let tmp = common::TempDir::new("pack-gen");
    let dir = &tmp.0;
    std::fs::create_dir_all(dir.join("www")).unwrap();
    for (i, &(name, size, _)) in FILES.iter().enumerate() {
        std::fs::write(dir.join("www").join(name), noise(size, i as u64 + 7)).unwrap();
    }
    if tls {
        let ok = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .args(["-subj", &format!("/CN={SERVER}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "openssl req");
    }
    // Namespace 1: TCP timestamps on (Linux's default): HTTP and HTTPS over IPv4, HTTP over IPv6.
    // Namespace 2: timestamps off (Windows' default).
    let mut port = 41_000;
    let mut ts = Vec::new();
    for (file, _) in FILES.iter().enumerate() {
        for variant in ["http", "https", "ipv6"] {
            if variant == "https" && !tls {
                continue;
            }
            port += 1;
            ts.push(Download {
                file,
                variant,
                port,
            });
        }
    }
    let mut nots = Vec::new();
    for file in 0..3 {
        port += 1;
        nots.push(Download {
            file,
            variant: "http",
            port,
        });
    }
    if !capture(dir, "ts", true, tls, &ts) || !capture(dir, "nots", false, false, &nots) {
        return;
    }
    let flows_ts = flows_of(&dir.join("ts.pcap"), dir);
    let flows_nots = flows_of(&dir.join("nots.pcap"), dir);
    let mut resent = retransmitted(&dir.join("ts.pcap"));
    resent.extend(retransmitted(&dir.join("nots.pcap")));

    // The measurement.
    let mut failures = Vec::new();
    // Retransmissions (loopback under load drops packets too) are part of what a flow record
    // counts, but not of the model: they are shown, and taken out before comparing.
    eprintln!(
        "variant          file          size       bytes  packets  resent  overhead  overhead %"
    );
    let mut rows = Vec::new();
    for (flows, downloads, ts_on) in [(&flows_ts, &ts, true), (&flows_nots, &nots, false)] {
        for d in downloads.iter() {
            let (name, size, _) = FILES[d.file];
            let (bytes, packets) = server_bytes(flows, d.port);
            let label = format!("{}{}", d.variant, if ts_on { "" } else { " no-ts" });
            if bytes == 0 {
                failures.push(format!("{label} {name}: no flow"));
                continue;
            }
            let seen = resent.get(&d.port).copied().unwrap_or_default();
            let again = seen.resent;
            let over = (bytes - again) as i64 - size as i64;
            eprintln!(
                "{label:<16} {name:<10} {size:>10} {bytes:>11} {packets:>8} {again:>7} {over:>9} {:>10.3}",
                over as f64 * 100.0 / size as f64
            );
            if seen.missing > 0 {
                eprintln!(
                    "{label} {name}: window not checked: the capture lost {} payload bytes",
                    seen.missing
                );
                continue;
            }
            rows.push((label, d.variant, size as u64, bytes - again));
        }
    }
    assert!(
        !rows.is_empty(),
        "the capture lost payload of every download: nothing measured"
    );
    // Every measured download falls within the preset of its network and protocol, and IPv4
    // ones within the default (IPv4, HTTP or HTTPS).
    for (label, variant, size, bytes) in &rows {
        let transport = if *variant == "ipv6" {
            Transport::Ipv6
        } else {
            Transport::Ipv4
        };
        let scheme = if *variant == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let mut models = vec![
            (
                format!("{transport:?}/{scheme:?}"),
                Model::preset(transport, scheme),
            ),
            (
                "any/both".to_string(),
                Model::preset(Transport::Any, Scheme::Both),
            ),
        ];
        if transport == Transport::Ipv4 {
            models.push(("default".into(), Model::default()));
        }
        for (m_name, m) in models {
            let (center, tol) = m.window(*size);
            if bytes.abs_diff(center) > tol {
                failures.push(format!(
                    "{label} {size}: {bytes} bytes outside {m_name} window {center} ± {tol}"
                ));
            }
        }
    }

    // Verdicts end to end: a pack from a CSV of the served files; names from a passive DNS log.
    let mut csv = String::from("product,version,size,servers,file\n");
    for &(name, size, cat) in FILES {
        if let Some((product, version)) = cat {
            csv.push_str(&format!("{product},{version},{size},{SERVER},{name}\n"));
        }
    }
    std::fs::write(dir.join("catalogue.csv"), csv).unwrap();
    let pack = dir.join("fp-test");
    let out = run(bin()
        .args(["pack", "gen", "sizes", "--csv"])
        .arg(dir.join("catalogue.csv"))
        .args(["--name", "fp-test", "-o"])
        .arg(&pack));
    assert_eq!(out.status.code(), Some(0), "pack gen sizes");
    let first = flows_ts.iter().map(|f| f.start_ms).min().unwrap();
    std::fs::write(
        dir.join("dns.jsonl"),
        format!(
            "{{\"ts\": {}, \"query\": \"{SERVER}\", \"answers\": [\"127.0.0.3\"], \"ttl\": 86400}}\n",
            first / 1000 - 5
        ),
    )
    .unwrap();
    for d in ts.iter().filter(|d| d.variant != "ipv6") {
        let (name, _, cat) = FILES[d.file];
        let conn: Vec<&Flow> = flows_ts
            .iter()
            .filter(|f| f.dst_port == d.port || f.src_port == d.port)
            .collect();
        let seen = resent.get(&d.port).copied().unwrap_or_default();
        let again = seen.resent;
        if seen.missing > 0 {
            eprintln!(
                "{} {name}: verdict not checked: the capture lost {} payload bytes",
                d.variant, seen.missing
            );
            continue;
        }
        if again * 500 > FILES[d.file].1 as u64 {
            eprintln!(
                "{} {name}: verdict not checked: {again} bytes retransmitted (over 0.2 %)",
                d.variant
            );
            continue;
        }
        let host = analyze(dir, &pack, &conn, &format!("{}-{name}", d.variant));
        let got = software(&host);
        let want: Vec<(String, Option<String>)> = cat
            .map(|(p, v)| vec![(p.to_string(), Some(v.to_string()))])
            .unwrap_or_default();
        if got != want {
            failures.push(format!(
                "{} {name}: expected software {want:?}, got {got:?}",
                d.variant
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The Debian bookworm sizes of `../shared/reference/debian-package-sizes.tsv` as a `Packages`
/// index (gzip), the pack generated from it, and a flow of one package's size.
#[test]
fn reference_catalogue_becomes_a_pack_whose_rules_fire() {
    let tsv =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/debian-package-sizes.tsv");
    let Ok(text) = std::fs::read_to_string(&tsv) else {
        eprintln!("skipped: {} is absent", tsv.display());
        return;
    };
    eprintln!("reading {}", tsv.display());
    let mut packages = String::new();
    let mut rows = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let [package, version, size, filename, sha256] = f[..] else {
            panic!("unexpected row {line:?}");
        };
        packages.push_str(&format!(
            "Package: {package}\nVersion: {version}\nArchitecture: amd64\nDescription: a package\n \
             whose description goes on\n .\n over lines\nFilename: {filename}\nSize: {size}\nSHA256: {sha256}\n\n"
        ));
        rows.push((
            package.to_string(),
            version.to_string(),
            size.parse::<u64>().unwrap(),
        ));
    }
    let tmp = common::TempDir::new("pack-gen-ref");
    let dir = &tmp.0;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, packages.as_bytes()).unwrap();
    std::fs::write(dir.join("Packages.gz"), gz.finish().unwrap()).unwrap();
    let pack = dir.join("bookworm");
    let out = run(bin()
        .args(["pack", "gen", "debian", "--packages"])
        .arg(dir.join("Packages.gz"))
        .args([
            "--from",
            "deb.mirror.flowprint.test",
            "--from",
            "*.cdn.flowprint.test",
        ])
        .args(["--name", "bookworm", "--version", "1.0.0", "-o"])
        .arg(&pack));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("0 error(s), 0 warning(s)"), "{err}");
    assert!(
        err.contains(&format!("{} entries (gzip), 0 malformed", rows.len())),
        "{err}"
    );
    let check = run(bin().arg("check").arg(&pack));
    assert_eq!(check.status.code(), Some(0));

    // A package whose size no other package is near: its rule names product and version.
    let rules: String = std::fs::read_dir(pack.join("rules"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let (product, version, size) = rows
        .iter()
        .find(|(p, v, _)| {
            rules.contains(&format!(
                "software = \"{p}\" version \"{v}\" confidence 0.7"
            ))
        })
        .expect("some package has a size of its own");
    let (center, _) = Model::default().window(*size);
    // A byte count no package's window admits.
    let covered = |b: u64| {
        rows.iter().any(|(_, _, s)| {
            let (c, t) = Model::default().window(*s);
            b.abs_diff(c) <= t
        })
    };
    let miss = (1..)
        .map(|k| center + k * 10_007)
        .find(|&b| !covered(b))
        .unwrap();
    let flow = |bytes: u64, port: u16| {
        format!(
            "{{\"start\": \"2024-05-01T10:00:00Z\", \"end\": \"2024-05-01T10:00:02Z\", \"src\": \"192.0.2.80\", \"src_port\": 80, \"dst\": \"192.168.1.10\", \"dst_port\": {port}, \"proto\": \"tcp\", \"bytes\": {bytes}, \"packets\": {}, \"src_name\": \"a.cdn.flowprint.test\"}}\n",
            bytes / 1500 + 1
        )
    };
    for (tag, text, expect) in [
        ("hit", flow(center, 40001), true),
        // Split by an active timeout: two records of one connection.
        (
            "split",
            flow(center / 3, 40002) + &flow(center - center / 3, 40002),
            true,
        ),
        ("miss", flow(miss, 40003), false),
    ] {
        let path = dir.join(format!("{tag}.jsonl"));
        std::fs::write(&path, text).unwrap();
        let out = run(bin()
            .arg("analyze")
            .arg("--rules")
            .arg(&pack)
            .args(["--no-default-rules", "--format", "json"])
            .arg(&path));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let fired = stdout.contains(&format!("\"name\":\"{product}\""))
            && stdout.contains(&format!("\"version\":\"{version}\""));
        assert_eq!(fired, expect, "{tag}: {stdout}");
        if !expect {
            assert!(!stdout.contains("\"software\":[{"), "{tag}: {stdout}");
        }
    }
}

/// A synthetic index of 60,000 packages (real indexes have 60,000+): generation, `check` and
/// `--packages-matching`, with their times.
#[test]
fn a_large_index_generates_a_pack_that_compiles() {
    let tmp = common::TempDir::new("pack-gen-large");
    let dir = &tmp.0;
    let mut text = String::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..60_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // log-uniform sizes from 1 kB to 100 MB
        let size = (1_000.0 * 10f64.powf((x % 100_000) as f64 / 20_000.0)) as u64;
        let lib = if i % 3 == 0 { "lib" } else { "" };
        text.push_str(&format!(
            "Package: {lib}pkg{i}\nVersion: 1.{}-{}\nArchitecture: amd64\nSize: {size}\n\n",
            i % 7,
            i % 5
        ));
    }
    std::fs::write(dir.join("Packages"), text).unwrap();
    let pack = dir.join("large");
    let started = Instant::now();
    let out = run(bin()
        .args(["pack", "gen", "debian", "--packages"])
        .arg(dir.join("Packages"))
        .args([
            "--from",
            "deb.mirror.flowprint.test",
            "--no-check",
            "--max-products",
            "1000000",
            "-o",
        ])
        .arg(&pack));
    assert_eq!(out.status.code(), Some(0));
    eprintln!(
        "generated 60,000 rules in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let out = run(bin().arg("check").arg(&pack));
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("60000 rule(s) compiled, 0 error(s)"), "{err}");
    eprintln!(
        "checked 60,000 rules in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let subset = dir.join("libs");
    let out = run(bin()
        .args(["pack", "gen", "debian", "--packages"])
        .arg(dir.join("Packages"))
        .args([
            "--from",
            "deb.mirror.flowprint.test",
            "--packages-matching",
            "^lib",
        ])
        .args(["--match", "record", "--max-products", "1000000", "-o"])
        .arg(&subset));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("40000 entries left out by the selection"),
        "{err}"
    );
}

#[test]
fn bad_catalogues_are_reported_not_fatal() {
    let tmp = common::TempDir::new("pack-gen-bad");
    let dir = &tmp.0;
    std::fs::write(
        dir.join("cat.csv"),
        "product,size,version,servers\n\
         Firefox,58300000,128.5.0,*.download.flowprint.test\n\
         \"Tool, Inc.\",12345,1.0,dl.flowprint.test;mirror.flowprint.test\n\
         Broken,notanumber,1.0,dl.flowprint.test\n\
         Huge,99999999999999999999999,1.0,dl.flowprint.test\n\
         Bad server,1000,1.0,\"no spaces allowed\"\n",
    )
    .unwrap();
    let out = run(bin()
        .args(["pack", "gen", "sizes", "--csv"])
        .arg(dir.join("cat.csv"))
        .arg("-o")
        .arg(dir.join("p")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    for line in [4, 5, 6] {
        assert!(err.contains(&format!("cat.csv:{line}: skipped")), "{err}");
    }
    assert!(err.contains("2 entries (plain), 3 malformed"), "{err}");
    assert!(
        err.contains("2 rule(s) compiled in") && err.contains("0 error(s), 0 warning(s)"),
        "{err}"
    );
    // No header: refused.
    std::fs::write(dir.join("nohead.csv"), "Firefox,1,2,x.flowprint.test\n").unwrap();
    let out = run(bin()
        .args(["pack", "gen", "sizes", "--csv"])
        .arg(dir.join("nohead.csv"))
        .arg("-o")
        .arg(dir.join("q")));
    assert_eq!(out.status.code(), Some(2));
    // An existing pack is not overwritten without --force.
    let again = run(bin()
        .args(["pack", "gen", "sizes", "--csv"])
        .arg(dir.join("cat.csv"))
        .arg("-o")
        .arg(dir.join("p")));
    assert_eq!(again.status.code(), Some(2));
}

// ------------------------------------------------------------------ the readers and generator

use flowprint::pack::generate::{
    Catalogue, Entry, GenError, GeneratedPack, MAX_LINE, Matching, Options, generate,
    normalize_server, read_packages, read_sizes_csv,
};
use std::io::Write as _;

const STANZAS: &str = "Package: apt\nVersion: 2.6.1\nArchitecture: amd64\n\
    Description: package manager\n continued\n .\n more\nSize: 1372852\n\
    Filename: pool/main/a/apt/apt_2.6.1_amd64.deb\nSHA256: 6ea0\n\n\
    Package: bash\nVersion: 5.2.15-2+b2\nSize: 1491400\n";

fn packages(bytes: &[u8]) -> Catalogue {
    read_packages(bytes).unwrap()
}

#[test]
fn plain_gzip_xz_and_bzip2_indexes_read_alike() {
    let plain = STANZAS.as_bytes().to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let mut xz = Vec::new();
    lzma_rs::xz_compress(&mut &plain[..], &mut xz).unwrap();
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    bz.write_all(&plain).unwrap();
    let bz = bz.finish().unwrap();
    let want = packages(&plain).entries;
    assert_eq!(want.len(), 2);
    assert_eq!(want[0].product, "apt");
    assert_eq!(want[0].size, 1_372_852);
    assert_eq!(want[0].arch.as_deref(), Some("amd64"));
    assert_eq!(want[0].sha256.as_deref(), Some("6ea0"));
    assert_eq!((want[1].line, want[1].arch.as_deref()), (12, None));
    for (bytes, name) in [(&gz, "gzip"), (&xz, "xz"), (&bz, "bzip2")] {
        let c = packages(bytes);
        assert_eq!(c.entries, want, "{name}");
        assert_eq!(c.compression, name);
    }
    // CRLF line ends and a comment line
    let crlf = format!("# comment\n{}", STANZAS.replace('\n', "\r\n"));
    assert_eq!(packages(crlf.as_bytes()).entries.len(), 2);
}

#[test]
fn malformed_stanzas_are_counted_with_lines_and_skipped() {
    let text = "Package: a\nVersion: 1\nSize: 10\n\n\
        Package: b\nVersion: 1\n\n\
        Package: c\nVersion: 1\nSize: 12abc\n\n\
        Package: d\nVersion: 1\nSize: 99999999999999999999999999\n\n\
        Package: e\n  folded\nVersion: 1\nSize: 5\n\n\
        \x20starts with a continuation\nPackage: f\n\n\
        Package: g\nno colon here\nVersion: 1\nSize: 5\n\n\
        Package: h\nPackage: h\nVersion: 1\nSize: 5\n\n\
        Package: i\nVersion: 1\nSize: 0\n\n\
        Package: j\nVersion: 1\nSize: 7";
    let c = packages(text.as_bytes());
    let names: Vec<&str> = c.entries.iter().map(|e| e.product.as_str()).collect();
    assert_eq!(names, ["a", "j"]);
    assert_eq!(c.malformed_count, 8);
    let lines: Vec<u64> = c.malformed.iter().map(|m| m.line).collect();
    assert_eq!(lines, [5, 8, 12, 16, 21, 24, 29, 34]);
    assert!(
        c.malformed[2].message.contains("1 TiB"),
        "{:?}",
        c.malformed[2]
    );
    assert!(
        c.malformed[3].message.contains("continues"),
        "{:?}",
        c.malformed[3]
    );
}

#[test]
fn hostile_input_is_bounded() {
    // An overlong line spoils only its stanza.
    let mut text = b"Package: a\nVersion: 1\nSize: 1\nDescription: ".to_vec();
    text.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
    text.extend_from_slice(b"\n\nPackage: b\nVersion: 1\nSize: 2\n");
    let c = packages(&text);
    assert_eq!(c.entries.len(), 1);
    assert!(c.malformed[0].message.contains("longer than"));
    // Binary garbage and truncated compressed data: errors or skips, never a panic.
    let garbage: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let _ = read_packages(&garbage[..]);
    let _ = read_sizes_csv(&garbage[..]);
    for magic in [
        &[0x1f, 0x8b][..],
        &[0xfd, b'7', b'z', b'X', b'Z', 0],
        b"BZh9",
    ] {
        let mut v = magic.to_vec();
        v.extend_from_slice(&garbage[..100]);
        assert!(read_packages(&v[..]).is_err());
    }
}

#[test]
fn csv_rows_with_quotes_servers_and_errors() {
    let text = "version,product,size,servers,sha256\n\
        1.0,\"Tool, \"\"Pro\"\"\",1000,a.example.org; *.B.example.org.,ff\n\
        2.0,x,12,bad server,\n\
        3.0,y,,a.example.org\n\
        4.0,\"z,5,a.example.org\n";
    let c = read_sizes_csv(text.as_bytes()).unwrap();
    assert_eq!(c.entries.len(), 1);
    let e = &c.entries[0];
    assert_eq!(e.product, "Tool, \"Pro\"");
    assert_eq!(e.servers, ["a.example.org", "*.b.example.org"]);
    assert_eq!(c.malformed_count, 3);
    let lines: Vec<u64> = c.malformed.iter().map(|m| m.line).collect();
    assert_eq!(lines, [3, 4, 5]);
    assert!(matches!(
        read_sizes_csv(&b"product,size\nx,1\n"[..]),
        Err(GenError::Header(_))
    ));
}

fn opts() -> Options {
    Options {
        name: "t".into(),
        version: "1.0.0".into(),
        description: "d".into(),
        license: "CC0-1.0".into(),
        servers: vec!["mirror.example.org".into()],
        model: Model::default(),
        confidence: 0.8,
        max_products: 10,
        select: None,
        matching: Matching::Transfer,
        window_ms: 3_600_000,
        kind: "test".into(),
        source: "unit test".into(),
    }
}

fn entry(product: &str, version: &str, size: u64) -> Entry {
    Entry {
        product: product.into(),
        version: version.into(),
        arch: Some("amd64".into()),
        size,
        servers: Vec::new(),
        file: None,
        sha256: None,
        line: 1,
    }
}

fn compile(pack: &GeneratedPack) -> flowprint::compiler::Compiled {
    let mut c = flowprint::compiler::Compiler::new();
    for (path, text) in &pack.files {
        if path.extension().is_some_and(|e| e == "rules") {
            c.add_source("t", &path.display().to_string(), text);
        }
    }
    c.compile()
}

#[test]
fn shared_sizes_lower_confidence_or_leave_the_version_open() {
    let cat = Catalogue {
        entries: vec![
            entry("solo", "1", 50_000_000),
            entry("apt", "2.6.1", 1_372_852),
            entry("apt", "2.6.2", 1_373_116),
            entry("foo", "1", 300_000),
            entry("bar", "9", 300_100),
            entry("bar", "9", 300_100), // a duplicate: merged
            entry("weird \"name\"\\", "1:2.0~rc1+b1", 9_000_000),
        ],
        ..Default::default()
    };
    let pack = generate(&cat, &opts()).unwrap();
    let s = &pack.stats;
    assert_eq!(
        (s.rules, s.unique, s.shared, s.version_ambiguous),
        (6, 2, 2, 2)
    );
    let all: String = pack.files.iter().map(|(_, t)| t.as_str()).collect();
    assert!(all.contains("software = \"solo\" version \"1\" confidence 0.8"));
    assert!(all.contains("software = \"apt\" confidence 0.8"));
    assert!(all.contains("software = \"foo\" version \"1\" confidence 0.4"));
    assert!(all.contains("rule weird-name-1-2-0-rc1-b1-amd64 {"));
    let compiled = compile(&pack);
    assert_eq!(compiled.errors(), 0, "{:?}", compiled.diagnostics);
    assert_eq!(compiled.warnings(), 0);
    assert_eq!(compiled.ruleset.len(), 6);
    let mut record = opts();
    record.matching = Matching::Record;
    let compiled = compile(&generate(&cat, &record).unwrap());
    assert_eq!((compiled.errors(), compiled.ruleset.len()), (0, 6));
}

#[test]
fn options_and_servers_are_checked() {
    let cat = Catalogue {
        entries: vec![entry("a", "1", 100)],
        ..Default::default()
    };
    for bad in ["Bad", "1x", ""] {
        let mut o = opts();
        o.name = bad.into();
        assert!(generate(&cat, &o).is_err(), "{bad}");
    }
    let mut o = opts();
    o.servers = vec!["evil\" }".into()];
    assert!(matches!(generate(&cat, &o), Err(GenError::Server(_))));
    o.servers.clear();
    assert!(generate(&cat, &o).is_err(), "entries need servers");
    assert_eq!(normalize_server("*.Example.ORG.").unwrap(), "*.example.org");
    assert!(normalize_server("a..b").is_err());
    assert!(normalize_server("*.").is_err());
}

#[test]
fn model_windows_grow_with_size() {
    let m = Model::preset(Transport::Ipv4, Scheme::Http);
    assert_eq!(m.window(1_000_000), (1_034_550, 8_350));
    let any = Model::preset(Transport::Any, Scheme::Both);
    assert!(any.window(1_000_000).1 > m.window(1_000_000).1);
}
