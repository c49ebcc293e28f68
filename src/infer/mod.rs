//! Host inference: per-host evidence from matches, combined into a scored summary.
//!
//! Scoring: each rule counts once per host, however many flows it matched (a thousand
//! connectivity checks are one piece of evidence, not a thousand). The confidence of a label is
//! the noisy-OR of the confidences of the distinct rules that concluded it:
//! `1 - Π (1 - cᵢ)`. For each attribute the label with the highest combined confidence wins;
//! the others are kept as alternatives. `os.name` and `os.version` are only taken from rules
//! that agree with the winning `os.family` (or say nothing about the family).

use crate::eval::{Evaluator, Match};
use crate::flow::Flow;
use crate::flow::time::format_rfc3339;
use crate::ruleset::{Attribute, Ruleset};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// What one rule matched for one host.
#[derive(Debug, Clone)]
pub struct EvidenceAgg {
    /// Matching flows.
    pub flows: u64,
    /// Earliest start of a matching flow (ms).
    pub first_seen: i64,
    /// Latest end of a matching flow (ms).
    pub last_seen: i64,
    /// The first matching flow, rendered for explanations.
    pub sample: String,
}

/// Everything known about one host.
#[derive(Debug, Clone, Default)]
pub struct HostState {
    /// Flows in which the host took part.
    pub flows: u64,
    /// Earliest flow start (ms).
    pub first_seen: i64,
    /// Latest flow end (ms).
    pub last_seen: i64,
    /// Evidence per rule (position in the ruleset).
    pub evidence: BTreeMap<u32, EvidenceAgg>,
}

/// All hosts seen so far.
#[derive(Debug, Default)]
pub struct Inventory {
    hosts: HashMap<IpAddr, HostState>,
    /// Flows observed.
    pub flows: u64,
    /// Flows with no local endpoint (not evidence about any host).
    pub flows_without_host: u64,
    /// Rule matches recorded.
    pub matches: u64,
}

/// A short rendering of a flow for explanations.
pub fn describe_flow(flow: &Flow) -> String {
    let proto = crate::flow::proto::name(flow.proto)
        .map(str::to_string)
        .unwrap_or_else(|| flow.proto.to_string());
    let name = flow
        .dst_name
        .as_deref()
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    format!(
        "{} {}:{} -> {}:{}{} {} bytes {} pkts",
        proto, flow.src, flow.src_port, flow.dst, flow.dst_port, name, flow.bytes, flow.packets
    )
}

impl Inventory {
    /// An empty inventory.
    pub fn new() -> Inventory {
        Inventory::default()
    }

    /// Evaluates one flow and records it and its matches.
    pub fn observe(&mut self, flow: &Flow, evaluator: &mut Evaluator<'_>) {
        self.flows += 1;
        let mut matches: [Option<Match>; 8] = [None; 8];
        let mut extra = Vec::new();
        let mut n = 0;
        let hosts = evaluator.eval(flow, |m| {
            if n < matches.len() {
                matches[n] = Some(m);
            } else {
                extra.push(m);
            }
            n += 1;
        });
        if hosts == 0 {
            self.flows_without_host += 1;
            return;
        }
        for view in evaluator.hosts(flow).into_iter().flatten() {
            self.record_host_flow(view.addr(crate::schema::Side::Host), flow);
        }
        for m in matches.into_iter().flatten().chain(extra) {
            self.record_match(&m, flow);
        }
    }

    fn record_host_flow(&mut self, host: IpAddr, flow: &Flow) {
        let h = self.hosts.entry(host).or_insert_with(|| HostState {
            first_seen: flow.start_ms,
            last_seen: flow.end_ms,
            ..Default::default()
        });
        h.flows += 1;
        h.first_seen = h.first_seen.min(flow.start_ms);
        h.last_seen = h.last_seen.max(flow.end_ms);
    }

    fn record_match(&mut self, m: &Match, flow: &Flow) {
        self.matches += 1;
        let h = self.hosts.entry(m.host).or_default();
        h.evidence
            .entry(m.rule)
            .and_modify(|e| {
                e.flows += 1;
                e.first_seen = e.first_seen.min(flow.start_ms);
                e.last_seen = e.last_seen.max(flow.end_ms);
            })
            .or_insert_with(|| EvidenceAgg {
                flows: 1,
                first_seen: flow.start_ms,
                last_seen: flow.end_ms,
                sample: describe_flow(flow),
            });
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether no host was seen.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The state of one host.
    pub fn host(&self, addr: IpAddr) -> Option<&HostState> {
        self.hosts.get(&addr)
    }

    /// Summaries of all hosts, ordered by address.
    pub fn summaries(&self, rules: &Ruleset) -> Vec<HostSummary> {
        let mut hosts: Vec<_> = self.hosts.iter().collect();
        hosts.sort_by_key(|(a, _)| **a);
        hosts
            .into_iter()
            .map(|(a, h)| summarize(*a, h, rules))
            .collect()
    }
}

/// The operating system verdict.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OsVerdict {
    /// Windows, macOS, Linux, Android, iOS, ChromeOS...
    pub family: Option<String>,
    /// A distribution or edition: Ubuntu, Windows 10...
    pub name: Option<String>,
    /// A version, when known.
    pub version: Option<String>,
    /// Combined confidence of the family (or of the name when no family is known).
    pub confidence: f64,
}

/// One software product found on a host.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SoftwareVerdict {
    /// Product.
    pub name: String,
    /// Best-supported version, if any rule gave one.
    pub version: Option<String>,
    /// Combined confidence.
    pub confidence: f64,
}

/// A device type verdict.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceVerdict {
    /// phone, laptop, tv, printer...
    #[serde(rename = "type")]
    pub kind: String,
    /// Combined confidence.
    pub confidence: f64,
}

/// A label that lost to another for the same attribute.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Alternative {
    /// `os.family`, `os.name`, `os.version`, `device`.
    pub attribute: Attribute,
    /// The label.
    pub value: String,
    /// Its combined confidence.
    pub confidence: f64,
}

/// One rule's evidence about a host.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EvidenceOut {
    /// `pack/id`.
    pub rule: String,
    /// The rule's title.
    pub title: Option<String>,
    /// Matching flows.
    pub flows: u64,
    /// First matching flow start (RFC 3339).
    pub first_seen: String,
    /// Last matching flow end.
    pub last_seen: String,
    /// What the rule concludes.
    pub conclusions: Vec<crate::ruleset::Conclusion>,
    /// The first matching flow.
    pub example: String,
}

/// The verdict about one host: `analyze --format json` prints one per line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HostSummary {
    /// The host address.
    pub host: String,
    /// Operating system, if any rule spoke of it.
    pub os: Option<OsVerdict>,
    /// Software products.
    pub software: Vec<SoftwareVerdict>,
    /// Device type.
    pub device: Option<DeviceVerdict>,
    /// Labels that lost.
    pub alternatives: Vec<Alternative>,
    /// Evidence, strongest first.
    pub evidence: Vec<EvidenceOut>,
    /// Flows the host took part in.
    pub flows: u64,
    /// First flow (RFC 3339).
    pub first_seen: String,
    /// Last flow (RFC 3339).
    pub last_seen: String,
}

/// Noisy-OR accumulator per label; labels keep first-seen order for stable ties.
#[derive(Default)]
struct Scores {
    labels: Vec<(String, f64)>,
}

impl Scores {
    fn add(&mut self, label: &str, c: f64) {
        match self.labels.iter_mut().find(|(l, _)| l == label) {
            Some((_, miss)) => *miss *= 1.0 - c,
            None => self.labels.push((label.to_string(), 1.0 - c)),
        }
    }

    /// Labels with combined confidence, best first (ties: alphabetical).
    fn ranked(&self) -> Vec<(String, f64)> {
        let mut v: Vec<(String, f64)> = self
            .labels
            .iter()
            .map(|(l, m)| (l.clone(), round(1.0 - m)))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn summarize(addr: IpAddr, h: &HostState, rules: &Ruleset) -> HostSummary {
    let all = rules.rules();
    let mut family = Scores::default();
    let mut device = Scores::default();
    for &r in h.evidence.keys() {
        for c in &all[r as usize].conclusions {
            match c.attribute {
                Attribute::OsFamily => family.add(&c.value, c.confidence),
                Attribute::Device => device.add(&c.value, c.confidence),
                _ => {}
            }
        }
    }
    let family_ranked = family.ranked();
    let winner = family_ranked.first().map(|(l, _)| l.clone());
    // Name and version only from rules that agree with the winning family or are silent on it.
    let mut name = Scores::default();
    let mut version = Scores::default();
    let mut software: BTreeMap<String, (Scores, Scores)> = BTreeMap::new();
    for &r in h.evidence.keys() {
        let rule = &all[r as usize];
        let rule_family = rule
            .conclusions
            .iter()
            .find(|c| c.attribute == Attribute::OsFamily);
        let agrees = match (rule_family, &winner) {
            (Some(f), Some(w)) => &f.value == w,
            _ => true,
        };
        for c in &rule.conclusions {
            match c.attribute {
                Attribute::OsName if agrees => name.add(&c.value, c.confidence),
                Attribute::OsVersion if agrees => version.add(&c.value, c.confidence),
                Attribute::Software => {
                    let e = software.entry(c.value.clone()).or_default();
                    e.0.add(&c.value, c.confidence);
                    if let Some(v) = &c.version {
                        e.1.add(v, c.confidence);
                    }
                }
                _ => {}
            }
        }
    }
    let name_ranked = name.ranked();
    let version_ranked = version.ranked();
    let device_ranked = device.ranked();
    let os = if family_ranked.is_empty() && name_ranked.is_empty() {
        None
    } else {
        Some(OsVerdict {
            family: family_ranked.first().map(|(l, _)| l.clone()),
            name: name_ranked.first().map(|(l, _)| l.clone()),
            version: version_ranked.first().map(|(l, _)| l.clone()),
            confidence: family_ranked
                .first()
                .or(name_ranked.first())
                .map_or(0.0, |(_, c)| *c),
        })
    };
    let mut alternatives = Vec::new();
    for (attr, ranked) in [
        (Attribute::OsFamily, &family_ranked),
        (Attribute::OsName, &name_ranked),
        (Attribute::OsVersion, &version_ranked),
        (Attribute::Device, &device_ranked),
    ] {
        alternatives.extend(ranked.iter().skip(1).map(|(l, c)| Alternative {
            attribute: attr,
            value: l.clone(),
            confidence: *c,
        }));
    }
    let mut software: Vec<SoftwareVerdict> = software
        .into_iter()
        .map(|(name, (conf, versions))| {
            let c = conf.ranked().first().map_or(0.0, |(_, c)| *c);
            SoftwareVerdict {
                name,
                version: versions.ranked().first().map(|(v, _)| v.clone()),
                confidence: c,
            }
        })
        .collect();
    software.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut evidence: Vec<EvidenceOut> = h
        .evidence
        .iter()
        .map(|(&r, e)| {
            let rule = &all[r as usize];
            EvidenceOut {
                rule: rule.id.clone(),
                title: rule.title.clone(),
                flows: e.flows,
                first_seen: format_rfc3339(e.first_seen),
                last_seen: format_rfc3339(e.last_seen),
                conclusions: rule.conclusions.clone(),
                example: e.sample.clone(),
            }
        })
        .collect();
    let strength = |e: &EvidenceOut| {
        e.conclusions
            .iter()
            .map(|c| c.confidence)
            .fold(0.0, f64::max)
    };
    evidence.sort_by(|a, b| {
        strength(b)
            .total_cmp(&strength(a))
            .then_with(|| a.rule.cmp(&b.rule))
    });
    HostSummary {
        host: addr.to_string(),
        os,
        software,
        device: device_ranked.first().map(|(l, c)| DeviceVerdict {
            kind: l.clone(),
            confidence: *c,
        }),
        alternatives,
        evidence,
        flows: h.flows,
        first_seen: format_rfc3339(h.first_seen),
        last_seen: format_rfc3339(h.last_seen),
    }
}
