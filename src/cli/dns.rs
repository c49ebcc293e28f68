//! `flowprint dns`: passive DNS — extract answers from captures, look addresses up — and
//! active resolution of the rules' names.

use super::{DiagFormat, RuleArgs, has_errors, print_diagnostics};
use flowprint::dns::DnsMap;
use flowprint::dns::passive::{load_into, read_capture_answers};
use flowprint::flow::time::{format_rfc3339, parse_timestamp};
use flowprint::text::printable;
use std::io::Write;

/// Adds the DNS map stored in an inventory to `map`.
pub fn load_stored(
    map: &mut DnsMap,
    store: &mut dyn flowprint::inventory::Store,
) -> anyhow::Result<()> {
    flowprint::inventory::StoredDnsPair::restore(&store.load_dns()?, map);
    Ok(())
}

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
        #[arg(long = "dns-log", value_name = "FILE", required_unless_present = "db")]
        dns_logs: Vec<String>,
        /// The inventory whose stored DNS map to read (SQLite path or postgres:// URL), as
        /// `analyze --db` left it; with `--dns-log` too, both are looked up.
        #[arg(long, value_name = "DB")]
        db: Option<String>,
    },
    /// Resolve the names the rules test (A and AAAA, now) and print `name<TAB>address<TAB>TTL`
    /// lines; failures go to stderr and do not change the exit code.
    Resolve(ResolveArgs),
}

/// Arguments of `dns resolve`.
#[derive(clap::Args)]
struct ResolveArgs {
    #[command(flatten)]
    rules: RuleArgs,
    /// A DNS server to ask, `IP` or `IP:PORT` (repeatable); default: the servers of
    /// /etc/resolv.conf.
    #[arg(long = "server", value_name = "IP:PORT", value_parser = parse_server)]
    servers: Vec<std::net::SocketAddr>,
    /// How long to wait for each answer (`2s`, `500ms`).
    #[arg(long, default_value = "2s", value_parser = parse_timeout)]
    timeout: std::time::Duration,
    /// How many times a query is sent before the name counts as failed.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=10))]
    attempts: u16,
    /// Most names resolved at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
}

/// `IP:PORT`, `[IPv6]:PORT`, or a bare address (port 53).
fn parse_server(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(a) = s.parse::<std::net::SocketAddr>() {
        return Ok(a);
    }
    s.parse::<std::net::IpAddr>()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
        .map_err(|_| format!("`{s}` is not an address or address:port"))
}

fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    match s.parse::<flowprint::flow::time::MaybeDur>() {
        Ok(flowprint::flow::time::MaybeDur(Some(d))) if !d.is_zero() => Ok(d),
        _ => Err("the timeout must be a positive duration (`2s`, `500ms`)".into()),
    }
}

/// Runs `dns resolve`: diagnostics of the rules first, then the names.
fn resolve(args: ResolveArgs, out: &mut impl Write) -> anyhow::Result<i32> {
    use flowprint::dns::resolve::{
        AnswerKind, HickoryResolver, ResolverSettings, resolve_all_answers,
    };
    let compiled = args.rules.compile();
    print_diagnostics(&compiled, DiagFormat::Text)?;
    let names = compiled.ruleset.domain_names();
    let settings = ResolverSettings {
        timeout: args.timeout,
        attempts: usize::from(args.attempts),
    };
    let resolver = if args.servers.is_empty() {
        HickoryResolver::from_system(settings)
    } else {
        HickoryResolver::with_servers(&args.servers, settings)
    }
    .map_err(|e| anyhow::anyhow!("cannot set up the resolver: {e}"))?;
    let servers: Vec<String> = resolver.servers().iter().map(|s| s.to_string()).collect();
    let started = std::time::Instant::now();
    let results = resolve_all_answers(&resolver, &names, usize::from(args.concurrency));
    let (mut with_addrs, mut addrs, mut empty, mut failed) = (0, 0, 0, 0);
    for (name, result) in &results {
        match result {
            Ok(answer) if answer.addrs.is_empty() => {
                empty += 1;
                let why = if answer.kind == AnswerKind::NxDomain {
                    "no such name (NXDOMAIN)"
                } else {
                    "no address"
                };
                eprintln!("{}: {why}", printable(name));
            }
            Ok(answer) => {
                with_addrs += 1;
                for (addr, ttl) in &answer.addrs {
                    addrs += 1;
                    writeln!(out, "{name}\t{addr}\t{ttl}")?;
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("{}: failed: {}", printable(name), printable(&e.to_string()));
            }
        }
    }
    out.flush()?;
    eprintln!(
        "{} names asked of {} in {:.1} s: {with_addrs} with addresses ({addrs} addresses), \
         {empty} without address, {failed} failed",
        names.len(),
        servers.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(if has_errors(&compiled) { 1 } else { 0 })
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
        eprintln!("{}: {n} DNS answers", printable(p));
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
        What::Resolve(resolve_args) => return resolve(resolve_args, &mut out),
        What::Lookup {
            addr,
            at,
            dns_logs,
            db,
        } => {
            let mut map = load_logs(&dns_logs)?;
            if let Some(spec) = &db {
                // Only read: a mistyped path is an error, never a new empty inventory.
                let mut store = flowprint::inventory::open_existing(spec)?;
                load_stored(&mut map, store.as_mut())?;
            }
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
