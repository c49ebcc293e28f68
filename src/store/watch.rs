//! Reloads a [`RuleStore`] when its files change.
//!
//! The rule directories are watched with `notify` at directory level (a file's parent
//! directory for a single rule file), so that editors' write-a-temporary-then-rename saves are
//! seen; events are debounced (`notify-debouncer-mini`): a burst of saves gives one reload of
//! the state after the burst. A polling watcher replaces inotify on file systems without it
//! (network and some container mounts). Reloads run on the watcher's own thread, one at a time;
//! a reload whose files are unchanged is a no-op.

use super::{ReloadReport, RuleStore};
use notify_debouncer_mini::notify::{self, RecursiveMode};
use notify_debouncer_mini::{Config, DebounceEventResult, new_debouncer_opt};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

/// How to watch.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Quiet time after the last change before reloading.
    pub debounce: Duration,
    /// Poll the files at this interval instead of using inotify.
    pub poll: Option<Duration>,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            debounce: Duration::from_millis(250),
            poll: None,
        }
    }
}

/// A running watcher; dropping it stops watching (after the thread sees the stop flag).
pub struct Watcher {
    _debouncer: Box<dyn std::any::Any + Send>,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// The directories watched.
    pub watched: Vec<PathBuf>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Watches the store's rule paths and reloads on changes, passing each reload's report (and
/// watcher errors, as text) to `on_report`.
pub fn spawn(
    store: Arc<RuleStore>,
    config: WatchConfig,
    on_report: impl Fn(Result<ReloadReport, String>) + Send + 'static,
) -> notify::Result<Watcher> {
    let (tx, rx) = channel::<DebounceEventResult>();
    let dc = Config::default().with_timeout(config.debounce);
    let mut targets: Vec<(PathBuf, RecursiveMode)> = Vec::new();
    for p in &store.config().paths {
        if p.is_dir() {
            targets.push((p.clone(), RecursiveMode::Recursive));
        } else if let Some(parent) = p.parent() {
            let parent = if parent.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                parent.to_path_buf()
            };
            targets.push((parent, RecursiveMode::NonRecursive));
        }
    }
    targets.sort();
    targets.dedup_by(|a, b| a.0 == b.0);
    let watched: Vec<PathBuf> = targets.iter().map(|(p, _)| p.clone()).collect();
    let debouncer: Box<dyn std::any::Any + Send> = match config.poll {
        Some(interval) => {
            let mut d = new_debouncer_opt::<_, notify::PollWatcher>(
                dc.with_notify_config(
                    notify::Config::default()
                        .with_poll_interval(interval)
                        // mtimes can be as coarse as a second: compare contents too
                        .with_compare_contents(true),
                ),
                tx,
            )?;
            for (p, mode) in &targets {
                d.watcher().watch(p, *mode)?;
            }
            Box::new(d)
        }
        None => {
            let mut d = new_debouncer_opt::<_, notify::RecommendedWatcher>(dc, tx)?;
            for (p, mode) in &targets {
                d.watcher().watch(p, *mode)?;
            }
            Box::new(d)
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("rule-watch".into())
        .spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(Ok(events)) => {
                        if events.is_empty() {
                            continue;
                        }
                        // Whatever else the burst held is part of this reload.
                        while rx.try_recv().is_ok() {}
                        on_report(Ok(store.reload("watch")));
                    }
                    Ok(Err(e)) => on_report(Err(format!("watching the rules: {e}"))),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        })
        .map_err(|e| notify::Error::io(e))?;
    Ok(Watcher {
        _debouncer: debouncer,
        thread: Some(thread),
        stop,
        watched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;
    use std::sync::Mutex;

    fn run(poll: Option<Duration>, tag: &str) {
        let d = std::env::temp_dir().join(format!("fp-watch-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let pack = d.join("mine");
        std::fs::create_dir_all(&pack).unwrap();
        let rule = |port: u16| {
            format!(r#"rule a {{ when peer.port == {port} then os.family = "X" confidence 0.5 }}"#)
        };
        std::fs::write(pack.join("a.rules"), rule(80)).unwrap();
        let store = Arc::new(
            RuleStore::open(StoreConfig {
                embedded: false,
                paths: vec![pack.clone()],
                state_dir: None,
            })
            .unwrap(),
        );
        let reports = Arc::new(Mutex::new(Vec::new()));
        let r2 = reports.clone();
        let _w = spawn(
            store.clone(),
            WatchConfig {
                debounce: Duration::from_millis(100),
                poll,
            },
            move |r| r2.lock().unwrap().push(r),
        )
        .unwrap();
        let wait_for_generation = |g: u64| {
            let t = std::time::Instant::now();
            while store.current().generation < g {
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "no reload to generation {g}: {:?}",
                    reports.lock().unwrap()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        // An editor-style save: write a temporary file, rename it over the rule file.
        std::fs::write(pack.join(".a.rules.swp"), rule(8080)).unwrap();
        std::fs::rename(pack.join(".a.rules.swp"), pack.join("a.rules")).unwrap();
        wait_for_generation(2);
        // Many quick saves end in one consistent state.
        for port in 1..=20 {
            std::fs::write(pack.join("a.rules"), rule(port)).unwrap();
        }
        wait_for_generation(3);
        std::thread::sleep(Duration::from_millis(600));
        let text = format!("{:?}", store.current().ruleset.rules()[0].cond);
        assert!(text.contains("20"), "{text}");
        // A broken save is reported and the rules stay.
        std::fs::write(pack.join("a.rules"), "rule a { when").unwrap();
        let t = std::time::Instant::now();
        loop {
            if reports
                .lock()
                .unwrap()
                .iter()
                .any(|r| matches!(r, Ok(r) if !r.ok))
            {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "no failed reload");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(store.current().ruleset.len(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn inotify_watch_reloads_after_edits() {
        run(None, "inotify");
    }

    #[test]
    fn polling_watch_reloads_after_edits() {
        run(Some(Duration::from_millis(100)), "poll");
    }
}
