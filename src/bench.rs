//! Generators for benchmarks and property tests: synthetic rule packs and flows.
//!
//! Deterministic (seeded xorshift), so `flowprint bench` figures are reproducible.

use crate::flow::Flow;
use crate::flow::netflow::build;
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

/// The mirror of [`generate_transfer_rules`]: its name and address.
pub const MIRROR: (&str, [u8; 4]) = ("mirror.bench.example", [198, 18, 7, 7]);

/// A catalogue pack as `pack gen sizes` writes one: `n` transfer rules on one mirror's list,
/// each a file of its own size (1 MB to 1 GB, 0.2 % + 2 KiB tolerance). Returns the text and
/// the sizes, by rule.
pub fn generate_transfer_rules(n: usize, seed: u64) -> (String, Vec<u64>) {
    let mut rng = Rng::new(seed ^ 0x7a5f);
    let mut out = String::with_capacity(n * 200);
    let _ = writeln!(out, "list mirrors = domains {{ \"{}\" }}", MIRROR.0);
    let mut sizes = Vec::with_capacity(n);
    for i in 0..n {
        let size = 1_000_000 + rng.below(1_000_000_000);
        let tol = size / 500 + 2048;
        sizes.push(size);
        let _ = writeln!(
            out,
            "rule file-{i} {{\n  when peer.domain in mirrors and proto == tcp and peer.bytes <= {} B\n  over 1h transfer ~ {size} B +- {tol} B\n  then software = \"pkg{}\" version \"{i}\" confidence 0.8\n}}",
            size + tol,
            i % 997
        );
    }
    (out, sizes)
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

/// The fields of the generated IPFIX template: (element id, length), as softflowd and most
/// probes export them.
const IPFIX_FIELDS: &[(u16, u16)] = &[
    (8, 4),   // sourceIPv4Address
    (12, 4),  // destinationIPv4Address
    (7, 2),   // sourceTransportPort
    (11, 2),  // destinationTransportPort
    (4, 1),   // protocolIdentifier
    (6, 1),   // tcpControlBits
    (5, 1),   // ipClassOfService
    (10, 4),  // ingressInterface
    (14, 4),  // egressInterface
    (1, 8),   // octetDeltaCount
    (2, 8),   // packetDeltaCount
    (152, 8), // flowStartMilliseconds
    (153, 8), // flowEndMilliseconds
];

/// `n` IPFIX messages of `records` data records each (template 256 in the first message),
/// as an exporter would send them.
pub fn generate_ipfix(n: usize, records: usize, seed: u64) -> Vec<Vec<u8>> {
    generate_ipfix_hosts(n, records, 1 << 16, seed)
}

/// Like [`generate_ipfix`], with local hosts drawn from `hosts` addresses of 10.0.0.0/8 and a
/// tenth of the peers in vendor networks that the bundled rules know (Apple 17.0.0.0/8).
pub fn generate_ipfix_hosts(n: usize, records: usize, hosts: u32, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed ^ 0x1f1f);
    let rec_len: usize = IPFIX_FIELDS.iter().map(|&(_, l)| usize::from(l)).sum();
    let template: Vec<(u16, u16, u32)> = IPFIX_FIELDS.iter().map(|&(id, l)| (id, l, 0)).collect();
    let mut seq = 0u32;
    (0..n)
        .map(|i| {
            let mut m = Vec::with_capacity(records * rec_len);
            for _ in 0..records {
                let host = 0x0a00_0000u32 + rng.below(u64::from(hosts.max(1))) as u32;
                // A tenth of the peers are Apple push servers (TCP 5223 in 17.0.0.0/8), which
                // the bundled rules recognise without a host name.
                let apple = rng.below(10) == 0;
                let peer = if apple {
                    0x1100_0000 | rng.below(1 << 24) as u32
                } else {
                    u32::from(peer_addr(rng.below(1 << 20)))
                };
                let (src, dst) = if rng.below(2) == 0 {
                    (host, peer)
                } else {
                    (peer, host)
                };
                let client = 30_000 + rng.below(30_000) as u16;
                let server = if apple {
                    5223
                } else {
                    [443u16, 80, 53][rng.below(3) as usize]
                };
                let (sp, dp) = if src == host {
                    (client, server)
                } else {
                    (server, client)
                };
                m.extend_from_slice(&src.to_be_bytes());
                m.extend_from_slice(&dst.to_be_bytes());
                m.extend_from_slice(&sp.to_be_bytes());
                m.extend_from_slice(&dp.to_be_bytes());
                m.extend_from_slice(&[6, 0x1b, 0]);
                m.extend_from_slice(&1u32.to_be_bytes());
                m.extend_from_slice(&2u32.to_be_bytes());
                let bytes = 40 + rng.below(1 << 24);
                m.extend_from_slice(&bytes.to_be_bytes());
                m.extend_from_slice(&(1 + bytes / 1200).to_be_bytes());
                let start = 1_700_000_000_000u64 - rng.below(60_000);
                m.extend_from_slice(&start.to_be_bytes());
                m.extend_from_slice(&(start + rng.below(30_000)).to_be_bytes());
            }
            let mut sets = Vec::with_capacity(2);
            if i == 0 {
                sets.push((2, build::template(256, &template)));
            }
            sets.push((256, m));
            let message = build::ipfix(seq, 1_700_000_000, 1, &sets);
            seq = seq.wrapping_add(records as u32);
            message
        })
        .collect()
}

/// Like [`generate_ipfix`] but NetFlow v9 (template flowset 0, sysUpTime-relative times).
pub fn generate_v9(n: usize, records: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed ^ 0x0909);
    // v9 uses FIRST_SWITCHED/LAST_SWITCHED (22/21, 4 bytes) instead of absolute times.
    let fields: Vec<(u16, u16)> = IPFIX_FIELDS
        .iter()
        .map(|&(id, l)| match id {
            152 => (22, 4),
            153 => (21, 4),
            1 | 2 => (id, 4),
            _ => (id, l),
        })
        .collect();
    let rec_len: usize = fields.iter().map(|&(_, l)| usize::from(l)).sum();
    let template: Vec<(u16, u16, u32)> = fields.iter().map(|&(id, l)| (id, l, 0)).collect();
    (0..n)
        .map(|i| {
            let body = records * rec_len;
            let mut m = Vec::with_capacity(body + 3);
            for _ in 0..records {
                let host = 0x0a00_0000u32 | rng.below(1 << 16) as u32;
                let peer = u32::from(peer_addr(rng.below(1 << 20)));
                m.extend_from_slice(&host.to_be_bytes());
                m.extend_from_slice(&peer.to_be_bytes());
                m.extend_from_slice(&(30_000 + rng.below(30_000) as u16).to_be_bytes());
                m.extend_from_slice(&443u16.to_be_bytes());
                m.extend_from_slice(&[6, 0x1b, 0]);
                m.extend_from_slice(&1u32.to_be_bytes());
                m.extend_from_slice(&2u32.to_be_bytes());
                let bytes = 40 + rng.below(1 << 24) as u32;
                m.extend_from_slice(&bytes.to_be_bytes());
                m.extend_from_slice(&(1 + bytes / 1200).to_be_bytes());
                let first = 3_000_000 + rng.below(500_000) as u32;
                m.extend_from_slice(&first.to_be_bytes());
                m.extend_from_slice(&(first + rng.below(60_000) as u32).to_be_bytes());
            }
            let mut sets = Vec::with_capacity(2);
            if i == 0 {
                sets.push((0, build::template(256, &template)));
            }
            sets.push((256, build::padded(m)));
            let header = build::V9Header {
                count: (records + usize::from(i == 0)) as u16,
                uptime_ms: 3_600_000,
                secs: 1_700_000_000,
                seq: i as u32,
                source_id: 1,
            };
            build::v9(&header, &sets)
        })
        .collect()
}
