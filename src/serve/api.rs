//! The HTTP API of `flowprint serve` (axum, on a small tokio runtime of its own).
//!
//! | | |
//! |---|---|
//! | `GET /health` | `{"status":"ok"|"degraded", "problems": [...], ...}`: degraded when booted from the last good rules, the last reload failed, a reload is waiting for a retry, or a rules directory is not watched |
//! | `GET /hosts?q=&os=&software=&label=&subnet=&min_confidence=&limit=&offset=` | host summaries, by address, at most a few seconds old ([`super::summaries`]), filtered as the hosts page and `flowprint hosts` filter ([`crate::inventory::filter`]) |
//! | `GET /hosts/{addr}` | one host's summary and explanation |
//! | `GET /rules` | packs, versions, generation, last reload and its diagnostics |
//! | `POST /reload` | reloads the rules now; the report (422 when it failed) |
//! | `GET /metrics` | Prometheus text |
//!
//! `POST` needs `Authorization: Bearer <token>`; when the API listens off loopback every
//! endpoint but `/health` does. Bodies are limited (`api.max_body`), query strings to 4 KiB.
//!
//! Every request must name this daemon in `Host`: a loopback name or address (`localhost`,
//! `*.localhost`, 127.0.0.0/8, `[::1]`), the address it listens on or the client connected to,
//! or a name of `api.hosts`; any other is refused with 421 (a web page whose name was rebound
//! to 127.0.0.1 cannot read the inventory). Expensive requests (host lists, pages, metrics) run
//! at most `api.max_concurrent` at once, on blocking threads; beyond, after a short wait, 503
//! with `Retry-After`. A request not answered within `api.request_timeout` gets a 503. All
//! refusals are counted (`flowprint_api_requests_rejected_total{reason}`).

use super::Daemon;
use crate::inventory::{FilterParams, HostFilter};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Longest query string accepted.
pub const MAX_QUERY: usize = 4096;
/// Most hosts in one `/hosts` page.
pub const MAX_LIMIT: usize = 10_000;
/// How long an expensive request waits for a free slot before its 503.
pub const BUSY_WAIT: Duration = Duration::from_millis(250);

/// The router over a daemon: the API's routes and `pages` (the web pages, [`super::web::routes`]),
/// behind one guard.
pub fn router(daemon: Arc<Daemon>, pages: Router<Arc<Daemon>>) -> Router {
    let max_body = daemon.config.api.max_body;
    Router::new()
        .route("/health", get(health))
        .route("/hosts", get(hosts))
        .route("/hosts/{addr}", get(host))
        .route("/rules", get(rules))
        .route("/reload", post(reload))
        .route("/metrics", get(metrics))
        .merge(pages)
        .layer(axum::middleware::from_fn_with_state(daemon.clone(), guard))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(daemon)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn token_ok(daemon: &Daemon, headers: &HeaderMap) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Constant time in the token's length.
    let want = daemon.token.as_bytes();
    let given = given.trim().as_bytes();
    given.len() == want.len()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The host part of a `Host` value (`name`, `name:port`, `[v6]:port`), lowercased, without a
/// trailing dot; `None` when it is not one.
pub fn host_part(value: &str) -> Option<String> {
    let v = value.trim();
    let host = if let Some(rest) = v.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        inside
    } else {
        match v.split_once(':') {
            Some((h, port)) if is_port(port) => h,
            Some(_) => return None,
            None => v,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `host` (from [`host_part`]) names this daemon: a loopback name or address, the
/// listen address, the address the client connected to (`local`), or a configured name.
pub fn host_allowed(
    host: &str,
    listen: SocketAddr,
    local: Option<SocketAddr>,
    names: &[String],
) -> bool {
    if let Ok(ip) = host.parse::<IpAddr>() {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        return ip.is_loopback()
            || ip == listen.ip()
            || local.is_some_and(|l| l.ip() == ip)
            || names.iter().any(|n| n.parse::<IpAddr>().ok() == Some(ip));
    }
    host == "localhost"
        || host.ends_with(".localhost")
        || names.iter().any(|n| {
            let n = n.strip_suffix('.').unwrap_or(n);
            n.eq_ignore_ascii_case(host)
        })
}

/// The 503 of a request that found every expensive request's slot taken.
fn busy(d: &Daemon) -> Response {
    d.http.rejected_busy.fetch_add(1, Ordering::Relaxed);
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(json!({"error": format!(
            "busy: {} expensive requests (host lists, pages, metrics) are running; retry in a second",
            d.config.api.max_concurrent
        )})),
    )
        .into_response()
}

/// Runs `f` on a blocking thread holding one of the `api.max_concurrent` slots of expensive
/// requests (waiting at most [`BUSY_WAIT`] for one; then 503).
pub async fn expensive<F>(d: &Arc<Daemon>, f: F) -> Response
where
    F: FnOnce(&Arc<Daemon>) -> Response + Send + 'static,
{
    let permit = match tokio::time::timeout(BUSY_WAIT, d.expensive.clone().acquire_owned()).await {
        Ok(Ok(p)) => p,
        _ => return busy(d),
    };
    let d2 = d.clone();
    match tokio::task::spawn_blocking(move || {
        let _slot = permit;
        f(&d2)
    })
    .await
    {
        Ok(r) => r,
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The checks before any handler: `Host`, sizes, the token; then the request timeout.
async fn guard(State(daemon): State<Arc<Daemon>>, request: Request, next: Next) -> Response {
    let local = request
        .extensions()
        .get::<super::http::ConnInfo>()
        .map(|c| c.local);
    let named = request
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().ok().and_then(host_part))
        .or_else(|| request.uri().host().map(host_part));
    if let Some(named) = named {
        let ok = named
            .as_deref()
            .is_some_and(|h| host_allowed(h, daemon.api_addr, local, &daemon.config.api.hosts));
        if !ok {
            daemon.http.rejected_host.fetch_add(1, Ordering::Relaxed);
            let shown: String = request
                .headers()
                .get(header::HOST)
                .map(|v| {
                    String::from_utf8_lossy(v.as_bytes())
                        .chars()
                        .take(100)
                        .collect()
                })
                .unwrap_or_default();
            return error(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "Host `{shown}` is not this daemon: use localhost, a loopback or the listen address, or add the name to api.hosts (--api-host)"
                ),
            );
        }
    }
    let uri = request.uri();
    if uri.query().is_some_and(|q| q.len() > MAX_QUERY) || uri.path().len() > MAX_QUERY {
        return error(StatusCode::URI_TOO_LONG, "query longer than 4096 bytes");
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > daemon.config.api.max_body as u64) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body larger than {} bytes",
                daemon.config.api.max_body
            ),
        );
    }
    let open = uri.path() == "/health"
        || (daemon.config.api.listen.ip().is_loopback()
            && request.method() == axum::http::Method::GET);
    if !open && !token_ok(&daemon, request.headers()) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "this endpoint needs `Authorization: Bearer <token>` (api.token, FLOWPRINT_API_TOKEN, or the api-token file in the state directory)"})),
        )
            .into_response();
    }
    let limit = daemon.config.api.request_timeout.0;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(r) => r,
        Err(_) => {
            daemon.http.timed_out.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                Json(json!({"error": format!("not answered within api.request_timeout ({} ms)", limit.as_millis())})),
            )
                .into_response()
        }
    }
}

async fn health(State(d): State<Arc<Daemon>>) -> Response {
    let (snap, last) = d.store.running();
    let retry = d.retry.pending();
    let watch = d.watch.get();
    let mut problems: Vec<String> = Vec::new();
    if snap.from_last_good {
        problems.push("running the last good rules: the rules on disk do not compile".into());
    }
    if !last.ok {
        problems.push(format!("the last rules reload ({}) failed", last.trigger));
    }
    if let Some(r) = &retry {
        problems.push(format!(
            "rules unreadable, reload retried in {} ms (attempt {}): {}",
            r.next_in_ms,
            r.attempts + 1,
            r.error
        ));
    }
    if let Some(w) = watch {
        for r in w.roots().iter().filter(|r| !r.watching) {
            problems.push(format!(
                "not watching {}: {}",
                r.path.display(),
                r.error.as_deref().unwrap_or("?")
            ));
        }
    }
    Json(json!({
        "status": if problems.is_empty() { "ok" } else { "degraded" },
        "problems": problems,
        "rules_generation": snap.generation,
        "rules": snap.ruleset.len(),
        "from_last_good": snap.from_last_good,
        "last_reload_ok": last.ok,
        "reload_retry": retry,
        "watch": watch.map(|w| json!({
            "watching": w.all_watching(),
            "mode": w.mode(),
            "dirs": w.roots(),
            "rewatches": w.rewatches.load(Ordering::Relaxed),
        })),
        "uptime_s": d.started.elapsed().as_secs(),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct HostsQuery {
    q: Option<String>,
    os: Option<String>,
    software: Option<String>,
    label: Option<String>,
    subnet: Option<String>,
    #[serde(alias = "min")]
    min_confidence: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn hosts(State(d): State<Arc<Daemon>>, Query(q): Query<HostsQuery>) -> Response {
    let limit = q.limit.unwrap_or(1000);
    if limit > MAX_LIMIT {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit: at most {MAX_LIMIT}"),
        );
    }
    let filter = match HostFilter::parse(&FilterParams {
        q: q.q,
        os: q.os,
        software: q.software,
        label: q.label,
        subnet: q.subnet,
        min_confidence: q.min_confidence,
    }) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let offset = q.offset.unwrap_or(0);
    expensive(&d, move |d| {
        let cached = d.cached_summaries();
        let mut total = 0;
        let mut page = Vec::new();
        for h in cached.hosts.iter().filter(|h| filter.matches(h)) {
            if total >= offset && page.len() < limit {
                page.push(h);
            }
            total += 1;
        }
        Json(json!({
            "total": total,
            "hosts": page,
            "as_of": crate::flow::time::format_rfc3339(cached.at_ms),
        }))
        .into_response()
    })
    .await
}

async fn host(State(d): State<Arc<Daemon>>, Path(addr): Path<String>) -> Response {
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("`{addr}` is not an IP address"),
        );
    };
    match d.host(ip) {
        Some((summary, explanation)) => Json(json!({
            "host": summary,
            "explanation": explanation,
        }))
        .into_response(),
        None => error(StatusCode::NOT_FOUND, format!("{ip} has not been seen")),
    }
}

async fn rules(State(d): State<Arc<Daemon>>) -> Response {
    let (snap, last) = d.store.running();
    let (reloads, failed) = d.store.reload_counts();
    Json(json!({
        "generation": snap.generation,
        "loaded_at": crate::flow::time::format_rfc3339(snap.loaded_at_ms),
        "rules": snap.ruleset.len(),
        "packs": snap.packs,
        "from_last_good": snap.from_last_good,
        "boot": d.store.boot_status(),
        "warnings": snap.warnings.len(),
        "reloads": reloads,
        "failed_reloads": failed,
        "last_reload": last,
        "fleet": d.fleet.as_ref().map(|f| json!({
            "shards_owned": f.owned.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
            "packs": f.packs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
        })),
    }))
    .into_response()
}

async fn reload(State(d): State<Arc<Daemon>>, _body: axum::body::Bytes) -> Response {
    // The body is read (and so limited, chunked or not) but not used.
    let d2 = d.clone();
    match tokio::task::spawn_blocking(move || d2.reload("api")).await {
        Ok(report) => {
            let status = if report.ok {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            (status, Json(report)).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn metrics(State(d): State<Arc<Daemon>>) -> Response {
    expensive(&d, |d| {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            d.render_metrics(),
        )
            .into_response()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_daemons_names_pass_the_host_check() {
        let listen: SocketAddr = "127.0.0.1:9155".parse().unwrap();
        let wild: SocketAddr = "0.0.0.0:9155".parse().unwrap();
        let local: SocketAddr = "192.0.2.10:9155".parse().unwrap();
        let names = vec!["flowprint.lan".to_string()];
        let ok = |h: &str, listen, local| {
            host_part(h).is_some_and(|h| host_allowed(&h, listen, local, &names))
        };
        for h in [
            "localhost",
            "localhost:9155",
            "LOCALHOST.",
            "app.localhost:1",
            "127.0.0.1",
            "127.3.4.5:80",
            "[::1]:9155",
            "[::ffff:127.0.0.1]",
            "flowprint.lan:9155",
            "FlowPrint.LAN.",
        ] {
            assert!(ok(h, listen, None), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:9155",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "192.0.2.10",
            "[::1",
            "::1",
            "localhost:x",
            "",
        ] {
            assert!(!ok(h, listen, None), "{h}");
        }
        // Listening on every address: the address the client connected to is this daemon.
        assert!(ok("192.0.2.10:9155", wild, Some(local)));
        assert!(!ok("192.0.2.11:9155", wild, Some(local)));
        assert!(ok("192.0.2.10", "192.0.2.10:9155".parse().unwrap(), None));
    }
}
