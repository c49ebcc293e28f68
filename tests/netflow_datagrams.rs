//! Every real exporter datagram of `../shared/corpus/datagrams` decodes without panic; templates
//! (`*tpl*` files) are fed before the data of the same exporter; known-invalid ones are counted
//! as malformed; decoded values are checked against nfdump where it can read them.

use flowprint::flow::Flow;
use flowprint::flow::netflow::Decoder;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

fn corpus() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/datagrams");
    if d.is_dir() {
        Some(d)
    } else {
        eprintln!("skipped: {} is absent", d.display());
        None
    }
}

/// Files grouped by exporter (the name before `_tpl`/`_data`/`_opttpl`), templates first.
pub fn groups(dir: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut g: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "dat") {
            continue;
        }
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        let key = ["_tpl", "_data", "_opttpl", "_tplopt"]
            .iter()
            .filter_map(|m| name.find(m))
            .min()
            .map(|i| name[..i].to_string())
            .unwrap_or(name.clone());
        g.entry(key).or_default().push(p);
    }
    for files in g.values_mut() {
        files.sort_by_key(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            (
                !n.contains("tpl") || n.contains("data"),
                n.contains("data"),
                n,
            )
        });
    }
    g
}

fn decode_group(files: &[PathBuf]) -> (Vec<Flow>, Decoder, Vec<String>) {
    let mut dec = Decoder::new();
    let exporter: IpAddr = "192.0.2.1".parse().unwrap();
    let mut flows = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).unwrap();
        if let Err(e) = dec.decode(exporter, &bytes, &mut |fl| flows.push(fl)) {
            errors.push(format!("{}: {e}", f.file_name().unwrap().to_string_lossy()));
        }
    }
    (flows, dec, errors)
}

#[test]
fn every_datagram_decodes_without_panic_and_invalid_ones_are_counted() {
    let Some(dir) = corpus() else { return };
    let mut report = Vec::new();
    for (name, files) in groups(&dir) {
        let (flows, dec, errors) = decode_group(&files);
        let stats = dec.stats().values().next().cloned().unwrap_or_default();
        report.push(format!(
            "{name}: {} flows, templates {}, malformed {}, missing template {}, pending {}, errors {errors:?}",
            flows.len(),
            stats.templates,
            stats.malformed,
            stats.missing_template,
            dec.pending()
        ));
        if name.starts_with("netflow5_test_invalid") {
            assert!(
                stats.malformed > 0 || !errors.is_empty(),
                "{name} must be reported as malformed"
            );
        }
        for f in &flows {
            assert!(
                f.end_ms >= f.start_ms - 1000 * 3600 * 24 * 365,
                "{name}: absurd times {f:?}"
            );
        }
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn truncated_datagrams_never_panic() {
    let Some(dir) = corpus() else { return };
    for (_, files) in groups(&dir) {
        let mut dec = Decoder::new();
        let exporter: IpAddr = "192.0.2.2".parse().unwrap();
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            for cut in 0..bytes.len() {
                let _ = dec.decode(exporter, &bytes[..cut], &mut |_| {});
            }
            let _ = dec.decode(exporter, &bytes, &mut |_| {});
            let mut flipped = bytes.clone();
            for i in 0..flipped.len() {
                flipped[i] ^= 0xa5;
                let _ = dec.decode(exporter, &flipped, &mut |_| {});
                flipped[i] ^= 0xa5;
            }
        }
    }
}

mod common;

/// Replays each exporter's datagrams to nfcapd (from its own 127.0.0.x address) and compares
/// nfdump's decoding with flowprint's, record for record.
#[test]
fn decoded_values_equal_nfdump_for_every_exporter() {
    let Some(dir) = corpus() else { return };
    if !common::have("nfcapd") || !common::have("nfdump") {
        return;
    }
    let tmp = common::TempDir::new("dgram");
    let cap = common::Nfcapd::start(&tmp.0);
    let mut ours: BTreeMap<String, Vec<Flow>> = BTreeMap::new();
    let groups = groups(&dir);
    for (i, (name, files)) in groups.iter().enumerate() {
        let from = format!("127.0.1.{}", i + 1);
        let datagrams: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
        common::send(&from, cap.port, &datagrams);
        let (flows, _, _) = decode_group(files);
        ours.insert(from.clone(), flows);
        let _ = name;
    }
    let theirs = cap.stop_and_read();
    let mut by_exporter: BTreeMap<String, Vec<Flow>> = BTreeMap::new();
    for f in theirs {
        by_exporter
            .entry(f.exporter.map(|e| e.to_string()).unwrap_or_default())
            .or_default()
            .push(f);
    }
    let mut report = Vec::new();
    let mut compared = 0;
    for (i, (name, _)) in groups.iter().enumerate() {
        let from = format!("127.0.1.{}", i + 1);
        // nfdump 1.7.1 does not apply the sampling interval that this exporter announces in a
        // v9 options record (scope "system"); flowprint does, as RFC 3954 intends.
        let unscale = name == "netflow9_test_invalid01";
        let mut a: Vec<_> = ours[&from]
            .iter()
            .map(|f| common::key_scaled(f, if unscale { u64::from(f.sampling) } else { 1 }))
            .collect();
        // nfdump keeps records without addresses as 0.0.0.0 flows; flowprint counts and drops them.
        let mut b: Vec<_> = by_exporter
            .get(&from)
            .map(|v| {
                v.iter()
                    .filter(|f| !f.src.is_unspecified() || !f.dst.is_unspecified())
                    .map(common::key)
                    .collect()
            })
            .unwrap_or_default();
        a.sort();
        b.sort();
        if a == b {
            if !a.is_empty() {
                compared += 1;
            }
            continue;
        }
        report.push(format!(
            "{name}: flowprint {} flows, nfdump {} flows\n  only flowprint: {:?}\n  only nfdump: {:?}",
            a.len(),
            b.len(),
            a.iter().filter(|k| !b.contains(k)).take(3).collect::<Vec<_>>(),
            b.iter().filter(|k| !a.contains(k)).take(3).collect::<Vec<_>>()
        ));
    }
    eprintln!("{compared} exporters agree with nfdump");
    assert!(report.is_empty(), "{}", report.join("\n"));
}
