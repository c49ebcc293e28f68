//! Rule reloads that failed because files could not be read (too many open files, a file
//! removed while it was read, a directory gone for a moment) are retried, with a backoff from
//! [`FIRST`] doubling up to [`MAX`], until one succeeds or fails for another reason (a compile
//! error waits for the next edit). Pending retries are shown by `/health` (`degraded`) and
//! counted (`flowprint_rule_reload_retries_total`).

use crate::store::ReloadReport;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The first retry's delay.
pub const FIRST: Duration = Duration::from_millis(500);
/// The longest delay between retries.
pub const MAX: Duration = Duration::from_secs(30);

/// A pending retry.
#[derive(Debug, Clone, Serialize)]
pub struct Pending {
    /// Retries done so far.
    pub attempts: u32,
    /// When the next one runs, ms from now.
    pub next_in_ms: u64,
    /// What could not be read (the first diagnostic).
    pub error: String,
    #[serde(skip)]
    next: Instant,
}

/// The retry state of a daemon's rules.
#[derive(Debug, Default)]
pub struct ReloadRetry {
    pending: Mutex<Option<Pending>>,
    /// Retries run.
    pub retries: AtomicU64,
}

/// The delay before retry number `attempts` (from 0).
pub fn backoff(attempts: u32) -> Duration {
    FIRST.saturating_mul(1 << attempts.min(16)).min(MAX)
}

impl ReloadRetry {
    /// Takes a reload's outcome into account: schedules a retry after an I/O failure, clears
    /// it after anything else.
    pub fn note(&self, r: &ReloadReport) {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if r.ok || r.unreadable == 0 {
            if p.take().is_some() && r.ok {
                tracing::info!("rules reload succeeded after retrying");
            }
            return;
        }
        let attempts = p.as_ref().map_or(0, |p| p.attempts);
        let delay = backoff(attempts);
        let error = r
            .diagnostics
            .iter()
            .rev()
            .find(|d| d.contains("cannot read") || d.contains("UTF-8"))
            .or(r.diagnostics.first())
            .map(|d| d.trim().chars().take(500).collect())
            .unwrap_or_default();
        tracing::warn!(
            attempts,
            retry_in_ms = delay.as_millis() as u64,
            "rules could not be read: retrying the reload ({error})"
        );
        *p = Some(Pending {
            attempts,
            next_in_ms: 0,
            error,
            next: Instant::now() + delay,
        });
    }

    /// Whether a retry is due now; counts it, and the next one backs off further.
    pub fn take_due(&self) -> bool {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        match p.as_mut() {
            Some(pending) if Instant::now() >= pending.next => {
                pending.attempts += 1;
                // Until the retry's outcome is noted, do not run another.
                pending.next = Instant::now() + MAX;
                self.retries.fetch_add(1, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// The pending retry, if any.
    pub fn pending(&self) -> Option<Pending> {
        let p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        p.as_ref().map(|p| Pending {
            next_in_ms: p.next.saturating_duration_since(Instant::now()).as_millis() as u64,
            ..p.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_failures_back_off_and_a_success_clears_them() {
        assert_eq!(backoff(0), FIRST);
        assert_eq!(backoff(1), FIRST * 2);
        assert_eq!(backoff(40), MAX);
        let r = ReloadRetry::default();
        let failed = ReloadReport {
            ok: false,
            errors: 1,
            unreadable: 1,
            diagnostics: vec!["error: rules/a.rules: cannot read: Too many open files\n".into()],
            ..Default::default()
        };
        r.note(&failed);
        let p = r.pending().unwrap();
        assert!(p.error.contains("Too many open files"), "{p:?}");
        assert!(!r.take_due(), "not before its delay");
        // A compile error is not retried; a success clears the retry.
        r.note(&ReloadReport {
            ok: false,
            errors: 1,
            ..Default::default()
        });
        assert!(r.pending().is_none());
        r.note(&failed);
        r.note(&ReloadReport {
            ok: true,
            ..Default::default()
        });
        assert!(r.pending().is_none());
    }
}
