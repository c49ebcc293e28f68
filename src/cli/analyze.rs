//! `flowprint analyze`

use super::args::{one_of, parse_half_life, parse_idle};
use super::{DiagFormat, RuleArgs, has_errors, print_diagnostics};
use flowprint::eval::LocalNets;
use flowprint::flow::ingest::InputFormat;
use flowprint::flow::time::MaybeDur;
use flowprint::infer::{HostSummary, HostTable, InferConfig};
use flowprint::scan::Scanner;
use ipnet::IpNet;
use std::io::Write;
use std::sync::Arc;

/// Flows `analyze` applies at a time (see `Scanner::apply_all`).
const ANALYZE_BATCH: usize = 256;

/// Output of `analyze`.
#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// An aligned table for people.
    Table,
    /// One JSON object per host per line.
    Json,
}

/// Arguments of `analyze`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub rules: RuleArgs,
    /// A local network whose addresses are hosts (repeatable; replaces the private ranges).
    #[arg(long = "local-net", value_name = "CIDR")]
    pub local_net: Vec<IpNet>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Show the evidence behind each verdict; with `--host`, how each score was computed.
    #[arg(long)]
    pub explain: bool,
    /// Only report these hosts (repeatable).
    #[arg(long = "host", value_name = "ADDR")]
    pub hosts: Vec<std::net::IpAddr>,
    /// Half-life of evidence (`30d`, `12h`, or `none` for no decay).
    #[arg(long, default_value = "30d", value_parser = parse_half_life)]
    pub half_life: MaybeDur,
    /// Most hosts kept in memory at any time; a new host beyond evicts the least recently seen
    /// tenth (they stay in the inventory as they were last saved).
    #[arg(long, default_value_t = 1_000_000)]
    pub max_hosts: usize,
    /// Evict hosts silent for this long (`7d`; default `none`: never).
    #[arg(long, default_value = "none", value_parser = parse_idle)]
    pub idle: MaybeDur,
    /// Passive DNS (repeatable): a Zeek `dns.log` (TSV or JSON), flowprint DNS JSON lines, or a
    /// packet capture whose DNS answers are read; `peer.domain` then also matches the names a
    /// peer address answered for at the time of each flow.
    #[arg(long = "dns-log", value_name = "FILE")]
    pub dns_logs: Vec<String>,
    /// The inventory to update: a SQLite file, or a `postgres://` URL. Its hosts are loaded
    /// first, so evidence accumulates across runs.
    #[arg(long, value_name = "PATH|URL")]
    pub db: Option<String>,
    /// Delete the inventory's evidence of rules that are not loaded (by default it is kept,
    /// unscored, and written back); says how many rows it removed. Inputs are optional then.
    #[arg(long, requires = "db")]
    pub prune_unknown_rules: bool,
    /// Format of the inputs (detected from content by default).
    #[arg(long, value_parser = one_of::<InputFormat>(InputFormat::VALUES), default_value = "auto")]
    pub input_format: InputFormat,
    /// Flow files, captures or directories (read recursively in time order); `-` for stdin.
    #[arg(required_unless_present = "prune_unknown_rules", value_name = "INPUT")]
    pub inputs: Vec<String>,
}

/// Runs `analyze`.
pub fn run(args: Args) -> anyhow::Result<i32> {
    // Reading starts at once, beside compiling the rules and loading the inventory.
    let reading = super::ReadAhead::start(args.inputs.clone(), args.input_format)?;
    let compiled = args.rules.compile();
    print_diagnostics(&compiled, DiagFormat::Text)?;
    let rule_errors = has_errors(&compiled);
    let local = if args.local_net.is_empty() {
        LocalNets::default()
    } else {
        LocalNets::new(args.local_net.clone())
    };
    let ruleset = &compiled.ruleset;
    let mut dns = super::dns::load_logs(&args.dns_logs)?;
    let mut store = match &args.db {
        Some(spec) => Some(flowprint::inventory::open(spec)?),
        None => None,
    };
    if let Some(store) = store.as_mut() {
        super::dns::load_stored(&mut dns, store.as_mut())?;
    }
    let mut inventory = HostTable::with_config(InferConfig {
        half_life_ms: args.half_life.ms(),
        max_hosts: args.max_hosts.max(1),
        idle_ms: args.idle.ms(),
        record_samples: args.explain || args.format == Format::Json,
        ..Default::default()
    });
    // Evidence rows of rules not loaded are kept as stored (and saved back) unless pruning is
    // asked for: a run with other rules than those that wrote the inventory loses nothing.
    if let Some(store) = store.as_mut() {
        let restored = inventory.restore(&store.load_all()?, ruleset);
        if restored.bad_hosts > 0 {
            eprintln!(
                "warning: {} stored host(s) without a valid address left in the inventory, not loaded",
                restored.bad_hosts
            );
        }
        if args.prune_unknown_rules {
            let rules: Vec<String> = restored.kept_rules.iter().map(|(r, _)| r.clone()).collect();
            let removed = if rules.is_empty() {
                0
            } else {
                store.delete_rule_evidence(&rules)?
            };
            inventory.drop_kept();
            eprintln!(
                "pruned: {removed} stored evidence row(s) of {} rule(s) not loaded removed",
                rules.len()
            );
        } else if let Some(note) = restored.kept_note() {
            eprintln!("note: {note}; `--prune-unknown-rules` removes them");
        }
    }
    // The daemon's path: names that records carry for their destination (TLS SNI, HTTP Host)
    // are learned as it learns them, visible to the flows after each batch, and saved with the
    // inventory so that later runs match other flows to the same addresses.
    let mut scanner = Scanner::new(compiled.ruleset.clone(), Arc::new(local), inventory);
    // Flows are applied a batch at a time, so that the scanner can fetch the hosts' states of
    // the next flows while it applies one (`Scanner::apply_all`); the order is the files'.
    let totals = reading.for_each(&mut |batch| {
        for chunk in batch.chunks(ANALYZE_BATCH) {
            scanner.apply_all_learning(chunk, &mut dns);
        }
    })?;
    scanner.learn_into(&mut dns);
    let (flows, skipped, unreadable) = (totals.flows, totals.skipped, totals.unreadable);
    let (mut inventory, _) = scanner.into_parts();
    inventory.evict_if_needed();
    if let Some(store) = store.as_mut() {
        store.save(&inventory.to_stored(ruleset))?;
        store.save_dns(&flowprint::inventory::StoredDnsPair::all_of(&dns))?;
    }
    let mut summaries = inventory.summaries(ruleset);
    if !args.hosts.is_empty() {
        summaries.retain(|s| args.hosts.iter().any(|h| h.to_string() == s.host));
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.format {
        Format::Json => write_json_lines(&mut out, &summaries)?,
        Format::Table if args.explain && !args.hosts.is_empty() => {
            for h in &args.hosts {
                match inventory.explain(ruleset, *h) {
                    Some(text) => write!(out, "{text}")?,
                    None => writeln!(out, "host {h}: not seen")?,
                }
            }
        }
        Format::Table => print_table(&mut out, &summaries, args.explain)?,
    }
    out.flush()?;
    let identified = summaries
        .iter()
        .filter(|s| s.os.is_some() || !s.software.is_empty())
        .count();
    let failed = if totals.failed > 0 {
        format!(" ({} unreadable or cut short)", totals.failed)
    } else {
        String::new()
    };
    let evicted = match inventory.evicted {
        0 => String::new(),
        n => format!(" ({n} evicted beyond --max-hosts {})", args.max_hosts),
    };
    eprintln!(
        "{flows} flows read from {} input(s){failed}, {skipped} malformed line(s) skipped; {} host(s){evicted}, {identified} identified; {} rule(s)",
        totals.inputs,
        summaries.len(),
        ruleset.len()
    );
    Ok(if unreadable {
        2
    } else if rule_errors {
        1
    } else {
        0
    })
}

/// Hosts serialized at a time by [`write_json_lines`]: each group's two halves on two threads.
const JSON_GROUP: usize = 16_384;

/// One JSON object per summary per line, in order. A large inventory's lines are serialized
/// a group at a time, half of each group on a second thread (the reading thread is done by
/// then); at most one group's text is held.
fn write_json_lines(out: &mut impl Write, summaries: &[HostSummary]) -> anyhow::Result<()> {
    fn lines(part: &[HostSummary]) -> serde_json::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(part.len() * 256);
        for s in part {
            serde_json::to_writer(&mut buf, s)?;
            buf.push(b'\n');
        }
        Ok(buf)
    }
    for group in summaries.chunks(JSON_GROUP) {
        if group.len() < 2048 {
            out.write_all(&lines(group)?)?;
            continue;
        }
        let (first, second) = group.split_at(group.len() / 2);
        let (a, b) = std::thread::scope(|scope| {
            let later = scope.spawn(|| lines(second));
            let a = lines(first);
            let b = later
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            (a, b)
        });
        out.write_all(&a?)?;
        out.write_all(&b?)?;
    }
    Ok(())
}

fn os_text(s: &HostSummary) -> (String, String) {
    match &s.os {
        None => ("-".into(), "".into()),
        Some(os) => {
            let mut t = os.family.clone().unwrap_or_else(|| "?".into());
            if let Some(n) = os.name.as_ref().filter(|n| Some(*n) != os.family.as_ref()) {
                t.push_str(&format!(" ({n})"));
            }
            if let Some(v) = &os.version {
                t.push_str(&format!(" {v}"));
            }
            (t, format!("{:.2}", os.confidence))
        }
    }
}

fn software_text(s: &HostSummary) -> String {
    if s.software.is_empty() {
        return "-".into();
    }
    s.software
        .iter()
        .map(|sw| match &sw.version {
            Some(v) => format!("{} {v}", sw.name),
            None => sw.name.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn print_table(
    out: &mut impl Write,
    summaries: &[HostSummary],
    explain: bool,
) -> std::io::Result<()> {
    let rows: Vec<[String; 7]> = summaries
        .iter()
        .map(|s| {
            let (os, conf) = os_text(s);
            [
                s.host.clone(),
                os,
                conf,
                software_text(s),
                s.device.as_ref().map_or("-".into(), |d| d.kind.clone()),
                s.flows.to_string(),
                s.evidence.len().to_string(),
            ]
        })
        .collect();
    let header = ["HOST", "OS", "CONF", "SOFTWARE", "DEVICE", "FLOWS", "RULES"];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: &[&str]| -> std::io::Result<()> {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(out, &header)?;
    for (r, s) in rows.iter().zip(summaries) {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(out, &cells)?;
        if explain {
            for e in &s.evidence {
                let concl: Vec<String> = e
                    .conclusions
                    .iter()
                    .map(|c| {
                        let v = c
                            .version
                            .as_ref()
                            .map(|v| format!(" {v}"))
                            .unwrap_or_default();
                        format!("{}={}{v} ({})", c.attribute.name(), c.value, c.confidence)
                    })
                    .collect();
                writeln!(
                    out,
                    "    {} — {}\n        {} flow(s) {} .. {}; concludes {}",
                    e.rule,
                    e.title.as_deref().unwrap_or(""),
                    e.flows,
                    e.first_seen,
                    e.last_seen,
                    concl.join(", "),
                )?;
                if let Some(ex) = &e.example {
                    writeln!(out, "        e.g. {ex}")?;
                }
            }
            for a in &s.alternatives {
                writeln!(
                    out,
                    "    alternative {} = {} ({})",
                    a.attribute.name(),
                    a.value,
                    a.confidence
                )?;
            }
        }
    }
    Ok(())
}
