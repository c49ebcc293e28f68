//! `flowprint evaluate` on the shared corpus: the labelled hosts of
//! `../shared/corpus/labels/hosts.csv`, with the softflowd IPFIX exports of their captures and
//! the captures' DNS answers as passive DNS.

mod common;

use std::process::Command;

#[test]
fn evaluate_scores_the_corpus_labels() {
    let (Some(exports), Some(pcaps), Some(labels)) = (
        common::corpus("exports"),
        common::corpus("pcaps"),
        common::corpus("labels"),
    ) else {
        return;
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowprint"));
    cmd.args(["evaluate", "--format", "json", "--labels"])
        .arg(labels.join("hosts.csv"));
    for p in ["android.pcap", "iphone.pcap", "conncheck.pcap"] {
        cmd.arg("--dns-log").arg(pcaps.join(p));
    }
    for e in ["android", "iphone", "conncheck", "windowsupdate_over_http"] {
        cmd.arg(exports.join(format!("{e}.ipfix-export.pcap")));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Every label row of these four captures is scored, each against its own capture.
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(r["hosts"].as_u64().unwrap() as usize, rows.len());
    assert!(rows.len() >= 7, "{r}");
    let row = |capture: &str, host: &str| {
        rows.iter()
            .find(|x| x[0].as_str().unwrap().starts_with(capture) && x[1] == host)
            .unwrap_or_else(|| panic!("{capture} {host} not scored: {r}"))
    };
    assert_eq!(row("android", "192.168.2.16")[3], "Android");
    assert_eq!(row("iphone", "192.168.2.17")[3], "iOS");
    // The same link-local address is a host of two captures: scored twice, apart.
    assert!(rows.iter().filter(|x| x[1] == "169.254.225.216").count() >= 2);
    // Precision is what the verdicts we give are worth: no wrong family on these captures.
    for l in r["labels"].as_array().unwrap() {
        if let Some(p) = l["precision"].as_f64() {
            assert_eq!(p, 1.0, "{l}");
        }
    }
    let coverage = r["coverage"].as_f64().unwrap();
    assert!(coverage > 0.5 && coverage <= 1.0, "{r}");
    // The counts agree with the confusion matrix.
    let total: u64 = r["confusion"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|m| m.as_object().unwrap().values())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, r["hosts"].as_u64().unwrap());
}
