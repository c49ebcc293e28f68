//! `flowprint collect`: receive NetFlow/IPFIX/sFlow over UDP and print flows as they arrive.

use super::flows::{CSV_HEADER, Format, write_flow};
use flowprint::collect::{Collector, CollectorConfig};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Arguments of `collect`.
#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on, e.g. `0.0.0.0:2055` or `[::]:4739` (repeatable).
    #[arg(long, required = true, value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// Requested socket receive buffer in bytes (the granted size is reported).
    #[arg(long, default_value_t = 32 << 20)]
    pub recv_buffer: usize,
    /// Datagrams queued between the sockets and the decoder; beyond it they are dropped and
    /// counted.
    #[arg(long, default_value_t = 65_536)]
    pub queue: usize,
    /// Stop after this many seconds (default: until SIGINT/SIGTERM).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Count flows without printing them.
    #[arg(long)]
    pub count: bool,
}

/// Runs `collect`.
pub fn run(args: Args) -> anyhow::Result<i32> {
    let config = CollectorConfig {
        listen: args.listen.clone(),
        recv_buffer: args.recv_buffer,
        queue: args.queue,
        ..CollectorConfig::default()
    };
    let mut collector = Collector::bind(&config)?;
    for l in collector.listeners() {
        eprintln!(
            "listening on {} (receive buffer: requested {} KiB, granted {} KiB)",
            l.addr,
            l.requested / 1024,
            l.granted / 1024
        );
    }
    let stop = collector.stop_flag();
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let deadline = args
        .seconds
        .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    if args.format == Format::Csv && !args.count {
        writeln!(out, "{CSV_HEADER}")?;
    }
    let mut write_error: Option<std::io::Error> = None;
    let mut on_flow = |f: flowprint::flow::Flow| {
        if args.count || write_error.is_some() {
            return;
        }
        if let Err(e) = write_flow(&mut out, args.format, &f) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                stop.store(true, Ordering::Relaxed);
            }
            write_error = Some(e);
        }
    };
    let mut on_warning = |w: String| eprintln!("warning: {}", flowprint::text::printable(&w));
    collector.run(deadline, &mut on_flow, &mut on_warning);
    let stats = collector.shutdown(&mut on_flow, &mut on_warning);
    let _ = out.flush();
    eprintln!("{}", serde_json::to_string(&stats)?);
    match write_error {
        Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(0),
    }
}
