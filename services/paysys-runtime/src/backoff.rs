//! How long to wait before trying again to reach something that is down: the database at
//! start-up, the broker, a channel. One policy for every service, on the `backon` crate.
//!
//! Pods start in any order in a cluster, so an absent dependency is a wait, not a crash. The
//! wait starts short (a restart of the dependency is noticed quickly), doubles, and stops
//! growing at [`LONGEST`] (an outage that ends is noticed within that). There is no jitter:
//! each process retries one dependency, not thousands of clients one server.

use std::time::Duration;

/// `(|| attempt()).retry(policy())`, without each service depending on backon itself.
pub use backon::Retryable;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The first wait.
pub const FIRST: Duration = Duration::from_millis(100);
/// The longest wait.
pub const LONGEST: Duration = Duration::from_secs(5);

/// [`FIRST`] doubling up to [`LONGEST`], never giving up (jitter is off unless asked for). For
/// `backon::Retryable::retry`, or [`Backoff::new`] with another first wait.
pub fn policy() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(FIRST)
        .with_max_delay(LONGEST)
        .with_factor(2.0)
        .without_max_times()
}

/// The waits of a loop that keeps going after a success (a session that reconnects): each
/// failure takes the next wait, a success starts again from the first.
#[derive(Debug)]
pub struct Backoff {
    policy: ExponentialBuilder,
    waits: ExponentialBackoff,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(policy())
    }
}

impl Backoff {
    pub fn new(policy: ExponentialBuilder) -> Self {
        Self {
            policy,
            waits: policy.build(),
        }
    }

    /// The wait after one more failure in a row.
    pub fn next_wait(&mut self) -> Duration {
        // A policy without a maximum number of attempts never runs out; LONGEST stands in
        // should one that does be passed.
        self.waits.next().unwrap_or(LONGEST)
    }

    /// After a success: the next failure waits the first wait again.
    pub fn reset(&mut self) {
        self.waits = self.policy.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(backoff: &mut Backoff, n: usize) -> Vec<u128> {
        (0..n).map(|_| backoff.next_wait().as_millis()).collect()
    }

    #[test]
    fn doubles_from_the_first_wait_up_to_the_longest() {
        let mut backoff = Backoff::default();
        assert_eq!(
            millis(&mut backoff, 9),
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]
        );
        // Many failures later it still waits, and no longer.
        assert_eq!(millis(&mut backoff, 1000).last(), Some(&5000));
    }

    #[test]
    fn a_success_starts_again_from_the_first_wait() {
        let mut backoff = Backoff::default();
        millis(&mut backoff, 5);
        backoff.reset();
        assert_eq!(millis(&mut backoff, 2), [100, 200]);
    }

    #[test]
    fn the_first_wait_can_be_longer() {
        let mut backoff = Backoff::new(policy().with_min_delay(Duration::from_millis(200)));
        assert_eq!(millis(&mut backoff, 6), [200, 400, 800, 1600, 3200, 5000]);
    }

    #[tokio::test]
    async fn retry_waits_by_the_policy_until_success() {
        let mut attempts = 0;
        let mut waits = Vec::new();
        let started = std::time::Instant::now();
        let result: Result<u32, &str> = (|| {
            attempts += 1;
            let attempt = attempts;
            async move {
                if attempt < 4 {
                    Err("down")
                } else {
                    Ok(attempt)
                }
            }
        })
        .retry(policy())
        .sleep(tokio::time::sleep)
        .notify(|_, wait| waits.push(wait.as_millis()))
        .await;
        assert_eq!(result, Ok(4));
        assert_eq!(waits, [100, 200, 400]);
        // It really slept: 100 + 200 + 400 ms.
        assert!(started.elapsed() >= Duration::from_millis(700));
    }
}
