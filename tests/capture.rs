//! Packet-capture reading: captures built byte by byte for every supported format, link type
//! and IP feature, malformed and truncated captures (no panic), and the real captures of
//! `../shared/corpus` (softflowd export recordings, nDPI and ipfixprobe test captures), checked
//! against `tcpdump` when it is installed.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use flowprint::flow::capture::{CaptureStats, MAX_RECORD, is_capture, read_capture};

// ---------------------------------------------------------------------------------------------
// Packet builders

const PAYLOAD: &[u8] = b"\x00\x0a\x00\x10flow export";

fn v4(a: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// UDP header (ports, length, checksum 0) and payload.
fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// IPv4 header with `options` (a multiple of 4 bytes), the fragment field `frag`
/// (flags << 13 | offset in 8-byte units) and `l4`.
fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], options: &[u8], frag: u16, l4: &[u8]) -> Vec<u8> {
    let hlen = 20 + options.len();
    let mut p = vec![0x40 | (hlen / 4) as u8, 0]; // version, IHL; DSCP/ECN
    p.extend_from_slice(&((hlen + l4.len()) as u16).to_be_bytes()); // total length
    p.extend_from_slice(&[0x12, 0x34]); // identification
    p.extend_from_slice(&frag.to_be_bytes()); // flags, fragment offset
    p.extend_from_slice(&[64, proto, 0, 0]); // TTL, protocol, checksum
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(options);
    p.extend_from_slice(l4);
    p
}

fn ipv4_udp(payload: &[u8]) -> Vec<u8> {
    ipv4(
        17,
        [192, 0, 2, 1],
        [192, 0, 2, 2],
        &[],
        0,
        &udp(4739, 2055, payload),
    )
}

/// IPv6 header with `next` as next header and `rest` (extension headers and transport).
fn ipv6(next: u8, src: &str, dst: &str, rest: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0]; // version 6, traffic class, flow label
    p.extend_from_slice(&(rest.len() as u16).to_be_bytes()); // payload length
    p.extend_from_slice(&[next, 255]); // next header, hop limit
    p.extend_from_slice(&v6(src).octets());
    p.extend_from_slice(&v6(dst).octets());
    p.extend_from_slice(rest);
    p
}

/// Ethernet header with the given VLAN TPIDs (each tag: TPID, TCI), then ethertype and payload.
fn ethernet(tags: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1]; // destination, source MAC
    for (i, tpid) in tags.iter().enumerate() {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(100 + i as u16).to_be_bytes()); // TCI: VLAN id
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

// ---------------------------------------------------------------------------------------------
// Capture builders

/// A pcap file: header (magic in the chosen byte order, version 2.4, snaplen 65535, `link`)
/// and one record per frame (seconds, fraction, captured and original length).
fn pcap(big: bool, nanos: bool, link: u32, frames: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
    let w32 = |v: &mut Vec<u8>, x: u32| {
        v.extend_from_slice(&if big {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        })
    };
    let w16 = |v: &mut Vec<u8>, x: u16| {
        v.extend_from_slice(&if big {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        })
    };
    let mut f = Vec::new();
    w32(&mut f, if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
    w16(&mut f, 2);
    w16(&mut f, 4);
    w32(&mut f, 0); // thiszone
    w32(&mut f, 0); // sigfigs
    w32(&mut f, 65_535); // snaplen
    w32(&mut f, link);
    for (secs, frac, frame) in frames {
        w32(&mut f, *secs);
        w32(&mut f, *frac);
        w32(&mut f, frame.len() as u32);
        w32(&mut f, frame.len() as u32);
        f.extend_from_slice(frame);
    }
    f
}

/// pcapng blocks in one byte order.
struct Ng {
    big: bool,
    out: Vec<u8>,
}

impl Ng {
    fn w32(&self, v: &mut Vec<u8>, x: u32) {
        v.extend_from_slice(&if self.big {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        });
    }

    fn w16(&self, v: &mut Vec<u8>, x: u16) {
        v.extend_from_slice(&if self.big {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        });
    }

    /// Block type, total length, body (padded to 4), total length again.
    fn block(&mut self, kind: u32, body: &[u8]) {
        let mut body = body.to_vec();
        body.resize(body.len().next_multiple_of(4), 0);
        let len = 12 + body.len() as u32;
        let mut b = Vec::new();
        self.w32(&mut b, kind);
        self.w32(&mut b, len);
        b.extend_from_slice(&body);
        self.w32(&mut b, len);
        self.out.extend_from_slice(&b);
    }

    /// Section Header Block: byte-order magic, version 1.0, section length -1, no options.
    fn section(&mut self) {
        let mut b = Vec::new();
        self.w32(&mut b, 0x1a2b_3c4d);
        self.w16(&mut b, 1);
        self.w16(&mut b, 0);
        b.extend_from_slice(&[0xff; 8]);
        self.block(0x0a0d_0d0a, &b);
    }

    /// Interface Description Block with optional `if_tsresol` (9) and `if_tsoffset` (14).
    fn interface(&mut self, link: u16, tsresol: Option<u8>, tsoffset: Option<i64>) {
        let mut b = Vec::new();
        self.w16(&mut b, link);
        self.w16(&mut b, 0); // reserved
        self.w32(&mut b, 0); // snaplen: unlimited
        if let Some(r) = tsresol {
            self.w16(&mut b, 9);
            self.w16(&mut b, 1);
            b.extend_from_slice(&[r, 0, 0, 0]);
        }
        if let Some(o) = tsoffset {
            self.w16(&mut b, 14);
            self.w16(&mut b, 8);
            b.extend_from_slice(&if self.big {
                o.to_be_bytes()
            } else {
                o.to_le_bytes()
            });
        }
        self.w32(&mut b, 0); // opt_endofopt
        self.block(1, &b);
    }

    /// Enhanced Packet Block: interface, 64-bit timestamp, captured and original length, data.
    fn packet(&mut self, iface: u32, ts: u64, frame: &[u8]) {
        let mut b = Vec::new();
        self.w32(&mut b, iface);
        self.w32(&mut b, (ts >> 32) as u32);
        self.w32(&mut b, ts as u32);
        self.w32(&mut b, frame.len() as u32);
        self.w32(&mut b, frame.len() as u32);
        b.extend_from_slice(frame);
        self.block(6, &b);
    }

    /// Simple Packet Block: original length, data.
    fn simple(&mut self, frame: &[u8]) {
        let mut b = Vec::new();
        self.w32(&mut b, frame.len() as u32);
        b.extend_from_slice(frame);
        self.block(3, &b);
    }
}

/// A delivered datagram: time, source, destination, payload.
type Got = (i64, SocketAddr, SocketAddr, Vec<u8>);

fn read(bytes: &[u8]) -> io::Result<(CaptureStats, Vec<Got>)> {
    let mut got = Vec::new();
    let stats = read_capture(bytes, &mut |d| {
        got.push((d.ts_ms, d.src, d.dst, d.payload.to_vec()))
    })?;
    assert_eq!(stats.packets, stats.datagrams + stats.skipped, "{stats:?}");
    Ok((stats, got))
}

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

// ---------------------------------------------------------------------------------------------
// Built captures

#[test]
fn every_link_type_yields_the_datagram() {
    let ip = ipv4_udp(PAYLOAD);
    let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]; // type, ARPHRD, addr len, addr
    sll.extend_from_slice(&[0x08, 0x00]); // protocol IPv4
    sll.extend_from_slice(&ip);
    let mut sll2 = vec![
        0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0,
    ];
    sll2.extend_from_slice(&ip);
    let with_family = |family: [u8; 4]| [&family[..], &ip].concat();
    let cases: Vec<(u32, Vec<u8>)> = vec![
        (1, ethernet(&[], 0x0800, &ip)),
        (1, ethernet(&[0x8100], 0x0800, &ip)),
        (1, ethernet(&[0x88a8, 0x8100], 0x0800, &ip)), // QinQ
        (113, sll),
        (276, sll2),
        (101, ip.clone()),
        (228, ip.clone()),
        (0, with_family(2u32.to_le_bytes())), // NULL, little-endian host
        (0, with_family(2u32.to_be_bytes())), // NULL, big-endian host
        (108, with_family(2u32.to_be_bytes())), // LOOP: always network order
    ];
    for (link, frame) in cases {
        let file = pcap(false, false, link, &[(1_700_000_000, 250_000, frame)]);
        let (stats, got) = read(&file).unwrap();
        assert_eq!((stats.datagrams, stats.skipped), (1, 0), "link {link}");
        let (ts, src, dst, payload) = &got[0];
        assert_eq!(*ts, 1_700_000_000_250, "link {link}");
        assert_eq!(*src, sa(v4([192, 0, 2, 1]), 4739));
        assert_eq!(*dst, sa(v4([192, 0, 2, 2]), 2055));
        assert_eq!(payload, PAYLOAD);
    }
}

#[test]
fn big_endian_nanosecond_pcap() {
    let frame = ethernet(&[], 0x0800, &ipv4_udp(b"x"));
    let file = pcap(true, true, 1, &[(10, 999_999_999, frame)]);
    assert!(is_capture(&file));
    let (_, got) = read(&file).unwrap();
    assert_eq!(got[0].0, 10_999);
}

#[test]
fn ipv4_options_and_ipv6_extension_headers() {
    let opts = [0x94, 0x04, 0, 0]; // router alert
    let v4opt = ipv4(
        17,
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        &opts,
        0,
        &udp(1, 2, b"opt"),
    );
    // Hop-by-hop (8 bytes of padding options) -> routing (type 0 header, 8 bytes, 0 segments)
    // -> destination options (8 bytes) -> UDP.
    let mut ext = vec![43, 0, 1, 4, 0, 0, 0, 0]; // hop-by-hop: next routing, len 0, PadN
    ext.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]); // routing: next dest-opts, segments 0
    ext.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]); // destination options: next UDP
    ext.extend_from_slice(&udp(5353, 6343, b"six"));
    let v6ext = ipv6(0, "2001:db8::1", "2001:db8::2", &ext);
    let v6plain = ipv6(17, "fe80::1", "ff02::fb", &udp(5353, 5353, b"mdns"));
    let file = pcap(
        false,
        false,
        1,
        &[
            (1, 0, ethernet(&[], 0x0800, &v4opt)),
            (2, 0, ethernet(&[], 0x86dd, &v6ext)),
            (3, 0, ethernet(&[0x8100], 0x86dd, &v6plain)),
        ],
    );
    let (stats, got) = read(&file).unwrap();
    assert_eq!(stats.datagrams, 3);
    assert_eq!(got[0].3, b"opt");
    assert_eq!(got[1].1, sa(v6("2001:db8::1"), 5353));
    assert_eq!(got[1].2, sa(v6("2001:db8::2"), 6343));
    assert_eq!(got[1].3, b"six");
    assert_eq!(got[2].3, b"mdns");
}

#[test]
fn fragments_and_other_packets_are_skipped_and_counted() {
    let big = udp(9995, 2055, &[7; 100]);
    // IPv4 first fragment (MF, offset 0) carrying only part of the UDP datagram.
    let first = ipv4(17, [10, 0, 0, 1], [10, 0, 0, 2], &[], 0x2000, &big[..48]);
    // IPv4 later fragment (offset 6 * 8 = 48 bytes).
    let later = ipv4(17, [10, 0, 0, 1], [10, 0, 0, 2], &[], 6, &big[48..]);
    // IPv6 fragment header: next UDP, offset 0, M set / offset 6, M clear.
    let mut f6a = vec![17, 0, 0x00, 0x01, 0, 0, 0, 9];
    f6a.extend_from_slice(&big[..48]);
    let mut f6b = vec![17, 0, 0x00, 0x30, 0, 0, 0, 9];
    f6b.extend_from_slice(&big[48..]);
    let tcp = ipv4(6, [10, 0, 0, 1], [10, 0, 0, 2], &[], 0, &[0; 20]);
    // UDP datagram cut by the snap length: the IP header says more than was captured.
    let mut cut = ipv4_udp(&[1; 64]);
    cut.truncate(40);
    let frames = vec![
        (1, 0, ethernet(&[], 0x0800, &first)),
        (1, 0, ethernet(&[], 0x0800, &later)),
        (1, 0, ethernet(&[], 0x86dd, &ipv6(44, "::1", "::2", &f6a))),
        (1, 0, ethernet(&[], 0x86dd, &ipv6(44, "::1", "::2", &f6b))),
        (1, 0, ethernet(&[], 0x0800, &tcp)),
        (1, 0, ethernet(&[], 0x0806, &[0; 28])), // ARP
        (1, 0, ethernet(&[], 0x0800, &cut)),
        (1, 0, ethernet(&[], 0x0800, &ipv4_udp(b"ok"))),
    ];
    let (stats, got) = read(&pcap(false, false, 1, &frames)).unwrap();
    assert_eq!(
        stats,
        CaptureStats {
            packets: 8,
            datagrams: 1,
            skipped: 7,
            fragments: 4,
            truncated_at: None
        }
    );
    assert_eq!(got[0].3, b"ok");
    // An unsupported link type: every packet skipped.
    let (stats, _) = read(&pcap(false, false, 147, &[(1, 0, ipv4_udp(b"x"))])).unwrap();
    assert_eq!((stats.packets, stats.skipped), (1, 1));
}

#[test]
fn oversized_record_is_an_error_with_its_offset() {
    let mut file = pcap(
        false,
        false,
        1,
        &[(1, 0, ethernet(&[], 0x0800, &ipv4_udp(b"a")))],
    );
    let second = file.len();
    file.extend_from_slice(&[0; 8]); // seconds, microseconds
    file.extend_from_slice(&(MAX_RECORD as u32 + 1).to_le_bytes()); // captured length
    file.extend_from_slice(&(MAX_RECORD as u32 + 1).to_le_bytes()); // original length
    let mut seen = 0;
    let err = read_capture(&file[..], &mut |_| seen += 1).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains(&format!("byte {second}")), "{err}");
    assert_eq!(seen, 1);
}

#[test]
fn truncated_last_record_is_reported_not_an_error() {
    let frame = ethernet(&[], 0x0800, &ipv4_udp(b"abc"));
    let file = pcap(false, false, 1, &[(1, 0, frame.clone()), (2, 0, frame)]);
    let second = 24 + 16 + (file.len() - 24) / 2 - 16;
    let (stats, got) = read(&file[..file.len() - 1]).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(stats.truncated_at, Some(second as u64));
    assert_eq!((stats.packets, stats.skipped), (2, 1));
    // Header cut: an error; no data at all: an error.
    assert!(read(&file[..10]).is_err());
    assert!(read(&[]).is_err());
    assert!(read(b"not a capture at all").is_err());
}

fn pcapng_sample() -> Vec<u8> {
    let ip = ipv4_udp(PAYLOAD);
    let mut le = Ng {
        big: false,
        out: Vec::new(),
    };
    le.section();
    le.interface(1, Some(9), None); // Ethernet, nanoseconds
    le.block(0x0000_0bad, &[1, 2, 3, 4, 5]); // unknown block: skipped
    le.packet(0, 1_700_000_000_123_456_789, &ethernet(&[], 0x0800, &ip));
    le.simple(&ethernet(&[0x8100], 0x0800, &ip)); // no time: the previous packet's
    le.block(4, &[0, 0, 0, 0]); // name resolution block, empty
    le.packet(5, 0, &ip); // interface 5 does not exist: skipped
    // A second section, big-endian, whose interfaces replace the first section's.
    let mut be = Ng {
        big: true,
        out: le.out,
    };
    be.section();
    be.interface(101, Some(0x80 | 10), Some(100)); // raw IP, 2^-10 s, +100 s
    be.interface(1, None, None); // Ethernet, default microseconds
    be.packet(0, 2048, &ip);
    be.packet(1, 5_000_000, &ethernet(&[], 0x0800, &ip));
    be.out
}

#[test]
fn pcapng_sections_interfaces_and_blocks() {
    let file = pcapng_sample();
    assert!(is_capture(&file));
    let (stats, got) = read(&file).unwrap();
    assert_eq!(
        (stats.packets, stats.datagrams, stats.skipped),
        (5, 4, 1),
        "{stats:?}"
    );
    let times: Vec<i64> = got.iter().map(|g| g.0).collect();
    assert_eq!(
        times,
        [1_700_000_000_123, 1_700_000_000_123, 102_000, 5_000]
    );
    assert!(got.iter().all(|g| g.3 == PAYLOAD));
}

#[test]
fn pcapng_malformed_blocks_are_errors() {
    let good = pcapng_sample();
    // Trailing length of the interface block (32 bytes long, after the 28-byte section header).
    let mut bad = good.clone();
    bad[28 + 28] ^= 1;
    assert!(read(&bad).is_err());
    // A block length that is not a multiple of 4.
    let mut bad = good.clone();
    bad[28 + 4] = 23;
    assert!(read(&bad).is_err());
    // An Enhanced Packet Block claiming more than the limit.
    let mut ng = Ng {
        big: false,
        out: Vec::new(),
    };
    ng.section();
    ng.interface(1, None, None);
    let at = ng.out.len();
    ng.out.extend_from_slice(&6u32.to_le_bytes());
    ng.out
        .extend_from_slice(&(MAX_RECORD as u32 * 2).to_le_bytes());
    let err = read(&ng.out).unwrap_err();
    assert!(err.to_string().contains(&format!("byte {at}")), "{err}");
    // Unknown major version.
    let mut bad = good.clone();
    bad[12] = 2;
    assert!(read(&bad).is_err());
}

#[test]
fn truncations_and_corruptions_never_panic() {
    let frames = vec![
        (1, 0, ethernet(&[0x8100], 0x0800, &ipv4_udp(PAYLOAD))),
        (
            2,
            0,
            ethernet(&[], 0x86dd, &ipv6(17, "::1", "::2", &udp(1, 2, PAYLOAD))),
        ),
    ];
    for file in [pcap(false, false, 1, &frames), pcapng_sample()] {
        let (full, _) = read(&file).unwrap();
        for n in 0..file.len() {
            if let Ok((stats, _)) = read(&file[..n]) {
                assert!(stats.datagrams <= full.datagrams);
            }
        }
        let mut m = file.clone();
        for i in 0..file.len() {
            for v in [0u8, 0x01, 0x45, 0x60, 0x7f, 0x80, 0xff] {
                m[i] = v;
                let _ = read(&m);
            }
            m[i] = file[i];
        }
    }
}

#[test]
fn capture_detection() {
    for magic in [
        [0xa1, 0xb2, 0xc3, 0xd4],
        [0xd4, 0xc3, 0xb2, 0xa1],
        [0xa1, 0xb2, 0x3c, 0x4d],
        [0x4d, 0x3c, 0xb2, 0xa1],
        [0x0a, 0x0d, 0x0d, 0x0a],
    ] {
        assert!(is_capture(&magic));
    }
    assert!(!is_capture(&[0xa1, 0xb2, 0xc3]));
    assert!(!is_capture(b"ts,te,td"));
    assert!(!is_capture(&[0, 5, 0, 1]));
}

// ---------------------------------------------------------------------------------------------
// Real captures from ../shared/corpus

fn corpus(dir: &str) -> Option<Vec<PathBuf>> {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus")).join(dir);
    let Ok(entries) = fs::read_dir(&path) else {
        eprintln!("skipped: {} is absent", path.display());
        return None;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            fs::File::open(p)
                .and_then(|mut f| {
                    let mut head = [0u8; 4];
                    io::Read::read_exact(&mut f, &mut head).map(|_| head)
                })
                .is_ok_and(|h| is_capture(&h))
        })
        .collect();
    files.sort();
    Some(files)
}

fn read_file(path: &Path) -> (CaptureStats, Vec<Vec<u8>>) {
    let file = fs::File::open(path).unwrap();
    let mut payloads = Vec::new();
    let stats = read_capture(file, &mut |d| payloads.push(d.payload.to_vec()))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(stats.truncated_at, None, "{}", path.display());
    (stats, payloads)
}

/// `tcpdump -r FILE -nn FILTER | wc -l`, when tcpdump is installed.
fn tcpdump_count(path: &Path, filter: &str) -> Option<u64> {
    let out = Command::new("tcpdump")
        .args(["-r"])
        .arg(path)
        .args(["-nn", filter])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| out.stdout.iter().filter(|&&b| b == b'\n').count() as u64)
}

#[test]
fn corpus_export_captures_hold_their_netflow_version() {
    let Some(files) = corpus("exports") else {
        return;
    };
    let exports: Vec<_> = files
        .iter()
        .filter(|p| p.to_string_lossy().ends_with("-export.pcap"))
        .collect();
    assert!(!exports.is_empty());
    for path in &exports {
        let name = path.file_name().unwrap().to_string_lossy();
        let version = if name.contains(".nfv5-") {
            5
        } else if name.contains(".nfv9-") {
            9
        } else if name.contains(".ipfix-") {
            10
        } else {
            panic!("{name}: no version in the name")
        };
        let (stats, payloads) = read_file(path);
        assert!(stats.datagrams > 0, "{name}: no datagrams");
        for p in &payloads {
            assert_eq!(p.get(..2), Some(&u16::to_be_bytes(version)[..]), "{name}");
        }
    }
    // The largest export capture against tcpdump's count of UDP packets.
    let largest = exports
        .iter()
        .max_by_key(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .unwrap();
    match tcpdump_count(largest, "udp") {
        Some(n) => assert_eq!(read_file(largest).0.datagrams, n, "{}", largest.display()),
        None => eprintln!("skipped: tcpdump not available"),
    }
}

#[test]
fn corpus_packet_captures_read_without_error() {
    let mut total = 0;
    for dir in ["pcaps", "ipfixprobe/inputs"] {
        let Some(files) = corpus(dir) else {
            continue;
        };
        assert!(!files.is_empty(), "{dir}: no captures");
        for path in &files {
            let (stats, _) = read_file(path);
            total += stats.datagrams;
            // tcpdump's `udp` only looks past VLAN tags when told to (each `vlan` shifts the
            // offsets for the rest of the expression, hence the nesting), and also matches
            // fragments after the first, which yield no datagram here.
            // (Link types without VLANs reject `vlan`: plain `udp` there.)
            let filter = "udp or (vlan and (udp or (vlan and udp)))";
            let count = tcpdump_count(path, filter).or_else(|| tcpdump_count(path, "udp"));
            if let Some(n) = count {
                assert!(
                    stats.datagrams <= n && n - stats.datagrams <= stats.fragments,
                    "{}: {} datagrams, tcpdump counts {n} UDP packets ({stats:?})",
                    path.display(),
                    stats.datagrams
                );
            }
        }
    }
    eprintln!("{total} UDP datagrams in the corpus packet captures");
}

mod random {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Random bytes after a valid pcap or pcapng header: an error or a result, never a panic.
        #[test]
        fn random_records_never_panic(
            pcapng in any::<bool>(),
            link in prop::sample::select(vec![0u32, 1, 101, 108, 113, 228, 229, 276]),
            body in prop::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut file = if pcapng {
                let mut ng = Ng { big: false, out: Vec::new() };
                ng.section();
                ng.interface(link as u16, Some(9), None);
                ng.out
            } else {
                pcap(false, false, link, &[])
            };
            file.extend_from_slice(&body);
            if let Ok((stats, got)) = read(&file) {
                prop_assert_eq!(stats.datagrams, got.len() as u64);
            }
        }

        /// Random frames in well-formed records of every link type.
        #[test]
        fn random_frames_never_panic(
            link in prop::sample::select(vec![0u32, 1, 101, 108, 113, 228, 229, 276]),
            frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..8),
        ) {
            let frames: Vec<_> = frames.into_iter().map(|f| (1, 0, f)).collect();
            let (stats, _) = read(&pcap(true, false, link, &frames)).unwrap();
            prop_assert_eq!(stats.packets, frames.len() as u64);
        }
    }
}
