//! `flowprint serve`: the daemon beside the flow collectors.
//!
//! ```text
//!  UDP sockets ─▶ collector (decode) ─▶ dispatcher ─▶ bounded queue ─▶ worker 0 (shard 0 hosts)
//!                                                   └─▶ bounded queue ─▶ worker N (shard N hosts)
//!  rule files ─▶ watcher / SIGHUP / POST /reload ─▶ RuleStore (compile aside, swap) ─▶ workers
//!  DNS refresher ─▶ DnsMap ─▶ workers        flusher ─▶ inventory database (SQLite/PostgreSQL)
//!  HTTP API (axum): /health /hosts /hosts/{addr} /rules /reload /metrics
//! ```
//!
//! Every stage is bounded; what a full queue drops is counted (`/metrics`). SIGINT/SIGTERM stop
//! intake, drain the queues, write the inventory and exit. SIGHUP reloads the rules.
//!
//! The parts: `state` (what they share, [`Daemon`], and the queries over it), `boot`
//! (configuration, rules, inventory, workers, sockets), `intake` (the collector's loop and
//! where its flows go), `lifecycle` (the other threads and the order they stop in),
//! `flush` (writing the inventory), [`summaries`] (every host's summary, computed once for
//! every reader), [`prom`] (metrics), [`api`] and [`web`] (HTTP), [`pipeline`] (the workers),
//! [`fleet`] and [`outbox`] (the fleet's two roles).

pub mod api;
mod boot;
pub mod config;
mod error;
mod flush;
pub mod http;
mod intake;
mod lifecycle;
pub mod member;
pub mod outbox;
pub mod pipeline;
pub mod prom;
pub mod retry;
mod state;
pub mod summaries;
pub mod token;
pub mod web;

use crate::store::{ReloadReport, StoreConfig};
use config::ServeConfig;
pub use error::ServeError;
pub use state::{Daemon, HISTORY_EVERY};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Runs the daemon until SIGINT/SIGTERM (or `stop` is set).
///
/// The steps, each a part of its own: boot (configuration, rules, inventory, workers,
/// sockets); the threads; the collector on this thread until stopped; then the shutdown, in
/// order: intake drained, the workers' queues finished, the background threads stopped (fleet
/// members write and confirm), the inventory written, then the API and the signal thread.
pub fn run(config: ServeConfig, stop: Arc<AtomicBool>) -> Result<(), ServeError> {
    let config = boot::prepare(config)?;
    // Rules first: without good rules there is nothing to run.
    let store = boot::rules(&config)?;
    let boot::Booted {
        daemon,
        dispatcher,
        workers,
        mut collector,
        api_listener,
        infer,
    } = boot::start(&config, store)?;
    let threads = lifecycle::Threads::start(&daemon, api_listener, &stop, infer)?;
    tracing::info!(api = %daemon.api_addr, workers = daemon.shards.len(), "flowprint serve is running");
    // Collector role: flows go to the bus, sharded by host, instead of to the local workers.
    let mut intake = intake::Intake::new(&config, dispatcher, &daemon.counters)?;
    // The collector runs on this thread until stopped.
    intake::collect(&mut collector, &mut intake, &daemon, &stop);
    // Shutdown: stop intake, drain, write.
    let dispatcher = intake::drain(collector, intake, &daemon);
    drop(dispatcher);
    workers.join();
    threads.stop(&daemon);
    Ok(())
}

/// Logs a reload's outcome: what changed, or why it failed.
pub fn log_reload(r: &ReloadReport) {
    if !r.ok {
        tracing::error!(
            trigger = %r.trigger,
            errors = r.errors,
            generation = r.generation,
            "rules reload failed; the running rules stay:\n{}",
            r.diagnostics.join("")
        );
    } else if !r.unchanged {
        tracing::info!(
            trigger = %r.trigger,
            generation = r.generation,
            rules = r.rules,
            compile_ms = format!("{:.1}", r.compile_ms),
            added = ?r.added,
            removed = ?r.removed,
            modified = ?r.modified,
            packs = ?r.packs_changed,
            "rules reloaded"
        );
    } else {
        tracing::debug!(trigger = %r.trigger, "rules unchanged");
    }
}

/// The rule store's configuration of a daemon configuration.
pub fn store_config(config: &ServeConfig) -> StoreConfig {
    StoreConfig {
        sources: crate::sources::Selection {
            embedded: config.rules.embedded,
            paths: config.rules.paths.clone(),
            packs_dirs: config.rules.packs_dir.iter().cloned().collect(),
            overrides: config.rules.overrides.clone(),
        },
        state_dir: Some(config.state_dir.clone()),
    }
}

/// `N` random bytes from the system (member ids, publisher ids, API tokens).
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], ServeError> {
    use std::io::Read;
    let path = std::path::Path::new("/dev/urandom");
    let mut bytes = [0u8; N];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(ServeError::file("random source", path))?;
    Ok(bytes)
}
