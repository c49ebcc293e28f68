//! Where the collector's flows go, and the collector's loop on the daemon's main thread.
//!
//! [`Intake`] hands each decoded flow to the local workers (the dispatcher, bounded queues,
//! drops counted) or, collector role, to the fleet's bus through the [`Outbox`] (sharded by
//! host, every batch confirmed or retried). [`collect`] runs the collector until the stop flag
//! is set, copying its counters to the daemon after every round; [`drain`] stops intake, decodes
//! what the sockets still hold, sends every partial batch and gives refused batches their
//! remaining retries (at most [`RETRY_WAIT`]) before the workers are stopped.

use super::outbox::Outbox;
use super::pipeline::{Counters, Dispatcher};
use super::{Daemon, ServeError, config::ServeConfig, random_bytes};
use crate::collect::{Collector, CollectorStats};
use crate::eval::LocalNets;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long refused batches keep being retried at shutdown.
pub const RETRY_WAIT: Duration = Duration::from_secs(10);

/// Where the collector's flows go: the local workers, or (collector role) the fleet's bus.
pub(super) struct Intake<'a> {
    dispatcher: Dispatcher,
    outbox: Option<Outbox>,
    counters: &'a Counters,
}

impl<'a> Intake<'a> {
    /// The intake of `config`'s role: collector role (`fleet.publish`) connects to the bus and
    /// publishes; otherwise the flows go to `dispatcher`.
    pub(super) fn new(
        config: &ServeConfig,
        dispatcher: Dispatcher,
        counters: &'a Counters,
    ) -> Result<Intake<'a>, ServeError> {
        let outbox = match &config.fleet.publish {
            Some(url) => {
                let bus = crate::fleet::Bus::connect(url, config.fleet.bus())?;
                let id: [u8; 16] = random_bytes()?;
                let publisher = crate::fleet::Publisher::new(
                    if config.local_nets.is_empty() {
                        LocalNets::default()
                    } else {
                        LocalNets::new(config.local_nets.clone())
                    },
                    config.fleet.shards,
                    id,
                );
                tracing::info!(
                    url,
                    shards = config.fleet.shards,
                    "publishing flows to the fleet"
                );
                Some(Outbox::new(bus, publisher, config.fleet.confirm_wait.0))
            }
            None => None,
        };
        Ok(Intake {
            dispatcher,
            outbox,
            counters,
        })
    }

    fn push(&mut self, flow: crate::flow::Flow) {
        match self.outbox.as_mut() {
            Some(o) => {
                self.counters.received.fetch_add(1, Ordering::Relaxed);
                o.push(flow);
            }
            None => self.dispatcher.push(flow),
        }
    }

    /// Sends every partial batch: to the workers, or published (and counted).
    fn flush(&mut self) {
        self.dispatcher.flush();
        if let Some(o) = self.outbox.as_mut() {
            o.flush(self.counters);
        }
    }
}

fn set_stats(daemon: &Daemon, stats: CollectorStats) {
    *daemon
        .collector
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = stats;
}

fn on_warning(w: String) {
    tracing::warn!("{w}");
}

/// Runs the collector on this thread until `stop` is set, in rounds of 50 ms; after each, the
/// partial batches are sent and the collector's counters copied to the daemon. Worker role
/// (no sockets): waits for `stop`.
pub(super) fn collect(
    collector: &mut Collector,
    intake: &mut Intake<'_>,
    daemon: &Daemon,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        if collector.listeners().is_empty() {
            // Worker role: nothing to collect here.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        collector.run(
            Some(Instant::now() + Duration::from_millis(50)),
            &mut |f| intake.push(f),
            &mut on_warning,
        );
        intake.flush();
        set_stats(daemon, collector.stats());
    }
}

/// The first step of the shutdown: stops intake, decodes what is left, sends it (collector
/// role: refused batches get their remaining retries, at most [`RETRY_WAIT`]), copies the
/// collector's last counters. Returns the dispatcher: dropping it lets the workers finish.
pub(super) fn drain(collector: Collector, mut intake: Intake<'_>, daemon: &Daemon) -> Dispatcher {
    collector.stop_flag().store(true, Ordering::Relaxed);
    let stats = collector.shutdown(&mut |f| intake.push(f), &mut on_warning);
    intake.flush();
    // Collector role: refused batches get their remaining retries before the exit.
    let t = Instant::now();
    while intake.outbox.as_ref().is_some_and(Outbox::retrying) && t.elapsed() < RETRY_WAIT {
        std::thread::sleep(Duration::from_millis(200));
        intake.flush();
    }
    set_stats(daemon, stats);
    intake.dispatcher
}
