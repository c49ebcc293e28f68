//! Scoring: evidence → labels with confidences.
//!
//! - Each rule counts **once** per host, however many flows it matched: a thousand connectivity
//!   checks are one piece of evidence (the weight of many matches is capped at the rule's
//!   confidence).
//! - Evidence **decays**: its weight is `c · 0.5^(age / half-life)`, `age` being the time from
//!   the rule's last match to the latest flow seen.
//! - Labels are **hierarchical**: evidence for `os.name = "Ubuntu"` is also evidence for the
//!   family that rules concluding "Ubuntu" name (Linux), and `os.version` for its name; a
//!   software version is evidence for the software.
//! - A label's confidence is the **noisy-OR** of its weighted evidence, `1 − Π(1 − wᵢ)`. The best
//!   label of each attribute wins; the others are kept as alternatives. `os.name` and
//!   `os.version` are only taken from evidence that agrees with the winning family.
//! - Two strong families active at the same time flag the host as `several-machines` (NAT,
//!   proxy).

use super::stored::StoredLabel;
use super::{EvidenceAgg, HostState, STRONG};
use crate::flow::time::format_rfc3339;
use crate::ruleset::{Attribute, Conclusion, Ruleset};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;

/// The operating system verdict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SoftwareVerdict {
    /// Product.
    pub name: String,
    /// Best-supported version, if any rule gave one.
    pub version: Option<String>,
    /// Combined confidence.
    pub confidence: f64,
}

/// A device type verdict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceVerdict {
    /// phone, computer, tv, printer...
    #[serde(rename = "type")]
    pub kind: String,
    /// Combined confidence.
    pub confidence: f64,
}

/// A label that lost to another for the same attribute.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Alternative {
    /// `os.family`, `os.name`, `os.version`, `device`.
    pub attribute: Attribute,
    /// The label.
    pub value: String,
    /// Its combined confidence.
    pub confidence: f64,
}

/// One rule's evidence about a host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
    /// Factor applied to the rule's confidences: decay with age, times the weight of a shared
    /// address (1 = fresh, and not resting on a shared address).
    #[serde(default)]
    pub decay: f64,
    /// Below 1 when the evidence rests on names of an address shared by unrelated names.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub shared_address_weight: f64,
    /// What the rule concludes.
    pub conclusions: Vec<Conclusion>,
    /// The first matching flow, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<String>,
}

/// Stored evidence of a rule that is not loaded: kept in the inventory, not scored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UnscoredEvidence {
    /// `pack/id` of the rule.
    pub rule: String,
    /// Matching flows, as stored.
    pub flows: u64,
    /// First matching flow (RFC 3339).
    pub first_seen: String,
    /// Last matching flow (RFC 3339).
    pub last_seen: String,
}

/// The verdict about one host: `analyze --format json` prints one per line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
    /// Flows the host took part in (current epoch).
    pub flows: u64,
    /// First flow of the current epoch (RFC 3339).
    pub first_seen: String,
    /// Last flow (RFC 3339).
    pub last_seen: String,
    /// Epoch of the address (0 unless it was reassigned to another machine).
    #[serde(default)]
    pub epoch: u32,
    /// `several-machines` when strong evidence of two OS families is active at the same time.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Stored evidence of rules that are not loaded (kept, not scored); absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unscored: Vec<UnscoredEvidence>,
}

fn one() -> f64 {
    1.0
}

fn is_one(x: &f64) -> bool {
    *x == 1.0
}

/// Noisy-OR accumulator per label; ties break alphabetically.
#[derive(Default, Debug)]
struct Scores {
    labels: Vec<(String, f64)>,
}

impl Scores {
    fn add(&mut self, label: &str, w: f64) {
        match self.labels.iter_mut().find(|(l, _)| l == label) {
            Some((_, miss)) => *miss *= 1.0 - w,
            None => self.labels.push((label.to_string(), 1.0 - w)),
        }
    }

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

/// Scores hosts against one ruleset at one point in time.
pub struct Scorer<'r> {
    rules: &'r Ruleset,
    now_ms: i64,
    half_life_ms: Option<i64>,
    /// os.name → os.family, from rules that conclude both.
    name_family: HashMap<&'r str, &'r str>,
    /// os.version → os.name, likewise.
    version_name: HashMap<&'r str, &'r str>,
    /// The first conclusion of each (attribute, label), to stand for implied parents.
    conclusions: HashMap<(Attribute, &'r str), &'r Conclusion>,
}

/// One weighted conclusion of one rule for one host.
struct Term<'r> {
    rule: u32,
    conclusion: &'r Conclusion,
    weight: f64,
    implied: bool,
}

impl<'r> Scorer<'r> {
    /// A scorer; `now_ms` is the time decay is measured to.
    pub fn new(rules: &'r Ruleset, now_ms: i64, half_life_ms: Option<i64>) -> Scorer<'r> {
        let mut name_family = HashMap::new();
        let mut version_name = HashMap::new();
        for r in rules.rules() {
            let get = |a: Attribute| {
                r.conclusions
                    .iter()
                    .find(|c| c.attribute == a)
                    .map(|c| c.value.as_str())
            };
            if let (Some(n), Some(f)) = (get(Attribute::OsName), get(Attribute::OsFamily)) {
                name_family.entry(n).or_insert(f);
            }
            if let (Some(v), Some(n)) = (get(Attribute::OsVersion), get(Attribute::OsName)) {
                version_name.entry(v).or_insert(n);
            }
        }
        let mut conclusions = HashMap::new();
        for c in rules.rules().iter().flat_map(|r| r.conclusions.iter()) {
            conclusions
                .entry((c.attribute, c.value.as_str()))
                .or_insert(c);
        }
        Scorer {
            rules,
            now_ms,
            half_life_ms,
            name_family,
            version_name,
            conclusions,
        }
    }

    /// Decay with age, times the shared-address weight of the evidence.
    fn decay(&self, e: &EvidenceAgg) -> f64 {
        let shared = f64::from(e.weight.min(1000)) / 1000.0;
        match self.half_life_ms {
            Some(h) if h > 0 => {
                let age = self.now_ms.saturating_sub(e.last_seen).max(0) as f64;
                0.5f64.powf(age / h as f64) * shared
            }
            _ => shared,
        }
    }

    /// Every weighted conclusion of the host, with implied parents (name → family, version →
    /// name) that the rule did not state itself.
    fn terms(&self, h: &'r HostState) -> Vec<Term<'r>> {
        let mut terms = Vec::new();
        for e in &h.evidence {
            let rule = &self.rules.rules()[e.rule as usize];
            let d = self.decay(e);
            let states = |a: Attribute| rule.conclusions.iter().any(|c| c.attribute == a);
            for c in &rule.conclusions {
                terms.push(Term {
                    rule: e.rule,
                    conclusion: c,
                    weight: c.confidence * d,
                    implied: false,
                });
                let parent = match c.attribute {
                    Attribute::OsName if !states(Attribute::OsFamily) => self
                        .name_family
                        .get(c.value.as_str())
                        .map(|f| (Attribute::OsFamily, *f)),
                    Attribute::OsVersion if !states(Attribute::OsName) => self
                        .version_name
                        .get(c.value.as_str())
                        .map(|n| (Attribute::OsName, *n)),
                    _ => None,
                };
                if let Some((attribute, value)) = parent {
                    // Leaked for the lifetime of the scorer's borrow: parents come from rules.
                    let implied = self.implied_conclusion(attribute, value, c.confidence);
                    terms.push(Term {
                        rule: e.rule,
                        conclusion: implied,
                        weight: c.confidence * d,
                        implied: true,
                    });
                }
            }
        }
        terms
    }

    /// The parent label as concluded by some rule of the ruleset (that rule's own confidence is
    /// not used: the implied term carries the child's weight).
    fn implied_conclusion(&self, attribute: Attribute, value: &str, _c: f64) -> &'r Conclusion {
        self.conclusions[&(attribute, value)]
    }

    /// The verdict about one host.
    pub fn summarize(&self, addr: IpAddr, h: &'r HostState) -> HostSummary {
        let terms = self.terms(h);
        let mut family = Scores::default();
        let mut device = Scores::default();
        for t in &terms {
            match t.conclusion.attribute {
                Attribute::OsFamily => family.add(&t.conclusion.value, t.weight),
                Attribute::Device => device.add(&t.conclusion.value, t.weight),
                _ => {}
            }
        }
        let family_ranked = family.ranked();
        let winner = family_ranked.first().map(|(l, _)| l.clone());
        let rule_family = |rule: u32| -> Option<&str> {
            terms
                .iter()
                .filter(|t| t.rule == rule && t.conclusion.attribute == Attribute::OsFamily)
                .map(|t| t.conclusion.value.as_str())
                .next()
        };
        let mut name = Scores::default();
        let mut version = Scores::default();
        let mut software: BTreeMap<String, (Scores, Scores)> = BTreeMap::new();
        for t in &terms {
            let agrees = match (rule_family(t.rule), &winner) {
                (Some(f), Some(w)) => f == w,
                _ => true,
            };
            let c = t.conclusion;
            match c.attribute {
                Attribute::OsName if agrees => name.add(&c.value, t.weight),
                Attribute::OsVersion if agrees => version.add(&c.value, t.weight),
                Attribute::Software => {
                    let e = software.entry(c.value.clone()).or_default();
                    e.0.add(&c.value, t.weight);
                    if let Some(v) = &c.version {
                        e.1.add(v, t.weight);
                    }
                }
                _ => {}
            }
        }
        let (name_ranked, version_ranked, device_ranked) =
            (name.ranked(), version.ranked(), device.ranked());
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
            .map(|(name, (conf, versions))| SoftwareVerdict {
                name,
                version: versions.ranked().first().map(|(v, _)| v.clone()),
                confidence: conf.ranked().first().map_or(0.0, |(_, c)| *c),
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
            .map(|e| {
                let rule = &self.rules.rules()[e.rule as usize];
                EvidenceOut {
                    rule: rule.id.clone(),
                    title: rule.title.clone(),
                    flows: u64::from(e.flows),
                    first_seen: format_rfc3339(e.first_seen),
                    last_seen: format_rfc3339(e.last_seen),
                    decay: round(self.decay(e)),
                    shared_address_weight: f64::from(e.weight.min(1000)) / 1000.0,
                    conclusions: rule.conclusions.clone(),
                    example: h.sample(e.rule),
                }
            })
            .collect();
        let strength = |e: &EvidenceOut| {
            e.conclusions
                .iter()
                .map(|c| c.confidence)
                .fold(0.0, f64::max)
                * e.decay
        };
        evidence.sort_by(|a, b| {
            strength(b)
                .total_cmp(&strength(a))
                .then_with(|| a.rule.cmp(&b.rule))
        });
        HostSummary {
            host: addr_text(addr),
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
            epoch: h.epoch,
            flags: self.flags(h, &family_ranked),
            unscored: h
                .kept()
                .iter()
                .map(|k| UnscoredEvidence {
                    rule: k.rule.to_string(),
                    flows: k.flows,
                    first_seen: format_rfc3339(k.first_seen),
                    last_seen: format_rfc3339(k.last_seen),
                })
                .collect(),
        }
    }

    /// `several-machines`: two families each strong, whose evidence overlaps in time.
    fn flags(&self, h: &HostState, family_ranked: &[(String, f64)]) -> Vec<String> {
        let strong: Vec<&str> = family_ranked
            .iter()
            .filter(|(_, c)| *c >= STRONG)
            .map(|(l, _)| l.as_str())
            .collect();
        if strong.len() < 2 {
            return Vec::new();
        }
        let span = |fam: &str| {
            h.evidence
                .iter()
                .filter(|e| {
                    self.rules.rules()[e.rule as usize]
                        .conclusions
                        .iter()
                        .any(|c| c.attribute == Attribute::OsFamily && c.value == fam)
                })
                .fold((i64::MAX, i64::MIN), |(a, b), e| {
                    (a.min(e.first_seen), b.max(e.last_seen))
                })
        };
        let (a, b) = (span(strong[0]), span(strong[1]));
        if a.0 <= b.1 && b.0 <= a.1 {
            vec!["several-machines".to_string()]
        } else {
            Vec::new()
        }
    }

    /// For each label: the rules, counts, first/last seen, decay and how the score was computed.
    pub fn explain(&self, addr: IpAddr, h: &'r HostState) -> String {
        let s = self.summarize(addr, h);
        let terms = self.terms(h);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "host {addr}: {} flows, epoch {}, {} .. {}",
            h.flows, h.epoch, s.first_seen, s.last_seen
        );
        for e in h.epochs() {
            let _ = writeln!(
                out,
                "  epoch {} since {}: {}",
                e.epoch,
                format_rfc3339(e.started),
                e.reason
            );
        }
        if !s.flags.is_empty() {
            let _ = writeln!(out, "  flags: {}", s.flags.join(", "));
        }
        let half = self.half_life_ms.map_or("none".to_string(), |h| {
            format!("{:.1} d", h as f64 / 86_400_000.0)
        });
        let _ = writeln!(
            out,
            "  decay half-life {half}, measured to {}",
            format_rfc3339(self.now_ms)
        );
        let mut groups: BTreeMap<(Attribute, &str), Vec<&Term>> = BTreeMap::new();
        for t in &terms {
            groups
                .entry((t.conclusion.attribute, t.conclusion.value.as_str()))
                .or_default()
                .push(t);
        }
        for ((attr, label), ts) in groups {
            let miss: f64 = ts.iter().map(|t| 1.0 - t.weight).product();
            let _ = writeln!(
                out,
                "  {} = {label}: 1 - Π(1 - w) = {:.3}",
                attr.name(),
                1.0 - miss
            );
            for t in ts {
                let e = h
                    .evidence
                    .iter()
                    .find(|e| e.rule == t.rule)
                    .expect("term of an evidence");
                let rule = &self.rules.rules()[t.rule as usize];
                let _ = writeln!(
                    out,
                    "    {}{}: c={} × decay {:.3} = w {:.3}; {} flow(s) {} .. {}",
                    rule.id,
                    if t.implied {
                        " (implied by a more specific label)"
                    } else {
                        ""
                    },
                    t.conclusion.confidence,
                    self.decay(e),
                    t.weight,
                    e.flows,
                    format_rfc3339(e.first_seen),
                    format_rfc3339(e.last_seen)
                );
            }
        }
        for k in h.kept() {
            let _ = writeln!(
                out,
                "  kept, not scored (rule not loaded): {}; {} flow(s) {} .. {}",
                k.rule,
                k.flows,
                format_rfc3339(k.first_seen),
                format_rfc3339(k.last_seen)
            );
        }
        out
    }
}

/// The labels of a summary as stored rows (winners and alternatives).
pub fn labels(s: &HostSummary) -> Vec<StoredLabel> {
    let mut v = Vec::new();
    let mut push = |attribute: &str, value: &Option<String>, version: Option<String>, c: f64| {
        if let Some(value) = value {
            v.push(StoredLabel {
                attribute: attribute.to_string(),
                value: value.clone(),
                version,
                confidence: c,
                winner: true,
            });
        }
    };
    if let Some(os) = &s.os {
        push("os.family", &os.family, None, os.confidence);
        push("os.name", &os.name, None, os.confidence);
        push("os.version", &os.version, None, os.confidence);
    }
    for sw in &s.software {
        push(
            "software",
            &Some(sw.name.clone()),
            sw.version.clone(),
            sw.confidence,
        );
    }
    if let Some(d) = &s.device {
        push("device", &Some(d.kind.clone()), None, d.confidence);
    }
    for a in &s.alternatives {
        v.push(StoredLabel {
            attribute: a.attribute.name().to_string(),
            value: a.value.clone(),
            version: None,
            confidence: a.confidence,
            winner: false,
        });
    }
    v
}

/// `addr` as `Display` writes it; an IPv4 address digit by digit (a summary per host of a large
/// inventory: the formatting machinery was a fifth of scoring it).
fn addr_text(addr: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = addr else {
        return addr.to_string();
    };
    let mut out = String::with_capacity(15);
    for (i, o) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if o >= 100 {
            out.push(char::from(b'0' + o / 100));
        }
        if o >= 10 {
            out.push(char::from(b'0' + o / 10 % 10));
        }
        out.push(char::from(b'0' + o % 10));
    }
    out
}

#[cfg(test)]
mod addr_text_tests {
    use super::addr_text;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn ipv4_text_is_display_text() {
        for a in [
            0u32,
            1,
            9,
            10,
            99,
            100,
            255,
            0x0a00_0001,
            0xc0a8_0a64,
            0x01_09_63_ff,
            u32::MAX,
        ] {
            let ip = IpAddr::V4(Ipv4Addr::from(a));
            assert_eq!(addr_text(ip), ip.to_string());
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(addr_text(v6), "2001:db8::1");
    }
}
