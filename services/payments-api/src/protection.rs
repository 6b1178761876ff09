//! Overload protection: a per-principal rate limit, so overload turns into fast `429`
//! answers instead of growing latency and memory. The bound on requests in flight (`503`) is
//! tower's concurrency limit and load shed, layered in `http::router`.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// Token buckets per principal (GCRA): `per_second` sustained, `burst` at once.
pub struct RateLimits {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl RateLimits {
    /// `per_second == 0` turns rate limiting off.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            limiter,
            clock: DefaultClock::default(),
        }
    }

    /// Ok, or how long until the principal may send again.
    pub fn check(&self, principal: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter
            .check_key(&principal.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets principals idle long enough to be back at a full bucket (bounded memory).
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
        }
    }
}

/// `429` with a whole-second `Retry-After` of at least one.
pub fn too_many_requests(wait: Duration) -> ApiError {
    let rounded_up = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::TooManyRequests {
        retry_after_secs: rounded_up.max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_principal_separately() {
        let limits = RateLimits::new(1, 2);
        assert!(limits.check("alice").is_ok());
        assert!(limits.check("alice").is_ok());
        let wait = limits.check("alice").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limits.check("bob").is_ok(), "bob has his own bucket");
    }

    #[test]
    fn zero_turns_it_off() {
        let limits = RateLimits::new(0, 0);
        assert!((0..10_000).all(|_| limits.check("alice").is_ok()));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let secs = |d| match too_many_requests(d) {
            ApiError::TooManyRequests { retry_after_secs } => retry_after_secs,
            _ => unreachable!(),
        };
        assert_eq!(secs(Duration::from_millis(1)), 1);
        assert_eq!(secs(Duration::from_millis(999)), 1);
        assert_eq!(secs(Duration::from_secs(1)), 1);
        assert_eq!(secs(Duration::from_millis(1500)), 2);
    }
}
