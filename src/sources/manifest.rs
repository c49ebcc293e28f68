//! `pack.yaml`: what a pack is, which flowprint versions it works with, what it needs.
//!
//! ```yaml
//! name: software-core            # the namespace of its rule ids and lists: software-core/steam
//! version: 1.2.0                 # semver
//! description: Software from flow records
//! authors: ["Jane Analyst <jane@example.org>"]
//! license: Apache-2.0
//! homepage: https://example.org/packs/software-core
//! flowprint: ">=0.1, <2"         # the flowprint versions it works with (semver requirement)
//! depends:                       # packs whose lists it uses, with version requirements
//!   os-core: ">=0.2"
//! ```

use semver::{Version, VersionReq};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The file name of a pack's manifest.
pub const FILE: &str = "pack.yaml";

/// A parsed, validated `pack.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The pack's name: lowercase letters, digits and `-`, starting with a letter.
    pub name: String,
    /// Its version.
    pub version: Version,
    /// One line on what it detects.
    pub description: String,
    /// Who wrote it.
    pub authors: Vec<String>,
    /// SPDX licence expression.
    pub license: String,
    /// Where it lives.
    pub homepage: Option<String>,
    /// The flowprint versions it works with.
    pub flowprint: VersionReq,
    /// Packs it needs, with the versions it works with.
    pub depends: BTreeMap<String, VersionReq>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: String,
    version: serde_json::Value,
    #[serde(default)]
    description: String,
    #[serde(default)]
    authors: Vec<String>,
    #[serde(default)]
    license: String,
    homepage: Option<String>,
    flowprint: Option<String>,
    #[serde(default)]
    depends: BTreeMap<String, String>,
}

/// A manifest that cannot be used; the message names the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ManifestError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// The text of `<dir>/pack.yaml`, read within [`crate::limits::MAX_YAML_FILE`]; what every
/// loader of a pack directory should read it with.
pub fn read_text(dir: &Path) -> Result<String, crate::limits::ReadError> {
    crate::limits::read_text_bounded(
        &dir.join(FILE),
        crate::limits::MAX_YAML_FILE,
        "a pack manifest",
    )
}

/// Whether `name` is a valid pack name.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.len() <= 64
}

impl Manifest {
    /// Parses and validates manifest text; `path` is only for messages.
    pub fn parse(text: &str, path: &str) -> Result<Manifest, ManifestError> {
        let err = |message: String| ManifestError {
            path: path.to_string(),
            message,
        };
        crate::limits::check_yaml(text, crate::limits::MAX_YAML_NESTING)
            .map_err(|e| err(e.to_string()))?;
        let raw: Raw = yaml_serde::from_str(text).map_err(|e| err(e.to_string()))?;
        if !valid_name(&raw.name) {
            return Err(err(format!(
                "name: `{}` is not a pack name (lowercase letters, digits and `-`, starting with a letter)",
                raw.name
            )));
        }
        let version_text = match &raw.version {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let version = Version::parse(&version_text).map_err(|e| {
            err(format!(
                "version: `{version_text}` is not a semver version: {e}"
            ))
        })?;
        let flowprint = match &raw.flowprint {
            Some(r) => VersionReq::parse(r).map_err(|e| {
                err(format!(
                    "flowprint: `{r}` is not a version requirement: {e}"
                ))
            })?,
            None => VersionReq::STAR,
        };
        let mut depends = BTreeMap::new();
        for (name, req) in &raw.depends {
            if !valid_name(name) {
                return Err(err(format!("depends: `{name}` is not a pack name")));
            }
            if *name == raw.name {
                return Err(err(format!(
                    "depends: the pack depends on itself (`{name}`)"
                )));
            }
            let req = VersionReq::parse(req).map_err(|e| {
                err(format!(
                    "depends.{name}: `{req}` is not a version requirement: {e}"
                ))
            })?;
            depends.insert(name.clone(), req);
        }
        if raw.license.trim().is_empty() {
            return Err(err(
                "license: missing (an SPDX expression, e.g. Apache-2.0)".into(),
            ));
        }
        Ok(Manifest {
            name: raw.name,
            version,
            description: raw.description,
            authors: raw.authors,
            license: raw.license,
            homepage: raw.homepage,
            flowprint,
            depends,
        })
    }

    /// Reads `<dir>/pack.yaml`.
    pub fn read(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(FILE);
        let text = read_text(dir).map_err(|e| ManifestError {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Manifest::parse(&text, &path.display().to_string())
    }

    /// Whether this flowprint (its crate version) satisfies the pack's `flowprint` requirement.
    pub fn engine_ok(&self) -> bool {
        let me = Version::parse(env!("CARGO_PKG_VERSION")).expect("the crate version is semver");
        req_matches(&self.flowprint, &me)
    }
}

/// `req.matches(v)`, except that a requirement without pre-release parts also accepts
/// pre-release versions (a development build of 0.2.0-dev satisfies ">=0.1").
pub fn req_matches(req: &VersionReq, v: &Version) -> bool {
    req.matches(v) || (!v.pre.is_empty() && req.matches(&Version::new(v.major, v.minor, v.patch)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_manifest_parses() {
        let m = Manifest::parse(
            "name: software-core\nversion: 1.2.0\ndescription: d\nauthors: [a]\nlicense: MIT\nflowprint: \">=0.1\"\ndepends:\n  os-core: \">=0.2, <1\"\n",
            "pack.yaml",
        )
        .unwrap();
        assert_eq!(m.name, "software-core");
        assert_eq!(m.version, Version::new(1, 2, 0));
        assert!(m.engine_ok());
        assert!(m.depends["os-core"].matches(&Version::new(0, 3, 0)));
    }

    #[test]
    fn errors_name_the_key() {
        let e = Manifest::parse("name: Bad_Name\nversion: 1.0.0\nlicense: MIT\n", "p").unwrap_err();
        assert!(e.message.starts_with("name:"), "{e}");
        let e = Manifest::parse("name: a\nversion: one\nlicense: MIT\n", "p").unwrap_err();
        assert!(e.message.starts_with("version:"), "{e}");
        let e = Manifest::parse(
            "name: a\nversion: 1.0.0\nlicense: MIT\nflowprint: \">>1\"\n",
            "p",
        )
        .unwrap_err();
        assert!(e.message.starts_with("flowprint:"), "{e}");
        let e = Manifest::parse("name: a\nversion: 1.0.0\nlicense: MIT\nhomepag: x\n", "p")
            .unwrap_err();
        assert!(e.message.contains("homepag"), "{e}");
        let e = Manifest::parse("name: a\nversion: 1.0.0\n", "p").unwrap_err();
        assert!(e.message.starts_with("license:"), "{e}");
        let e = Manifest::parse(
            "name: a\nversion: 1.0.0\nlicense: MIT\nflowprint: \">=99\"\n",
            "p",
        )
        .unwrap();
        assert!(!e.engine_ok());
    }
}
