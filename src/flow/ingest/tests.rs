//! Tests of [`read_flows`] over whole inputs: detection, line numbers, recovery.

use super::*;
use crate::flow::{proto, tcp_flags};
use proptest::prelude::*;
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Reads `input`, returning flows, errors as `(line, reason)`, and stats.
fn read(input: &[u8], format: InputFormat) -> (Vec<Flow>, Vec<(u64, String)>, ReadStats) {
    let mut flows = Vec::new();
    let mut errors = Vec::new();
    let stats = read_flows(input, "t", format, &mut |f| flows.push(f), &mut |e| {
        errors.push((e.line, e.reason.to_string()))
    })
    .unwrap();
    (flows, errors, stats)
}

const NFDUMP_171_HEADER: &str = "ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt,in,\
    out,sas,das,smk,dmk,dtos,dir,nh,nhb,svln,dvln,ismc,odmc,idmc,osmc,mpls1,mpls2,mpls3,mpls4,\
    mpls5,mpls6,mpls7,mpls8,mpls9,mpls10,cl,sl,al,ra,eng,exid,tr";

fn nfdump_171_row(ts: &str, sa: &str, da: &str, dp: &str, pr: &str, flg: &str) -> String {
    format!(
        "{ts},{ts},8.439,{sa},{da},53096,{dp},{pr},{flg},0,0,351,424658,0,0,0,0,0,0,0,0,0,0,\
         0.0.0.0,0.0.0.0,0,0,00:00:00:00:00:00,00:00:00:00:00:00,00:00:00:00:00:00,\
         00:00:00:00:00:00,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,    0.000,\
             0.000,    0.000,127.0.0.1,0/0,1,2026-11-27 03:57:15.928"
    )
}

#[test]
fn nfdump_171_with_summary_blocks_and_a_second_header() {
    let row = |dp, pr, flg| {
        nfdump_171_row(
            "2020-02-07 21:04:48",
            "192.168.1.13",
            "8.8.8.8",
            dp,
            pr,
            flg,
        )
    };
    let input = [
        NFDUMP_171_HEADER.to_string(),
        row("443", "TCP", "...AP.SF"),
        row("2048", "ICMP", "........"),
        "Summary".into(),
        "flows,bytes,packets,avg_bps,avg_pps,avg_bpp".into(),
        "2,849316,702,0,0,0".into(),
        NFDUMP_171_HEADER.to_string(),
        row("8.0", "ICMP", "........"),
        "Summary".into(),
        "flows,bytes,packets,avg_bps,avg_pps,avg_bpp".into(),
        "1,424658,351,0,0,0".into(),
    ]
    .join("\n");
    let (flows, errors, stats) = read(input.as_bytes(), InputFormat::Auto);
    assert_eq!(errors, vec![]);
    assert_eq!(
        stats,
        ReadStats {
            lines: 11,
            flows: 3,
            skipped: 0
        }
    );
    let f = &flows[0];
    assert_eq!(f.start_ms, 1_581_109_488_000);
    assert_eq!(f.end_ms, 1_581_109_488_000);
    assert_eq!((f.src, f.dst), (ip("192.168.1.13"), ip("8.8.8.8")));
    assert_eq!((f.src_port, f.dst_port, f.proto), (53096, 443, proto::TCP));
    let want_flags = tcp_flags::ACK | tcp_flags::PSH | tcp_flags::SYN | tcp_flags::FIN;
    assert_eq!(
        (f.tcp_flags, f.packets, f.bytes),
        (want_flags, 351, 424_658)
    );
    assert_eq!((f.rev_packets, f.rev_bytes), (0, 0));
    assert_eq!((f.exporter, f.sampling), (Some(ip("127.0.0.1")), 1));
    assert_eq!(flows[1].dst_port, 2048);
    assert_eq!(flows[2].dst_port, 2048);
}

#[test]
fn malformed_csv_lines_are_reported_with_line_numbers() {
    let input = "ts,te,sa,da,sp,dp,pr,flg,ipkt,ibyt\n\
        2020-02-07 21:03:54,2020-02-07 21:03:55,10.0.0.1,10.0.0.2,1,2,TCP,.A..S.,1,60\n\
        2020-02-07 21:03:54,2020-02-07 21:03:55,1.2.3,10.0.0.2,1,2,TCP,.A..S.,1,60\n\
        \n\
        2020-02-07 21:03:54,2020-02-07 21:03:55,10.0.0.1,10.0.0.2,1,2,TCP\n\
        2020-02-30 21:03:54,2020-02-07 21:03:55,10.0.0.1,10.0.0.2,1,2,TCP,.A..S.,1,60\n\
        2020-02-07 21:03:54,2020-02-07 21:03:55,10.0.0.1,10.0.0.2,1,99999,TCP,.A..S.,1,60\n\
        2020-02-07 21:03:54,2020-02-07 21:03:55,10.0.0.1,10.0.0.2,1,2,XTP,.A..S.,1,60\n\
        2020-02-07 21:03:54,2020-02-07 21:03:55,10.0.0.1,10.0.0.2,1,2,TCP,.A..Z.,1,60\n\
        2020-02-07 21:03:54,2020-02-07 21:03:55,10.0.0.1,,1,2,TCP,.A..S.,1,60\n\
        2020-02-07 21:03:54,2020-02-07 21:03:55,10.0.0.1,10.0.0.2,1,2,TCP,.A..S.,1,-60\n\
        2020-02-07 21:03:54,\"2020-02-07 21:03:55,10.0.0.1,10.0.0.2,1,2,TCP,.A..S.,1,60\n\
        2020-02-07 21:03:54,2020-02-07 21:03:55,10.0.0.3,10.0.0.2,1,2,6,0x12,1,60";
    let (flows, errors, stats) = read(input.as_bytes(), InputFormat::NfdumpCsv);
    let want: Vec<(u64, String)> = [
        (3, "bad source address `1.2.3` in column 3 `sa`"),
        (5, "7 fields where the header has 10"),
        (6, "bad start time `2020-02-30 21:03:54` in column 1 `ts`"),
        (7, "bad destination port `99999` in column 6 `dp`"),
        (8, "bad protocol `XTP` in column 7 `pr`"),
        (9, "bad TCP flags `.A..Z.` in column 8 `flg`"),
        (10, "missing destination address in column 4 `da`"),
        (11, "bad byte count `-60` in column 10 `ibyt`"),
        (12, "unterminated quoted field in column 2"),
    ]
    .iter()
    .map(|&(l, r)| (l, r.to_string()))
    .collect();
    assert_eq!(errors, want);
    assert_eq!(
        stats,
        ReadStats {
            lines: 13,
            flows: 2,
            skipped: 9
        }
    );
    assert_eq!(flows[1].src, ip("10.0.0.3"));
    assert_eq!(flows[1].tcp_flags, 0x12);
}

#[test]
fn invalid_utf8_and_huge_lines_are_skipped() {
    let mut input = b"ts,sa,da\n1000,10.0.0.1,10.0.0.2\n1000,10.0.\xff.1,10.0.0.2\n".to_vec();
    input.extend(std::iter::repeat_n(b'9', MAX_LINE + 10));
    input.extend(b"\n2000,10.0.0.3,10.0.0.4\r\n");
    let (flows, errors, stats) = read(&input, InputFormat::Auto);
    assert_eq!(
        errors,
        vec![
            (3, "invalid UTF-8 at byte 11".to_string()),
            (4, format!("line longer than {MAX_LINE} bytes")),
        ]
    );
    assert_eq!(
        stats,
        ReadStats {
            lines: 5,
            flows: 2,
            skipped: 2
        }
    );
    assert_eq!((flows[1].start_ms, flows[1].end_ms), (2000, 2000));
    assert_eq!(flows[1].dst, ip("10.0.0.4"));
}

#[test]
fn header_without_addresses_is_fatal() {
    let err = read_flows(
        &b"\nts,te,sa,dp\n1,2,10.0.0.1,80\n"[..],
        "x.csv",
        InputFormat::Auto,
        &mut |_| {},
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(
        err.to_string(),
        "x.csv:2: the CSV header has no destination address column (one of `da`, `dstAddr`, \
         `dst_ip`, `dst`): `ts,te,sa,dp`"
    );
    let typed = err
        .error
        .get_ref()
        .and_then(|e| e.downcast_ref::<FormatError>());
    assert!(
        matches!(
            typed,
            Some(FormatError {
                line: 2,
                error: CsvError::HeaderWithout {
                    what: "destination address",
                    ..
                },
                ..
            })
        ),
        "{typed:?}"
    );
    let err = read_flows(
        &b"1,2,3\n"[..],
        "y.csv",
        InputFormat::NfdumpCsv,
        &mut |_| {},
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("y.csv:1: expected a CSV header line"),
        "{err}"
    );
    let typed = err
        .error
        .get_ref()
        .and_then(|e| e.downcast_ref::<FormatError>());
    assert_eq!(
        typed,
        Some(&FormatError {
            input: "y.csv".into(),
            line: 1,
            error: CsvError::NoHeader {
                found: "1,2,3".into()
            }
        })
    );
}

#[test]
fn newer_nfdump_csv_and_csv_fast() {
    let input = "firstSeen,lastSeen,duration,proto,srcAddr,srcPort,dstAddr,dstPort,flags,\
        inPackets,inBytes,outPackets,outBytes,minTTL,routerIP,sniName\n\
        2024-03-01 10:00:00.250,2024-03-01 10:00:01.500,1.250,6,10.1.1.1,50000,93.184.216.34,\
        443,...AP.S.,12,3400,10,9000,64,0.0.0.0,Example.COM\n\
        2024-03-01 10:00:00.000,0000-00-00 00:00:00.000,0.000,1,10.1.1.1,0,10.1.1.254,3.3,\
        ........,1,56,0,0,0,10.0.0.1,0\n";
    let (flows, errors, _) = read(input.as_bytes(), InputFormat::Auto);
    assert_eq!(errors, vec![]);
    let f = &flows[0];
    assert_eq!(
        (f.start_ms, f.end_ms),
        (1_709_287_200_250, 1_709_287_201_500)
    );
    assert_eq!((f.proto, f.dst_port, f.tcp_flags), (6, 443, 0x1a));
    assert_eq!(
        (f.packets, f.bytes, f.rev_packets, f.rev_bytes),
        (12, 3400, 10, 9000)
    );
    assert_eq!((f.src_ttl, f.exporter), (Some(64), None));
    assert_eq!(f.dst_name.as_deref(), Some("example.com"));
    let g = &flows[1];
    assert_eq!(
        (g.dst_port, g.end_ms, g.src_ttl, g.dst_name.as_deref()),
        (771, 0, None, None)
    );
    assert_eq!(g.exporter, Some(ip("10.0.0.1")));

    let fast = "cnt,af,firstSeen,lastSeen,proto,srcAddr,srcPort,dstAddr,dstPort,srcAS,dstAS,\
        input,output,flags,srcTos,packets,bytes\n\
        1,2,1581109434123,1581109435000,17,192.168.1.13,5353,224.0.0.251,5353,0,0,0,0,........,\
        0,2,180\n\
        2,10,1581109434123,1581109435000,6,fe80::1,1,fe80::2,2,0,0,0,0,24,0,3,180\n";
    let (flows, errors, _) = read(fast.as_bytes(), InputFormat::NfdumpCsv);
    assert_eq!(errors, vec![]);
    assert_eq!(
        (flows[0].start_ms, flows[0].end_ms),
        (1_581_109_434_123, 1_581_109_435_000)
    );
    assert_eq!(
        (flows[0].proto, flows[0].packets, flows[0].bytes),
        (17, 2, 180)
    );
    assert_eq!((flows[1].src, flows[1].tcp_flags), (ip("fe80::1"), 24));
}

#[test]
fn nfstream_csv_with_quotes_and_crlf() {
    let input = "pcap,id,src_ip,src_port,dst_ip,dst_port,protocol,bidirectional_first_seen_ms,\
        bidirectional_last_seen_ms,src2dst_packets,src2dst_bytes,dst2src_packets,dst2src_bytes,\
        requested_server_name,user_agent\r\n\
        a.pcap,0,192.168.115.8,49597,106.185.35.110,80,6,1470104377754,1470104422913,10,1394,\
        4,1464,jp.kankan.1kxun.mobi,\"Mozilla/5.0 (Windows NT 6.1) AppleWebKit/537.22 (KHTML, \
        like Gecko)\"\r\n\
        a.pcap,1,192.168.5.44,59571,224.0.0.252,5355,17,1470104373025,1470104373127,2,136,0,0,,\
        \"\"\r\n";
    let (flows, errors, _) = read(input.as_bytes(), InputFormat::Auto);
    assert_eq!(errors, vec![]);
    let f = &flows[0];
    assert_eq!(
        (f.start_ms, f.end_ms),
        (1_470_104_377_754, 1_470_104_422_913)
    );
    assert_eq!(
        (f.packets, f.bytes, f.rev_packets, f.rev_bytes),
        (10, 1394, 4, 1464)
    );
    assert_eq!(f.dst_name.as_deref(), Some("jp.kankan.1kxun.mobi"));
    assert_eq!(flows[1].dst_name, None);
}

#[test]
fn auto_detects_json_flavours() {
    let ours = "\n{\"src\":\"10.0.0.1\",\"dst\":\"10.0.0.2\",\"proto\":\"udp\",\"dst_port\":53}\n\
        {\"src\":\"10.0.0.1\",\"dst\":\"10.0.0.2\",\"src_addr\":\"x\"}\n\
        not json\n";
    let (flows, errors, stats) = read(ours.as_bytes(), InputFormat::Auto);
    assert_eq!(flows.len(), 2);
    assert_eq!((flows[0].proto, flows[0].dst_port), (17, 53));
    assert_eq!(
        errors,
        vec![(
            4,
            "not a JSON object (a record line starts with `{`)".to_string()
        )]
    );
    assert_eq!(stats.lines, 4);

    let goflow = "{bad\n{\"src_addr\":\"10.0.0.1\",\"dst_addr\":\"10.0.0.2\",\"proto\":\"UDP\"}\n\
        {\"SrcAddr\":\"10.0.0.1\",\"DstAddr\":\"10.0.0.2\",\"Proto\":6}\n";
    let (flows, errors, _) = read(goflow.as_bytes(), InputFormat::Auto);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, 1);
    assert_eq!((flows[0].proto, flows[1].proto), (17, 6));

    // The same goflow2 line read as flowprint's schema lacks `src`.
    let (_, errors, _) = read(
        goflow.lines().nth(1).unwrap().as_bytes(),
        InputFormat::Jsonl,
    );
    assert_eq!(errors, vec![(1, "missing `src`".to_string())]);
}

#[test]
fn flow_to_json_lines_read_back() {
    let mut a = Flow::new(ip("10.0.0.1"), 40000, ip("10.0.0.2"), 443, proto::TCP);
    a.start_ms = 1_560_333_601_250;
    a.end_ms = 1_560_333_602_000;
    a.dst_name = crate::flow::normalize_name("example.org");
    let b = Flow::new(ip("fe80::1"), 0, ip("ff02::1"), 34560, proto::ICMPV6);
    let text = format!("{}\n{}\n", flow_to_json(&a), flow_to_json(&b));
    let (flows, errors, _) = read(text.as_bytes(), InputFormat::Auto);
    assert_eq!(errors, vec![]);
    assert_eq!(flows, vec![a, b]);
}

#[test]
fn read_error_display() {
    let e = ReadError {
        source: "file.csv".into(),
        line: 12,
        reason: Reason::NotUtf8(7),
    };
    assert_eq!(e.to_string(), "file.csv:12: invalid UTF-8 at byte 7");
    // A reason quoting input never reaches the terminal with its control characters.
    let e = ReadError {
        source: "log\u{1b}[31m".into(),
        line: 1,
        reason: Reason::DnsLog("bad `ts` `\u{1b}[2J`".into()),
    };
    assert!(!e.to_string().contains('\u{1b}'), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn never_panics_on_arbitrary_bytes(
        input in proptest::collection::vec(any::<u8>(), 0..400),
        fmt in prop_oneof![
            Just(InputFormat::Auto),
            Just(InputFormat::NfdumpCsv),
            Just(InputFormat::Goflow2),
            Just(InputFormat::Jsonl),
        ],
    ) {
        let mut n = 0u64;
        let mut e = 0u64;
        if let Ok(stats) = read_flows(&input[..], "p", fmt, &mut |_| n += 1, &mut |_| e += 1) {
            prop_assert_eq!((stats.flows, stats.skipped), (n, e));
        }
    }

    #[test]
    fn never_panics_on_mangled_records(
        cut in 0usize..400,
        junk in "[,\"{}\\[\\]:.0-9a-zA-Z ]{0,8}",
        which in 0usize..4,
    ) {
        let samples = [
            format!("{NFDUMP_171_HEADER}\n{}",
                nfdump_171_row("2020-02-07 21:04:48", "10.0.0.1", "10.0.0.2", "443", "TCP", "...AP.S.")),
            "{\"src_addr\":\"10.0.0.1\",\"dst_addr\":\"10.0.0.2\",\"proto\":\"TCP\",\"bytes\":1,\
             \"time_flow_start_ns\":1681583295157626000,\"tcp_flags\":2}".to_string(),
            "{\"src\":\"10.0.0.1\",\"dst\":\"10.0.0.2\",\"tcp_flags\":[\"syn\"],\
             \"start\":\"2019-06-12T10:00:01Z\",\"dst_name\":\"a.b\"}".to_string(),
            "src_ip,dst_ip,requested_server_name\n10.0.0.1,10.0.0.2,\"a,b\"".to_string(),
        ];
        let s = &samples[which];
        let mut at = cut.min(s.len());
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        let input = format!("{}{junk}{}", &s[..at], &s[at..]);
        let _ = read_flows(input.as_bytes(), "p", InputFormat::Auto, &mut |_| {}, &mut |_| {});
    }
}
