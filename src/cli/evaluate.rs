//! `flowprint evaluate`: score the OS verdicts against labelled hosts.

use super::RuleArgs;
use super::args::{one_of, parse_half_life};
use flowprint::accuracy::{Label, parse_labels, scope_matches, score};
use flowprint::eval::LocalNets;
use flowprint::flow::ingest::InputFormat;
use flowprint::flow::time::MaybeDur;
use flowprint::infer::{HostTable, InferConfig};
use flowprint::scan::Scanner;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

/// Arguments of `evaluate`.
#[derive(clap::Args)]
pub struct Args {
    /// Labels CSV: columns `host_ip` and `label_os` (and optionally `pcap`, the input a row
    /// belongs to). See docs/evaluate.md.
    #[arg(long, value_name = "CSV")]
    labels: String,
    #[command(flatten)]
    rules: RuleArgs,
    /// A local network whose addresses are hosts (repeatable; replaces the private ranges).
    #[arg(long = "local-net", value_name = "CIDR")]
    local_net: Vec<IpNet>,
    /// Passive DNS logs or captures (repeatable), as for `analyze`.
    #[arg(long = "dns-log", value_name = "FILE")]
    dns_logs: Vec<String>,
    /// Half-life of evidence (`30d`, or `none` for no decay).
    #[arg(long, default_value = "none", value_parser = parse_half_life)]
    half_life: MaybeDur,
    /// Format of the inputs.
    #[arg(long, value_parser = one_of::<InputFormat>(InputFormat::VALUES), default_value = "auto")]
    input_format: InputFormat,
    /// `table` or `json`.
    #[arg(long, default_value = "table")]
    format: String,
    /// Flow files, captures or directories.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<String>,
}

/// Runs `evaluate`.
pub fn run(args: Args) -> anyhow::Result<i32> {
    let text = flowprint::limits::read_text_bounded(
        std::path::Path::new(&args.labels),
        flowprint::limits::MAX_SIDE_FILE,
        "a labels file",
    )?;
    let labels = parse_labels(&text).map_err(|e| anyhow::anyhow!("{}: {e}", args.labels))?;
    let compiled = args.rules.compile();
    if super::has_errors(&compiled) {
        super::print_diagnostics(&compiled, super::DiagFormat::Text)?;
    }
    let local = Arc::new(if args.local_net.is_empty() {
        LocalNets::default()
    } else {
        LocalNets::new(args.local_net.clone())
    });
    let dns = super::dns::load_logs(&args.dns_logs)?;
    let (inputs, skipped) = flowprint::flow::ingest::expand_inputs(&args.inputs)?;
    for s in &skipped {
        eprintln!("warning: {} not read: {}", s.path.display(), s.reason);
    }
    // Labels with a scope go with the inputs their scope names, each input analysed alone;
    // labels without one go with all inputs analysed together.
    let mut groups: BTreeMap<Option<String>, Vec<&Label>> = BTreeMap::new();
    for l in &labels {
        groups.entry(l.scope.clone()).or_default().push(l);
    }
    // An input unreadable or cut short is reported and makes the exit code 2 (as `analyze`).
    let unreadable = std::cell::Cell::new(false);
    let analyse = |files: &[String]| -> anyhow::Result<Vec<flowprint::infer::HostSummary>> {
        let inventory = HostTable::with_config(InferConfig {
            half_life_ms: args.half_life.ms(),
            record_samples: false,
            ..Default::default()
        });
        // As `analyze` applies flows (names learned included), each group on its own map.
        let mut dns = dns.clone();
        let mut scanner = Scanner::new(compiled.ruleset.clone(), local.clone(), inventory);
        let totals = super::read_inputs(files, args.input_format, &mut |f| {
            scanner.apply_learning(&f, &mut dns);
        })?;
        if totals.unreadable {
            unreadable.set(true);
        }
        Ok(scanner.hosts().summaries(&compiled.ruleset))
    };
    let family = |summaries: &[flowprint::infer::HostSummary], host: &str| {
        summaries
            .iter()
            .find(|s| s.host == host)
            .and_then(|s| s.os.as_ref())
            .and_then(|o| o.family.clone())
    };
    let mut rows = Vec::new();
    let mut unmatched = Vec::new();
    for (scope, ls) in &groups {
        match scope {
            None => {
                let summaries = analyse(&inputs)?;
                for l in ls {
                    rows.push((
                        None,
                        l.host.clone(),
                        l.os.clone(),
                        family(&summaries, &l.host),
                    ));
                }
            }
            Some(s) => {
                let files: Vec<String> = inputs
                    .iter()
                    .filter(|i| scope_matches(s, i))
                    .cloned()
                    .collect();
                if files.is_empty() {
                    unmatched.push(s.clone());
                }
                for file in &files {
                    let summaries = analyse(std::slice::from_ref(file))?;
                    let name = file.rsplit('/').next().unwrap_or(file).to_string();
                    for l in ls {
                        rows.push((
                            Some(name.clone()),
                            l.host.clone(),
                            l.os.clone(),
                            family(&summaries, &l.host),
                        ));
                    }
                }
            }
        }
    }
    for u in &unmatched {
        eprintln!(
            "note: no input for the labels of `{}`; they are not scored",
            flowprint::text::printable(u)
        );
    }
    let report = score(rows);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.format == "json" {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}", v * 100.0));
        writeln!(
            out,
            "{:<14} {:>7} {:>9} {:>7} {:>9} {:>7} {:>6}",
            "label", "support", "predicted", "correct", "precision", "recall", "F1"
        )?;
        for l in &report.labels {
            writeln!(
                out,
                "{:<14} {:>7} {:>9} {:>7} {:>9} {:>7} {:>6}",
                l.label,
                l.support,
                l.predicted,
                l.correct,
                pct(l.precision),
                pct(l.recall),
                pct(l.f1)
            )?;
        }
        writeln!(
            out,
            "\n{} labelled hosts scored; coverage {:.1} % ({} with a verdict); accuracy {:.1} %; macro F1 {:.1} %",
            report.hosts,
            report.coverage * 100.0,
            report.covered,
            report.accuracy * 100.0,
            report.macro_f1 * 100.0
        )?;
        writeln!(out, "\nconfusion (label → predicted: hosts)")?;
        for (l, m) in &report.confusion {
            let cells: Vec<String> = m.iter().map(|(p, n)| format!("{p}: {n}")).collect();
            writeln!(out, "  {l:<14} {}", cells.join(", "))?;
        }
        writeln!(out, "\nhosts")?;
        for (scope, host, label, predicted) in &report.rows {
            writeln!(
                out,
                "  {:<40} {:<18} {:<10} {}",
                scope.as_deref().unwrap_or("-"),
                host,
                label,
                predicted.as_deref().unwrap_or("-")
            )?;
        }
    }
    out.flush()?;
    Ok(if unreadable.get() { 2 } else { 0 })
}
