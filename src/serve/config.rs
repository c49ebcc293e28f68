//! `flowprint serve`'s configuration: a YAML file (read with `yaml_serde`), every key also a
//! command-line flag. Unknown keys and bad values are errors that name the key and its line.
//!
//! ```yaml
//! listen: ["0.0.0.0:2055"]        # UDP collector sockets (NetFlow v5/v9, IPFIX, sFlow)
//! rules:
//!   embedded: true                # the bundled packs
//!   paths: [/etc/flowprint/rules] # rule files and pack directories, watched
//!   packs_dir: packs              # installed packs (`flowprint pack install`), watched
//!   overrides: null               # local overrides file: disable rules, change confidences
//!   watch: true
//!   poll: null                    # e.g. "2s": poll instead of inotify
//!   debounce: 250ms
//! state_dir: .                    # last good rules, generated API token
//! inventory: flowprint.db         # SQLite path or postgres:// URL; null: keep nothing
//! flush_interval: 30s
//! workers: 2
//! queue: 1024                     # batches of flows per worker queue
//! local_nets: []                  # default: RFC 1918, RFC 4193, link-local
//! half_life: 7d
//! max_hosts: 1000000
//! idle: none
//! dns:
//!   resolve: false                # resolve the rules' names and follow their TTLs
//!   servers: []                   # default: the system's resolvers
//!   logs: []                      # passive DNS logs loaded at start
//!   min_ttl: 30s
//!   max_ttl: 1h
//! fleet:                          # docs/fleet.md
//!   publish: null                 # collector role: nats://host:4222
//!   consume: null                 # worker role: nats://host:4222
//!   shards: 16
//!   owns: null                    # worker role: e.g. 0-7; default all
//!   lease: 6s
//!   ack_wait: 30s
//!   replicas: 1
//!   packs: true                   # worker role: follow `flowprint pack publish`
//!   trusted_keys: []
//!   allow_unsigned: false
//! api:
//!   listen: 127.0.0.1:9155
//!   token: null                   # or FLOWPRINT_API_TOKEN; generated into state_dir if unset
//!   max_body: 65536
//! ```

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A duration in the config: `250ms`, `30s`, `15m`, `12h`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let s = String::deserialize(d)?;
        match crate::flow::time::parse_duration_ms(&s).map_err(serde::de::Error::custom)? {
            Some(ms) if ms >= 0 => Ok(Dur(Duration::from_millis(ms as u64))),
            _ => Err(serde::de::Error::custom(format!(
                "`{s}` is not a duration here"
            ))),
        }
    }
}

/// An optional duration: a duration, `none` or null.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaybeDur(pub Option<Duration>);

impl<'de> Deserialize<'de> for MaybeDur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MaybeDur, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        let Some(s) = s else {
            return Ok(MaybeDur(None));
        };
        match crate::flow::time::parse_duration_ms(&s).map_err(serde::de::Error::custom)? {
            None => Ok(MaybeDur(None)),
            Some(ms) if ms >= 0 => Ok(MaybeDur(Some(Duration::from_millis(ms as u64)))),
            Some(_) => Err(serde::de::Error::custom("a duration cannot be negative")),
        }
    }
}

/// Where the rules come from and how they are watched.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Load the bundled packs.
    pub embedded: bool,
    /// Rule files and pack directories.
    pub paths: Vec<PathBuf>,
    /// Where `flowprint pack install` puts packs; every pack in it is loaded and watched.
    pub packs_dir: Option<PathBuf>,
    /// Local overrides: rules disabled or with another confidence (`docs/packs.md`).
    pub overrides: Option<PathBuf>,
    /// Reload when they change.
    pub watch: bool,
    /// Poll at this interval instead of inotify.
    pub poll: MaybeDur,
    /// Quiet time after a change before reloading.
    pub debounce: Dur,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            embedded: true,
            paths: Vec::new(),
            packs_dir: Some(PathBuf::from("packs")),
            overrides: None,
            watch: true,
            poll: MaybeDur(None),
            debounce: Dur(Duration::from_millis(250)),
        }
    }
}

/// DNS sources.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Resolve the rules' names and follow their TTLs.
    pub resolve: bool,
    /// DNS servers; empty: the system configuration.
    pub servers: Vec<SocketAddr>,
    /// Passive DNS logs or captures loaded at start.
    pub logs: Vec<PathBuf>,
    /// Shortest refresh interval.
    pub min_ttl: Dur,
    /// Longest refresh interval.
    pub max_ttl: Dur,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            resolve: false,
            servers: Vec::new(),
            logs: Vec::new(),
            min_ttl: Dur(Duration::from_secs(30)),
            max_ttl: Dur(Duration::from_secs(3600)),
        }
    }
}

/// The HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address; off loopback every endpoint but `/health` needs the token.
    pub listen: SocketAddr,
    /// Bearer token for mutating endpoints (and all of them off loopback).
    pub token: Option<String>,
    /// Largest request body, bytes.
    pub max_body: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9155)),
            token: None,
            max_body: 64 * 1024,
        }
    }
}

/// The fleet role (`docs/fleet.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Collector role: publish decoded flows to this NATS server's JetStream instead of
    /// evaluating them here.
    pub publish: Option<String>,
    /// Shards the flows are spread over (by host address); every collector and worker of a
    /// fleet must agree on it.
    pub shards: u32,
    /// Worker role: consume the shards of this NATS server's JetStream stream.
    pub consume: Option<String>,
    /// Worker role: the shards this worker may own (`0-15`, `0-3,8-11`); default all.
    pub owns: Option<String>,
    /// This worker's id in the fleet; default `<hostname>-<pid>-<random>`.
    pub id: Option<String>,
    /// A shard's lease (and a worker's heartbeat) expires this long after its last renewal.
    pub lease: Dur,
    /// A delivered batch not acknowledged this long is delivered again.
    pub ack_wait: Dur,
    /// Replicas of the stream and buckets (3 on a 3-node cluster).
    pub replicas: usize,
    /// The stream's size limit, bytes: beyond, collectors' batches are refused (and counted).
    pub max_bytes: i64,
    /// Worker role: follow the packs published with `flowprint pack publish`.
    pub packs: bool,
    /// Trusted public keys (files) for published packs.
    pub trusted_keys: Vec<PathBuf>,
    /// Install published packs without a signature (their digests are still checked).
    pub allow_unsigned: bool,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            publish: None,
            shards: 16,
            consume: None,
            owns: None,
            id: None,
            lease: Dur(Duration::from_secs(6)),
            ack_wait: Dur(Duration::from_secs(30)),
            replicas: 1,
            max_bytes: 1 << 30,
            packs: true,
            trusted_keys: Vec::new(),
            allow_unsigned: false,
        }
    }
}

impl FleetConfig {
    /// The bus settings of this configuration.
    pub fn bus(&self) -> crate::fleet::BusConfig {
        crate::fleet::BusConfig {
            max_bytes: self.max_bytes,
            ack_wait: self.ack_wait.0,
            replicas: self.replicas,
            lease: self.lease.0,
            ..crate::fleet::BusConfig::default()
        }
    }

    /// The shards this worker may own.
    pub fn owned_set(&self) -> Result<crate::fleet::lease::ShardSet, String> {
        match &self.owns {
            Some(s) => s.parse().map_err(|e| format!("fleet.owns: {e}")),
            None => Ok(crate::fleet::lease::ShardSet::all(self.shards)),
        }
    }
}

/// Everything `serve` needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// UDP collector sockets.
    pub listen: Vec<SocketAddr>,
    /// Requested socket receive buffer, bytes.
    pub recv_buffer: usize,
    /// Rules.
    pub rules: RulesConfig,
    /// Last good rules and the generated API token live here.
    pub state_dir: PathBuf,
    /// Inventory database: SQLite path or `postgres://` URL; `None`: nothing is kept.
    pub inventory: Option<String>,
    /// How often the inventory is written.
    pub flush_interval: Dur,
    /// Evaluator workers (each owns a shard of the hosts).
    pub workers: usize,
    /// Batches of flows queued per worker; beyond, batches are dropped and counted.
    pub queue: usize,
    /// Local networks (hosts); empty: RFC 1918, RFC 4193 and link-local.
    pub local_nets: Vec<IpNet>,
    /// Evidence half-life; `none`: no decay.
    pub half_life: MaybeDur,
    /// Most hosts kept.
    pub max_hosts: usize,
    /// Hosts idle this long are evicted; `none`: never.
    pub idle: MaybeDur,
    /// DNS.
    pub dns: DnsConfig,
    /// API.
    pub api: ApiConfig,
    /// Fleet role.
    pub fleet: FleetConfig,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 2055))],
            recv_buffer: 32 << 20,
            rules: RulesConfig::default(),
            state_dir: PathBuf::from("."),
            inventory: Some("flowprint.db".into()),
            flush_interval: Dur(Duration::from_secs(30)),
            workers: std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1))
                .clamp(1, 16),
            queue: 1024,
            local_nets: Vec::new(),
            half_life: MaybeDur(Some(Duration::from_secs(7 * 86_400))),
            max_hosts: 1_000_000,
            idle: MaybeDur(None),
            dns: DnsConfig::default(),
            api: ApiConfig::default(),
            fleet: FleetConfig::default(),
        }
    }
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid: the message names the key and the line.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// yaml_serde's message (`key: what, at line L column C`).
        message: String,
    },
}

/// Errors raised by our own value parsers carry no position: add the line (and the key) of
/// the value they quote.
fn locate(text: &str, message: String) -> String {
    if message.contains(" line ") {
        return message;
    }
    let quoted = message.split('`').nth(1).filter(|q| !q.is_empty());
    let found = quoted.and_then(|q| {
        text.lines()
            .enumerate()
            .find(|(_, l)| l.contains(q))
            .map(|(i, l)| (i + 1, l.split(':').next().unwrap_or("").trim().to_string()))
    });
    match found {
        Some((line, key)) => format!("{key}: {message} at line {line}"),
        None => message,
    }
}

impl ServeConfig {
    /// Reads and validates a config file.
    pub fn from_file(path: &Path) -> Result<ServeConfig, ConfigError> {
        use crate::limits::{MAX_YAML_FILE, ReadError, read_text_bounded};
        let text = match read_text_bounded(path, MAX_YAML_FILE, "a configuration file") {
            Ok(t) => t,
            Err(ReadError::Io { source, .. }) => {
                return Err(ConfigError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
            Err(e) => {
                return Err(ConfigError::Invalid {
                    path: path.display().to_string(),
                    message: e.to_string(),
                });
            }
        };
        ServeConfig::from_yaml(&text).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses and validates YAML text.
    pub fn from_yaml(text: &str) -> Result<ServeConfig, String> {
        if text.trim().is_empty() {
            return Ok(ServeConfig::default());
        }
        crate::limits::check_yaml(text, crate::limits::MAX_YAML_NESTING)
            .map_err(|e| e.to_string())?;
        let c: ServeConfig = yaml_serde::from_str(text).map_err(|e| locate(text, e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Checks what types cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.workers == 0 || self.workers > 256 {
            return Err("workers: must be between 1 and 256".into());
        }
        if self.queue == 0 {
            return Err("queue: must be at least 1".into());
        }
        if self.max_hosts == 0 {
            return Err("max_hosts: must be at least 1".into());
        }
        if self.api.max_body == 0 {
            return Err("api.max_body: must be at least 1".into());
        }
        if self.api.token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err("api.token: use at least 16 characters".into());
        }
        if self.fleet.shards == 0 || self.fleet.shards > 4096 {
            return Err("fleet.shards: must be between 1 and 4096".into());
        }
        if self.fleet.publish.is_some() && self.fleet.consume.is_some() {
            return Err(
                "fleet.publish and fleet.consume: a daemon is a collector or a worker, not both"
                    .into(),
            );
        }
        let set = self.fleet.owned_set()?;
        if set.shards(self.fleet.shards).is_empty() {
            return Err(format!(
                "fleet.owns: `{set}` has no shard below fleet.shards ({})",
                self.fleet.shards
            ));
        }
        if self.fleet.lease.0 < Duration::from_secs(1) {
            return Err("fleet.lease: must be at least 1s".into());
        }
        if self.fleet.replicas == 0 || self.fleet.replicas > 5 {
            return Err("fleet.replicas: must be between 1 and 5".into());
        }
        if self.fleet.id.as_deref().is_some_and(|id| {
            id.is_empty()
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }) {
            return Err("fleet.id: use letters, digits, `-` and `_`".into());
        }
        if self.dns.min_ttl.0 > self.dns.max_ttl.0 {
            return Err("dns.min_ttl: is longer than dns.max_ttl".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let c = ServeConfig::from_yaml("").unwrap();
        assert_eq!(c.listen, vec!["0.0.0.0:2055".parse().unwrap()]);
        assert_eq!(c.api.listen, "127.0.0.1:9155".parse().unwrap());
        assert!(c.rules.embedded);
    }

    #[test]
    fn keys_and_durations_are_read() {
        let c = ServeConfig::from_yaml(
            "listen: [\"127.0.0.1:9995\"]\nrules:\n  paths: [/tmp/r]\n  poll: 2s\nworkers: 3\nhalf_life: none\ndns:\n  min_ttl: 10s\n",
        )
        .unwrap();
        assert_eq!(c.workers, 3);
        assert_eq!(c.rules.poll.0, Some(Duration::from_secs(2)));
        assert_eq!(c.half_life.0, None);
        assert_eq!(c.dns.min_ttl.0, Duration::from_secs(10));
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let e = ServeConfig::from_yaml("workers: 2\nrules:\n  pathz: [a]\n").unwrap_err();
        assert!(e.contains("pathz") && e.contains("line 3"), "{e}");
        let e = ServeConfig::from_yaml("workers: two\n").unwrap_err();
        assert!(e.contains("workers") && e.contains("line 1"), "{e}");
        let e = ServeConfig::from_yaml("flush_interval: 30 parsecs\n").unwrap_err();
        assert!(e.contains("flush_interval") && e.contains("parsecs"), "{e}");
        let e = ServeConfig::from_yaml("workers: 0\n").unwrap_err();
        assert!(e.contains("workers"), "{e}");
    }

    #[test]
    fn fleet_roles_are_checked() {
        let c = ServeConfig::from_yaml(
            "fleet:\n  consume: nats://127.0.0.1:4222\n  owns: 0-3,8\n  lease: 10s\n",
        )
        .unwrap();
        assert_eq!(c.fleet.owned_set().unwrap().shards(16), vec![0, 1, 2, 3, 8]);
        assert_eq!(c.fleet.bus().lease, Duration::from_secs(10));
        let e = ServeConfig::from_yaml("fleet:\n  publish: nats://a\n  consume: nats://b\n")
            .unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = ServeConfig::from_yaml("fleet:\n  owns: 3-x\n").unwrap_err();
        assert!(e.contains("fleet.owns") && e.contains("3-x"), "{e}");
        let e = ServeConfig::from_yaml("fleet:\n  shards: 4\n  owns: 8-9\n").unwrap_err();
        assert!(e.contains("no shard below"), "{e}");
        let e = ServeConfig::from_yaml("fleet:\n  id: \"a b\"\n").unwrap_err();
        assert!(e.contains("fleet.id"), "{e}");
    }
}
