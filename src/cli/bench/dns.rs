//! Benchmarks of names: DNS map look-ups, the refresher against a real server.

use super::*;

/// `bench dns`: `pairs` pairs over `pairs / 2` addresses, looked up at random times.
pub(super) fn lookup(pairs: u32) {
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
pub(super) fn refresh(
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
