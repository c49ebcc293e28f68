//! Conformance with nfdump on real exports: every softflowd NetFlow v5/v9/IPFIX capture of
//! `../shared/corpus/exports` decodes to the same records as nfdump's CSV of the same export.

mod common;

use flowprint::flow::Flow;
use flowprint::flow::ingest::{InputFormat, open_input, read_flows};
use std::path::Path;

fn read(path: &Path, format: InputFormat) -> Vec<Flow> {
    let mut flows = Vec::new();
    let mut errors = Vec::new();
    read_flows(
        open_input(path.to_str().unwrap()).unwrap(),
        "t",
        format,
        &mut |f| flows.push(f),
        &mut |e| errors.push(e.to_string()),
    )
    .unwrap();
    assert!(errors.is_empty(), "{}: {errors:?}", path.display());
    flows
}

/// Key with the start and end second (nfdump 1.7.1's CSV prints seconds).
fn timed_key(f: &Flow) -> (String, String, u16, u16, u8, u64, u64, u8, i64, i64) {
    let (a, b, c, d, e, g, h, i) = common::key(f);
    (
        a,
        b,
        c,
        d,
        e,
        g,
        h,
        i,
        f.start_ms.div_euclid(1000),
        f.end_ms.div_euclid(1000),
    )
}

#[test]
fn every_export_capture_decodes_like_nfdump() {
    let Some(dir) = common::corpus("exports") else {
        return;
    };
    let mut pcaps: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with("-export.pcap"))
        .collect();
    pcaps.sort();
    assert!(
        pcaps.len() >= 90,
        "expected the 91 export captures, found {}",
        pcaps.len()
    );
    let mut failures = Vec::new();
    let mut records = 0;
    for pcap in &pcaps {
        let csv = pcap
            .to_string_lossy()
            .replace("-export.pcap", ".nfdump.csv");
        let mut ours: Vec<_> = read(pcap, InputFormat::Auto)
            .iter()
            .map(timed_key)
            .collect();
        let mut theirs: Vec<_> = read(Path::new(&csv), InputFormat::NfdumpCsv)
            .iter()
            .map(timed_key)
            .collect();
        ours.sort();
        theirs.sort();
        records += ours.len();
        if ours != theirs {
            failures.push(format!(
                "{}: flowprint {} records, nfdump {}; first difference: {:?} vs {:?}",
                pcap.file_name().unwrap().to_string_lossy(),
                ours.len(),
                theirs.len(),
                ours.iter().find(|k| !theirs.contains(k)),
                theirs.iter().find(|k| !ours.contains(k))
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!(
        "{} captures, {records} records equal to nfdump's",
        pcaps.len()
    );
}
