//! The fleet's bus against a real nats-server with JetStream (Debian's package, started here on
//! 127.0.0.1): flows published by two collectors, sharded by host, consumed by workers through
//! durable per-shard consumers; every flow evaluated exactly once in effect, also when a worker
//! dies holding unacknowledged batches. The daemons on a 3-node cluster are in `fleet_cluster.rs`.

mod common;

use flowprint::compiler::Compiler;
use flowprint::eval::{LocalNets, flow_shards};
use flowprint::fleet::{Bus, BusConfig, Publisher, codec};
use flowprint::flow::Flow;
use flowprint::infer::HostTable;
use flowprint::scan::Scanner;
use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
    ruleset: std::sync::Arc<flowprint::ruleset::Ruleset>,
    scanners: BTreeMap<u32, Scanner>,
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
        let ruleset = c.compile().ruleset;
        let local = std::sync::Arc::new(LocalNets::default());
        Worker {
            scanners: shards
                .iter()
                .map(|&s| {
                    let scanner = Scanner::new(ruleset.clone(), local.clone(), HostTable::new())
                        .with_shard(SHARDS, s);
                    (s, scanner)
                })
                .collect(),
            ruleset,
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
        let scanner = self.scanners.get_mut(&d.shard).unwrap();
        let dns = flowprint::dns::DnsMap::new();
        for f in &batch.flows {
            if scanner.apply(f, &dns).primary {
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
        for scanner in w.scanners.values() {
            for h in scanner.hosts().summaries(&w.ruleset) {
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
                    primary += u64::from(flow_shards(&local, &f, 4).0 == shard);
                }
            }
            bus.ack(&msgs).unwrap();
        }
    }
    assert_eq!(primary, sent, "every received flow published once");
}

/// Every batch on the bus, decoded: (flows counted as primary, batches, batches seen twice by
/// their publisher id and sequence).
fn drain_bus(bus: &Bus, shards: u32) -> (u64, u64, u64) {
    let local = LocalNets::default();
    let (mut primary, mut batches, mut twice) = (0u64, 0u64, 0u64);
    let mut seen = std::collections::HashSet::new();
    for shard in 0..shards {
        let c = bus.consumer(shard).unwrap();
        loop {
            let msgs = bus.fetch(&c, 256).unwrap();
            if msgs.is_empty() {
                break;
            }
            for m in &msgs {
                let batch = codec::decode(&m.data).unwrap();
                batches += 1;
                if !seen.insert((batch.publisher, batch.seq, shard)) {
                    twice += 1;
                }
                for f in batch.flows {
                    primary += u64::from(flow_shards(&local, &f, shards).0 == shard);
                }
            }
            bus.ack(&msgs).unwrap();
        }
    }
    (primary, batches, twice)
}

/// A server paused (SIGSTOP) for longer than a publish's timeout: the collector's publishes wait
/// unanswered in the server's socket, time out and are retried; on waking (SIGCONT) the server
/// finds the originals and the retries there. The stream must hold each batch once.
#[test]
fn a_paused_server_stores_each_retried_batch_once() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let tmp = common::TempDir::new("fleet-paused");
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
    let datagrams = flowprint::bench::generate_v9(300, 30, 12);
    let send = |range: std::ops::Range<usize>| {
        for d in &datagrams[range] {
            sock.send_to(d, serve.udp).unwrap();
            std::thread::sleep(Duration::from_micros(300));
        }
    };
    let metric = |name: &str| {
        let (_, m) = common::serve::http(serve.api, "GET", "/metrics", None, b"");
        common::serve::metric(&m, name)
    };
    send(0..100);
    common::serve::wait_until("published", Duration::from_secs(20), || {
        metric("flowprint_fleet_batches_published_total") > 0
    });
    // Paused for 8 s: longer than a publish's acknowledgement wait (5 s), so the batches sent
    // meanwhile are retried while their originals are still unread in the socket.
    common::serve::unsafe_kill(nats.child.id(), 19);
    let paused = std::time::Instant::now();
    send(100..200);
    std::thread::sleep(Duration::from_secs(8).saturating_sub(paused.elapsed()));
    common::serve::unsafe_kill(nats.child.id(), 18);
    send(200..300);
    let mut decoder = flowprint::flow::netflow::Decoder::new();
    let mut expected = 0u64;
    for d in &datagrams {
        flowprint::flow::ingest::binary::decode_datagram(
            &mut decoder,
            "127.0.0.1".parse().unwrap(),
            d,
            0,
            &mut |_| expected += 1,
        )
        .unwrap();
    }
    common::serve::wait_until("flows received", Duration::from_secs(30), || {
        metric("flowprint_flows_received_total") == expected
    });
    common::serve::wait_until("retries done", Duration::from_secs(40), || {
        metric("flowprint_fleet_retry_queue_batches") == 0
    });
    assert!(
        metric("flowprint_fleet_batches_retried_total") > 0,
        "nothing was retried: the pause did not hold the publishes up"
    );
    assert_eq!(metric("flowprint_fleet_batches_refused_total"), 0);
    // The server had stored the originals: it recognised the retries by their message ids.
    assert!(metric("flowprint_fleet_batches_duplicate_total") > 0);
    let sent = metric("flowprint_flows_received_total");
    let log = serve.stop();
    let bus = Bus::connect(&nats.url, small()).unwrap();
    let (primary, batches, twice) = drain_bus(&bus, 4);
    assert_eq!(twice, 0, "{twice} of {batches} batches stored twice\n{log}");
    assert_eq!(primary, sent, "every received flow published once");
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
        flowprint::pack::archive::write_archive(&pack, &format!("{name}-{version}"), &archive)
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
/// and runs it (within 2 s on an idle machine). A broken pack is refused by `pack publish`; pushed into the bucket
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
    // The deadline is generous (a loaded machine); the time it took is printed.
    let took = common::serve::wait_until(
        "every worker runs campus 1.2.0",
        Duration::from_secs(30),
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

/// A worker daemon consuming `url` with two shards, its inventory in `db`.
fn two_shard_worker(
    dir: &std::path::Path,
    url: &str,
    db: &std::path::Path,
    extra: &[&str],
) -> common::serve::Serve {
    let mut args = vec![
        "--consume",
        url,
        "--fleet-max-bytes",
        MAX_BYTES_ARG,
        "--fleet-shards",
        "2",
        "--db",
        db.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    common::serve::Serve::start(dir, &args)
}

/// Publishes `n` generated flows of `collector` in two shards; returns the batches published.
fn publish_two_shards(bus: &Bus, collector: u8, n: u32) -> u64 {
    let mut p = Publisher::new(LocalNets::default(), 2, [collector; 16]);
    let mut batches = Vec::new();
    for f in flows(collector, n) {
        batches.extend(p.push(f));
    }
    batches.extend(p.flush());
    for r in bus.publish(&batches) {
        r.unwrap();
    }
    batches.len() as u64
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
        two_shard_worker(&dir, &nats.url, &db, extra)
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
        publish_two_shards(&Bus::connect(url, small()).unwrap(), 5, n);
    };
    let evaluated = |w: &common::serve::Serve| {
        let (_, m) = common::serve::http(w.api, "GET", "/metrics", None, b"");
        common::serve::metric(&m, "flowprint_flows_evaluated_total")
    };
    let run = |url: &str, want: u64| {
        let w = two_shard_worker(&tmp.0, url, &db, &[]);
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

/// A batch at or below a shard's stored mark whose id the shard never recorded was never
/// applied (a consumer skipped it while delivering later ones): the next owner applies it late
/// instead of acknowledging it unseen. Here the database says every batch in the stream is
/// below the mark, and records only an id from before them: each batch must still be counted
/// once, and counted as late.
#[test]
fn batches_below_the_mark_that_were_never_recorded_are_applied_late() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let tmp = common::TempDir::new("fleet-late");
    let db = tmp.0.join("fleet.db");
    let bus = Bus::connect(&nats.url, small()).unwrap();
    let published = publish_two_shards(&bus, 6, 3000);
    let (_, _, last) = bus.stream_state().unwrap();
    // Both shards: marked at the stream's last batch, one foreign id recorded at sequence 0.
    {
        let mut store = flowprint::inventory::open(db.to_str().unwrap()).unwrap();
        let stream = bus.stream_id();
        for shard in 0..2 {
            let (_, fence) = store.claim_shard(&stream, shard).unwrap();
            store
                .save_marked(
                    &[],
                    &[flowprint::inventory::FleetMark {
                        stream: stream.clone(),
                        shard,
                        seq: last,
                        fence,
                        batches: vec![(0, [0xee; 24])],
                    }],
                )
                .unwrap();
        }
    }
    let w = two_shard_worker(&tmp.0, &nats.url, &db, &[]);
    let metric = |name: &str| {
        let (_, m) = common::serve::http(w.api, "GET", "/metrics", None, b"");
        common::serve::metric(&m, name)
    };
    common::serve::wait_until("every flow evaluated", Duration::from_secs(30), || {
        metric("flowprint_flows_evaluated_total") >= 3000
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(metric("flowprint_flows_evaluated_total"), 3000);
    assert_eq!(metric("flowprint_fleet_late_batches_total"), published);
    assert_eq!(metric("flowprint_fleet_batches_skipped_total"), 0);
    w.stop();
}

/// The stream loses a batch after the server acknowledged it (as a 3-node cluster was seen to
/// after a node's pause; here the batch is deleted from the stream): no worker confirms it, the
/// collector finds it gone from the stream and sends it again, and the worker counts every
/// flow once. Without the collector's outbox the batch's flows would be missing for good.
#[test]
fn a_batch_the_stream_lost_after_storing_it_is_sent_again_and_counted_once() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let tmp = common::TempDir::new("fleet-lost");
    let db = tmp.0.join("fleet.db");
    let collector_dir = tmp.0.join("c");
    std::fs::create_dir_all(&collector_dir).unwrap();
    let collector = common::serve::Serve::start(
        &collector_dir,
        &[
            "--publish",
            &nats.url,
            "--fleet-max-bytes",
            MAX_BYTES_ARG,
            "--fleet-shards",
            "2",
            "--fleet-confirm-wait",
            "2s",
            "--no-db",
            "--no-default-rules",
        ],
    );
    let metric = |s: &common::serve::Serve, name: &str| {
        let (_, m) = common::serve::http(s.api, "GET", "/metrics", None, b"");
        common::serve::metric(&m, name)
    };
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let datagrams = flowprint::bench::generate_v9(100, 30, 13);
    for d in &datagrams {
        sock.send_to(d, collector.udp).unwrap();
        std::thread::sleep(Duration::from_micros(300));
    }
    let sent = 100 * 30;
    common::serve::wait_until("flows received", Duration::from_secs(30), || {
        metric(&collector, "flowprint_flows_received_total") == sent
    });
    common::serve::wait_until("batches stored", Duration::from_secs(30), || {
        metric(&collector, "flowprint_fleet_held_batches") > 0
            && metric(&collector, "flowprint_fleet_held_batches")
                == metric(&collector, "flowprint_fleet_batches_published_total")
    });
    // The stream's first batch lost, before any worker saw it.
    let bus = Bus::connect(&nats.url, small()).unwrap();
    let (messages, first, _) = bus.stream_state().unwrap();
    assert!(messages > 1, "{messages} batches in the stream");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let lost_flows = rt.block_on(async {
        let client = async_nats::connect(&nats.url).await.unwrap();
        let stream = async_nats::jetstream::new(client)
            .get_stream(&small().stream)
            .await
            .unwrap();
        let m = stream.get_raw_message(first).await.unwrap();
        assert!(stream.delete_message(first).await.unwrap());
        codec::decode(&m.payload).unwrap().flows.len()
    });
    assert!(lost_flows > 0);
    let w = two_shard_worker(&tmp.0, &nats.url, &db, &[]);
    common::serve::wait_until("every flow evaluated", Duration::from_secs(60), || {
        metric(&w, "flowprint_flows_evaluated_total") >= sent
    });
    common::serve::wait_until("every batch confirmed", Duration::from_secs(30), || {
        metric(&collector, "flowprint_fleet_held_batches") == 0
    });
    assert_eq!(metric(&w, "flowprint_flows_evaluated_total"), sent);
    assert!(metric(&collector, "flowprint_fleet_batches_resent_total") >= 1);
    assert_eq!(
        metric(&collector, "flowprint_fleet_batches_unconfirmed_total"),
        0
    );
    assert!(metric(&w, "flowprint_fleet_confirmations_sent_total") >= messages);
    let log = collector.stop();
    assert!(
        log.contains("is not in the stream: sent again"),
        "the collector says what it sent again:\n{log}"
    );
    w.stop();
}
