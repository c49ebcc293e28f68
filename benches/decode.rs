//! Criterion benchmarks of the decoders: generated NetFlow v9 and IPFIX datagrams of 30 records,
//! and the shared corpus's softflowd exports when present. `flowprint bench decode` prints the
//! same figures without criterion.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowprint::flow::ingest::{InputFormat, read_flows};
use flowprint::flow::netflow::Decoder;
use std::hint::black_box;
use std::net::IpAddr;

fn decode_all(datagrams: &[Vec<u8>]) -> u64 {
    let exporter: IpAddr = "127.0.0.1".parse().unwrap();
    let mut dec = Decoder::new();
    let mut n = 0u64;
    for d in datagrams {
        let _ = dec.decode(exporter, d, &mut |f| {
            n += 1;
            black_box(f);
        });
    }
    n
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for (name, data) in [
        ("v9-30-records", flowprint::bench::generate_v9(2_000, 30, 1)),
        (
            "ipfix-30-records",
            flowprint::bench::generate_ipfix(2_000, 30, 1),
        ),
    ] {
        g.throughput(Throughput::Elements(decode_all(&data)));
        g.bench_function(name, |b| b.iter(|| decode_all(black_box(&data))));
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/exports");
    for kind in ["nfv9", "ipfix"] {
        let mut pcaps: Vec<Vec<u8>> = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .ends_with(&format!(".{kind}-export.pcap"))
                {
                    pcaps.push(std::fs::read(e.path()).unwrap());
                }
            }
        }
        if pcaps.is_empty() {
            continue;
        }
        let read = |pcaps: &[Vec<u8>]| {
            let mut n = 0u64;
            for p in pcaps {
                read_flows(
                    p.as_slice(),
                    "bench",
                    InputFormat::Pcap,
                    &mut |_| n += 1,
                    &mut |_| {},
                )
                .unwrap();
            }
            n
        };
        g.throughput(Throughput::Elements(read(&pcaps)));
        g.bench_function(format!("corpus-{kind}-pcaps"), |b| {
            b.iter(|| read(black_box(&pcaps)))
        });
    }
    g.finish();
}

criterion_group!(decode, benches);
criterion_main!(decode);
