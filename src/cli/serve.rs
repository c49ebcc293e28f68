//! `flowprint serve`: the daemon. Options come from `--config FILE` (YAML), then flags.

use flowprint::flow::time::{Dur, MaybeDur};
use flowprint::serve::config::ServeConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Arguments of `serve`; each flag overrides the config file's key of the same name.
#[derive(clap::Args)]
pub struct Args {
    /// YAML configuration (see docs/serve.md); without it, the embedded defaults.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the configuration and the rules, then exit (0 when both are good).
    #[arg(long)]
    check: bool,
    /// UDP collector address (repeatable) [listen; default 0.0.0.0:2055].
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// Socket receive buffer to request, bytes [recv_buffer].
    #[arg(long, value_name = "BYTES")]
    recv_buffer: Option<usize>,
    /// Rule file or pack directory, watched (repeatable) [rules.paths].
    #[arg(long = "rules", short = 'r', value_name = "PATH")]
    rules: Vec<PathBuf>,
    /// Directory of installed packs, loaded and watched [rules.packs_dir; default packs].
    #[arg(long, value_name = "DIR")]
    packs_dir: Option<PathBuf>,
    /// Local overrides file: disable rules, change confidences [rules.overrides].
    #[arg(long, value_name = "FILE")]
    overrides: Option<PathBuf>,
    /// Do not load the bundled packs [rules.embedded: false].
    #[arg(long)]
    no_default_rules: bool,
    /// Do not watch the rule paths (reload on SIGHUP or POST /reload only) [rules.watch: false].
    #[arg(long)]
    no_watch: bool,
    /// Poll the rule paths at this interval instead of inotify, e.g. `2s` [rules.poll].
    #[arg(long, value_name = "DURATION")]
    poll: Option<String>,
    /// Quiet time after a change before reloading [rules.debounce; default 250ms].
    #[arg(long, value_name = "DURATION")]
    debounce: Option<String>,
    /// Directory for the last good rules and the generated API token [state_dir; default .].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Inventory database: SQLite path or postgres:// URL [inventory; default flowprint.db].
    #[arg(long, value_name = "DB")]
    db: Option<String>,
    /// Keep no inventory database [inventory: null].
    #[arg(long, conflicts_with = "db")]
    no_db: bool,
    /// How often the inventory is written [flush_interval; default 30s].
    #[arg(long, value_name = "DURATION")]
    flush_interval: Option<String>,
    /// Evaluator workers [workers].
    #[arg(long)]
    workers: Option<usize>,
    /// Batches queued per worker [queue; default 1024].
    #[arg(long)]
    queue: Option<usize>,
    /// Local network, whose addresses are hosts (repeatable) [local_nets].
    #[arg(long, value_name = "CIDR")]
    local_net: Vec<ipnet::IpNet>,
    /// Evidence half-life, or `none` [half_life; default 7d].
    #[arg(long, value_name = "DURATION")]
    half_life: Option<String>,
    /// Most hosts kept [max_hosts].
    #[arg(long)]
    max_hosts: Option<usize>,
    /// Evict hosts idle this long, or `none` [idle].
    #[arg(long, value_name = "DURATION")]
    idle: Option<String>,
    /// Resolve the rules' names and follow their TTLs [dns.resolve].
    #[arg(long)]
    dns_resolve: bool,
    /// DNS server for --dns-resolve (repeatable) [dns.servers; default: the system's].
    #[arg(long, value_name = "ADDR:PORT")]
    dns_server: Vec<SocketAddr>,
    /// Passive DNS log or capture loaded at start (repeatable) [dns.logs].
    #[arg(long, value_name = "FILE")]
    dns_log: Vec<PathBuf>,
    /// Shortest refresh interval of resolved names [dns.min_ttl; default 30s].
    #[arg(long, value_name = "DURATION")]
    dns_min_ttl: Option<String>,
    /// Longest refresh interval of resolved names [dns.max_ttl; default 1h].
    #[arg(long, value_name = "DURATION")]
    dns_max_ttl: Option<String>,
    /// Forget templates not refreshed this long, or `none` [collector.template_timeout;
    /// default 1h].
    #[arg(long, value_name = "DURATION")]
    template_timeout: Option<String>,
    /// Exporters whose counters and sessions are kept [collector.max_exporters; default 4096].
    #[arg(long, value_name = "N")]
    max_exporters: Option<usize>,
    /// Sessions (exporter × source id) kept in all [collector.max_sessions; default 16384].
    #[arg(long, value_name = "N")]
    max_sessions: Option<usize>,
    /// Sessions kept per exporter [collector.max_sessions_per_exporter; default 256].
    #[arg(long, value_name = "N")]
    max_sessions_per_exporter: Option<usize>,
    /// Templates kept per session [collector.max_templates_per_session; default 1024].
    #[arg(long, value_name = "N")]
    max_templates_per_session: Option<usize>,
    /// Data sets held per session for their template [collector.max_pending_sets; default 64].
    #[arg(long, value_name = "N")]
    max_pending_sets: Option<usize>,
    /// Bytes of data sets held per session [collector.max_pending_bytes; default 256 KiB].
    #[arg(long, value_name = "BYTES")]
    max_pending_bytes: Option<usize>,
    /// Bytes of templates and pending data in all [collector.max_state_bytes; default 128 MiB].
    #[arg(long, value_name = "BYTES")]
    max_state_bytes: Option<usize>,
    /// Exporters with metric series of their own [collector.max_exporter_series; default 1024].
    #[arg(long, value_name = "N")]
    max_exporter_series: Option<usize>,
    /// Collector role: publish flows to this NATS JetStream server instead of evaluating them;
    /// several servers separated by commas (docs/fleet.md) [fleet.publish].
    #[arg(long, value_name = "nats://HOST:PORT")]
    publish: Option<String>,
    /// Shards of the fleet [fleet.shards; default 16].
    #[arg(long, value_name = "N")]
    fleet_shards: Option<u32>,
    /// Worker role: consume shards of this NATS JetStream server's flow stream; several
    /// servers separated by commas (docs/fleet.md) [fleet.consume].
    #[arg(long, value_name = "nats://HOST:PORT")]
    consume: Option<String>,
    /// Worker role: the shards this worker may own, e.g. 0-15 [fleet.owns; default all].
    #[arg(long, value_name = "SET")]
    shards: Option<String>,
    /// This worker's id in the fleet [fleet.id].
    #[arg(long, value_name = "ID")]
    fleet_id: Option<String>,
    /// Shard lease duration [fleet.lease; default 6s].
    #[arg(long, value_name = "DURATION")]
    fleet_lease: Option<String>,
    /// Redelivery wait of unacknowledged batches [fleet.ack_wait; default 30s].
    #[arg(long, value_name = "DURATION")]
    fleet_ack_wait: Option<String>,
    /// Collector role: look a stored batch no worker confirmed up in the stream after this,
    /// and send it again if the stream lost it [fleet.confirm_wait; default 30s].
    #[arg(long, value_name = "DURATION")]
    fleet_confirm_wait: Option<String>,
    /// Replicas of the stream and buckets [fleet.replicas; default 1].
    #[arg(long, value_name = "N")]
    fleet_replicas: Option<usize>,
    /// The flow stream's size limit, bytes [fleet.max_bytes; default 1 GiB].
    #[arg(long, value_name = "BYTES")]
    fleet_max_bytes: Option<i64>,
    /// Worker role: do not follow published packs [fleet.packs = false].
    #[arg(long)]
    no_fleet_packs: bool,
    /// Trusted public key of published packs (repeatable) [fleet.trusted_keys].
    #[arg(long, value_name = "FILE")]
    fleet_trusted_key: Vec<PathBuf>,
    /// Install published packs without a signature [fleet.allow_unsigned].
    #[arg(long)]
    fleet_allow_unsigned: bool,
    /// API address [api.listen; default 127.0.0.1:9155].
    #[arg(long, value_name = "ADDR:PORT")]
    api_listen: Option<SocketAddr>,
    /// Largest API request body, bytes [api.max_body].
    #[arg(long, value_name = "BYTES")]
    api_max_body: Option<usize>,
    /// A `Host` name the API accepts besides loopback and its own address (repeatable)
    /// [api.hosts].
    #[arg(long = "api-host", value_name = "NAME")]
    api_hosts: Vec<String>,
    /// API connections open at once [api.max_connections; default 512].
    #[arg(long, value_name = "N")]
    api_max_connections: Option<usize>,
    /// Expensive API requests (host lists, pages, metrics) at once [api.max_concurrent; default 2].
    #[arg(long, value_name = "N")]
    api_max_concurrent: Option<usize>,
    /// Longest wait for a request's head [api.header_timeout; default 10s].
    #[arg(long, value_name = "DURATION")]
    api_header_timeout: Option<String>,
    /// Close API connections idle this long between requests [api.idle_timeout; default 30s].
    #[arg(long, value_name = "DURATION")]
    api_idle_timeout: Option<String>,
    /// Longest time to answer one API request [api.request_timeout; default 30s].
    #[arg(long, value_name = "DURATION")]
    api_request_timeout: Option<String>,
}

fn dur(key: &str, s: &str) -> anyhow::Result<Dur> {
    s.parse().map_err(|e| anyhow::anyhow!("--{key}: {e}"))
}

fn maybe_dur(key: &str, s: &str) -> anyhow::Result<MaybeDur> {
    s.parse().map_err(|e| anyhow::anyhow!("--{key}: {e}"))
}

impl Args {
    fn into_config(self) -> anyhow::Result<(ServeConfig, bool)> {
        let mut c = match &self.config {
            Some(p) => ServeConfig::from_file(p)?,
            None => ServeConfig::default(),
        };
        if !self.listen.is_empty() {
            c.listen = self.listen;
        }
        if let Some(v) = self.recv_buffer {
            c.recv_buffer = v;
        }
        if !self.rules.is_empty() {
            c.rules.paths = self.rules;
        }
        if let Some(v) = self.packs_dir {
            c.rules.packs_dir = Some(v);
        }
        if let Some(v) = self.overrides {
            c.rules.overrides = Some(v);
        }
        if self.no_default_rules {
            c.rules.embedded = false;
        }
        if self.no_watch {
            c.rules.watch = false;
        }
        if let Some(v) = &self.poll {
            c.rules.poll = maybe_dur("poll", v)?;
        }
        if let Some(v) = &self.debounce {
            c.rules.debounce = dur("debounce", v)?;
        }
        if let Some(v) = self.state_dir {
            c.state_dir = v;
        }
        if let Some(v) = self.db {
            c.inventory = Some(v);
        }
        if self.no_db {
            c.inventory = None;
        }
        if let Some(v) = &self.flush_interval {
            c.flush_interval = dur("flush-interval", v)?;
        }
        if let Some(v) = self.workers {
            c.workers = v;
        }
        if let Some(v) = self.queue {
            c.queue = v;
        }
        if !self.local_net.is_empty() {
            c.local_nets = self.local_net;
        }
        if let Some(v) = &self.half_life {
            c.half_life = maybe_dur("half-life", v)?;
        }
        if let Some(v) = self.max_hosts {
            c.max_hosts = v;
        }
        if let Some(v) = &self.idle {
            c.idle = maybe_dur("idle", v)?;
        }
        if self.dns_resolve {
            c.dns.resolve = true;
        }
        if !self.dns_server.is_empty() {
            c.dns.servers = self.dns_server;
        }
        if !self.dns_log.is_empty() {
            c.dns.logs = self.dns_log;
        }
        if let Some(v) = &self.dns_min_ttl {
            c.dns.min_ttl = dur("dns-min-ttl", v)?;
        }
        if let Some(v) = &self.dns_max_ttl {
            c.dns.max_ttl = dur("dns-max-ttl", v)?;
        }
        if let Some(v) = self.publish {
            c.fleet.publish = Some(v);
        }
        if let Some(v) = self.fleet_shards {
            c.fleet.shards = v;
        }
        if let Some(v) = self.consume {
            c.fleet.consume = Some(v);
        }
        if let Some(v) = self.shards {
            c.fleet.owns = Some(v);
        }
        if let Some(v) = self.fleet_id {
            c.fleet.id = Some(v);
        }
        if let Some(v) = &self.fleet_lease {
            c.fleet.lease = dur("fleet-lease", v)?;
        }
        if let Some(v) = &self.fleet_ack_wait {
            c.fleet.ack_wait = dur("fleet-ack-wait", v)?;
        }
        if let Some(v) = &self.fleet_confirm_wait {
            c.fleet.confirm_wait = dur("fleet-confirm-wait", v)?;
        }
        if let Some(v) = self.fleet_replicas {
            c.fleet.replicas = v;
        }
        if let Some(v) = self.fleet_max_bytes {
            c.fleet.max_bytes = v;
        }
        if self.no_fleet_packs {
            c.fleet.packs = false;
        }
        if !self.fleet_trusted_key.is_empty() {
            c.fleet.trusted_keys = self.fleet_trusted_key;
        }
        if self.fleet_allow_unsigned {
            c.fleet.allow_unsigned = true;
        }
        if let Some(v) = self.api_listen {
            c.api.listen = v;
        }
        if let Some(v) = &self.template_timeout {
            c.collector.template_timeout = maybe_dur("template-timeout", v)?;
        }
        let l = &mut c.collector;
        for (flag, slot) in [
            (self.max_exporters, &mut l.max_exporters),
            (self.max_sessions, &mut l.max_sessions),
            (
                self.max_sessions_per_exporter,
                &mut l.max_sessions_per_exporter,
            ),
            (
                self.max_templates_per_session,
                &mut l.max_templates_per_session,
            ),
            (self.max_pending_sets, &mut l.max_pending_sets),
            (self.max_pending_bytes, &mut l.max_pending_bytes),
            (self.max_state_bytes, &mut l.max_state_bytes),
            (self.max_exporter_series, &mut l.max_exporter_series),
        ] {
            if let Some(v) = flag {
                *slot = v;
            }
        }
        if let Some(v) = self.api_max_body {
            c.api.max_body = v;
        }
        if !self.api_hosts.is_empty() {
            c.api.hosts = self.api_hosts;
        }
        if let Some(v) = self.api_max_connections {
            c.api.max_connections = v;
        }
        if let Some(v) = self.api_max_concurrent {
            c.api.max_concurrent = v;
        }
        if let Some(v) = &self.api_header_timeout {
            c.api.header_timeout = dur("api-header-timeout", v)?;
        }
        if let Some(v) = &self.api_idle_timeout {
            c.api.idle_timeout = dur("api-idle-timeout", v)?;
        }
        if let Some(v) = &self.api_request_timeout {
            c.api.request_timeout = dur("api-request-timeout", v)?;
        }
        c.validate()?;
        Ok((c, self.check))
    }
}

/// Runs `serve`.
pub fn run(args: Args) -> anyhow::Result<i32> {
    use tracing_subscriber::EnvFilter;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FLOWPRINT_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let (config, check) = args.into_config()?;
    if check {
        let store = flowprint::store::RuleStore::open(flowprint::store::StoreConfig {
            state_dir: None,
            ..flowprint::serve::store_config(&config)
        })?;
        println!(
            "configuration good; {} rules compile",
            store.current().ruleset.len()
        );
        return Ok(0);
    }
    flowprint::serve::run(config, Arc::new(AtomicBool::new(false)))?;
    Ok(0)
}
