//! `flowprint bench`: reproducible throughput figures.

mod dns;
mod flows;
mod rules;
mod serve;

use flowprint::bench::{generate_flows, generate_rules};
use flowprint::compiler::Compiler;
use flowprint::eval::{Evaluator, LocalNets};
use flowprint::scan::Scanner;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `bench`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Evaluation throughput with passive DNS names, with and without a background refresher
    /// re-resolving `--names` names against `--server` (a local DNS server serving
    /// `host<i>.example`, see scripts/bench-dns.sh).
    DnsRefresh {
        /// Names the refresher keeps fresh (`host0.example` ...).
        #[arg(long, default_value_t = 10_000)]
        names: usize,
        /// The DNS server (loopback) that answers them.
        #[arg(long)]
        server: std::net::SocketAddr,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Shortest TTL the refresher honours (the server's TTL should match).
        #[arg(long, default_value_t = 10)]
        min_ttl: u64,
    },
    /// Reload of a large ruleset through the rule store while another thread evaluates flows:
    /// compile time of each reload, and the per-flow evaluation latency (p50/p99/max) during
    /// reloads against the latency without.
    Reload {
        /// Rules in the set.
        #[arg(long, default_value_t = 100_000)]
        rules: usize,
        /// Reloads (each a real change: the whole set is compiled and swapped).
        #[arg(long, default_value_t = 5)]
        reloads: usize,
    },
    /// Address+time → names lookups on a passive DNS map of N pairs.
    Dns {
        /// (address, name) pairs in the map.
        #[arg(long, default_value_t = 1_000_000)]
        pairs: u32,
    },
    /// The whole path on one core, shaped like one daemon worker: decode IPFIX from memory into
    /// batches of 512 flows, apply each batch through the scanner (the bundled rules) under one
    /// read of the DNS map, and write the inventory (SQLite) in one batch at the end.
    Pipeline {
        /// Flows in total.
        #[arg(long, default_value_t = 10_000_000)]
        flows: usize,
        /// Distinct local hosts.
        #[arg(long, default_value_t = 100_000)]
        hosts: u32,
        /// Inventory to write (a SQLite file, replaced); default: a temporary file.
        #[arg(long)]
        db: Option<String>,
    },
    /// Memory of the host table: feeds flows of N hosts (two each, one a connectivity check
    /// that the bundled rules recognise) and reports the resident memory per host.
    Hosts {
        /// Hosts.
        #[arg(long, default_value_t = 1_000_000)]
        hosts: u32,
    },
    /// Send generated NetFlow v9 datagrams (30 records each) over loopback to an in-process
    /// collector at a fixed rate and report what arrived and what was dropped.
    Collect {
        /// Target rate, flows per second.
        #[arg(long, default_value_t = 500_000)]
        rate: u64,
        /// Duration of the send.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Also send every datagram to 127.0.0.1:PORT (e.g. an nfcapd, to compare in the same run).
        #[arg(long, value_name = "PORT")]
        also: Option<u16>,
    },
    /// The fleet's serialization cost (batch encoding and decoding per flow, bytes per flow)
    /// and, with --nats, the collector role's publish rate: generated flows are published
    /// to the stream in batches, as `serve --publish` does (scripts/bench-fleet.sh then times
    /// workers consuming them).
    Fleet {
        /// Flows.
        #[arg(long, default_value_t = 2_000_000)]
        flows: usize,
        /// Passes of the codec measurement; the median is reported.
        #[arg(long, default_value_t = 5)]
        passes: usize,
        /// Publish the flows to this NATS JetStream server.
        #[arg(long, value_name = "nats://HOST:PORT")]
        nats: Option<String>,
        /// Shards of the fleet.
        #[arg(long, default_value_t = 16)]
        shards: u32,
    },
    /// The hosts web page over N hosts: the summaries (computed at most every 2 s for the
    /// pages), then the first page filtered, sorted and rendered; its size.
    Web {
        /// Hosts.
        #[arg(long, default_value_t = 100_000)]
        hosts: u32,
        /// Renders of the page; the median is reported.
        #[arg(long, default_value_t = 21)]
        passes: usize,
    },
    /// Decode generated NetFlow v9 and IPFIX datagrams (30 records each) on one core.
    Decode {
        /// Datagrams per pass.
        #[arg(long, default_value_t = 20_000)]
        datagrams: usize,
        /// Passes; the median is reported.
        #[arg(long, default_value_t = 7)]
        passes: usize,
    },
    /// A catalogue of generated transfer rules on one mirror: flows applied through the
    /// per-flow path on one core, a tenth of them downloads from the mirror split over
    /// several records (each host downloads files of the catalogue).
    Transfers {
        /// Number of generated transfer rules.
        #[arg(long, default_value_t = 100_000)]
        rules: usize,
        /// Number of flows.
        #[arg(long, default_value_t = 1_000_000)]
        flows: usize,
        /// Passes over the flows (a new inventory each); the median pass is reported.
        #[arg(long, default_value_t = 5)]
        passes: usize,
    },
    /// Parse + compile a generated pack, then evaluate generated flows on one core.
    Eval {
        /// Number of generated rules.
        #[arg(long, default_value_t = 10_000)]
        rules: usize,
        /// Number of generated flows (evaluated repeatedly).
        #[arg(long, default_value_t = 1_000_000)]
        flows: usize,
        /// Passes over the flows; the median pass is reported.
        #[arg(long, default_value_t = 7)]
        passes: usize,
    },
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `bench`.
pub fn run(args: Args) -> anyhow::Result<i32> {
    match args.what {
        What::DnsRefresh {
            names,
            server,
            seconds,
            min_ttl,
        } => dns::refresh(names, server, seconds, min_ttl)?,
        What::Dns { pairs } => dns::lookup(pairs),
        What::Reload { rules, reloads } => rules::reload(rules, reloads)?,
        What::Pipeline { flows, hosts, db } => flows::pipeline(flows, hosts, db)?,
        What::Web { hosts, passes } => serve::web(hosts, passes)?,
        What::Fleet {
            flows,
            passes,
            nats,
            shards,
        } => serve::fleet(flows, passes, nats, shards)?,
        What::Hosts { hosts } => flows::host_memory(hosts)?,
        What::Collect {
            rate,
            seconds,
            also,
        } => flows::collect(rate, seconds, also)?,
        What::Decode { datagrams, passes } => flows::decode(datagrams, passes),
        What::Transfers {
            rules,
            flows,
            passes,
        } => rules::transfers(rules, flows, passes)?,
        What::Eval {
            rules,
            flows,
            passes,
        } => rules::eval(rules, flows, passes)?,
    }
    Ok(0)
}

/// The bundled packs, compiled.
pub(super) fn bundled() -> anyhow::Result<flowprint::compiler::Compiled> {
    let mut c = Compiler::new();
    c.add_sources(&flowprint::sources::Sources::embedded());
    let compiled = c.compile();
    anyhow::ensure!(compiled.errors() == 0, "bundled rules do not compile");
    Ok(compiled)
}

pub(super) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<u64>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}
