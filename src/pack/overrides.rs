//! Local overrides: disable rules or change their confidence without editing the packs (as
//! suricata-update's `disable.conf` and `modify.conf` do).
//!
//! ```yaml
//! # overrides.yaml
//! disable:
//!   - os-core/linux-ttl-64          # one rule
//!   - iot/*                         # every rule of a pack
//! modify:
//!   software-core/steam-client:
//!     confidence: 0.5               # every conclusion of the rule gets this confidence
//! ```
//!
//! The compiler applies them after compiling the packs ([`crate::compiler::Compiler::add_overrides`]);
//! an entry that names no loaded rule is a warning (FP0023), so a typo does not pass silently.

use serde::Deserialize;
use std::collections::BTreeMap;

/// What to change.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Rule ids (`pack/id`) or whole packs (`pack/*`) to leave out.
    #[serde(default)]
    pub disable: Vec<String>,
    /// Per rule id: what to change.
    #[serde(default)]
    pub modify: BTreeMap<String, Modify>,
}

/// Changes to one rule.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Modify {
    /// The confidence of every conclusion, in (0, 1].
    pub confidence: Option<f64>,
}

impl Overrides {
    /// Parses an overrides file.
    pub fn parse(text: &str) -> Result<Overrides, String> {
        if text.trim().is_empty() {
            return Ok(Overrides::default());
        }
        crate::limits::check_yaml(text, crate::limits::MAX_YAML_NESTING)
            .map_err(|e| e.to_string())?;
        let o: Overrides = yaml_serde::from_str(text).map_err(|e| e.to_string())?;
        for (id, m) in &o.modify {
            if let Some(c) = m.confidence
                && !(c > 0.0 && c <= 1.0)
            {
                return Err(format!("modify.{id}.confidence: `{c}` is not in (0, 1]"));
            }
        }
        Ok(o)
    }

    /// Whether `id` (`pack/rule`) is disabled.
    pub fn disables(&self, id: &str) -> bool {
        self.disable.iter().any(|d| matches(d, id))
    }
}

/// Whether an override entry (`pack/id` or `pack/*`) names `id`.
pub fn matches(entry: &str, id: &str) -> bool {
    match entry.strip_suffix("/*") {
        Some(pack) => id.split_once('/').is_some_and(|(p, _)| p == pack),
        None => entry == id,
    }
}
