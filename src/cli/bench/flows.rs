//! Benchmarks of the flow path: decoding, collecting, the daemon's pipeline, host memory.

use super::*;

/// `bench decode`: NetFlow v9 and IPFIX datagrams decoded, one core.
pub(super) fn decode(datagrams: usize, passes: usize) {
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

/// `bench collect`: a paced sender thread and the collector in this process.
pub(super) fn collect(rate: u64, seconds: f64, also: Option<u16>) -> anyhow::Result<()> {
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

/// `bench pipeline`.
pub(super) fn pipeline(flows: usize, hosts: u32, db: Option<String>) -> anyhow::Result<()> {
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

/// `bench hosts`.
pub(super) fn host_memory(hosts: u32) -> anyhow::Result<()> {
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
