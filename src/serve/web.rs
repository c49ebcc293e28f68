//! The inventory as web pages, served by `flowprint serve` on its API address: `/` (overview),
//! `/ui/hosts` (the hosts, filtered, sorted and paginated on the server), `/ui/hosts/{addr}` (one
//! host: labels, alternatives, evidence, epochs, a timeline of its rules), `/ui/rules` (packs,
//! rule hits, the last reload and its diagnostics).
//!
//! Plain HTML rendered with `maud`, which escapes every interpolated string: host names, DNS
//! names and anything else that comes from flow records is attacker-controlled. Charts are SVG
//! drawn here. The pages need no script at all (sorting and filtering are links and a form), and
//! the Content-Security-Policy forbids every script, inline or not, and every resource from
//! elsewhere; the one stylesheet is embedded in the binary.

use super::Daemon;
use crate::infer::HostSummary;
use crate::inventory::{FilterError, FilterParams, HostFilter};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The pages' Content-Security-Policy: no script of any origin, styles and images from here.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Rows of the hosts page.
pub const PAGE_ROWS: usize = 100;

const STYLE: &str = include_str!("web.css");

/// The pages' routes (merged into the API's router, behind its guard).
pub fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route("/", get(overview))
        .route("/ui/hosts", get(hosts))
        .route("/ui/hosts/{addr}", get(host))
        .route("/ui/rules", get(rules))
        .route("/ui/style.css", get(style))
}

/// A whole page: the layout around `body`.
pub fn page_html(title: &str, body: Markup) -> String {
    layout(title, None, body)
}

/// The layout; `refresh`: reload the page every so many seconds (a meta refresh, no script).
fn layout(title: &str, refresh: Option<u32>, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(r) = refresh { meta http-equiv="refresh" content=(r); }
                title { (title) " — flowprint" }
                link rel="stylesheet" href="/ui/style.css";
            }
            body {
                nav {
                    strong { "flowprint" }
                    a href="/" { "Overview" }
                    a href="/ui/hosts" { "Hosts" }
                    a href="/ui/rules" { "Rules" }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
    .into_string()
}

fn page(title: &str, body: Markup) -> Response {
    respond(layout(title, None, body))
}

fn respond(html: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

/// A horizontal bar chart as inline SVG: one bar per (label, count), longest first.
pub fn bar_chart(items: &[(String, usize)], unit: &str) -> Markup {
    let max = items.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let row = 22;
    let height = row * items.len().max(1) + 4;
    html! {
        svg class="chart" width="560" height=(height) viewBox={"0 0 560 " (height)} role="img" {
            @if items.is_empty() {
                text x="4" y="16" { "nothing yet" }
            }
            @for (i, (label, n)) in items.iter().enumerate() {
                @let y = i * row + 2;
                @let w = (*n as f64 / max as f64 * 260.0).round().max(1.0);
                text x="176" y=(y + 15) text-anchor="end" { (truncate(label, 26)) }
                rect x="184" y=(y + 3) width=(w) height="15" {}
                text x=(190.0 + w) y=(y + 15) { (n) " " (if *n == 1 { unit.trim_end_matches('s') } else { unit }) }
            }
        }
    }
}

/// A line of values over time as inline SVG (a sparkline with its last value).
pub fn sparkline(points: &[(i64, f64)], unit: &str) -> Markup {
    let (w, h) = (520.0, 80.0);
    if points.len() < 2 {
        return html! { p.muted { "not enough samples yet" } };
    }
    let t0 = points[0].0 as f64;
    let t1 = points[points.len() - 1].0 as f64;
    let vmax = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9);
    let path: String = points
        .iter()
        .map(|(t, v)| {
            let x = (*t as f64 - t0) / (t1 - t0).max(1.0) * (w - 8.0) + 4.0;
            let y = h - 4.0 - v / vmax * (h - 8.0);
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ");
    let last = points[points.len() - 1].1;
    html! {
        svg class="chart" width=(w) height=(h) viewBox={"0 0 " (w) " " (h)} role="img" {
            polyline points=(path) {}
        }
        p.muted { "last: " (format!("{last:.0}")) " " (unit) "; highest: " (format!("{vmax:.0}")) }
    }
}

fn attribute_name(a: crate::ruleset::Attribute) -> String {
    serde_json::to_value(a)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

fn family(h: &HostSummary) -> Option<&str> {
    h.os.as_ref().and_then(|o| o.family.as_deref())
}

fn confidence(h: &HostSummary) -> f64 {
    h.os.as_ref()
        .map(|o| o.confidence)
        .into_iter()
        .chain(h.software.iter().map(|s| s.confidence))
        .chain(h.device.as_ref().map(|d| d.confidence))
        .fold(0.0, f64::max)
}

fn counts<'a>(it: impl Iterator<Item = &'a str>, top: usize) -> Vec<(String, usize)> {
    let mut m: BTreeMap<&str, usize> = BTreeMap::new();
    for v in it {
        *m.entry(v).or_default() += 1;
    }
    let mut v: Vec<(String, usize)> = m.into_iter().map(|(k, n)| (k.to_string(), n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(top);
    v
}

async fn overview(State(d): State<Arc<Daemon>>) -> Response {
    super::api::expensive(&d, overview_page).await
}

fn overview_page(d: &Arc<Daemon>) -> Response {
    let cached = d.cached_summaries();
    let (all, labelled) = (cached.hosts, cached.labelled);
    let by_family = counts(all.iter().filter_map(family), 12);
    let by_software = counts(
        all.iter()
            .flat_map(|h| h.software.iter().map(|s| s.name.as_str())),
        12,
    );
    let history = d.history();
    let rate: Vec<(i64, f64)> = history
        .windows(2)
        .map(|w| {
            let dt = ((w[1].0 - w[0].0) as f64 / 1000.0).max(1e-3);
            (w[1].0, w[1].1.saturating_sub(w[0].1) as f64 / dt)
        })
        .collect();
    // A point for each sample after which the summaries had been computed again.
    let labels_over_time: Vec<(i64, f64)> = history
        .iter()
        .filter_map(|&(t, _, l)| Some((t, l? as f64)))
        .collect();
    let c = &d.counters;
    let collector = d
        .collector
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let malformed: u64 = collector
        .exporters
        .values()
        .map(|e| e.malformed)
        .sum::<u64>()
        + collector.other_exporters.malformed;
    let report = d.store.last_report();
    let body = html! {
        section.cards {
            div.card { span.big { (all.len()) } " hosts seen" }
            div.card { span.big { (labelled) } " hosts labelled" }
            div.card { span.big { (c.evaluated.load(Ordering::Relaxed)) } " flows evaluated" }
            div.card { span.big { (c.dropped.load(Ordering::Relaxed)) } " flows dropped" }
            div.card { span.big { (collector.queue_drops) } " datagrams dropped" }
            div.card { span.big { (malformed) } " malformed datagrams" }
        }
        h2 { "Hosts by OS family" }
        (bar_chart(&by_family, "hosts"))
        h2 { "Hosts by software" }
        (bar_chart(&by_software, "hosts"))
        h2 { "Flows per second" }
        (sparkline(&rate, "flows/s"))
        h2 { "Hosts labelled over time" }
        (sparkline(&labels_over_time, "hosts"))
        h2 { "Last reload" }
        p {
            (if report.ok { "ok" } else { "FAILED" }) " — " (report.at) " (" (report.trigger) "), "
            (report.rules) " rules"
            @if !report.ok { ", " a href="/ui/rules" { "diagnostics" } }
        }
    };
    // The overview follows the daemon by reloading itself every 10 s (no script needed).
    respond(layout("Overview", Some(10), body))
}

/// The hosts page's query: the filter of every host list ([`HostFilter`], the same as
/// `GET /hosts`), the order and the page.
#[derive(Debug, Default, Deserialize)]
pub struct HostsQuery {
    /// Free text: address, OS, software, device, rule.
    pub q: Option<String>,
    /// OS family or name (case-insensitive).
    pub os: Option<String>,
    /// Software name (case-insensitive).
    pub software: Option<String>,
    /// Any winning label (case-insensitive).
    pub label: Option<String>,
    /// Lowest confidence of the labels named, or of the best label (empty: any; a form sends
    /// empty fields).
    #[serde(alias = "min")]
    pub min_confidence: Option<String>,
    /// Subnet (CIDR).
    pub subnet: Option<String>,
    /// `host`, `os`, `confidence`, `flows`, `last` (prefix `-` to reverse).
    pub sort: Option<String>,
    /// Page, from 1.
    pub page: Option<usize>,
}

impl HostsQuery {
    /// The filter it asks for.
    pub fn filter(&self) -> Result<HostFilter, FilterError> {
        HostFilter::parse(&FilterParams {
            q: self.q.clone(),
            os: self.os.clone(),
            software: self.software.clone(),
            label: self.label.clone(),
            subnet: self.subnet.clone(),
            min_confidence: self.min_confidence.clone(),
        })
    }
}

/// The rows of a page of hosts, and how many matched.
pub fn select<'a>(
    all: &'a [HostSummary],
    q: &HostsQuery,
) -> Result<(Vec<&'a HostSummary>, usize), FilterError> {
    let filter = q.filter()?;
    let mut rows: Vec<&HostSummary> = all.iter().filter(|h| filter.matches(h)).collect();
    let sort = q.sort.as_deref().unwrap_or("host");
    let (key, reverse) = match sort.strip_prefix('-') {
        Some(k) => (k, true),
        None => (sort, false),
    };
    match key {
        "os" => rows.sort_by(|a, b| family(a).cmp(&family(b))),
        "confidence" => rows.sort_by(|a, b| confidence(a).total_cmp(&confidence(b))),
        "flows" => rows.sort_by_key(|h| h.flows),
        "last" => rows.sort_by(|a, b| a.last_seen.cmp(&b.last_seen)),
        _ => {} // by address: the cache is in address order
    }
    if reverse {
        rows.reverse();
    }
    let total = rows.len();
    let page = q.page.unwrap_or(1).max(1);
    let rows = rows
        .into_iter()
        .skip((page - 1) * PAGE_ROWS)
        .take(PAGE_ROWS)
        .collect();
    Ok((rows, total))
}

fn link(q: &HostsQuery, sort: Option<&str>, page: Option<usize>) -> String {
    let mut parts = Vec::new();
    let mut push = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            parts.push(format!("{k}={}", encode(&v)));
        }
    };
    push("q", q.q.clone());
    push("os", q.os.clone());
    push("software", q.software.clone());
    push("label", q.label.clone());
    push("min_confidence", q.min_confidence.clone());
    push("subnet", q.subnet.clone());
    push("sort", sort.map(str::to_string).or_else(|| q.sort.clone()));
    push("page", page.map(|p| p.to_string()));
    format!("/ui/hosts?{}", parts.join("&"))
}

/// Percent-encoding of a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn hosts(
    State(d): State<Arc<Daemon>>,
    query: Result<Query<HostsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            let mut r = page("Hosts", html! { p.error { (e.body_text()) } });
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return r;
        }
    };
    super::api::expensive(&d, move |d| {
        let all = d.cached_summaries().hosts;
        match hosts_body(&all, &q) {
            Ok(body) => page("Hosts", body),
            Err(e) => {
                let mut r = page("Hosts", html! { p.error { (e.to_string()) } });
                *r.status_mut() = StatusCode::BAD_REQUEST;
                r
            }
        }
    })
    .await
}

/// The hosts page's body for a query over `all` (the summaries, by address).
pub fn hosts_body(all: &[HostSummary], q: &HostsQuery) -> Result<Markup, FilterError> {
    let (rows, total) = select(all, q)?;
    let page_no = q.page.unwrap_or(1).max(1);
    let pages = total.div_ceil(PAGE_ROWS).max(1);
    let sort_link = |key: &str| {
        let cur = q.sort.as_deref().unwrap_or("host");
        let next = if cur == key {
            format!("-{key}")
        } else {
            key.to_string()
        };
        link(q, Some(&next), None)
    };
    let body = html! {
        form method="get" action="/ui/hosts" class="filters" {
            input type="search" name="q" placeholder="address, OS, software, rule" value=[q.q.as_deref()];
            input type="text" name="os" placeholder="OS family or name" value=[q.os.as_deref()];
            input type="text" name="software" placeholder="software" value=[q.software.as_deref()];
            input type="text" name="label" placeholder="any label" value=[q.label.as_deref()];
            input type="text" name="subnet" placeholder="subnet, e.g. 10.0.0.0/8" value=[q.subnet.as_deref()];
            input type="number" name="min_confidence" step="0.05" min="0" max="1" placeholder="min confidence" value=[q.min_confidence.as_deref()];
            button type="submit" { "Filter" }
        }
        p.muted { (total) " of " (all.len()) " hosts; page " (page_no) " of " (pages) }
        table {
            thead { tr {
                th { a href=(sort_link("host")) { "Host" } }
                th { a href=(sort_link("os")) { "OS family" } }
                th { "OS / version" }
                th { "Software" }
                th { "Device" }
                th { a href=(sort_link("confidence")) { "Confidence" } }
                th { a href=(sort_link("flows")) { "Flows" } }
                th { a href=(sort_link("last")) { "Last seen" } }
            } }
            tbody {
                @for h in &rows {
                    tr {
                        td { a href={"/ui/hosts/" (h.host)} { (h.host) } }
                        td { (family(h).unwrap_or("")) }
                        td { @if let Some(o) = &h.os { (o.name.as_deref().unwrap_or("")) " " (o.version.as_deref().unwrap_or("")) } }
                        td { @for (i, s) in h.software.iter().enumerate() { @if i > 0 { ", " } (s.name) @if let Some(v) = &s.version { " " (v) } } }
                        td { @if let Some(dv) = &h.device { (dv.kind) } }
                        td.num { (format!("{:.2}", confidence(h))) }
                        td.num { (h.flows) }
                        td { (h.last_seen) }
                    }
                }
            }
        }
        p.pages {
            @if page_no > 1 { a href=(link(q, None, Some(page_no - 1))) { "← previous" } " " }
            @if page_no < pages { a href=(link(q, None, Some(page_no + 1))) { "next →" } }
        }
    };
    Ok(body)
}

/// A timeline of a host's rules: one bar per rule from its first to its last matching flow.
pub fn timeline(h: &HostSummary) -> Markup {
    let parse = |s: &str| crate::flow::time::parse_timestamp(s);
    let spans: Vec<(&str, i64, i64, u64)> = h
        .evidence
        .iter()
        .filter_map(|e| {
            Some((
                e.rule.as_str(),
                parse(&e.first_seen)?,
                parse(&e.last_seen)?,
                e.flows,
            ))
        })
        .collect();
    if spans.is_empty() {
        return html! { p.muted { "no evidence" } };
    }
    let t0 = spans.iter().map(|s| s.1).min().unwrap_or(0);
    let t1 = spans.iter().map(|s| s.2).max().unwrap_or(0).max(t0 + 1);
    let row = 20;
    let height = row * spans.len() + 24;
    html! {
        svg class="chart" width="640" height=(height) viewBox={"0 0 640 " (height)} role="img" {
            @for (i, (rule, a, b, n)) in spans.iter().enumerate() {
                @let y = i * row + 4;
                @let x = 230.0 + (*a - t0) as f64 / (t1 - t0) as f64 * 380.0;
                @let w = ((*b - *a) as f64 / (t1 - t0) as f64 * 380.0).max(3.0);
                text x="222" y=(y + 13) text-anchor="end" { (truncate(rule, 32)) }
                rect x=(format!("{x:.1}")) y=(y + 2) width=(format!("{w:.1}")) height="13" { title { (n) " flows" } }
            }
            text x="230" y=(height - 4) { (h.evidence.iter().map(|e| e.first_seen.as_str()).min().unwrap_or("")) }
            text x="610" y=(height - 4) text-anchor="end" { (h.last_seen) }
        }
    }
}

async fn host(State(d): State<Arc<Daemon>>, Path(addr): Path<String>) -> Response {
    let Ok(ip) = addr.parse::<IpAddr>() else {
        let mut r = page(
            "Host",
            html! { p.error { "`" (addr) "` is not an address" } },
        );
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let Some((h, explanation)) = d.host(ip) else {
        let mut r = page(
            "Host",
            html! { p { "No host " (addr) " in the inventory." } },
        );
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    };
    let epochs = d.host_epochs(ip);
    let body = html! {
        p.muted { (h.flows) " flows, " (h.first_seen) " — " (h.last_seen) ", epoch " (h.epoch)
            @for f in &h.flags { " · " (f) } }
        h2 { "Labels" }
        table {
            thead { tr { th { "Attribute" } th { "Value" } th { "Confidence" } } }
            tbody {
                @if let Some(o) = &h.os {
                    @if let Some(f) = &o.family { tr { td { "os.family" } td { (f) } td.num { (format!("{:.2}", o.confidence)) } } }
                    @if let Some(n) = &o.name { tr { td { "os.name" } td { (n) } td.num { (format!("{:.2}", o.confidence)) } } }
                    @if let Some(v) = &o.version { tr { td { "os.version" } td { (v) } td.num { (format!("{:.2}", o.confidence)) } } }
                }
                @for s in &h.software { tr { td { "software" } td { (s.name) @if let Some(v) = &s.version { " " (v) } } td.num { (format!("{:.2}", s.confidence)) } } }
                @if let Some(dv) = &h.device { tr { td { "device" } td { (dv.kind) } td.num { (format!("{:.2}", dv.confidence)) } } }
                @for a in &h.alternatives { tr.alt { td { (attribute_name(a.attribute)) " (alternative)" } td { (a.value) } td.num { (format!("{:.2}", a.confidence)) } } }
            }
        }
        h2 { "Evidence" }
        table {
            thead { tr { th { "Rule" } th { "Flows" } th { "First" } th { "Last" } th { "Example" } } }
            tbody {
                @for e in &h.evidence {
                    tr {
                        td { (e.rule) @if let Some(t) = &e.title { br; span.muted { (t) } } }
                        td.num { (e.flows) }
                        td { (e.first_seen) }
                        td { (e.last_seen) }
                        td { (e.example.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
        @if !h.unscored.is_empty() {
            h2 { "Kept, not scored" }
            p.muted { "Stored evidence of rules that are not loaded now: kept as it was, counted again when the rules are back." }
            table.unscored {
                thead { tr { th { "Rule" } th { "Flows" } th { "First" } th { "Last" } } }
                tbody {
                    @for e in &h.unscored {
                        tr {
                            td { (e.rule) }
                            td.num { (e.flows) }
                            td { (e.first_seen) }
                            td { (e.last_seen) }
                        }
                    }
                }
            }
        }
        h2 { "Timeline of its rules" }
        (timeline(&h))
        @if epochs.len() > 1 {
            h2 { "Epochs" }
            ul { @for (n, started, reason) in &epochs { li { "epoch " (n) ", from " (started) @if !reason.is_empty() { ": " (reason) } } } }
        }
        h2 { "Explanation" }
        pre { (explanation) }
    };
    page(&format!("Host {addr}"), body)
}

async fn rules(State(d): State<Arc<Daemon>>) -> Response {
    super::api::expensive(&d, rules_page).await
}

fn rules_page(d: &Arc<Daemon>) -> Response {
    let snap = d.store.current();
    let report = d.store.last_report();
    let (reloads, failed) = d.store.reload_counts();
    let mut hits: BTreeMap<String, u64> = BTreeMap::new();
    for s in &d.shards {
        let g = s.lock();
        for (r, &n) in g.hosts().rule_hits.iter().enumerate() {
            if n > 0
                && let Some(rule) = g.snapshot.ruleset.rules().get(r)
            {
                *hits.entry(rule.id.clone()).or_default() += n;
            }
        }
    }
    let mut hits: Vec<(String, u64)> = hits.into_iter().collect();
    hits.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let body = html! {
        p { (snap.ruleset.len()) " rules, generation " (snap.generation) "; " (reloads) " reloads, " (failed) " failed"
            @if snap.from_last_good { " — " strong.error { "running the last good set: the rules on disk do not compile" } } }
        h2 { "Packs" }
        table {
            thead { tr { th { "Pack" } th { "Version" } } }
            tbody { @for p in &snap.packs { tr { td { (p.name) } td { (p.version.as_deref().unwrap_or("—")) } } } }
        }
        h2 { "Last reload" }
        p { (if report.ok { "ok" } else { "FAILED" }) " — " (report.at) " (" (report.trigger) ")" }
        @if !report.diagnostics.is_empty() {
            pre.diagnostics { @for line in &report.diagnostics { (line) } }
        }
        h2 { "Rule hits" }
        table {
            thead { tr { th { "Rule" } th { "Matching flows" } } }
            tbody { @for (r, n) in hits.iter().take(500) { tr { td { (r) } td.num { (n) } } } }
        }
        @if hits.len() > 500 { p.muted { (hits.len() - 500) " more rules with hits" } }
    };
    page("Rules", body)
}
