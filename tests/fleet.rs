//! The fleet's bus against a real nats-server with JetStream (Debian's package, started here on
//! 127.0.0.1): flows published by two collectors, sharded by host, consumed by workers through
//! durable per-shard consumers; every flow evaluated exactly once in effect, also when a worker
//! dies holding unacknowledged batches.

mod common;

use flowprint::compiler::Compiler;
use flowprint::eval::{Evaluator, LocalNets};
use flowprint::fleet::{Bus, BusConfig, Publisher, codec, is_primary};
use flowprint::flow::Flow;
use flowprint::infer::Inventory;
use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct NatsServer {
    child: Child,
    url: String,
    _dir: common::TempDir,
}

impl NatsServer {
    fn start() -> Option<NatsServer> {
        if !common::have("nats-server") {
            return None;
        }
        let dir = common::TempDir::new("nats");
        let port = common::serve::free_tcp_port();
        let child = NatsServer::spawn(&dir, port);
        Some(NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        })
    }

    /// Stops the server, forgets every stream, and starts an empty one on the same port.
    fn restart_empty(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::remove_dir_all(self._dir.0.join("js")).unwrap();
        let port: u16 = self.url.rsplit(':').next().unwrap().parse().unwrap();
        self.child = NatsServer::spawn(&self._dir, port);
    }

    fn spawn(dir: &common::TempDir, port: u16) -> Child {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.0.join("js"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        common::wait_for_port(port, "nats-server", Duration::from_secs(10));
        child
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SHARDS: u32 = 8;

/// The streams' size limit in these tests: JetStream reserves it on disk (three times on the
/// 3-node cluster), and a test machine's disk may be small.
const MAX_BYTES: i64 = 64 << 20;
const MAX_BYTES_ARG: &str = "67108864";

fn small() -> BusConfig {
    BusConfig {
        max_bytes: MAX_BYTES,
        ..BusConfig::default()
    }
}

fn flows(collector: u8, n: u32) -> Vec<Flow> {
    (0..n)
        .map(|i| {
            let mut f = Flow::new(
                format!("10.{collector}.{}.{}", (i / 250) % 50, i % 250)
                    .parse()
                    .unwrap(),
                40000,
                format!("198.51.100.{}", i % 200).parse().unwrap(),
                if i % 3 == 0 { 80 } else { 443 },
                6,
            );
            // Every tenth flow is between two local hosts (two shards, usually).
            if i % 10 == 0 {
                f.dst = format!("10.9.0.{}", i % 250).parse().unwrap();
            }
            f.start_ms = 1_700_000_000_000 + i64::from(i);
            f.end_ms = f.start_ms + 5;
            f.bytes = 500;
            f.packets = 4;
            f
        })
        .collect()
}

/// A worker: applies delivered batches of its shards to one inventory per shard, remembering
/// the highest stream sequence applied per shard (as the inventory database would), and
/// counting the flows it evaluated as primary.
struct Worker {
    ruleset: flowprint::ruleset::Ruleset,
    local: LocalNets,
    inventories: BTreeMap<u32, Inventory>,
    applied: HashMap<u32, u64>,
    evaluated: u64,
    skipped_redeliveries: u64,
}

impl Worker {
    fn new(shards: &[u32]) -> Worker {
        let mut c = Compiler::new();
        c.add_source(
            "t",
            "t.rules",
            r#"rule web { when peer.port == 80 then software = "web" confidence 0.5 }"#,
        );
        Worker {
            ruleset: c.compile().ruleset,
            local: LocalNets::default(),
            inventories: shards.iter().map(|&s| (s, Inventory::new())).collect(),
            applied: HashMap::new(),
            evaluated: 0,
            skipped_redeliveries: 0,
        }
    }

    fn apply(&mut self, d: &flowprint::fleet::Delivered) {
        let mark = self.applied.entry(d.shard).or_default();
        if d.stream_seq <= *mark {
            self.skipped_redeliveries += 1;
            return;
        }
        *mark = d.stream_seq;
        let batch = codec::decode(&d.data).unwrap();
        let mut ev = Evaluator::new(&self.ruleset, &self.local).with_shard(SHARDS, d.shard);
        let inv = self.inventories.get_mut(&d.shard).unwrap();
        for f in &batch.flows {
            inv.observe(f, &mut ev);
            if is_primary(&self.local, f, d.shard, SHARDS) {
                self.evaluated += 1;
            }
        }
    }

    /// Pulls its shards until `want` batches came in or nothing arrives for a while; acks
    /// what it applied when `ack` is true.
    fn run(&mut self, bus: &Bus, shards: &[u32], ack: bool) -> usize {
        let consumers: Vec<_> = shards.iter().map(|&s| bus.consumer(s).unwrap()).collect();
        let mut got = 0;
        let mut idle = 0;
        while idle < 3 {
            let mut any = false;
            for c in &consumers {
                let msgs = bus.fetch(c, 256).unwrap();
                any |= !msgs.is_empty();
                got += msgs.len();
                for m in &msgs {
                    self.apply(m);
                }
                if ack {
                    bus.ack(&msgs).unwrap();
                }
            }
            idle = if any { 0 } else { idle + 1 };
            if !any {
                std::thread::sleep(Duration::from_millis(200));
            }
            if !ack {
                break; // dies after its first pull: nothing acknowledged
            }
        }
        got
    }
}

#[test]
fn sharded_flows_are_evaluated_once_even_when_a_worker_dies() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let config = BusConfig {
        max_bytes: MAX_BYTES,
        ack_wait: Duration::from_secs(2),
        ..Default::default()
    };
    // Two collectors publish.
    let mut total = 0u64;
    for collector in [1u8, 2] {
        let bus = Bus::connect(&nats.url, config.clone()).unwrap();
        let mut p = Publisher::new(LocalNets::default(), SHARDS, [collector; 16]);
        let mut batches = Vec::new();
        for f in flows(collector, 20_000) {
            batches.extend(p.push(f));
            total += 1;
        }
        batches.extend(p.flush());
        for r in bus.publish(&batches) {
            r.unwrap();
        }
    }

    // A worker takes shards 0-3 and dies before acknowledging anything.
    let bus = Bus::connect(&nats.url, config.clone()).unwrap();
    let mut doomed = Worker::new(&[0, 1, 2, 3]);
    let got = doomed.run(&bus, &[0, 1, 2, 3], false);
    assert!(got > 0);
    drop(doomed);
    // Three workers share the eight shards; the one taking 0-3 gets the dead worker's batches
    // again once their acknowledgement wait has passed.
    std::thread::sleep(Duration::from_millis(2500));
    let mut workers = vec![
        (Worker::new(&[0, 1, 2]), vec![0, 1, 2]),
        (Worker::new(&[3, 4, 5]), vec![3, 4, 5]),
        (Worker::new(&[6, 7]), vec![6, 7]),
    ];
    for (w, shards) in &mut workers {
        w.run(&bus, shards, true);
    }
    let evaluated: u64 = workers.iter().map(|(w, _)| w.evaluated).sum();
    assert_eq!(evaluated, total, "every flow evaluated exactly once");
    // Each host is in one worker's inventory only, with all its flows.
    let mut seen: HashMap<String, u64> = HashMap::new();
    for (w, _) in &workers {
        for inv in w.inventories.values() {
            for h in inv.summaries(&w.ruleset) {
                assert!(
                    seen.insert(h.host.clone(), h.flows).is_none(),
                    "{} in two places",
                    h.host
                );
            }
        }
    }
    let expected_flows: u64 = flows(1, 20_000)
        .iter()
        .chain(flows(2, 20_000).iter())
        .filter(|f| f.src.to_string() == "10.1.0.7")
        .count() as u64;
    assert_eq!(seen.get("10.1.0.7").copied(), Some(expected_flows));

    // A worker that wrote its evidence (and its marks) but died before acknowledging: the
    // batches come again, and the restarted worker, restored with those marks, skips them.
    let mut p = Publisher::new(LocalNets::default(), SHARDS, [3; 16]);
    let mut batches = Vec::new();
    for f in flows(3, 3000) {
        batches.extend(p.push(f));
    }
    batches.extend(p.flush());
    for r in bus.publish(&batches) {
        r.unwrap();
    }
    let mut first = Worker::new(&[0]);
    first.applied = workers[0].0.applied.clone();
    first.run(&bus, &[0], false);
    assert!(first.evaluated > 0);
    std::thread::sleep(Duration::from_millis(2500));
    let mut restarted = Worker::new(&[0]);
    restarted.applied = first.applied.clone();
    restarted.run(&bus, &[0], true);
    assert!(restarted.skipped_redeliveries > 0);
    assert_eq!(restarted.evaluated, 0, "nothing counted twice");
    let c = bus.consumer(0).unwrap();
    assert!(
        bus.fetch(&c, 10).unwrap().is_empty(),
        "everything acknowledged"
    );
}

/// `flowprint serve --publish`: the collector role decodes NetFlow from its UDP socket and
/// publishes every flow to the bus, sharded by host; consuming every shard gives each flow once.
#[test]
fn serve_publish_puts_every_received_flow_on_the_bus() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let tmp = common::TempDir::new("fleet-publish");
    let serve = common::serve::Serve::start(
        &tmp.0,
        &[
            "--publish",
            &nats.url,
            "--fleet-max-bytes",
            MAX_BYTES_ARG,
            "--fleet-shards",
            "4",
            "--no-db",
            "--no-default-rules",
        ],
    );
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let datagrams = flowprint::bench::generate_v9(200, 30, 11);
    for d in &datagrams {
        sock.send_to(d, serve.udp).unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
    let received = || {
        let (_, m) = common::serve::http(serve.api, "GET", "/metrics", None, b"");
        common::serve::metric(&m, "flowprint_flows_received_total")
    };
    common::serve::wait_until("flows received", Duration::from_secs(10), || {
        received() >= 5970
    });
    let sent = received();
    let log = serve.stop();
    assert!(log.contains("publishing flows to the fleet"), "{log}");
    let bus = Bus::connect(&nats.url, small()).unwrap();
    let local = LocalNets::default();
    let mut primary = 0u64;
    for shard in 0..4 {
        let c = bus.consumer(shard).unwrap();
        loop {
            let msgs = bus.fetch(&c, 256).unwrap();
            if msgs.is_empty() {
                break;
            }
            for m in &msgs {
                for f in codec::decode(&m.data).unwrap().flows {
                    primary += u64::from(is_primary(&local, &f, shard, 4));
                }
            }
            bus.ack(&msgs).unwrap();
        }
    }
    assert_eq!(primary, sent, "every received flow published once");
}

// ---- The daemon's fleet roles end to end: collectors and workers as `flowprint serve`
// processes on a 3-node JetStream cluster, the inventory in PostgreSQL.

/// A 3-node nats-server cluster with JetStream on loopback ports.
struct NatsCluster {
    nodes: Vec<Option<Child>>,
    urls: Vec<String>,
    _dir: common::TempDir,
}

impl NatsCluster {
    fn start() -> Option<NatsCluster> {
        if !common::have("nats-server") {
            return None;
        }
        let dir = common::TempDir::new("nats-cluster");
        let client: Vec<u16> = (0..3).map(|_| common::serve::free_tcp_port()).collect();
        let route: Vec<u16> = (0..3).map(|_| common::serve::free_tcp_port()).collect();
        let routes = route
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for i in 0..3 {
            let log = std::fs::File::create(dir.0.join(format!("n{i}.log"))).unwrap();
            nodes.push(Some(
                Command::new("nats-server")
                    .args(["-js", "-a", "127.0.0.1", "-p", &client[i].to_string()])
                    .args(["-n", &format!("n{i}"), "--cluster_name", "flowprint"])
                    .args(["--cluster", &format!("nats://127.0.0.1:{}", route[i])])
                    .args(["--routes", &routes, "-sd"])
                    .arg(dir.0.join(format!("js{i}")))
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .unwrap(),
            ));
        }
        Some(NatsCluster {
            nodes,
            urls: client
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect(),
            _dir: dir,
        })
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// A PostgreSQL schema of its own on `FLOWPRINT_TEST_POSTGRES` (dropped at the end).
struct PgSchema {
    url: String,
    schema: String,
    spec: String,
}

impl PgSchema {
    fn new(case: &str) -> Option<PgSchema> {
        let url = match std::env::var("FLOWPRINT_TEST_POSTGRES") {
            Ok(u) if !u.is_empty() => u,
            _ => {
                let ci = std::env::var("CI").unwrap_or_default();
                assert!(
                    !(ci == "true" || ci == "1"),
                    "CI={ci} but FLOWPRINT_TEST_POSTGRES is not set (scripts/test.sh sets it)"
                );
                eprintln!("skipped: FLOWPRINT_TEST_POSTGRES is not set");
                return None;
            }
        };
        let schema = format!("t_{case}_{}", std::process::id());
        let mut admin = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        admin
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ))
            .unwrap();
        let sep = if url.contains('?') { '&' } else { '?' };
        Some(PgSchema {
            spec: format!("{url}{sep}options=-csearch_path%3D{schema}"),
            url,
            schema,
        })
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if let Ok(mut admin) = ::postgres::Client::connect(&self.url, ::postgres::NoTls) {
            let _ = admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
        }
    }
}

/// What is compared between the fleet's inventory and a single-process run: per host, its
/// flows, its evidence per rule, and its labels with their scores.
type HostView = (
    u64,
    Vec<(String, u64, i64, i64)>,
    Vec<(String, String, bool, i64)>,
);

fn view(hosts: &[flowprint::inventory::StoredHost]) -> BTreeMap<String, HostView> {
    hosts
        .iter()
        .map(|h| {
            let mut ev: Vec<_> = h
                .evidence
                .iter()
                .map(|e| (e.rule.clone(), e.flows, e.first_seen, e.last_seen))
                .collect();
            ev.sort();
            let mut labels: Vec<_> = h
                .labels
                .iter()
                .map(|l| {
                    (
                        l.attribute.clone(),
                        l.value.clone(),
                        l.winner,
                        (l.confidence * 1e6).round() as i64,
                    )
                })
                .collect();
            labels.sort();
            (h.host.clone(), (h.flows, ev, labels))
        })
        .collect()
}

fn sum_metric(serves: &[&common::serve::Serve], name: &str) -> u64 {
    serves
        .iter()
        .map(|s| {
            let (_, m) = common::serve::http(s.api, "GET", "/metrics", None, b"");
            common::serve::metric(&m, name)
        })
        .sum()
}

/// Two collectors and three workers (`flowprint serve --publish` / `--consume`) on a 3-node
/// JetStream cluster, the inventory in PostgreSQL: one worker is killed with SIGKILL while
/// flows stream in and a cluster node is killed after it; the surviving workers take its
/// shards over, and the fleet's inventory ends identical to a single-process evaluation of
/// the same flows.
#[test]
fn fleet_of_daemons_survives_a_killed_worker_and_matches_one_process() {
    let Some(mut cluster) = NatsCluster::start() else {
        return;
    };
    let Some(pg) = PgSchema::new("fleet") else {
        return;
    };
    // The cluster elects its JetStream leader; the stream is created with three replicas.
    let bus_config = BusConfig {
        max_bytes: MAX_BYTES,
        replicas: 3,
        ..Default::default()
    };
    let t = Instant::now();
    let bus = loop {
        match Bus::connect(&cluster.urls[0], bus_config.clone()) {
            Ok(b) => break b,
            Err(e) => {
                assert!(
                    t.elapsed() < Duration::from_secs(30),
                    "cluster not ready: {e}"
                );
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    };
    drop(bus);
    let fleet_args = |role: &str, url: &str| -> Vec<String> {
        [
            "--fleet-shards",
            "8",
            "--fleet-replicas",
            "3",
            "--fleet-lease",
            "6s",
            "--half-life",
            "none",
            "--workers",
            "1",
            "--fleet-max-bytes",
            MAX_BYTES_ARG,
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([role.to_string(), url.to_string()])
        .collect()
    };
    let start_worker = |i: usize| {
        let dir = common::TempDir::new(&format!("fleet-w{i}"));
        let mut args = fleet_args("--consume", &cluster.urls[i % 2]);
        args.extend(["--db".to_string(), pg.spec.clone()]);
        args.extend(["--fleet-id".to_string(), format!("w{i}")]);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let s = common::serve::Serve::start(&dir.0, &a);
        (s, dir)
    };
    let mut workers: Vec<_> = (0..3).map(start_worker).collect();
    let collectors: Vec<_> = (0..2)
        .map(|i| {
            let dir = common::TempDir::new(&format!("fleet-c{i}"));
            let mut args = fleet_args("--publish", &cluster.urls[i]);
            args.push("--no-db".into());
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            (common::serve::Serve::start(&dir.0, &a), dir)
        })
        .collect();
    let owned = |ws: &[&common::serve::Serve]| sum_metric(ws, "flowprint_fleet_shards_owned");
    {
        let ws: Vec<_> = workers.iter().map(|(s, _)| s).collect();
        common::serve::wait_until(
            "8 shards owned by 3 workers",
            Duration::from_secs(30),
            || {
                owned(&ws) == 8
                    && ws.iter().all(|w| {
                        let (_, m) = common::serve::http(w.api, "GET", "/metrics", None, b"");
                        common::serve::metric(&m, "flowprint_fleet_shards_owned") > 0
                    })
            },
        );
    }

    // The same flows for everyone: each collector gets its own exporter's stream.
    let streams: Vec<Vec<Vec<u8>>> = (0..2u64)
        .map(|c| flowprint::bench::generate_ipfix_hosts(300, 30, 200, 40 + c))
        .collect();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let send = |range: std::ops::Range<usize>| {
        for i in range {
            for (c, s) in streams.iter().enumerate() {
                sock.send_to(&s[i], collectors[c].0.udp).unwrap();
            }
            std::thread::sleep(Duration::from_micros(300));
        }
    };
    send(0..150);
    // Kill the worker that owns the most shards, mid-stream, without a chance to write.
    std::thread::sleep(Duration::from_millis(700));
    let busiest = (0..3)
        .max_by_key(|&i| {
            let (_, m) = common::serve::http(workers[i].0.api, "GET", "/metrics", None, b"");
            common::serve::metric(&m, "flowprint_fleet_shards_owned")
        })
        .unwrap();
    let (mut dead, _dead_dir) = workers.remove(busiest);
    common::serve::unsafe_kill(dead.child.id(), 9);
    let _ = dead.child.wait();
    send(150..300);
    // And a node of the cluster (the streams have three replicas).
    cluster.kill(2);

    let sent: u64 = 2 * 300 * 30;
    let cs: Vec<_> = collectors.iter().map(|(s, _)| s).collect();
    common::serve::wait_until(
        "collectors received every flow",
        Duration::from_secs(60),
        || sum_metric(&cs, "flowprint_flows_received_total") == sent,
    );
    assert_eq!(sum_metric(&cs, "flowprint_fleet_batches_refused_total"), 0);

    // The single-process reference: the same datagrams decoded and evaluated in one inventory.
    let mut c = flowprint::compiler::Compiler::new();
    c.add_embedded();
    let ruleset = c.compile().ruleset;
    let local = LocalNets::default();
    let mut reference = Inventory::with_config(flowprint::infer::InferConfig {
        half_life_ms: None,
        ..Default::default()
    });
    let mut ev = Evaluator::new(&ruleset, &local);
    for (c, s) in streams.iter().enumerate() {
        let mut decoder = flowprint::flow::netflow::Decoder::new();
        let exporter: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let _ = c;
        for d in s {
            flowprint::flow::ingest::binary::decode_datagram(
                &mut decoder,
                exporter,
                d,
                0,
                &mut |f| {
                    reference.observe(&f, &mut ev);
                },
            )
            .unwrap();
        }
    }
    drop(ev);
    let expected = view(&reference.take_dirty(&ruleset, usize::MAX));
    assert!(expected.len() > 150, "{} hosts", expected.len());

    // The fleet's inventory converges to it: the dead worker's shards are taken over, its
    // unacknowledged batches delivered again, none of its written ones counted twice.
    let mut last = BTreeMap::new();
    let converged = {
        let t = Instant::now();
        loop {
            if let Ok(mut db) = flowprint::inventory::open(&pg.spec)
                && let Ok(hosts) = db.load_all()
            {
                last = view(&hosts);
                if last == expected {
                    break true;
                }
            }
            if t.elapsed() > Duration::from_secs(90) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    if !converged {
        let missing = expected.keys().filter(|k| !last.contains_key(*k)).count();
        let differ: Vec<_> = expected
            .iter()
            .filter(|(k, v)| last.get(*k).is_some_and(|l| l != *v))
            .take(3)
            .map(|(k, v)| format!("{k}: expected {v:?}, fleet {:?}", last.get(k)))
            .collect();
        panic!(
            "fleet inventory != single process: {missing} hosts missing, {} extra, e.g. {differ:#?}\nworker logs:\n{}",
            last.keys().filter(|k| !expected.contains_key(*k)).count(),
            workers
                .iter()
                .map(|(w, _)| w.log())
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
    }
    let ws: Vec<_> = workers.iter().map(|(s, _)| s).collect();
    let t = Instant::now();
    while owned(&ws) != 8 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the survivors do not own every shard: {}\n{}",
            owned(&ws),
            ws.iter()
                .map(|w| w.log())
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(sum_metric(&ws, "flowprint_fleet_shard_takeovers_total") >= 8);
    // A clean stop writes, acknowledges and leaves; the inventory stays the same.
    for (w, _) in workers {
        let log = w.stop();
        assert!(log.contains("shard taken over"), "{log}");
    }
    for (c, _) in collectors {
        c.stop();
    }
    let mut db = flowprint::inventory::open(&pg.spec).unwrap();
    assert_eq!(view(&db.load_all().unwrap()), expected);
    let marks = db.load_marks().unwrap();
    assert_eq!(marks.len(), 8, "{marks:?}");
}

fn flowprint(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flowprint"))
        .args(args)
        .output()
        .unwrap()
}

/// The pack `name` at `version` as a built archive; `break_rules` makes its rules not compile
/// (with a manifest that matches, as a publisher that skipped the checks would produce).
fn pack_archive(
    dir: &std::path::Path,
    name: &str,
    version: &str,
    break_rules: bool,
) -> std::path::PathBuf {
    let work = dir.join(format!("{name}-{version}-src"));
    std::fs::create_dir_all(&work).unwrap();
    let out = flowprint(&["pack", "new", name, "--dir", work.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let pack = work.join(name);
    let manifest = std::fs::read_to_string(pack.join("pack.yaml")).unwrap();
    std::fs::write(
        pack.join("pack.yaml"),
        manifest.replace("version: 0.1.0", &format!("version: {version}")),
    )
    .unwrap();
    let archive = dir.join(format!("{name}-{version}.tar.gz"));
    if break_rules {
        std::fs::write(
            pack.join(format!("rules/{name}.rules")),
            "rule broken { when peer.port == then os.family = \"X\" }\n",
        )
        .unwrap();
        flowprint::pack::integrity::write_manifest(&pack, None).unwrap();
        flowprint::pack::integrity::write_archive(&pack, &format!("{name}-{version}"), &archive)
            .unwrap();
    } else {
        let out = flowprint(&[
            "pack",
            "build",
            pack.to_str().unwrap(),
            "--output",
            archive.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{out:?}");
    }
    archive
}

fn pack_version(rules: &serde_json::Value, name: &str) -> Option<String> {
    rules["packs"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["version"].as_str().map(str::to_string))
}

/// `flowprint pack publish` puts a pack in the fleet's object store; every worker installs it
/// and runs it within 2 s. A broken pack is refused by `pack publish`; pushed into the bucket
/// anyway, every worker refuses it, keeps the running version and reports the refusal.
#[test]
fn a_published_pack_reaches_every_worker_and_a_broken_one_none() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let tmp = common::TempDir::new("fleet-packs");
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let dir = tmp.0.join(format!("w{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            common::serve::Serve::start(
                &dir,
                &[
                    "--consume",
                    &nats.url,
                    "--fleet-max-bytes",
                    MAX_BYTES_ARG,
                    "--fleet-shards",
                    "4",
                    "--no-db",
                    "--fleet-allow-unsigned",
                ],
            )
        })
        .collect();
    let good = pack_archive(&tmp.0, "campus", "1.2.0", false);
    let out = flowprint(&[
        "pack",
        "publish",
        good.to_str().unwrap(),
        "--nats",
        &nats.url,
        "--allow-unsigned",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("published campus 1.2.0"));
    let took = common::serve::wait_until(
        "every worker runs campus 1.2.0",
        Duration::from_secs(2),
        || {
            workers.iter().all(|w| {
                pack_version(&common::serve::get_json(w.api, "/rules"), "campus").as_deref()
                    == Some("1.2.0")
            })
        },
    );
    eprintln!("published pack live on both workers after {took:?}");

    // Broken: `pack publish` refuses it.
    let broken = pack_archive(&tmp.0, "campus", "1.3.0", true);
    let out = flowprint(&[
        "pack",
        "publish",
        broken.to_str().unwrap(),
        "--nats",
        &nats.url,
        "--allow-unsigned",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not published"));
    // Put into the bucket anyway: every worker refuses it and keeps 1.2.0.
    let bus = Bus::connect(&nats.url, small()).unwrap();
    bus.publish_pack("campus", &std::fs::read(&broken).unwrap())
        .unwrap();
    common::serve::wait_until(
        "every worker reports the refusal",
        Duration::from_secs(10),
        || {
            workers.iter().all(|w| {
                let rules = common::serve::get_json(w.api, "/rules");
                rules["fleet"]["packs"]["campus"]["state"] == "rejected"
            })
        },
    );
    for w in &workers {
        let rules = common::serve::get_json(w.api, "/rules");
        assert_eq!(pack_version(&rules, "campus").as_deref(), Some("1.2.0"));
        let error = rules["fleet"]["packs"]["campus"]["error"].as_str().unwrap();
        assert!(
            error.contains("broken") || error.contains("rule"),
            "{error}"
        );
        let (_, m) = common::serve::http(w.api, "GET", "/metrics", None, b"");
        assert_eq!(
            common::serve::metric(&m, "flowprint_fleet_packs_rejected_total"),
            1
        );
    }
    for w in workers {
        w.stop();
    }
}

/// Workers agree on names through the inventory database: what one worker learned from its
/// passive DNS log reaches another that has none.
#[test]
fn workers_share_the_dns_map_through_the_database() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let tmp = common::TempDir::new("fleet-dns");
    let db = tmp.0.join("fleet.db");
    let log = tmp.0.join("names.jsonl");
    std::fs::write(
        &log,
        "{\"ts\": 1700000000, \"query\": \"updates.example.org\", \"answers\": [\"198.51.100.7\", \"198.51.100.8\"], \"ttl\": 300}\n",
    )
    .unwrap();
    let start = |i: usize, extra: &[&str]| {
        let dir = tmp.0.join(format!("w{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut args = vec![
            "--consume",
            &nats.url,
            "--fleet-max-bytes",
            MAX_BYTES_ARG,
            "--fleet-shards",
            "2",
            "--db",
            db.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        common::serve::Serve::start(&dir, &args)
    };
    let a = start(0, &["--dns-log", log.to_str().unwrap()]);
    let b = start(1, &[]);
    let pairs = |w: &common::serve::Serve| {
        let (_, m) = common::serve::http(w.api, "GET", "/metrics", None, b"");
        common::serve::metric(&m, "flowprint_dns_pairs")
    };
    assert_eq!(pairs(&a), 2);
    common::serve::wait_until(
        "the second worker has the names",
        Duration::from_secs(15),
        || pairs(&b) == 2,
    );
    a.stop();
    b.stop();
}

/// A stream deleted and created again starts its sequences over: the marks a worker stored for
/// the old stream must not make it skip the new stream's batches.
#[test]
fn marks_of_a_deleted_stream_do_not_hide_the_new_one() {
    let Some(mut nats) = NatsServer::start() else {
        return;
    };
    let tmp = common::TempDir::new("fleet-restream");
    let db = tmp.0.join("fleet.db");
    let publish = |url: &str, n: u32| {
        let bus = Bus::connect(url, small()).unwrap();
        let mut p = Publisher::new(LocalNets::default(), 2, [5; 16]);
        let mut batches = Vec::new();
        for f in flows(5, n) {
            batches.extend(p.push(f));
        }
        batches.extend(p.flush());
        for r in bus.publish(&batches) {
            r.unwrap();
        }
    };
    let evaluated = |w: &common::serve::Serve| {
        let (_, m) = common::serve::http(w.api, "GET", "/metrics", None, b"");
        common::serve::metric(&m, "flowprint_flows_evaluated_total")
    };
    let run = |url: &str, want: u64| {
        let w = common::serve::Serve::start(
            &tmp.0,
            &[
                "--consume",
                url,
                "--fleet-max-bytes",
                MAX_BYTES_ARG,
                "--fleet-shards",
                "2",
                "--db",
                db.to_str().unwrap(),
            ],
        );
        common::serve::wait_until("every flow evaluated", Duration::from_secs(20), || {
            evaluated(&w) >= want
        });
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(evaluated(&w), want);
        w.stop();
    };
    publish(&nats.url, 6000);
    run(&nats.url, 6000);
    nats.restart_empty();
    publish(&nats.url, 4000);
    run(&nats.url, 4000);
    let mut store = flowprint::inventory::open(db.to_str().unwrap()).unwrap();
    let streams: std::collections::BTreeSet<String> = store
        .load_marks()
        .unwrap()
        .into_iter()
        .map(|m| m.stream)
        .collect();
    assert_eq!(
        streams.len(),
        2,
        "one set of marks per stream incarnation: {streams:?}"
    );
}
