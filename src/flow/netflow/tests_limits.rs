//! The bounds of the decoder's state under floods, and v9 variable-length fields.

use super::tests::{BASIC, basic_record, exporter, ipfix, template};
use super::*;

/// A NetFlow v9 export packet with the given flowsets (id, body).
fn v9(seq: u32, secs: u32, source_id: u32, sets: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let header = build::V9Header {
        count: sets.len() as u16,
        uptime_ms: 1_000,
        secs,
        seq,
        source_id,
    };
    build::v9(&header, sets)
}

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i))
}

#[test]
fn a_flood_of_new_source_ids_and_exporters_stays_within_the_caps() {
    let config = DecoderConfig::collector();
    let mut dec = Decoder::with_config(config.clone());
    let legit = exporter();
    let attacker = ip(1);
    let record = basic_record([10, 0, 0, 1], [93, 184, 216, 34], 40000, 443, 1500, 3);
    let secs = 1_700_000_000;
    let n = 300_000u32;
    let mut legit_flows = 0u64;
    let mut legit_sent = 0u64;
    dec.decode(
        legit,
        &v9(0, secs, 0, &[(0, template(300, BASIC))]),
        &mut |_| {},
    )
    .unwrap();
    let mut exporters_created = 1u64;
    for i in 0..n {
        // Every datagram creates a session with a template and a pending data set: from one
        // attacker cycling source ids, from a new exporter address each time, or from a pool
        // of 1,000 addresses cycling source ids.
        let (from, source_id) = match i % 3 {
            0 => (attacker, i),
            1 => {
                exporters_created += 1;
                (ip(0x10_0000 + i), 7)
            }
            _ => (ip(2 + (i / 3) % 1000), i),
        };
        let sets = [
            (0, template(256 + (i % 1000) as u16, BASIC)),
            (4000, record.clone()),
        ];
        let _ = dec.decode(from, &v9(i, secs, source_id, &sets), &mut |_| {});
        if i % 1000 == 0 {
            let m = v9(1 + i, secs + i / 1000, 0, &[(300, record.clone())]);
            legit_sent += 1;
            dec.decode(legit, &m, &mut |_| legit_flows += 1).unwrap();
        }
    }
    exporters_created += 1 + 1000; // the attacker and the pool
    let s = dec.state_stats();
    assert_eq!(
        legit_flows, legit_sent,
        "the active exporter kept its template"
    );
    assert_eq!(s.exporters, config.max_exporters);
    assert_eq!(s.sessions, config.max_sessions);
    assert_eq!(s.exporters_evicted, exporters_created - s.exporters as u64);
    let sessions_created = u64::from(n) + 1;
    assert_eq!(s.sessions_evicted, sessions_created - s.sessions as u64);
    assert_eq!(s.templates, s.sessions, "one template per session");
    assert_eq!(
        s.pending,
        s.sessions - 1,
        "one pending set per flood session"
    );
    assert!(s.state_bytes <= config.max_state_bytes);
    eprintln!(
        "{} sessions: {} bytes of templates and pending data",
        s.sessions, s.state_bytes
    );
    assert!(
        s.state_bytes < 16 << 20,
        "{} bytes for {} sessions",
        s.state_bytes,
        s.sessions
    );
    let a = dec
        .exporter_stats(&attacker)
        .expect("the attacker is active");
    assert!(
        a.sessions_evicted >= u64::from(n / 3) - config.max_sessions_per_exporter as u64,
        "the attacker churns its own sessions: {a:?}"
    );
    // Nothing was lost from the totals: kept + evicted exporters' counters.
    let mut all = s.evicted.clone();
    for e in dec.stats().values() {
        all.add(e);
    }
    assert_eq!(all.datagrams, u64::from(n) + 1 + legit_sent);
    assert_eq!(all.records, legit_sent);
    assert_eq!(all.sessions_evicted, s.sessions_evicted);
    assert_eq!(all.missing_template, s.missing_template);
    assert!(dec.stats().len() <= config.max_exporters);
}

#[test]
fn the_byte_budget_evicts_the_least_recently_used_sessions() {
    let config = DecoderConfig {
        max_state_bytes: 64 << 10,
        ..DecoderConfig::collector()
    };
    let mut dec = Decoder::with_config(config.clone());
    let legit = exporter();
    dec.decode(
        legit,
        &v9(0, 100, 0, &[(0, template(300, BASIC))]),
        &mut |_| {},
    )
    .unwrap();
    let big = vec![1u8; 1000];
    let mut flows = 0;
    for i in 0..2_000u32 {
        let m = v9(i, 100, i, &[(4000, big.clone())]);
        dec.decode(ip(1), &m, &mut |_| {}).unwrap();
        if i % 50 == 0 {
            let record = basic_record([10, 0, 0, 1], [1, 1, 1, 1], 1, 2, 3, 4);
            dec.decode(legit, &v9(0, 100, 0, &[(300, record)]), &mut |_| flows += 1)
                .unwrap();
        }
    }
    let s = dec.state_stats();
    assert_eq!(flows, 40, "the legitimate session stayed");
    assert!(s.state_bytes <= config.max_state_bytes, "{s:?}");
    assert!(s.sessions < 70, "{s:?}");
    assert!(s.sessions_evicted > 1900, "{s:?}");
    assert_eq!(
        s.missing_template, s.sessions_evicted,
        "their pending sets are counted"
    );
}

#[test]
fn templates_per_session_are_capped_and_expire_when_not_refreshed() {
    let config = DecoderConfig {
        max_templates_per_session: 4,
        template_timeout_ms: Some(60_000),
        ..DecoderConfig::default()
    };
    let mut dec = Decoder::with_config(config);
    for t in 0..10u16 {
        let m = ipfix(0, 100 + u32::from(t), &[(2, template(256 + t, BASIC))]);
        dec.decode(exporter(), &m, &mut |_| {}).unwrap();
    }
    assert_eq!(dec.state_stats().templates, 4);
    assert_eq!(dec.stats()[&exporter()].templates_evicted, 6);
    // The most recently refreshed ones stayed.
    let record = basic_record([10, 0, 0, 1], [1, 1, 1, 1], 1, 2, 3, 4);
    let mut flows = 0;
    let m = ipfix(0, 110, &[(265, record.clone()), (256, record.clone())]);
    dec.decode(exporter(), &m, &mut |_| flows += 1).unwrap();
    assert_eq!(flows, 1);
    // Two minutes later template 265 has expired.
    let m = ipfix(0, 230, &[(265, record)]);
    dec.decode(exporter(), &m, &mut |_| flows += 1).unwrap();
    assert_eq!(flows, 1);
    assert_eq!(dec.stats()[&exporter()].templates_expired, 1);
    assert_eq!(dec.state_stats().templates_expired, 1);
}

#[test]
fn pending_data_is_capped_in_bytes_per_session() {
    let config = DecoderConfig {
        pending_bytes_max: 10_000,
        ..DecoderConfig::default()
    };
    let mut dec = Decoder::with_config(config);
    for i in 0..20 {
        let m = ipfix(i, 100, &[(400, vec![7u8; 3000])]);
        dec.decode(exporter(), &m, &mut |_| {}).unwrap();
    }
    assert_eq!(dec.pending(), 3);
    assert_eq!(dec.stats()[&exporter()].missing_template, 17);
    assert!(dec.state_stats().state_bytes <= 10_000);
}

#[test]
fn templates_with_too_many_fields_are_refused() {
    let fields: Vec<(u16, u16, u32)> = (0..=MAX_TEMPLATE_FIELDS as u16)
        .map(|_| (1, 4, 0))
        .collect();
    let mut dec = Decoder::new();
    let m = v9(0, 100, 0, &[(0, template(256, &fields))]);
    let e = dec.decode(exporter(), &m, &mut |_| {}).unwrap_err();
    assert_eq!(
        e,
        DecodeError::Sets(SetError::TemplateFields {
            set_id: 0,
            offset: 20,
            template_id: 256,
            fields: 1025
        })
    );
    assert!(e.to_string().contains("1025 fields"), "{e}");
    assert_eq!(dec.state_stats().templates, 0);
}

/// src, dst, proto, a variable-length field (v9 type 95, application id), bytes, packets.
const V9_VARLEN: &[(u16, u16, u32)] = &[
    (8, 4, 0),
    (12, 4, 0),
    (4, 1, 0),
    (95, fields::VARLEN, 0),
    (1, 4, 0),
    (2, 4, 0),
];

fn varlen_record(value: &[u8], long_form: bool) -> Vec<u8> {
    let mut r = vec![10, 1, 1, 1, 142, 250, 1, 1, 17];
    if long_form {
        r.push(255);
        r.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        r.push(value.len() as u8);
    }
    r.extend_from_slice(value);
    r.extend_from_slice(&700u32.to_be_bytes());
    r.extend_from_slice(&5u32.to_be_bytes());
    r
}

#[test]
fn v9_templates_with_variable_length_fields_decode_as_in_ipfix() {
    let mut body = varlen_record(b"\x03\x00\x00\x50", false);
    body.extend(varlen_record(&[9u8; 300], true));
    body.extend(varlen_record(b"", false));
    body.extend([0, 0, 0]); // padding to a 4-byte boundary
    let mut dec = Decoder::new();
    let mut flows = Vec::new();
    let m = v9(0, 100, 5, &[(0, template(260, V9_VARLEN)), (260, body)]);
    let n = dec.decode(exporter(), &m, &mut |f| flows.push(f)).unwrap();
    assert_eq!(n, 3, "{:?}", dec.stats());
    for f in &flows {
        assert_eq!((f.bytes, f.packets, f.proto), (700, 5, 17));
        assert_eq!(f.dst.to_string(), "142.250.1.1");
    }
    assert_eq!(dec.stats()[&exporter()].malformed, 0);
}

#[test]
fn truncated_v9_variable_length_fields_are_counted_errors() {
    let good = varlen_record(b"abc", false);
    // (what is cut, the set): the value runs past the set; the length byte is missing; the
    // two-byte length is cut after its first byte.
    let mut past = good.clone();
    let mut r = varlen_record(&[1u8; 200], false);
    r.truncate(9 + 1 + 50);
    past.extend(r);
    let mut no_len = good.clone();
    no_len.extend(&varlen_record(b"x", false)[..9]);
    let mut half_len = good.clone();
    half_len.extend(&varlen_record(&[1u8; 300], true)[..11]);
    for (what, body) in [
        ("value", past),
        ("length", no_len),
        ("long length", half_len),
    ] {
        let mut dec = Decoder::new();
        let m = v9(0, 100, 5, &[(0, template(260, V9_VARLEN)), (260, body)]);
        let mut flows = 0;
        let n = dec.decode(exporter(), &m, &mut |_| flows += 1);
        assert_eq!(n, Ok(1), "{what}: the record before the cut is kept");
        assert_eq!(flows, 1);
        let s = &dec.stats()[&exporter()];
        assert_eq!((s.malformed, s.records), (1, 1), "{what}: {s:?}");
    }
    // A set of nothing but a cut record is an error for the datagram.
    let mut dec = Decoder::new();
    dec.decode(
        exporter(),
        &v9(0, 100, 5, &[(0, template(260, V9_VARLEN))]),
        &mut |_| {},
    )
    .unwrap();
    let cut = varlen_record(&[1u8; 40], false)[..20].to_vec();
    let e = dec
        .decode(exporter(), &v9(1, 100, 5, &[(260, cut)]), &mut |_| {})
        .unwrap_err();
    assert_eq!(
        e,
        DecodeError::Sets(SetError::Data {
            set_id: 260,
            offset: 20,
            error: RecordError::Field {
                record: 1,
                at: 0,
                len: 40,
                left: 10
            }
        })
    );
    assert!(e.to_string().contains("runs past the set"), "{e}");
}

#[test]
fn header_errors_say_what_in_their_kind() {
    let mut d = Decoder::new();
    let mut none = |_f: Flow| panic!("no flow from a bad header");
    let ex = exporter();
    assert_eq!(d.decode(ex, &[0], &mut none), Err(DecodeError::TooShort(1)));
    assert_eq!(
        d.decode(ex, &[0, 7, 0, 0], &mut none),
        Err(DecodeError::Version(7))
    );
    let e = d.decode(ex, &[0, 9, 0, 1], &mut none).unwrap_err();
    assert_eq!(
        e,
        DecodeError::Header {
            protocol: "NetFlow v9",
            need: 20,
            got: 4
        }
    );
    assert_eq!(e.to_string(), "NetFlow v9 header needs 20 bytes, got 4");
    let mut v5 = vec![0u8; 24];
    v5[1] = 5;
    assert_eq!(d.decode(ex, &v5, &mut none), Err(DecodeError::V5Count(0)));
    v5[3] = 2;
    assert_eq!(
        d.decode(ex, &v5, &mut none),
        Err(DecodeError::V5Records { len: 24, count: 2 })
    );
    let mut fix = vec![0u8; 16];
    fix[1] = 10;
    fix[3] = 40;
    assert_eq!(
        d.decode(ex, &fix, &mut none),
        Err(DecodeError::IpfixLength {
            length: 40,
            len: 16
        })
    );
}

#[test]
fn set_errors_carry_the_set_id_template_id_and_offset() {
    let decode = |m: &[u8]| Decoder::new().decode(exporter(), m, &mut |_| {});
    let sets = |e: Result<u64, DecodeError>| match e {
        Err(DecodeError::Sets(s)) => s,
        other => panic!("{other:?}"),
    };
    // IPFIX: a set claiming more than the message holds, after an unusable reserved set.
    let mut m = ipfix(0, 1, &[(7, vec![0; 4])]);
    m.extend_from_slice(&[1, 0, 0xff, 0xff, 1, 2]);
    let len = m.len() as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    let e = sets(decode(&m));
    assert_eq!(
        e,
        SetError::Reserved {
            set_id: 7,
            offset: 16
        }
    );
    assert_eq!(e.to_string(), "reserved set id 7");
    let mut m = ipfix(0, 1, &[]);
    m.extend_from_slice(&[1, 0, 0xff, 0xff, 1, 2]);
    let len = m.len() as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    let e = sets(decode(&m));
    assert_eq!(
        e,
        SetError::Length {
            set_id: 256,
            offset: 16,
            len: 0xffff,
            left: 6
        }
    );
    assert_eq!((e.set_id(), e.offset(), e.template_id()), (256, 16, None));
    // v9: the second set's offset is after the first (20 + 4 + 8).
    let e = sets(decode(&v9(
        0,
        100,
        0,
        &[(0, vec![0; 8]), (0, template(255, BASIC))],
    )));
    assert_eq!(
        e,
        SetError::TemplateId {
            set_id: 0,
            offset: 32,
            template_id: 255
        }
    );
    assert_eq!(e.template_id(), Some(255));
    // A template cut inside its field list.
    let cut = template(256, BASIC)[..10].to_vec();
    let e = sets(decode(&v9(0, 100, 0, &[(0, cut)])));
    assert_eq!(
        e,
        SetError::TemplateTruncated {
            set_id: 0,
            offset: 20,
            at: 8
        }
    );
    assert_eq!(e.to_string(), "template set truncated at byte 8");
    // A v9 options template whose lengths are not multiples of 4.
    let mut opt = 256u16.to_be_bytes().to_vec();
    opt.extend_from_slice(&[0, 3, 0, 4]);
    let e = sets(decode(&v9(0, 100, 0, &[(1, opt)])));
    assert_eq!(
        e,
        SetError::OptionsLengths {
            set_id: 1,
            offset: 20,
            template_id: 256,
            scope_len: 3,
            options_len: 4
        }
    );
}
