//! The inventory in a PostgreSQL database: the same tables as SQLite's (the summary as JSONB),
//! one transaction per save, rows sent a few thousand hosts at a time as arrays that the server
//! unnests (one statement per table and chunk, not one per row).

use ::postgres::{Client, NoTls, Statement, Transaction};

use super::{
    HostQuery, HostRecord, HostSave, LOAD_EPOCHS, LOAD_EVIDENCE, LOAD_LABELS, QUERY_WINNERS,
    SCHEMA_VERSION_TABLE, Store, StoreError, StoredEpoch, StoredEvidence, StoredHost, StoredLabel,
    assemble, column_u32, column_u64, now_ms, query_is_unfiltered, save_batch, save_sql, schema_v1,
    select_hosts, store_error, summaries_in_order,
};

/// Schema version `n` is `MIGRATIONS[n - 1]` (the same versions as SQLite's).
const MIGRATIONS: &[&str] = &[schema_v1!(
    integer: "BIGINT",
    real: "DOUBLE PRECISION",
    boolean: "BOOLEAN",
    json: "JSONB"
)];

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
const INSERT_LABELS: &str = save_sql!(
    insert_label,
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::bool[])"
);
const INSERT_EVIDENCE: &str = save_sql!(
    insert_evidence,
    "SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])"
);
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
    insert_labels: Statement,
    insert_evidence: Statement,
    insert_epochs: Statement,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/database`,
    /// with libpq-style parameters such as `?options=-csearch_path%3Dschema`; no TLS) and brings
    /// its schema up to date.
    pub fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let shown = without_password(url);
        let fail = |e: ::postgres::Error| store_error("open", format!("{shown}: {e}"));
        let mut client = Client::connect(url, NoTls).map_err(fail)?;
        migrate(&mut client).map_err(|e| match e {
            Migration::Sql(e) => fail(e),
            Migration::Newer(found) => store_error(
                "open",
                format!(
                    "{shown}: schema version {found} is newer than this flowprint's ({})",
                    MIGRATIONS.len()
                ),
            ),
        })?;
        let statements = Statements {
            upsert_hosts: client.prepare(UPSERT_HOSTS).map_err(fail)?,
            delete_labels: client.prepare(DELETE_LABELS).map_err(fail)?,
            delete_evidence: client.prepare(DELETE_EVIDENCE).map_err(fail)?,
            insert_labels: client.prepare(INSERT_LABELS).map_err(fail)?,
            insert_evidence: client.prepare(INSERT_EVIDENCE).map_err(fail)?,
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

enum Migration {
    Sql(::postgres::Error),
    Newer(i64),
}

impl From<::postgres::Error> for Migration {
    fn from(e: ::postgres::Error) -> Self {
        Migration::Sql(e)
    }
}

/// Applies the migrations the database lacks, in one transaction.
fn migrate(client: &mut Client) -> Result<(), Migration> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(SCHEMA_VERSION_TABLE)?;
    let current: Option<i64> = tx
        .query_one("SELECT max(version) FROM schema_version", &[])?
        .get(0);
    let current = current.unwrap_or(0);
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(Migration::Newer(current));
    }
    for (version, sql) in (1i64..).zip(MIGRATIONS).skip(current as usize) {
        tx.batch_execute(sql)?;
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
    let summaries: Vec<&str> = chunk.iter().map(|h| h.summary.as_str()).collect();
    let t0 = std::time::Instant::now();
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
    unsafe {
        T[0] += t0.elapsed().as_secs_f64();
    }
    let t0 = std::time::Instant::now();
    tx.execute(&s.delete_labels, &[&hosts])?;
    tx.execute(&s.delete_evidence, &[&hosts])?;
    unsafe {
        T[1] += t0.elapsed().as_secs_f64();
    }
    let t0 = std::time::Instant::now();

    let labels = chunk
        .iter()
        .flat_map(|h| h.labels.iter().map(move |l| (h.host, l)));
    let (mut host, mut attribute, mut value, mut version, mut confidence, mut winner) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (h, l) in labels {
        host.push(h);
        attribute.push(l.attribute.as_str());
        value.push(l.value.as_str());
        version.push(l.version.as_deref());
        confidence.push(l.confidence);
        winner.push(l.winner);
    }
    if !host.is_empty() {
        tx.execute(
            &s.insert_labels,
            &[&host, &attribute, &value, &version, &confidence, &winner],
        )?;
    }

    unsafe {
        T[2] += t0.elapsed().as_secs_f64();
    }
    let t0 = std::time::Instant::now();
    let (mut host, mut rule, mut flows, mut first_seen, mut last_seen) =
        (vec![], vec![], vec![], vec![], vec![]);
    for h in chunk {
        for &(r, n, first, last) in &h.evidence {
            host.push(h.host);
            rule.push(r);
            flows.push(n);
            first_seen.push(first);
            last_seen.push(last);
        }
    }
    if !host.is_empty() {
        tx.execute(
            &s.insert_evidence,
            &[&host, &rule, &flows, &first_seen, &last_seen],
        )?;
    }

    unsafe {
        T[3] += t0.elapsed().as_secs_f64();
    }
    let t0 = std::time::Instant::now();
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
    unsafe {
        T[4] += t0.elapsed().as_secs_f64();
    }
    Ok(())
}

impl Store for PostgresStore {
    fn save(&mut self, hosts: &[StoredHost]) -> Result<(), StoreError> {
        let fail = |e: ::postgres::Error| store_error("save", e);
        let batch = save_batch(hosts)?;
        let updated_at = now_ms();
        // Dropping the transaction on an error rolls it back: all hosts or none.
        let mut tx = self.client.transaction().map_err(fail)?;
        for chunk in batch.chunks(CHUNK) {
            save_chunk(&mut tx, &self.statements, chunk, updated_at).map_err(fail)?;
        }
        let t0 = std::time::Instant::now();
        let r = tx.commit().map_err(fail);
        unsafe {
            eprintln!(
                "upsert {:.2} delete {:.2} labels {:.2} evidence {:.2} epochs {:.2} commit {:.2}",
                T[0],
                T[1],
                T[2],
                T[3],
                T[4],
                t0.elapsed().as_secs_f64()
            );
            T = [0.0; 5];
        }
        r
    }

    fn load_all(&mut self) -> Result<Vec<StoredHost>, StoreError> {
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
            .collect::<Result<Vec<_>, StoreError>>()?;
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
            .collect::<Result<Vec<_>, StoreError>>()?;
        tx.commit().map_err(fail)?;
        assemble(hosts, evidence, labels, epochs)
    }

    fn query(&mut self, query: &HostQuery) -> Result<Vec<serde_json::Value>, StoreError> {
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
        summaries_in_order(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
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

static mut T: [f64; 5] = [0.0; 5];
