//! One host filter for every reader of the hosts: `GET /hosts`, the hosts page (`/ui/hosts`)
//! and `flowprint hosts`. Same parameters, same meaning, everywhere (docs/serve.md, "Host
//! filters").
//!
//! | parameter | a host passes when |
//! |---|---|
//! | `q` (`--text`) | the text is part of its address, OS family, name or version, a software name, its device type or the id of a rule with evidence about it |
//! | `os` (`--os`) | its OS family **or** OS name is this value |
//! | `software` (`--software`) | one of its software names is this value |
//! | `label` (`--label`) | one of its winning labels (OS family, name or version, software, device) is this value |
//! | `subnet` (`--subnet`) | its address is in this network (CIDR) |
//! | `min_confidence` (`--min-confidence`; `min` on the pages) | each label the filter names (`os`, `software`, `label`) has at least this confidence; with none named, its best label has; a host without a label never passes |
//!
//! Every comparison ignores case (Unicode lowercase of each character); `os`, `software` and
//! `label` compare whole values, `q` finds parts. An absent or blank parameter does not filter
//! (a form sends its empty fields). The filters combine with "and".

use crate::infer::HostSummary;
use std::net::IpAddr;

/// A host filter, parsed ([`HostFilter::parse`]); `Default` passes every host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostFilter {
    /// Free text (`q`), lowercase.
    pub text: Option<String>,
    /// OS family or name (`os`).
    pub os: Option<String>,
    /// A software name (`software`).
    pub software: Option<String>,
    /// A winning label of any attribute (`label`).
    pub label: Option<String>,
    /// A network the address is in (`subnet`).
    pub subnet: Option<ipnet::IpNet>,
    /// The lowest confidence of the labels named, or of the best label (`min_confidence`).
    pub min_confidence: Option<f64>,
}

/// The filter's parameters as given, unparsed (query strings, form fields, flags).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct FilterParams {
    /// Free text.
    pub q: Option<String>,
    /// OS family or name.
    pub os: Option<String>,
    /// Software name.
    pub software: Option<String>,
    /// Any winning label.
    pub label: Option<String>,
    /// Subnet (CIDR).
    pub subnet: Option<String>,
    /// Lowest confidence, 0 to 1.
    #[serde(alias = "min")]
    pub min_confidence: Option<String>,
}

/// A parameter that is not what it should be.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FilterError {
    /// `subnet` is not a network in CIDR notation.
    #[error("subnet: `{0}` is not a subnet (10.0.0.0/8)")]
    Subnet(String),
    /// `min_confidence` is not a number.
    #[error("min_confidence: `{0}` is not a confidence (0 to 1)")]
    Confidence(String),
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn lower(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// Whether `a` and `b` are equal ignoring case (Unicode lowercase of each character).
fn same(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

impl HostFilter {
    /// Parses the parameters; blank ones do not filter.
    pub fn parse(p: &FilterParams) -> Result<HostFilter, FilterError> {
        let subnet = match given(&p.subnet) {
            Some(s) => Some(s.parse().map_err(|_| FilterError::Subnet(s.to_string()))?),
            None => None,
        };
        let min_confidence = match given(&p.min_confidence) {
            Some(m) => Some(
                m.parse()
                    .map_err(|_| FilterError::Confidence(m.to_string()))?,
            ),
            None => None,
        };
        Ok(HostFilter {
            text: given(&p.q).map(lower),
            os: given(&p.os).map(str::to_string),
            software: given(&p.software).map(str::to_string),
            label: given(&p.label).map(str::to_string),
            subnet,
            min_confidence,
        })
    }

    /// Whether it filters at all.
    pub fn is_empty(&self) -> bool {
        *self == HostFilter::default()
    }

    /// Whether it asks anything beyond `label` and `min_confidence` (which the database
    /// answers from its table of winning labels).
    pub fn beyond_labels(&self) -> bool {
        self.text.is_some() || self.os.is_some() || self.software.is_some() || self.subnet.is_some()
    }

    /// Whether `h` passes (the module docs say when).
    pub fn matches(&self, h: &HostSummary) -> bool {
        let min = self.min_confidence;
        let enough = |c: f64| min.is_none_or(|m| c >= m);
        if let Some(os) = &self.os {
            let Some(v) = &h.os else { return false };
            let named = [&v.family, &v.name]
                .iter()
                .any(|x| x.as_deref().is_some_and(|x| same(x, os)));
            if !named || !enough(v.confidence) {
                return false;
            }
        }
        if let Some(s) = &self.software
            && !h
                .software
                .iter()
                .any(|v| same(&v.name, s) && enough(v.confidence))
        {
            return false;
        }
        if let Some(l) = &self.label
            && !winners(h).any(|(v, c)| same(v, l) && enough(c))
        {
            return false;
        }
        if let Some(m) = min
            && self.os.is_none()
            && self.software.is_none()
            && self.label.is_none()
            && !winners(h).any(|(_, c)| c >= m)
        {
            return false;
        }
        if let Some(n) = &self.subnet
            && !h.host.parse::<IpAddr>().is_ok_and(|a| n.contains(&a))
        {
            return false;
        }
        if let Some(t) = &self.text {
            let t = t.as_str();
            let has = |v: &str| lower(v).contains(t);
            let found = h.host.contains(t)
                || h.os.as_ref().is_some_and(|o| {
                    [&o.family, &o.name, &o.version]
                        .iter()
                        .any(|v| v.as_deref().is_some_and(has))
                })
                || h.software.iter().any(|s| has(&s.name))
                || h.device.as_ref().is_some_and(|d| has(&d.kind))
                || h.evidence.iter().any(|e| has(&e.rule));
            if !found {
                return false;
            }
        }
        true
    }
}

/// The winning labels of a summary, (value, confidence): what the database's label table
/// holds as winners.
fn winners(h: &HostSummary) -> impl Iterator<Item = (&str, f64)> {
    let os = h.os.iter().flat_map(|o| {
        [&o.family, &o.name, &o.version]
            .into_iter()
            .filter_map(move |v| v.as_deref().map(|v| (v, o.confidence)))
    });
    let software = h.software.iter().map(|s| (s.name.as_str(), s.confidence));
    let device = h.device.iter().map(|d| (d.kind.as_str(), d.confidence));
    os.chain(software).chain(device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::score::{DeviceVerdict, OsVerdict, SoftwareVerdict};

    fn host(addr: &str, family: &str, name: &str, c: f64, software: &[(&str, f64)]) -> HostSummary {
        HostSummary {
            host: addr.into(),
            os: Some(OsVerdict {
                family: Some(family.into()),
                name: Some(name.into()),
                version: None,
                confidence: c,
            }),
            software: software
                .iter()
                .map(|(n, c)| SoftwareVerdict {
                    name: (*n).into(),
                    version: None,
                    confidence: *c,
                })
                .collect(),
            device: None,
            alternatives: Vec::new(),
            evidence: Vec::new(),
            flows: 1,
            first_seen: String::new(),
            last_seen: String::new(),
            epoch: 0,
            flags: Vec::new(),
            unscored: Vec::new(),
        }
    }

    fn filter(f: &[(&str, &str)]) -> HostFilter {
        let mut p = FilterParams::default();
        for (k, v) in f {
            let v = Some(v.to_string());
            match *k {
                "q" => p.q = v,
                "os" => p.os = v,
                "software" => p.software = v,
                "label" => p.label = v,
                "subnet" => p.subnet = v,
                "min_confidence" => p.min_confidence = v,
                _ => unreachable!(),
            }
        }
        HostFilter::parse(&p).unwrap()
    }

    #[test]
    fn os_is_the_family_or_the_name_in_any_case() {
        let h = host("10.0.0.1", "Linux", "Ubuntu", 0.8, &[]);
        assert!(filter(&[("os", "linux")]).matches(&h));
        assert!(filter(&[("os", "UBUNTU")]).matches(&h));
        assert!(!filter(&[("os", "ubu")]).matches(&h));
        assert!(filter(&[("q", "ubu")]).matches(&h));
        assert!(filter(&[("os", " ")]).is_empty());
    }

    #[test]
    fn the_confidence_bound_applies_to_the_labels_named() {
        let h = host("10.0.0.1", "Linux", "Ubuntu", 0.5, &[("Firefox", 0.9)]);
        assert!(filter(&[("min_confidence", "0.9")]).matches(&h));
        assert!(!filter(&[("os", "linux"), ("min_confidence", "0.9")]).matches(&h));
        assert!(filter(&[("software", "firefox"), ("min_confidence", "0.9")]).matches(&h));
        assert!(!filter(&[("label", "ubuntu"), ("min_confidence", "0.6")]).matches(&h));
        assert!(filter(&[("label", "FIREFOX"), ("min_confidence", "0.9")]).matches(&h));
        let mut bare = host("10.0.0.2", "x", "x", 0.0, &[]);
        bare.os = None;
        assert!(!filter(&[("min_confidence", "0")]).matches(&bare));
        bare.device = Some(DeviceVerdict {
            kind: "printer".into(),
            confidence: 0.7,
        });
        assert!(filter(&[("label", "Printer")]).matches(&bare));
    }

    #[test]
    fn subnets_and_bad_values() {
        let h = host("10.7.1.1", "Linux", "Ubuntu", 0.5, &[]);
        assert!(filter(&[("subnet", "10.7.1.0/24")]).matches(&h));
        assert!(!filter(&[("subnet", "10.7.2.0/24")]).matches(&h));
        let bad = FilterParams {
            subnet: Some("x".into()),
            ..FilterParams::default()
        };
        assert_eq!(
            HostFilter::parse(&bad),
            Err(FilterError::Subnet("x".into()))
        );
    }
}
