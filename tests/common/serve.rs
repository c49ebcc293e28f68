//! `flowprint serve` as a child process, and a minimal HTTP client for its API.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal HTTP/1.1 exchange: (status, body).
pub fn http(
    api: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub fn get_json(api: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = http(api, "GET", path, None, b"");
    assert!(status == 200 || status == 404, "{path}: {status} {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// A value of the Prometheus text (the sum over label sets of a name).
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

pub struct Serve {
    pub child: Child,
    pub api: SocketAddr,
    pub udp: SocketAddr,
    pub dir: PathBuf,
}

impl Serve {
    pub fn start(dir: &Path, extra: &[&str]) -> Serve {
        Serve::start_via(dir, extra, &[])
    }

    /// Starts the daemon through `wrapper`, a program (and its arguments) that ends by
    /// executing the daemon's command line, e.g. `prlimit --nofile=64:64`.
    pub fn start_via(dir: &Path, extra: &[&str], wrapper: &[&str]) -> Serve {
        let api: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let udp: SocketAddr = format!("127.0.0.1:{}", super::free_udp_port())
            .parse()
            .unwrap();
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        let bin = env!("CARGO_BIN_EXE_flowprint");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = command
            .current_dir(dir)
            .args(["serve", "--listen", &udp.to_string()])
            .args(["--api-listen", &api.to_string()])
            .args(["--state-dir", dir.to_str().unwrap()])
            .args(["--debounce", "100ms", "--flush-interval", "1s"])
            .args(extra)
            .env("FLOWPRINT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let s = Serve {
            child,
            api,
            udp,
            dir: dir.to_path_buf(),
        };
        let t = Instant::now();
        while TcpStream::connect(api).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "serve did not start: {}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("api-token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> String {
        unsafe_kill(self.child.id(), 15);
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "serve exited with {status}: {}",
                    self.log()
                );
                return self.log();
            }
            assert!(t.elapsed() < Duration::from_secs(30), "serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            for l in log.lines().filter(|l| l.contains("panicked")) {
                eprintln!("serve.log: {l}");
            }
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- serve.log (last 40 lines, newest first) ---\n{}",
                tail.join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn unsafe_kill(pid: u32, sig: i32) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    t.elapsed()
}
