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
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.0.join("js"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        })
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SHARDS: u32 = 8;

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
                let msgs = bus.fetch(c, 256, Duration::from_millis(200)).unwrap();
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
        for r in bus.publish(batches) {
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
    for r in bus.publish(batches) {
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
        bus.fetch(&c, 10, Duration::from_millis(300))
            .unwrap()
            .is_empty(),
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
    let bus = Bus::connect(&nats.url, BusConfig::default()).unwrap();
    let local = LocalNets::default();
    let mut primary = 0u64;
    for shard in 0..4 {
        let c = bus.consumer(shard).unwrap();
        loop {
            let msgs = bus.fetch(&c, 256, Duration::from_millis(300)).unwrap();
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
