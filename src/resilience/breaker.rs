//! A circuit breaker for Redis: after repeated failures it opens and calls fail at once
//! (instead of each waiting for its timeout); after a pause it lets a probe through and
//! closes again when the probe succeeds.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Breaker settings.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before letting a probe through.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(2),
        }
    }
}

/// Closed (calls flow), open (calls refused) or half-open (one probe at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused until the pause ends.
    Open,
    /// One probe call is allowed; its outcome closes or re-opens the breaker.
    HalfOpen,
}

impl BreakerState {
    /// Name for `/health`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// Gauge value: 0 closed, 1 open, 2 half-open.
    pub fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    failures: u32,
    opened_at: Instant,
    probing: bool,
    probe_started: Instant,
}

/// The breaker; share it in an `Arc`. The lock is held for a few instructions only.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
    changes: watch::Sender<BreakerState>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: 0,
                opened_at: Instant::now(),
                probing: false,
                probe_started: Instant::now(),
            }),
            changes: watch::channel(BreakerState::Closed).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, inner: &mut Inner, state: BreakerState) {
        if inner.state != state {
            inner.state = state;
            self.changes.send_replace(state);
        }
    }

    /// May a call go ahead? In half-open only one probe at a time.
    pub fn allow(&self) -> bool {
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Closed => true,
            BreakerState::Open if inner.opened_at.elapsed() >= self.config.open_for => {
                self.set(&mut inner, BreakerState::HalfOpen);
                inner.probing = true;
                inner.probe_started = Instant::now();
                true
            }
            BreakerState::Open => false,
            // A probe whose call was cancelled never reports back: after a pause, let
            // another one through rather than stay half-open for good.
            BreakerState::HalfOpen
                if !inner.probing || inner.probe_started.elapsed() >= self.config.open_for =>
            {
                inner.probing = true;
                inner.probe_started = Instant::now();
                true
            }
            BreakerState::HalfOpen => false,
        }
    }

    /// Records a call that worked. While open, a call that started before the breaker
    /// tripped proves nothing: only a probe (half-open) closes it.
    pub fn record_success(&self) {
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Open => {}
            BreakerState::HalfOpen | BreakerState::Closed => {
                inner.failures = 0;
                inner.probing = false;
                self.set(&mut inner, BreakerState::Closed);
            }
        }
    }

    /// Records a call that failed or timed out. While open, late failures of calls that
    /// started earlier do not extend the pause.
    pub fn record_failure(&self) {
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Open => {}
            BreakerState::HalfOpen => {
                inner.probing = false;
                inner.opened_at = Instant::now();
                self.set(&mut inner, BreakerState::Open);
            }
            BreakerState::Closed => {
                inner.failures += 1;
                if inner.failures >= self.config.failure_threshold {
                    inner.opened_at = Instant::now();
                    self.set(&mut inner, BreakerState::Open);
                }
            }
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// Follows state changes.
    pub fn subscribe(&self) -> watch::Receiver<BreakerState> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_failures_probes_after_the_pause_and_closes_on_success() {
        let b = Breaker::new(BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(2),
        });
        let mut changes = b.subscribe();
        b.record_failure();
        b.record_failure();
        assert!(b.allow(), "two failures keep it closed");
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(changes.has_changed().unwrap());
        assert_eq!(*changes.borrow_and_update(), BreakerState::Open);
        assert!(!b.allow(), "open refuses at once");

        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(b.allow(), "one probe after the pause");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.allow(), "only one probe at a time");
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open, "a failed probe re-opens");

        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(b.allow());
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn late_results_and_lost_probes_do_not_wedge_it() {
        let b = Breaker::new(BreakerConfig {
            failure_threshold: 1,
            open_for: Duration::from_secs(2),
        });
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        // A call that began before the trip succeeds late: still open.
        b.record_success();
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(b.allow(), "probe");
        // The probe's call is cancelled and never reports; another probe comes later.
        assert!(!b.allow());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            b.allow(),
            "a lost probe does not keep it half-open for good"
        );
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_failure_count() {
        let b = Breaker::new(BreakerConfig::default());
        for _ in 0..4 {
            b.record_failure();
        }
        b.record_success();
        for _ in 0..4 {
            b.record_failure();
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
