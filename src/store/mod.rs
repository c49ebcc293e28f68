//! The rule store: loads packs, compiles the whole set aside, swaps it in at once, and keeps the
//! last good set on disk.
//!
//! - A [`RuleStore`] holds the running [`Snapshot`] behind an [`ArcSwap`]: readers (evaluator
//!   workers) take one `Arc<Snapshot>` per batch of flows, so every flow is evaluated against
//!   exactly one complete ruleset, and a reload never waits for them nor they for it.
//! - [`RuleStore::reload`] reads every source again, compiles the complete new set, and swaps
//!   it in only if it has no errors; otherwise the running set stays and the report says why.
//!   A reload whose sources are byte-for-byte those running is a no-op. Files that change while
//!   they are read (an editor's save in progress) make the reload retry, so a half-written
//!   state is not taken for a complete one.
//! - Every good set is written to `last-good-rules.json` in the state directory (write to a
//!   temporary file, then rename). [`RuleStore::open`] boots from it when the rules on disk do
//!   not compile, and says so: [`Snapshot::from_last_good`].
//! - Each reload reports the rules added, removed and modified (with their versions).
//!
//! Watching the directories (inotify or polling) is [`watch`]'s job; it calls `reload`.

pub mod watch;

use crate::compiler::Compiler;
use crate::diagnostic::Severity;
use crate::ruleset::Ruleset;
use crate::sources::{Selection, Sources};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Where the rules come from.
#[derive(Debug, Clone, Default)]
pub struct StoreConfig {
    /// The rules: bundled packs, paths, installed packs, overrides (as `analyze` selects them).
    pub sources: Selection,
    /// Where the last good set is kept; `None`: nowhere (no boot from the last good set).
    pub state_dir: Option<PathBuf>,
}

pub use crate::sources::PackInfo;

/// A compiled, running set of rules.
#[derive(Debug)]
pub struct Snapshot {
    /// 1 for the set booted with, +1 for every set swapped in.
    pub generation: u64,
    /// When it was compiled, ms since the epoch.
    pub loaded_at_ms: i64,
    /// The rules (shared with the scanners that apply them).
    pub ruleset: std::sync::Arc<Ruleset>,
    /// Its packs.
    pub packs: Vec<PackInfo>,
    /// Warnings the compiler gave (rendered).
    pub warnings: Vec<String>,
    /// Booted from the last good set because the rules on disk did not compile.
    pub from_last_good: bool,
    digest: u64,
    /// Per rule id: (hash of its condition, hash of its whole definition).
    fingerprints: HashMap<String, (u64, u64)>,
}

impl Snapshot {
    /// Where each rule of `old` went in this set: the new position when a rule of the same id
    /// with the same condition exists, `None` otherwise (see
    /// [`crate::infer::HostTable::remap_rules`]).
    pub fn remap_from(&self, old: &Snapshot) -> Vec<Option<u32>> {
        let pos: HashMap<&str, u32> = self
            .ruleset
            .rules()
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.as_str(), i as u32))
            .collect();
        old.ruleset
            .rules()
            .iter()
            .map(|r| {
                let same_cond = match (old.fingerprints.get(&r.id), self.fingerprints.get(&r.id)) {
                    (Some(a), Some(b)) => a.0 == b.0,
                    _ => false,
                };
                if same_cond {
                    pos.get(r.id.as_str()).copied()
                } else {
                    None
                }
            })
            .collect()
    }
}

/// What a reload did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ReloadReport {
    /// What asked for it: `boot`, `watch`, `signal`, `api`...
    pub trigger: String,
    /// When it finished, RFC 3339.
    pub at: String,
    /// Whether the new set is running (or nothing had changed).
    pub ok: bool,
    /// The sources were those already running: nothing was compiled or swapped.
    pub unchanged: bool,
    /// The generation running after the reload.
    pub generation: u64,
    /// Reading and compiling, ms.
    pub compile_ms: f64,
    /// Rules in the running set after the reload.
    pub rules: usize,
    /// Rule ids added, with versions (`pack/id 1.2`).
    pub added: Vec<String>,
    /// Rule ids removed.
    pub removed: Vec<String>,
    /// Rule ids whose definition changed (`pack/id 1.1 -> 1.2`).
    pub modified: Vec<String>,
    /// Packs whose version changed (`name 1.0 -> 1.1`), added or removed.
    pub packs_changed: Vec<String>,
    /// Errors of a failed reload.
    pub errors: usize,
    /// The diagnostics, rendered as on the command line.
    pub diagnostics: Vec<String>,
    /// Sources that could not be read (I/O errors: too many open files, a file removed
    /// while read...): a failure that retrying can cure, unlike a compile error.
    pub unreadable: usize,
}

/// How the store booted.
#[derive(Debug, Clone, Serialize, Default)]
pub struct BootStatus {
    /// Booted from the last good set (the rules on disk had errors).
    pub from_last_good: bool,
    /// When that last good set had been saved, RFC 3339.
    pub last_good_saved_at: Option<String>,
    /// The errors the rules on disk had at boot, rendered.
    pub disk_diagnostics: Vec<String>,
}

/// The store errors that stop a boot.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The rules do not compile and there is no usable last good set.
    #[error(
        "the rules do not compile ({errors} errors) and there is no last good set to boot with{}:\n{}",
        .last_good.as_ref().map(|r| format!(" ({r})")).unwrap_or_default(),
        .diagnostics.join("")
    )]
    NoGoodRules {
        /// Errors.
        errors: usize,
        /// Rendered diagnostics.
        diagnostics: Vec<String>,
        /// Why the last good set could not be used.
        last_good: Option<LastGoodError>,
    },
}

/// Why the last good set in the state directory cannot be booted with.
#[derive(Debug, thiserror::Error)]
pub enum LastGoodError {
    /// The store has no state directory.
    #[error("no state directory")]
    NoStateDir,
    /// The file cannot be read (none was ever saved, most often).
    #[error("{source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: crate::limits::ReadError,
    },
    /// The file is not a last good set.
    #[error("{}: {source}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// Its rules do not compile with this version.
    #[error("the last good set does not compile with this version either: {first}")]
    DoesNotCompile {
        /// The first of its diagnostics.
        first: String,
    },
}

/// The running rules, and how they change (see the module docs).
pub struct RuleStore {
    config: StoreConfig,
    current: ArcSwap<Snapshot>,
    /// Reloads run one at a time.
    reloading: Mutex<()>,
    last: Mutex<ReloadReport>,
    boot: BootStatus,
    reloads: AtomicU64,
    failed: AtomicU64,
    /// Replaced snapshots, kept until no reader holds them so that a large ruleset is freed on
    /// the reloading thread, never on an evaluator's hot path.
    retired: Mutex<Vec<Arc<Snapshot>>>,
}

impl std::fmt::Debug for RuleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleStore")
            .field("config", &self.config)
            .field("generation", &self.current.load().generation)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> i64 {
    crate::dns::resolve::now_ms()
}

const LAST_GOOD: &str = "last-good-rules.json";

#[derive(Serialize, Deserialize)]
struct LastGood {
    saved_at: String,
    sources: Sources,
}

fn fingerprints(rules: &Ruleset) -> HashMap<String, (u64, u64)> {
    rules
        .rules()
        .iter()
        .map(|r| {
            let mut c = rustc_hash::FxHasher::default();
            format!("{:?}{:?}", r.cond, r.stateful).hash(&mut c);
            let mut d = rustc_hash::FxHasher::default();
            format!(
                "{:?}{:?}{:?}{:?}{:?}{:?}",
                r.conclusions, r.title, r.version, r.status, r.references, r.tags
            )
            .hash(&mut d);
            let cond = c.finish();
            (r.id.clone(), (cond, cond ^ d.finish().rotate_left(1)))
        })
        .collect()
}

/// Compiles `sources`: the snapshot, or the error count and rendered diagnostics.
fn compile(sources: &Sources, generation: u64) -> Result<Snapshot, (usize, Vec<String>)> {
    let mut c = Compiler::new();
    c.add_sources(sources);
    let compiled = c.compile();
    let errors = compiled.errors();
    let mut rendered: Vec<String> = Vec::new();
    let mut warnings = Vec::new();
    for d in &compiled.diagnostics {
        let text = d.render(&compiled.sources);
        if d.severity() == Severity::Error {
            rendered.push(text);
        } else {
            warnings.push(text);
        }
    }
    if errors > 0 {
        return Err((errors, rendered));
    }
    let mut packs = sources.packs.clone();
    for p in &mut packs {
        let prefix = format!("{}/", p.name);
        p.rules = compiled
            .ruleset
            .rules()
            .iter()
            .filter(|r| r.id.starts_with(&prefix))
            .count();
    }
    Ok(Snapshot {
        generation,
        loaded_at_ms: now_ms(),
        fingerprints: fingerprints(&compiled.ruleset),
        ruleset: compiled.ruleset,
        packs,
        warnings,
        from_last_good: false,
        digest: sources.digest(),
    })
}

fn versioned(rules: &Ruleset, id: &str) -> String {
    match rules
        .rules()
        .iter()
        .find(|r| r.id == id)
        .and_then(|r| r.version.as_deref())
    {
        Some(v) => format!("{id} {v}"),
        None => id.to_string(),
    }
}

fn diff(old: &Snapshot, new: &Snapshot, report: &mut ReloadReport) {
    let version = |s: &Snapshot, id: &str| {
        s.ruleset
            .rules()
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.version.clone())
    };
    for r in new.ruleset.rules() {
        match old.fingerprints.get(&r.id) {
            None => report.added.push(versioned(&new.ruleset, &r.id)),
            Some(fp) if *fp != new.fingerprints[&r.id] => {
                report
                    .modified
                    .push(match (version(old, &r.id), version(new, &r.id)) {
                        (Some(a), Some(b)) if a != b => format!("{} {a} -> {b}", r.id),
                        _ => r.id.clone(),
                    })
            }
            Some(_) => {}
        }
    }
    for r in old.ruleset.rules() {
        if !new.fingerprints.contains_key(&r.id) {
            report.removed.push(versioned(&old.ruleset, &r.id));
        }
    }
    for p in &new.packs {
        match old.packs.iter().find(|o| o.name == p.name) {
            None => report.packs_changed.push(format!(
                "{} {} added",
                p.name,
                p.version.as_deref().unwrap_or("-")
            )),
            Some(o) if o.version != p.version => report.packs_changed.push(format!(
                "{} {} -> {}",
                p.name,
                o.version.as_deref().unwrap_or("-"),
                p.version.as_deref().unwrap_or("-")
            )),
            Some(_) => {}
        }
    }
    for o in &old.packs {
        if !new.packs.iter().any(|p| p.name == o.name) {
            report.packs_changed.push(format!("{} removed", o.name));
        }
    }
}

impl RuleStore {
    /// Loads and compiles the rules; when they do not compile, boots from the last good set
    /// in the state directory (and says so in [`RuleStore::boot_status`]).
    pub fn open(config: StoreConfig) -> Result<RuleStore, StoreError> {
        let started = Instant::now();
        let sources = Sources::read_stable(&config.sources);
        let (snapshot, boot, report) = match compile(&sources, 1) {
            Ok(s) => {
                let report = ReloadReport {
                    trigger: "boot".into(),
                    ok: true,
                    generation: 1,
                    rules: s.ruleset.len(),
                    ..Default::default()
                };
                save_last_good(&config, &sources);
                (s, BootStatus::default(), report)
            }
            Err((errors, diagnostics)) => {
                let (last, why) = match load_last_good(&config) {
                    Ok(l) => (Some(l), None),
                    Err(why) => (None, Some(why)),
                };
                let Some(last) = last else {
                    return Err(StoreError::NoGoodRules {
                        errors,
                        diagnostics,
                        last_good: why,
                    });
                };
                match compile(&last.sources, 1) {
                    Ok(mut s) => {
                        s.from_last_good = true;
                        let report = ReloadReport {
                            trigger: "boot".into(),
                            ok: false,
                            generation: 1,
                            rules: s.ruleset.len(),
                            errors,
                            diagnostics: diagnostics.clone(),
                            unreadable: sources.unreadable(),
                            ..Default::default()
                        };
                        let boot = BootStatus {
                            from_last_good: true,
                            last_good_saved_at: Some(last.saved_at),
                            disk_diagnostics: diagnostics,
                        };
                        (s, boot, report)
                    }
                    Err((_, last_diags)) => {
                        return Err(StoreError::NoGoodRules {
                            errors,
                            diagnostics,
                            last_good: Some(LastGoodError::DoesNotCompile {
                                first: last_diags.first().cloned().unwrap_or_default(),
                            }),
                        });
                    }
                }
            }
        };
        let mut report = report;
        report.at = crate::flow::time::format_rfc3339(now_ms());
        report.compile_ms = started.elapsed().as_secs_f64() * 1e3;
        Ok(RuleStore {
            config,
            current: ArcSwap::from_pointee(snapshot),
            reloading: Mutex::new(()),
            last: Mutex::new(report),
            boot,
            reloads: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retired: Mutex::new(Vec::new()),
        })
    }

    /// The running set. Hold the `Arc` for one batch of flows, then take it again.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// How the store booted.
    pub fn boot_status(&self) -> &BootStatus {
        &self.boot
    }

    /// The running set and the report of the reload that swapped it in (or of the last
    /// reload since, which kept it), read together.
    pub fn running(&self) -> (Arc<Snapshot>, ReloadReport) {
        let last = lock(&self.last);
        (self.current.load_full(), last.clone())
    }

    /// The last reload's report (the boot's, before any reload).
    pub fn last_report(&self) -> ReloadReport {
        lock(&self.last).clone()
    }

    /// Reloads attempted, and of those failed.
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.reloads.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Frees the replaced snapshots no reader holds any more; returns how many are still held.
    /// Called by every reload, and periodically by the daemon.
    pub fn release_retired(&self) -> usize {
        let mut r = lock(&self.retired);
        r.retain(|s| Arc::strong_count(s) > 1);
        r.len()
    }

    /// Reads every source again and compiles the complete set aside; swaps it in only when it
    /// has no errors. `trigger` says who asked (for the report and the log).
    pub fn reload(&self, trigger: &str) -> ReloadReport {
        let _one = lock(&self.reloading);
        self.release_retired();
        let started = Instant::now();
        self.reloads.fetch_add(1, Ordering::Relaxed);
        let old = self.current();
        let sources = Sources::read_stable(&self.config.sources);
        let mut report = ReloadReport {
            trigger: trigger.to_string(),
            ..Default::default()
        };
        let mut swap_in = None;
        if sources.unreadable() == 0 && sources.digest() == old.digest && !old.from_last_good {
            report.ok = true;
            report.unchanged = true;
            report.generation = old.generation;
            report.rules = old.ruleset.len();
        } else {
            match compile(&sources, old.generation + 1) {
                Ok(new) => {
                    diff(&old, &new, &mut report);
                    report.ok = true;
                    report.generation = new.generation;
                    report.rules = new.ruleset.len();
                    report.diagnostics = new.warnings.clone();
                    save_last_good(&self.config, &sources);
                    swap_in = Some(new);
                }
                Err((errors, diagnostics)) => {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    report.unreadable = sources.unreadable();
                    report.ok = false;
                    report.errors = errors;
                    report.diagnostics = diagnostics;
                    report.generation = old.generation;
                    report.rules = old.ruleset.len();
                }
            }
        }
        report.compile_ms = started.elapsed().as_secs_f64() * 1e3;
        report.at = crate::flow::time::format_rfc3339(now_ms());
        // The set and its report change together: whoever reads both under this lock
        // ([`RuleStore::running`]) never sees a new set with the report of the one before.
        let mut last = lock(&self.last);
        if let Some(new) = swap_in {
            let replaced = self.current.swap(Arc::new(new));
            lock(&self.retired).push(replaced);
        }
        *last = report.clone();
        report
    }
}

fn save_last_good(config: &StoreConfig, sources: &Sources) {
    let Some(dir) = &config.state_dir else { return };
    let last = LastGood {
        saved_at: crate::flow::time::format_rfc3339(now_ms()),
        sources: sources.clone(),
    };
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!("{LAST_GOOD}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(&last)?)?;
        std::fs::rename(&tmp, dir.join(LAST_GOOD))
    };
    if let Err(e) = write() {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot save the last good rules");
    }
}

/// The largest last good set read back: the rules of a whole deployment, as text.
const MAX_LAST_GOOD: u64 = 1 << 30;

fn load_last_good(config: &StoreConfig) -> Result<LastGood, LastGoodError> {
    let Some(dir) = &config.state_dir else {
        return Err(LastGoodError::NoStateDir);
    };
    let path = dir.join(LAST_GOOD);
    let bytes = crate::limits::read_bounded(&path, MAX_LAST_GOOD, "the last good set").map_err(
        |source| LastGoodError::Read {
            path: path.clone(),
            source,
        },
    )?;
    serde_json::from_slice(&bytes).map_err(|source| LastGoodError::Invalid { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "fp-store-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const RULE_A: &str =
        r#"rule a { version "1" when peer.port == 80 then os.family = "X" confidence 0.5 }"#;
    const RULE_B: &str = r#"rule b { when peer.port == 443 then os.family = "Y" confidence 0.5 }"#;

    #[test]
    fn reload_swaps_only_good_sets_and_reports_changes() {
        let d = dir("swap");
        let pack = d.join("mine");
        std::fs::create_dir_all(&pack).unwrap();
        std::fs::write(pack.join("a.rules"), RULE_A).unwrap();
        let store = RuleStore::open(StoreConfig {
            sources: Selection {
                paths: vec![pack.clone()],
                ..Default::default()
            },
            state_dir: Some(d.join("state")),
        })
        .unwrap();
        assert_eq!(store.current().generation, 1);
        assert_eq!(store.current().ruleset.len(), 1);

        let r = store.reload("test");
        assert!(r.ok && r.unchanged, "{r:?}");
        assert_eq!(store.current().generation, 1);

        std::fs::write(pack.join("b.rules"), RULE_B).unwrap();
        std::fs::write(pack.join("a.rules"), RULE_A.replace("\"1\"", "\"2\"")).unwrap();
        let r = store.reload("test");
        assert!(r.ok && !r.unchanged, "{r:?}");
        assert_eq!(r.added, vec!["mine/b"]);
        assert_eq!(r.modified, vec!["mine/a 1 -> 2"]);
        assert_eq!(store.current().generation, 2);

        std::fs::write(pack.join("b.rules"), "rule b { when peer.port == }").unwrap();
        let r = store.reload("test");
        assert!(!r.ok && r.errors > 0, "{r:?}");
        assert!(r.diagnostics.iter().any(|d| d.contains("b.rules")), "{r:?}");
        let cur = store.current();
        assert_eq!((cur.generation, cur.ruleset.len()), (2, 2), "old set stays");
        assert_eq!(store.reload_counts(), (3, 1));

        std::fs::remove_file(pack.join("b.rules")).unwrap();
        let r = store.reload("test");
        assert!(r.ok, "{r:?}");
        assert_eq!(r.removed, vec!["mine/b"]);
    }

    #[test]
    fn a_broken_pack_at_boot_falls_back_to_the_last_good_set() {
        let d = dir("boot");
        let pack = d.join("mine");
        std::fs::create_dir_all(&pack).unwrap();
        std::fs::write(pack.join("a.rules"), RULE_A).unwrap();
        let config = StoreConfig {
            sources: Selection {
                paths: vec![pack.clone()],
                ..Default::default()
            },
            state_dir: Some(d.join("state")),
        };
        drop(RuleStore::open(config.clone()).unwrap());
        std::fs::write(pack.join("a.rules"), "rule a { when }").unwrap();
        let store = RuleStore::open(config.clone()).unwrap();
        assert!(store.boot_status().from_last_good);
        assert!(store.current().from_last_good);
        assert_eq!(store.current().ruleset.rules()[0].id, "mine/a");
        // Fixing the file brings the disk's set in even though its text equals the last good.
        std::fs::write(pack.join("a.rules"), RULE_A).unwrap();
        let r = store.reload("test");
        assert!(r.ok && !r.unchanged, "{r:?}");
        assert!(!store.current().from_last_good);

        // No last good set and broken rules: no boot.
        std::fs::write(pack.join("a.rules"), "rule a { when }").unwrap();
        let err = RuleStore::open(StoreConfig {
            sources: Selection {
                paths: vec![pack],
                ..Default::default()
            },
            state_dir: Some(d.join("empty2")),
        })
        .unwrap_err();
        assert!(err.to_string().contains("no last good set"), "{err}");
    }

    #[test]
    fn remap_keeps_rules_by_id_and_drops_changed_conditions() {
        let d = dir("remap");
        let pack = d.join("p");
        std::fs::create_dir_all(&pack).unwrap();
        std::fs::write(pack.join("x.rules"), format!("{RULE_A}\n{RULE_B}")).unwrap();
        let store = RuleStore::open(StoreConfig {
            sources: Selection {
                paths: vec![pack.clone()],
                ..Default::default()
            },
            state_dir: None,
        })
        .unwrap();
        let old = store.current();
        // b first now (moved), a's condition changed.
        std::fs::write(
            pack.join("x.rules"),
            format!("{RULE_B}\n{}", RULE_A.replace("== 80", "== 8080")),
        )
        .unwrap();
        assert!(store.reload("t").ok);
        let new = store.current();
        assert_eq!(new.remap_from(&old), vec![None, Some(0)]);
    }
}
