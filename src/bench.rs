//! Generators for benchmarks and property tests: synthetic rule packs and flows.
//!
//! Deterministic (seeded xorshift), so `flowprint bench` figures are reproducible.

use crate::flow::Flow;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

/// A small deterministic PRNG (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (seed 0 is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A public-looking peer address from an index (spread over 20.0.0.0/6).
pub fn peer_addr(i: u64) -> Ipv4Addr {
    Ipv4Addr::from(
        0x1400_0000u32.wrapping_add((i as u32).wrapping_mul(2_654_435_761) & 0x03ff_ffff),
    )
}

/// A rule pack of `n` rules mixing address, port, size and domain conditions, as one file.
pub fn generate_rules(n: usize, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let mut out = String::with_capacity(n * 160);
    out.push_str("list bench_ports = ports { 80, 443, 8080 .. 8090 }\n");
    for i in 0..n {
        let cond = match i % 4 {
            0 => format!("peer.addr == {}", peer_addr(rng.below(1 << 20))),
            1 => format!(
                "peer.addr in {}/{} and peer.port in bench_ports",
                Ipv4Addr::from(u32::from(peer_addr(rng.below(1 << 20))) & 0xffff_ff00),
                24
            ),
            2 => format!(
                "proto == tcp and peer.bytes ~ {} +- 0.1%",
                1_000_000 + rng.below(200_000_000)
            ),
            _ => format!(
                "peer.domain in {{ \"*.vendor{}.example\", \"host{}.example\" }}",
                rng.below(1 << 16),
                i
            ),
        };
        let _ = writeln!(
            out,
            "rule bench-{i} {{\n  title \"generated {i}\"\n  when {cond}\n  then software = \"app{}\" confidence 0.{} \n}}",
            i % 97,
            1 + i % 9
        );
    }
    out
}

/// `n` flows from hosts in 10.0.0.0/16 to peers of which a fraction hit generated rules.
pub fn generate_flows(n: usize, seed: u64) -> Vec<Flow> {
    let mut rng = Rng::new(seed ^ 0xf10f);
    (0..n)
        .map(|_| {
            let host = IpAddr::V4(Ipv4Addr::new(
                10,
                0,
                rng.below(256) as u8,
                1 + rng.below(254) as u8,
            ));
            let peer = IpAddr::V4(peer_addr(rng.below(1 << 20)));
            let port = [80u16, 443, 53, 123, 8080, 22][rng.below(6) as usize];
            let proto = if port == 53 || port == 123 { 17 } else { 6 };
            let mut f = if rng.below(2) == 0 {
                Flow::new(host, 30_000 + rng.below(30_000) as u16, peer, port, proto)
            } else {
                Flow::new(peer, port, host, 30_000 + rng.below(30_000) as u16, proto)
            };
            let name = match rng.below(8) {
                0 => Some(format!("host{}.example", rng.below(20_000))),
                1 => Some(format!(
                    "cdn{}.vendor{}.example",
                    rng.below(9),
                    rng.below(1 << 16)
                )),
                2 => Some("www.unrelated.example".to_string()),
                _ => None,
            };
            let name = name.and_then(|n| crate::flow::normalize_name(&n));
            if f.src == host {
                f.dst_name = name;
            } else {
                f.src_name = name;
            }
            f.bytes = 40 + rng.below(300_000_000);
            f.packets = 1 + f.bytes / 1200;
            f.start_ms = 1_700_000_000_000 + rng.below(86_400_000) as i64;
            f.end_ms = f.start_ms + rng.below(60_000) as i64;
            f
        })
        .collect()
}
