//! `flowprint bench`: reproducible throughput figures.

use flowprint::bench::{generate_flows, generate_rules};
use flowprint::compiler::Compiler;
use flowprint::eval::{Evaluator, LocalNets};
use std::time::Instant;

/// Arguments of `bench`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Decode generated NetFlow v9 and IPFIX datagrams (30 records each) on one core.
    Decode {
        /// Datagrams per pass.
        #[arg(long, default_value_t = 20_000)]
        datagrams: usize,
        /// Passes; the median is reported.
        #[arg(long, default_value_t = 7)]
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
