//! Active resolution against a real DNS server: dnsmasq on 127.0.0.1 (a free port), serving
//! names from a hosts file it rereads on SIGHUP, killed and restarted to play a failing server.
//! Time is driven through `Refresher::refresh_due(now)` rather than by sleeping through TTLs.
//!
//! Without dnsmasq the tests skip with a one-line reason; with `CI=true` they fail instead
//! (scripts/test.sh installs it).

mod common;

use common::TempDir;
use flowprint::dns::resolve::{
    AnswerKind, HickoryResolver, RefreshSettings, Refresher, Resolve, ResolveError,
    ResolverSettings, now_ms, resolve_all,
};
use flowprint::dns::{DnsMap, Source};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// dnsmasq's path, or `None` (with a one-line reason) when it is not installed; a panic under
/// `CI=true`, where scripts/test.sh must have installed it.
fn dnsmasq_program() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join("dnsmasq"))
        .find(|p| p.is_file());
    if found.is_none() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true but dnsmasq is not installed: scripts/test.sh installs it"
        );
        eprintln!("skipped: dnsmasq is not installed (scripts/test.sh installs it)");
    }
    found
}

/// A port free for both UDP and TCP on 127.0.0.1.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Always in the hosts file: answers once the server is up.
const READY: &str = "192.0.2.254 ready.test\n";

/// A dnsmasq serving `*.test` from a hosts file, on 127.0.0.1 only.
struct Dnsmasq {
    program: PathBuf,
    dir: TempDir,
    port: u16,
    ttl: u32,
    extra: Vec<String>,
    child: Option<Child>,
}

impl Dnsmasq {
    /// Starts one whose answers have TTL `ttl` s, with `hosts` (hosts-file lines) and extra
    /// options (`--cname=...`, `--host-record=...`).
    fn start(ttl: u32, hosts: &str, extra: &[&str]) -> Option<Dnsmasq> {
        let program = dnsmasq_program()?;
        let mut d = Dnsmasq {
            program,
            dir: TempDir::new("dnsmasq"),
            port: 0,
            ttl,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        d.write_hosts(hosts);
        for _ in 0..5 {
            d.port = free_port();
            if d.spawn() {
                return Some(d);
            }
        }
        panic!("dnsmasq did not start; see its log above");
    }

    fn hosts_file(&self) -> PathBuf {
        self.dir.0.join("hosts")
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Writes the hosts file (read by dnsmasq at start and on SIGHUP).
    fn write_hosts(&self, hosts: &str) {
        let tmp = self.dir.0.join("hosts.new");
        std::fs::write(&tmp, format!("{READY}{hosts}")).unwrap();
        std::fs::rename(&tmp, self.hosts_file()).unwrap();
    }

    /// Starts the process on `self.port` and waits until it answers; false when it exits
    /// early (port taken).
    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new(&self.program);
        cmd.args([
            "-k",
            "--conf-file=/dev/null",
            "--log-facility=-",
            "--no-resolv",
            "--no-hosts",
            "--local=/test/",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
        ])
        .arg(format!("--port={}", self.port))
        .arg(format!("--addn-hosts={}", self.hosts_file().display()))
        .arg(format!("--local-ttl={}", self.ttl))
        .arg(format!("--pid-file={}", self.dir.0.join("pid").display()))
        .args(&self.extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("run dnsmasq");
        let probe = resolver(self.addr(), 100);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!("dnsmasq on port {} exited at start: {status}", self.port);
                return false;
            }
            if probe.lookup("ready.test").is_ok_and(|a| !a.is_empty()) {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("dnsmasq on port {} did not answer within 5 s", self.port);
    }

    /// SIGHUP: dnsmasq rereads the hosts file.
    fn reload(&self, hosts: &str) {
        self.write_hosts(hosts);
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -HUP {pid}");
    }

    /// The server goes down (SIGKILL).
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server comes back on the same port.
    fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "dnsmasq restart on port {}", self.port);
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.kill();
    }
}

fn resolver(server: SocketAddr, timeout_ms: u64) -> HickoryResolver {
    HickoryResolver::with_servers(
        &[server],
        ResolverSettings {
            timeout: Duration::from_millis(timeout_ms),
            attempts: 1,
        },
    )
    .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Sorted addresses of an answer.
fn addrs(answer: &[(IpAddr, u32)]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = answer.iter().map(|(a, _)| *a).collect();
    v.sort();
    v
}

/// Waits (up to 5 s) until `name` resolves to exactly `want`: dnsmasq rereads its hosts file
/// asynchronously after SIGHUP.
fn wait_for(r: &dyn Resolve, name: &str, want: &[&str]) {
    let mut want: Vec<IpAddr> = want.iter().map(|s| ip(s)).collect();
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = r.lookup(name).map(|a| addrs(&a));
        if got.as_ref() == Ok(&want) {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: {got:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Names valid for `addr` at `at` in the map.
fn names_at(map: &RwLock<DnsMap>, addr: &str, at: i64) -> Vec<String> {
    let mut v: Vec<String> = map
        .read()
        .unwrap()
        .lookup(ip(addr), at)
        .into_iter()
        .map(|(n, ..)| n.to_string())
        .collect();
    v.sort();
    v
}

/// A map without grace, so that validity is exactly last sighting + TTL.
fn strict_map() -> Arc<RwLock<DnsMap>> {
    let mut m = DnsMap::new();
    m.grace_ms = 0;
    Arc::new(RwLock::new(m))
}

/// Refresh on the TTL itself, no clamping, quick backoff: what the time-driven tests need.
fn exact_settings() -> RefreshSettings {
    RefreshSettings {
        min_ttl: Duration::ZERO,
        max_ttl: Duration::from_secs(3600),
        refresh_fraction: 1.0,
        negative_ttl: Duration::from_secs(60),
        concurrency: 4,
        backoff: Duration::from_secs(2),
        max_backoff: Duration::from_secs(8),
    }
}

const HOSTS: &str = "\
192.0.2.10 host.cdn.test
2001:db8::10 host.cdn.test
192.0.2.20 v4only.test
";

fn cname_server() -> Option<Dnsmasq> {
    Dnsmasq::start(
        7,
        HOSTS,
        &[
            // www.alias.test -> edge.alias.test -> host.cdn.test, the first link with TTL 3
            "--cname=www.alias.test,edge.alias.test,3",
            "--cname=edge.alias.test,host.cdn.test",
            "--host-record=rec.test,192.0.2.30,2001:db8::30",
            "--txt-record=txtonly.test,no address here",
        ],
    )
}

#[test]
fn a_and_aaaa_cname_chains_and_names_without_address() {
    let Some(server) = cname_server() else { return };
    let r = resolver(server.addr(), 500);

    let host = r.lookup("host.cdn.test").unwrap();
    assert_eq!(addrs(&host), [ip("192.0.2.10"), ip("2001:db8::10")]);
    assert!(host.iter().all(|&(_, ttl)| ttl == 7), "local TTL: {host:?}");
    assert_eq!(
        addrs(&r.lookup("rec.test").unwrap()),
        [ip("192.0.2.30"), ip("2001:db8::30")]
    );
    // A only: the AAAA query's "no data" does not hide the A answer.
    assert_eq!(addrs(&r.lookup("v4only.test").unwrap()), [ip("192.0.2.20")]);
    // Two CNAMEs deep: the addresses at the end of the chain, for the name asked, with the
    // smallest TTL along the chain.
    let alias = r.lookup("WWW.Alias.test.").unwrap();
    assert_eq!(addrs(&alias), [ip("192.0.2.10"), ip("2001:db8::10")]);
    assert!(
        alias.iter().all(|&(_, ttl)| ttl == 3),
        "chain TTL: {alias:?}"
    );

    // No such name, and a name with no address: empty answers, told apart.
    assert_eq!(r.lookup("nope.test"), Ok(vec![]));
    assert_eq!(
        r.lookup_answer("nope.test").unwrap().kind,
        AnswerKind::NxDomain
    );
    assert_eq!(r.lookup("txtonly.test"), Ok(vec![]));
    assert_eq!(
        r.lookup_answer("txtonly.test").unwrap().kind,
        AnswerKind::NoData
    );
    // A server that refuses (dnsmasq has no upstream for names outside *.test) is a failure.
    assert_eq!(
        r.lookup("www.example.com"),
        Err(ResolveError::Server("REFUSED".into()))
    );

    // A dead server first in the list does not stop the answer.
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let two = HickoryResolver::with_servers(
        &[dead, server.addr()],
        ResolverSettings {
            timeout: Duration::from_millis(300),
            attempts: 2,
        },
    )
    .unwrap();
    assert_eq!(two.servers(), [dead, server.addr()]);
    assert_eq!(
        addrs(&two.lookup("v4only.test").unwrap()),
        [ip("192.0.2.20")]
    );

    // One-shot, in the order given.
    let names: Vec<String> = ["www.alias.test", "nope.test", "v4only.test"]
        .map(String::from)
        .to_vec();
    let all = resolve_all(&r, &names, 2);
    assert_eq!(
        all.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["www.alias.test", "nope.test", "v4only.test"]
    );
    assert_eq!(all[0].1.as_ref().map(|a| a.len()), Ok(2));
    assert_eq!(all[1].1, Ok(vec![]));

    // In the map, the chain's addresses belong to the alias asked for, not to the target.
    let map = strict_map();
    let refresher = Refresher::new(
        ["www.alias.test"],
        Arc::new(r),
        map.clone(),
        exact_settings(),
    );
    let t0 = now_ms();
    let round = refresher.refresh_due(t0);
    assert_eq!(
        (round.looked_up, round.with_addresses, round.inserted),
        (1, 1, 2)
    );
    assert_eq!(names_at(&map, "192.0.2.10", t0), ["www.alias.test"]);
    assert_eq!(names_at(&map, "2001:db8::10", t0), ["www.alias.test"]);
    let (_, _, _, source) = map.read().unwrap().history(ip("192.0.2.10"))[0].clone();
    assert_eq!(source, Source::Resolved);
}

#[test]
fn ttl_is_honoured_and_a_changed_answer_is_picked_up_when_it_runs_out() {
    let Some(server) = Dnsmasq::start(4, "192.0.2.1 svc.test\n", &[]) else {
        return;
    };
    let r = Arc::new(resolver(server.addr(), 500));
    let map = strict_map();
    let refresher = Refresher::new(["svc.test"], r.clone(), map.clone(), exact_settings());
    let t0 = now_ms();
    assert_eq!(refresher.refresh_due(t0).with_addresses, 1);
    // Valid from the answer for exactly its TTL (this map has no grace).
    assert_eq!(names_at(&map, "192.0.2.1", t0 + 4_000), ["svc.test"]);
    assert!(names_at(&map, "192.0.2.1", t0 + 4_001).is_empty());
    let status = refresher.status_of("svc.test").unwrap();
    assert_eq!(status.next_refresh_ms, Some(t0 + 4_000));
    assert_eq!(status.answers, [(ip("192.0.2.1"), 4)]);
    assert_eq!(status.last_success_ms, Some(t0));

    server.reload("192.0.2.2 svc.test\n");
    wait_for(&*r, "svc.test", &["192.0.2.2"]);
    assert_eq!(
        refresher.refresh_due(t0 + 3_999).looked_up,
        0,
        "not due yet"
    );
    assert!(names_at(&map, "192.0.2.2", t0 + 3_999).is_empty());
    let round = refresher.refresh_due(t0 + 4_000);
    assert_eq!((round.looked_up, round.inserted), (1, 1));
    assert_eq!(names_at(&map, "192.0.2.2", t0 + 6_000), ["svc.test"]);
    assert!(
        names_at(&map, "192.0.2.1", t0 + 6_000).is_empty(),
        "old answer expired"
    );
    assert_eq!(refresher.next_due(), Some(t0 + 8_000));
}

#[test]
fn answers_rotating_faster_than_their_ttl_are_caught_by_refresh_fraction() {
    let Some(server) = Dnsmasq::start(8, "192.0.2.1 rot.test\n", &[]) else {
        return;
    };
    let r: Arc<dyn Resolve> = Arc::new(resolver(server.addr(), 500));
    let (fast_map, slow_map) = (strict_map(), strict_map());
    let fast = Refresher::new(
        ["rot.test"],
        r.clone(),
        fast_map.clone(),
        RefreshSettings {
            refresh_fraction: 0.25,
            ..exact_settings()
        },
    );
    let slow = Refresher::new(["rot.test"], r.clone(), slow_map.clone(), exact_settings());
    let t0 = now_ms();
    fast.refresh_due(t0);
    slow.refresh_due(t0);

    // The answer changes every 2 s while its TTL says 8 s.
    for (i, addr) in ["192.0.2.2", "192.0.2.3", "192.0.2.4"].iter().enumerate() {
        server.reload(&format!("{addr} rot.test\n"));
        wait_for(&*r, "rot.test", &[addr]);
        let at = t0 + 2_000 * (i as i64 + 1);
        assert_eq!(fast.refresh_due(at).inserted, 1, "{addr} at +{}", at - t0);
        assert_eq!(slow.refresh_due(at).looked_up, 0);
    }
    assert_eq!(slow.refresh_due(t0 + 8_000).looked_up, 1);
    let at = t0 + 8_000;
    for addr in ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"] {
        assert_eq!(names_at(&fast_map, addr, at), ["rot.test"], "fast: {addr}");
    }
    assert!(names_at(&slow_map, "192.0.2.2", at).is_empty());
    assert!(names_at(&slow_map, "192.0.2.3", at).is_empty());
    assert_eq!(names_at(&slow_map, "192.0.2.4", at), ["rot.test"]);
}

#[test]
fn a_failing_server_keeps_old_answers_and_marks_names_stale_until_it_returns() {
    let Some(mut server) = Dnsmasq::start(4, "192.0.2.1 up.test\n", &[]) else {
        return;
    };
    let r = Arc::new(resolver(server.addr(), 200));
    let map = strict_map();
    let refresher = Refresher::new(
        ["up.test", "nope.test"],
        r.clone(),
        map.clone(),
        exact_settings(),
    );
    let t0 = now_ms();
    let round = refresher.refresh_due(t0);
    assert_eq!((round.with_addresses, round.empty, round.failed), (1, 1, 0));
    assert!(refresher.stale_names().is_empty());

    server.kill();
    let started = Instant::now();
    let round = refresher.refresh_due(t0 + 4_000);
    let failed_in = started.elapsed();
    assert_eq!(
        (round.looked_up, round.failed),
        (1, 1),
        "nope.test is not due yet"
    );
    assert_eq!(refresher.stale_names(), ["up.test"]);
    let status = refresher.status_of("up.test").unwrap();
    assert!(status.is_stale());
    assert_eq!(status.failures, 1);
    let (when, error) = status.last_error.clone().unwrap();
    assert_eq!(when, t0 + 4_000);
    assert!(
        matches!(error, ResolveError::Timeout | ResolveError::Network(_)),
        "{error}"
    );
    assert_eq!(status.answers, [(ip("192.0.2.1"), 4)], "last answers kept");
    assert_eq!(status.last_success_ms, Some(t0));
    assert_eq!(
        status.next_refresh_ms,
        Some(t0 + 6_000),
        "first backoff: 2 s"
    );
    // The map keeps the last answer, unchanged: valid until its TTL ran out.
    let history = map.read().unwrap().history(ip("192.0.2.1"));
    assert_eq!((history.len(), history[0].2), (1, t0));

    // Still down: the backoff doubles.
    assert_eq!(refresher.refresh_due(t0 + 6_000).failed, 1);
    let status = refresher.status_of("up.test").unwrap();
    assert_eq!(
        (status.failures, status.next_refresh_ms),
        (2, Some(t0 + 10_000))
    );

    // Back on the same port, with a new answer.
    server.write_hosts("192.0.2.9 up.test\n");
    server.restart();
    let round = refresher.refresh_due(t0 + 10_000);
    assert_eq!(
        (round.looked_up, round.with_addresses, round.failed),
        (1, 1, 0)
    );
    assert!(refresher.stale_names().is_empty());
    let status = refresher.status_of("up.test").unwrap();
    assert_eq!(status.failures, 0);
    assert_eq!(status.answers, [(ip("192.0.2.9"), 4)]);
    assert_eq!(status.next_refresh_ms, Some(t0 + 14_000));
    assert_eq!(names_at(&map, "192.0.2.9", t0 + 10_000), ["up.test"]);
    eprintln!("a lookup against the dead server failed in {failed_in:?}");
    assert!(failed_in < Duration::from_secs(3), "{failed_in:?}");
}

/// A real resolver that counts lookups in flight (and holds each a little, so they overlap).
struct Counting {
    inner: HickoryResolver,
    running: AtomicUsize,
    most: AtomicUsize,
    total: AtomicUsize,
}

impl Resolve for Counting {
    fn lookup(&self, name: &str) -> Result<Vec<(IpAddr, u32)>, ResolveError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(15));
        let r = self.inner.lookup(name);
        self.running.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

#[test]
fn lookups_never_exceed_the_concurrency_bound() {
    let hosts: String = (0..24)
        .map(|i| format!("198.51.100.{i} n{i}.test\n"))
        .collect();
    let Some(server) = Dnsmasq::start(30, &hosts, &[]) else {
        return;
    };
    let counting = Arc::new(Counting {
        inner: resolver(server.addr(), 1000),
        running: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
        total: AtomicUsize::new(0),
    });
    let map = strict_map();
    let refresher = Refresher::new(
        (0..24).map(|i| format!("n{i}.test")),
        counting.clone(),
        map.clone(),
        RefreshSettings {
            concurrency: 3,
            ..exact_settings()
        },
    );
    // Two threads asking for rounds at once: rounds do not overlap either.
    let t0 = now_ms();
    std::thread::scope(|s| {
        s.spawn(|| refresher.refresh_due(t0));
        s.spawn(|| refresher.refresh_due(t0));
    });
    assert_eq!(counting.total.load(Ordering::SeqCst), 24, "each name once");
    let most = counting.most.load(Ordering::SeqCst);
    assert!(
        (2..=3).contains(&most),
        "at most 3 at once, and some overlap: {most}"
    );
    assert_eq!(map.read().unwrap().len(), 24);
    for i in [0, 13, 23] {
        assert_eq!(
            names_at(&map, &format!("198.51.100.{i}"), t0),
            [format!("n{i}.test")]
        );
    }

    counting.most.store(0, Ordering::SeqCst);
    let names: Vec<String> = (0..24).map(|i| format!("n{i}.test")).collect();
    let all = resolve_all(&*counting, &names, 5);
    assert!(
        all.iter()
            .all(|(_, r)| r.as_ref().is_ok_and(|a| a.len() == 1))
    );
    assert!(counting.most.load(Ordering::SeqCst) <= 5);
}

#[test]
fn the_background_thread_follows_changes_and_stops_when_told() {
    let Some(server) = Dnsmasq::start(1, "192.0.2.1 bg.test\n", &[]) else {
        return;
    };
    let r = Arc::new(resolver(server.addr(), 500));
    let map = Arc::new(RwLock::new(DnsMap::new()));
    let refresher = Arc::new(Refresher::new(
        ["bg.test"],
        r.clone(),
        map.clone(),
        exact_settings(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = refresher.spawn(stop.clone()).unwrap();
    let seen = |addr: &str| !map.read().unwrap().history(ip(addr)).is_empty();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen("192.0.2.1") {
        assert!(Instant::now() < deadline, "first answer not in the map");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.reload("192.0.2.2 bg.test\n");
    let changed = Instant::now();
    while !seen("192.0.2.2") {
        assert!(
            changed.elapsed() < Duration::from_secs(5),
            "change not picked up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "a change with TTL 1 s reached the map in {:?}",
        changed.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    let stopping = Instant::now();
    thread.join().unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(1),
        "{:?}",
        stopping.elapsed()
    );
    let status = refresher.status_of("bg.test").unwrap();
    assert!(!status.is_stale() && status.last_success_ms.is_some());
}

#[test]
fn cli_resolve_prints_the_rules_names_and_reports_failures() {
    let Some(server) = cname_server() else { return };
    let dir = TempDir::new("dns-resolve-cli");
    let rules = dir.0.join("names.rules");
    std::fs::write(
        &rules,
        "rule names {\n    when peer.domain in { \"host.cdn.test\", \"www.alias.test\", \
         \"v4only.test\", \"nope.test\", \"*.wild.test\" }\n    then software = \"X\" \
         confidence 0.5\n}\n",
    )
    .unwrap();
    let run = |server: &str| {
        Command::new(env!("CARGO_BIN_EXE_flowprint"))
            .args(["dns", "resolve", "--no-default-rules", "--rules"])
            .arg(&rules)
            .args(["--server", server, "--timeout", "300ms", "--attempts", "1"])
            .output()
            .unwrap()
    };
    let out = run(&server.addr().to_string());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "host.cdn.test\t192.0.2.10\t7",
            "host.cdn.test\t2001:db8::10\t7",
            "v4only.test\t192.0.2.20\t7",
            "www.alias.test\t192.0.2.10\t3",
            "www.alias.test\t2001:db8::10\t3",
        ],
        "{stderr}"
    );
    assert!(
        stderr.contains("nope.test: no such name (NXDOMAIN)"),
        "{stderr}"
    );
    assert!(stderr.contains("4 names asked"), "{stderr}");
    assert!(stderr.contains("0 failed"), "{stderr}");

    // Nobody listening: every name fails, reported, and the exit code stays 0.
    let out = run(&format!("127.0.0.1:{}", free_port()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("host.cdn.test: failed"), "{stderr}");
    assert!(stderr.contains("4 failed"), "{stderr}");
}
