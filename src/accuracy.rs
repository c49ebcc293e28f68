//! Scoring flowprint's OS verdicts against labelled hosts: per-label precision, recall and F1,
//! coverage, and a confusion matrix.
//!
//! The labels file is CSV with a header; the columns `host_ip` and `label_os` are required. An
//! optional scope column (`pcap`, `capture` or `source`) says which input a label belongs to: a
//! row applies to the inputs whose file name starts with the scope's stem (`android.pcap` →
//! `android.ipfix-export.pcap`, `android.nfv9.nfcapd`), and each such input is analysed on its
//! own — the same address can be a different machine in two captures. Without a scope column
//! every label applies to the whole run.
//!
//! Definitions, per label L (OS family, compared case-insensitively):
//! precision = hosts labelled L and predicted L / hosts predicted L;
//! recall = hosts labelled L and predicted L / hosts labelled L (a host without a verdict counts
//! against recall); F1 = their harmonic mean; coverage = labelled hosts with any OS verdict /
//! labelled hosts. Hosts predicted but not labelled, and rows labelled `unknown`, are not
//! scored.

use serde::Serialize;
use std::collections::BTreeMap;

/// One labelled host.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// The host address, as written.
    pub host: String,
    /// The OS family it runs.
    pub os: String,
    /// The scope (capture) it belongs to, when the file has a scope column.
    pub scope: Option<String>,
}

/// Splits one CSV line (RFC 4180 quoting).
pub fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// A labels file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelsError {
    /// No header line.
    #[error("the labels file is empty")]
    Empty,
    /// A required column is missing (its main name; `host`/`ip` and `os` are accepted too).
    #[error("no `{0}` column")]
    NoColumn(&'static str),
}

/// Parses a labels file. Rows without a host or a label are skipped; a missing required
/// column is an error naming it.
pub fn parse_labels(text: &str) -> Result<Vec<Label>, LabelsError> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = csv_fields(lines.next().ok_or(LabelsError::Empty)?);
    let col = |names: &[&str]| {
        header
            .iter()
            .position(|h| names.iter().any(|n| h.trim().eq_ignore_ascii_case(n)))
    };
    let host = col(&["host_ip", "host", "ip"]).ok_or(LabelsError::NoColumn("host_ip"))?;
    let os = col(&["label_os", "os"]).ok_or(LabelsError::NoColumn("label_os"))?;
    let scope = col(&["pcap", "capture", "source"]);
    let mut out = Vec::new();
    for line in lines {
        let f = csv_fields(line);
        let get = |i: usize| {
            f.get(i)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let (Some(h), Some(o)) = (get(host), get(os)) else {
            continue;
        };
        // "unknown" is the absence of a label, not a label.
        if o.eq_ignore_ascii_case("unknown") || o == "-" || o == "?" {
            continue;
        }
        out.push(Label {
            host: h,
            os: o,
            scope: scope.and_then(get),
        });
    }
    Ok(out)
}

/// Whether a label's scope applies to an input path.
pub fn scope_matches(scope: &str, input: &str) -> bool {
    let stem = scope.rsplit('/').next().unwrap_or(scope);
    let stem = stem.split('.').next().unwrap_or(stem);
    let name = input.rsplit('/').next().unwrap_or(input);
    !stem.is_empty()
        && name.starts_with(stem)
        && name[stem.len()..]
            .chars()
            .next()
            .is_none_or(|c| c == '.' || c == '_' || c == '-')
}

/// Scores of one label.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LabelScore {
    /// The label.
    pub label: String,
    /// Hosts with this label.
    pub support: usize,
    /// Hosts predicted with this label (among labelled hosts).
    pub predicted: usize,
    /// Correct.
    pub correct: usize,
    /// precision, 0..1 (`None` without predictions).
    pub precision: Option<f64>,
    /// recall, 0..1.
    pub recall: Option<f64>,
    /// F1.
    pub f1: Option<f64>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Labelled hosts scored.
    pub hosts: usize,
    /// Of those, with any OS verdict.
    pub covered: usize,
    /// covered / hosts.
    pub coverage: f64,
    /// Correct / hosts.
    pub accuracy: f64,
    /// Macro-averaged F1 over labels with support.
    pub macro_f1: f64,
    /// Per label.
    pub labels: Vec<LabelScore>,
    /// label → predicted (`-` for none) → hosts.
    pub confusion: BTreeMap<String, BTreeMap<String, usize>>,
    /// Each scored host: (scope, host, label, predicted).
    pub rows: Vec<(Option<String>, String, String, Option<String>)>,
}

/// Scores `(label, prediction)` pairs: each is one labelled host, with the OS family flowprint
/// gave it (if any).
pub fn score(rows: Vec<(Option<String>, String, String, Option<String>)>) -> Report {
    let canon = |s: &str| s.trim().to_ascii_lowercase();
    // Display names: the label's spelling as first seen.
    let mut display: BTreeMap<String, String> = BTreeMap::new();
    for (_, _, l, p) in &rows {
        display.entry(canon(l)).or_insert_with(|| l.clone());
        if let Some(p) = p {
            display.entry(canon(p)).or_insert_with(|| p.clone());
        }
    }
    let mut confusion: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut support: BTreeMap<String, usize> = BTreeMap::new();
    let mut predicted: BTreeMap<String, usize> = BTreeMap::new();
    let mut correct: BTreeMap<String, usize> = BTreeMap::new();
    let mut covered = 0;
    for (_, _, l, p) in &rows {
        let l = canon(l);
        *support.entry(l.clone()).or_default() += 1;
        let p = p.as_deref().map(canon);
        if let Some(p) = &p {
            covered += 1;
            *predicted.entry(p.clone()).or_default() += 1;
            if *p == l {
                *correct.entry(l.clone()).or_default() += 1;
            }
        }
        *confusion
            .entry(display[&l].clone())
            .or_default()
            .entry(p.map_or("-".to_string(), |p| display[&p].clone()))
            .or_default() += 1;
    }
    let mut labels = Vec::new();
    let mut keys: Vec<&String> = support.keys().chain(predicted.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let s = support.get(k).copied().unwrap_or(0);
        let p = predicted.get(k).copied().unwrap_or(0);
        let c = correct.get(k).copied().unwrap_or(0);
        let precision = (p > 0).then(|| c as f64 / p as f64);
        let recall = (s > 0).then(|| c as f64 / s as f64);
        let f1 = match (precision, recall) {
            (Some(pr), Some(rc)) if pr + rc > 0.0 => Some(2.0 * pr * rc / (pr + rc)),
            (Some(_), Some(_)) => Some(0.0),
            _ => None,
        };
        labels.push(LabelScore {
            label: display[k].clone(),
            support: s,
            predicted: p,
            correct: c,
            precision,
            recall,
            f1,
        });
    }
    let with_support: Vec<f64> = labels
        .iter()
        .filter(|l| l.support > 0)
        .map(|l| l.f1.unwrap_or(0.0))
        .collect();
    let n = rows.len();
    let right: usize = correct.values().sum();
    Report {
        hosts: n,
        covered,
        coverage: if n == 0 {
            0.0
        } else {
            covered as f64 / n as f64
        },
        accuracy: if n == 0 { 0.0 } else { right as f64 / n as f64 },
        macro_f1: if with_support.is_empty() {
            0.0
        } else {
            with_support.iter().sum::<f64>() / with_support.len() as f64
        },
        labels,
        confusion,
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting() {
        assert_eq!(
            csv_fields(r#"a,"b, c","d ""e""",f"#),
            vec!["a", "b, c", "d \"e\"", "f"]
        );
    }

    #[test]
    fn labels_with_scope() {
        let l = parse_labels(
            "pcap,host_ip,label_os,x\nandroid.pcap,192.168.2.16,Android,\"q, r\"\n,10.0.0.1,,\n",
        )
        .unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].scope.as_deref(), Some("android.pcap"));
        assert!(scope_matches(
            "android.pcap",
            "/x/android.ipfix-export.pcap"
        ));
        assert!(!scope_matches(
            "android.pcap",
            "/x/android10.nfv9-export.pcap"
        ));
        assert_eq!(
            parse_labels("ip_addr,label_os\n"),
            Err(LabelsError::NoColumn("host_ip"))
        );
        assert_eq!(parse_labels("\n\n"), Err(LabelsError::Empty));
    }

    #[test]
    fn scores_by_hand() {
        let r =
            |l: &str, p: Option<&str>| (None, "h".to_string(), l.to_string(), p.map(String::from));
        // 3 Android: 2 right, 1 without verdict; 1 iOS predicted Android; 1 Windows right.
        let rep = score(vec![
            r("Android", Some("Android")),
            r("Android", Some("android")),
            r("Android", None),
            r("iOS", Some("Android")),
            r("Windows", Some("Windows")),
        ]);
        let a = rep.labels.iter().find(|l| l.label == "Android").unwrap();
        assert_eq!((a.support, a.predicted, a.correct), (3, 3, 2));
        assert!((a.precision.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert!((a.recall.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        let i = rep.labels.iter().find(|l| l.label == "iOS").unwrap();
        assert_eq!(i.precision, None);
        assert_eq!(i.recall, Some(0.0));
        assert_eq!(i.f1, None);
        assert_eq!(rep.covered, 4);
        assert!((rep.coverage - 0.8).abs() < 1e-9);
        assert!((rep.accuracy - 0.6).abs() < 1e-9);
        assert_eq!(rep.confusion["Android"]["-"], 1);
        assert_eq!(rep.confusion["iOS"]["Android"], 1);
        // macro F1 over Android (2/3), iOS (0), Windows (1).
        assert!((rep.macro_f1 - (2.0 / 3.0 + 0.0 + 1.0) / 3.0).abs() < 1e-9);
    }
}
