//! Waiting for what happens in the background: [`eventually`] polls a check until it holds
//! and fails the test, naming what it awaited, once a deadline has passed.
//!
//! Every deadline is multiplied by `SWITCHBOARD_TEST_PATIENCE` (default 1; e.g. 3 on a
//! slow or shared CI machine). Only the deadlines stretch: a check that holds returns as
//! soon as it is seen, so patience never makes a passing test slower.

use std::fmt::Display;
use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable holding the deadline multiplier.
pub const PATIENCE_VAR: &str = "SWITCHBOARD_TEST_PATIENCE";

/// The first pause between two checks: most conditions hold within a few milliseconds.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// Checks over a whole window at most: the pause doubles up to `window / CHECKS`, so a
/// 10 s wait polls every 25 ms, a 20 s one every 50 ms and a 45 s one (browsers) every
/// 112 ms, as often as the hand-written loops did, without hammering a busy machine.
const CHECKS: u32 = 400;

/// The deadline multiplier from `SWITCHBOARD_TEST_PATIENCE`, 1 when unset.
pub fn patience() -> f64 {
    static PATIENCE: OnceLock<f64> = OnceLock::new();
    *PATIENCE.get_or_init(|| match std::env::var(PATIENCE_VAR) {
        Err(_) => 1.0,
        Ok(v) if v.trim().is_empty() => 1.0,
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(p) if p.is_finite() && p > 0.0 => p,
            _ => panic!(
                "{PATIENCE_VAR}={v:?} is not a positive number; set it to e.g. 3 on a slow \
                 machine, or unset it"
            ),
        },
    })
}

/// `limit` stretched by the patience multiplier.
pub fn patient(limit: Duration) -> Duration {
    limit.mul_f64(patience())
}

/// What one check found: whether the wait is over, with its value, or what was seen
/// instead (shown when the wait fails).
pub trait Outcome {
    /// What the wait returns once the check holds.
    type Value;
    /// `Ok` when the check holds; otherwise what was seen, if the check said.
    fn settle(self) -> Result<Self::Value, Option<String>>;
}

impl Outcome for bool {
    type Value = ();
    fn settle(self) -> Result<(), Option<String>> {
        if self { Ok(()) } else { Err(None) }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn settle(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

// `Err` holds what was seen instead, for the failure message.
impl<T, E: Display> Outcome for Result<T, E> {
    type Value = T;
    fn settle(self) -> Result<T, Option<String>> {
        self.map_err(|seen| Some(seen.to_string()))
    }
}

/// The pauses between checks and the deadline they stop at (public for its self-test).
pub struct Pacing {
    limit: Duration,
    pause: Duration,
    longest: Duration,
}

impl Pacing {
    /// Pacing for a wait of `limit` (already stretched by the patience).
    pub fn new(limit: Duration) -> Pacing {
        Pacing {
            limit,
            pause: FIRST_PAUSE,
            longest: (limit / CHECKS).max(FIRST_PAUSE),
        }
    }

    /// The pause before the next check, given the time `spent` so far; `None` once the
    /// deadline is reached (the last pause ends on it, so a check runs at the deadline).
    pub fn next(&mut self, spent: Duration) -> Option<Duration> {
        let left = self
            .limit
            .checked_sub(spent)
            .filter(|left| !left.is_zero())?;
        let pause = self.pause.min(left);
        self.pause = (self.pause * 2).min(self.longest);
        Some(pause)
    }

    fn fail(&self, what: &dyn Display, seen: Option<String>) -> ! {
        let gave_up = format!(
            "gave up waiting for {what} after {:?} ({PATIENCE_VAR}={})",
            self.limit,
            patience()
        );
        match seen {
            Some(seen) => panic!("{gave_up}; last seen: {seen}"),
            None => panic!("{gave_up}"),
        }
    }
}

/// Polls `check` until it holds (`true`, `Some`, `Ok`) and returns its value; fails the test
/// naming `what` (e.g. "every peer to detach") once `within` times the patience has passed.
/// The check may assert what must stay true while waiting.
pub async fn eventually<O: Outcome>(
    what: impl Display,
    within: Duration,
    mut check: impl AsyncFnMut() -> O,
) -> O::Value {
    let started = tokio::time::Instant::now();
    let mut pacing = Pacing::new(patient(within));
    loop {
        let seen = match check().await.settle() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        match pacing.next(started.elapsed()) {
            Some(pause) => tokio::time::sleep(pause).await,
            None => pacing.fail(&what, seen),
        }
    }
}

/// [`eventually`] for code outside a runtime (child processes, blocking sockets).
pub fn eventually_blocking<O: Outcome>(
    what: impl Display,
    within: Duration,
    mut check: impl FnMut() -> O,
) -> O::Value {
    let started = std::time::Instant::now();
    let mut pacing = Pacing::new(patient(within));
    loop {
        let seen = match check().settle() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        match pacing.next(started.elapsed()) {
            Some(pause) => std::thread::sleep(pause),
            None => pacing.fail(&what, seen),
        }
    }
}
