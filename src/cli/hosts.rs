//! `flowprint hosts`: query the inventory that `analyze --db` keeps.

use super::analyze::{Format, print_table};
use flowprint::infer::HostSummary;
use flowprint::inventory::{HostQuery, open_existing};
use std::io::Write;

/// Arguments of `hosts`.
#[derive(clap::Args)]
pub struct Args {
    /// The inventory: a SQLite file, or a `postgres://` URL.
    #[arg(long, value_name = "PATH|URL", default_value = "flowprint.db")]
    pub db: String,
    /// Only hosts with this winning label (an OS family or name, software, device; any case).
    #[arg(long)]
    pub label: Option<String>,
    /// Only hosts whose label (the one given with `--label`, or any) has at least this
    /// confidence.
    #[arg(long)]
    pub min_confidence: Option<f64>,
    /// Output format (JSON objects have the shape of `analyze --format json`).
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// Runs `hosts`.
pub fn run(args: Args) -> anyhow::Result<i32> {
    // Only read: a mistyped path is an error, never a new empty inventory.
    let mut store = open_existing(&args.db)?;
    let found = store.query(&HostQuery {
        label: args.label.clone(),
        min_confidence: args.min_confidence,
    })?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.format {
        Format::Json => {
            for v in &found {
                serde_json::to_writer(&mut out, v)?;
                out.write_all(b"\n")?;
            }
        }
        Format::Table => {
            let hosts: Vec<HostSummary> = found
                .into_iter()
                .map(serde_json::from_value)
                .collect::<Result<_, _>>()?;
            print_table(&mut out, &hosts, false)?;
        }
    }
    out.flush()?;
    Ok(0)
}
