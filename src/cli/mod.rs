//! Subcommands of the `flowprint` binary.

mod analyze;
mod args;
mod bench;
mod check;
mod collect;
mod dns;
mod evaluate;
mod flows;
mod hosts;
mod pack;
mod pack_gen;
mod serve;

use clap::{Parser, Subcommand, ValueEnum};
use flowprint::compiler::{Compiled, Compiler};
use flowprint::diagnostic::Severity;
use flowprint::sources::{Selection, Sources};
use std::io::Write;
use std::path::PathBuf;

/// Know which operating systems and software run on a network, from flow records alone.
#[derive(Parser)]
#[command(name = "flowprint", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile rule files or packs and print their diagnostics (exit 1 on errors).
    Check(check::Args),
    /// Apply rules to flow records and print what they say about each host.
    Analyze(analyze::Args),
    /// Names over addresses: resolve the rules' names, extract answers from captures, look up.
    Dns(dns::Args),
    /// Score the OS verdicts against labelled hosts: precision, recall, F1, coverage, confusion.
    Evaluate(Box<evaluate::Args>),
    /// Query the host inventory kept by `analyze --db`.
    Hosts(hosts::Args),
    /// Print the decoded, normalized flows of flow files and captures.
    Flows(flows::Args),
    /// Receive NetFlow/IPFIX/sFlow over UDP and print flows as they arrive.
    Collect(collect::Args),
    /// Rule packs: create, test, build, sign, verify, install, list, generate.
    Pack(pack::Args),
    /// Run as a daemon: collect flows, infer hosts, keep the inventory, reload rules live, and
    /// serve the HTTP API.
    Serve(Box<serve::Args>),
    /// Reproducible performance figures.
    Bench(bench::Args),
}

/// Output of diagnostics.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DiagFormat {
    /// rustc-style text with snippets.
    Text,
    /// One JSON object per line.
    Json,
}

/// Rule selection shared by commands.
#[derive(clap::Args)]
pub struct RuleArgs {
    /// A rule file or a pack directory (repeatable); added to the bundled packs.
    #[arg(long = "rules", short = 'r', value_name = "PATH")]
    pub rules: Vec<PathBuf>,
    /// Do not load the bundled packs.
    #[arg(long)]
    pub no_default_rules: bool,
    /// Also load every pack installed in this directory (`flowprint pack install`).
    #[arg(long, value_name = "DIR")]
    pub packs_dir: Option<PathBuf>,
    /// Local overrides: disable rules or change their confidence (docs/packs.md).
    #[arg(long, value_name = "FILE")]
    pub overrides: Option<PathBuf>,
}

impl RuleArgs {
    /// The rules these arguments select.
    pub fn selection(&self) -> Selection {
        Selection {
            embedded: !self.no_default_rules,
            paths: self.rules.clone(),
            packs_dirs: self.packs_dir.iter().cloned().collect(),
            overrides: self.overrides.clone(),
        }
    }

    /// Reads and compiles the selected rules (`flowprint::sources`): a path, file or
    /// overrides file that cannot be read is an error diagnostic (FP0019) reported with the
    /// others, and the rules that could be read compile.
    pub fn compile(&self) -> Compiled {
        let mut c = Compiler::new();
        c.add_sources(&Sources::read(&self.selection()));
        c.compile()
    }
}

/// Prints diagnostics to stderr (text) or stdout (JSON lines).
pub fn print_diagnostics(compiled: &Compiled, format: DiagFormat) -> std::io::Result<()> {
    match format {
        DiagFormat::Text => {
            let mut err = std::io::stderr().lock();
            for d in &compiled.diagnostics {
                write!(err, "{}", d.render(&compiled.sources))?;
            }
        }
        DiagFormat::Json => {
            let mut out = std::io::stdout().lock();
            for d in &compiled.diagnostics {
                writeln!(out, "{}", d.to_json(&compiled.sources))?;
            }
        }
    }
    Ok(())
}

/// Totals of [`read_inputs`].
#[derive(Debug, Default)]
pub struct InputTotals {
    /// Flows read.
    pub flows: u64,
    /// Malformed records skipped.
    pub skipped: u64,
    /// Whether an input could not be read, or not to its end (exit code 2).
    pub unreadable: bool,
    /// Inputs that could not be opened, or stopped before their end.
    pub failed: usize,
    /// Inputs after expanding directories.
    pub inputs: usize,
}

/// How many malformed records of one input are printed before the rest are only counted.
const MAX_REPORTED_ERRORS: u64 = 20;

/// Reads every input (directories expanded, `-` is stdin), passing flows to `on_flow`; prints
/// the first malformed records of each input and counts the rest; an unreadable input is
/// reported and the others are still read. An input that fails midway is reported with where
/// it stopped (byte offset; line for text formats) and what it gave before; those flows count
/// and are used.
pub fn read_inputs(
    inputs: &[String],
    format: flowprint::flow::ingest::InputFormat,
    on_flow: &mut dyn FnMut(flowprint::flow::Flow),
) -> anyhow::Result<InputTotals> {
    use flowprint::flow::ingest::{expand_inputs, open_input, read_flows};
    let (inputs, skipped) = expand_inputs(inputs)?;
    for s in &skipped {
        eprintln!("warning: {} not read: {}", s.path.display(), s.reason);
    }
    let mut totals = InputTotals {
        inputs: inputs.len(),
        ..Default::default()
    };
    for input in &inputs {
        let shown = flowprint::text::printable(input);
        let reader = match open_input(input) {
            Ok(r) => r,
            Err(e) => {
                let e = e.to_string();
                eprintln!("flowprint: cannot read {}", flowprint::text::printable(&e));
                totals.unreadable = true;
                totals.failed += 1;
                continue;
            }
        };
        let mut reported = 0u64;
        let result = read_flows(reader, input, format, on_flow, &mut |err| {
            reported += 1;
            if reported <= MAX_REPORTED_ERRORS {
                eprintln!("warning: skipped {err}");
            }
        });
        match result {
            Ok(stats) => {
                totals.flows += stats.flows;
                totals.skipped += stats.skipped;
                if stats.skipped > MAX_REPORTED_ERRORS {
                    eprintln!(
                        "warning: {shown}: {} more malformed records not shown",
                        stats.skipped - MAX_REPORTED_ERRORS
                    );
                }
            }
            Err(failure) => {
                let stats = &failure.stats;
                totals.flows += stats.flows;
                totals.skipped += stats.skipped;
                totals.unreadable = true;
                totals.failed += 1;
                let line = if stats.lines > 0 {
                    format!(", line {}", stats.lines)
                } else {
                    String::new()
                };
                eprintln!(
                    "flowprint: cannot read {shown} to its end: stopped at byte {}{line} after \
                     {} flow(s) and {} malformed record(s) (the flows are used): {failure}",
                    failure.offset, stats.flows, stats.skipped
                );
            }
        }
    }
    Ok(totals)
}

/// Flows per batch handed from [`ReadAhead`]'s reading thread to its caller.
const AHEAD_BATCH: usize = 1024;
/// Batches in flight between the two threads: at most 64 × 1,024 flows (about 9 MiB) are read
/// ahead of the caller; the reading thread waits beyond.
const AHEAD_BATCHES: usize = 64;

/// [`read_inputs`] on a thread of its own: inputs are opened, decoded and batched while the
/// caller compiles its rules and then applies the batches, so that on two cores decoding costs
/// no wall time beside applying. The flows arrive in the inputs' order, the messages about the
/// inputs are the same (printed by the reading thread as it meets them), and the memory read
/// ahead is bounded ([`AHEAD_BATCHES`] batches).
pub struct ReadAhead {
    batches: std::sync::mpsc::Receiver<Vec<flowprint::flow::Flow>>,
    spare: std::sync::mpsc::SyncSender<Vec<flowprint::flow::Flow>>,
    reader: std::thread::JoinHandle<anyhow::Result<InputTotals>>,
}

impl ReadAhead {
    /// Starts reading `inputs` (an error only when the thread cannot be started).
    pub fn start(
        inputs: Vec<String>,
        format: flowprint::flow::ingest::InputFormat,
    ) -> anyhow::Result<Self> {
        use std::sync::mpsc::{TryRecvError, sync_channel};
        let (full_tx, batches) = sync_channel::<Vec<flowprint::flow::Flow>>(AHEAD_BATCHES);
        // Emptied batches come back to be filled again (one more than can be in flight).
        let (spare, spare_rx) = sync_channel::<Vec<flowprint::flow::Flow>>(AHEAD_BATCHES + 1);
        let reader = std::thread::Builder::new()
            .name("flowprint-read".into())
            .spawn(move || {
                let fresh = || Vec::with_capacity(AHEAD_BATCH);
                let mut batch = fresh();
                let mut gone = false;
                let totals = read_inputs(&inputs, format, &mut |flow| {
                    if gone {
                        return;
                    }
                    batch.push(flow);
                    if batch.len() == AHEAD_BATCH {
                        let next = match spare_rx.try_recv() {
                            Ok(v) => v,
                            Err(TryRecvError::Empty | TryRecvError::Disconnected) => fresh(),
                        };
                        // The caller stopped taking batches (it failed): read no further.
                        gone = full_tx.send(std::mem::replace(&mut batch, next)).is_err();
                    }
                })?;
                if !batch.is_empty() && !gone {
                    let _ = full_tx.send(batch);
                }
                Ok(totals)
            })
            .map_err(|e| anyhow::anyhow!("cannot start the thread reading the inputs: {e}"))?;
        Ok(ReadAhead {
            batches,
            spare,
            reader,
        })
    }

    /// Hands every batch to `on_batch`, in order, and returns the totals of the reading.
    pub fn for_each(
        self,
        on_batch: &mut dyn FnMut(&[flowprint::flow::Flow]),
    ) -> anyhow::Result<InputTotals> {
        let ReadAhead {
            batches,
            spare,
            reader,
        } = self;
        for mut batch in batches.iter() {
            on_batch(&batch);
            batch.clear();
            let _ = spare.try_send(batch);
        }
        match reader.join() {
            Ok(totals) => totals,
            Err(_) => anyhow::bail!("the thread reading the inputs failed"),
        }
    }
}

/// Whether any diagnostic is an error.
pub fn has_errors(compiled: &Compiled) -> bool {
    compiled
        .diagnostics
        .iter()
        .any(|d| d.severity() == Severity::Error)
}

/// Whether an error chain ends in a broken pipe (stdout closed by `head` and the like).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
                .is_some_and(|k| k == std::io::ErrorKind::BrokenPipe)
    })
}

/// Parses arguments and runs the command; returns the exit code.
pub fn run() -> anyhow::Result<i32> {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(a) => check::run(a),
        Command::Analyze(a) => analyze::run(a),
        Command::Hosts(a) => hosts::run(a),
        Command::Evaluate(a) => evaluate::run(*a),
        Command::Dns(a) => dns::run(a),
        Command::Flows(a) => flows::run(a),
        Command::Collect(a) => collect::run(a),
        Command::Serve(a) => serve::run(*a),
        Command::Pack(a) => pack::run(a),
        Command::Bench(a) => bench::run(a),
    }
}
