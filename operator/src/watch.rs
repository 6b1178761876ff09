//! The operator's watches, made to resume within seconds once the API server is back.
//!
//! Why not kube's defaults: `Controller` merges every trigger watch (the `PaymentSystem`s,
//! each owned kind, Secrets) into one stream behind one shared backoff (0.8 s doubling to
//! 30 s, plus up to 100 % jitter), and while it sleeps no watch is read at all. During an API
//! server restart every watch fails to reconnect, each failure a step of that one backoff;
//! when the server is back, every watch gets `410 Gone` (its resource version predates the
//! new server's watch cache), and those 410s come one after another with no success in
//! between, so each is another step at the 30–60 s cap. Measured: a change made after a
//! restart waited over a minute.
//!
//! Here each watch has its own short backoff ([`backoff`]); a 410 is not a failure but the
//! protocol's "list again", so it costs no backoff step; and errors are logged and dropped
//! before the controller, so its shared backoff never runs and one watch never stalls the
//! others.

use std::borrow::Cow;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::api::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event, ExponentialBackoff, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

/// First retry of a failed watch; doubles up to [`MAX_DELAY`].
const MIN_DELAY: Duration = Duration::from_millis(250);
/// Longest pause between retries (up to twice that with jitter): an operator has a handful
/// of watches, so retrying this often costs a recovering API server nothing, and it bounds
/// how long a change waits after an outage.
const MAX_DELAY: Duration = Duration::from_secs(5);
/// Longest pause for a watch whose CRD may not be installed ([`resilient_optional`]).
const OPTIONAL_MAX_DELAY: Duration = Duration::from_secs(60);
/// Pause before listing again after a `410 Gone`, so a server that kept answering 410 could
/// not make the watch list in a tight loop.
const RELIST_PAUSE: Duration = Duration::from_millis(500);

/// The retry policy of one watch: exponential from 250 ms to 5 s with jitter, reset by every
/// event received.
pub fn backoff() -> impl Backoff {
    exponential(true)
}

fn exponential(jitter: bool) -> ExponentialBackoff {
    let builder = backon::ExponentialBuilder::default()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_factor(2.0)
        .without_max_times();
    ExponentialBackoff::from(if jitter {
        builder.with_jitter()
    } else {
        builder
    })
}

/// `stream` (a [`watcher`] of `kind`) with its own [`backoff`], 410s relisted at once and
/// failures logged instead of passed on: the result never yields an error.
pub fn resilient<K, S>(
    kind: &'static str,
    stream: S,
) -> impl Stream<Item = watcher::Result<Event<K>>> + Send + 'static
where
    K: Resource + Debug + Send + 'static,
    S: Stream<Item = watcher::Result<Event<K>>> + Send + 'static,
{
    resilient_with(kind, stream, backoff())
}

/// [`resilient`] for a kind whose CRD may be absent for good (another operator's, not
/// installed): the same handling, with retries slowing to once a minute so a cluster without
/// that operator does not get a warning every few seconds.
pub fn resilient_optional<K, S>(
    kind: &'static str,
    stream: S,
) -> impl Stream<Item = watcher::Result<Event<K>>> + Send + 'static
where
    K: Resource + Debug + Send + 'static,
    S: Stream<Item = watcher::Result<Event<K>>> + Send + 'static,
{
    let slow = backon::ExponentialBuilder::default()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(OPTIONAL_MAX_DELAY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    resilient_with(kind, stream, ExponentialBackoff::from(slow))
}

fn resilient_with<K, S, B>(
    kind: &'static str,
    stream: S,
    backoff: B,
) -> impl Stream<Item = watcher::Result<Event<K>>> + Send + 'static
where
    K: Resource + Debug + Send + 'static,
    S: Stream<Item = watcher::Result<Event<K>>> + Send + 'static,
    B: Backoff + 'static,
{
    let progressed = Arc::new(AtomicBool::new(false));
    let backoff = ProgressBackoff {
        inner: backoff,
        progressed: progressed.clone(),
    };
    stream
        .inspect(move |item| {
            if matches!(item, Ok(event) if !matches!(event, Event::Init)) {
                progressed.store(true, Ordering::Relaxed);
            }
        })
        .filter_map(move |item| async move {
            match item {
                // The watcher lists again on its next poll.
                Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                    info!(kind, message = %status.message, "watch expired (410 Gone): listing again");
                    tokio::time::sleep(RELIST_PAUSE).await;
                    None
                }
                other => Some(other),
            }
        })
        .backoff(backoff)
        .filter_map(move |item| async move {
            match item {
                Ok(event) => Some(Ok(event)),
                Err(error) => {
                    warn!(kind, %error, "watch failed; retrying");
                    None
                }
            }
        })
}

/// A backoff that only real progress resets. kube's `StreamBackoff` resets its backoff on
/// every `Ok` item, but the watcher yields `Event::Init` (an `Ok`) before each list attempt,
/// so a watch whose list keeps failing (a CRD not installed) would retry at the first step,
/// several times a second, forever. Here `StreamBackoff`'s resets are ignored and any other
/// event (an object, the end of a list) resets the backoff before its next step.
struct ProgressBackoff<B> {
    inner: B,
    progressed: Arc<AtomicBool>,
}

impl<B: Backoff> Iterator for ProgressBackoff<B> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.progressed.swap(false, Ordering::Relaxed) {
            self.inner.reset();
        }
        self.inner.next()
    }
}

impl<B: Backoff> Backoff for ProgressBackoff<B> {
    /// Ignored: see the type's documentation.
    fn reset(&mut self) {}
}

/// The metadata of the objects `api` lists that `config` selects (the operator's children),
/// as a trigger stream for `Controller::owns_stream`. Metadata only: the owner references
/// are all the controller needs, and full objects would cost memory for nothing.
pub fn children<K>(
    api: Api<PartialObjectMeta<K>>,
    config: &watcher::Config,
) -> impl Stream<Item = watcher::Result<PartialObjectMeta<K>>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let kind = match K::kind(&()) {
        Cow::Borrowed(kind) => kind,
        Cow::Owned(_) => "child",
    };
    resilient(kind, watcher(api, config.clone())).touched_objects()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::{StreamExt, stream};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::core::Status;
    use kube::runtime::watcher::{self, Event};
    use tokio::time::Instant;

    use super::{exponential, resilient_with};

    fn failed() -> watcher::Result<Event<ConfigMap>> {
        let status = Status::failure("connection refused", "ServiceUnavailable").with_code(503);
        Err(watcher::Error::WatchStartFailed(kube::Error::Api(
            Box::new(status),
        )))
    }

    fn gone() -> watcher::Result<Event<ConfigMap>> {
        let status = Status::failure("too old resource version: 1 (2)", "Expired").with_code(410);
        Err(watcher::Error::WatchError(Box::new(status)))
    }

    /// The items `events` becomes, each with the time it came out at (the clock is paused,
    /// so only the sleeps count). No jitter, so the delays are exact.
    async fn run(
        events: Vec<watcher::Result<Event<ConfigMap>>>,
    ) -> (Vec<(String, Duration)>, Duration) {
        let started = Instant::now();
        let out = resilient_with("ConfigMap", stream::iter(events), exponential(false))
            .map(|item| (format!("{item:?}"), started.elapsed()))
            .collect()
            .await;
        (out, started.elapsed())
    }

    /// What the watcher yields across an API server restart: failed reconnects, then 410 Gone
    /// once the server is back, then the events of the new list.
    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_and_dropped_and_a_410_costs_no_backoff_step() {
        let (out, _) = run(vec![failed(), failed(), gone(), Ok(Event::Init)]).await;
        // 250 ms and 500 ms for the failures, then the 500 ms relist pause; a 410 counted as
        // a failure would cost the next step, 1 s.
        assert_eq!(out, [("Ok(Init)".to_owned(), Duration::from_millis(1250))]);
    }

    /// Every event resets the backoff: a watch that worked for a while starts again from
    /// 250 ms on its next failure.
    #[tokio::test(start_paused = true)]
    async fn events_reset_the_backoff() {
        let (out, end) = run(vec![failed(), failed(), Ok(Event::InitDone), failed()]).await;
        assert_eq!(
            out,
            [("Ok(InitDone)".to_owned(), Duration::from_millis(750))]
        );
        assert_eq!(end, Duration::from_millis(1000));
    }

    /// The watcher yields `Init` before each list; a list that keeps failing (a CRD that is
    /// not installed) is no progress, so the pauses keep growing: 250 ms, 500 ms, 1 s.
    #[tokio::test(start_paused = true)]
    async fn a_list_that_keeps_failing_backs_off_further_despite_its_init_events() {
        let (out, end) = run(vec![
            Ok(Event::Init),
            failed(),
            Ok(Event::Init),
            failed(),
            Ok(Event::Init),
            failed(),
            Ok(Event::Init),
        ])
        .await;
        assert_eq!(out.len(), 4, "{out:?}");
        assert_eq!(end, Duration::from_millis(1750));
    }
}
