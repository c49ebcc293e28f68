//! Helpers shared by integration tests: the shared corpus, and nfdump's tools as a peer.
#![allow(dead_code)]

pub mod cli;
pub mod postgres;
pub mod serve;

use flowprint::flow::Flow;
use flowprint::flow::ingest::{InputFormat, read_flows};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `../shared/corpus/<sub>`, or `None` (with a one-line reason) when absent.
pub fn corpus(sub: &str) -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/corpus")
        .join(sub);
    if d.is_dir() {
        Some(d)
    } else {
        eprintln!("skipped: {} is absent", d.display());
        None
    }
}

/// Whether a program is on PATH (tests that need it skip with a reason otherwise; with
/// `CI=true`, where `scripts/test.sh` has installed everything, a missing program fails the test).
pub fn have(program: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{program} is not installed, and CI=true (scripts/test.sh installs it)"
        );
        eprintln!("skipped: {program} is not installed (scripts/test.sh installs it)");
    }
    ok
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "flowprint-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// nfcapd collecting on 127.0.0.1:`port` into `dir`.
pub struct Nfcapd {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Nfcapd {
    pub fn start(dir: &Path) -> Nfcapd {
        Nfcapd::start_repeating(dir, None)
    }

    /// Also repeats every datagram it receives to 127.0.0.1:`repeat` (nfcapd's `-R`), so that
    /// a second collector sees exactly the same datagrams.
    pub fn start_repeating(dir: &Path, repeat: Option<u16>) -> Nfcapd {
        let port = free_udp_port();
        let mut cmd = Command::new("nfcapd");
        cmd.args(["-b", "127.0.0.1", "-p", &port.to_string(), "-w"])
            .arg(dir)
            .args(["-t", "3600"]);
        if let Some(r) = repeat {
            cmd.args(["-R", &format!("127.0.0.1/{r}")]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nfcapd");
        std::thread::sleep(Duration::from_millis(700));
        Nfcapd {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// Stops nfcapd (SIGTERM, so that it writes its file) and decodes what it collected with
    /// `nfdump -o csv`, read back with flowprint's CSV reader.
    pub fn stop_and_read(mut self) -> Vec<Flow> {
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let mut flows = Vec::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("nfcapd.20")
            })
            .collect();
        files.sort();
        for f in files {
            flows.extend(nfdump_csv(&f));
        }
        flows
    }
}

/// Flows of an nfcapd file as `nfdump -o csv` prints them (TZ=UTC).
pub fn nfdump_csv(file: &Path) -> Vec<Flow> {
    let out = Command::new("nfdump")
        .env("TZ", "UTC")
        .arg("-r")
        .arg(file)
        .args(["-o", "csv"])
        .output()
        .unwrap();
    let mut flows = Vec::new();
    read_flows(
        out.stdout.as_slice(),
        "nfdump",
        InputFormat::NfdumpCsv,
        &mut |f| flows.push(f),
        &mut |e| panic!("nfdump csv: {e}"),
    )
    .unwrap();
    flows
}

/// Sends datagrams to `port` on 127.0.0.1 from `from` (any 127.x address).
pub fn send(from: &str, port: u16, datagrams: &[Vec<u8>]) {
    let s = UdpSocket::bind(format!("{from}:0")).unwrap();
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for d in datagrams {
        s.send_to(d, to).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A comparable key of a flow: endpoints, protocol, unsampled counters, TCP flags. ICMP
/// destination ports are left out: nfdump 1.7.1 itself prints type/code there for IPFIX and 0
/// for v9.
pub fn key(f: &Flow) -> (String, String, u16, u16, u8, u64, u64, u8) {
    key_scaled(f, 1)
}

/// [`key`] with counters divided by `rate`.
pub fn key_scaled(f: &Flow, rate: u64) -> (String, String, u16, u16, u8, u64, u64, u8) {
    let icmp = matches!(f.proto, 1 | 58);
    (
        f.src.to_string(),
        f.dst.to_string(),
        f.src_port,
        if icmp { 0 } else { f.dst_port },
        f.proto,
        f.packets / rate,
        f.bytes / rate,
        if f.proto == 6 { f.tcp_flags } else { 0 },
    )
}

/// A NetFlow v5 datagram of TCP flows `(src, dst, dst port)` that happened just now (3 packets,
/// 500 bytes each, source port 40000).
pub fn v5_now(seq: u32, flows: &[([u8; 4], [u8; 4], u16)]) -> Vec<u8> {
    use flowprint::flow::netflow::build::{V5Header, V5Record, v5};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let header = V5Header {
        seq,
        uptime_ms: 100_000,
        secs: now.as_secs() as u32,
        sampling: 0,
    };
    let records: Vec<V5Record> = flows
        .iter()
        .map(|&(src, dst, dst_port)| V5Record {
            src,
            dst,
            src_port: 40_000,
            dst_port,
            proto: 6,
            tcp_flags: 0x1b,
            packets: 3,
            bytes: 500,
            first_ms: 99_000,
            last_ms: 99_500,
        })
        .collect();
    v5(&header, &records)
}

/// Waits until something listens on 127.0.0.1:`port` (a server the test started), at most
/// `limit`.
pub fn wait_for_port(port: u16, what: &str, limit: Duration) {
    let t = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < limit, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A passive DNS log (flowprint's JSONL) in `dir` where `addr` answered for each of `names` a
/// minute ago, for a day: how tests give a daemon names an attacker chose.
pub fn dns_log(dir: &Path, addr: &str, names: &[&str]) -> PathBuf {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let text: String = names
        .iter()
        .map(|n| {
            format!(
                "{}\n",
                serde_json::json!({"ts": now - 60, "query": n, "answers": [addr], "ttl": 86400})
            )
        })
        .collect();
    let path = dir.join("names.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}
