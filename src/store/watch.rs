//! Reloads a [`RuleStore`] when its files change.
//!
//! The rule directories are watched with `notify` at directory level (a file's parent
//! directory for a single rule file), so that editors' write-a-temporary-then-rename saves are
//! seen. Only changes count — creations, modifications, removals and renames of `*.rules` files,
//! `pack.yaml` and directories; reads (including the store's own) do not. Changes are debounced:
//! the reload runs once the files have been quiet for the debounce time (or, during an endless
//! stream of changes, at least every 10 debounce periods), so a burst of saves gives one reload
//! of the state after the burst. A polling watcher replaces inotify on file systems without it
//! (network and some container mounts), and when inotify cannot be had (no instance or watch
//! left). Reloads run on the watcher's own thread, one at a time; a reload whose files are
//! unchanged is a no-op.
//!
//! A watched directory can go away and come back (deleted and recreated, renamed aside and
//! replaced, a link switched to another directory): an inotify watch follows the directory it
//! was put on, not its name. So the parent of every watched directory is watched too, and every
//! [`CHECK_EVERY`] each watched directory's identity (device, inode) is compared with the one
//! watched; a directory that changed is watched again and a reload follows, a missing one is
//! reported in [`WatchStatus`] (the daemon's `/health` says `degraded`) until it is back.

use super::{ReloadReport, RuleStore};
use notify::{EventKind, RecursiveMode, Watcher as _};
use serde::Serialize;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often the watched directories' identities are checked.
pub const CHECK_EVERY: Duration = Duration::from_millis(200);
/// The polling interval used when inotify cannot be had.
pub const FALLBACK_POLL: Duration = Duration::from_secs(2);

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

/// One watched directory, as `/health` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RootStatus {
    /// The directory.
    pub path: PathBuf,
    /// Whether changes in it are seen now.
    pub watching: bool,
    /// Why not.
    pub error: Option<String>,
}

/// What the watcher is doing, shared with the daemon.
#[derive(Debug, Default)]
pub struct WatchStatus {
    roots: Mutex<Vec<RootStatus>>,
    /// `polling` or `inotify`, and why polling when it was not asked for.
    mode: Mutex<String>,
    /// Directories watched again after they changed or came back.
    pub rewatches: AtomicU64,
    /// Errors of the watcher (events lost, watches refused).
    pub errors: AtomicU64,
    /// Set to have every directory watched again (SIGHUP).
    rewatch: AtomicBool,
}

impl WatchStatus {
    /// The watched directories.
    pub fn roots(&self) -> Vec<RootStatus> {
        self.roots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether every directory is watched.
    pub fn all_watching(&self) -> bool {
        self.roots().iter().all(|r| r.watching)
    }

    /// `inotify`, `polling`, or `polling (...)` after a fallback.
    pub fn mode(&self) -> String {
        self.mode
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Asks the watcher to watch every directory again.
    pub fn rewatch(&self) {
        self.rewatch.store(true, Ordering::Relaxed);
    }
}

/// A running watcher; dropping it stops watching.
pub struct Watcher {
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// The directories watched.
    pub watched: Vec<PathBuf>,
    /// What it is doing.
    pub status: Arc<WatchStatus>,
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

/// A directory to watch: a source (`primary`) or the parent of one.
struct Target {
    path: PathBuf,
    mode: RecursiveMode,
    primary: bool,
    /// (device, inode) of the directory when its watch was put.
    id: Option<(u64, u64)>,
    watching: bool,
    /// An event said the directory itself went (removed, renamed).
    lost: bool,
    error: Option<String>,
}

fn dir_id(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

/// The directories to watch for the store's sources: each source directory (recursively),
/// each single file's directory, and the parents of those.
fn targets(store: &RuleStore) -> Vec<Target> {
    let sc = store.config();
    let sc = &sc.sources;
    let mut sources: Vec<PathBuf> = sc.paths.clone();
    sources.extend(sc.packs_dirs.iter().cloned());
    sources.extend(sc.overrides.iter().cloned());
    let mut dirs: Vec<(PathBuf, RecursiveMode)> = Vec::new();
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let pack_dirs: Vec<PathBuf> = sc.packs_dirs.iter().map(|d| abs(d)).collect();
    for p in &sources {
        let p = abs(p);
        // A packs directory that does not exist yet is a directory to come.
        if p.is_dir() || (pack_dirs.contains(&p) && !p.exists()) {
            dirs.push((p, RecursiveMode::Recursive));
        } else {
            let parent = p
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("/"));
            dirs.push((parent, RecursiveMode::NonRecursive));
        }
    }
    dirs.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then((a.1 == RecursiveMode::NonRecursive).cmp(&(b.1 == RecursiveMode::NonRecursive)))
    });
    dirs.dedup_by(|a, b| a.0 == b.0);
    let covered = |p: &Path| {
        dirs.iter()
            .any(|(d, m)| d == p || (*m == RecursiveMode::Recursive && p.starts_with(d)))
    };
    let mut parents: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|(d, _)| d.parent().map(Path::to_path_buf))
        .filter(|p| !covered(p))
        .collect();
    parents.sort();
    parents.dedup();
    let target = |path: PathBuf, mode, primary| Target {
        path,
        mode,
        primary,
        id: None,
        watching: false,
        lost: false,
        error: None,
    };
    dirs.into_iter()
        .map(|(p, m)| target(p, m, true))
        .chain(
            parents
                .into_iter()
                .map(|p| target(p, RecursiveMode::NonRecursive, false)),
        )
        .collect()
}

type Events = notify::Result<notify::Event>;

fn new_watcher(
    tx: Sender<Events>,
    poll: Option<Duration>,
) -> notify::Result<Box<dyn notify::Watcher + Send>> {
    Ok(match poll {
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
    })
}

/// Whether a watch error means inotify itself is exhausted (then polling takes over).
fn inotify_exhausted(e: &notify::Error) -> bool {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => true,
        notify::ErrorKind::Io(io) => matches!(io.raw_os_error(), Some(24 | 28)), // EMFILE, ENOSPC
        _ => false,
    }
}

/// The watcher thread's state.
struct Watching {
    watcher: Box<dyn notify::Watcher + Send>,
    tx: Sender<Events>,
    polling: Option<Duration>,
    targets: Vec<Target>,
    status: Arc<WatchStatus>,
}

impl Watching {
    /// Watches again every target whose directory changed, came back or went; true when one
    /// was watched again (changes may have been missed: reload).
    fn check(&mut self, force: bool) -> bool {
        let mut again = false;
        let mut fallback: Option<String> = None;
        for t in &mut self.targets {
            let id = dir_id(&t.path);
            if t.watching && id.is_some() && id == t.id && !t.lost && !force {
                continue;
            }
            if t.watching {
                let _ = self.watcher.unwatch(&t.path);
                t.watching = false;
                if t.primary {
                    again = true;
                }
            }
            t.lost = false;
            let Some(id) = id else {
                t.id = None;
                t.error = Some("missing (watched again when it is back)".into());
                continue;
            };
            match self.watcher.watch(&t.path, t.mode) {
                Ok(()) => {
                    if t.id.is_some() || t.error.is_some() {
                        self.status.rewatches.fetch_add(1, Ordering::Relaxed);
                        if t.primary {
                            tracing::info!(dir = %t.path.display(), "rules directory watched again");
                        }
                    }
                    t.watching = true;
                    t.id = Some(id);
                    t.error = None;
                    if t.primary {
                        again = true;
                    }
                }
                Err(e) => {
                    self.status.errors.fetch_add(1, Ordering::Relaxed);
                    if self.polling.is_none() && inotify_exhausted(&e) {
                        fallback = Some(e.to_string());
                    }
                    t.error = Some(e.to_string());
                }
            }
        }
        if let Some(why) = fallback {
            self.fall_back(&why);
            return self.check(true) || again;
        }
        self.publish();
        again
    }

    /// Replaces inotify with polling.
    fn fall_back(&mut self, why: &str) {
        match new_watcher(self.tx.clone(), Some(FALLBACK_POLL)) {
            Ok(w) => {
                tracing::warn!(
                    "inotify unavailable ({why}): polling the rules every {} s instead",
                    FALLBACK_POLL.as_secs()
                );
                self.watcher = w;
                self.polling = Some(FALLBACK_POLL);
                for t in &mut self.targets {
                    t.watching = false;
                }
                *self
                    .status
                    .mode
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) =
                    format!("polling (inotify unavailable: {why})");
            }
            Err(e) => tracing::error!("cannot poll the rules either: {e}"),
        }
    }

    fn publish(&self) {
        *self
            .status
            .roots
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = self
            .targets
            .iter()
            .filter(|t| t.primary)
            .map(|t| RootStatus {
                path: t.path.clone(),
                watching: t.watching,
                error: t.error.clone(),
            })
            .collect();
    }

    /// Notes events about the targets themselves; whether the event is about the rules (in
    /// a source directory, not a sibling in a parent).
    fn note(&mut self, event: &notify::Event) -> bool {
        let mut inside = false;
        for p in &event.paths {
            for t in &mut self.targets {
                if p == &t.path
                    && matches!(
                        event.kind,
                        EventKind::Remove(_)
                            | EventKind::Create(_)
                            | EventKind::Modify(notify::event::ModifyKind::Name(_))
                    )
                {
                    t.lost = true;
                }
            }
            inside |= self.targets.iter().any(|t| {
                t.primary
                    && match t.mode {
                        RecursiveMode::Recursive => p.starts_with(&t.path),
                        RecursiveMode::NonRecursive => {
                            p.parent() == Some(t.path.as_path()) || p == &t.path
                        }
                    }
            });
        }
        inside
    }
}

/// A watcher's error (events may have been lost; the rules are looked at again).
#[derive(Debug, thiserror::Error)]
#[error("watching the rules: {0}")]
pub struct WatchError(#[from] pub notify::Error);

/// Watches the store's rule paths and reloads on changes, passing each reload's report (and
/// the watcher's errors) to `on_report`.
pub fn spawn(
    store: Arc<RuleStore>,
    config: WatchConfig,
    on_report: impl Fn(Result<ReloadReport, WatchError>) + Send + 'static,
) -> notify::Result<Watcher> {
    let (tx, rx) = channel::<Events>();
    let status = Arc::new(WatchStatus::default());
    let (watcher, polling) = match new_watcher(tx.clone(), config.poll) {
        Ok(w) => (w, config.poll),
        Err(e) if config.poll.is_none() => {
            tracing::warn!(
                "inotify unavailable ({e}): polling the rules every {} s instead",
                FALLBACK_POLL.as_secs()
            );
            *status.mode.lock().unwrap_or_else(PoisonError::into_inner) =
                format!("polling (inotify unavailable: {e})");
            (
                new_watcher(tx.clone(), Some(FALLBACK_POLL))?,
                Some(FALLBACK_POLL),
            )
        }
        Err(e) => return Err(e),
    };
    {
        let mut mode = status.mode.lock().unwrap_or_else(PoisonError::into_inner);
        if mode.is_empty() {
            *mode = if polling.is_some() {
                "polling"
            } else {
                "inotify"
            }
            .into();
        }
    }
    let mut w = Watching {
        watcher,
        tx,
        polling,
        targets: targets(&store),
        status: status.clone(),
    };
    w.check(false);
    let watched: Vec<PathBuf> = w
        .targets
        .iter()
        .filter(|t| t.primary)
        .map(|t| t.path.clone())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("rule-watch".into())
        .spawn(move || run(w, rx, store, config.debounce, stop2, on_report))
        .map_err(notify::Error::io)?;
    Ok(Watcher {
        thread: Some(thread),
        stop,
        watched,
        status,
    })
}

fn run(
    mut w: Watching,
    rx: Receiver<Events>,
    store: Arc<RuleStore>,
    debounce: Duration,
    stop: Arc<AtomicBool>,
    on_report: impl Fn(Result<ReloadReport, WatchError>),
) {
    // First and last relevant change not yet reloaded.
    let mut pending: Option<(Instant, Instant)> = None;
    let mut checked = Instant::now();
    let changed = |pending: &mut Option<(Instant, Instant)>| {
        let now = Instant::now();
        *pending = Some((pending.map_or(now, |(first, _)| first), now));
    };
    while !stop.load(Ordering::Relaxed) {
        let wait = match pending {
            Some((_, last)) => debounce.saturating_sub(last.elapsed()),
            None => CHECK_EVERY,
        };
        match rx.recv_timeout(wait.clamp(Duration::from_millis(1), CHECK_EVERY)) {
            Ok(Ok(event)) => {
                if w.note(&event) && relevant(&event) {
                    changed(&mut pending);
                }
            }
            Ok(Err(e)) => {
                w.status.errors.fetch_add(1, Ordering::Relaxed);
                // Events may have been lost (a queue overflow): look again.
                changed(&mut pending);
                on_report(Err(WatchError(e)));
            }
            Err(RecvTimeoutError::Timeout) => {
                store.release_retired();
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let force = w.status.rewatch.swap(false, Ordering::Relaxed);
        let lost = w.targets.iter().any(|t| t.lost);
        if force || lost || checked.elapsed() >= CHECK_EVERY {
            checked = Instant::now();
            if w.check(force) {
                changed(&mut pending);
            }
        }
        if let Some((first, last)) = pending
            && (last.elapsed() >= debounce || first.elapsed() >= debounce * 10)
        {
            pending = None;
            on_report(Ok(store.reload("watch")));
        }
    }
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
                sources: crate::sources::Selection {
                    paths: vec![pack.clone()],
                    ..Default::default()
                },
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

#[cfg(test)]
mod rewatch_tests {
    use super::*;
    use crate::store::StoreConfig;

    fn rule(family: &str) -> String {
        format!(r#"rule a {{ when peer.port == 80 then os.family = "{family}" confidence 0.5 }}"#)
    }

    fn family(store: &RuleStore) -> String {
        let snap = store.current();
        snap.ruleset
            .rules()
            .first()
            .map(|r| format!("{:?}", r.conclusions))
            .unwrap_or_default()
    }

    /// Writes a file as editors save: a temporary file renamed over it (never half-written).
    fn save(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    fn wait(what: &str, mut f: impl FnMut() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "{what}: not within 15 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The rules directory deleted and recreated, then renamed aside and replaced: the new
    /// directory is watched, an edit in it is reloaded, and the status says when it is gone.
    fn run(poll: Option<Duration>, tag: &str) {
        let d = std::env::temp_dir().join(format!("fp-rewatch-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let pack = d.join("mine");
        std::fs::create_dir_all(&pack).unwrap();
        std::fs::write(pack.join("a.rules"), rule("One")).unwrap();
        let store = Arc::new(
            RuleStore::open(StoreConfig {
                sources: crate::sources::Selection {
                    paths: vec![pack.clone()],
                    ..Default::default()
                },
                state_dir: None,
            })
            .unwrap(),
        );
        let w = spawn(
            store.clone(),
            WatchConfig {
                debounce: Duration::from_millis(50),
                poll,
            },
            |_| {},
        )
        .unwrap();
        assert!(w.status.all_watching());
        std::fs::remove_dir_all(&pack).unwrap();
        wait("the directory reported missing", || {
            !w.status.all_watching()
        });
        std::fs::create_dir_all(&pack).unwrap();
        wait("the new directory watched", || w.status.all_watching());
        save(&pack.join("a.rules"), &rule("Two"));
        wait("the edit in the new directory reloaded", || {
            family(&store).contains("Two")
        });
        // Renamed aside, another one renamed in its place (a deployment's swap).
        let next = d.join("next");
        std::fs::create_dir_all(&next).unwrap();
        std::fs::write(next.join("a.rules"), rule("Three")).unwrap();
        std::fs::rename(&pack, d.join("old")).unwrap();
        std::fs::rename(&next, &pack).unwrap();
        wait("the swapped-in directory loaded", || {
            family(&store).contains("Three")
        });
        save(&pack.join("a.rules"), &rule("Four"));
        wait("an edit after the swap reloaded", || {
            family(&store).contains("Four")
        });
        // An edit in the directory renamed aside is not the rules any more.
        save(&d.join("old/a.rules"), &rule("Stale"));
        std::thread::sleep(Duration::from_millis(400));
        assert!(family(&store).contains("Four"));
        assert!(w.status.rewatches.load(Ordering::Relaxed) >= 2);
        drop(w);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn inotify_watches_a_recreated_directory() {
        run(None, "inotify");
    }

    #[test]
    fn polling_watches_a_recreated_directory() {
        run(Some(Duration::from_millis(100)), "poll");
    }
}
