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

/// The byte offset of line `line` (from 1) of `text`.
fn line_start(text: &str, line: usize) -> Option<usize> {
    if line == 0 {
        return None;
    }
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return Some(offset);
        }
        offset += l.len();
    }
    None
}

/// Why an overrides file is not valid, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct OverridesError {
    /// What is wrong (yaml_serde's message names the line and column).
    pub message: String,
    /// The byte offset in the file it is about, when known.
    pub offset: Option<usize>,
}

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
    pub fn parse(text: &str) -> Result<Overrides, OverridesError> {
        if text.trim().is_empty() {
            return Ok(Overrides::default());
        }
        crate::limits::check_yaml(text, crate::limits::MAX_YAML_NESTING).map_err(|e| {
            OverridesError {
                message: e.to_string(),
                offset: None,
            }
        })?;
        let o: Overrides = yaml_serde::from_str(text).map_err(|e| OverridesError {
            // The start of the line it names (the parser counts characters, not bytes).
            offset: e.location().and_then(|l| line_start(text, l.line())),
            message: e.to_string(),
        })?;
        for (id, m) in &o.modify {
            if let Some(c) = m.confidence
                && !(c > 0.0 && c <= 1.0)
            {
                return Err(OverridesError {
                    message: format!("modify.{id}.confidence: `{c}` is not in (0, 1]"),
                    // The entry's key, where the file names it.
                    offset: text.find(id.as_str()),
                });
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

#[cfg(test)]
mod location_tests {
    use super::*;

    #[test]
    fn an_invalid_file_says_where() {
        // A YAML error on line 3: the offset is that line's start.
        let text = "disable:\n  - os-core/a\nmodify: [oops\n";
        let e = Overrides::parse(text).unwrap_err();
        assert_eq!(e.offset, Some(text.find("modify").unwrap()), "{e}");
        assert!(e.message.contains("line 3"), "{e}");
        // An unknown key, on line 2 after a valid line.
        let text = "disable: []\nenable:\n  - x/y\n";
        let e = Overrides::parse(text).unwrap_err();
        assert_eq!(e.offset, Some(text.find("enable").unwrap()), "{e}");
        // A confidence out of range points at its entry.
        let text = "disable: []\nmodify:\n  p/r:\n    confidence: 2\n";
        let e = Overrides::parse(text).unwrap_err();
        assert_eq!(e.offset, Some(text.find("p/r").unwrap()), "{e}");
        // A multi-byte character before the error does not move it off a character boundary.
        let text = "# überschrieben ✓\nmodify: [oops\n";
        let e = Overrides::parse(text).unwrap_err();
        assert_eq!(e.offset, Some(text.find("modify").unwrap()), "{e}");
    }
}
