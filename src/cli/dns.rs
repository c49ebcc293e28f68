//! `flowprint dns`: passive DNS — extract answers from captures, look addresses up.

use flowprint::dns::DnsMap;
use flowprint::dns::passive::{load_into, read_capture_answers};
use flowprint::flow::time::{format_rfc3339, parse_timestamp};
use std::io::Write;

/// Arguments of `dns`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Print the DNS answers (A/AAAA) found in packet captures as flowprint DNS JSON lines, for
    /// `analyze --dns-log`.
    Extract {
        /// pcap or pcapng files.
        #[arg(required = true)]
        captures: Vec<String>,
    },
    /// Which names did an address answer for (at a time)?
    Lookup {
        /// The address.
        addr: std::net::IpAddr,
        /// The time (RFC 3339); without it, every name ever seen.
        #[arg(long)]
        at: Option<String>,
        /// Passive DNS sources (logs or captures).
        #[arg(long = "dns-log", value_name = "FILE", required = true)]
        dns_logs: Vec<String>,
    },
}

/// Loads passive DNS sources into one map, reporting malformed lines.
pub fn load_logs(paths: &[String]) -> anyhow::Result<DnsMap> {
    let mut map = DnsMap::new();
    for p in paths {
        let mut reported = 0;
        let n = load_into(&mut map, p, &mut |e| {
            reported += 1;
            if reported <= 20 {
                eprintln!("warning: skipped {e}");
            }
        })
        .map_err(|e| anyhow::anyhow!("cannot read DNS log {p}: {e}"))?;
        eprintln!("{p}: {n} DNS answers");
    }
    Ok(map)
}

/// Runs `dns`.
pub fn run(args: Args) -> anyhow::Result<i32> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.what {
        What::Extract { captures } => {
            for c in &captures {
                let reader = flowprint::flow::ingest::open_input(c)?;
                let mut failure = None;
                read_capture_answers(reader, &mut |a| {
                    if failure.is_none()
                        && let Err(e) = writeln!(out, "{}", a.to_json())
                    {
                        failure = Some(e);
                    }
                })?;
                if let Some(e) = failure {
                    return Err(e.into());
                }
            }
        }
        What::Lookup { addr, at, dns_logs } => {
            let map = load_logs(&dns_logs)?;
            let rows = match &at {
                Some(t) => {
                    let ms = parse_timestamp(t)
                        .ok_or_else(|| anyhow::anyhow!("`{t}` is not an RFC 3339 time"))?;
                    map.lookup(addr, ms)
                }
                None => map.history(addr),
            };
            for (name, first, last, source) in rows {
                writeln!(
                    out,
                    "{name}\tfirst {}\tlast {}\t{source:?}",
                    format_rfc3339(first),
                    format_rfc3339(last)
                )?;
            }
        }
    }
    out.flush()?;
    Ok(0)
}
