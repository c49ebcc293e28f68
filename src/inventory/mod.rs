//! The persistent host inventory: an embedded SQLite file by default, PostgreSQL as the real
//! database option. Both keep the same schema and answer the same queries.
//!
//! What is stored per host: the current epoch (a new one starts when an address is reassigned
//! to another machine), flow counts and times, the evidence per rule (enough to rebuild the
//! scores after a restart), the labels with their scores (for queries), and the host's summary
//! as JSON (the same object `analyze --format json` prints).

use serde::{Deserialize, Serialize};

pub mod filter;
pub use filter::{FilterError, FilterParams, HostFilter};

pub use crate::infer::stored::{StoredEpoch, StoredEvidence, StoredHost, StoredLabel, SummaryJson};

/// A stored summary read back: refused when it is not JSON.
fn read_summary(host: &str, text: String) -> Result<SummaryJson, DbError> {
    SummaryJson::parse(text).map_err(|e| summary_not_json(host, e))
}

/// A failure of the inventory database (`inventory` is the database; the rule store's errors
/// are [`DbError`]).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database failed or refused, with what was being done.
    #[error("inventory {action}: {message}")]
    Database {
        /// What was attempted ("open", "save", "load", "query").
        action: &'static str,
        /// The database's message.
        message: String,
    },
    /// A fleet write refused because its tenure lost the shard ([`Store::save_marked`]): the
    /// writer must drop the shard, not retry. Nothing of the write was applied.
    #[error(
        "inventory save: fenced: shard {shard} of {stream} was claimed again since the claim that issued fence {fence}, or its stored mark is above {seq} (this tenure lost the shard)"
    )]
    Fenced {
        /// The JetStream stream.
        stream: String,
        /// The shard.
        shard: u32,
        /// The writer's fence.
        fence: u64,
        /// The mark the writer tried to store.
        seq: u64,
    },
}

impl DbError {
    /// What was attempted ("open", "save", "load", "query").
    pub fn action(&self) -> &'static str {
        match self {
            DbError::Database { action, .. } => action,
            DbError::Fenced { .. } => "save",
        }
    }

    /// The same failure, as part of another action (a load inside a query).
    fn during(self, action: &'static str) -> DbError {
        match self {
            DbError::Database { message, .. } => DbError::Database { action, message },
            fenced => fenced,
        }
    }
}

/// One (address, name) pair of the passive DNS map, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredDnsPair {
    /// The address, as text.
    pub addr: String,
    /// The name.
    pub name: String,
    /// First sighting, ms.
    pub first_seen: i64,
    /// Last sighting, ms.
    pub last_seen: i64,
    /// TTL, seconds.
    pub ttl: u32,
    /// `Log`, `Capture`, `Resolved`...
    pub source: String,
}

/// How far a fleet worker has applied one shard of the bus: every batch of the stream at or
/// below `seq` on this shard has its evidence in the hosts stored with the mark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetMark {
    /// The JetStream stream.
    pub stream: String,
    /// The shard.
    pub shard: u32,
    /// The highest stream sequence applied.
    pub seq: u64,
    /// The fence the database issued when the writer's tenure claimed the shard
    /// ([`Store::claim_shard`]): a write with another fence than the stored one comes from a
    /// tenure that lost the shard, and is refused.
    pub fence: u64,
    /// The batches applied since the shard's previous write, as (stream sequence, batch id):
    /// stored with the mark, so that the shard's next owner knows them and does not count a
    /// second copy of one of them (the server's duplicate window missed it) as new. The last
    /// [`MAX_STORED_BATCHES`] per shard are kept. Not part of the mark's JSON.
    #[serde(skip)]
    pub batches: Vec<(u64, [u8; 24])>,
}

/// Batch ids kept per shard in the database ([`FleetMark::batches`]).
pub const MAX_STORED_BATCHES: u32 = 4096;

/// A place to keep the inventory.
pub trait Store: Send {
    /// Merges these DNS pairs into the stored map (one transaction).
    fn save_dns(&mut self, pairs: &[StoredDnsPair]) -> Result<(), DbError>;
    /// Reads the stored DNS map.
    fn load_dns(&mut self) -> Result<Vec<StoredDnsPair>, DbError>;
    /// Writes (inserts or replaces) these hosts in one transaction.
    fn save(&mut self, hosts: &[StoredHost]) -> Result<(), DbError> {
        self.save_marked(hosts, &[])
    }
    /// Writes these hosts and the fleet's applied marks in one transaction: either all of it
    /// lands or none. A mark whose fence is not the stored one (the shard was claimed again
    /// since), or whose sequence is below the stored one, refuses the whole transaction with a
    /// [`DbError::Fenced`].
    fn save_marked(&mut self, hosts: &[StoredHost], marks: &[FleetMark]) -> Result<(), DbError>;
    /// The fleet's applied marks.
    fn load_marks(&mut self) -> Result<Vec<FleetMark>, DbError>;
    /// The last batches applied and written on a shard ([`FleetMark::batches`]), as (stream
    /// sequence, batch id).
    fn load_batches(&mut self, stream: &str, shard: u32) -> Result<Vec<(u64, [u8; 24])>, DbError>;
    /// Claims a shard for a new tenure (a lease taken, or a tenure gone back to its last write):
    /// the database issues the shard's next fence, so that every write of an earlier tenure, of
    /// whichever worker, is refused from now on. Returns the shard's mark and the new fence.
    /// Called before the shard's hosts are read.
    fn claim_shard(&mut self, stream: &str, shard: u32) -> Result<(u64, u64), DbError>;
    /// Reads every host back.
    fn load_all(&mut self) -> Result<Vec<StoredHost>, DbError>;
    /// Deletes every stored evidence row of these rules (one transaction); returns the rows
    /// deleted. Only on an explicit request (`analyze --prune-unknown-rules`): evidence of rules
    /// that are not loaded is otherwise kept.
    fn delete_rule_evidence(&mut self, rules: &[String]) -> Result<u64, DbError>;
    /// The summaries of the hosts that `query` passes ([`filter`]), ordered by address. The
    /// label table (each summary's labels, written with it) answers `label` and
    /// `min_confidence`; the other parameters are checked on the summaries.
    fn query(&mut self, query: &HostFilter) -> Result<Vec<serde_json::Value>, DbError>;
}

pub mod postgres;
pub mod sqlite;

impl StoredDnsPair {
    /// Puts stored pairs back into a DNS map as pairs already written (`DnsMap::insert_saved`);
    /// a row whose address does not parse is left out. How many were put back.
    pub fn restore(pairs: &[StoredDnsPair], map: &mut crate::dns::DnsMap) -> usize {
        let mut restored = 0;
        for p in pairs {
            if let Ok(addr) = p.addr.parse() {
                map.insert_saved(
                    addr,
                    &p.name,
                    p.first_seen,
                    p.last_seen,
                    p.ttl,
                    crate::dns::Source::parse(&p.source),
                );
                restored += 1;
            }
        }
        restored
    }

    /// Every (address, name) pair of a DNS map, as stored rows.
    pub fn all_of(map: &crate::dns::DnsMap) -> Vec<StoredDnsPair> {
        Self::changed_in(map, None)
    }

    /// The pairs of a DNS map changed since it was at `version` (all for `None`), as stored
    /// rows: what a writer that stored the map at that version writes again.
    pub fn changed_in(map: &crate::dns::DnsMap, version: Option<u64>) -> Vec<StoredDnsPair> {
        map.pairs_since(version)
            .into_iter()
            .map(
                |(addr, name, first_seen, last_seen, ttl, source)| StoredDnsPair {
                    addr: addr.to_string(),
                    name: name.to_string(),
                    first_seen,
                    last_seen,
                    ttl,
                    source: source.as_str().to_string(),
                },
            )
            .collect()
    }
}

/// Opens the inventory that `spec` names: a `postgres://` or `postgresql://` URL connects to
/// PostgreSQL, anything else is the path of a SQLite file (created if absent).
pub fn open(spec: &str) -> Result<Box<dyn Store>, DbError> {
    open_with(spec, true)
}

/// [`open`] for commands that only read (`hosts`, `dns lookup`): a SQLite file must exist
/// (a mistyped path is an error, not a new empty inventory).
pub fn open_existing(spec: &str) -> Result<Box<dyn Store>, DbError> {
    open_with(spec, false)
}

fn open_with(spec: &str, create: bool) -> Result<Box<dyn Store>, DbError> {
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        Ok(Box::new(postgres::PostgresStore::connect(spec)?))
    } else {
        let path = std::path::Path::new(spec);
        Ok(Box::new(if create {
            sqlite::SqliteStore::open(path)?
        } else {
            sqlite::SqliteStore::open_existing(path)?
        }))
    }
}

// ---- What both backends share: the schema, the statements' common parts, the checks and
// conversions before a save, the assembly of hosts after a load, and the query's filtering.

/// The schema's versions: version `n` is `MIGRATIONS[n - 1]`, written with `{integer}`, `{real}`,
/// `{boolean}` and `{json}` for each backend's names of these types (see [`migration`]). A
/// database records the versions it has in `schema_version`; a new version is appended here and
/// applied by both backends when they next open the database.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE hosts (
        host       TEXT PRIMARY KEY,
        epoch      {integer} NOT NULL,
        flows      {integer} NOT NULL,
        first_seen {integer} NOT NULL,
        last_seen  {integer} NOT NULL,
        summary    {json} NOT NULL,
        updated_at {integer} NOT NULL
    );
    CREATE TABLE epochs (
        host    TEXT NOT NULL,
        epoch   {integer} NOT NULL,
        started {integer} NOT NULL,
        reason  TEXT NOT NULL,
        PRIMARY KEY (host, epoch)
    );
    CREATE TABLE labels (
        host       TEXT NOT NULL,
        attribute  TEXT NOT NULL,
        value      TEXT NOT NULL,
        version    TEXT,
        confidence {real} NOT NULL,
        winner     {boolean} NOT NULL
    );
    CREATE INDEX labels_host ON labels (host);
    CREATE INDEX labels_value ON labels (value);
    CREATE TABLE evidence (
        host       TEXT NOT NULL,
        rule       TEXT NOT NULL,
        flows      {integer} NOT NULL,
        first_seen {integer} NOT NULL,
        last_seen  {integer} NOT NULL,
        PRIMARY KEY (host, rule)
    );
",
    "
    CREATE TABLE dns (
        addr       TEXT NOT NULL,
        name       TEXT NOT NULL,
        first_seen {integer} NOT NULL,
        last_seen  {integer} NOT NULL,
        ttl        {integer} NOT NULL,
        source     TEXT NOT NULL,
        PRIMARY KEY (addr, name)
    );
",
    "
    CREATE TABLE fleet_marks (
        stream     TEXT NOT NULL,
        shard      {integer} NOT NULL,
        seq        {integer} NOT NULL,
        fence      {integer} NOT NULL,
        updated_at {integer} NOT NULL,
        PRIMARY KEY (stream, shard)
    );
",
    "
    CREATE TABLE fleet_batches (
        stream TEXT NOT NULL,
        shard  {integer} NOT NULL,
        id     TEXT NOT NULL,
        seq    {integer} NOT NULL,
        PRIMARY KEY (stream, shard, id)
    );
    CREATE INDEX fleet_batches_seq ON fleet_batches (stream, shard, seq);
",
];

/// Remembering a written batch's id (a second write of the same id changes nothing).
pub(crate) const INSERT_BATCH: &str =
    "INSERT INTO fleet_batches (stream, shard, id, seq) VALUES ($1, $2, $3, $4)
    ON CONFLICT (stream, shard, id) DO NOTHING";

/// Forgetting a shard's batch ids beyond the last [`MAX_STORED_BATCHES`] ($3).
pub(crate) const PRUNE_BATCHES: &str = "DELETE FROM fleet_batches WHERE stream = $1 AND shard = $2 AND seq <= (
    SELECT seq FROM fleet_batches WHERE stream = $1 AND shard = $2 ORDER BY seq DESC LIMIT 1 OFFSET $3)";

/// A shard's batch ids.
pub(crate) const LOAD_BATCHES: &str =
    "SELECT seq, id FROM fleet_batches WHERE stream = $1 AND shard = $2";

/// A batch id as stored: 48 hexadecimal digits.
pub(crate) fn batch_hex(id: &[u8; 24]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stored batch id read back (`None` for a row that is not one).
pub(crate) fn batch_from_hex(s: &str) -> Option<[u8; 24]> {
    if s.len() != 48 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 24];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Writing a fleet mark, fenced: the row changes only when the writer's fence is the stored one
/// (the writer's tenure is the shard's last claim) and its mark is not below the stored one (a
/// tenure's mark only rises). Zero rows changed means the writer lost the shard.
pub(crate) const UPSERT_MARK: &str =
    "INSERT INTO fleet_marks (stream, shard, seq, fence, updated_at) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (stream, shard) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at
    WHERE fleet_marks.fence = excluded.fence AND fleet_marks.seq <= excluded.seq";

/// Claiming a shard: the database issues the next fence (one more than the last claim's), the
/// mark kept (0 for a shard never written). Returns the mark and the new fence.
pub(crate) const CLAIM_MARK: &str = "INSERT INTO fleet_marks (stream, shard, seq, fence, updated_at) VALUES ($1, $2, 0, 1, $3)
    ON CONFLICT (stream, shard) DO UPDATE SET fence = fleet_marks.fence + 1, updated_at = excluded.updated_at
    RETURNING seq, fence";

/// The read of every fleet mark.
pub(crate) const LOAD_MARKS: &str = "SELECT stream, shard, seq, fence FROM fleet_marks";

/// The error of a fenced mark.
pub(crate) fn fenced(m: &FleetMark) -> DbError {
    DbError::Fenced {
        stream: m.stream.clone(),
        shard: m.shard,
        fence: m.fence,
        seq: m.seq,
    }
}

/// Merging a stored (address, name) pair with a new sighting: the earliest first, the latest
/// last, the longest TTL. `{min}`/`{max}` are each backend's two-argument functions.
const UPSERT_DNS: &str = "INSERT INTO dns (addr, name, first_seen, last_seen, ttl, source) VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (addr, name) DO UPDATE SET first_seen = {min}(dns.first_seen, excluded.first_seen),
    last_seen = {max}(dns.last_seen, excluded.last_seen), ttl = {max}(dns.ttl, excluded.ttl), source = excluded.source";

/// The upsert of a DNS pair in a backend's SQL dialect.
pub(crate) fn upsert_dns_sql(postgres: bool) -> String {
    let (min, max) = if postgres {
        ("LEAST", "GREATEST")
    } else {
        ("min", "max")
    };
    let sql = UPSERT_DNS.replace("{min}", min).replace("{max}", max);
    if postgres { sql } else { sql.replace('$', "?") }
}

/// The read of every DNS pair.
pub(crate) const LOAD_DNS: &str = "SELECT addr, name, first_seen, last_seen, ttl, source FROM dns";

/// A backend's names of the schema's types.
struct SqlTypes {
    integer: &'static str,
    real: &'static str,
    boolean: &'static str,
    json: &'static str,
}

/// Migration `sql` in a backend's types.
fn migration(sql: &str, types: &SqlTypes) -> String {
    sql.replace("{integer}", types.integer)
        .replace("{real}", types.real)
        .replace("{boolean}", types.boolean)
        .replace("{json}", types.json)
}

/// Why a migration failed: the database's error, or a schema newer than this program's.
enum MigrationError<E> {
    Sql(E),
    Newer(i64),
}

impl<E: std::fmt::Display> MigrationError<E> {
    fn into_store_error(self, database: &str) -> DbError {
        match self {
            MigrationError::Sql(e) => store_error("open", format!("{database}: {e}")),
            MigrationError::Newer(found) => store_error(
                "open",
                format!(
                    "{database}: schema version {found} is newer than this flowprint's ({})",
                    MIGRATIONS.len()
                ),
            ),
        }
    }
}

/// The table of applied schema versions (the same text for both backends).
const SCHEMA_VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)";

/// The conflicting statements of a save, given each backend's source of rows (`VALUES (...)` or
/// `SELECT ... FROM unnest(...)`): hosts are upserted, epochs inserted unless present. (A host's
/// labels and evidence are deleted, then inserted.)
macro_rules! save_sql {
    (upsert_host, $rows:literal) => {
        concat!(
            "INSERT INTO hosts (host, epoch, flows, first_seen, last_seen, summary, updated_at) ",
            $rows,
            " ON CONFLICT (host) DO UPDATE SET epoch = excluded.epoch, flows = excluded.flows,
              first_seen = excluded.first_seen, last_seen = excluded.last_seen,
              summary = excluded.summary, updated_at = excluded.updated_at"
        )
    };
    (insert_epoch, $rows:literal) => {
        concat!(
            "INSERT INTO epochs (host, epoch, started, reason) ",
            $rows,
            " ON CONFLICT (host, epoch) DO NOTHING"
        )
    };
}
pub(crate) use save_sql;

/// The reads of `load_all` and `query` (PostgreSQL reads the JSONB summary `::text`).
const LOAD_EVIDENCE: &str = "SELECT host, rule, flows, first_seen, last_seen FROM evidence";
const LOAD_LABELS: &str = "SELECT host, attribute, value, version, confidence, winner FROM labels";
const LOAD_EPOCHS: &str = "SELECT host, epoch, started, reason FROM epochs";
const QUERY_WINNERS: &str = "SELECT host, value, confidence FROM labels WHERE winner";

fn store_error(action: &'static str, message: impl std::fmt::Display) -> DbError {
    DbError::Database {
        action,
        message: message.to_string(),
    }
}

/// Milliseconds since the Unix epoch, now (`updated_at`, `applied_at`).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One host of a save, checked and converted to the databases' integer types.
struct HostSave<'a> {
    host: &'a str,
    epoch: i64,
    flows: i64,
    first_seen: i64,
    last_seen: i64,
    summary: &'a str,
    /// `(rule, flows, first_seen, last_seen)`.
    evidence: Vec<(&'a str, i64, i64, i64)>,
    labels: &'a [StoredLabel],
    /// Every epoch given for this host in the batch, each number once (the first given).
    epochs: Vec<&'a StoredEpoch>,
}

/// Checks and converts a save: a host given twice counts once (the last one; the epochs of all),
/// counts must fit a signed 64-bit column and confidences must be finite.
fn save_batch(hosts: &[StoredHost]) -> Result<Vec<HostSave<'_>>, DbError> {
    let mut last = rustc_hash::FxHashMap::<&str, usize>::default();
    for (i, h) in hosts.iter().enumerate() {
        last.insert(h.host.as_str(), i);
    }
    let mut batch = Vec::with_capacity(last.len());
    let mut slot = rustc_hash::FxHashMap::<&str, usize>::default();
    for (i, h) in hosts.iter().enumerate() {
        if last[h.host.as_str()] != i {
            continue;
        }
        // What a count is named in the error is only formatted for the error.
        let flows = |n: u64, what: &dyn Fn() -> String| {
            i64::try_from(n).map_err(|_| {
                store_error(
                    "save",
                    format!("host {}: {} flows {n} out of range", h.host, what()),
                )
            })
        };
        let mut evidence = Vec::with_capacity(h.evidence.len());
        for e in &h.evidence {
            let n = flows(e.flows, &|| format!("rule {}", e.rule))?;
            evidence.push((e.rule.as_str(), n, e.first_seen, e.last_seen));
        }
        if let Some(l) = h.labels.iter().find(|l| !l.confidence.is_finite()) {
            return Err(store_error(
                "save",
                format!(
                    "host {}: label {} = {}: confidence {} is not finite",
                    h.host, l.attribute, l.value, l.confidence
                ),
            ));
        }
        slot.insert(h.host.as_str(), batch.len());
        batch.push(HostSave {
            host: &h.host,
            epoch: i64::from(h.epoch),
            flows: flows(h.flows, &|| "host".to_string())?,
            first_seen: h.first_seen,
            last_seen: h.last_seen,
            summary: h.summary.as_str(),
            evidence,
            labels: &h.labels,
            epochs: Vec::new(),
        });
    }
    for h in hosts {
        let epochs = &mut batch[slot[h.host.as_str()]].epochs;
        for e in &h.epochs {
            if !epochs.iter().any(|known| known.epoch == e.epoch) {
                epochs.push(e);
            }
        }
    }
    // In key order, the tables' B-trees are filled page after page rather than all over.
    batch.sort_unstable_by(|a, b| a.host.cmp(b.host));
    for h in &mut batch {
        h.evidence.sort_unstable_by(|a, b| a.0.cmp(b.0));
        h.epochs.sort_unstable_by_key(|e| e.epoch);
    }
    Ok(batch)
}

/// A `hosts` row as read back.
struct HostRecord {
    host: String,
    epoch: i64,
    flows: i64,
    first_seen: i64,
    last_seen: i64,
    summary: String,
}

fn column_u64(value: i64, what: &str) -> Result<u64, DbError> {
    u64::try_from(value).map_err(|_| store_error("load", format!("{what} {value} is negative")))
}

fn column_u32(value: i64, what: &str) -> Result<u32, DbError> {
    u32::try_from(value).map_err(|_| store_error("load", format!("{what} {value} is out of range")))
}

fn parse_summary(host: &str, text: &str) -> Result<serde_json::Value, DbError> {
    serde_json::from_str(text).map_err(|e| summary_not_json(host, e))
}

fn summary_not_json(host: &str, e: serde_json::Error) -> DbError {
    store_error("load", format!("host {host}: summary is not JSON: {e}"))
}

/// Puts the rows of the four tables together, in a canonical order: hosts by address, evidence
/// by rule, labels by attribute (winner first, then by confidence, highest first, then value),
/// epochs oldest first.
fn assemble(
    hosts: Vec<HostRecord>,
    evidence: Vec<(String, StoredEvidence)>,
    labels: Vec<(String, StoredLabel)>,
    epochs: Vec<(String, StoredEpoch)>,
) -> Result<Vec<StoredHost>, DbError> {
    let mut out = Vec::with_capacity(hosts.len());
    let mut index = rustc_hash::FxHashMap::default();
    for r in hosts {
        let summary = read_summary(&r.host, r.summary)?;
        index.insert(r.host.clone(), out.len());
        out.push(StoredHost {
            epoch: column_u32(r.epoch, "epoch")?,
            flows: column_u64(r.flows, "flows")?,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
            evidence: Vec::new(),
            labels: Vec::new(),
            epochs: Vec::new(),
            summary,
            host: r.host,
        });
    }
    // Rows of a host without a `hosts` row cannot be written by a save; they are left out.
    for (host, e) in evidence {
        if let Some(&i) = index.get(&host) {
            out[i].evidence.push(e);
        }
    }
    for (host, l) in labels {
        if let Some(&i) = index.get(&host) {
            out[i].labels.push(l);
        }
    }
    for (host, e) in epochs {
        if let Some(&i) = index.get(&host) {
            out[i].epochs.push(e);
        }
    }
    for h in &mut out {
        h.evidence.sort_by(|a, b| a.rule.cmp(&b.rule));
        h.labels.sort_by(|a, b| {
            (&a.attribute, !a.winner)
                .cmp(&(&b.attribute, !b.winner))
                .then(b.confidence.total_cmp(&a.confidence))
                .then_with(|| (&a.value, &a.version).cmp(&(&b.value, &b.version)))
        });
        h.epochs.sort_by_key(|e| e.epoch);
    }
    out.sort_by(|a, b| host_order(&a.host, &b.host));
    Ok(out)
}

/// Orders host addresses as addresses: IPv4 numerically, then IPv6 numerically, then anything
/// that is not an address, as text (so 10.0.0.2 comes before 10.0.0.10).
pub fn host_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn key(host: &str) -> (u8, u128) {
        match host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(v4)) => (0, u128::from(u32::from(v4))),
            Ok(std::net::IpAddr::V6(v6)) => (1, u128::from(v6)),
            Err(_) => (2, 0),
        }
    }
    key(a).cmp(&key(b)).then_with(|| a.cmp(b))
}

/// Whether a query has no filter (every host matches, labelled or not).
fn query_is_unfiltered(query: &HostFilter) -> bool {
    query.label.is_none() && query.min_confidence.is_none()
}

/// The hosts that `query` selects from the winning labels `(host, value, confidence)`, each once,
/// ordered by address. The label comparison ignores case (Unicode lowercase of each character);
/// the confidence bound is inclusive and applies to the label that matched.
fn select_hosts(
    winners: impl IntoIterator<Item = (String, String, f64)>,
    query: &HostFilter,
) -> Vec<String> {
    let lower = |s: &str| {
        s.chars()
            .flat_map(char::to_lowercase)
            .collect::<Vec<char>>()
    };
    let wanted = query.label.as_deref().map(lower);
    let mut hosts: Vec<String> = winners
        .into_iter()
        .filter(|(_, value, confidence)| {
            query.min_confidence.is_none_or(|min| *confidence >= min)
                && wanted.as_ref().is_none_or(|w| {
                    value
                        .chars()
                        .flat_map(char::to_lowercase)
                        .eq(w.iter().copied())
                })
        })
        .map(|(host, _, _)| host)
        .collect();
    hosts.sort_by(|a, b| host_order(a, b));
    hosts.dedup();
    hosts
}

/// Summaries `(host, JSON text)` parsed and ordered by address; those `query` does not pass
/// left out when it asks more than the label table answered.
fn summaries_in_order(
    mut rows: Vec<(String, String)>,
    query: &HostFilter,
) -> Result<Vec<serde_json::Value>, DbError> {
    rows.sort_by(|a, b| host_order(&a.0, &b.0));
    let mut out = Vec::with_capacity(rows.len());
    for (host, text) in &rows {
        let value = parse_summary(host, text).map_err(|e| e.during("query"))?;
        if query.beyond_labels() {
            let summary: crate::infer::HostSummary = serde_json::from_value(value.clone())
                .map_err(|e| store_error("query", format!("the summary of {host}: {e}")))?;
            if !query.matches(&summary) {
                continue;
            }
        }
        out.push(value);
    }
    Ok(out)
}
