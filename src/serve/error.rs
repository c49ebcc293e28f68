//! The daemon's errors: why it could not start, or had to stop. Each says which part failed
//! and about what (a file, a listener, the database, the rules, the fleet).

use std::path::PathBuf;

/// Why `serve` could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is not valid: what, and where.
    #[error("configuration: {0}")]
    Config(#[from] super::config::ConfigError),
    /// A file or directory it needs could not be read or written.
    #[error("{what} {}: {error}", path.display())]
    File {
        /// What the file is for ("API token file", "state directory").
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The system's error (in the message, not as a source: the chain prints once).
        error: std::io::Error,
    },
    /// A file it refuses to use, and why (a symbolic link, replaced while it was opened).
    #[error("{what} {}: {why}", path.display())]
    Refused {
        /// What the file is for.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why it is refused.
        why: String,
    },
    /// A listener could not be bound.
    #[error("{what} on {addr}: {error}")]
    Listen {
        /// What listens ("API", "collector").
        what: &'static str,
        /// The address asked for.
        addr: String,
        /// The system's error (in the message, not as a source: the chain prints once).
        error: std::io::Error,
    },
    /// The inventory database.
    #[error(transparent)]
    Db(#[from] crate::inventory::DbError),
    /// The rules could not be loaded.
    #[error(transparent)]
    Rules(#[from] crate::store::StoreError),
    /// The fleet (NATS JetStream) could not be joined or used.
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    /// Another part could not start: which, and why.
    #[error("{part}: {error}")]
    Start {
        /// The part ("collector", "DNS resolver", "thread api", ...).
        part: &'static str,
        /// Its error (in the message, not as a source: the chain prints once).
        error: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Names the part of the daemon an error comes from ([`ServeError::Start`]).
pub(crate) trait Part<T> {
    /// The error as the failure of `part`.
    fn part(self, part: &'static str) -> Result<T, ServeError>;
}

impl<T, E: Into<Box<dyn std::error::Error + Send + Sync>>> Part<T> for Result<T, E> {
    fn part(self, part: &'static str) -> Result<T, ServeError> {
        self.map_err(|e| ServeError::Start {
            part,
            error: e.into(),
        })
    }
}

impl ServeError {
    /// A file error of `what` at `path`.
    pub(crate) fn file(
        what: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> ServeError {
        let path = path.to_path_buf();
        move |error| ServeError::File { what, path, error }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error and its sources, `: `-separated, as the binary prints an error chain.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            out.push_str(": ");
            out.push_str(&s.to_string());
            source = s.source();
        }
        out
    }

    #[test]
    fn an_error_chain_says_each_thing_once() {
        let e = ServeError::Listen {
            what: "API",
            addr: "127.0.0.1:1".into(),
            error: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        let chain = chain(&e);
        assert_eq!(chain.matches("in use").count(), 1, "{chain}");
        assert!(chain.starts_with("API on 127.0.0.1:1: "), "{chain}");
        let started: Result<(), _> = Err("no fleet status").part("fleet");
        assert_eq!(started.unwrap_err().to_string(), "fleet: no fleet status");
    }
}
