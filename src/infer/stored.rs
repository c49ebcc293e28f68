//! A host's state as the inventory database keeps it: its evidence, labels, epochs and summary.
//! Made here (the host table writes them, [`crate::inventory`] stores them), so that the host
//! table needs nothing of the database.

use serde::{Deserialize, Serialize};

/// One rule's accumulated evidence about a host, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvidence {
    /// `pack/id` of the rule.
    pub rule: String,
    /// Matching flows (or, for stateful rules, times the rule fired).
    pub flows: u64,
    /// First matching flow, ms since the epoch.
    pub first_seen: i64,
    /// Last matching flow, ms since the epoch.
    pub last_seen: i64,
}

/// A label of a host with its score, as stored for queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredLabel {
    /// `os.family`, `os.name`, `os.version`, `software`, `device`.
    pub attribute: String,
    /// The label (for software: the product name).
    pub value: String,
    /// For software: the best-supported version.
    pub version: Option<String>,
    /// Combined confidence.
    pub confidence: f64,
    /// Whether it is the winning label of its attribute (else an alternative).
    pub winner: bool,
}

/// The start of an epoch of a host address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEpoch {
    /// 0 for the first epoch.
    pub epoch: u32,
    /// When it started, ms since the epoch.
    pub started: i64,
    /// Why (empty for the first epoch), e.g. "os.family changed from Windows to Android".
    pub reason: String,
}

/// Everything stored about one host address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredHost {
    /// The address, as text.
    pub host: String,
    /// Current epoch.
    pub epoch: u32,
    /// Flows of the current epoch.
    pub flows: u64,
    /// First flow of the current epoch, ms.
    pub first_seen: i64,
    /// Last flow, ms.
    pub last_seen: i64,
    /// Evidence of the current epoch.
    pub evidence: Vec<StoredEvidence>,
    /// Labels with scores (current epoch).
    pub labels: Vec<StoredLabel>,
    /// All epochs of this address, oldest first.
    pub epochs: Vec<StoredEpoch>,
    /// The host's summary as `analyze --format json` prints it.
    pub summary: SummaryJson,
}

/// A host's summary as JSON text, as `analyze --format json` prints it: serialised once from
/// the host's state and stored as it is, without a `serde_json::Value` tree in between (building
/// and dropping that tree was a quarter of an inventory write). Read back, the text is checked
/// to be JSON; [`SummaryJson::value`] parses it when a caller needs the fields.
#[derive(Debug, Clone)]
pub struct SummaryJson(String);

/// Two summaries are equal when they say the same (PostgreSQL keeps JSONB, whose text puts keys
/// in its own order).
impl PartialEq for SummaryJson {
    fn eq(&self, other: &SummaryJson) -> bool {
        self.0 == other.0 || self.value() == other.value()
    }
}

impl SummaryJson {
    /// The summary of `value` (`null` if it cannot be serialised, which a summary cannot).
    pub fn of(value: &impl Serialize) -> SummaryJson {
        SummaryJson(serde_json::to_string(value).unwrap_or_else(|_| "null".into()))
    }

    /// Stored text read back: an error when it is not JSON.
    pub fn parse(text: String) -> Result<SummaryJson, serde_json::Error> {
        serde_json::from_str::<serde::de::IgnoredAny>(&text).map(|_| SummaryJson(text))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The summary parsed.
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

impl From<serde_json::Value> for SummaryJson {
    fn from(v: serde_json::Value) -> SummaryJson {
        SummaryJson(v.to_string())
    }
}

impl Serialize for SummaryJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for SummaryJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SummaryJson, D::Error> {
        serde_json::Value::deserialize(d).map(SummaryJson::from)
    }
}
