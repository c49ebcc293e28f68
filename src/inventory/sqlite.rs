//! The inventory in an embedded SQLite file: write-ahead log (readers never wait for the
//! writer), `synchronous=NORMAL` (a commit survives a crash of the program; a power loss may
//! lose the last commits, never consistency), one transaction per save.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::{
    DbError, HostFilter, HostRecord, LOAD_EPOCHS, LOAD_EVIDENCE, LOAD_LABELS, MIGRATIONS,
    MigrationError, QUERY_WINNERS, SCHEMA_VERSION_TABLE, SqlTypes, Store, StoredEpoch,
    StoredEvidence, StoredHost, StoredLabel, assemble, column_u32, column_u64, migration, now_ms,
    query_is_unfiltered, save_batch, save_sql, select_hosts, store_error, summaries_in_order,
};

/// The schema's types in SQLite.
const TYPES: SqlTypes = SqlTypes {
    integer: "INTEGER",
    real: "REAL",
    boolean: "INTEGER",
    json: "TEXT",
};

const UPSERT_HOST: &str = save_sql!(upsert_host, "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
const INSERT_EPOCH: &str = save_sql!(insert_epoch, "VALUES (?1, ?2, ?3, ?4)");
const INSERT_LABEL: &str = "INSERT INTO labels (host, attribute, value, version, confidence, winner) \
                            VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const INSERT_EVIDENCE: &str = "INSERT INTO evidence (host, rule, flows, first_seen, last_seen) \
                               VALUES (?1, ?2, ?3, ?4, ?5)";
const DELETE_LABELS: &str = "DELETE FROM labels WHERE host = ?1";
const DELETE_EVIDENCE: &str = "DELETE FROM evidence WHERE host = ?1";
const LOAD_HOSTS: &str = "SELECT host, epoch, flows, first_seen, last_seen, summary FROM hosts";
const SUMMARY_OF: &str = "SELECT summary FROM hosts WHERE host = ?1";

/// How long a save waits for another writer of the same file before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The inventory in a SQLite file.
pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Opens (or creates) the inventory file at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore, DbError> {
        Self::open_flags(path, OpenFlags::default())
    }

    /// Opens the inventory file at `path`, which must exist (for commands that only read), and
    /// brings its schema up to date.
    pub fn open_existing(path: &Path) -> Result<SqliteStore, DbError> {
        if !path.exists() {
            return Err(store_error(
                "open",
                format!(
                    "{}: no such inventory (`flowprint analyze --db PATH ...` creates one)",
                    crate::text::printable(&path.display().to_string())
                ),
            ));
        }
        Self::open_flags(path, OpenFlags::default() - OpenFlags::SQLITE_OPEN_CREATE)
    }

    fn open_flags(path: &Path, flags: OpenFlags) -> Result<SqliteStore, DbError> {
        let fail = |e: rusqlite::Error| {
            store_error(
                "open",
                format!(
                    "{}: {e}",
                    crate::text::printable(&path.display().to_string())
                ),
            )
        };
        let mut conn = Connection::open_with_flags(path, flags).map_err(fail)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(fail)?;
        // An in-memory database (":memory:") has no log to write ahead.
        if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
            return Err(store_error(
                "open",
                format!("{}: journal mode is {mode}, not WAL", path.display()),
            ));
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(fail)?;
        migrate(&mut conn).map_err(|e| e.into_store_error(&path.display().to_string()))?;
        Ok(SqliteStore { conn })
    }

    /// Changes how long a save waits for another writer of the file (5 s unless changed).
    pub fn set_busy_timeout(&mut self, timeout: Duration) -> Result<(), DbError> {
        self.conn
            .busy_timeout(timeout)
            .map_err(|e| store_error("open", e))
    }
}

impl From<rusqlite::Error> for MigrationError<rusqlite::Error> {
    fn from(e: rusqlite::Error) -> Self {
        MigrationError::Sql(e)
    }
}

/// Applies the migrations the file lacks, in one transaction that holds the write lock.
fn migrate(conn: &mut Connection) -> Result<(), MigrationError<rusqlite::Error>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA_VERSION_TABLE)?;
    let current: i64 = tx
        .query_row("SELECT max(version) FROM schema_version", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .optional()?
        .flatten()
        .unwrap_or(0);
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(MigrationError::Newer(current));
    }
    for (version, sql) in (1..).zip(MIGRATIONS).skip(current as usize) {
        tx.execute_batch(&migration(sql, &TYPES))?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            params![version, now_ms()],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Rows per multi-row statement of a save: the rows of a save go in statements of this many
/// rows (what is left over, one row per statement), so that a host costs a few statement
/// executions per 64 hosts rather than six of its own. 64 rows of the widest table bind 448
/// parameters, far below SQLite's limit of 32,766.
const ROWS_PER_STATEMENT: usize = 64;

/// `(?, ?, ?), (?, ?, ?)`: `rows` rows of `columns` parameters.
fn value_rows(columns: usize, rows: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

/// The parameters of a row.
type Row<'a> = Vec<&'a dyn rusqlite::ToSql>;

/// Runs `rows` through `multi` (a statement of [`ROWS_PER_STATEMENT`] rows, its text from the
/// row count) and the rest through `single`. A failed multi-row statement is run again row by
/// row, so that the error names the row (`what` says which, from its index).
fn run_rows(
    tx: &rusqlite::Transaction<'_>,
    single: &str,
    multi: &dyn Fn(usize) -> String,
    rows: &[Row<'_>],
    what: &dyn Fn(usize) -> String,
) -> Result<(), DbError> {
    let fail = |i: usize, e: rusqlite::Error| {
        let w = what(i);
        store_error(
            "save",
            if w.is_empty() {
                e.to_string()
            } else {
                format!("{w}: {e}")
            },
        )
    };
    let one = |i: usize| -> Result<(), DbError> {
        tx.prepare_cached(single)
            .and_then(|mut st| st.execute(rusqlite::params_from_iter(rows[i].iter())))
            .map(|_| ())
            .map_err(|e| fail(i, e))
    };
    let full = rows.len() / ROWS_PER_STATEMENT * ROWS_PER_STATEMENT;
    if full > 0 {
        let sql = multi(ROWS_PER_STATEMENT);
        let mut st = tx.prepare_cached(&sql).map_err(|e| fail(0, e))?;
        for (c, chunk) in rows[..full].chunks(ROWS_PER_STATEMENT).enumerate() {
            if st
                .execute(rusqlite::params_from_iter(chunk.iter().flatten()))
                .is_err()
            {
                // A failed statement changes nothing (SQLite rolls the statement back, the
                // transaction goes on): the same rows one by one find the one at fault.
                for i in c * ROWS_PER_STATEMENT..(c + 1) * ROWS_PER_STATEMENT {
                    one(i)?;
                }
            }
        }
    }
    for i in full..rows.len() {
        one(i)?;
    }
    Ok(())
}

/// The rows of a save, table by table: hosts upserted, their labels and evidence deleted and
/// inserted again, their epochs inserted unless present.
fn save_rows(
    tx: &rusqlite::Transaction<'_>,
    batch: &[super::HostSave<'_>],
    updated_at: i64,
) -> Result<(), DbError> {
    let none = |_: usize| String::new();
    let hosts: Vec<Row<'_>> = batch
        .iter()
        .map(|h| -> Row<'_> {
            vec![
                &h.host,
                &h.epoch,
                &h.flows,
                &h.first_seen,
                &h.last_seen,
                &h.summary,
                &updated_at,
            ]
        })
        .collect();
    run_rows(
        tx,
        UPSERT_HOST,
        &|n| save_sql!(upsert_host, "VALUES {rows}").replace("{rows}", &value_rows(7, n)),
        &hosts,
        &none,
    )?;
    let keys: Vec<Row<'_>> = batch.iter().map(|h| -> Row<'_> { vec![&h.host] }).collect();
    for (single, table) in [(DELETE_LABELS, "labels"), (DELETE_EVIDENCE, "evidence")] {
        run_rows(
            tx,
            single,
            &|n| {
                format!(
                    "DELETE FROM {table} WHERE host IN ({})",
                    vec!["?"; n].join(", ")
                )
            },
            &keys,
            &none,
        )?;
    }
    let labels: Vec<Row<'_>> = batch
        .iter()
        .flat_map(|h| {
            h.labels.iter().map(|l| -> Row<'_> {
                vec![
                    &h.host,
                    &l.attribute,
                    &l.value,
                    &l.version,
                    &l.confidence,
                    &l.winner,
                ]
            })
        })
        .collect();
    run_rows(
        tx,
        INSERT_LABEL,
        &|n| {
            format!(
                "INSERT INTO labels (host, attribute, value, version, confidence, winner) VALUES {}",
                value_rows(6, n)
            )
        },
        &labels,
        &none,
    )?;
    let evidence_of: Vec<(&str, &str)> = batch
        .iter()
        .flat_map(|h| h.evidence.iter().map(|e| (h.host, e.0)))
        .collect();
    let evidence: Vec<Row<'_>> = batch
        .iter()
        .flat_map(|h| {
            h.evidence
                .iter()
                .map(|e| -> Row<'_> { vec![&h.host, &e.0, &e.1, &e.2, &e.3] })
        })
        .collect();
    run_rows(
        tx,
        INSERT_EVIDENCE,
        &|n| {
            format!(
                "INSERT INTO evidence (host, rule, flows, first_seen, last_seen) VALUES {}",
                value_rows(5, n)
            )
        },
        &evidence,
        &|i| format!("host {} rule {}", evidence_of[i].0, evidence_of[i].1),
    )?;
    let epochs: Vec<Row<'_>> = batch
        .iter()
        .flat_map(|h| {
            h.epochs
                .iter()
                .map(|e| -> Row<'_> { vec![&h.host, &e.epoch, &e.started, &e.reason] })
        })
        .collect();
    run_rows(
        tx,
        INSERT_EPOCH,
        &|n| save_sql!(insert_epoch, "VALUES {rows}").replace("{rows}", &value_rows(4, n)),
        &epochs,
        &none,
    )
}

impl Store for SqliteStore {
    fn save_dns(&mut self, pairs: &[super::StoredDnsPair]) -> Result<(), DbError> {
        let fail = |e: rusqlite::Error| store_error("save", e);
        let tx = self.conn.transaction().map_err(fail)?;
        {
            let sql = super::upsert_dns_sql(false);
            let mut st = tx.prepare_cached(&sql).map_err(fail)?;
            for p in pairs {
                st.execute(params![
                    p.addr,
                    p.name,
                    p.first_seen,
                    p.last_seen,
                    i64::from(p.ttl),
                    p.source
                ])
                .map_err(fail)?;
            }
        }
        tx.commit().map_err(fail)
    }

    fn load_dns(&mut self) -> Result<Vec<super::StoredDnsPair>, DbError> {
        let fail = |e: rusqlite::Error| store_error("load", e);
        let mut st = self.conn.prepare(super::LOAD_DNS).map_err(fail)?;
        let rows = st
            .query_map([], |r| {
                Ok(super::StoredDnsPair {
                    addr: r.get(0)?,
                    name: r.get(1)?,
                    first_seen: r.get(2)?,
                    last_seen: r.get(3)?,
                    ttl: u32::try_from(r.get::<_, i64>(4)?).unwrap_or(u32::MAX),
                    source: r.get(5)?,
                })
            })
            .map_err(fail)?;
        rows.collect::<Result<_, _>>().map_err(fail)
    }

    fn load_marks(&mut self) -> Result<Vec<super::FleetMark>, DbError> {
        let fail = |e: rusqlite::Error| store_error("load", e);
        let mut st = self.conn.prepare(super::LOAD_MARKS).map_err(fail)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(fail)?;
        let mut out = Vec::new();
        for row in rows {
            let (stream, shard, seq, fence) = row.map_err(fail)?;
            out.push(super::FleetMark {
                batches: Vec::new(),
                stream,
                shard: column_u32(shard, "mark shard")?,
                seq: column_u64(seq, "mark seq")?,
                fence: column_u64(fence, "mark fence")?,
            });
        }
        Ok(out)
    }

    fn claim_shard(&mut self, stream: &str, shard: u32) -> Result<(u64, u64), DbError> {
        let fail = |e: rusqlite::Error| store_error("save", e);
        let sql = super::CLAIM_MARK.replace('$', "?");
        let (seq, fence): (i64, i64) = self
            .conn
            .query_row(&sql, params![stream, i64::from(shard), now_ms()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(fail)?;
        Ok((
            column_u64(seq, "mark seq")?,
            column_u64(fence, "mark fence")?,
        ))
    }

    fn save_marked(
        &mut self,
        hosts: &[StoredHost],
        marks: &[super::FleetMark],
    ) -> Result<(), DbError> {
        let fail = |e: rusqlite::Error| store_error("save", e);
        let batch = save_batch(hosts)?;
        let updated_at = now_ms();
        // Dropping the transaction on an error rolls it back: all hosts or none.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        {
            save_rows(&tx, &batch, updated_at)?;
            let sql = super::UPSERT_MARK.replace('$', "?");
            let mut upsert_mark = tx.prepare_cached(&sql).map_err(fail)?;
            for m in marks {
                let changed = upsert_mark
                    .execute(params![
                        m.stream,
                        i64::from(m.shard),
                        i64::try_from(m.seq).unwrap_or(i64::MAX),
                        i64::try_from(m.fence).unwrap_or(i64::MAX),
                        updated_at
                    ])
                    .map_err(fail)?;
                if changed == 0 {
                    return Err(super::fenced(m));
                }
            }
            let mut insert_batch = tx
                .prepare_cached(&super::INSERT_BATCH.replace('$', "?"))
                .map_err(fail)?;
            let mut prune = tx
                .prepare_cached(&super::PRUNE_BATCHES.replace('$', "?"))
                .map_err(fail)?;
            for m in marks.iter().filter(|m| !m.batches.is_empty()) {
                for (seq, id) in &m.batches {
                    insert_batch
                        .execute(params![
                            m.stream,
                            i64::from(m.shard),
                            super::batch_hex(id),
                            i64::try_from(*seq).unwrap_or(i64::MAX)
                        ])
                        .map_err(fail)?;
                }
                prune
                    .execute(params![
                        m.stream,
                        i64::from(m.shard),
                        i64::from(super::MAX_STORED_BATCHES)
                    ])
                    .map_err(fail)?;
            }
        }
        tx.commit().map_err(fail)
    }

    fn load_batches(&mut self, stream: &str, shard: u32) -> Result<Vec<(u64, [u8; 24])>, DbError> {
        let fail = |e: rusqlite::Error| store_error("load", e);
        let mut st = self
            .conn
            .prepare(&super::LOAD_BATCHES.replace('$', "?"))
            .map_err(fail)?;
        let rows = st
            .query_map(params![stream, i64::from(shard)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(fail)?;
        let mut out = Vec::new();
        for r in rows {
            let (seq, id) = r.map_err(fail)?;
            if let Some(id) = super::batch_from_hex(&id) {
                out.push((column_u64(seq, "batch seq")?, id));
            }
        }
        Ok(out)
    }

    fn delete_rule_evidence(&mut self, rules: &[String]) -> Result<u64, DbError> {
        let fail = |e: rusqlite::Error| store_error("save", e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        let mut n = 0;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM evidence WHERE rule = ?1")
                .map_err(fail)?;
            for r in rules {
                n += delete.execute([r]).map_err(fail)? as u64;
            }
        }
        tx.commit().map_err(fail)?;
        Ok(n)
    }

    fn load_all(&mut self) -> Result<Vec<StoredHost>, DbError> {
        let fail = |e: rusqlite::Error| store_error("load", e);
        // One read transaction: the four tables are read at the same moment.
        let tx = self.conn.transaction().map_err(fail)?;
        let hosts = collect(&tx, LOAD_HOSTS, |r| {
            Ok(HostRecord {
                host: r.get(0)?,
                epoch: r.get(1)?,
                flows: r.get(2)?,
                first_seen: r.get(3)?,
                last_seen: r.get(4)?,
                summary: r.get(5)?,
            })
        })?;
        let evidence = collect(&tx, LOAD_EVIDENCE, |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get::<_, i64>(2)?,
                r.get(3)?,
                r.get(4)?,
            ))
        })?
        .into_iter()
        .map(|(host, rule, flows, first_seen, last_seen)| {
            let flows = column_u64(flows, "evidence flows")?;
            Ok((
                host,
                StoredEvidence {
                    rule,
                    flows,
                    first_seen,
                    last_seen,
                },
            ))
        })
        .collect::<Result<Vec<_>, DbError>>()?;
        let labels = collect(&tx, LOAD_LABELS, |r| {
            Ok((
                r.get(0)?,
                StoredLabel {
                    attribute: r.get(1)?,
                    value: r.get(2)?,
                    version: r.get(3)?,
                    confidence: r.get(4)?,
                    winner: r.get(5)?,
                },
            ))
        })?;
        let epochs = collect(&tx, LOAD_EPOCHS, |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)?, r.get(2)?, r.get(3)?))
        })?
        .into_iter()
        .map(|(host, epoch, started, reason)| {
            let epoch = column_u32(epoch, "epoch")?;
            Ok((
                host,
                StoredEpoch {
                    epoch,
                    started,
                    reason,
                },
            ))
        })
        .collect::<Result<Vec<_>, DbError>>()?;
        tx.finish().map_err(fail)?;
        assemble(hosts, evidence, labels, epochs)
    }

    fn query(&mut self, query: &HostFilter) -> Result<Vec<serde_json::Value>, DbError> {
        let fail = |e: rusqlite::Error| store_error("query", e);
        let tx = self.conn.transaction().map_err(fail)?;
        let rows = if query_is_unfiltered(query) {
            collect(&tx, "SELECT host, summary FROM hosts", |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(|e| e.during("query"))?
        } else {
            let winners = collect(&tx, QUERY_WINNERS, |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(|e| e.during("query"))?;
            let mut summary_of = tx.prepare_cached(SUMMARY_OF).map_err(fail)?;
            select_hosts(winners, query)
                .into_iter()
                .map(|host| {
                    let summary = summary_of.query_row([&host], |r| r.get(0)).map_err(fail)?;
                    Ok((host, summary))
                })
                .collect::<Result<Vec<_>, DbError>>()?
        };
        tx.finish().map_err(fail)?;
        summaries_in_order(rows, query)
    }
}

/// Every row of `sql`, mapped.
fn collect<T>(
    conn: &Connection,
    sql: &str,
    map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, DbError> {
    let fail = |e: rusqlite::Error| store_error("load", e);
    let mut statement = conn.prepare_cached(sql).map_err(fail)?;
    let rows = statement.query_map([], map).map_err(fail)?;
    rows.collect::<rusqlite::Result<Vec<T>>>().map_err(fail)
}
