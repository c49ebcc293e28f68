//! Benchmarks of rules: matching (`eval`), transfer catalogues, reloads.

use super::*;

/// `bench eval`: generated rules compiled, then matched against generated flows, one core.
pub(super) fn eval(rules: usize, flows: usize, passes: usize) -> anyhow::Result<()> {
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
    Ok(())
}

/// `bench transfers`.
pub(super) fn transfers(rules: usize, flows: usize, passes: usize) -> anyhow::Result<()> {
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

pub(super) fn reload(rules: usize, reloads: usize) -> anyhow::Result<()> {
    use flowprint::store::{RuleStore, StoreConfig};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = std::env::temp_dir().join(format!("flowprint-bench-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("bench.rules");
    let text = generate_rules(rules, 42);
    std::fs::write(&file, &text)?;
    let store = Arc::new(RuleStore::open(StoreConfig {
        sources: flowprint::sources::Selection {
            paths: vec![file.clone()],
            ..Default::default()
        },
        state_dir: None,
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
