//! The decoder's bounded state: sessions (exporter × source id / observation domain) with
//! their templates and pending data, and the counters of each exporter.
//!
//! Everything here is created by datagrams from the network, so everything is capped and the
//! least recently used entry goes first when a cap is reached:
//! - exporters (their counters and their list of sessions): `max_exporters`; an evicted
//!   exporter's sessions go with it and its counters are added to [`StateStats::evicted`];
//! - sessions: `max_sessions` in all, `max_sessions_per_exporter` per exporter;
//! - templates: `max_templates_per_session` per session (expired ones, then the least recently
//!   refreshed one go first) and [`MAX_TEMPLATE_FIELDS`] fields per template;
//! - pending data: `pending_max` sets and `pending_bytes_max` bytes per session;
//! - templates and pending data together: `max_state_bytes`, beyond which whole least recently
//!   used sessions are evicted.
//!
//! Every eviction is counted, per exporter in [`ExporterStats`] and in all in [`StateStats`].

use super::fields::{Plan, Step};
use super::{DecoderConfig, ExporterStats};
use hashlink::LinkedHashMap;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

/// Most fields in one template; a template with more is refused as malformed (nfdump's limit
/// too). Bounds a compiled template at about 4 KiB.
pub const MAX_TEMPLATE_FIELDS: usize = 1024;

/// Decoder-wide figures of the bounded state, for metrics. The eviction counts are totals
/// since the start, over kept and evicted exporters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StateStats {
    /// Exporters with counters kept.
    pub exporters: usize,
    /// Sessions kept.
    pub sessions: usize,
    /// Templates kept over all sessions.
    pub templates: usize,
    /// Data sets waiting for their template over all sessions.
    pub pending: usize,
    /// Bytes of templates and pending data (as accounted against `max_state_bytes`).
    pub state_bytes: usize,
    /// Exporter entries evicted (least recently used beyond `max_exporters`).
    pub exporters_evicted: u64,
    /// Sessions evicted (beyond a session cap or the byte budget, or with their exporter).
    pub sessions_evicted: u64,
    /// Templates evicted (beyond `max_templates_per_session`, or with their session).
    pub templates_evicted: u64,
    /// Templates expired (not refreshed within the template timeout).
    pub templates_expired: u64,
    /// Data sets given up without their template (caps, timeout, evicted with a session).
    pub missing_template: u64,
    /// The counters of evicted exporters, added up: with the kept exporters' counters they
    /// make the totals since the start.
    pub evicted: ExporterStats,
}

pub(super) struct Pending {
    pub template: u16,
    pub ctx: super::Ctx,
    pub data: Vec<u8>,
}

impl Pending {
    fn cost(&self) -> usize {
        std::mem::size_of::<Pending>() + self.data.capacity()
    }
}

/// What a kept template costs: the plan, its steps, the `Arc` and the map slot.
pub(super) fn plan_cost(plan: &Plan) -> usize {
    std::mem::size_of::<Plan>()
        + plan.steps.capacity() * std::mem::size_of::<Step>()
        + 2 * std::mem::size_of::<usize>()
        + std::mem::size_of::<(u16, (Arc<Plan>, i64))>()
}

#[derive(Default)]
pub(super) struct Session {
    pub templates: HashMap<u16, (Arc<Plan>, i64)>,
    pub sampling: Option<u32>,
    pub boot_ms: Option<i64>,
    pub last_seq: Option<(u32, u32)>,
    pub pending: VecDeque<Pending>,
    /// Bytes of `pending` ([`Pending::cost`]).
    pub pending_bytes: usize,
    /// Bytes of `templates` ([`plan_cost`]).
    pub template_bytes: usize,
}

impl Session {
    fn bytes(&self) -> usize {
        self.pending_bytes + self.template_bytes
    }

    /// Keeps `plan` as template `id` seen at `now_ms`. A new id in a full session first drops
    /// expired templates, then the least recently refreshed one.
    pub fn insert_template(
        &mut self,
        id: u16,
        plan: Arc<Plan>,
        now_ms: i64,
        config: &DecoderConfig,
        stats: &mut ExporterStats,
    ) {
        if !self.templates.contains_key(&id)
            && self.templates.len() >= config.max_templates_per_session.max(1)
        {
            let timeout = config.template_timeout_ms.unwrap_or(i64::MAX);
            let before = self.templates.len();
            let mut freed = 0;
            self.templates.retain(|_, (p, seen)| {
                let keep = now_ms.saturating_sub(*seen) <= timeout;
                if !keep {
                    freed += plan_cost(p);
                }
                keep
            });
            self.template_bytes -= freed;
            stats.templates_expired += (before - self.templates.len()) as u64;
            if self.templates.len() >= config.max_templates_per_session.max(1)
                && let Some(oldest) = self
                    .templates
                    .iter()
                    .min_by_key(|(_, (_, seen))| *seen)
                    .map(|(&k, _)| k)
            {
                self.remove_template(oldest);
                stats.templates_evicted += 1;
            }
        }
        self.template_bytes += plan_cost(&plan);
        if let Some((old, _)) = self.templates.insert(id, (plan, now_ms)) {
            self.template_bytes -= plan_cost(&old);
        }
    }

    /// Forgets template `id` (withdrawn, expired or evicted); whether it was there.
    pub fn remove_template(&mut self, id: u16) -> bool {
        match self.templates.remove(&id) {
            Some((old, _)) => {
                self.template_bytes -= plan_cost(&old);
                true
            }
            None => false,
        }
    }

    /// Holds a data set until its template comes; the oldest ones go when a per-session cap is
    /// reached. Given-up sets are counted as missing their template.
    pub fn push_pending(&mut self, p: Pending, config: &DecoderConfig, stats: &mut ExporterStats) {
        let cost = p.cost();
        if cost > config.pending_bytes_max {
            stats.missing_template += 1;
            return;
        }
        while !self.pending.is_empty()
            && (self.pending.len() >= config.pending_max.max(1)
                || self.pending_bytes + cost > config.pending_bytes_max)
        {
            if let Some(old) = self.pending.pop_front() {
                self.pending_bytes -= old.cost();
                stats.missing_template += 1;
            }
        }
        self.pending_bytes += cost;
        self.pending.push_back(p);
    }

    /// Takes the pending sets of template `id`.
    pub fn take_pending(&mut self, id: u16) -> Vec<Pending> {
        if !self.pending.iter().any(|p| p.template == id) {
            return Vec::new();
        }
        let (take, keep): (VecDeque<Pending>, VecDeque<Pending>) =
            self.pending.drain(..).partition(|p| p.template == id);
        self.pending = keep;
        self.pending_bytes = self.pending.iter().map(Pending::cost).sum();
        take.into_iter().collect()
    }

    /// Gives up pending sets older than `timeout_ms` at `now_ms`; how many.
    pub fn expire_pending(&mut self, now_ms: i64, timeout_ms: i64) -> u64 {
        let before = self.pending.len();
        self.pending
            .retain(|p| now_ms.saturating_sub(p.ctx.export_ms) <= timeout_ms);
        if self.pending.len() != before {
            self.pending_bytes = self.pending.iter().map(Pending::cost).sum();
        }
        (before - self.pending.len()) as u64
    }
}

struct Exporter {
    stats: ExporterStats,
    /// Its sessions' source ids, least recently used first.
    domains: LinkedHashMap<u32, ()>,
}

/// Sessions and exporters, each in least-recently-used order (front: least recent).
pub(super) struct State {
    sessions: LinkedHashMap<(IpAddr, u32), Session>,
    exporters: LinkedHashMap<IpAddr, Exporter>,
    /// Bytes of templates and pending data over all sessions, as of the last
    /// [`State::settle`].
    bytes: usize,
    exporters_evicted: u64,
    /// The counters of evicted exporters, added up.
    evicted: ExporterStats,
    /// The exporter of the datagram being decoded.
    current: Option<IpAddr>,
    /// What the datagram being decoded added to other exporters' counters (evictions of
    /// their sessions), so that a caller following the counters of the datagram's exporter
    /// also sees those. At most one entry per exporter evicted from.
    elsewhere: Vec<(IpAddr, ExporterStats)>,
}

impl State {
    pub fn new() -> State {
        State {
            sessions: LinkedHashMap::new(),
            exporters: LinkedHashMap::new(),
            bytes: 0,
            exporters_evicted: 0,
            evicted: ExporterStats::default(),
            current: None,
            elsewhere: Vec::new(),
        }
    }

    /// Starts a datagram from `exporter`.
    pub fn begin(&mut self, exporter: IpAddr) {
        self.current = Some(exporter);
        self.elsewhere.clear();
    }

    /// What the last datagram added to other exporters' counters.
    pub fn elsewhere(&self) -> &[(IpAddr, ExporterStats)] {
        &self.elsewhere
    }

    fn note_elsewhere(&mut self, exporter: IpAddr, counts: &ExporterStats) {
        if self.current == Some(exporter) {
            return;
        }
        match self.elsewhere.iter_mut().find(|(ip, _)| *ip == exporter) {
            Some((_, c)) => c.add(counts),
            None => self.elsewhere.push((exporter, counts.clone())),
        }
    }

    /// The counters of `exporter`, created (and made most recently used) if needed.
    pub fn stats(&mut self, exporter: IpAddr, config: &DecoderConfig) -> &mut ExporterStats {
        self.touch_exporter(exporter, config);
        &mut self
            .exporters
            .entry(exporter)
            .or_insert_with(new_exporter)
            .stats
    }

    /// The counters of `exporter`, if kept; does not change the LRU order.
    pub fn peek_stats(&self, exporter: &IpAddr) -> Option<&ExporterStats> {
        self.exporters.get(exporter).map(|e| &e.stats)
    }

    /// Every kept exporter's counters.
    pub fn all_stats(&self) -> impl Iterator<Item = (&IpAddr, &ExporterStats)> {
        self.exporters.iter().map(|(k, e)| (k, &e.stats))
    }

    fn touch_exporter(&mut self, exporter: IpAddr, config: &DecoderConfig) {
        if self.exporters.to_back(&exporter).is_some() {
            return;
        }
        while self.exporters.len() >= config.max_exporters.max(1) {
            let Some((ip, mut old)) = self.exporters.pop_front() else {
                break;
            };
            let mut counts = ExporterStats::default();
            for (&domain, _) in old.domains.iter() {
                if let Some(s) = self.sessions.remove(&(ip, domain)) {
                    self.bytes = self.bytes.saturating_sub(s.bytes());
                    counts.add(&eviction_counts(&s));
                }
            }
            old.stats.add(&counts);
            self.note_elsewhere(ip, &counts);
            self.exporters_evicted += 1;
            self.evicted.add(&old.stats);
        }
        self.exporters.insert(exporter, new_exporter());
    }

    /// The session (`exporter`, `domain`) and its exporter's counters, created (and made most
    /// recently used) if needed, evicting the least recently used sessions beyond the caps.
    pub fn session(
        &mut self,
        exporter: IpAddr,
        domain: u32,
        config: &DecoderConfig,
    ) -> (&mut Session, &mut ExporterStats) {
        self.touch_exporter(exporter, config);
        let key = (exporter, domain);
        if self.sessions.to_back(&key).is_some() {
            if let Some(e) = self.exporters.get_mut(&exporter) {
                e.domains.to_back(&domain);
            }
        } else {
            // The exporter's own least recently used session first, then anyone's.
            let per = config.max_sessions_per_exporter.max(1);
            let mut victims = Vec::new();
            if let Some(e) = self.exporters.get_mut(&exporter) {
                while e.domains.len() >= per {
                    match e.domains.pop_front() {
                        Some((d, ())) => victims.push((exporter, d)),
                        None => break,
                    }
                }
                e.domains.insert(domain, ());
            }
            for k in victims {
                self.evict_session(k, false);
            }
            while self.sessions.len() >= config.max_sessions.max(1) {
                let Some((&k, _)) = self.sessions.front() else {
                    break;
                };
                self.evict_session(k, true);
            }
        }
        let session = self.sessions.entry(key).or_insert_with(Session::default);
        let stats = &mut self
            .exporters
            .entry(exporter)
            .or_insert_with(new_exporter)
            .stats;
        (session, stats)
    }

    /// Evicts session `k`, counted; `unlink` also removes it from its exporter's list.
    fn evict_session(&mut self, k: (IpAddr, u32), unlink: bool) {
        let Some(s) = self.sessions.remove(&k) else {
            return;
        };
        self.bytes = self.bytes.saturating_sub(s.bytes());
        let counts = eviction_counts(&s);
        match self.exporters.get_mut(&k.0) {
            Some(e) => {
                if unlink {
                    e.domains.remove(&k.1);
                }
                e.stats.add(&counts);
            }
            None => self.evicted.add(&counts),
        }
        self.note_elsewhere(k.0, &counts);
    }

    /// After a datagram: brings the byte total up to date (`before`/`after` are the bytes of
    /// the session it changed) and evicts least recently used sessions while it is over the
    /// budget, never the most recent one.
    pub fn settle(&mut self, before: usize, after: usize, config: &DecoderConfig) {
        self.bytes = (self.bytes + after).saturating_sub(before);
        while self.bytes > config.max_state_bytes && self.sessions.len() > 1 {
            let Some((&k, _)) = self.sessions.front() else {
                break;
            };
            self.evict_session(k, true);
        }
    }

    /// Bytes of one session's templates and pending data.
    pub fn session_bytes(&self, exporter: IpAddr, domain: u32) -> usize {
        self.sessions
            .get(&(exporter, domain))
            .map_or(0, Session::bytes)
    }

    /// Decoder-wide figures.
    pub fn figures(&self) -> StateStats {
        let mut all = self.evicted.clone();
        for e in self.exporters.values() {
            all.add(&e.stats);
        }
        StateStats {
            exporters: self.exporters.len(),
            sessions: self.sessions.len(),
            templates: self.sessions.values().map(|s| s.templates.len()).sum(),
            pending: self.sessions.values().map(|s| s.pending.len()).sum(),
            state_bytes: self.bytes,
            exporters_evicted: self.exporters_evicted,
            sessions_evicted: all.sessions_evicted,
            templates_evicted: all.templates_evicted,
            templates_expired: all.templates_expired,
            missing_template: all.missing_template,
            evicted: self.evicted.clone(),
        }
    }
}

/// An evicted session's state, counted as lost.
fn eviction_counts(s: &Session) -> ExporterStats {
    ExporterStats {
        sessions_evicted: 1,
        templates_evicted: s.templates.len() as u64,
        missing_template: s.pending.len() as u64,
        ..ExporterStats::default()
    }
}

fn new_exporter() -> Exporter {
    Exporter {
        stats: ExporterStats::default(),
        domains: LinkedHashMap::new(),
    }
}
