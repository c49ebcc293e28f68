//! `flowprint hosts`: query the inventory that `analyze --db` keeps.

use super::analyze::{Format, print_table};
use flowprint::infer::HostSummary;
use flowprint::inventory::{FilterParams, HostFilter, open_existing};
use std::io::Write;

/// Arguments of `hosts`.
#[derive(clap::Args)]
pub struct Args {
    /// The inventory: a SQLite file, or a `postgres://` URL.
    #[arg(long, value_name = "PATH|URL", default_value = "flowprint.db")]
    pub db: String,
    /// Only hosts with this winning label (an OS family, name or version, software, device;
    /// any case). The filters are those of `GET /hosts` and the hosts page (docs/serve.md,
    /// "Host filters"), combined with "and".
    #[arg(long)]
    pub label: Option<String>,
    /// Only hosts whose OS family or OS name is this (any case).
    #[arg(long)]
    pub os: Option<String>,
    /// Only hosts with this software (its name, any case).
    #[arg(long)]
    pub software: Option<String>,
    /// Only hosts in this subnet (CIDR).
    #[arg(long, value_name = "CIDR")]
    pub subnet: Option<String>,
    /// Only hosts where this text is part of the address, an OS, software or device label, or a
    /// rule id of their evidence (any case; the API's `q`).
    #[arg(long)]
    pub text: Option<String>,
    /// Only hosts whose labels named by `--os`, `--software` and `--label` have at least this
    /// confidence (with none of them: their best label).
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
    let filter = HostFilter::parse(&FilterParams {
        q: args.text.clone(),
        os: args.os.clone(),
        software: args.software.clone(),
        label: args.label.clone(),
        subnet: args.subnet.clone(),
        min_confidence: None,
    })?;
    let found = store.query(&HostFilter {
        min_confidence: args.min_confidence,
        ..filter
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
