//! The inventory in a PostgreSQL database: the same tables as SQLite's (the summary as JSONB),
//! one transaction per save, rows sent a few thousand hosts at a time: hosts and epochs as
//! arrays that the server unnests into an upsert, labels and evidence by binary COPY.

use ::postgres::{Client, NoTls, Statement, Transaction};

use super::{
    DbError, HostFilter, HostRecord, HostSave, LOAD_EPOCHS, LOAD_EVIDENCE, LOAD_LABELS, MIGRATIONS,
    MigrationError, QUERY_WINNERS, SCHEMA_VERSION_TABLE, SqlTypes, Store, StoredEpoch,
    StoredEvidence, StoredHost, StoredLabel, assemble, column_u32, column_u64, migration, now_ms,
    query_is_unfiltered, save_batch, save_sql, select_hosts, store_error, summaries_in_order,
};

/// The schema's types in PostgreSQL.
const TYPES: SqlTypes = SqlTypes {
    integer: "BIGINT",
    real: "DOUBLE PRECISION",
    boolean: "BOOLEAN",
    json: "JSONB",
};

const UPSERT_HOSTS: &str = save_sql!(
    upsert_host,
    "SELECT host, epoch, flows, first_seen, last_seen, summary::jsonb, $7
     FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[])
       AS t (host, epoch, flows, first_seen, last_seen, summary)"
);
const INSERT_EPOCHS: &str = save_sql!(
    insert_epoch,
    "SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[])"
);
/// Labels and evidence are plain inserts after the deletes: COPY, the server's fastest way in
/// (about twice as fast as an INSERT of the same rows unnested).
const COPY_LABELS: &str = "COPY labels (host, attribute, value, version, confidence, winner) \
                           FROM STDIN (FORMAT binary)";
const COPY_EVIDENCE: &str = "COPY evidence (host, rule, flows, first_seen, last_seen) \
                             FROM STDIN (FORMAT binary)";
const DELETE_LABELS: &str = "DELETE FROM labels WHERE host = ANY($1)";
const DELETE_EVIDENCE: &str = "DELETE FROM evidence WHERE host = ANY($1)";
const LOAD_HOSTS: &str =
    "SELECT host, epoch, flows, first_seen, last_seen, summary::text FROM hosts";
const SUMMARIES_OF: &str = "SELECT host, summary::text FROM hosts WHERE host = ANY($1)";

/// Hosts per statement of a save: bounds the size of one request, not the transaction.
const CHUNK: usize = 5_000;

/// Serialises schema migrations of concurrent `connect`s (a transaction-scoped advisory lock).
const MIGRATION_LOCK: i64 = 0x666c_6f77_7072_696e; // "flowprin"

/// The inventory in a PostgreSQL database.
pub struct PostgresStore {
    client: Client,
    statements: Statements,
}

/// The statements of saves, prepared once per connection.
struct Statements {
    upsert_hosts: Statement,
    delete_labels: Statement,
    delete_evidence: Statement,
    insert_epochs: Statement,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/database`,
    /// with libpq-style parameters such as `?options=-csearch_path%3Dschema`; no TLS) and brings
    /// its schema up to date.
    pub fn connect(url: &str) -> Result<PostgresStore, DbError> {
        let shown = without_password(url);
        let fail = |e: ::postgres::Error| store_error("open", format!("{shown}: {e}"));
        let mut client = Client::connect(url, NoTls).map_err(fail)?;
        migrate(&mut client).map_err(|e| e.into_store_error(&shown))?;
        let statements = Statements {
            upsert_hosts: client.prepare(UPSERT_HOSTS).map_err(fail)?,
            delete_labels: client.prepare(DELETE_LABELS).map_err(fail)?,
            delete_evidence: client.prepare(DELETE_EVIDENCE).map_err(fail)?,
            insert_epochs: client.prepare(INSERT_EPOCHS).map_err(fail)?,
        };
        Ok(PostgresStore { client, statements })
    }
}

/// The URL for messages: the password, if any, replaced by `***`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl From<::postgres::Error> for MigrationError<::postgres::Error> {
    fn from(e: ::postgres::Error) -> Self {
        MigrationError::Sql(e)
    }
}

/// Applies the migrations the database lacks, in one transaction.
fn migrate(client: &mut Client) -> Result<(), MigrationError<::postgres::Error>> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(SCHEMA_VERSION_TABLE)?;
    let current: Option<i64> = tx
        .query_one("SELECT max(version) FROM schema_version", &[])?
        .get(0);
    let current = current.unwrap_or(0);
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(MigrationError::Newer(current));
    }
    for (version, sql) in (1i64..).zip(MIGRATIONS).skip(current as usize) {
        tx.batch_execute(&migration(sql, &TYPES))?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
            &[&version, &now_ms()],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Writes one chunk of hosts inside the save's transaction.
fn save_chunk(
    tx: &mut Transaction<'_>,
    s: &Statements,
    chunk: &[HostSave<'_>],
    updated_at: i64,
) -> Result<(), ::postgres::Error> {
    let hosts: Vec<&str> = chunk.iter().map(|h| h.host).collect();
    let column = |f: fn(&HostSave<'_>) -> i64| chunk.iter().map(f).collect::<Vec<i64>>();
    let summaries: Vec<&str> = chunk.iter().map(|h| h.summary).collect();
    tx.execute(
        &s.upsert_hosts,
        &[
            &hosts,
            &column(|h| h.epoch),
            &column(|h| h.flows),
            &column(|h| h.first_seen),
            &column(|h| h.last_seen),
            &summaries,
            &updated_at,
        ],
    )?;
    tx.execute(&s.delete_labels, &[&hosts])?;
    tx.execute(&s.delete_evidence, &[&hosts])?;

    let mut labels = CopyRows::default();
    for h in chunk {
        for l in h.labels {
            labels.row(6);
            labels.text(h.host);
            labels.text(&l.attribute);
            labels.text(&l.value);
            match &l.version {
                Some(version) => labels.text(version),
                None => labels.null(),
            }
            labels.float8(l.confidence);
            labels.boolean(l.winner);
        }
    }
    labels.send(tx, COPY_LABELS)?;

    let mut evidence = CopyRows::default();
    for h in chunk {
        for &(rule, flows, first_seen, last_seen) in &h.evidence {
            evidence.row(5);
            evidence.text(h.host);
            evidence.text(rule);
            evidence.int8(flows);
            evidence.int8(first_seen);
            evidence.int8(last_seen);
        }
    }
    evidence.send(tx, COPY_EVIDENCE)?;

    let (mut host, mut epoch, mut started, mut reason) = (vec![], vec![], vec![], vec![]);
    for h in chunk {
        for e in &h.epochs {
            host.push(h.host);
            epoch.push(i64::from(e.epoch));
            started.push(e.started);
            reason.push(e.reason.as_str());
        }
    }
    if !host.is_empty() {
        tx.execute(&s.insert_epochs, &[&host, &epoch, &started, &reason])?;
    }
    Ok(())
}

/// Rows in PostgreSQL's binary COPY format, built in memory and sent as one message (the
/// driver's row-at-a-time writer costs more than the server's work).
#[derive(Default)]
struct CopyRows {
    data: Vec<u8>,
    rows: usize,
}

impl CopyRows {
    fn row(&mut self, fields: i16) {
        if self.data.is_empty() {
            // Signature, flags, header extension length.
            self.data.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
            self.data.extend_from_slice(&[0; 8]);
        }
        self.data.extend_from_slice(&fields.to_be_bytes());
        self.rows += 1;
    }

    fn field(&mut self, bytes: &[u8]) {
        // Within PostgreSQL's 1 GB limit of a field, the length fits.
        let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
        self.data.extend_from_slice(&len.to_be_bytes());
        self.data.extend_from_slice(bytes);
    }

    fn text(&mut self, s: &str) {
        self.field(s.as_bytes());
    }

    fn null(&mut self) {
        self.data.extend_from_slice(&(-1i32).to_be_bytes());
    }

    fn int8(&mut self, v: i64) {
        self.field(&v.to_be_bytes());
    }

    fn float8(&mut self, v: f64) {
        self.field(&v.to_bits().to_be_bytes());
    }

    fn boolean(&mut self, v: bool) {
        self.field(&[u8::from(v)]);
    }

    /// Sends the rows (if any) with `copy`, a `COPY ... FROM STDIN (FORMAT binary)`.
    fn send(mut self, tx: &mut Transaction<'_>, copy: &str) -> Result<(), ::postgres::Error> {
        if self.rows == 0 {
            return Ok(());
        }
        self.data.extend_from_slice(&(-1i16).to_be_bytes());
        let mut writer = tx.copy_in(copy)?;
        // The writer only buffers; errors come from `finish`, which sends.
        let _ = std::io::Write::write_all(&mut writer, &self.data);
        writer.finish()?;
        Ok(())
    }
}

impl Store for PostgresStore {
    fn save_dns(&mut self, pairs: &[super::StoredDnsPair]) -> Result<(), DbError> {
        let fail = |e: ::postgres::Error| store_error("save", e);
        let mut tx = self.client.transaction().map_err(fail)?;
        let st = tx.prepare(&super::upsert_dns_sql(true)).map_err(fail)?;
        for p in pairs {
            tx.execute(
                &st,
                &[
                    &p.addr,
                    &p.name,
                    &p.first_seen,
                    &p.last_seen,
                    &i64::from(p.ttl),
                    &p.source,
                ],
            )
            .map_err(fail)?;
        }
        tx.commit().map_err(fail)
    }

    fn load_dns(&mut self) -> Result<Vec<super::StoredDnsPair>, DbError> {
        let fail = |e: ::postgres::Error| store_error("load", e);
        let rows = self.client.query(super::LOAD_DNS, &[]).map_err(fail)?;
        Ok(rows
            .iter()
            .map(|r| super::StoredDnsPair {
                addr: r.get(0),
                name: r.get(1),
                first_seen: r.get(2),
                last_seen: r.get(3),
                ttl: u32::try_from(r.get::<_, i64>(4)).unwrap_or(u32::MAX),
                source: r.get(5),
            })
            .collect())
    }

    fn load_marks(&mut self) -> Result<Vec<super::FleetMark>, DbError> {
        let fail = |e: ::postgres::Error| store_error("load", e);
        self.client
            .query(super::LOAD_MARKS, &[])
            .map_err(fail)?
            .into_iter()
            .map(|r| {
                Ok(super::FleetMark {
                    batches: Vec::new(),
                    stream: r.get(0),
                    shard: column_u32(r.get(1), "mark shard")?,
                    seq: column_u64(r.get(2), "mark seq")?,
                    fence: column_u64(r.get(3), "mark fence")?,
                })
            })
            .collect()
    }

    fn claim_shard(&mut self, stream: &str, shard: u32) -> Result<(u64, u64), DbError> {
        let fail = |e: ::postgres::Error| store_error("save", e);
        let row = self
            .client
            .query_one(super::CLAIM_MARK, &[&stream, &i64::from(shard), &now_ms()])
            .map_err(fail)?;
        Ok((
            column_u64(row.get(0), "mark seq")?,
            column_u64(row.get(1), "mark fence")?,
        ))
    }

    fn save_marked(
        &mut self,
        hosts: &[StoredHost],
        marks: &[super::FleetMark],
    ) -> Result<(), DbError> {
        let fail = |e: ::postgres::Error| store_error("save", e);
        let batch = save_batch(hosts)?;
        let updated_at = now_ms();
        // Dropping the transaction on an error rolls it back: all hosts or none.
        let mut tx = self.client.transaction().map_err(fail)?;
        for chunk in batch.chunks(CHUNK) {
            save_chunk(&mut tx, &self.statements, chunk, updated_at).map_err(fail)?;
        }
        for m in marks {
            let changed = tx
                .execute(
                    super::UPSERT_MARK,
                    &[
                        &m.stream,
                        &i64::from(m.shard),
                        &i64::try_from(m.seq).unwrap_or(i64::MAX),
                        &i64::try_from(m.fence).unwrap_or(i64::MAX),
                        &updated_at,
                    ],
                )
                .map_err(fail)?;
            if changed == 0 {
                return Err(super::fenced(m));
            }
        }
        for m in marks.iter().filter(|m| !m.batches.is_empty()) {
            let shard = i64::from(m.shard);
            for (seq, id) in &m.batches {
                tx.execute(
                    super::INSERT_BATCH,
                    &[
                        &m.stream,
                        &shard,
                        &super::batch_hex(id),
                        &i64::try_from(*seq).unwrap_or(i64::MAX),
                    ],
                )
                .map_err(fail)?;
            }
            tx.execute(
                super::PRUNE_BATCHES,
                &[&m.stream, &shard, &i64::from(super::MAX_STORED_BATCHES)],
            )
            .map_err(fail)?;
        }
        tx.commit().map_err(fail)
    }

    fn load_batches(&mut self, stream: &str, shard: u32) -> Result<Vec<(u64, [u8; 24])>, DbError> {
        let fail = |e: ::postgres::Error| store_error("load", e);
        let mut out = Vec::new();
        for r in self
            .client
            .query(super::LOAD_BATCHES, &[&stream, &i64::from(shard)])
            .map_err(fail)?
        {
            if let Some(id) = super::batch_from_hex(r.get::<_, &str>(1)) {
                out.push((column_u64(r.get(0), "batch seq")?, id));
            }
        }
        Ok(out)
    }

    fn delete_rule_evidence(&mut self, rules: &[String]) -> Result<u64, DbError> {
        let fail = |e: ::postgres::Error| store_error("save", e);
        self.client
            .execute("DELETE FROM evidence WHERE rule = ANY($1)", &[&rules])
            .map_err(fail)
    }

    fn load_all(&mut self) -> Result<Vec<StoredHost>, DbError> {
        let fail = |e: ::postgres::Error| store_error("load", e);
        // One repeatable-read transaction: the four tables are read at the same moment.
        let mut tx = self
            .client
            .build_transaction()
            .isolation_level(::postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(fail)?;
        let hosts = tx
            .query(LOAD_HOSTS, &[])
            .map_err(fail)?
            .into_iter()
            .map(|r| HostRecord {
                host: r.get(0),
                epoch: r.get(1),
                flows: r.get(2),
                first_seen: r.get(3),
                last_seen: r.get(4),
                summary: r.get(5),
            })
            .collect();
        let evidence = tx
            .query(LOAD_EVIDENCE, &[])
            .map_err(fail)?
            .into_iter()
            .map(|r| {
                let evidence = StoredEvidence {
                    rule: r.get(1),
                    flows: column_u64(r.get(2), "evidence flows")?,
                    first_seen: r.get(3),
                    last_seen: r.get(4),
                };
                Ok((r.get(0), evidence))
            })
            .collect::<Result<Vec<_>, DbError>>()?;
        let labels = tx
            .query(LOAD_LABELS, &[])
            .map_err(fail)?
            .into_iter()
            .map(|r| {
                let label = StoredLabel {
                    attribute: r.get(1),
                    value: r.get(2),
                    version: r.get(3),
                    confidence: r.get(4),
                    winner: r.get(5),
                };
                (r.get(0), label)
            })
            .collect();
        let epochs = tx
            .query(LOAD_EPOCHS, &[])
            .map_err(fail)?
            .into_iter()
            .map(|r| {
                let epoch = StoredEpoch {
                    epoch: column_u32(r.get(1), "epoch")?,
                    started: r.get(2),
                    reason: r.get(3),
                };
                Ok((r.get(0), epoch))
            })
            .collect::<Result<Vec<_>, DbError>>()?;
        tx.commit().map_err(fail)?;
        assemble(hosts, evidence, labels, epochs)
    }

    fn query(&mut self, query: &HostFilter) -> Result<Vec<serde_json::Value>, DbError> {
        let fail = |e: ::postgres::Error| store_error("query", e);
        let mut tx = self
            .client
            .build_transaction()
            .isolation_level(::postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(fail)?;
        let rows = if query_is_unfiltered(query) {
            tx.query("SELECT host, summary::text FROM hosts", &[])
        } else {
            let winners = tx.query(QUERY_WINNERS, &[]).map_err(fail)?;
            let winners = winners.iter().map(|r| (r.get(0), r.get(1), r.get(2)));
            let hosts = select_hosts(winners, query);
            tx.query(SUMMARIES_OF, &[&hosts])
        }
        .map_err(fail)?;
        tx.commit().map_err(fail)?;
        summaries_in_order(rows.iter().map(|r| (r.get(0), r.get(1))).collect(), query)
    }
}

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            without_password("postgres://u:secret@db:5432/inv?sslmode=disable"),
            "postgres://u:***@db:5432/inv?sslmode=disable"
        );
        assert_eq!(
            without_password("postgresql://u@db/inv"),
            "postgresql://u@db/inv"
        );
        assert_eq!(
            without_password("postgres://db/x?a=b@c"),
            "postgres://db/x?a=b@c"
        );
    }
}
