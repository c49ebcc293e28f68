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
//!   publish: null                 # collector role: nats://host:4222 (several: comma-separated)
//!   consume: null                 # worker role: nats://host:4222 (several: comma-separated)
//!   shards: 16
//!   owns: null                    # worker role: e.g. 0-7; default all
//!   lease: 6s
//!   ack_wait: 30s
//!   confirm_wait: 30s             # collector role: an unconfirmed batch is looked up after this
//!   replicas: 1
//!   packs: true                   # worker role: follow `flowprint pack publish`
//!   trusted_keys: []
//!   allow_unsigned: false
//! collector:                      # the caps on what exporters make it keep (docs/limits.md)
//!   template_timeout: 1h          # templates not refreshed this long are forgotten; none: kept
//!   max_exporters: 4096           # exporters whose counters and sessions are kept
//!   max_sessions: 16384           # exporter × source id / observation domain, in all
//!   max_sessions_per_exporter: 256
//!   max_templates_per_session: 1024
//!   max_pending_sets: 64          # data sets waiting for their template, per session
//!   max_pending_bytes: 262144     # the same in bytes, per session
//!   max_state_bytes: 134217728    # templates and pending data in all
//!   max_exporter_series: 1024     # exporters with their own metrics; the others: `other`
//! api:
//!   listen: 127.0.0.1:9155
//!   token: null                   # or FLOWPRINT_API_TOKEN; generated into state_dir if unset
//!   max_body: 65536
//!   hosts: []                     # Host names accepted besides loopback and the listen address
//!   max_connections: 512          # open at once (at most half the file-descriptor limit)
//!   max_concurrent: 2             # expensive requests (/hosts, pages, /metrics) at once
//!   header_timeout: 10s           # to send a request's head
//!   idle_timeout: 30s             # a connection without traffic between requests
//!   request_timeout: 30s          # to answer one request
//! ```

mod error;
pub use error::ConfigError;
use error::{invalid, locate};

use crate::flow::time::{Dur, MaybeDur};
use ipnet::IpNet;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// `Host` names accepted besides loopback names and addresses and the address a client
    /// connected to (requests naming another host are refused: DNS rebinding).
    pub hosts: Vec<String>,
    /// Connections open at once; at the cap no more are accepted until one closes.
    pub max_connections: usize,
    /// Expensive requests (host lists, pages, metrics) run at once; beyond, 503.
    pub max_concurrent: usize,
    /// Longest wait for a request's head (slow or absent headers).
    pub header_timeout: Dur,
    /// A connection with no traffic this long, between requests, is closed.
    pub idle_timeout: Dur,
    /// Longest time to answer one request (body included); beyond, 503.
    pub request_timeout: Dur,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9155)),
            token: None,
            max_body: 64 * 1024,
            hosts: Vec::new(),
            max_connections: 512,
            max_concurrent: 2,
            header_timeout: Dur(Duration::from_secs(10)),
            idle_timeout: Dur(Duration::from_secs(30)),
            request_timeout: Dur(Duration::from_secs(30)),
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
    /// Collector role: a stored batch that no worker confirmed this long is looked up in the
    /// stream, and sent again when the stream no longer holds it (`serve::outbox`).
    pub confirm_wait: Dur,
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
            confirm_wait: Dur(crate::serve::outbox::CONFIRM_WAIT),
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
    pub fn owned_set(&self) -> Result<crate::fleet::lease::ShardSet, ConfigError> {
        match &self.owns {
            Some(s) => s
                .parse::<crate::fleet::lease::ShardSet>()
                .map_err(|e| invalid("fleet.owns", e.to_string())),
            None => Ok(crate::fleet::lease::ShardSet::all(self.shards)),
        }
    }
}

/// The collector's template timeout and caps (docs/limits.md, "Collector").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorLimits {
    /// Templates not refreshed this long (by the exporter's clock) are forgotten; `none`:
    /// kept until replaced, withdrawn or evicted.
    pub template_timeout: MaybeDur,
    /// Exporters whose counters and sessions are kept.
    pub max_exporters: usize,
    /// Sessions (exporter × source id / observation domain) in all.
    pub max_sessions: usize,
    /// Sessions per exporter.
    pub max_sessions_per_exporter: usize,
    /// Templates per session.
    pub max_templates_per_session: usize,
    /// Data sets waiting for their template, per session.
    pub max_pending_sets: usize,
    /// Bytes of data sets waiting for their template, per session.
    pub max_pending_bytes: usize,
    /// Bytes of templates and pending data in all.
    pub max_state_bytes: usize,
    /// Exporters with their own metric series; the others are added up as `other`.
    pub max_exporter_series: usize,
}

impl Default for CollectorLimits {
    fn default() -> Self {
        let d = crate::flow::netflow::DecoderConfig::collector();
        CollectorLimits {
            template_timeout: MaybeDur(
                d.template_timeout_ms
                    .map(|ms| Duration::from_millis(ms as u64)),
            ),
            max_exporters: d.max_exporters,
            max_sessions: d.max_sessions,
            max_sessions_per_exporter: d.max_sessions_per_exporter,
            max_templates_per_session: d.max_templates_per_session,
            max_pending_sets: d.pending_max,
            max_pending_bytes: d.pending_bytes_max,
            max_state_bytes: d.max_state_bytes,
            max_exporter_series: crate::collect::CollectorConfig::default().max_exporter_series,
        }
    }
}

impl CollectorLimits {
    /// The decoder's settings.
    pub fn decoder(&self) -> crate::flow::netflow::DecoderConfig {
        crate::flow::netflow::DecoderConfig {
            template_timeout_ms: self
                .template_timeout
                .0
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            pending_max: self.max_pending_sets,
            pending_bytes_max: self.max_pending_bytes,
            max_exporters: self.max_exporters,
            max_sessions: self.max_sessions,
            max_sessions_per_exporter: self.max_sessions_per_exporter,
            max_templates_per_session: self.max_templates_per_session,
            max_state_bytes: self.max_state_bytes,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("max_exporters", self.max_exporters),
            ("max_sessions", self.max_sessions),
            ("max_sessions_per_exporter", self.max_sessions_per_exporter),
            ("max_templates_per_session", self.max_templates_per_session),
            ("max_pending_sets", self.max_pending_sets),
        ] {
            if v == 0 {
                return Err(invalid(format!("collector.{key}"), "must be at least 1"));
            }
        }
        if self.max_pending_bytes < 65_536 {
            return Err(invalid(
                "collector.max_pending_bytes",
                "must be at least 65536 (one largest data set)",
            ));
        }
        if self.max_state_bytes < self.max_pending_bytes {
            return Err(invalid(
                "collector.max_state_bytes",
                "is below collector.max_pending_bytes",
            ));
        }
        if self
            .template_timeout
            .0
            .is_some_and(|d| d < Duration::from_secs(1))
        {
            return Err(invalid(
                "collector.template_timeout",
                "must be at least 1s, or none",
            ));
        }
        Ok(())
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
    /// The collector's caps.
    pub collector: CollectorLimits,
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
            collector: CollectorLimits::default(),
            api: ApiConfig::default(),
            fleet: FleetConfig::default(),
        }
    }
}

/// Shortest polling interval of the rule paths (`rules.poll`): below it, polling is a busy
/// loop over the files.
pub const MIN_POLL: Duration = Duration::from_millis(100);
/// Shortest API timeout accepted.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(100);

/// Whether `h` can be an `api.hosts` entry: a DNS name (or an address literal), no port.
pub fn valid_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && (h.parse::<std::net::IpAddr>().is_ok()
            || h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'))
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
            Err(e) => return Err(ConfigError::Read(e)),
        };
        ServeConfig::from_yaml(&text).map_err(|error| ConfigError::File {
            path: path.display().to_string(),
            error: Box::new(error),
        })
    }

    /// Parses and validates YAML text.
    pub fn from_yaml(text: &str) -> Result<ServeConfig, ConfigError> {
        if text.trim().is_empty() {
            return Ok(ServeConfig::default());
        }
        crate::limits::check_yaml(text, crate::limits::MAX_YAML_NESTING)?;
        let c: ServeConfig = yaml_serde::from_str(text).map_err(|e| locate(text, e))?;
        c.validate()?;
        Ok(c)
    }

    /// Checks what types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.workers == 0 || self.workers > 256 {
            return Err(invalid("workers", "must be between 1 and 256"));
        }
        if self.queue == 0 {
            return Err(invalid("queue", "must be at least 1"));
        }
        if self.max_hosts == 0 {
            return Err(invalid("max_hosts", "must be at least 1"));
        }
        if self.half_life.0 == Some(Duration::ZERO) {
            return Err(invalid(
                "half_life",
                "must be longer than 0 (`none` means no decay)",
            ));
        }
        if self.idle.0 == Some(Duration::ZERO) {
            return Err(invalid(
                "idle",
                "must be longer than 0 (it would evict every host at once; `none` means never)",
            ));
        }
        if self.api.max_body == 0 {
            return Err(invalid("api.max_body", "must be at least 1"));
        }
        if self.api.max_connections == 0 || self.api.max_connections > 1_000_000 {
            return Err(invalid(
                "api.max_connections",
                "must be between 1 and 1000000",
            ));
        }
        if self.api.max_concurrent == 0 || self.api.max_concurrent > 1024 {
            return Err(invalid("api.max_concurrent", "must be between 1 and 1024"));
        }
        for (key, d) in [
            ("api.header_timeout", self.api.header_timeout),
            ("api.idle_timeout", self.api.idle_timeout),
            ("api.request_timeout", self.api.request_timeout),
        ] {
            if d.0 < MIN_TIMEOUT {
                return Err(invalid(
                    key,
                    format!(
                        "must be at least {} ms (got {} ms)",
                        MIN_TIMEOUT.as_millis(),
                        d.0.as_millis()
                    ),
                ));
            }
        }
        if let Some(h) = self.api.hosts.iter().find(|h| !valid_host_name(h)) {
            return Err(invalid(
                "api.hosts",
                format!("`{h}` is not a host name (letters, digits, `-`, `.`; no port)"),
            ));
        }
        if let Some(p) = self.rules.poll.0
            && p < MIN_POLL
        {
            return Err(invalid(
                "rules.poll (--poll)",
                format!(
                    "must be at least {} ms (got {} ms); `none` uses inotify",
                    MIN_POLL.as_millis(),
                    p.as_millis()
                ),
            ));
        }
        if self.api.token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(invalid("api.token", "use at least 16 characters"));
        }
        if self.fleet.shards == 0 || self.fleet.shards > 4096 {
            return Err(invalid("fleet.shards", "must be between 1 and 4096"));
        }
        if self.fleet.publish.is_some() && self.fleet.consume.is_some() {
            return Err(invalid(
                "fleet.publish and fleet.consume",
                "a daemon is a collector or a worker, not both",
            ));
        }
        let set = self.fleet.owned_set()?;
        if set.shards(self.fleet.shards).is_empty() {
            return Err(invalid(
                "fleet.owns",
                format!(
                    "`{set}` has no shard below fleet.shards ({})",
                    self.fleet.shards
                ),
            ));
        }
        if self.fleet.lease.0 < Duration::from_secs(1) {
            return Err(invalid("fleet.lease", "must be at least 1s"));
        }
        if self.fleet.confirm_wait.0 < Duration::from_secs(1) {
            return Err(invalid("fleet.confirm_wait", "must be at least 1s"));
        }
        if self.fleet.replicas == 0 || self.fleet.replicas > 5 {
            return Err(invalid("fleet.replicas", "must be between 1 and 5"));
        }
        if self.fleet.id.as_deref().is_some_and(|id| {
            id.is_empty()
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }) {
            return Err(invalid("fleet.id", "use letters, digits, `-` and `_`"));
        }
        if self.dns.min_ttl.0 > self.dns.max_ttl.0 {
            return Err(invalid("dns.min_ttl", "is longer than dns.max_ttl"));
        }
        self.collector.validate()
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
        let e = ServeConfig::from_yaml("workers: 2\nrules:\n  pathz: [a]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pathz") && e.contains("line 3"), "{e}");
        let e = ServeConfig::from_yaml("workers: two\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("workers") && e.contains("line 1"), "{e}");
        let e = ServeConfig::from_yaml("flush_interval: 30 parsecs\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("flush_interval") && e.contains("parsecs"), "{e}");
        let e = ServeConfig::from_yaml("workers: 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("workers"), "{e}");
    }

    #[test]
    fn errors_are_typed_and_keep_their_line() {
        let e = ServeConfig::from_yaml("workers: 2\nrules:\n  pathz: [a]\n").unwrap_err();
        assert!(matches!(e, ConfigError::Yaml { .. }), "{e:?}");
        assert_eq!(e.line(), Some(3));
        // A value parser's error: the line of the value it quotes.
        let e = ServeConfig::from_yaml("workers: 2\nflush_interval: 30 parsecs\n").unwrap_err();
        assert_eq!(e.line(), Some(2), "{e}");
        let e = ServeConfig::from_yaml("workers: 0\n").unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { key, .. } if key == "workers"),
            "{e:?}"
        );
        assert_eq!(e.line(), None);
    }

    #[test]
    fn polling_and_api_limits_are_checked() {
        let e = ServeConfig::from_yaml("rules:\n  poll: 0s\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rules.poll") && e.contains("at least 100 ms"),
            "{e}"
        );
        let e = ServeConfig::from_yaml("rules:\n  poll: 10ms\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("got 10 ms"), "{e}");
        assert!(ServeConfig::from_yaml("rules:\n  poll: 100ms\n").is_ok());
        let e = ServeConfig::from_yaml("api:\n  idle_timeout: 0s\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("api.idle_timeout"), "{e}");
        let e = ServeConfig::from_yaml("api:\n  max_connections: 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("api.max_connections"), "{e}");
        let e = ServeConfig::from_yaml("api:\n  hosts: [\"a.example:80\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("api.hosts"), "{e}");
        let c = ServeConfig::from_yaml("api:\n  hosts: [flowprint.lan]\n  max_concurrent: 4\n")
            .unwrap();
        assert_eq!(c.api.hosts, vec!["flowprint.lan".to_string()]);
        assert_eq!(c.api.max_concurrent, 4);
    }

    #[test]
    fn collector_limits_are_read_and_checked() {
        let c =
            ServeConfig::from_yaml("collector:\n  template_timeout: 30m\n  max_sessions: 100\n")
                .unwrap();
        let d = c.collector.decoder();
        assert_eq!(d.template_timeout_ms, Some(1_800_000));
        assert_eq!((d.max_sessions, d.max_exporters), (100, 4096));
        let c = ServeConfig::from_yaml("collector:\n  template_timeout: none\n").unwrap();
        assert_eq!(c.collector.decoder().template_timeout_ms, None);
        assert_eq!(
            ServeConfig::default()
                .collector
                .decoder()
                .template_timeout_ms,
            Some(3_600_000)
        );
        let e = ServeConfig::from_yaml("collector:\n  max_exporters: 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("collector.max_exporters"), "{e}");
        let e = ServeConfig::from_yaml("collector:\n  max_sesions: 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_sesions") && e.contains("line 2"), "{e}");
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
            .unwrap_err()
            .to_string();
        assert!(e.contains("not both"), "{e}");
        let e = ServeConfig::from_yaml("fleet:\n  owns: 3-x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fleet.owns") && e.contains("3-x"), "{e}");
        let e = ServeConfig::from_yaml("fleet:\n  shards: 4\n  owns: 8-9\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no shard below"), "{e}");
        let e = ServeConfig::from_yaml("fleet:\n  id: \"a b\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fleet.id"), "{e}");
    }
}
