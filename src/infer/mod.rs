//! Host inference: per-host evidence accumulated over time, scored into a verdict.
//!
//! For each local host the [`HostTable`] keeps the rules that matched (stateless rules on every
//! matching flow; stateful rules when their aggregates hold, see [`state`]), with counts and
//! first/last times. [`score`] turns that evidence into labels with confidences.
//!
//! Epochs: when strong evidence for another OS family appears on an address whose previous
//! family has been silent for a while (an address reassigned by DHCP), the address starts a new
//! epoch instead of blending two machines; the change is recorded. Two families that stay active
//! at the same time instead flag the host as several machines (NAT, a proxy).
//!
//! Memory: the host table is bounded ([`InferConfig::max_hosts`]) at all times: a new host
//! beyond the limit first evicts the least recently seen tenth of the table (amortised: one
//! pass over the table per `max_hosts / 10` new hosts); hosts idle longer than
//! [`InferConfig::idle_ms`] are evicted every 65,536 flows. Both are counted in
//! [`HostTable::evicted`].
//!
//! Evidence of rules that are not loaded is kept as stored, unscored ([`crate::infer::kept`]).

pub mod kept;
pub mod score;
pub mod state;
pub mod stored;
mod table;

use crate::eval::{HostView, Match};
use crate::flow::Flow;
use crate::ruleset::{Attribute, Ruleset};
use crate::schema::addr_key;
use state::RuleState;
use stored::{StoredEpoch, StoredEvidence, StoredHost};

/// The address of an [`addr_key`].
fn key_addr(k: u128) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(k);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}
use std::net::IpAddr;

/// Hosts from which [`HostTable::summaries`] scores on several threads.
const PARALLEL_SUMMARIES: usize = 8192;

pub use kept::{KeptEvidence, Restored};
pub use score::{
    Alternative, DeviceVerdict, EvidenceOut, HostSummary, OsVerdict, SoftwareVerdict,
    UnscoredEvidence,
};

/// Settings of inference.
#[derive(Debug, Clone)]
pub struct InferConfig {
    /// Evidence loses half its weight after this long without a new match; `None`: no decay.
    pub half_life_ms: Option<i64>,
    /// Most hosts kept; beyond, the least recently seen are evicted.
    pub max_hosts: usize,
    /// Hosts silent for longer are evicted; `None`: never for idleness.
    pub idle_ms: Option<i64>,
    /// A family silent for this long may be replaced by a new epoch.
    pub epoch_gap_ms: i64,
    /// Records of one transfer are adjacent when the next starts within this of the last end.
    pub transfer_gap_ms: i64,
    /// Keep an example flow per (host, rule) for explanations (costs memory per host).
    pub record_samples: bool,
}

impl Default for InferConfig {
    fn default() -> Self {
        InferConfig {
            half_life_ms: Some(30 * 86_400_000),
            max_hosts: 1_000_000,
            idle_ms: None,
            epoch_gap_ms: 3_600_000,
            transfer_gap_ms: 120_000,
            record_samples: true,
        }
    }
}

pub use crate::ruleset::STRONG;

/// What one rule matched for one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvidenceAgg {
    /// Position of the rule in the ruleset.
    pub rule: u32,
    /// Matching flows (stateful rules: flows while the aggregates held).
    pub flows: u32,
    /// Earliest start of a matching flow (ms).
    pub first_seen: i64,
    /// Latest end of a matching flow (ms).
    pub last_seen: i64,
    /// Weight in permille: the best of the matches (below 1000 only when every match rested on
    /// names of a shared address).
    pub weight: u16,
}

/// An epoch change of an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochChange {
    /// The new epoch's number.
    pub epoch: u32,
    /// When it started (ms).
    pub started: i64,
    /// Why.
    pub reason: String,
}

/// Rarely used parts of a host, boxed so that a plain host stays small.
#[derive(Debug, Clone, Default)]
struct Extra {
    stateful: Vec<RuleState>,
    transfers: state::Transfers,
    epochs: Vec<EpochChange>,
    samples: Vec<(u32, Sample)>,
    /// Stored evidence of rules not loaded, carried through untouched.
    kept: Vec<KeptEvidence>,
}

/// Everything known about one host in its current epoch.
#[derive(Debug, Clone, Default)]
pub struct HostState {
    /// Flows in which the host took part.
    pub flows: u64,
    /// Earliest flow start (ms).
    pub first_seen: i64,
    /// Latest flow end (ms).
    pub last_seen: i64,
    /// Current epoch (0 for the first).
    pub epoch: u32,
    /// Changed since last taken by [`HostTable::take_dirty`].
    dirty: bool,
    /// Evidence, one entry per rule.
    pub evidence: Vec<EvidenceAgg>,
    extra: Option<Box<Extra>>,
}

impl HostState {
    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    /// Epoch changes of this address, oldest first.
    pub fn epochs(&self) -> &[EpochChange] {
        self.extra.as_ref().map_or(&[], |e| &e.epochs)
    }

    /// Stored evidence of rules that are not loaded (kept, not scored).
    pub fn kept(&self) -> &[KeptEvidence] {
        self.extra.as_ref().map_or(&[], |e| &e.kept)
    }

    /// The example flow recorded for `rule`, if any, rendered as [`describe_flow_with`] does.
    pub fn sample(&self, rule: u32) -> Option<String> {
        self.extra
            .as_ref()?
            .samples
            .iter()
            .find(|(r, _)| *r == rule)
            .map(|(_, s)| s.describe())
    }
}

/// All hosts seen so far.
#[derive(Debug, Default)]
pub struct HostTable {
    /// Keyed by [`addr_key`]: a `u128` hashes much faster than an `IpAddr`.
    hosts: table::SlotIndex,
    config: InferConfig,
    /// Flows observed.
    pub flows: u64,
    /// Flows with no local endpoint (not evidence about any host).
    pub flows_without_host: u64,
    /// Rule matches recorded.
    pub matches: u64,
    /// Hosts evicted (table full or idle).
    pub evicted: u64,
    /// Epoch changes (address reassignments) detected.
    pub epoch_changes: u64,
    /// Latest flow end seen: "now" for decay.
    pub now_ms: i64,
    /// Matches per rule (by position in the ruleset), for hit counts.
    pub rule_hits: Vec<u64>,
    /// Keys of the hosts changed since [`HostTable::take_dirty`] last took them, oldest
    /// change first: taken in that order, so that hosts changed again and again while a write
    /// runs cannot keep the others from being written.
    dirty: std::collections::VecDeque<u128>,
    /// A transfer record's matches and candidate rules, reused from one record to the next.
    scratch_matches: Vec<Match>,
    scratch_rules: Vec<u32>,
}

fn stored_host(
    scorer: &score::Scorer<'_>,
    rules: &Ruleset,
    a: IpAddr,
    h: &HostState,
) -> StoredHost {
    let summary = scorer.summarize(a, h);
    // The start of epoch 0 is known only while it is the current one.
    let mut epochs = vec![StoredEpoch {
        epoch: 0,
        started: if h.epoch == 0 { h.first_seen } else { 0 },
        reason: String::new(),
    }];
    epochs.extend(h.epochs().iter().map(|e| StoredEpoch {
        epoch: e.epoch,
        started: e.started,
        reason: e.reason.clone(),
    }));
    StoredHost {
        host: a.to_string(),
        epoch: h.epoch,
        flows: h.flows,
        first_seen: h.first_seen,
        last_seen: h.last_seen,
        evidence: h
            .evidence
            .iter()
            .map(|e| StoredEvidence {
                rule: rules.rules()[e.rule as usize].id.clone(),
                flows: u64::from(e.flows),
                first_seen: e.first_seen,
                last_seen: e.last_seen,
            })
            .chain(h.kept().iter().map(KeptEvidence::to_stored))
            .collect(),
        labels: score::labels(&summary),
        epochs,
        summary: stored::SummaryJson::of(&summary),
    }
}

/// Hosts copied out of an [`HostTable`] ([`HostTable::copy_hosts`]), to be scored without it.
#[derive(Debug, Clone, Default)]
pub struct HostsCopy {
    hosts: Vec<(IpAddr, HostState)>,
    now_ms: i64,
    half_life_ms: Option<i64>,
}

impl HostsCopy {
    /// The copied hosts' summaries against `rules` (the ruleset their evidence refers to), in
    /// the order they were copied.
    pub fn summaries(&self, rules: &Ruleset) -> Vec<HostSummary> {
        let scorer = score::Scorer::new(rules, self.now_ms, self.half_life_ms);
        self.hosts
            .iter()
            .map(|(a, h)| scorer.summarize(*a, h))
            .collect()
    }

    /// Hosts copied.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether no host was copied.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

/// The fields of a flow an explanation shows, kept when a rule first matches a host and
/// formatted only when asked for ([`HostState::sample`]): recording is on the per-flow path,
/// reading is not.
#[derive(Debug, Clone)]
struct Sample {
    proto: u8,
    src: IpAddr,
    src_port: u16,
    dst: IpAddr,
    dst_port: u16,
    bytes: u64,
    packets: u64,
    dst_name: Option<std::sync::Arc<str>>,
    /// The first names the peer answered for in DNS (shown when the record carries none).
    dns: [Option<std::sync::Arc<str>>; SAMPLE_NAMES],
    /// How many names the peer answered for in all.
    dns_count: usize,
}

/// Names of the peer an explanation shows; the rest are counted ("+N more").
const SAMPLE_NAMES: usize = 3;

impl Sample {
    fn of(flow: &Flow, dns_names: &[std::sync::Arc<str>]) -> Sample {
        let mut dns: [Option<std::sync::Arc<str>>; SAMPLE_NAMES] = Default::default();
        if flow.dst_name.is_none() {
            for (slot, n) in dns.iter_mut().zip(dns_names) {
                *slot = Some(n.clone());
            }
        }
        Sample {
            proto: flow.proto,
            src: flow.src,
            src_port: flow.src_port,
            dst: flow.dst,
            dst_port: flow.dst_port,
            bytes: flow.bytes,
            packets: flow.packets,
            dst_name: flow.dst_name.clone(),
            dns,
            dns_count: if flow.dst_name.is_none() {
                dns_names.len()
            } else {
                0
            },
        }
    }

    fn describe(&self) -> String {
        let proto = crate::flow::proto::name(self.proto)
            .map(str::to_string)
            .unwrap_or_else(|| self.proto.to_string());
        let names: Vec<&str> = self.dns.iter().flatten().map(|n| &**n).collect();
        let name = match (self.dst_name.as_deref(), &names[..]) {
            (Some(n), _) => format!(" ({n})"),
            (None, []) => String::new(),
            (None, shown) => {
                let more = if self.dns_count > shown.len() {
                    format!(" +{} more", self.dns_count - shown.len())
                } else {
                    String::new()
                };
                format!(" (peer answered DNS for {}{more})", shown.join(", "))
            }
        };
        format!(
            "{proto} {}:{} -> {}:{}{name} {} bytes {} pkts",
            self.src, self.src_port, self.dst, self.dst_port, self.bytes, self.packets
        )
    }
}

/// A short rendering of a flow for explanations.
pub fn describe_flow(flow: &Flow) -> String {
    describe_flow_with(flow, &[])
}

/// [`describe_flow`], naming also the names the peer's address answered for (passive or
/// active DNS) when the record carries none.
pub fn describe_flow_with(flow: &Flow, dns_names: &[std::sync::Arc<str>]) -> String {
    Sample::of(flow, dns_names).describe()
}

fn family_of(rules: &Ruleset, rule: u32) -> Option<(&str, f64)> {
    rules.rules()[rule as usize]
        .conclusions
        .iter()
        .filter(|c| c.attribute == Attribute::OsFamily)
        .max_by(|a, b| a.confidence.total_cmp(&b.confidence))
        .map(|c| (c.value.as_str(), c.confidence))
}

/// The rules of a transfer group whose window holds the total: the static windows, and for
/// sampled records the sizes within the widened tolerance.
fn transfer_candidates(
    group: &crate::ruleset::TransferGroup,
    acc: &state::TransferAcc,
    mut f: impl FnMut(u32),
) {
    // The static windows hold the total: these rules' sizes match.
    group.windows.lookup(acc.bytes, &mut f);
    let w = state::sampled_tolerance(acc.rate, acc.packets);
    if w > 0.0 {
        // Sampled: a wider window around each size, `size × w` (see `sampled_tolerance`).
        let lo = (acc.bytes as f64 / (1.0 + w)) as u64;
        let hi = if w < 1.0 {
            (acc.bytes as f64 / (1.0 - w)) as u64
        } else {
            u64::MAX
        };
        let start = group.sizes.partition_point(|&(s, _, _)| s < lo);
        for &(s, tol, r) in &group.sizes[start..] {
            if s > hi {
                break;
            }
            if acc.bytes.abs_diff(s) <= acc.tolerance_for(s, tol) {
                f(r);
            }
        }
    }
}

/// A transfer rule whose window holds the total: a match when the record satisfies its whole
/// `when`.
fn transfer_match(rules: &Ruleset, r: u32, host: &HostView<'_>, found: &mut Vec<Match>) {
    // Its size holds the total (`transfer_candidates` checked it without reading the rule),
    // and the record passed the gate: what is left of its `when` are its count bounds.
    if rules
        .transfer_rest(r)
        .is_some_and(|rest| !rest.matches(&host.view))
    {
        return;
    }
    found.push(Match::of(rules, r, &host.view, host.shared));
}

/// Records one match in the host's state; returns whether it opened a new epoch.
fn record_match(
    h: &mut HostState,
    m: &Match,
    flow: &Flow,
    rules: &Ruleset,
    config: &InferConfig,
    dns_names: &[std::sync::Arc<str>],
) -> bool {
    // A transfer rule with no other aggregate holds once its window holds the transfer's
    // total (checked before it comes here): no state of its own. The dense flag is read
    // first, so that a plain match does not read the rule.
    if rules.needs_state(m.rule)
        && let Some(s) = &rules.rules()[m.rule as usize].stateful
    {
        // Names count for `domains`: the record's own, else what the peer answered for in DNS.
        let names = if s.domains.is_some() && flow.dst_name.is_none() && flow.src_name.is_none() {
            dns_names
        } else {
            &[]
        };
        let view = crate::schema::View {
            flow,
            host_is_src: m.host_is_src,
            peer_names: names,
        };
        let states = &mut h.extra().stateful;
        let st = match states.iter().position(|st| st.rule == m.rule) {
            Some(i) => &mut states[i],
            None => {
                states.push(RuleState::new(m.rule));
                states.last_mut().expect("just pushed")
            }
        };
        if !st.observe(s, &view) {
            return false;
        }
    }
    let new_epoch = maybe_new_epoch(h, m, flow, rules, config.epoch_gap_ms);
    match h.evidence.iter_mut().find(|e| e.rule == m.rule) {
        Some(e) => {
            e.flows = e.flows.saturating_add(1);
            e.first_seen = e.first_seen.min(flow.start_ms);
            e.last_seen = e.last_seen.max(flow.end_ms);
            e.weight = e.weight.max(m.weight);
        }
        None => {
            h.evidence.push(EvidenceAgg {
                rule: m.rule,
                flows: 1,
                first_seen: flow.start_ms,
                last_seen: flow.end_ms,
                weight: m.weight,
            });
            if config.record_samples {
                h.extra()
                    .samples
                    .push((m.rule, Sample::of(flow, dns_names)));
            }
        }
    }
    new_epoch
}

/// Opens a new epoch when a strong conclusion of another family meets an address whose current
/// family is strong but has been silent for longer than `gap`.
fn maybe_new_epoch(h: &mut HostState, m: &Match, flow: &Flow, rules: &Ruleset, gap: i64) -> bool {
    if !rules.strong_family(m.rule) {
        return false;
    }
    let Some((new_family, c)) = family_of(rules, m.rule) else {
        return false;
    };
    if c < STRONG || h.evidence.is_empty() {
        return false;
    }
    let mut scores: Vec<(&str, f64, i64)> = Vec::new();
    for e in &h.evidence {
        if let Some((fam, c)) = family_of(rules, e.rule) {
            match scores.iter_mut().find(|(f, _, _)| *f == fam) {
                Some(s) => {
                    s.1 *= 1.0 - c;
                    s.2 = s.2.max(e.last_seen);
                }
                None => scores.push((fam, 1.0 - c, e.last_seen)),
            }
        }
    }
    if scores.iter().any(|(f, _, _)| *f == new_family) {
        return false;
    }
    let Some(&(old, miss, last)) = scores.iter().min_by(|a, b| a.1.total_cmp(&b.1)) else {
        return false;
    };
    if 1.0 - miss < STRONG || flow.start_ms.saturating_sub(last) < gap {
        return false;
    }
    let reason = format!("os.family changed from {old} to {new_family}");
    h.epoch += 1;
    let epoch = h.epoch;
    h.evidence.clear();
    h.flows = 1;
    h.first_seen = flow.start_ms;
    let extra = h.extra();
    extra.stateful.clear();
    extra.samples.clear();
    // Evidence of rules not loaded belongs to the old epoch too.
    extra.kept.clear();
    extra.epochs.push(EpochChange {
        epoch,
        started: flow.start_ms,
        reason,
    });
    true
}

impl HostTable {
    /// An empty inventory with default settings.
    pub fn new() -> HostTable {
        HostTable::default()
    }

    /// An empty inventory with these settings.
    pub fn with_config(config: InferConfig) -> HostTable {
        HostTable {
            config,
            ..Default::default()
        }
    }

    /// The settings.
    pub fn config(&self) -> &InferConfig {
        &self.config
    }

    /// Counts a flow, before its hosts are recorded ([`crate::scan::Scanner::apply`]).
    #[inline]
    pub(crate) fn begin_flow(&mut self, flow: &Flow) {
        self.flows += 1;
        self.now_ms = self.now_ms.max(flow.end_ms);
    }

    /// Asks the processor for the state of the host keyed `key` ([`addr_key`]), ahead of
    /// the flow that needs it ([`crate::scan::Scanner::apply_all`]): a hint, it changes
    /// nothing. Best a step after [`HostTable::prefetch_index`] for the same key.
    #[inline]
    pub(crate) fn prefetch(&self, key: u128) {
        self.hosts.prefetch(key);
    }

    /// The first step of [`HostTable::prefetch`]: the index entry of the key.
    #[inline]
    pub(crate) fn prefetch_index(&self, key: u128) {
        self.hosts.prefetch_index(key);
    }

    /// Ends a flow that had `hosts` hosts recorded.
    #[inline]
    pub(crate) fn end_flow(&mut self, hosts: usize) {
        if hosts == 0 {
            self.flows_without_host += 1;
        }
        if self.flows.is_multiple_of(65_536) {
            self.evict_if_needed();
        }
    }

    /// Records one host of a flow and the rules it satisfied, as the matcher found them (its
    /// peer's names included: nothing is looked up again).
    pub(crate) fn record_host(&mut self, flow: &Flow, host: &HostView<'_>, rules: &Ruleset) {
        let addr = host.view.addr(crate::schema::Side::Host);
        // One look-up per host and flow: the table is large and each probe a cache miss.
        let key = addr_key(addr);
        let before = self.hosts.len();
        let (mut slot, inserted) = self.hosts.slot_or_insert(key, || HostState {
            first_seen: flow.start_ms,
            last_seen: flow.end_ms,
            ..Default::default()
        });
        if inserted && before >= self.config.max_hosts {
            // Rare: once per `max_hosts / 10` new hosts when the table is full. Eviction moves
            // hosts between slots: the new one is found again.
            self.evict_oldest(Some(key));
            slot = self.hosts.slot(key).expect("the new host is not evicted");
        }
        let h = self.hosts.at_mut(slot);
        h.flows += 1;
        if !h.dirty {
            h.dirty = true;
            self.dirty.push_back(key);
        }
        h.first_seen = h.first_seen.min(flow.start_ms);
        h.last_seen = h.last_seen.max(flow.end_ms);
        let matches: &[Match] = if host.gates.is_empty() {
            host.matches
        } else {
            // The record is part of a transfer: its connection's total, then the rules whose
            // window holds it, checked in full.
            let acc = h
                .extra()
                .transfers
                .add(&host.view, self.config.transfer_gap_ms);
            // Buffers kept from one record to the next: nothing is allocated per record.
            let found = &mut self.scratch_matches;
            found.clear();
            found.extend_from_slice(host.matches);
            let candidates = &mut self.scratch_rules;
            candidates.clear();
            for &g in host.gates {
                transfer_candidates(&rules.transfer_groups()[g as usize], &acc, |r| {
                    candidates.push(r)
                });
            }
            // A rule can come from its window and from the sampled widening, or from two
            // groups' lookups: each is judged once.
            candidates.sort_unstable();
            candidates.dedup();
            for &r in candidates.iter() {
                transfer_match(rules, r, host, found);
            }
            found
        };
        for m in matches {
            self.matches += 1;
            let r = m.rule as usize;
            if r >= self.rule_hits.len() {
                self.rule_hits.resize(rules.len().max(r + 1), 0);
            }
            self.rule_hits[r] += 1;
            if record_match(h, m, flow, rules, &self.config, host.peer_names) {
                self.epoch_changes += 1;
            }
        }
    }

    /// Moves the hosts for which `keep` is false out of this inventory (for splitting a
    /// restored inventory into shards).
    pub fn split_off(&mut self, mut keep: impl FnMut(IpAddr) -> bool) -> HostTable {
        let mut other = HostTable::with_config(self.config.clone());
        other.now_ms = self.now_ms;
        let keys: Vec<u128> = self.hosts.keys().filter(|k| !keep(key_addr(*k))).collect();
        for k in keys {
            if let Some(h) = self.hosts.remove(k) {
                other.hosts.insert(k, h);
            }
        }
        other
    }

    /// Changes the most hosts kept (evicting the least recently seen beyond it, counted).
    pub fn set_max_hosts(&mut self, max_hosts: usize) {
        self.config.max_hosts = max_hosts.max(1);
        if self.hosts.len() > self.config.max_hosts {
            self.evict_oldest(None);
        }
    }

    /// Evicts idle hosts, and the least recently seen hosts when the table is over its limit.
    pub fn evict_if_needed(&mut self) {
        if let Some(idle) = self.config.idle_ms {
            let horizon = self.now_ms.saturating_sub(idle);
            let before = self.hosts.len();
            self.hosts.retain(|_, h| h.last_seen >= horizon);
            self.evicted += (before - self.hosts.len()) as u64;
        }
        if self.hosts.len() > self.config.max_hosts {
            self.evict_oldest(None);
        }
    }

    /// Evicts the least recently seen hosts, but not `except`, down to 90 % of the limit (so
    /// that eviction runs once per tenth of the limit of new hosts).
    fn evict_oldest(&mut self, except: Option<u128>) {
        let max = self.config.max_hosts.max(1);
        let keep = max - max / 10;
        if self.hosts.len() <= keep {
            return;
        }
        let mut ages: Vec<(i64, u128)> = self
            .hosts
            .iter()
            .filter(|(a, _)| Some(*a) != except)
            .map(|(a, h)| (h.last_seen, a))
            .collect();
        let spared = self.hosts.len() - ages.len();
        let cut = (self.hosts.len() - keep).min(ages.len());
        if cut == 0 {
            return;
        }
        if cut < ages.len() {
            ages.select_nth_unstable(cut);
        }
        for (_, a) in &ages[..cut] {
            self.hosts.remove(*a);
        }
        debug_assert!(self.hosts.len() <= keep.max(spared));
        self.evicted += cut as u64;
        // Evicted hosts cannot be written any more: their keys leave the list of changed hosts,
        // which stays within the limit too.
        let hosts = &self.hosts;
        self.dirty.retain(|k| hosts.contains_key(*k));
    }

    /// Hosts with their addresses, in address order.
    fn sorted(&self) -> Vec<(IpAddr, &HostState)> {
        // In `IpAddr`'s order (every IPv4 address first), compared as the table's integer
        // keys: an IPv4-mapped key (`::ffff:a.b.c.d`) orders as its IPv4 address.
        let mut v: Vec<(u128, &HostState)> = self.hosts.iter().collect();
        v.sort_unstable_by_key(|(k, _)| (*k >> 32 != 0xffff, *k));
        v.into_iter().map(|(k, h)| (key_addr(k), h)).collect()
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether no host was seen.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The state of one host.
    pub fn host(&self, addr: IpAddr) -> Option<&HostState> {
        self.hosts.get(addr_key(addr))
    }

    /// Summaries of all hosts, ordered by address. A large table is scored on up to four
    /// threads (each a contiguous part of the order; the result is the same).
    pub fn summaries(&self, rules: &Ruleset) -> Vec<HostSummary> {
        let scorer = score::Scorer::new(rules, self.now_ms, self.config.half_life_ms);
        let sorted = self.sorted();
        let threads = crate::par::threads_for(sorted.len(), PARALLEL_SUMMARIES);
        crate::par::map_in_order(&sorted, threads, |(a, h)| scorer.summarize(*a, h))
    }

    /// Every host's address, in no order: what [`HostTable::copy_hosts`] takes a chunk at a
    /// time, so that a reader holding the inventory's lock holds it briefly.
    pub fn addrs(&self) -> Vec<IpAddr> {
        self.hosts.keys().map(key_addr).collect()
    }

    /// Copies of these hosts' states (those still present), with the time and half-life that
    /// scoring them needs: scored later by [`HostsCopy::summaries`], off any lock.
    pub fn copy_hosts(&self, addrs: &[IpAddr]) -> HostsCopy {
        HostsCopy {
            hosts: addrs
                .iter()
                .filter_map(|a| Some((*a, self.hosts.get(addr_key(*a))?.clone())))
                .collect(),
            now_ms: self.now_ms,
            half_life_ms: self.config.half_life_ms,
        }
    }

    /// The summary of one host.
    pub fn summary(&self, rules: &Ruleset, addr: IpAddr) -> Option<HostSummary> {
        let scorer = score::Scorer::new(rules, self.now_ms, self.config.half_life_ms);
        self.hosts
            .get(addr_key(addr))
            .map(|h| scorer.summarize(addr, h))
    }

    /// The detailed score computation of one host, for `--explain --host`.
    pub fn explain(&self, rules: &Ruleset, addr: IpAddr) -> Option<String> {
        let scorer = score::Scorer::new(rules, self.now_ms, self.config.half_life_ms);
        self.hosts
            .get(addr_key(addr))
            .map(|h| scorer.explain(addr, h))
    }

    /// The inventory as stored rows (summaries, labels, evidence, epochs).
    pub fn to_stored(&self, rules: &Ruleset) -> Vec<StoredHost> {
        let scorer = score::Scorer::new(rules, self.now_ms, self.config.half_life_ms);
        self.sorted()
            .into_iter()
            .map(|(a, h)| stored_host(&scorer, rules, a, h))
            .collect()
    }

    /// Up to `limit` of the hosts changed since they were last taken by this method, as stored
    /// rows, marking them clean: for incremental writes that hold the inventory only briefly.
    pub fn take_dirty(&mut self, rules: &Ruleset, limit: usize) -> Vec<StoredHost> {
        let scorer = score::Scorer::new(rules, self.now_ms, self.config.half_life_ms);
        let mut out = Vec::with_capacity(limit.min(self.dirty.len()));
        while out.len() < limit {
            let Some(k) = self.dirty.pop_front() else {
                break;
            };
            if let Some(h) = self.hosts.get_mut(k)
                && h.dirty
            {
                h.dirty = false;
                out.push(stored_host(&scorer, rules, key_addr(k), h));
            }
        }
        out
    }

    /// Marks a host changed again (after a write of it failed), so that the next
    /// [`HostTable::take_dirty`] takes it.
    pub fn mark_dirty(&mut self, addr: IpAddr) {
        let k = addr_key(addr);
        if let Some(h) = self.hosts.get_mut(k)
            && !h.dirty
        {
            h.dirty = true;
            self.dirty.push_back(k);
        }
    }

    /// Hosts changed since last taken by [`HostTable::take_dirty`].
    pub fn dirty_len(&self) -> usize {
        self.dirty.len()
    }
}

#[cfg(test)]
mod tests;
