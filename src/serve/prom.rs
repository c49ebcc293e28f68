//! The daemon's metrics: the process's one Prometheus recorder, and the text of `/metrics`
//! (docs/serve.md lists the series).
//!
//! The daemon's parts count with plain atomics on their hot paths; the counts are copied into
//! the recorder only when `/metrics` is read, so a series is exactly as fresh as the request.
//! The names and labels are part of the interface: a series is never renamed.

use super::Daemon;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

/// The process's Prometheus recorder: only the first daemon of a process installs it as the
/// global recorder; every later one renders the same.
pub(super) fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Only the first daemon of a process installs the global recorder.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

impl Daemon {
    /// The Prometheus text of `/metrics`.
    pub fn render_metrics(&self) -> String {
        use ::metrics::{counter, gauge};
        let c = &self.counters;
        counter!("flowprint_flows_received_total").absolute(c.received.load(Ordering::Relaxed));
        counter!("flowprint_flows_evaluated_total").absolute(c.evaluated.load(Ordering::Relaxed));
        counter!("flowprint_flows_dropped_total", "stage" => "worker_queue")
            .absolute(c.dropped.load(Ordering::Relaxed));
        counter!("flowprint_flow_copies_dropped_total", "stage" => "worker_queue")
            .absolute(c.dropped_secondary.load(Ordering::Relaxed));
        counter!("flowprint_fleet_batches_published_total")
            .absolute(c.published_batches.load(Ordering::Relaxed));
        counter!("flowprint_fleet_batches_refused_total")
            .absolute(c.refused_batches.load(Ordering::Relaxed));
        counter!("flowprint_fleet_batches_retried_total")
            .absolute(c.retried_batches.load(Ordering::Relaxed));
        counter!("flowprint_fleet_batches_duplicate_total")
            .absolute(c.duplicate_batches.load(Ordering::Relaxed));
        gauge!("flowprint_fleet_retry_queue_batches")
            .set(c.retry_queue.load(Ordering::Relaxed) as f64);
        gauge!("flowprint_fleet_held_batches").set(c.held_batches.load(Ordering::Relaxed) as f64);
        counter!("flowprint_fleet_batches_confirmed_total")
            .absolute(c.confirmed_batches.load(Ordering::Relaxed));
        counter!("flowprint_fleet_batches_resent_total")
            .absolute(c.resent_batches.load(Ordering::Relaxed));
        counter!("flowprint_fleet_batches_unconfirmed_total")
            .absolute(c.unconfirmed_batches.load(Ordering::Relaxed));
        counter!("flowprint_fleet_confirmations_malformed_total")
            .absolute(c.malformed_confirmations.load(Ordering::Relaxed));
        counter!("flowprint_dns_pairs_written_total")
            .absolute(c.dns_pairs_written.load(Ordering::Relaxed));
        {
            let s = self
                .collector
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            counter!("flowprint_datagrams_received_total").absolute(s.received);
            counter!("flowprint_datagrams_dropped_total", "stage" => "collector_queue")
                .absolute(s.queue_drops);
            counter!("flowprint_datagrams_not_flow_total").absolute(s.not_flow);
            // At most `collector.max_exporter_series` exporters have series of their own; the
            // others are added up under `exporter="other"`.
            let other = (s.other_exporters.datagrams > 0)
                .then_some(("other".to_string(), &s.other_exporters));
            let series = s.exporters.iter().map(|(a, e)| (a.to_string(), e));
            for (ex, e) in series.chain(other) {
                counter!("flowprint_exporter_datagrams_total", "exporter" => ex.clone())
                    .absolute(e.datagrams);
                counter!("flowprint_exporter_records_total", "exporter" => ex.clone())
                    .absolute(e.records);
                counter!("flowprint_exporter_malformed_total", "exporter" => ex.clone())
                    .absolute(e.malformed);
                counter!("flowprint_exporter_missing_template_total", "exporter" => ex.clone())
                    .absolute(e.missing_template);
                counter!("flowprint_exporter_sequence_lost_total", "exporter" => ex.clone())
                    .absolute(e.sequence_lost);
                counter!("flowprint_exporter_sessions_evicted_total", "exporter" => ex)
                    .absolute(e.sessions_evicted);
            }
            gauge!("flowprint_collector_exporter_series").set(s.exporters.len() as f64);
            let st = &s.state;
            gauge!("flowprint_collector_exporters").set(st.exporters as f64);
            gauge!("flowprint_collector_sessions").set(st.sessions as f64);
            gauge!("flowprint_collector_templates").set(st.templates as f64);
            gauge!("flowprint_collector_pending_sets").set(st.pending as f64);
            gauge!("flowprint_collector_state_bytes").set(st.state_bytes as f64);
            for (what, n) in [
                ("exporter", st.exporters_evicted),
                ("session", st.sessions_evicted),
                ("template", st.templates_evicted),
            ] {
                counter!("flowprint_collector_evictions_total", "what" => what).absolute(n);
            }
            counter!("flowprint_collector_templates_expired_total").absolute(st.templates_expired);
        }
        let snap = self.store.current();
        let (reloads, failed) = self.store.reload_counts();
        counter!("flowprint_rule_reloads_total").absolute(reloads);
        counter!("flowprint_rule_reloads_failed_total").absolute(failed);
        gauge!("flowprint_rules_loaded").set(snap.ruleset.len() as f64);
        gauge!("flowprint_rules_generation").set(snap.generation as f64);
        gauge!("flowprint_rules_from_last_good").set(f64::from(u8::from(snap.from_last_good)));
        gauge!("flowprint_rules_last_reload_ok")
            .set(f64::from(u8::from(self.store.last_report().ok)));
        let (mut hosts, mut evicted) = (0usize, 0u64);
        let mut hits: std::collections::BTreeMap<String, u64> = Default::default();
        for (i, s) in self.shards.iter().enumerate() {
            gauge!("flowprint_queue_batches", "worker" => i.to_string())
                .set(s.queued.load(Ordering::Relaxed).max(0) as f64);
            let g = s.lock();
            hosts += g.hosts().len();
            evicted += g.hosts().evicted;
            for (r, &n) in g.hosts().rule_hits.iter().enumerate() {
                if n > 0
                    && let Some(rule) = g.snapshot.ruleset.rules().get(r)
                {
                    *hits.entry(rule.id.clone()).or_default() += n;
                }
            }
        }
        gauge!("flowprint_hosts_tracked").set(hosts as f64);
        counter!("flowprint_hosts_evicted_total").absolute(evicted);
        for (rule, n) in hits {
            counter!("flowprint_rule_hits_total", "rule" => rule).absolute(n);
        }
        if let Some(r) = &self.refresher {
            let status = r.status();
            gauge!("flowprint_dns_names").set(status.len() as f64);
            gauge!("flowprint_dns_names_stale")
                .set(status.iter().filter(|s| s.is_stale()).count() as f64);
            let failures: u64 = status.iter().map(|s| u64::from(s.failures)).sum();
            gauge!("flowprint_dns_consecutive_failures").set(failures as f64);
        }
        gauge!("flowprint_dns_pairs").set(
            self.dns
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .len() as f64,
        );
        if let Some(f) = &self.fleet {
            counter!("flowprint_fleet_batches_applied_total")
                .absolute(f.applied.load(Ordering::Relaxed));
            counter!("flowprint_fleet_batches_skipped_total")
                .absolute(f.skipped.load(Ordering::Relaxed));
            counter!("flowprint_fleet_duplicate_batches_skipped_total")
                .absolute(f.duplicate_ids.load(Ordering::Relaxed));
            counter!("flowprint_fleet_late_batches_total").absolute(f.late.load(Ordering::Relaxed));
            counter!("flowprint_fleet_confirmations_sent_total")
                .absolute(f.confirmed.load(Ordering::Relaxed));
            counter!("flowprint_fleet_flows_applied_total")
                .absolute(f.flows_applied.load(Ordering::Relaxed));
            counter!("flowprint_fleet_shard_rewinds_total")
                .absolute(f.rewinds.load(Ordering::Relaxed));
            counter!("flowprint_fleet_batches_malformed_total")
                .absolute(f.malformed.load(Ordering::Relaxed));
            counter!("flowprint_fleet_shard_takeovers_total")
                .absolute(f.takeovers.load(Ordering::Relaxed));
            counter!("flowprint_fleet_shard_releases_total")
                .absolute(f.released.load(Ordering::Relaxed));
            counter!("flowprint_fleet_shards_lost_total").absolute(f.lost.load(Ordering::Relaxed));
            counter!("flowprint_fleet_write_failures_total")
                .absolute(f.write_failures.load(Ordering::Relaxed));
            counter!("flowprint_fleet_packs_rejected_total")
                .absolute(f.packs_rejected.load(Ordering::Relaxed));
            gauge!("flowprint_fleet_shards_owned").set(
                f.owned
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .len() as f64,
            );
            for (shard, (waiting, unacked)) in f
                .backlog
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
            {
                gauge!("flowprint_fleet_backlog_batches", "shard" => shard.to_string())
                    .set(*waiting as f64);
                gauge!("flowprint_fleet_unacked_batches", "shard" => shard.to_string())
                    .set(*unacked as f64);
            }
        }
        let (ok, bad) = *self
            .flushes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counter!("flowprint_inventory_writes_total").absolute(ok);
        counter!("flowprint_inventory_writes_failed_total").absolute(bad);
        let h = &self.http;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        counter!("flowprint_api_connections_total").absolute(load(&h.accepted));
        gauge!("flowprint_api_connections_open").set(load(&h.open) as f64);
        gauge!("flowprint_api_connections_limit").set(load(&h.cap) as f64);
        counter!("flowprint_api_connection_waits_at_limit_total").absolute(load(&h.waits_at_cap));
        counter!("flowprint_api_accept_errors_total").absolute(load(&h.accept_errors));
        counter!("flowprint_api_connections_closed_total", "reason" => "header_timeout")
            .absolute(load(&h.header_timeouts));
        counter!("flowprint_api_connections_closed_total", "reason" => "idle")
            .absolute(load(&h.idle_closed));
        counter!("flowprint_api_requests_rejected_total", "reason" => "host")
            .absolute(load(&h.rejected_host));
        counter!("flowprint_api_requests_rejected_total", "reason" => "busy")
            .absolute(load(&h.rejected_busy));
        counter!("flowprint_api_requests_rejected_total", "reason" => "timeout")
            .absolute(load(&h.timed_out));
        counter!("flowprint_host_summaries_computed_total")
            .absolute(load(&self.summary_cache.computed));
        gauge!("flowprint_host_summaries_compute_seconds")
            .set(load(&self.summary_cache.last_us) as f64 / 1e6);
        counter!("flowprint_rule_reload_retries_total").absolute(load(&self.retry.retries));
        gauge!("flowprint_rule_reload_retry_pending")
            .set(f64::from(u8::from(self.retry.pending().is_some())));
        if let Some(w) = self.watch.get() {
            gauge!("flowprint_rule_watch_ok").set(f64::from(u8::from(w.all_watching())));
            counter!("flowprint_rule_watch_rewatches_total").absolute(load(&w.rewatches));
            counter!("flowprint_rule_watch_errors_total").absolute(load(&w.errors));
        }
        prometheus().render()
    }
}
