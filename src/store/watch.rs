//! Reloads a [`RuleStore`] when its files change.
//!
//! The rule directories are watched with `notify` at directory level (a file's parent
//! directory for a single rule file), so that editors' write-a-temporary-then-rename saves are
//! seen. Only changes count — creations, modifications, removals and renames of `*.rules` files,
//! `pack.yaml` and directories; reads (including the store's own) do not. Changes are debounced:
//! the reload runs once the files have been quiet for the debounce time (or, during an endless
//! stream of changes, at least every 10 debounce periods), so a burst of saves gives one reload
//! of the state after the burst. A polling watcher replaces inotify on file systems without it
//! (network and some container mounts). Reloads run on the watcher's own thread, one at a time;
//! a reload whose files are unchanged is a no-op.

use super::{ReloadReport, RuleStore};
use notify::{EventKind, RecursiveMode, Watcher as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};

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

/// A running watcher; dropping it stops watching.
pub struct Watcher {
    _watcher: Box<dyn notify::Watcher + Send>,
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

/// Whether an event can change the rules: a change (not a read) of a rule file, a pack
/// manifest, or a directory (a pack renamed into place).
fn relevant(event: &notify::Event) -> bool {
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    event.paths.iter().any(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        p.extension().is_some_and(|e| e == "rules")
            || name == "pack.yaml"
            || p.is_dir()
            || !p.exists()
    })
}

/// Watches the store's rule paths and reloads on changes, passing each reload's report (and
/// watcher errors, as text) to `on_report`.
pub fn spawn(
    store: Arc<RuleStore>,
    config: WatchConfig,
    on_report: impl Fn(Result<ReloadReport, String>) + Send + 'static,
) -> notify::Result<Watcher> {
    let (tx, rx) = channel::<notify::Result<notify::Event>>();
    let mut targets: Vec<(PathBuf, RecursiveMode)> = Vec::new();
    let sc = store.config();
    let mut sources: Vec<PathBuf> = sc.paths.clone();
    sources.extend(sc.packs_dirs.iter().filter(|d| d.is_dir()).cloned());
    sources.extend(sc.overrides.iter().cloned());
    for p in &sources {
        if p.is_dir() {
            targets.push((p.clone(), RecursiveMode::Recursive));
        } else {
            let parent = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => Path::new(".").to_path_buf(),
            };
            targets.push((parent, RecursiveMode::NonRecursive));
        }
    }
    targets.sort();
    targets.dedup_by(|a, b| a.0 == b.0);
    let watched: Vec<PathBuf> = targets.iter().map(|(p, _)| p.clone()).collect();
    let mut watcher: Box<dyn notify::Watcher + Send> = match config.poll {
        Some(interval) => Box::new(notify::PollWatcher::new(
            tx,
            notify::Config::default()
                .with_poll_interval(interval)
                // mtimes can be as coarse as a second: compare contents too
                .with_compare_contents(true),
        )?),
        None => Box::new(notify::RecommendedWatcher::new(
            tx,
            notify::Config::default(),
        )?),
    };
    for (p, mode) in &targets {
        watcher.watch(p, *mode)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let debounce = config.debounce;
    let thread = std::thread::Builder::new()
        .name("rule-watch".into())
        .spawn(move || {
            // First and last relevant change not yet reloaded.
            let mut pending: Option<(Instant, Instant)> = None;
            while !stop2.load(Ordering::Relaxed) {
                let wait = match pending {
                    Some((_, last)) => debounce.saturating_sub(last.elapsed()),
                    None => Duration::from_millis(200),
                };
                match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
                    Ok(Ok(event)) => {
                        if relevant(&event) {
                            let now = Instant::now();
                            pending = Some((pending.map_or(now, |(first, _)| first), now));
                        }
                    }
                    Ok(Err(e)) => on_report(Err(format!("watching the rules: {e}"))),
                    Err(RecvTimeoutError::Timeout) => {
                        store.release_retired();
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                if let Some((first, last)) = pending
                    && (last.elapsed() >= debounce || first.elapsed() >= debounce * 10)
                {
                    pending = None;
                    on_report(Ok(store.reload("watch")));
                }
            }
        })
        .map_err(notify::Error::io)?;
    Ok(Watcher {
        _watcher: watcher,
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
                ..Default::default()
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
