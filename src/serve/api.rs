//! The HTTP API of `flowprint serve` (axum, on a small tokio runtime of its own).
//!
//! | | |
//! |---|---|
//! | `GET /health` | `{"status":"ok"|"degraded", ...}`: degraded when booted from the last good rules or the last reload failed |
//! | `GET /hosts?os=&software=&q=&limit=&offset=` | host summaries, by address |
//! | `GET /hosts/{addr}` | one host's summary and explanation |
//! | `GET /rules` | packs, versions, generation, last reload and its diagnostics |
//! | `POST /reload` | reloads the rules now; the report (422 when it failed) |
//! | `GET /metrics` | Prometheus text |
//!
//! `POST` needs `Authorization: Bearer <token>`; when the API listens off loopback every
//! endpoint but `/health` does. Bodies are limited (`api.max_body`), query strings to 4 KiB.

use super::Daemon;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::net::IpAddr;
use std::sync::Arc;

/// Longest query string accepted.
pub const MAX_QUERY: usize = 4096;
/// Most hosts in one `/hosts` page.
pub const MAX_LIMIT: usize = 10_000;

/// The router over a daemon.
pub fn router(daemon: Arc<Daemon>) -> Router {
    let max_body = daemon.config.api.max_body;
    Router::new()
        .route("/health", get(health))
        .route("/hosts", get(hosts))
        .route("/hosts/{addr}", get(host))
        .route("/rules", get(rules))
        .route("/reload", post(reload))
        .route("/metrics", get(metrics))
        .merge(super::web::routes())
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

/// Size limits and the token check, before any handler.
async fn guard(State(daemon): State<Arc<Daemon>>, request: Request, next: Next) -> Response {
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
    next.run(request).await
}

async fn health(State(d): State<Arc<Daemon>>) -> Response {
    let snap = d.store.current();
    let last = d.store.last_report();
    let degraded = snap.from_last_good || !last.ok;
    Json(json!({
        "status": if degraded { "degraded" } else { "ok" },
        "rules_generation": snap.generation,
        "rules": snap.ruleset.len(),
        "from_last_good": snap.from_last_good,
        "last_reload_ok": last.ok,
        "uptime_s": d.started.elapsed().as_secs(),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct HostsQuery {
    os: Option<String>,
    software: Option<String>,
    q: Option<String>,
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
    let d2 = d.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut all = d2.summaries();
        all.retain(|h| {
            q.os.as_deref().is_none_or(|os| {
                h.os.as_ref().is_some_and(|v| {
                    v.family
                        .as_deref()
                        .is_some_and(|f| f.eq_ignore_ascii_case(os))
                        || v.name
                            .as_deref()
                            .is_some_and(|n| n.eq_ignore_ascii_case(os))
                })
            }) && q
                .software
                .as_deref()
                .is_none_or(|s| h.software.iter().any(|v| v.name.eq_ignore_ascii_case(s)))
                && q.q.as_deref().is_none_or(|t| h.host.contains(t))
        });
        let total = all.len();
        let page: Vec<_> = all
            .into_iter()
            .skip(q.offset.unwrap_or(0))
            .take(limit)
            .collect();
        json!({ "total": total, "hosts": page })
    })
    .await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
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
    let snap = d.store.current();
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
        "last_reload": d.store.last_report(),
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
    let d2 = d.clone();
    match tokio::task::spawn_blocking(move || d2.render_metrics()).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
