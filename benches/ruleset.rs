//! Criterion benchmarks of the rule stages: parse + compile a 10,000-rule pack, and evaluate
//! decoded flows against it on one core. `flowprint bench eval` prints the same figures.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowprint::bench::{generate_flows, generate_rules};
use flowprint::compiler::Compiler;
use flowprint::eval::{Evaluator, LocalNets};
use std::hint::black_box;

fn compile(text: &str) -> flowprint::compiler::Compiled {
    let mut c = Compiler::new();
    c.add_source("bench", "bench.rules", text);
    c.compile()
}

fn benches(c: &mut Criterion) {
    let text = generate_rules(10_000, 42);
    let mut g = c.benchmark_group("rules-10k");
    g.sample_size(10);
    g.bench_function("parse+compile", |b| {
        b.iter(|| black_box(compile(black_box(&text))))
    });
    let compiled = compile(&text);
    assert_eq!(compiled.errors(), 0);
    let flows = generate_flows(100_000, 7);
    let local = LocalNets::default();
    g.throughput(Throughput::Elements(flows.len() as u64));
    g.bench_function("eval-100k-flows", |b| {
        let mut ev = Evaluator::new(&compiled.ruleset, &local);
        b.iter(|| {
            let mut n = 0u64;
            for f in &flows {
                ev.eval(f, |_| n += 1);
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(rules, benches);
criterion_main!(rules);
