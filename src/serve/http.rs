//! The API's connections: an accept loop with a cap, and timeouts for request heads, idle
//! connections and requests (hyper's HTTP/1 server under the axum router).
//!
//! - **Cap**: at most [`Limits::max_connections`] connections are open; at the cap the loop
//!   stops accepting (new connections wait in the kernel's backlog) instead of failing, and
//!   connections idle for [`AT_CAP_IDLE`] are closed to make room. The cap is also kept at half
//!   the process's file-descriptor limit, so that the rest of the daemon (rule files, the
//!   database) never runs out of descriptors because of the API.
//! - **Head timeout**: a connection that does not send a complete request head within
//!   [`Limits::header_timeout`] of being opened, or of its previous response, is closed (slow
//!   or absent headers: slowloris).
//! - **Idle timeout**: a connection with no byte read or written for [`Limits::idle_timeout`]
//!   while no request is being handled is closed (a client that stops reading its response).
//! - **Request timeout**: a request not answered within the API's request timeout gets a 503
//!   (the router's guard, [`super::api`]).
//! - An error of `accept` (EMFILE, ENFILE, ...) is counted and retried after a pause; it never
//!   stops the API.
//!
//! Everything is counted in [`HttpStats`] (`/metrics`).

use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;

/// How long a connection may stay idle while the API is at its connection cap.
pub const AT_CAP_IDLE: Duration = Duration::from_secs(1);
/// How long a stop waits for open connections to finish their requests.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// The pause after a failed `accept`.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once (before [`effective_cap`]).
    pub max_connections: usize,
    /// See the module docs.
    pub header_timeout: Duration,
    /// See the module docs.
    pub idle_timeout: Duration,
}

/// The two ends of an API connection, put in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The address the client connected to.
    pub local: SocketAddr,
    /// The client.
    pub peer: SocketAddr,
}

/// Counters of the API's connections and refused requests.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// The connection cap in force.
    pub cap: AtomicU64,
    /// Times the accept loop waited at the cap.
    pub waits_at_cap: AtomicU64,
    /// `accept` failures (EMFILE and the like).
    pub accept_errors: AtomicU64,
    /// Connections closed because their request head did not come in time.
    pub header_timeouts: AtomicU64,
    /// Connections closed idle.
    pub idle_closed: AtomicU64,
    /// Requests refused: `Host` not this daemon's (DNS rebinding).
    pub rejected_host: AtomicU64,
    /// Requests refused: all the expensive requests' slots taken.
    pub rejected_busy: AtomicU64,
    /// Requests not answered within the request timeout.
    pub timed_out: AtomicU64,
}

/// The file-descriptor limit (soft) of this process, from `/proc/self/limits`.
pub fn fd_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

/// The cap in force: the configured one, but at most half the file-descriptor limit.
pub fn effective_cap(configured: usize) -> usize {
    match fd_limit() {
        Some(n) => configured
            .min((n / 2).try_into().unwrap_or(usize::MAX))
            .max(1),
        None => configured.max(1),
    }
}

/// What a connection's watchdog reads: when it last moved a byte, and whether a request is
/// being handled.
struct ConnState {
    born: Instant,
    /// ms since `born` of the last byte read or written, or of the end of a request.
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl ConnState {
    fn touch(&self) {
        self.last_ms
            .store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(last)
    }
}

/// A request being handled; its end counts as traffic.
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn enter(s: &Arc<ConnState>) -> InFlight {
        s.in_flight.fetch_add(1, Ordering::Relaxed);
        s.touch();
        InFlight(s.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that records when it last moved a byte.
struct Tracked<T> {
    inner: T,
    state: Arc<ConnState>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `router` on `listener` until `stop` fires (see the module docs); then stops
/// accepting, lets open requests finish for up to [`STOP_GRACE`] and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    stats: Arc<HttpStats>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let cap = effective_cap(limits.max_connections);
    if cap < limits.max_connections {
        tracing::warn!(
            configured = limits.max_connections,
            cap,
            fd_limit = fd_limit().unwrap_or(0),
            "API connections capped at half the file-descriptor limit"
        );
    }
    stats.cap.store(cap as u64, Ordering::Relaxed);
    let slots = Arc::new(Semaphore::new(cap));
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut last_warned: Option<Instant> = None;
    'accept: loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                stats.waits_at_cap.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break 'accept,
                    },
                    _ = &mut stop => break 'accept,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    if last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        last_warned = Some(Instant::now());
                        tracing::warn!("API: cannot accept a connection: {e} (retrying; counted in flowprint_api_accept_errors_total)");
                    }
                    drop(permit);
                    tokio::select! {
                        _ = tokio::time::sleep(ACCEPT_PAUSE) => continue 'accept,
                        _ = &mut stop => break 'accept,
                    }
                }
            },
            _ = &mut stop => break 'accept,
        };
        let _ = stream.set_nodelay(true);
        let local = stream
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let conn = Connection {
            info: ConnInfo { local, peer },
            router: router.clone(),
            builder: builder.clone(),
            stats: stats.clone(),
            slots: slots.clone(),
            cap,
            idle_timeout: limits.idle_timeout,
            closing: closing_rx.clone(),
        };
        tokio::spawn(async move {
            conn.run(stream).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    // Every slot back: every connection closed.
    let _ = tokio::time::timeout(STOP_GRACE, slots.acquire_many(cap as u32)).await;
}

struct Connection {
    info: ConnInfo,
    router: Router,
    builder: hyper::server::conn::http1::Builder,
    stats: Arc<HttpStats>,
    slots: Arc<Semaphore>,
    cap: usize,
    idle_timeout: Duration,
    closing: tokio::sync::watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, stream: tokio::net::TcpStream) {
        let state = Arc::new(ConnState {
            born: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        });
        let io = TokioIo::new(Tracked {
            inner: stream,
            state: state.clone(),
        });
        let tower = TowerToHyperService::new(self.router.clone());
        let info = self.info;
        let st = state.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(info);
            let guard = InFlight::enter(&st);
            let fut = tower.call(req);
            async move {
                let r = fut.await;
                drop(guard);
                r
            }
        });
        let conn = self.builder.serve_connection(io, service);
        tokio::pin!(conn);
        let check = (self.idle_timeout / 4).clamp(Duration::from_millis(50), AT_CAP_IDLE / 2);
        let mut tick = tokio::time::interval(check);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut closing_since: Option<Instant> = None;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r
                        && e.is_timeout()
                    {
                        self.stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
                _ = tick.tick() => {
                    if let Some(t) = closing_since {
                        if t.elapsed() >= STOP_GRACE {
                            break;
                        }
                        continue;
                    }
                    let at_cap = self.slots.available_permits() == 0 && self.cap > 0;
                    let limit = if at_cap {
                        self.idle_timeout.min(AT_CAP_IDLE)
                    } else {
                        self.idle_timeout
                    };
                    if state.in_flight.load(Ordering::Relaxed) == 0 && state.idle_for() >= limit {
                        self.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                changed = self.closing.changed(), if closing_since.is_none() => {
                    if changed.is_err() || *self.closing.borrow() {
                        conn.as_mut().graceful_shutdown();
                        closing_since = Some(Instant::now());
                    }
                }
            }
        }
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}
