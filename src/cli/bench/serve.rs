//! Benchmarks of the daemon's parts: the fleet on NATS, the web pages.

use super::*;

/// `bench fleet`: the batch codec per flow, then (with a server) the publish rate.
pub(super) fn fleet(
    n: usize,
    passes: usize,
    nats: Option<String>,
    shards: u32,
) -> anyhow::Result<()> {
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
pub(super) fn web(n: u32, passes: usize) -> anyhow::Result<()> {
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
