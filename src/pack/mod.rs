//! Rule packs: fixtures that say which verdict a few flows must produce.
//!
//! A pack directory holds `*.rules` files and `tests/*.yaml` fixtures. Each fixture case lists
//! flows (in flowprint's JSON flow schema, written as YAML maps) and what must follow for one
//! host: rules that must fire, rules that must not, and attributes of the host's summary.
//! Analysts add cases without writing Rust; `cargo test` runs every case of every bundled pack.

pub mod archive;
pub mod generate;
pub mod install;
pub mod integrity;
pub mod ops;

use crate::eval::LocalNets;
use crate::flow::ingest::{InputFormat, read_flows};
use crate::infer::HostTable;
use crate::ruleset::Ruleset;
use crate::scan::Scanner;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

/// One fixture case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case shows.
    pub name: String,
    /// The flows, in flowprint's JSON flow schema.
    pub flows: Vec<serde_json::Value>,
    /// What must follow.
    pub expect: Expect,
}

/// Expectations of a case about one host.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The host the expectations are about.
    pub host: IpAddr,
    /// Rule ids (of this pack) that must fire for the host.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Rule ids that must not fire.
    #[serde(default)]
    pub not_rules: Vec<String>,
    /// The winning OS family.
    #[serde(rename = "os.family")]
    pub os_family: Option<String>,
    /// The winning OS name.
    #[serde(rename = "os.name")]
    pub os_name: Option<String>,
    /// The winning OS version.
    #[serde(rename = "os.version")]
    pub os_version: Option<String>,
    /// A software name that must be among the host's software.
    pub software: Option<String>,
    /// The winning device type.
    pub device: Option<String>,
    /// The address must not become a host at all (e.g. a broadcast address).
    #[serde(default)]
    pub absent: bool,
}

/// The outcome of one case.
#[derive(Debug)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Rule ids the case says must fire.
    pub rules: Vec<String>,
    /// What went wrong; empty when the case passed.
    pub failures: Vec<String>,
    /// Rule ids (of this pack, without its prefix) that fired for the case's host.
    pub fired: BTreeSet<String>,
}

/// A fixture file that cannot be read as cases.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// Refused before parsing (too large, nested too deep).
    #[error(transparent)]
    Refused(#[from] crate::limits::YamlRefusal),
    /// Not a list of cases; the YAML error says where.
    #[error(transparent)]
    Yaml(#[from] yaml_serde::Error),
}

/// Parses a fixture file (YAML list of cases).
pub fn parse_fixtures(text: &str) -> Result<Vec<Case>, FixtureError> {
    crate::limits::check_yaml(text, crate::limits::MAX_YAML_NESTING)?;
    Ok(yaml_serde::from_str(text)?)
}

/// Runs the cases of one fixture file against `ruleset`; `pack` qualifies the rule ids.
pub fn run_cases(pack: &str, ruleset: &Arc<Ruleset>, cases: &[Case]) -> Vec<CaseResult> {
    cases.iter().map(|c| run_case(pack, ruleset, c)).collect()
}

fn run_case(pack: &str, ruleset: &Arc<Ruleset>, case: &Case) -> CaseResult {
    let mut failures = Vec::new();
    for r in case.expect.rules.iter().chain(&case.expect.not_rules) {
        let id = format!("{pack}/{r}");
        if !ruleset.rules().iter().any(|rule| rule.id == id) {
            failures.push(format!("rule `{r}` does not exist in pack `{pack}`"));
        }
    }
    // The daemon's path: the same scanner, learning the names the records carry as it does.
    let mut scanner = Scanner::new(
        ruleset.clone(),
        Arc::new(LocalNets::default()),
        HostTable::new(),
    );
    let mut dns = crate::dns::DnsMap::new();
    let text: String = case.flows.iter().map(|f| format!("{f}\n")).collect();
    let result = read_flows(
        text.as_bytes(),
        &case.name,
        InputFormat::Jsonl,
        &mut |flow| {
            scanner.apply_learning(&flow, &mut dns);
        },
        &mut |e| failures.push(format!("bad flow: {e}")),
    );
    let inventory = scanner.hosts();
    if let Err(e) = result {
        failures.push(format!("flows unreadable: {e}"));
    }
    let summaries = inventory.summaries(ruleset);
    let host = case.expect.host.to_string();
    if case.expect.absent {
        if summaries.iter().any(|s| s.host == host) {
            failures.push(format!("{host} must not be a host"));
        }
        return CaseResult {
            name: case.name.clone(),
            rules: case.expect.rules.clone(),
            failures,
            fired: BTreeSet::new(),
        };
    }
    let Some(summary) = summaries.iter().find(|s| s.host == host) else {
        failures.push(format!(
            "host {host} is not in any flow (or not a local address)"
        ));
        return CaseResult {
            name: case.name.clone(),
            rules: case.expect.rules.clone(),
            failures,
            fired: BTreeSet::new(),
        };
    };
    let fired: BTreeSet<&str> = summary
        .evidence
        .iter()
        .filter_map(|e| e.rule.strip_prefix(pack).and_then(|r| r.strip_prefix('/')))
        .collect();
    for r in &case.expect.rules {
        if !fired.contains(r.as_str()) {
            failures.push(format!("rule `{r}` did not fire (fired: {fired:?})"));
        }
    }
    for r in &case.expect.not_rules {
        if fired.contains(r.as_str()) {
            failures.push(format!("rule `{r}` fired but must not"));
        }
    }
    let os = summary.os.as_ref();
    let checks = [
        (
            "os.family",
            &case.expect.os_family,
            os.and_then(|o| o.family.clone()),
        ),
        (
            "os.name",
            &case.expect.os_name,
            os.and_then(|o| o.name.clone()),
        ),
        (
            "os.version",
            &case.expect.os_version,
            os.and_then(|o| o.version.clone()),
        ),
        (
            "device",
            &case.expect.device,
            summary.device.as_ref().map(|d| d.kind.clone()),
        ),
    ];
    for (what, want, got) in checks {
        if let Some(w) = want
            && got.as_ref() != Some(w)
        {
            failures.push(format!("{what}: expected {w:?}, got {got:?}"));
        }
    }
    if let Some(sw) = &case.expect.software
        && !summary.software.iter().any(|s| &s.name == sw)
    {
        let got: Vec<&str> = summary.software.iter().map(|s| s.name.as_str()).collect();
        failures.push(format!("software {sw:?} missing (got {got:?})"));
    }
    CaseResult {
        name: case.name.clone(),
        rules: case.expect.rules.clone(),
        failures,
        fired: fired.iter().map(|s| s.to_string()).collect(),
    }
}
