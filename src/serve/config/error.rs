//! Why a configuration cannot be used ([`ConfigError`]): the file, the key, the line.
//!
//! A YAML error keeps yaml_serde's error and its position ([`yaml_serde::Error::location`]);
//! our own value parsers' errors, which have none, get the line and the key of the value they
//! quote. A value the types accept but the daemon cannot run with names its key.

/// A configuration that could not be used: which file, which key, which line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not one we read (too large, not UTF-8): the message names the file.
    #[error(transparent)]
    Read(crate::limits::ReadError),
    /// The text is refused before it is parsed (too large, nested too deep).
    #[error(transparent)]
    Refused(#[from] crate::limits::YamlRefusal),
    /// Not YAML of a configuration: an unknown key, a value of the wrong type or form. Where
    /// yaml_serde knows the position its message says it ([`yaml_serde::Error::location`]);
    /// where it does not (our own value parsers), the key and the line of the value quoted.
    #[error("{}", match found {
        Some((line, key)) => format!("{key}: {source} at line {line}"),
        None => source.to_string(),
    })]
    Yaml {
        /// yaml_serde's error (in the message, not as a source: the chain prints once).
        source: yaml_serde::Error,
        /// The line and key of the value it quotes, when it has no position of its own.
        found: Option<(usize, String)>,
    },
    /// A value the types accept but the daemon cannot run with.
    #[error("{key}: {problem}")]
    Invalid {
        /// The key (`workers`, `api.hosts`, `fleet.owns`, ...).
        key: String,
        /// What is wrong with its value.
        problem: String,
    },
    /// An error of the configuration file `path`.
    #[error("{path}: {error}")]
    File {
        /// The file.
        path: String,
        /// What is wrong in it.
        error: Box<ConfigError>,
    },
}

impl ConfigError {
    /// The 1-based line of the error in the YAML text, when it is known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Yaml { source, found } => source
                .location()
                .filter(|l| l.index() > 0)
                .map(|l| l.line())
                .or_else(|| found.as_ref().map(|(line, _)| *line)),
            ConfigError::Refused(crate::limits::YamlRefusal::TooDeep { line, .. }) => Some(*line),
            ConfigError::File { error, .. } => error.line(),
            _ => None,
        }
    }
}

/// `key: problem`.
pub(super) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// yaml_serde's error, which names the line and column where the parser knows them; errors
/// raised by our own value parsers carry no position: find the line (and the key) of the value
/// they quote.
pub(super) fn locate(text: &str, source: yaml_serde::Error) -> ConfigError {
    // A value parser's error gets the position of the document's start (shown as none).
    if source.location().is_some_and(|l| l.index() > 0) {
        return ConfigError::Yaml {
            source,
            found: None,
        };
    }
    let message = source.to_string();
    let quoted = message.split('`').nth(1).filter(|q| !q.is_empty());
    let found = quoted.and_then(|q| {
        text.lines()
            .enumerate()
            .find(|(_, l)| l.contains(q))
            .map(|(i, l)| (i + 1, l.split(':').next().unwrap_or("").trim().to_string()))
    });
    ConfigError::Yaml { source, found }
}
