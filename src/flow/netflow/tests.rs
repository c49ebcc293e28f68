use super::*;
use fields::{REVERSE_PEN, VARLEN};

const EXP: &str = "192.0.2.9";

pub(super) fn exporter() -> IpAddr {
    EXP.parse().unwrap()
}

/// An IPFIX message with the given sets (id, body), observation domain 7.
pub(super) fn ipfix(seq: u32, export_secs: u32, sets: &[(u16, Vec<u8>)]) -> Vec<u8> {
    build::ipfix(seq, export_secs, 7, sets)
}

pub(super) use build::template;

pub(super) use build::{BASIC_V4 as BASIC, basic_v4_record as basic_record};

fn decode_all(dec: &mut Decoder, msgs: &[Vec<u8>]) -> Vec<Flow> {
    let mut flows = Vec::new();
    for m in msgs {
        let _ = dec.decode(exporter(), m, &mut |f| flows.push(f));
    }
    flows
}

#[test]
fn data_before_its_template_is_held_and_decoded_when_the_template_arrives() {
    let mut dec = Decoder::new();
    let data = basic_record([10, 0, 0, 1], [93, 184, 216, 34], 40000, 443, 1500, 3);
    let flows = decode_all(
        &mut dec,
        &[
            ipfix(0, 1_700_000_000, &[(300, data)]),
            ipfix(1, 1_700_000_001, &[(2, template(300, BASIC))]),
        ],
    );
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].bytes, 1500);
    assert_eq!(
        flows[0].start_ms, 1_700_000_000_000,
        "no time fields: the export time of the data"
    );
    assert_eq!(dec.pending(), 0);
}

#[test]
fn withdrawn_templates_are_forgotten_and_expiry_is_configurable() {
    let mut dec = Decoder::new();
    let data = basic_record([10, 0, 0, 1], [1, 1, 1, 1], 1, 2, 3, 4);
    let tpl = ipfix(0, 100, &[(2, template(300, BASIC))]);
    let withdraw = ipfix(0, 101, &[(2, vec![1, 44, 0, 0])]);
    let flows = decode_all(
        &mut dec,
        &[tpl.clone(), withdraw, ipfix(0, 102, &[(300, data.clone())])],
    );
    assert!(flows.is_empty());
    assert_eq!(dec.pending(), 1);

    let mut dec = Decoder::with_config(DecoderConfig {
        template_timeout_ms: Some(60_000),
        pending_max: 4,
        ..DecoderConfig::default()
    });
    let stale = ipfix(0, 100 + 61, &[(300, data.clone())]);
    let fresh = ipfix(0, 100 + 30, &[(300, data)]);
    assert_eq!(decode_all(&mut dec, &[tpl.clone(), fresh]).len(), 1);
    let mut dec2 = Decoder::with_config(DecoderConfig {
        template_timeout_ms: Some(60_000),
        pending_max: 4,
        ..DecoderConfig::default()
    });
    assert!(
        decode_all(&mut dec2, &[tpl, stale]).is_empty(),
        "a template older than the timeout is not used"
    );
}

#[test]
fn pending_data_is_bounded_and_counted() {
    let mut dec = Decoder::with_config(DecoderConfig {
        template_timeout_ms: None,
        pending_max: 3,
        ..DecoderConfig::default()
    });
    let data = basic_record([10, 0, 0, 1], [1, 1, 1, 1], 1, 2, 3, 4);
    let msgs: Vec<_> = (0..10)
        .map(|i| ipfix(i, 100, &[(400, data.clone())]))
        .collect();
    decode_all(&mut dec, &msgs);
    assert_eq!(dec.pending(), 3);
    assert_eq!(dec.stats()[&exporter()].missing_template, 7);
}

#[test]
fn variable_length_names_and_reverse_elements() {
    let fields = [
        (8, 4, 0),
        (12, 4, 0),
        (4, 1, 0),
        (1, 8, 0),
        (1, 8, REVERSE_PEN),
        (192, 1, 0),
        (808, VARLEN, 8057),
        (2, 4, 0),
    ];
    let mut rec = Vec::new();
    rec.extend_from_slice(&[10, 1, 1, 1, 142, 250, 1, 1, 6]);
    rec.extend_from_slice(&500u64.to_be_bytes());
    rec.extend_from_slice(&70_000u64.to_be_bytes());
    rec.push(128);
    let name = b"WWW.Example.COM";
    rec.push(name.len() as u8);
    rec.extend_from_slice(name);
    rec.extend_from_slice(&9u32.to_be_bytes());
    // a second record whose name uses the 3-byte length form
    let mut rec2 = rec.clone();
    let pos = 9 + 16 + 1;
    rec2.splice(pos..pos + 1, [255u8, 0, name.len() as u8]);
    let mut body = rec.clone();
    body.extend_from_slice(&rec2);
    let mut dec = Decoder::new();
    let flows = decode_all(
        &mut dec,
        &[ipfix(0, 100, &[(2, template(256, &fields)), (256, body)])],
    );
    assert_eq!(flows.len(), 2, "{:?}", dec.stats());
    for f in &flows {
        assert_eq!((f.bytes, f.rev_bytes, f.packets), (500, 70_000, 9));
        assert_eq!(f.src_ttl, Some(128));
        assert_eq!(f.dst_name.as_deref(), Some("www.example.com"));
    }
}

#[test]
fn unknown_enterprise_elements_are_skipped_and_counted() {
    let fields = [(8, 4, 0), (12, 4, 0), (99, 2, 12345), (4, 1, 0)];
    let body = vec![10, 0, 0, 1, 8, 8, 8, 8, 0xab, 0xcd, 17];
    let mut dec = Decoder::new();
    let flows = decode_all(
        &mut dec,
        &[ipfix(0, 100, &[(2, template(256, &fields)), (256, body)])],
    );
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].proto, 17);
    assert_eq!(dec.stats()[&exporter()].unknown_enterprise_fields, 1);
}

#[test]
fn sampling_from_options_records_scales_counters() {
    // options template 257: scope observationDomainId (149, 4 bytes), samplingPacketInterval (305, 4)
    let mut opt = Vec::new();
    opt.extend_from_slice(&257u16.to_be_bytes());
    opt.extend_from_slice(&2u16.to_be_bytes());
    opt.extend_from_slice(&1u16.to_be_bytes());
    for (ie, len) in [(149u16, 4u16), (305, 4)] {
        opt.extend_from_slice(&ie.to_be_bytes());
        opt.extend_from_slice(&len.to_be_bytes());
    }
    let mut opt_data = 7u32.to_be_bytes().to_vec();
    opt_data.extend_from_slice(&100u32.to_be_bytes());
    let data = basic_record([10, 0, 0, 1], [1, 1, 1, 1], 1, 2, 1000, 2);
    let mut dec = Decoder::new();
    let flows = decode_all(
        &mut dec,
        &[ipfix(
            0,
            100,
            &[
                (3, opt),
                (257, opt_data),
                (2, template(256, BASIC)),
                (256, data),
            ],
        )],
    );
    assert_eq!(flows.len(), 1);
    assert_eq!(
        (flows[0].bytes, flows[0].packets, flows[0].sampling),
        (100_000, 200, 100)
    );
    assert_eq!(dec.stats()[&exporter()].options_records, 1);
}

fn v5(seq: u32, uptime: u32, secs: u32, records: &[(u32, u32)], sampling: u16) -> Vec<u8> {
    let header = build::V5Header {
        seq,
        uptime_ms: uptime,
        secs,
        sampling,
    };
    let records: Vec<build::V5Record> = records
        .iter()
        .map(|&(first, last)| build::V5Record {
            src: [10, 0, 0, 5],
            dst: [9, 9, 9, 9],
            packets: 2,
            bytes: 100,
            first_ms: first,
            last_ms: last,
            proto: 17,
            ..Default::default()
        })
        .collect();
    build::v5(&header, &records)
}

#[test]
fn v5_times_survive_the_uptime_wrap_and_sampling_applies() {
    let mut dec = Decoder::new();
    // uptime just wrapped to 1,000 ms; the flow started 5 s earlier (before the wrap) and its
    // last packet is stamped 2 ms after the header (exporter skew).
    let first = u32::MAX - 3_999;
    let flows = decode_all(
        &mut dec,
        &[v5(0, 1_000, 2_000_000, &[(first, 1_002)], 0x4000 | 10)],
    );
    assert_eq!(flows[0].start_ms, 2_000_000_000 - 5_000);
    assert_eq!(flows[0].end_ms, 2_000_000_000 + 2);
    assert_eq!(
        (flows[0].bytes, flows[0].packets, flows[0].sampling),
        (1000, 20, 10)
    );
}

#[test]
fn sequence_gaps_estimate_loss() {
    let mut dec = Decoder::new();
    decode_all(
        &mut dec,
        &[
            v5(0, 1, 1, &[(1, 1); 2], 0),
            v5(2, 1, 1, &[(1, 1); 3], 0),
            v5(15, 1, 1, &[(1, 1)], 0),
        ],
    );
    assert_eq!(dec.stats()[&exporter()].sequence_lost, 10);
}

#[test]
fn garbage_is_counted_not_fatal() {
    let mut dec = Decoder::new();
    for bad in [
        &[][..],
        &[0, 9],
        &[0, 10, 0, 3, 0, 0, 0, 0],
        &[0, 7, 1, 2, 3],
        &[0, 5, 0, 31],
    ] {
        assert!(dec.decode(exporter(), bad, &mut |_| {}).is_err());
    }
    assert_eq!(dec.stats()[&exporter()].malformed, 5);
    // a set claiming more than the message holds
    let mut m = ipfix(0, 1, &[(2, template(256, BASIC))]);
    m.extend_from_slice(&[1, 0, 0xff, 0xff, 1, 2]);
    let len = m.len() as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    assert!(
        dec.decode(exporter(), &m, &mut |_| {}).is_ok(),
        "the template set before it is still used"
    );
}
