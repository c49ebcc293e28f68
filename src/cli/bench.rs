//! `flowprint bench`: reproducible throughput figures.

use flowprint::bench::{generate_flows, generate_rules};
use flowprint::compiler::Compiler;
use flowprint::eval::{Evaluator, LocalNets};
use flowprint::scan::Scanner;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `bench`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Evaluation throughput with passive DNS names, with and without a background refresher
    /// re-resolving `--names` names against `--server` (a local DNS server serving
    /// `host<i>.example`, see scripts/bench-dns.sh).
    DnsRefresh {
        /// Names the refresher keeps fresh (`host0.example` ...).
        #[arg(long, default_value_t = 10_000)]
        names: usize,
        /// The DNS server (loopback) that answers them.
        #[arg(long)]
        server: std::net::SocketAddr,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Shortest TTL the refresher honours (the server's TTL should match).
        #[arg(long, default_value_t = 10)]
        min_ttl: u64,
    },
    /// Reload of a large ruleset through the rule store while another thread evaluates flows:
    /// compile time of each reload, and the per-flow evaluation latency (p50/p99/max) during
    /// reloads against the latency without.
    Reload {
        /// Rules in the set.
        #[arg(long, default_value_t = 100_000)]
        rules: usize,
        /// Reloads (each a real change: the whole set is compiled and swapped).
        #[arg(long, default_value_t = 5)]
        reloads: usize,
    },
    /// Address+time → names lookups on a passive DNS map of N pairs.
    Dns {
        /// (address, name) pairs in the map.
        #[arg(long, default_value_t = 1_000_000)]
        pairs: u32,
    },
    /// The whole path on one core, shaped like one daemon worker: decode IPFIX from memory into
    /// batches of 512 flows, apply each batch through the scanner (the bundled rules) under one
    /// read of the DNS map, and write the inventory (SQLite) in one batch at the end.
    Pipeline {
        /// Flows in total.
        #[arg(long, default_value_t = 10_000_000)]
        flows: usize,
        /// Distinct local hosts.
        #[arg(long, default_value_t = 100_000)]
        hosts: u32,
        /// Inventory to write (a SQLite file, replaced); default: a temporary file.
        #[arg(long)]
        db: Option<String>,
    },
    /// Memory of the host table: feeds flows of N hosts (two each, one a connectivity check
    /// that the bundled rules recognise) and reports the resident memory per host.
    Hosts {
        /// Hosts.
        #[arg(long, default_value_t = 1_000_000)]
        hosts: u32,
    },
    /// Send generated NetFlow v9 datagrams (30 records each) over loopback to an in-process
    /// collector at a fixed rate and report what arrived and what was dropped.
    Collect {
        /// Target rate, flows per second.
        #[arg(long, default_value_t = 500_000)]
        rate: u64,
        /// Duration of the send.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Also send every datagram to 127.0.0.1:PORT (e.g. an nfcapd, to compare in the same run).
        #[arg(long, value_name = "PORT")]
        also: Option<u16>,
    },
    /// The fleet's serialization cost (batch encoding and decoding per flow, bytes per flow)
    /// and, with --nats, the collector role's publish rate: generated flows are published
    /// to the stream in batches, as `serve --publish` does (scripts/bench-fleet.sh then times
    /// workers consuming them).
    Fleet {
        /// Flows.
        #[arg(long, default_value_t = 2_000_000)]
        flows: usize,
        /// Passes of the codec measurement; the median is reported.
        #[arg(long, default_value_t = 5)]
        passes: usize,
        /// Publish the flows to this NATS JetStream server.
        #[arg(long, value_name = "nats://HOST:PORT")]
        nats: Option<String>,
        /// Shards of the fleet.
        #[arg(long, default_value_t = 16)]
        shards: u32,
    },
    /// The hosts web page over N hosts: the summaries (computed at most every 2 s for the
    /// pages), then the first page filtered, sorted and rendered; its size.
    Web {
        /// Hosts.
        #[arg(long, default_value_t = 100_000)]
        hosts: u32,
        /// Renders of the page; the median is reported.
        #[arg(long, default_value_t = 21)]
        passes: usize,
    },
    /// Decode generated NetFlow v9 and IPFIX datagrams (30 records each) on one core.
    Decode {
        /// Datagrams per pass.
        #[arg(long, default_value_t = 20_000)]
        datagrams: usize,
        /// Passes; the median is reported.
        #[arg(long, default_value_t = 7)]
        passes: usize,
    },
    /// A catalogue of generated transfer rules on one mirror: flows applied through the
    /// per-flow path on one core, a tenth of them downloads from the mirror split over
    /// several records (each host downloads files of the catalogue).
    Transfers {
        /// Number of generated transfer rules.
        #[arg(long, default_value_t = 100_000)]
        rules: usize,
        /// Number of flows.
        #[arg(long, default_value_t = 1_000_000)]
        flows: usize,
        /// Passes over the flows (a new inventory each); the median pass is reported.
        #[arg(long, default_value_t = 5)]
        passes: usize,
    },
    /// Parse + compile a generated pack, then evaluate generated flows on one core.
    Eval {
        /// Number of generated rules.
        #[arg(long, default_value_t = 10_000)]
        rules: usize,
        /// Number of generated flows (evaluated repeatedly).
        #[arg(long, default_value_t = 1_000_000)]
        flows: usize,
        /// Passes over the flows; the median pass is reported.
        #[arg(long, default_value_t = 7)]
        passes: usize,
    },
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `bench`.
pub fn run(args: Args) -> anyhow::Result<i32> {
    match args.what {
        What::DnsRefresh {
            names,
            server,
            seconds,
            min_ttl,
        } => dns_refresh(names, server, seconds, min_ttl)?,
        What::Dns { pairs } => dns_lookup(pairs),
        What::Reload { rules, reloads } => reload(rules, reloads)?,
        What::Pipeline { flows, hosts, db } => pipeline(flows, hosts, db)?,
        What::Web { hosts, passes } => web(hosts, passes)?,
        What::Fleet {
            flows,
            passes,
            nats,
            shards,
        } => fleet(flows, passes, nats, shards)?,
        What::Hosts { hosts } => host_memory(hosts)?,
        What::Collect {
            rate,
            seconds,
            also,
        } => collect(rate, seconds, also)?,
        What::Decode { datagrams, passes } => {
            for (name, data) in [
                (
                    "NetFlow v9",
                    flowprint::bench::generate_v9(datagrams, 30, 1),
                ),
                ("IPFIX", flowprint::bench::generate_ipfix(datagrams, 30, 1)),
            ] {
                let exporter: std::net::IpAddr = "127.0.0.1".parse().expect("literal");
                let mut times = Vec::new();
                let mut records = 0u64;
                for _ in 0..passes.max(1) {
                    let mut dec = flowprint::flow::netflow::Decoder::new();
                    records = 0;
                    let t = Instant::now();
                    for d in &data {
                        let _ = dec.decode(exporter, d, &mut |f| {
                            records += 1;
                            std::hint::black_box(f);
                        });
                    }
                    times.push(t.elapsed().as_secs_f64());
                }
                let m = median(times);
                println!(
                    "decode {name}: {} datagrams, {records} records per pass; median {:.1} ms = {:.2} M records/s (one core)",
                    data.len(),
                    m * 1e3,
                    records as f64 / m / 1e6
                );
            }
        }
        What::Transfers {
            rules,
            flows,
            passes,
        } => transfers(rules, flows, passes)?,
        What::Eval {
            rules,
            flows,
            passes,
        } => {
            let text = generate_rules(rules, 42);
            let mut compile_times = Vec::new();
            let mut compiled = None;
            for _ in 0..5 {
                let t = Instant::now();
                let mut c = Compiler::new();
                c.add_source("bench", "bench.rules", &text);
                let out = c.compile();
                compile_times.push(t.elapsed().as_secs_f64());
                compiled = Some(out);
            }
            let compiled = compiled.expect("compiled at least once");
            if let Some(d) = compiled
                .diagnostics
                .iter()
                .find(|d| d.severity() == flowprint::diagnostic::Severity::Error)
            {
                anyhow::bail!(
                    "generated rules failed to compile:\n{}",
                    d.render(&compiled.sources)
                );
            }
            let ruleset = &compiled.ruleset;
            println!(
                "rules: {} ({} KiB of text), {} unindexed; parse+compile median {:.1} ms",
                ruleset.len(),
                text.len() / 1024,
                ruleset.unindexed().len(),
                median(compile_times) * 1e3
            );
            let data = generate_flows(flows, 7);
            let local = LocalNets::default();
            let mut ev = Evaluator::new(ruleset, &local);
            let mut times = Vec::new();
            let mut matches = 0u64;
            for _ in 0..passes.max(1) {
                matches = 0;
                let t = Instant::now();
                for f in &data {
                    ev.eval(f, |_| matches += 1);
                }
                times.push(t.elapsed().as_secs_f64());
            }
            let m = median(times);
            println!(
                "eval: {} flows x {} passes, {} matches per pass; median {:.1} ms per pass = {:.2} M flows/s (one core)",
                data.len(),
                passes.max(1),
                matches,
                m * 1e3,
                data.len() as f64 / m / 1e6
            );
        }
    }
    Ok(0)
}

/// `bench collect`: a paced sender thread and the collector in this process.
fn collect(rate: u64, seconds: f64, also: Option<u16>) -> anyhow::Result<()> {
    use flowprint::collect::{Collector, CollectorConfig};
    use std::sync::atomic::Ordering;
    let mut collector = Collector::bind(&CollectorConfig {
        listen: vec!["127.0.0.1:0".parse()?],
        ..Default::default()
    })?;
    let listener = collector.listeners()[0].clone();
    let stop = collector.stop_flag();
    let consumer = std::thread::spawn(move || {
        let mut flows = 0u64;
        collector.run(None, &mut |_| flows += 1, &mut |_| {});
        let stats = collector.shutdown(&mut |_| flows += 1, &mut |_| {});
        (flows, stats)
    });
    // 2,000 distinct datagrams (the first carries the template), replayed in a loop.
    let datagrams = flowprint::bench::generate_v9(2_000, 30, 3);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let per_ms = rate as f64 / 30.0 / 1000.0;
    let started = Instant::now();
    let (mut sent, mut owed, mut i) = (0u64, 0.0f64, 0usize);
    let mut last = started;
    while started.elapsed().as_secs_f64() < seconds {
        let now = Instant::now();
        owed += now.duration_since(last).as_secs_f64() * 1000.0 * per_ms;
        last = now;
        while owed >= 1.0 {
            let d = &datagrams[if sent == 0 {
                0
            } else {
                1 + i % (datagrams.len() - 1)
            }];
            socket.send_to(d, listener.addr)?;
            if let Some(p) = also {
                let _ = socket.send_to(d, ("127.0.0.1", p));
            }
            sent += 1;
            i += 1;
            owed -= 1.0;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let elapsed = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (flows, stats) = consumer
        .join()
        .map_err(|_| anyhow::anyhow!("collector thread panicked"))?;
    let lost_in_kernel = sent.saturating_sub(stats.received);
    println!(
        "collect: target {rate} flows/s for {seconds} s; sent {sent} datagrams ({} flows) = {:.0} flows/s; \
         received {} datagrams, decoded {flows} flows; queue drops {}, kernel drops {lost_in_kernel}; \
         receive buffer granted {} KiB",
        sent * 30,
        (sent * 30) as f64 / elapsed,
        stats.received,
        stats.queue_drops,
        listener.granted / 1024
    );
    Ok(())
}

/// `bench transfers`.
fn transfers(rules: usize, flows: usize, passes: usize) -> anyhow::Result<()> {
    use flowprint::bench::{MIRROR, generate_flows, generate_transfer_rules};
    use flowprint::infer::{HostTable, InferConfig};
    let (text, sizes) = generate_transfer_rules(rules, 42);
    let t = Instant::now();
    let mut c = Compiler::new();
    c.add_source("catalogue", "catalogue.rules", &text);
    let compiled = c.compile();
    anyhow::ensure!(
        compiled.errors() == 0,
        "generated transfer rules do not compile"
    );
    let compile_s = t.elapsed().as_secs_f64();
    // The flows: generated traffic, and every tenth flow one record of a download from the
    // mirror (a file of the catalogue in three records, by host and connection).
    let mut data = generate_flows(flows, 7);
    let mirror = std::net::IpAddr::from(MIRROR.1);
    let name = flowprint::flow::normalize_name(MIRROR.0);
    let mut downloads = 0u64;
    for (i, f) in data.iter_mut().enumerate().filter(|(i, _)| i % 10 == 0) {
        let k = i / 30;
        let size = sizes[k % sizes.len()];
        let part = (i / 10) % 3;
        f.dst = mirror;
        f.dst_port = 443;
        f.proto = 6;
        f.src_port = 40_000 + (k % 20_000) as u16;
        f.dst_name = name.clone();
        f.rev_bytes = if part == 2 {
            size - 2 * (size / 3)
        } else {
            size / 3
        };
        f.rev_packets = f.rev_bytes / 1400 + 1;
        f.start_ms = 1_700_000_000_000 + (i as i64) * 10;
        f.end_ms = f.start_ms + 5;
        downloads += u64::from(part == 2);
    }
    let dns = flowprint::dns::DnsMap::new();
    let mut times = Vec::new();
    let mut found = 0u64;
    for _ in 0..passes.max(1) {
        let mut scanner = Scanner::new(
            compiled.ruleset.clone(),
            Arc::new(LocalNets::default()),
            HostTable::with_config(InferConfig {
                record_samples: false,
                ..Default::default()
            }),
        );
        let t = Instant::now();
        for f in &data {
            scanner.apply(f, &dns);
        }
        times.push(t.elapsed().as_secs_f64());
        found = scanner.hosts().matches;
    }
    let m = median(times);
    println!(
        "transfers: {} transfer rules (compiled in {:.2} s), {} flows of which {} downloads in 3 records; {} matches; median {:.1} ms per pass = {:.2} M flows/s (one core)",
        compiled.ruleset.len(),
        compile_s,
        data.len(),
        downloads,
        found,
        m * 1e3,
        data.len() as f64 / m / 1e6
    );
    Ok(())
}

fn bundled() -> anyhow::Result<flowprint::compiler::Compiled> {
    let mut c = Compiler::new();
    c.add_sources(&flowprint::sources::Sources::embedded());
    let compiled = c.compile();
    anyhow::ensure!(compiled.errors() == 0, "bundled rules do not compile");
    Ok(compiled)
}

/// `bench pipeline`.
fn pipeline(flows: usize, hosts: u32, db: Option<String>) -> anyhow::Result<()> {
    use flowprint::infer::{HostTable, InferConfig};
    let compiled = bundled()?;
    let rules = &compiled.ruleset;
    // 1,000,020 flows of generated IPFIX (30 records per message) replayed until `flows`.
    let datagrams = flowprint::bench::generate_ipfix_hosts(33_334, 30, hosts, 11);
    // Shaped like one daemon worker: flows decoded into batches of 512, each batch applied by
    // the worker's scanner under one read of the DNS map, its learned names written after it.
    let dns = std::sync::RwLock::new(flowprint::dns::DnsMap::new());
    let mut scanner = Scanner::new(
        rules.clone(),
        Arc::new(LocalNets::default()),
        HostTable::with_config(InferConfig {
            record_samples: false,
            ..Default::default()
        }),
    );
    let exporter: std::net::IpAddr = "127.0.0.1".parse()?;
    let started = Instant::now();
    let mut n = 0usize;
    let mut batch: Vec<flowprint::flow::Flow> = Vec::with_capacity(512);
    // As `serve::pipeline`'s workers: one read of the map per batch, its names written after.
    let apply = |batch: &mut Vec<flowprint::flow::Flow>, scanner: &mut Scanner| {
        let map = dns
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (_, learned) = scanner.apply_batch(batch.iter(), &map);
        drop(map);
        batch.clear();
        if !learned.is_empty() {
            learned.write_into(
                &mut dns
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
        }
    };
    'outer: loop {
        let mut dec = flowprint::flow::netflow::Decoder::new();
        for d in &datagrams {
            let _ = dec.decode(exporter, d, &mut |f| batch.push(f));
            if batch.len() >= 512 {
                apply(&mut batch, &mut scanner);
            }
            n += 30;
            if n >= flows {
                break 'outer;
            }
        }
    }
    apply(&mut batch, &mut scanner);
    let (inv, _) = scanner.into_parts();
    let infer_done = started.elapsed().as_secs_f64();
    let path = db.unwrap_or_else(|| {
        std::env::temp_dir()
            .join(format!("flowprint-bench-{}.db", std::process::id()))
            .display()
            .to_string()
    });
    let _ = std::fs::remove_file(&path);
    let mut store = flowprint::inventory::open(&path)?;
    let stored = inv.to_stored(rules);
    let summarized = started.elapsed().as_secs_f64();
    store.save(&stored)?;
    let total = started.elapsed().as_secs_f64();
    eprintln!(
        "(summaries {:.2} s, database {:.2} s)",
        summarized - infer_done,
        total - summarized
    );
    println!(
        "pipeline: {} flows over {} hosts ({} with evidence), {} matches; decode+evaluate+infer {:.2} s, \
         inventory write of {} hosts {:.2} s; total {:.2} s = {:.2} M flows/s (one core)",
        inv.flows,
        inv.len(),
        stored.iter().filter(|h| !h.evidence.is_empty()).count(),
        inv.matches,
        infer_done,
        stored.len(),
        total - infer_done,
        total,
        inv.flows as f64 / total / 1e6
    );
    Ok(())
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<u64>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}

/// `bench hosts`.
fn host_memory(hosts: u32) -> anyhow::Result<()> {
    use flowprint::flow::{Flow, normalize_name, proto};
    use flowprint::infer::{HostTable, InferConfig};
    let compiled = bundled()?;
    let rules = &compiled.ruleset;
    let mut scanner = Scanner::new(
        rules.clone(),
        Arc::new(LocalNets::default()),
        HostTable::with_config(InferConfig {
            record_samples: false,
            max_hosts: hosts as usize + 1,
            ..Default::default()
        }),
    );
    let dns = flowprint::dns::DnsMap::new();
    let probes = [
        "www.msftconnecttest.com",
        "captive.apple.com",
        "connectivitycheck.gstatic.com",
        "connectivity-check.ubuntu.com",
    ];
    let names: Vec<_> = probes.iter().map(|p| normalize_name(p)).collect();
    let before = rss_bytes();
    for i in 0..hosts {
        let host = std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000u32 + i));
        let mut f = Flow::new(host, 50_000, "93.184.216.34".parse()?, 443, proto::TCP);
        f.start_ms = 1_700_000_000_000 + i64::from(i);
        f.end_ms = f.start_ms + 1000;
        f.bytes = 1000;
        f.packets = 10;
        scanner.apply(&f, &dns);
        f.dst_port = 80;
        f.dst_name = names[i as usize % names.len()].clone();
        scanner.apply(&f, &dns);
    }
    let after = rss_bytes();
    let inv = scanner.hosts();
    let with_evidence = inv
        .to_stored(rules)
        .iter()
        .filter(|h| !h.evidence.is_empty())
        .count();
    println!(
        "hosts: {} hosts ({} with evidence), resident memory +{:.1} MiB = {:.0} bytes per host",
        inv.len(),
        with_evidence,
        (after - before) as f64 / (1 << 20) as f64,
        (after - before) as f64 / f64::from(hosts.max(1))
    );
    Ok(())
}

/// `bench dns`: `pairs` pairs over `pairs / 2` addresses, looked up at random times.
fn dns_lookup(pairs: u32) {
    use flowprint::dns::{DnsMap, Source};
    let mut map = DnsMap::new();
    let addrs = (pairs / 2).max(1);
    let addr = |i: u32| {
        std::net::IpAddr::V4(std::net::Ipv4Addr::from(
            0x1400_0000u32.wrapping_add(i.wrapping_mul(2_654_435_761) >> 6),
        ))
    };
    for i in 0..pairs {
        map.insert(
            addr(i % addrs),
            &format!("n{}.cdn{}.example", i / addrs, i % 1000),
            1_700_000_000_000 + i64::from(i % 3600) * 1000,
            300,
            Source::Log,
        );
    }
    let mut rng = flowprint::bench::Rng::new(5);
    let queries: Vec<(std::net::IpAddr, i64)> = (0..1_000_000)
        .map(|_| {
            (
                addr(rng.below(u64::from(addrs) * 2) as u32),
                1_700_000_000_000 + rng.below(4_000_000) as i64,
            )
        })
        .collect();
    let mut out = Vec::new();
    let mut times = Vec::new();
    let mut found = 0usize;
    for _ in 0..7 {
        found = 0;
        let t = Instant::now();
        for &(a, at) in &queries {
            out.clear();
            map.lookup_into(a, at, &mut out);
            found += out.len();
        }
        times.push(t.elapsed().as_secs_f64());
    }
    let m = median(times);
    println!(
        "dns: {} pairs; {} lookups (half of unknown addresses), {found} names found; median {:.1} ns per lookup",
        map.len(),
        queries.len(),
        m / queries.len() as f64 * 1e9
    );
}

/// `bench dns-refresh`.
fn dns_refresh(
    names: usize,
    server: std::net::SocketAddr,
    seconds: f64,
    min_ttl: u64,
) -> anyhow::Result<()> {
    use flowprint::dns::DnsMap;
    use flowprint::dns::resolve::{HickoryResolver, RefreshSettings, Refresher, ResolverSettings};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, RwLock};
    let text = generate_rules(10_000, 42);
    let mut c = Compiler::new();
    c.add_source("bench", "bench.rules", &text);
    let compiled = c.compile();
    let rules = &compiled.ruleset;
    let data = generate_flows(1_000_000, 7);
    let mut scanner = Scanner::new(
        rules.clone(),
        Arc::new(LocalNets::default()),
        flowprint::infer::HostTable::with_config(flowprint::infer::InferConfig {
            record_samples: false,
            ..Default::default()
        }),
    );
    let map = Arc::new(RwLock::new(DnsMap::new()));
    let list: Vec<String> = (0..names).map(|i| format!("host{i}.example")).collect();
    let resolver = Arc::new(HickoryResolver::with_servers(
        &[server],
        ResolverSettings::default(),
    )?);
    let refresher = Arc::new(Refresher::new(
        list,
        resolver,
        map.clone(),
        RefreshSettings {
            min_ttl: Duration::from_secs(min_ttl),
            ..Default::default()
        },
    ));
    // Fill the map once, then measure evaluation alone and with the refresher running.
    let first = refresher.refresh_due(flowprint::dns::resolve::now_ms());
    eprintln!("initial resolution: {first:?}");
    let mut measure = |label: &str| {
        let started = Instant::now();
        let (mut flows, mut matches) = (0u64, 0u64);
        while started.elapsed().as_secs_f64() < seconds {
            for chunk in data.chunks(65_536) {
                let guard = map.read().expect("map lock");
                let before = scanner.hosts().matches;
                for f in chunk {
                    scanner.apply(f, &guard);
                }
                matches += scanner.hosts().matches - before;
                flows += chunk.len() as u64;
            }
        }
        let rate = flows as f64 / started.elapsed().as_secs_f64();
        println!(
            "{label}: {:.2} M flows/s ({matches} matches, {} pairs in the map)",
            rate / 1e6,
            map.read().map(|m| m.len()).unwrap_or(0)
        );
        rate
    };
    // Alternate idle and busy phases so that the machine's own noise falls on both alike;
    // compare the medians.
    let (mut idle, mut busy) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        idle.push(measure("evaluation, refresher idle"));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = refresher.spawn(stop.clone())?;
        busy.push(measure("evaluation, refresher running"));
        stop.store(true, Ordering::Relaxed);
        let _ = handle.join();
    }
    let (idle, busy) = (median(idle), median(busy));
    let status = refresher.status();
    let refreshed = status
        .iter()
        .filter(|s| s.last_success_ms.is_some())
        .count();
    println!(
        "refreshing {names} names in the background changed evaluation throughput by {:+.1} % (medians of 3 alternating phases: {:.2} vs {:.2} M flows/s; {refreshed} names resolved)",
        (busy / idle - 1.0) * 100.0,
        busy / 1e6,
        idle / 1e6
    );
    Ok(())
}

fn reload(rules: usize, reloads: usize) -> anyhow::Result<()> {
    use flowprint::store::{RuleStore, StoreConfig};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = std::env::temp_dir().join(format!("flowprint-bench-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("bench.rules");
    let text = generate_rules(rules, 42);
    std::fs::write(&file, &text)?;
    let store = Arc::new(RuleStore::open(StoreConfig {
        embedded: false,
        paths: vec![file.clone()],
        state_dir: None,
        ..Default::default()
    })?);
    println!(
        "{} rules ({} KiB); boot {:.0} ms",
        store.current().ruleset.len(),
        text.len() / 1024,
        store.last_report().compile_ms
    );
    let data = generate_flows(200_000, 7);
    let local = Arc::new(LocalNets::default());
    let stop = Arc::new(AtomicBool::new(false));
    let reloading = Arc::new(AtomicBool::new(false));
    // The evaluator: one snapshot per batch of 256 flows (as serve's workers), each flow timed.
    let eval = {
        let (store, stop, reloading) = (store.clone(), stop.clone(), reloading.clone());
        std::thread::spawn(move || {
            let dns = flowprint::dns::DnsMap::new();
            let mut state = flowprint::serve::pipeline::ShardState::new(
                flowprint::infer::HostTable::with_config(flowprint::infer::InferConfig {
                    record_samples: false,
                    ..Default::default()
                }),
                store.current(),
                local,
                1,
                0,
                0,
            );
            let (mut idle, mut busy) = (Vec::new(), Vec::new());
            let mut matches = 0u64;
            'outer: loop {
                for chunk in data.chunks(256) {
                    if stop.load(Ordering::Relaxed) {
                        break 'outer;
                    }
                    let during = reloading.load(Ordering::Relaxed);
                    let t0 = Instant::now();
                    // The first flow of a batch carries the snapshot load (and, after a
                    // reload, moving the hosts to the new rules), as in serve's workers.
                    state.sync(&store.current());
                    let mut last = t0;
                    let before = state.hosts().matches;
                    for f in chunk {
                        state.scanner.apply(f, &dns);
                        let now = Instant::now();
                        let ns = (now - last).as_nanos() as u64;
                        last = now;
                        if during { busy.push(ns) } else { idle.push(ns) }
                    }
                    matches += state.hosts().matches - before;
                }
            }
            std::hint::black_box(matches);
            (idle, busy)
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let mut compile = Vec::new();
    for i in 0..reloads {
        std::fs::write(&file, format!("{text}\n# reload {i}\n"))?;
        reloading.store(true, Ordering::Relaxed);
        let r = store.reload("bench");
        // Keep measuring while readers move to the new set and the old one is freed.
        std::thread::sleep(Duration::from_millis(200));
        store.release_retired();
        reloading.store(false, Ordering::Relaxed);
        anyhow::ensure!(r.ok && !r.unchanged, "reload failed: {r:?}");
        compile.push(r.compile_ms);
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    let (mut idle, mut busy) = eval
        .join()
        .map_err(|_| anyhow::anyhow!("evaluator panicked"))?;
    let pct = |v: &mut Vec<u64>, p: f64| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        v.sort_unstable();
        v[((v.len() as f64 - 1.0) * p) as usize] as f64 / 1e3
    };
    println!(
        "reload (read + compile + swap) of {rules} rules: median {:.0} ms over {reloads} reloads",
        median(compile)
    );
    println!(
        "per-flow latency without reload: p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs, max {:.0} µs ({} flows)",
        pct(&mut idle, 0.5),
        pct(&mut idle, 0.99),
        pct(&mut idle, 0.999),
        pct(&mut idle, 1.0),
        idle.len()
    );
    println!(
        "per-flow latency during reloads: p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs, max {:.0} µs ({} flows)",
        pct(&mut busy, 0.5),
        pct(&mut busy, 0.99),
        pct(&mut busy, 0.999),
        pct(&mut busy, 1.0),
        busy.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `bench fleet`: the batch codec per flow, then (with a server) the publish rate.
fn fleet(n: usize, passes: usize, nats: Option<String>, shards: u32) -> anyhow::Result<()> {
    use flowprint::fleet::{Bus, BusConfig, Publisher, codec};
    let flows = flowprint::bench::generate_flows(n, 7);
    let batches: Vec<&[flowprint::flow::Flow]> = flows.chunks(1024).collect();
    let (mut enc, mut dec) = (Vec::new(), Vec::new());
    let mut encoded = Vec::new();
    for _ in 0..passes.max(1) {
        let t = Instant::now();
        encoded = batches
            .iter()
            .enumerate()
            .map(|(i, b)| codec::encode([7; 16], i as u64, b))
            .collect::<Vec<_>>();
        enc.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut back = 0usize;
        for e in &encoded {
            back += codec::decode(e)?.flows.len();
        }
        dec.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(back == n, "decoded {back} of {n} flows");
    }
    let bytes: usize = encoded.iter().map(Vec::len).sum();
    let (e, d) = (median(enc), median(dec));
    println!(
        "fleet codec (FPB1, batches of 1,024): {n} flows, {:.1} bytes/flow; encode median {:.0} ns/flow, decode median {:.0} ns/flow (one core)",
        bytes as f64 / n as f64,
        e / n as f64 * 1e9,
        d / n as f64 * 1e9
    );
    if let Some(url) = nats {
        let bus = Bus::connect(&url, BusConfig::default())?;
        let mut p = Publisher::new(flowprint::eval::LocalNets::default(), shards, [9; 16]);
        let t = Instant::now();
        let mut ready = Vec::new();
        let mut published = 0usize;
        let mut refused = 0usize;
        for f in flows {
            ready.extend(p.push(f));
            if ready.len() >= 64 {
                for r in bus.publish(&std::mem::take(&mut ready)) {
                    if r.is_ok() {
                        published += 1
                    } else {
                        refused += 1
                    }
                }
            }
        }
        ready.extend(p.flush());
        for r in bus.publish(&ready) {
            if r.is_ok() {
                published += 1
            } else {
                refused += 1
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "fleet publish: {n} flows in {published} batches over {shards} shards in {:.2} s = {:.2} M flows/s (one thread); {refused} batches refused",
            secs,
            n as f64 / secs / 1e6
        );
        anyhow::ensure!(refused == 0, "{refused} batches refused");
    }
    Ok(())
}

/// `bench web`: the hosts page over `n` hosts.
fn web(n: u32, passes: usize) -> anyhow::Result<()> {
    use flowprint::serve::web::{HostsQuery, hosts_body, page_html};
    let mut c = flowprint::compiler::Compiler::new();
    c.add_sources(&flowprint::sources::Sources::embedded());
    let ruleset = c.compile().ruleset;
    let mut scanner = Scanner::new(
        ruleset.clone(),
        Arc::new(LocalNets::default()),
        flowprint::infer::HostTable::new(),
    );
    let dns = flowprint::dns::DnsMap::new();
    for i in 0..n {
        let host = std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        for (peer, port) in [
            ([17, 57, 144, (i % 250) as u8], 5223u16),
            ([203, 0, 113, 7], 443),
        ] {
            let mut f =
                flowprint::flow::Flow::new(host, 40000, std::net::IpAddr::from(peer), port, 6);
            f.start_ms = 1_700_000_000_000 + i64::from(i);
            f.end_ms = f.start_ms + 10;
            f.bytes = 900;
            f.packets = 6;
            scanner.apply(&f, &dns);
        }
    }
    let inv = scanner.hosts();
    let t = Instant::now();
    let mut all = inv.summaries(&ruleset);
    all.sort_by_key(|h| h.host.parse::<std::net::IpAddr>().ok());
    let summaries = t.elapsed().as_secs_f64();
    let queries = [
        ("first page", HostsQuery::default()),
        (
            "first page sorted by confidence, filtered by OS family",
            HostsQuery {
                os: Some("iOS".into()),
                sort: Some("-confidence".into()),
                ..Default::default()
            },
        ),
    ];
    println!(
        "web: {n} hosts; their summaries (the pages' cache, at most every 2 s): {:.0} ms",
        summaries * 1e3
    );
    for (what, q) in queries {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..passes.max(1) {
            let t = Instant::now();
            let html = page_html("Hosts", hosts_body(&all, &q)?);
            times.push(t.elapsed().as_secs_f64());
            bytes = html.len();
        }
        println!(
            "web: hosts page, {what}: median {:.1} ms to filter, sort and render; {} bytes ({:.1} KB)",
            median(times) * 1e3,
            bytes,
            bytes as f64 / 1024.0
        );
    }
    Ok(())
}
