//! Retry policy for calls from the agent to the server: exponential backoff
//! with jitter and a ceiling. Final gRPC codes (the server rejected the
//! agent or the request) end retrying, because asking again cannot succeed.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tonic::{Code, Status};

/// Backoff settings shared by every retrying task of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub initial_delay: Duration,
    /// Ceiling on the delay between two attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Starts a new sequence of backoff delays.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            policy: *self,
            failures: 0,
        }
    }
}

/// The state of one sequence of retries: how many attempts failed so far.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    failures: u32,
}

impl Backoff {
    /// Counts one failure and returns the delay before the next attempt.
    ///
    /// The base delay doubles with every failure up to the ceiling. The
    /// returned delay is the base with "equal jitter": half of it fixed and
    /// half random, so that agents restarted together spread their retries
    /// without any delay collapsing to zero.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.base_delay();
        self.failures = self.failures.saturating_add(1);

        let half = base / 2;
        let jitter_nanos = rand::rng().random_range(0..=half.as_nanos());
        let jitter = Duration::from_nanos(u64::try_from(jitter_nanos).unwrap_or(u64::MAX));
        half + jitter
    }

    /// Returns the number of failures counted since the start or the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Starts over from the initial delay, after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    fn base_delay(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures).unwrap_or(u32::MAX);
        self.policy
            .initial_delay
            .saturating_mul(factor)
            .min(self.policy.max_delay)
    }
}

/// Returns whether a gRPC code from the server is final: the server rejected
/// the agent (evicted, banned, unknown) or the request itself, so the same
/// call would fail again.
pub fn is_final(code: Code) -> bool {
    matches!(
        code,
        Code::PermissionDenied | Code::Unauthenticated | Code::InvalidArgument
    )
}

/// Runs `call` until it succeeds or fails with a final code, sleeping with
/// backoff between attempts. `operation` names the call in logs.
///
/// # Errors
///
/// Returns the first [`Status`] whose code is final; it is logged at `error`.
pub async fn retry<T, F, Fut>(
    policy: &RetryPolicy,
    operation: &'static str,
    call: F,
) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    retry_with(policy, operation, call, |_| {}).await
}

/// Runs `call` as [`retry`] does, and calls `on_retry` with each failure
/// that is retried, such as to move to another server.
///
/// # Errors
///
/// Returns the first [`Status`] whose code is final.
pub async fn retry_with<T, F, Fut, R>(
    policy: &RetryPolicy,
    operation: &'static str,
    mut call: F,
    mut on_retry: R,
) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
    R: FnMut(&Status),
{
    let mut backoff = policy.backoff();
    loop {
        let status = match call().await {
            Ok(value) => {
                if backoff.failures() > 0 {
                    tracing::info!(operation, failures = backoff.failures(), "call recovered");
                }
                return Ok(value);
            }
            Err(status) => status,
        };

        if is_final(status.code()) {
            tracing::error!(
                operation,
                code = ?status.code(),
                message = status.message(),
                "the server rejected the call; not retrying"
            );
            return Err(status);
        }

        on_retry(&status);
        let delay = backoff.next_delay();
        if backoff.failures() == 1 {
            tracing::warn!(
                operation,
                code = ?status.code(),
                message = status.message(),
                retry_in = ?delay,
                "call to the server failed; retrying"
            );
        } else {
            tracing::debug!(
                operation,
                code = ?status.code(),
                failures = backoff.failures(),
                retry_in = ?delay,
                "call to the server failed again; retrying"
            );
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::time::Instant;

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
        }
    }

    #[test]
    fn backoff_delays_double_within_jitter() {
        let mut backoff = policy().backoff();
        for base_secs in [1u64, 2, 4, 8] {
            let base = Duration::from_secs(base_secs);
            let delay = backoff.next_delay();
            assert!(delay >= base / 2, "delay {delay:?} below half of {base:?}");
            assert!(delay <= base, "delay {delay:?} above {base:?}");
        }
    }

    #[test]
    fn backoff_stops_at_ceiling() {
        let mut backoff = policy().backoff();
        for _ in 0..100 {
            let delay = backoff.next_delay();
            assert!(
                delay <= Duration::from_secs(8),
                "delay {delay:?} above the ceiling"
            );
        }
        assert_eq!(backoff.failures(), 100);
    }

    #[test]
    fn backoff_reset_returns_to_initial() {
        let mut backoff = policy().backoff();
        for _ in 0..5 {
            backoff.next_delay();
        }
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        assert!(backoff.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn final_codes() {
        let cases = [
            (Code::PermissionDenied, true),
            (Code::Unauthenticated, true),
            (Code::InvalidArgument, true),
            (Code::Unavailable, false),
            (Code::DeadlineExceeded, false),
            (Code::Internal, false),
            (Code::ResourceExhausted, false),
        ];
        for (code, expected) in cases {
            assert_eq!(is_final(code), expected, "{code:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_succeeds_after_transient_failures() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();

        let result = retry(&policy(), "test", || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n < 3 {
                Err(Status::unavailable("server down"))
            } else {
                Ok(n)
            }
        })
        .await;

        assert_eq!(result.ok(), Some(3));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // Three sleeps with bases 1 s, 2 s and 4 s, each at least half its base.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(3500),
            "slept only {elapsed:?}"
        );
        assert!(elapsed <= Duration::from_secs(7), "slept {elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_on_final_code() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();

        let result: Result<(), Status> = retry(&policy(), "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Status::permission_denied("agent is banned"))
        })
        .await;

        let status = result.err().map(|s| s.code());
        assert_eq!(status, Some(Code::PermissionDenied));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
