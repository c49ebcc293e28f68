//! The daemon's fleet roles end to end: collectors and workers as `flowprint serve` processes on
//! a 3-node JetStream cluster (Debian's nats-server, on loopback ports), the inventory in
//! PostgreSQL (`FLOWPRINT_TEST_POSTGRES`). Whatever goes wrong on the way — a worker killed, a
//! cluster node killed, a node paused (pulls not ended, requests timing out, publishes
//! unanswered), a worker stalled for longer than its lease — the fleet's inventory ends equal,
//! host by host, to one process evaluating the same datagrams.
//!
//! The troubles are made with real signals (SIGKILL, SIGSTOP/SIGCONT), not left to the luck of
//! a loaded machine; timings are generous deadlines and polling, the assertions exact.

mod common;

use common::postgres::PgSchema;

use flowprint::eval::LocalNets;
use flowprint::fleet::BusConfig;
use flowprint::infer::HostTable;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The streams' size limit in these tests: JetStream reserves it on disk (three times on the
/// 3-node cluster), and a test machine's disk may be small.
const MAX_BYTES: i64 = 64 << 20;
const MAX_BYTES_ARG: &str = "67108864";

const SIGKILL: i32 = 9;
const SIGCONT: i32 = 18;
const SIGSTOP: i32 = 19;

/// A 3-node nats-server cluster with JetStream on loopback ports.
struct NatsCluster {
    nodes: Vec<Option<Child>>,
    urls: Vec<String>,
    dir: common::TempDir,
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
            dir,
        })
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The warnings and errors each node logged (the last 60 of each): what the servers say of
    /// leaders, resets and catch-ups when a run's counts do not add up.
    fn warnings(&self) -> String {
        let mut out = String::new();
        for i in 0..self.nodes.len() {
            let log =
                std::fs::read_to_string(self.dir.0.join(format!("n{i}.log"))).unwrap_or_default();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("[WRN]") || l.contains("[ERR]"))
                .collect();
            out += &format!(
                "--- nats node {i}: {} warnings and errors ---\n",
                lines.len()
            );
            for l in &lines[lines.len().saturating_sub(60)..] {
                out += l;
                out.push('\n');
            }
        }
        out
    }

    /// Sends a signal to node `i` (SIGSTOP pauses it: its clients' connections stay open,
    /// what they send waits in the socket, nothing is answered).
    fn signal(&self, i: usize, sig: i32) {
        if let Some(c) = &self.nodes[i] {
            common::serve::unsafe_kill(c.id(), sig);
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            // A paused node is resumed first, so that it can be killed and waited for.
            self.signal(i, SIGCONT);
            self.kill(i);
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

fn metric_of(s: &common::serve::Serve, name: &str) -> u64 {
    let (_, m) = common::serve::http(s.api, "GET", "/metrics", None, b"");
    common::serve::metric(&m, name)
}

fn sum_metric(serves: &[&common::serve::Serve], name: &str) -> u64 {
    serves.iter().map(|s| metric_of(s, name)).sum()
}

/// Where the flows went, for a run that did not converge: what the collectors published, what
/// the stream holds, what the workers applied and what the database recorded (batch ids per
/// shard, flows), so that a loss on the publishing side can be told from one on the consuming
/// side.
fn accounting(
    url: &str,
    bus_config: &BusConfig,
    spec: &str,
    collectors: &[&common::serve::Serve],
    workers: &[&common::serve::Serve],
    expected: &BTreeMap<String, HostView>,
    last: &BTreeMap<String, HostView>,
) -> String {
    let mut out = String::new();
    let flows = |m: &BTreeMap<String, HostView>| m.values().map(|v| v.0).sum::<u64>();
    out += &format!(
        "flows: one process {}, fleet inventory {}\n",
        flows(expected),
        flows(last)
    );
    let collector_metrics = [
        "flowprint_fleet_batches_published_total",
        "flowprint_fleet_batches_duplicate_total",
        "flowprint_fleet_batches_retried_total",
        "flowprint_fleet_batches_refused_total",
        "flowprint_fleet_held_batches",
        "flowprint_fleet_batches_confirmed_total",
        "flowprint_fleet_batches_resent_total",
        "flowprint_fleet_batches_unconfirmed_total",
    ];
    let worker_metrics = [
        "flowprint_fleet_batches_applied_total",
        "flowprint_fleet_batches_skipped_total",
        "flowprint_fleet_duplicate_batches_skipped_total",
        "flowprint_fleet_late_batches_total",
        "flowprint_fleet_confirmations_sent_total",
        "flowprint_fleet_flows_applied_total",
        "flowprint_fleet_shard_rewinds_total",
        "flowprint_fleet_batches_malformed_total",
        "flowprint_fleet_shards_owned",
        "flowprint_fleet_write_failures_total",
    ];
    for (role, serves, names) in [
        ("collectors", collectors, &collector_metrics[..]),
        ("workers", workers, &worker_metrics[..]),
    ] {
        for name in names {
            let each: Vec<u64> = serves.iter().map(|s| metric_of(s, name)).collect();
            out += &format!("{role} {name}: {each:?}\n");
        }
    }
    // Per worker, its shards as the server sees their consumers: batches waiting, delivered
    // but not acknowledged (a shard owned with batches waiting and idle workers is a consumer
    // that does not deliver).
    for (i, w) in workers.iter().enumerate() {
        let (_, m) = common::serve::http(w.api, "GET", "/metrics", None, b"");
        let lines: Vec<&str> = m
            .lines()
            .filter(|l| {
                l.starts_with("flowprint_fleet_backlog_batches")
                    || l.starts_with("flowprint_fleet_unacked_batches")
            })
            .collect();
        out += &format!("worker {i} backlog: {}\n", lines.join("; "));
    }
    match flowprint::fleet::Bus::connect(url, bus_config.clone()) {
        Ok(bus) => {
            out += &format!("stream (messages, first, last): {:?}\n", bus.stream_state());
            if let Ok(mut db) = flowprint::inventory::open(spec) {
                let stream = bus.stream_id();
                let all: Vec<Vec<[u8; 24]>> = (0..8)
                    .map(|s| {
                        let b = db.load_batches(&stream, s).unwrap_or_default();
                        b.into_iter().map(|(_, id)| id).collect()
                    })
                    .collect();
                let ids: Vec<usize> = all.iter().map(Vec::len).collect();
                // Per publisher, the batch counters never recorded below the highest one
                // recorded: the batches that did not reach the inventory.
                let mut by_publisher: BTreeMap<[u8; 16], Vec<u64>> = BTreeMap::new();
                for id in all.iter().flatten() {
                    let p: [u8; 16] = id[..16].try_into().unwrap();
                    let n = u64::from_le_bytes(id[16..].try_into().unwrap());
                    by_publisher.entry(p).or_default().push(n);
                }
                for (p, mut ns) in by_publisher {
                    ns.sort_unstable();
                    let max = ns.last().copied().unwrap_or(0);
                    let missing: Vec<u64> =
                        (1..=max).filter(|n| ns.binary_search(n).is_err()).collect();
                    let hex: String = p.iter().map(|b| format!("{b:02x}")).collect();
                    out += &format!(
                        "publisher {hex}: {} batch ids recorded, highest {max}, never recorded: {missing:?}\n",
                        ns.len()
                    );
                }
                out += &format!(
                    "batch ids recorded per shard: {ids:?} (sum {})\nmarks: {:?}\n",
                    ids.iter().sum::<usize>(),
                    db.load_marks()
                );
            }
        }
        Err(e) => out += &format!("bus: {e}\n"),
    }
    out
}

/// What happens to the fleet while the flows stream in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trouble {
    /// The worker owning the most shards is killed (SIGKILL), then a cluster node.
    KillWorkerThenNode,
    /// The node that a collector and two workers are connected to is paused for longer than a
    /// request's timeout (publishes unanswered, so retried; pulls not ended; consumer deletes
    /// and lease renewals timing out), then the busiest worker is stopped for two leases and
    /// woken up believing it still owns its shards.
    PauseNodeThenStallWorker,
}

/// The single-process reference: the same datagrams decoded and evaluated in one inventory.
fn one_process(streams: &[Vec<Vec<u8>>]) -> BTreeMap<String, HostView> {
    let mut c = flowprint::compiler::Compiler::new();
    c.add_sources(&flowprint::sources::Sources::embedded());
    let ruleset = c.compile().ruleset;
    let mut reference = flowprint::scan::Scanner::new(
        ruleset.clone(),
        std::sync::Arc::new(LocalNets::default()),
        HostTable::with_config(flowprint::infer::InferConfig {
            half_life_ms: None,
            ..Default::default()
        }),
    );
    // The streams' records carry no names: nothing to learn, the map stays empty.
    let dns = flowprint::dns::DnsMap::new();
    let exporter: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    for s in streams {
        let mut decoder = flowprint::flow::netflow::Decoder::new();
        for d in s {
            flowprint::flow::ingest::binary::decode_datagram(
                &mut decoder,
                exporter,
                d,
                0,
                &mut |f| {
                    reference.apply(&f, &dns);
                },
            )
            .unwrap();
        }
    }
    view(&reference.hosts_mut().take_dirty(&ruleset, usize::MAX))
}

/// Two collectors and three workers (`flowprint serve --publish` / `--consume`) on a 3-node
/// JetStream cluster, the inventory in PostgreSQL; `trouble` strikes while flows stream in,
/// and the fleet's inventory must end identical to a single-process evaluation of the same
/// flows, also after a clean stop.
fn fleet_matches_one_process(case: &str, trouble: Trouble, member_threads: usize) {
    let Some(mut cluster) = NatsCluster::start() else {
        return;
    };
    let Some(pg) = PgSchema::new(case) else {
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
        match flowprint::fleet::Bus::connect(&cluster.urls[0], bus_config.clone()) {
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
    let threads = member_threads.to_string();
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
            &threads,
            "--fleet-max-bytes",
            MAX_BYTES_ARG,
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([role.to_string(), url.to_string()])
        .collect()
    };
    // Workers 0 and 2 and collector 0 talk to node 0; worker 1 and collector 1 to node 1.
    let start_worker = |i: usize| {
        let dir = common::TempDir::new(&format!("fleet-{case}-w{i}"));
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
            let dir = common::TempDir::new(&format!("fleet-{case}-c{i}"));
            let mut args = fleet_args("--publish", &cluster.urls[i]);
            args.push("--no-db".into());
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            (common::serve::Serve::start(&dir.0, &a), dir)
        })
        .collect();
    let owned = |ws: &[&common::serve::Serve]| sum_metric(ws, "flowprint_fleet_shards_owned");
    let all_owned = |ws: &[&common::serve::Serve], what: &str, limit: Duration| {
        let took = common::serve::wait_until(what, limit, || {
            owned(ws) == 8
                && ws
                    .iter()
                    .all(|w| metric_of(w, "flowprint_fleet_shards_owned") > 0)
        });
        // For the record of a run under load (`--nocapture`).
        eprintln!("{what}: after {took:.1?}");
    };
    {
        let ws: Vec<_> = workers.iter().map(|(s, _)| s).collect();
        all_owned(&ws, "8 shards owned by 3 workers", Duration::from_secs(30));
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
    let busiest = |workers: &[(common::serve::Serve, common::TempDir)]| {
        (0..workers.len())
            .max_by_key(|&i| metric_of(&workers[i].0, "flowprint_fleet_shards_owned"))
            .unwrap()
    };
    match trouble {
        Trouble::KillWorkerThenNode => {
            send(0..150);
            // Kill the worker that owns the most shards, mid-stream, without a chance to write.
            std::thread::sleep(Duration::from_millis(700));
            let (mut dead, _dead_dir) = workers.remove(busiest(&workers));
            common::serve::unsafe_kill(dead.child.id(), SIGKILL);
            let _ = dead.child.wait();
            send(150..300);
            // And a node of the cluster (the streams have three replicas).
            cluster.kill(2);
        }
        Trouble::PauseNodeThenStallWorker => {
            send(0..100);
            std::thread::sleep(Duration::from_millis(500));
            // Node 0 paused for longer than a request's timeout (5 s): collector 0's publishes
            // wait unanswered in the node's socket and are retried; on waking, the node stores
            // the originals and the retries it finds there.
            cluster.signal(0, SIGSTOP);
            let paused = Instant::now();
            send(100..200);
            std::thread::sleep(Duration::from_secs(8).saturating_sub(paused.elapsed()));
            cluster.signal(0, SIGCONT);
            assert!(
                metric_of(&collectors[0].0, "flowprint_fleet_batches_retried_total") > 0,
                "collector 0 retried nothing: the pause did not hold up its publishes"
            );
            {
                let ws: Vec<_> = workers.iter().map(|(s, _)| s).collect();
                // A generous deadline: on a loaded machine the resumed node and its peers
                // answer requests late for a while, and shards move a few times before they
                // settle (measured: up to about 60 s under two busy loops on two cores).
                all_owned(
                    &ws,
                    "8 shards owned after the pause",
                    Duration::from_secs(150),
                );
            }
            // The busiest worker stopped for two leases: the others take its shards over; it
            // wakes up mid-loop with batches in hand and leases it believes valid.
            let stalled = busiest(&workers);
            let lost_before = metric_of(&workers[stalled].0, "flowprint_fleet_shards_lost_total");
            let pid = workers[stalled].0.child.id();
            common::serve::unsafe_kill(pid, SIGSTOP);
            let stopped = Instant::now();
            send(200..300);
            std::thread::sleep(Duration::from_secs(12).saturating_sub(stopped.elapsed()));
            common::serve::unsafe_kill(pid, SIGCONT);
            common::serve::wait_until(
                "the stalled worker notices it lost its shards",
                Duration::from_secs(30),
                || {
                    metric_of(&workers[stalled].0, "flowprint_fleet_shards_lost_total")
                        > lost_before
                },
            );
        }
    }

    let sent: u64 = 2 * 300 * 30;
    let cs: Vec<_> = collectors.iter().map(|(s, _)| s).collect();
    common::serve::wait_until(
        "collectors received every flow",
        Duration::from_secs(60),
        || sum_metric(&cs, "flowprint_flows_received_total") == sent,
    );
    assert_eq!(
        sum_metric(&cs, "flowprint_fleet_batches_refused_total"),
        0,
        "collectors gave batches up; their logs:\n{}",
        cs.iter()
            .map(|c| c.log())
            .collect::<Vec<_>>()
            .join("\n----\n")
    );

    let expected = one_process(&streams);
    assert!(expected.len() > 150, "{} hosts", expected.len());

    // The fleet's inventory converges to it: shards taken over, unacknowledged batches
    // delivered again, none counted twice.
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
            if t.elapsed() > Duration::from_secs(240) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let ws: Vec<_> = workers.iter().map(|(s, _)| s).collect();
    if !converged {
        let missing = expected.keys().filter(|k| !last.contains_key(*k)).count();
        let differ: Vec<_> = expected
            .iter()
            .filter(|(k, v)| last.get(*k).is_some_and(|l| l != *v))
            .take(3)
            .map(|(k, v)| format!("{k}: expected {v:?}, fleet {:?}", last.get(k)))
            .collect();
        let account = accounting(
            &cluster.urls[1],
            &bus_config,
            &pg.spec,
            &cs,
            &ws,
            &expected,
            &last,
        );
        panic!(
            "fleet inventory != single process: {missing} hosts missing, {} extra, {} differ, e.g. {differ:#?}\n{account}{}collector logs:\n{}\nworker logs:\n{}",
            last.keys().filter(|k| !expected.contains_key(*k)).count(),
            expected
                .iter()
                .filter(|(k, v)| last.get(*k).is_some_and(|l| l != *v))
                .count(),
            cluster.warnings(),
            collectors
                .iter()
                .map(|(c, _)| c.log())
                .collect::<Vec<_>>()
                .join("\n----\n"),
            workers
                .iter()
                .map(|(w, _)| w.log())
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
    }
    // For the record of a run (`--nocapture`): what a converged run's accounting looks like.
    eprintln!(
        "accounting:\n{}",
        accounting(
            &cluster.urls[1],
            &bus_config,
            &pg.spec,
            &cs,
            &ws,
            &expected,
            &last
        )
    );
    let t = Instant::now();
    while owned(&ws) != 8 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the workers do not own every shard: {}\n{}",
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

/// One worker killed with SIGKILL while flows stream in, then a cluster node: the survivors take
/// its shards over.
#[test]
fn fleet_of_daemons_survives_a_killed_worker_and_matches_one_process() {
    fleet_matches_one_process("kill", Trouble::KillWorkerThenNode, 1);
}

/// A paused cluster node (publishes retried, pulls not ended, deletes timing out) and a worker
/// stopped for two leases, with two fleet members per worker process: nothing is counted
/// twice, nothing lost.
///
/// The remainder of issue 15's defect 13 (docs/fleet.md, "Under load"), run 10 times in a row
/// with two busy loops on the two cores: with batch ids stored with the marks and connections
/// leaving a server whose JetStream does not answer, 7 of 10 passed (3 had not all shards
/// owned within 60 s of the pause); with a consumer found by its filter, a shard any worker
/// may take when all are cooling for it, and 150 s to settle, 8 of 10 (a collector gave
/// batches up after 30 s of retries; an inventory not settled within 120 s); with 60 s of
/// retries, 10 of 10 (every shard owned again 44–97 s after the pause). The inventory now has
/// 240 s to settle.
///
/// Ignored from 2026-12-02 to 2026-12-03 for a loss under load (docs/fleet.md, Limits): its
/// parts were tenures ordered by the lease bucket's revisions (closed by fences the database
/// issues), consumers that never delivered (re-created after 20 s of silence), and batches that
/// nats-server acknowledged to a collector and no consumer ever delivered (closed by the
/// collector's outbox: a batch is held until the worker that wrote it confirms it, and sent
/// again when the stream lost it). Since the outbox: 13 of 13 runs exact (5 under two busy
/// loops, 8 beside a release build).
#[test]
fn fleet_counts_once_through_a_paused_node_and_a_stalled_worker() {
    fleet_matches_one_process("pause", Trouble::PauseNodeThenStallWorker, 2);
}
