//! Starting the daemon up to the point where it could serve: the configuration checked, the
//! rules loaded, the inventory read back, the workers started, every socket bound.
//!
//! The order is the guarantee: rules first (without good rules there is nothing to run; the
//! last good set when the files on disk do not compile), then the inventory database (what it
//! holds is where the daemon starts from; evidence of rules not loaded is kept and written
//! back, never deleted), then passive DNS logs, the workers (one shard of hosts each, or worker
//! role one per fleet shard, empty until owned), the DNS refresher, the collector's sockets and
//! the API's listener. Nothing is spawned here but the workers; the other threads are
//! [`super::lifecycle`]'s.

use super::config::ServeConfig;
use super::error::Part;
use super::pipeline::{self, Counters, Dispatcher, Workers};
use super::{Daemon, ServeError, member, prom, store_config, token};
use crate::collect::{Collector, CollectorConfig};
use crate::dns::DnsMap;
use crate::dns::resolve::{HickoryResolver, RefreshSettings, Refresher, ResolverSettings};
use crate::eval::{LocalNets, shard_of};
use crate::infer::{HostTable, InferConfig};
use crate::store::{RuleStore, Snapshot};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

/// A daemon booted: what the lifecycle and the collector's loop take over.
pub(super) struct Booted {
    /// What every part shares.
    pub daemon: Arc<Daemon>,
    /// Where the collector's flows go to the workers.
    pub dispatcher: Dispatcher,
    /// The workers, joined once the dispatcher is dropped.
    pub workers: Workers,
    /// The bound collector (no sockets in the worker role).
    pub collector: Collector,
    /// The bound, non-blocking API listener.
    pub api_listener: std::net::TcpListener,
    /// The hosts' scoring settings (the fleet's workers build their shards with them).
    pub infer: InferConfig,
}

/// Checks `config` and completes it for its role.
pub(super) fn prepare(mut config: ServeConfig) -> Result<ServeConfig, ServeError> {
    config.validate()?;
    let worker_role = config.fleet.consume.is_some();
    if worker_role && config.fleet.packs && config.rules.packs_dir.is_none() {
        // Published packs are installed here, and loaded like any installed pack.
        config.rules.packs_dir = Some(config.state_dir.join("packs"));
    }
    if worker_role && config.inventory.is_none() {
        tracing::warn!(
            "fleet worker without an inventory database: a shard taken over starts empty, and a worker that dies loses its evidence"
        );
    }
    let _ = prom::prometheus();
    Ok(config)
}

/// The rule store, loaded: the rules on disk, or the last good set when they do not compile
/// (said loudly).
pub(super) fn rules(config: &ServeConfig) -> Result<Arc<RuleStore>, ServeError> {
    if let Some(d) = &config.rules.packs_dir {
        std::fs::create_dir_all(d).map_err(ServeError::file("packs directory", d))?;
    }
    let store = Arc::new(RuleStore::open(store_config(config))?);
    let boot = store.boot_status();
    if boot.from_last_good {
        tracing::error!(
            saved_at = boot.last_good_saved_at.as_deref().unwrap_or("?"),
            "THE RULES ON DISK DO NOT COMPILE: running the last good set instead; fix them and save (or SIGHUP) to load them:\n{}",
            boot.disk_diagnostics.join("")
        );
    }
    let snap = store.current();
    tracing::info!(
        rules = snap.ruleset.len(),
        packs = ?snap.packs.iter().map(|p| format!("{} {}", p.name, p.version.as_deref().unwrap_or("-"))).collect::<Vec<_>>(),
        "rules loaded"
    );
    Ok(store)
}

/// Everything but the threads: the inventory read back, the workers, the sockets, the daemon.
pub(super) fn start(config: &ServeConfig, store: Arc<RuleStore>) -> Result<Booted, ServeError> {
    let worker_role = config.fleet.consume.is_some();
    let snap = store.current();
    let local = Arc::new(local_nets(config));
    let infer = InferConfig {
        half_life_ms: config.half_life.0.map(|d| d.as_millis() as i64),
        max_hosts: config.max_hosts,
        idle_ms: config.idle.0.map(|d| d.as_millis() as i64),
        ..InferConfig::default()
    };
    let (db, full, dns) = restore(config, &snap, &infer)?;
    let inventories = split(config, full);
    let dns = Arc::new(RwLock::new(dns));
    let counters = Arc::new(Counters::default());
    let (dispatcher, workers) = pipeline::start(
        store.clone(),
        inventories,
        local,
        dns.clone(),
        counters.clone(),
        config.queue,
    )
    .part("workers")?;
    let refresher = refresher(config, &snap, &dns)?;
    let collector = Collector::bind(&CollectorConfig {
        // Worker role: flows come from the bus, not from sockets.
        listen: if worker_role {
            Vec::new()
        } else {
            config.listen.clone()
        },
        recv_buffer: config.recv_buffer,
        decoder: config.collector.decoder(),
        max_exporter_series: config.collector.max_exporter_series,
        ..CollectorConfig::default()
    })
    .part("collector")?;
    for l in collector.listeners() {
        tracing::info!(
            addr = %l.addr,
            granted_kib = l.granted / 1024,
            requested_kib = l.requested / 1024,
            "collecting"
        );
    }
    let token = token::api_token(config)?;
    let (api_listener, api_addr) = bind_api(config)?;
    let daemon = Arc::new(Daemon {
        listeners: collector.listeners().to_vec(),
        config: config.clone(),
        store: store.clone(),
        shards: workers.shards.clone(),
        counters,
        dns,
        refresher,
        token,
        started: Instant::now(),
        collector: Mutex::new(collector.stats()),
        api_addr,
        fleet: worker_role.then(|| Arc::new(member::FleetStatus::default())),
        summary_cache: Default::default(),
        history: Mutex::new(Default::default()),
        history_counted: Default::default(),
        inventory_db: Mutex::new(db),
        flushes: Mutex::new((0, 0)),
        dns_saved: Default::default(),
        http: Default::default(),
        expensive: Arc::new(tokio::sync::Semaphore::new(config.api.max_concurrent)),
        retry: Default::default(),
        watch: OnceLock::new(),
    });
    // A boot that could not read every file is retried like a reload.
    daemon.retry.note(&store.last_report());
    Ok(Booted {
        daemon,
        dispatcher,
        workers,
        collector,
        api_listener,
        infer,
    })
}

/// The configured local networks, or the private and link-local ones.
pub(super) fn local_nets(config: &ServeConfig) -> LocalNets {
    if config.local_nets.is_empty() {
        LocalNets::default()
    } else {
        LocalNets::new(config.local_nets.clone())
    }
}

type Restored = (Option<Box<dyn crate::inventory::Store>>, HostTable, DnsMap);

/// The inventory database opened, its hosts (not in the worker role: each shard's hosts are
/// read when its lease is taken) and DNS pairs read back, then the passive DNS logs.
fn restore(
    config: &ServeConfig,
    snap: &Snapshot,
    infer: &InferConfig,
) -> Result<Restored, ServeError> {
    let worker_role = config.fleet.consume.is_some();
    let mut db = match &config.inventory {
        Some(spec) => Some(crate::inventory::open(spec)?),
        None => None,
    };
    let mut dns = DnsMap::new();
    let mut full = HostTable::with_config(infer.clone());
    if let Some(db) = db.as_mut() {
        let stored = if worker_role {
            Vec::new()
        } else {
            db.load_all()?
        };
        // Evidence of rules not loaded (a pack removed, other rules than those that wrote the
        // inventory) is kept and written back, never deleted by the daemon.
        let restored = full.restore(&stored, &snap.ruleset);
        if let Some(note) = restored.kept_note() {
            tracing::warn!("inventory: {note}");
        }
        crate::inventory::StoredDnsPair::restore(&db.load_dns()?, &mut dns);
        tracing::info!(
            hosts = full.len(),
            kept_rows = restored.kept_rows,
            kept_rules = restored.kept_rules.len(),
            bad_hosts = restored.bad_hosts,
            dns_pairs = dns.len(),
            "inventory restored"
        );
    }
    for log in &config.dns.logs {
        let path = log.display().to_string();
        let n = crate::dns::passive::load_into(&mut dns, &path, &mut |e| {
            tracing::warn!("{e}");
        })
        .part("passive DNS")?;
        tracing::info!(path, answers = n, "passive DNS loaded");
    }
    Ok((db, full, dns))
}

/// The hosts split by shard: one part per worker, each bounded by its share of `max_hosts`;
/// worker role: one (empty until owned) per shard of the fleet.
fn split(config: &ServeConfig, mut full: HostTable) -> Vec<HostTable> {
    let worker_role = config.fleet.consume.is_some();
    let n = if worker_role {
        config.fleet.shards as usize
    } else {
        config.workers
    };
    let mut inventories = Vec::with_capacity(n);
    for i in 0..n {
        let rest = full.split_off(|a| shard_of(a, n as u32) == i as u32);
        inventories.push(full);
        full = rest;
    }
    if !worker_role {
        // `max_hosts` bounds the daemon's hosts: each worker holds its share.
        for inv in &mut inventories {
            inv.set_max_hosts((config.max_hosts / n).max(1));
        }
    }
    inventories
}

/// The active resolver of the rules' names, when `dns.resolve` is on (not started yet).
fn refresher(
    config: &ServeConfig,
    snap: &Snapshot,
    dns: &Arc<RwLock<DnsMap>>,
) -> Result<Option<Arc<Refresher>>, ServeError> {
    if !config.dns.resolve {
        return Ok(None);
    }
    let settings = ResolverSettings::default();
    let resolver = if config.dns.servers.is_empty() {
        HickoryResolver::from_system(settings).part("DNS resolver")?
    } else {
        HickoryResolver::with_servers(&config.dns.servers, settings).part("DNS resolver")?
    };
    Ok(Some(Arc::new(Refresher::new(
        snap.ruleset.domain_names(),
        Arc::new(resolver),
        dns.clone(),
        RefreshSettings {
            min_ttl: config.dns.min_ttl.0,
            max_ttl: config.dns.max_ttl.0,
            ..RefreshSettings::default()
        },
    ))))
}

/// The API's listener, bound and non-blocking, and its address (warned about off loopback).
fn bind_api(
    config: &ServeConfig,
) -> Result<(std::net::TcpListener, std::net::SocketAddr), ServeError> {
    let listen_failed = |error| ServeError::Listen {
        what: "API",
        addr: config.api.listen.to_string(),
        error,
    };
    let api_listener = std::net::TcpListener::bind(config.api.listen).map_err(listen_failed)?;
    api_listener.set_nonblocking(true).map_err(listen_failed)?;
    let api_addr = api_listener.local_addr().map_err(listen_failed)?;
    if !api_addr.ip().is_loopback() {
        tracing::warn!(%api_addr, "the API listens off loopback: every endpoint but /health needs the token");
    }
    Ok((api_listener, api_addr))
}
