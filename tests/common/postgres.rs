//! A PostgreSQL schema per test on the server `FLOWPRINT_TEST_POSTGRES` names (scripts/test.sh
//! starts one).

/// A PostgreSQL schema of its own on `FLOWPRINT_TEST_POSTGRES` (dropped at the end).
pub struct PgSchema {
    url: String,
    schema: String,
    /// The URL that puts a connection in the schema.
    pub spec: String,
}

impl PgSchema {
    /// A fresh schema for `case`; `None` (skip) without a server, a failure under CI.
    pub fn new(case: &str) -> Option<PgSchema> {
        let url = match std::env::var("FLOWPRINT_TEST_POSTGRES") {
            Ok(u) if !u.is_empty() => u,
            _ => {
                let ci = std::env::var("CI").unwrap_or_default();
                assert!(
                    !(ci == "true" || ci == "1"),
                    "CI={ci} but FLOWPRINT_TEST_POSTGRES is not set (scripts/test.sh sets it)"
                );
                eprintln!("skipped: FLOWPRINT_TEST_POSTGRES is not set");
                return None;
            }
        };
        let schema = format!("t_{case}_{}", std::process::id());
        let mut admin = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        admin
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ))
            .unwrap();
        let sep = if url.contains('?') { '&' } else { '?' };
        Some(PgSchema {
            spec: format!("{url}{sep}options=-csearch_path%3D{schema}"),
            url,
            schema,
        })
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if let Ok(mut admin) = ::postgres::Client::connect(&self.url, ::postgres::NoTls) {
            let _ = admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
        }
    }
}
