//! The daemon's threads beside the collector and the workers, and the order they stop in.
//!
//! Started ([`Threads::start`]): signals (SIGHUP reloads and re-watches the rule directories,
//! SIGINT/SIGTERM set the stop flag), the rule watcher, the DNS refresher, the retry of
//! reloads that could not read their files, the flusher ([`super::flush`]), the API (its own
//! tokio runtime), and in the worker role the fleet members and the follower of published
//! packs.
//!
//! Stopped ([`Threads::stop`]), once the collector has drained and the workers have finished
//! their queues: the background threads are told to stop; the fleet members write their
//! shards, confirm what they applied and leave; the pack follower, flusher, retry and refresher
//! are joined; then the last flush writes the inventory; only then does the API stop (it
//! answers until the inventory is written), and the signal thread last.

use super::error::Part;
use super::{Daemon, ServeError, api, boot, flush, http, log_reload, member, random_bytes};
use crate::infer::InferConfig;
use crate::store::watch::{WatchConfig, Watcher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// The API thread and the channel that stops it.
type ApiThread = (
    tokio::sync::oneshot::Sender<()>,
    JoinHandle<std::io::Result<()>>,
);
/// The fleet members and the follower of published packs.
type FleetThreads = (Vec<JoinHandle<()>>, Option<JoinHandle<()>>);

/// The running threads, in the order [`Threads::stop`] needs them.
pub(super) struct Threads {
    /// Tells the background threads to stop.
    bg_stop: Arc<AtomicBool>,
    signals: (signal_hook::iterator::Handle, JoinHandle<()>),
    /// Dropped last: watching ends with the daemon.
    watcher: Option<Watcher>,
    refresh: Option<JoinHandle<()>>,
    retry: JoinHandle<()>,
    flush: JoinHandle<()>,
    api: ApiThread,
    members: Vec<JoinHandle<()>>,
    packs: Option<JoinHandle<()>>,
}

impl Threads {
    /// Starts every thread; `stop` is the daemon's stop flag (set by SIGINT/SIGTERM).
    pub(super) fn start(
        daemon: &Arc<Daemon>,
        api_listener: std::net::TcpListener,
        stop: &Arc<AtomicBool>,
        infer: InferConfig,
    ) -> Result<Threads, ServeError> {
        let bg_stop = Arc::new(AtomicBool::new(false));
        let signals = signals(daemon, stop)?;
        let watcher = watcher(daemon)?;
        let refresh = match &daemon.refresher {
            Some(r) => Some(r.spawn(bg_stop.clone()).part("thread dns-refresh")?),
            None => None,
        };
        let retry = retry(daemon, &bg_stop)?;
        let flush = flush::spawn(daemon, &bg_stop)?;
        let api = api_thread(daemon, api_listener)?;
        let (members, packs) = fleet_members(daemon, infer, &bg_stop)?;
        Ok(Threads {
            bg_stop,
            signals,
            watcher,
            refresh,
            retry,
            flush,
            api,
            members,
            packs,
        })
    }

    /// Stops the threads in the order of the module docs (the collector has drained and the
    /// workers have finished) and writes the inventory one last time.
    pub(super) fn stop(self, daemon: &Daemon) {
        self.bg_stop.store(true, Ordering::Relaxed);
        // Fleet members write, acknowledge and leave.
        for m in self.members {
            let _ = m.join();
        }
        if let Some(t) = self.packs {
            let _ = t.join();
        }
        let _ = self.flush.join();
        let _ = self.retry.join();
        if let Some(t) = self.refresh {
            let _ = t.join();
        }
        match daemon.flush() {
            Ok(n) if daemon.config.inventory.is_some() => {
                tracing::info!(hosts = n, "inventory written");
            }
            Ok(_) => {}
            Err(e) => tracing::error!("writing the inventory: {e}"),
        }
        let (api_stop, api_thread) = self.api;
        let _ = api_stop.send(());
        match api_thread.join() {
            Ok(Err(e)) => tracing::error!("API: {e}"),
            Err(_) => tracing::error!("API thread panicked"),
            Ok(Ok(())) => {}
        }
        let (signals, signal_thread) = self.signals;
        signals.close();
        let _ = signal_thread.join();
        let c = &daemon.counters;
        tracing::info!(
            received = c.received.load(Ordering::Relaxed),
            evaluated = c.evaluated.load(Ordering::Relaxed),
            dropped = c.dropped.load(Ordering::Relaxed),
            "stopped"
        );
        drop(self.watcher);
    }
}

/// SIGHUP: re-watch and reload; SIGINT/SIGTERM: set `stop`.
fn signals(
    daemon: &Arc<Daemon>,
    stop: &Arc<AtomicBool>,
) -> Result<(signal_hook::iterator::Handle, JoinHandle<()>), ServeError> {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .part("signal handler")?;
    let handle = signals.handle();
    let d = daemon.clone();
    let stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == signal_hook::consts::SIGHUP {
                    // Also watch every rules directory again, whatever became of them.
                    if let Some(w) = d.watch.get() {
                        w.rewatch();
                    }
                    d.reload("signal");
                } else {
                    tracing::info!(signal = sig, "stopping");
                    stop.store(true, Ordering::Relaxed);
                }
            }
        })
        .part("starting a thread")?;
    Ok((handle, thread))
}

/// The rule watcher, when `rules.watch` is on and there is something on disk to watch.
fn watcher(daemon: &Arc<Daemon>) -> Result<Option<Watcher>, ServeError> {
    let rules = &daemon.config.rules;
    if !(rules.watch
        && (!rules.paths.is_empty() || rules.packs_dir.is_some() || rules.overrides.is_some()))
    {
        return Ok(None);
    }
    let d = daemon.clone();
    let w = crate::store::watch::spawn(
        daemon.store.clone(),
        WatchConfig {
            debounce: rules.debounce.0,
            poll: rules.poll.0,
        },
        move |r| match r {
            Ok(r) => {
                log_reload(&r);
                d.after_reload(&r);
            }
            Err(e) => tracing::warn!("{e}"),
        },
    )
    .part("rules watcher")?;
    tracing::info!(dirs = ?w.watched, mode = w.status.mode(), "watching the rules");
    let _ = daemon.watch.set(w.status.clone());
    Ok(Some(w))
}

/// Reloads that could not read the files are retried (see [`super::retry`]).
fn retry(daemon: &Arc<Daemon>, stop: &Arc<AtomicBool>) -> Result<JoinHandle<()>, ServeError> {
    let d = daemon.clone();
    let stop = stop.clone();
    std::thread::Builder::new()
        .name("rule-retry".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if d.retry.take_due() {
                    d.reload("retry");
                }
            }
        })
        .part("starting a thread")
}

/// The API on a current-thread tokio runtime of its own, until its stop channel fires.
fn api_thread(
    daemon: &Arc<Daemon>,
    api_listener: std::net::TcpListener,
) -> Result<ApiThread, ServeError> {
    let (api_stop_tx, api_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let d = daemon.clone();
    let thread = std::thread::Builder::new()
        .name("api".into())
        .spawn(move || -> std::io::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(api_listener)?;
                let limits = http::Limits {
                    max_connections: d.config.api.max_connections,
                    header_timeout: d.config.api.header_timeout.0,
                    idle_timeout: d.config.api.idle_timeout.0,
                };
                let stats = d.http.clone();
                http::serve(
                    listener,
                    api::router(d, super::web::routes()),
                    limits,
                    stats,
                    api_stop_rx,
                )
                .await;
                Ok::<(), std::io::Error>(())
            })
        })
        .part("starting a thread")?;
    Ok((api_stop_tx, thread))
}

/// Worker role (`fleet.consume`): the fleet members (one per worker thread) and, with
/// `fleet.packs`, the follower of published packs.
fn fleet_members(
    daemon: &Arc<Daemon>,
    infer: InferConfig,
    stop: &Arc<AtomicBool>,
) -> Result<FleetThreads, ServeError> {
    let config = &daemon.config;
    let Some(url) = &config.fleet.consume else {
        return Ok((Vec::new(), None));
    };
    let id = match &config.fleet.id {
        Some(id) => id.clone(),
        None => default_member_id()?,
    };
    let set = config.fleet.owned_set()?;
    let local = Arc::new(boot::local_nets(config));
    let members = member::start(
        daemon.clone(),
        url,
        config.fleet.bus(),
        &id,
        &set,
        config.workers,
        local,
        infer,
        stop.clone(),
    )?;
    tracing::info!(url, id, shards = %set, threads = config.workers, "fleet worker");
    let packs = if config.fleet.packs {
        Some(member::follow_packs(daemon.clone(), url, stop.clone())?)
    } else {
        None
    };
    Ok((members, packs))
}

/// `<hostname>-<pid>-<random>`: unique per process, readable in the lease bucket.
fn default_member_id() -> Result<String, ServeError> {
    let host =
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "worker".into());
    let host: String = host
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let r: [u8; 3] = random_bytes()?;
    Ok(format!(
        "{host}-{}-{:02x}{:02x}{:02x}",
        std::process::id(),
        r[0],
        r[1],
        r[2]
    ))
}
