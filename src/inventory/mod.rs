//! The persistent host inventory: an embedded SQLite file by default, PostgreSQL as the real
//! database option. Both keep the same schema and answer the same queries.
//!
//! What is stored per host: the current epoch (a new one starts when an address is reassigned
//! to another machine), flow counts and times, the evidence per rule (enough to rebuild the
//! scores after a restart), the labels with their scores (for queries), and the host's summary
//! as JSON (the same object `analyze --format json` prints).

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
    pub summary: serde_json::Value,
}

/// Filters of `flowprint hosts`.
#[derive(Debug, Clone, Default)]
pub struct HostQuery {
    /// Only hosts with a winning label equal to this value (any attribute), case-insensitive.
    pub label: Option<String>,
    /// Only hosts whose winning label (the one matched by `label`, or any) has at least this
    /// confidence.
    pub min_confidence: Option<f64>,
}

/// A storage failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("inventory {action}: {message}")]
pub struct StoreError {
    /// What was attempted ("open", "save", "load", "query").
    pub action: &'static str,
    /// The database's message.
    pub message: String,
}

/// A place to keep the inventory.
pub trait Store {
    /// Writes (inserts or replaces) these hosts in one transaction.
    fn save(&mut self, hosts: &[StoredHost]) -> Result<(), StoreError>;
    /// Reads every host back.
    fn load_all(&mut self) -> Result<Vec<StoredHost>, StoreError>;
    /// The summaries of the hosts matching `query`, ordered by address.
    fn query(&mut self, query: &HostQuery) -> Result<Vec<serde_json::Value>, StoreError>;
}
