//! What the `flowprint pack` commands do: test, lint, build, install, list, new.

use super::integrity::{self, IntegrityError};
use super::{parse_fixtures, run_cases};
use crate::compiler::{Compiled, Compiler};
use crate::diagnostic::Severity;
use crate::sources::Sources;
use crate::sources::manifest::{self, Manifest};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What a pack operation refused, and why.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// A manifest problem.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// An integrity problem.
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    /// The rules do not compile.
    #[error("the pack's rules do not compile ({errors} errors):\n{rendered}")]
    Compile {
        /// Error count.
        errors: usize,
        /// Rendered diagnostics.
        rendered: String,
    },
    /// Fixtures failed.
    #[error("{0} fixture case(s) failed (run `flowprint pack test`)")]
    Tests(usize),
    /// A dependency or engine requirement not met.
    #[error("{0}")]
    Requirement(String),
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PackError + '_ {
    move |source| PackError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Where a pack's context (the packs it depends on) comes from.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The bundled packs.
    pub bundled: bool,
    /// Installed packs.
    pub packs_dir: Option<PathBuf>,
}

/// Compiles a pack with the packs it depends on (bundled or installed) as context. Only the
/// diagnostics of the pack's own files count against it.
pub fn compile_pack(dir: &Path, ctx: &Context) -> Result<(Manifest, Compiled), PackError> {
    let mut own = Sources::default();
    own.add_path(dir);
    let m = match own.manifests.first() {
        Some(source) => source.parsed.clone()?,
        // No `pack.yaml`: the error that says so.
        None => Manifest::read(dir)?,
    };
    let mut c = Compiler::new();
    if ctx.bundled {
        let needed = m.depends.keys().any(|d| {
            crate::embedded::PACK_MANIFESTS
                .iter()
                .any(|(name, _)| name == d)
        });
        if needed {
            c.add_sources(&Sources::embedded());
        }
    }
    if let Some(pd) = &ctx.packs_dir {
        let mut deps = Sources::default();
        for p in crate::sources::installed_packs(pd).map_err(io(pd))? {
            deps.add_path_if(&p, |o| m.depends.contains_key(&o.name) && o.name != m.name);
        }
        c.add_sources(&deps);
    }
    c.add_sources(&own);
    Ok((m, c.compile()))
}

/// Fails when the compiled pack has errors.
pub fn require_clean(compiled: &Compiled) -> Result<(), PackError> {
    let errors: Vec<String> = compiled
        .diagnostics
        .iter()
        .filter(|d| d.severity() == Severity::Error)
        .map(|d| d.render(&compiled.sources))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(PackError::Compile {
            errors: errors.len(),
            rendered: errors.join(""),
        })
    }
}

/// One fixture case's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CaseOutcome {
    /// The fixture file (relative to the pack).
    pub file: String,
    /// The case.
    pub case: String,
    /// Empty when it passed.
    pub failures: Vec<String>,
}

/// The outcome of a pack's tests.
#[derive(Debug, Clone, Serialize, Default)]
pub struct TestReport {
    /// Every case.
    pub cases: Vec<CaseOutcome>,
    /// Rule ids (without the pack prefix) that no case requires to fire.
    pub unexercised: Vec<String>,
    /// Problems with the fixture files themselves.
    pub errors: Vec<String>,
    /// For each case (by index), the rules that fired for its host — for the overlap lint.
    #[serde(skip)]
    pub fired: Vec<BTreeSet<String>>,
}

impl TestReport {
    /// Cases that failed, plus fixture files that could not be read.
    pub fn failed(&self) -> usize {
        self.cases.iter().filter(|c| !c.failures.is_empty()).count() + self.errors.len()
    }
}

/// Runs every fixture of `tests/` against the compiled pack.
pub fn test_pack(dir: &Path, pack: &str, compiled: &Compiled) -> TestReport {
    let mut report = TestReport::default();
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(dir.join("tests"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    fixtures.retain(|p| {
        p.extension().is_some_and(|e| e == "yaml" || e == "yml")
            && p.file_name()
                .is_some_and(|n| crate::sources::loadable_name(&n.to_string_lossy()))
    });
    fixtures.sort();
    let mut covered = BTreeSet::new();
    for f in fixtures {
        let rel = f.strip_prefix(dir).unwrap_or(&f).display().to_string();
        let text = match crate::limits::read_text_bounded(
            &f,
            crate::limits::MAX_YAML_FILE,
            "a fixture file",
        ) {
            Ok(t) => t,
            Err(e) => {
                report.errors.push(format!("{rel}: {e}"));
                continue;
            }
        };
        let cases = match parse_fixtures(&text) {
            Ok(c) => c,
            Err(e) => {
                report.errors.push(format!("{rel}: {e}"));
                continue;
            }
        };
        for (case, r) in cases.iter().zip(run_cases(pack, &compiled.ruleset, &cases)) {
            covered.extend(r.rules.iter().cloned());
            report.fired.push(r.fired.clone());
            let _ = case;
            report.cases.push(CaseOutcome {
                file: rel.clone(),
                case: r.name,
                failures: r.failures,
            });
        }
    }
    let prefix = format!("{pack}/");
    for rule in compiled.ruleset.rules() {
        if let Some(id) = rule.id.strip_prefix(&prefix)
            && !covered.contains(id)
        {
            report.unexercised.push(id.to_string());
        }
    }
    report
}

/// A lint finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// `error` or `warning`.
    pub level: &'static str,
    /// The rule (or file) it is about.
    pub about: String,
    /// What is wrong.
    pub message: String,
}

/// Style and quality checks of a pack: manifest and README, compile diagnostics, rules without
/// references, titles or fixtures, rules that never fired in their own tests, and overlapping
/// rules (identical conditions, or always firing together in every case either appears in).
pub fn lint_pack(dir: &Path, ctx: &Context) -> Result<Vec<Finding>, PackError> {
    let (m, compiled) = compile_pack(dir, ctx)?;
    let mut out = Vec::new();
    let mut add = |level, about: &str, message: String| {
        out.push(Finding {
            level,
            about: about.to_string(),
            message,
        })
    };
    if m.description.trim().is_empty() {
        add("warning", "pack.yaml", "no description".into());
    }
    if m.authors.is_empty() {
        add("warning", "pack.yaml", "no authors".into());
    }
    if !dir.join("README.md").is_file() {
        add(
            "warning",
            "README.md",
            "missing: say what the pack detects and what it is known to miss".into(),
        );
    }
    let own_files: BTreeSet<String> = crate::sources::rule_files(dir)
        .map_err(io(dir))?
        .files
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    for d in &compiled.diagnostics {
        let file = &compiled.sources.get(d.primary_span().file).name;
        if own_files.contains(file.as_str()) || file.ends_with("pack.yaml") {
            let level = if d.severity() == Severity::Error {
                "error"
            } else {
                "warning"
            };
            add(level, file, d.render(&compiled.sources));
        }
    }
    let prefix = format!("{}/", m.name);
    let own: Vec<&crate::ruleset::Rule> = compiled
        .ruleset
        .rules()
        .iter()
        .filter(|r| r.id.starts_with(&prefix))
        .collect();
    for r in &own {
        if r.references.is_empty() {
            add(
                "warning",
                &r.id,
                format!(
                    "no `references` ({}): say where the knowledge comes from",
                    r.location
                ),
            );
        }
        if r.title.is_none() {
            add("warning", &r.id, format!("no `title` ({})", r.location));
        }
    }
    let report = test_pack(dir, &m.name, &compiled);
    if report.cases.is_empty() {
        add(
            "error",
            "tests/",
            "no fixture cases: every rule needs a case in which it must fire".into(),
        );
    }
    for c in &report.cases {
        for f in &c.failures {
            add("error", &format!("{} / {}", c.file, c.case), f.clone());
        }
    }
    for e in &report.errors {
        add("error", "tests/", e.clone());
    }
    for id in &report.unexercised {
        add(
            "warning",
            &format!("{prefix}{id}"),
            "no fixture case requires it to fire".into(),
        );
    }
    let ever_fired: BTreeSet<&str> = report.fired.iter().flatten().map(String::as_str).collect();
    for r in &own {
        let id = r.id.trim_start_matches(&prefix);
        if !report.cases.is_empty() && !ever_fired.contains(id) {
            add(
                "warning",
                &r.id,
                "never fired in the pack's own tests".into(),
            );
        }
    }
    // Overlaps: identical conditions, or rules that fire in exactly the same cases.
    let mut by_cond: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for r in &own {
        by_cond
            .entry(format!("{:?}{:?}", r.cond, r.stateful))
            .or_default()
            .push(&r.id);
    }
    for ids in by_cond.values().filter(|v| v.len() > 1) {
        add(
            "warning",
            ids[0],
            format!(
                "same condition as {}: merge them or tell them apart",
                ids[1..].join(", ")
            ),
        );
    }
    let mut cases_of: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for (i, fired) in report.fired.iter().enumerate() {
        for id in fired {
            cases_of.entry(id.as_str()).or_default().insert(i);
        }
    }
    let ids: Vec<&&str> = cases_of.keys().collect();
    for (i, a) in ids.iter().enumerate() {
        for b in &ids[i + 1..] {
            if cases_of[**a] == cases_of[**b] && cases_of[**a].len() >= 2 {
                add(
                    "warning",
                    &format!("{prefix}{a}"),
                    format!(
                        "fires in exactly the same cases as `{prefix}{b}`: overlapping rules (or a missing case that tells them apart)"
                    ),
                );
            }
        }
    }
    Ok(out)
}

/// What `pack build` produced.
#[derive(Debug, Clone, Serialize)]
pub struct Built {
    /// The manifest.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Files in the manifest.
    pub files: usize,
    /// Whether it was signed.
    pub signed: bool,
    /// The archive written.
    pub archive: Option<PathBuf>,
}

/// Builds a pack: its rules must compile and (unless `run_tests` is false) its fixtures pass;
/// writes `MANIFEST.sha256` (and `MANIFEST.sig` with a key) into it and, with `out`, a
/// `.tar.gz` of it.
pub fn build_pack(
    dir: &Path,
    ctx: &Context,
    key: Option<&SigningKey>,
    out: Option<&Path>,
    run_tests: bool,
) -> Result<Built, PackError> {
    let (m, compiled) = compile_pack(dir, ctx)?;
    require_clean(&compiled)?;
    if run_tests {
        let report = test_pack(dir, &m.name, &compiled);
        if report.failed() > 0 {
            return Err(PackError::Tests(report.failed()));
        }
    }
    let files = integrity::write_manifest(dir, key)?;
    if let Some(out) = out {
        super::archive::write_archive(dir, &format!("{}-{}", m.name, m.version), out)?;
    }
    Ok(Built {
        name: m.name,
        version: m.version.to_string(),
        files,
        signed: key.is_some(),
        archive: out.map(Path::to_path_buf),
    })
}

/// A pack ready to be verified: a directory, or an archive extracted into a temporary
/// directory (removed on drop).
pub struct Opened {
    /// The pack's directory.
    pub dir: PathBuf,
    temp: Option<PathBuf>,
}

impl Drop for Opened {
    fn drop(&mut self) {
        if let Some(t) = &self.temp {
            let _ = std::fs::remove_dir_all(t);
        }
    }
}

pub(super) fn unique(parent: &Path, tag: &str) -> PathBuf {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    parent.join(format!(".{tag}-{}-{n}", std::process::id()))
}

/// Opens a pack directory or `.tar.gz` (extracted, every entry checked, into `scratch`).
pub fn open_pack(source: &Path, scratch: &Path) -> Result<Opened, PackError> {
    if source.is_dir() {
        return Ok(Opened {
            dir: source.to_path_buf(),
            temp: None,
        });
    }
    std::fs::create_dir_all(scratch).map_err(io(scratch))?;
    let temp = unique(scratch, "extract");
    std::fs::create_dir_all(&temp).map_err(io(&temp))?;
    // Owned from here: the temporary directory goes away on every way out.
    let mut opened = Opened {
        dir: temp.clone(),
        temp: Some(temp.clone()),
    };
    opened.dir = super::archive::extract_archive(source, &temp)?;
    Ok(opened)
}

/// Verifies a pack (directory or archive): its files against its manifest, its signature
/// against the trusted keys.
pub fn verify_pack(
    source: &Path,
    trusted: &[VerifyingKey],
    require_signature: bool,
) -> Result<(Manifest, integrity::Verified), PackError> {
    let scratch = std::env::temp_dir();
    let opened = open_pack(source, &scratch)?;
    // The signature first: nothing of an untrusted pack is parsed.
    let v = integrity::verify_dir(&opened.dir, trusted, require_signature)?;
    let m = Manifest::read(&opened.dir)?;
    Ok((m, v))
}

/// Creates a new pack directory `<parent>/<name>` that passes `pack test` and `pack lint`.
pub fn new_pack(parent: &Path, name: &str) -> Result<PathBuf, PackError> {
    if !manifest::valid_name(name) {
        return Err(PackError::Requirement(format!(
            "`{name}` is not a pack name (lowercase letters, digits and `-`, starting with a letter)"
        )));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(PackError::Requirement(format!(
            "{} already exists",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir.join("rules")).map_err(io(&dir))?;
    std::fs::create_dir_all(dir.join("tests")).map_err(io(&dir))?;
    let files = [
        (
            "pack.yaml".to_string(),
            format!(
                "name: {name}\nversion: 0.1.0\ndescription: What {name} detects, in one line\nauthors: [\"Your Name <you@example.org>\"]\nlicense: Apache-2.0\nhomepage: https://example.org/{name}\nflowprint: \">={}\"\ndepends: {{}}\n",
                env!("CARGO_PKG_VERSION")
            ),
        ),
        (
            format!("rules/{name}.rules"),
            "# Rules of this pack. Ids are namespaced by the pack: this one is `PACK/vendor-agent`.\n\
             list vendor_update = domains { \"update.vendor.example\", \"*.cdn.vendor.example\" }\n\n\
             rule vendor-agent {\n    \
                 title      \"Vendor agent checks for updates\"\n    \
                 references [\"https://vendor.example/docs/network-requirements\"]\n    \
                 status     experimental\n    \
                 when  peer.domain in vendor_update and peer.port == 443\n    \
                 then  software = \"VendorAgent\" confidence 0.7\n}\n"
                .replace("PACK", name),
        ),
        (
            format!("tests/{name}.yaml"),
            "# Fixture cases: flows (flowprint's JSON flow schema) and what must follow.\n\
             - name: the agent's update check\n  \
               flows:\n    \
                 - {start: \"2024-05-01T10:00:00Z\", src: 192.168.1.20, src_port: 50000, dst: 203.0.113.10, dst_port: 443, proto: tcp, bytes: 2000, packets: 10, dst_name: update.vendor.example}\n  \
               expect:\n    \
                 host: 192.168.1.20\n    \
                 rules: [vendor-agent]\n    \
                 software: VendorAgent\n\n\
             - name: other https traffic is not the agent\n  \
               flows:\n    \
                 - {start: \"2024-05-01T10:00:00Z\", src: 192.168.1.21, src_port: 50001, dst: 203.0.113.11, dst_port: 443, proto: tcp, bytes: 2000, packets: 10, dst_name: www.example.org}\n  \
               expect:\n    \
                 host: 192.168.1.21\n    \
                 not_rules: [vendor-agent]\n"
                .to_string(),
        ),
        (
            "README.md".to_string(),
            format!(
                "# {name}\n\nWhat this pack detects, from which evidence, and what it is known to miss.\n\n\
                 ```sh\nflowprint pack test {name}\nflowprint pack lint {name}\nflowprint pack build {name} -o {name}.tar.gz --sign KEY\n```\n"
            ),
        ),
    ];
    for (rel, text) in files {
        let p = dir.join(rel);
        std::fs::write(&p, text).map_err(io(&p))?;
    }
    Ok(dir)
}
