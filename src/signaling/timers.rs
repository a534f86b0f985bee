//! A connection's deadlines: when to ping, when silence means the client is gone, when
//! it must be in a room, and when its token is due for a refresh or has expired.
//!
//! Plain arithmetic on tokio's clock, kept apart from the socket so paused-clock tests
//! check it exactly; the link keeps one timer set to [`Timers::next`]. The settings
//! (ping interval, idle timeout) are passed in rather than stored: every idle connection
//! keeps this struct for its whole life.

use std::time::Duration;

use tokio::time::Instant;

/// A connection's deadlines, as offsets from when it opened: an `Instant` takes 16 bytes
/// and an offset 8, and every idle connection keeps this struct for its whole life.
#[derive(Debug)]
pub(super) struct Timers {
    /// When the connection opened; the offsets below count from here.
    origin: Instant,
    /// When the client last sent a frame.
    last_frame: Offset,
    /// When the next ping is due.
    next_ping: Offset,
    /// When the token expires.
    expiry: Offset,
    /// When to push a fresh token; [`NEVER`] when refresh is off.
    refresh: Offset,
    /// By when the connection must be in a room; [`NEVER`] once it was.
    join_by: Offset,
}

/// Nanoseconds after [`Timers::origin`] (u64: 584 years).
type Offset = u64;
/// An offset no clock reaches: a deadline that is not set.
const NEVER: Offset = Offset::MAX;

/// What falls due, besides a ping, when the timer fires with the session free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    /// The token expired: close with 4001.
    Expired,
    /// The connection joined no room within the join timeout: close with 1008.
    NoJoin,
    /// The client has been silent for the idle timeout: close.
    Idle,
    /// Push a fresh token.
    Refresh,
}

/// What the timer found due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fired {
    /// Send a ping.
    pub ping: bool,
    /// The session's own deadline, at most one, the most pressing first.
    pub due: Option<Due>,
}

/// How long to wait before pushing a fresh token to a session whose token has `remaining`
/// life, with refresh `before` its expiry (zero: refresh is off). Never sooner than half
/// the remaining life, so a lead longer than a token's lifetime cannot become a loop.
pub(super) fn refresh_wait(remaining: Duration, before: Duration) -> Option<Duration> {
    if before.is_zero() {
        return None;
    }
    Some(remaining.saturating_sub(before).max(remaining / 2))
}

impl Timers {
    /// Deadlines for a connection opened `now`, whose token expires at `expiry`, and
    /// which must be in a room by `join_by` (`None`: it is in one already).
    pub fn new(
        now: Instant,
        ping_interval: Duration,
        expiry: Instant,
        refresh: Option<Instant>,
        join_by: Option<Instant>,
    ) -> Self {
        let mut timers = Self {
            origin: now,
            last_frame: 0,
            next_ping: NEVER,
            expiry: NEVER,
            refresh: NEVER,
            join_by: NEVER,
        };
        timers.next_ping = timers.offset(now + ping_interval);
        timers.expiry = timers.offset(expiry);
        timers.refresh = timers.offset_of(refresh);
        timers.join_by = timers.offset_of(join_by);
        timers
    }

    /// `at` as an offset; a time before the origin is the origin (it is due at once).
    fn offset(&self, at: Instant) -> Offset {
        let nanos = at.saturating_duration_since(self.origin).as_nanos();
        Offset::try_from(nanos).map_or(NEVER - 1, |n| n.min(NEVER - 1))
    }

    fn offset_of(&self, at: Option<Instant>) -> Offset {
        at.map_or(NEVER, |at| self.offset(at))
    }

    /// The instant of a set `offset`.
    fn instant(&self, offset: Offset) -> Instant {
        self.origin + Duration::from_nanos(offset)
    }

    /// The connection is in a room: the join deadline is met for good.
    pub fn joined(&mut self) {
        self.join_by = NEVER;
    }

    /// The client sent a frame at `now`.
    pub fn heard(&mut self, now: Instant) {
        self.last_frame = self.offset(now);
    }

    /// The session holds a fresh token now.
    pub fn renewed(&mut self, expiry: Instant, refresh: Option<Instant>) {
        self.expiry = self.offset(expiry);
        self.refresh = self.offset_of(refresh);
    }

    /// When the idle timeout falls due.
    fn idle_at(&self, idle_timeout: Duration) -> Offset {
        let timeout = Offset::try_from(idle_timeout.as_nanos()).unwrap_or(NEVER);
        self.last_frame.saturating_add(timeout).min(NEVER - 1)
    }

    /// When the timer should fire next: the next ping, or (when no command holds the
    /// session) whichever of the session's deadlines comes first.
    pub fn next(&self, idle_timeout: Duration, session_free: bool) -> Instant {
        let mut due = self.next_ping;
        if session_free {
            due = due
                .min(self.idle_at(idle_timeout))
                .min(self.expiry)
                .min(self.refresh)
                .min(self.join_by);
        }
        self.instant(due)
    }

    /// What is due at `now`; a due ping moves the next one an interval on. The session's
    /// deadlines wait while a command holds it (`session_free` false).
    pub fn fire(
        &mut self,
        now: Instant,
        ping_interval: Duration,
        idle_timeout: Duration,
        session_free: bool,
    ) -> Fired {
        let at = self.offset(now);
        let ping = at >= self.next_ping;
        if ping {
            self.next_ping = self.offset(now + ping_interval);
        }
        let due = if !session_free {
            None
        } else if at >= self.expiry {
            Some(Due::Expired)
        } else if at >= self.join_by {
            Some(Due::NoJoin)
        } else if at >= self.idle_at(idle_timeout) {
            Some(Due::Idle)
        } else if at >= self.refresh {
            Some(Due::Refresh)
        } else {
            None
        };
        Fired { ping, due }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const PING: Duration = Duration::from_secs(20);
    const IDLE: Duration = Duration::from_secs(60);

    /// A connection opened now with a token of `life`, refreshed `before` its expiry.
    fn opened(life: Duration, before: Duration) -> Timers {
        let now = Instant::now();
        let refresh = refresh_wait(life, before).map(|w| now + w);
        Timers::new(now, PING, now + life, refresh, None)
    }

    /// Fires the timer where it is set, as the link does, and says what was due.
    async fn fire_at_next(timers: &mut Timers, session_free: bool) -> Fired {
        let at = timers.next(IDLE, session_free);
        advance(at.saturating_duration_since(Instant::now())).await;
        timers.fire(Instant::now(), PING, IDLE, session_free)
    }

    #[tokio::test(start_paused = true)]
    async fn pings_go_out_every_interval_and_frames_keep_the_connection_open() {
        let mut timers = opened(Duration::from_secs(3600), Duration::ZERO);
        let start = Instant::now();
        for n in 1..=2 {
            let fired = fire_at_next(&mut timers, true).await;
            assert_eq!(
                fired,
                Fired {
                    ping: true,
                    due: None
                }
            );
            assert_eq!(Instant::now() - start, PING * n);
        }
        // A frame at 50 s moves the idle deadline to 110 s; pings go on meanwhile.
        advance(Duration::from_secs(10)).await;
        timers.heard(Instant::now());
        assert_eq!(fire_at_next(&mut timers, true).await.due, None);
        assert_eq!(Instant::now() - start, Duration::from_secs(60));
        assert_eq!(fire_at_next(&mut timers, true).await.due, None);
        assert_eq!(Instant::now() - start, Duration::from_secs(80));
        assert_eq!(fire_at_next(&mut timers, true).await.due, None);
        let fired = fire_at_next(&mut timers, true).await;
        assert_eq!(fired.due, Some(Due::Idle));
        assert!(!fired.ping, "closed for silence between two pings");
        assert_eq!(Instant::now() - start, Duration::from_secs(110));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_closed_after_the_idle_timeout_not_before() {
        let mut timers = opened(Duration::from_secs(3600), Duration::ZERO);
        let start = Instant::now();
        advance(IDLE - Duration::from_millis(1)).await;
        assert_eq!(timers.fire(Instant::now(), PING, IDLE, true).due, None);
        advance(Duration::from_millis(1)).await;
        assert_eq!(
            timers.fire(Instant::now(), PING, IDLE, true).due,
            Some(Due::Idle)
        );
        assert_eq!(Instant::now() - start, IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_refreshed_before_it_expires_and_expires_if_not() {
        // 10 minutes of life, refreshed 2 minutes before the end: at 8 minutes.
        let life = Duration::from_secs(600);
        let mut timers = opened(life, Duration::from_secs(120));
        let start = Instant::now();
        loop {
            timers.heard(Instant::now()); // a chatty client: never idle
            let fired = fire_at_next(&mut timers, true).await;
            if fired.due.is_some() {
                assert_eq!(fired.due, Some(Due::Refresh));
                break;
            }
        }
        assert_eq!(Instant::now() - start, Duration::from_secs(480));

        // The refresh was not taken up (say, the client never got it): expiry at 10 minutes.
        timers.renewed(start + life, None);
        loop {
            timers.heard(Instant::now());
            if let Some(due) = fire_at_next(&mut timers, true).await.due {
                assert_eq!(due, Due::Expired);
                break;
            }
        }
        assert_eq!(Instant::now() - start, life);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_session_is_only_pinged_until_its_command_is_done() {
        let mut timers = opened(Duration::from_secs(30), Duration::ZERO);
        advance(Duration::from_secs(40)).await;
        let fired = timers.fire(Instant::now(), PING, IDLE, false);
        assert_eq!(
            fired,
            Fired {
                ping: true,
                due: None
            }
        );
        assert_eq!(
            timers.next(IDLE, false),
            Instant::now() + PING,
            "only the next ping is set while busy"
        );
        let fired = timers.fire(Instant::now(), PING, IDLE, true);
        assert_eq!(
            fired,
            Fired {
                ping: false,
                due: Some(Due::Expired)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_in_no_room_is_closed_at_the_join_deadline_unless_it_joined() {
        let join = Duration::from_secs(10);
        let start = Instant::now();
        let mut late = Timers::new(start, PING, start + IDLE * 10, None, Some(start + join));
        let mut joined = Timers::new(start, PING, start + IDLE * 10, None, Some(start + join));
        joined.joined();
        assert_eq!(
            late.next(IDLE, true),
            start + join,
            "the join deadline comes first"
        );
        assert_eq!(joined.next(IDLE, true), start + PING);
        advance(join).await;
        assert_eq!(
            late.fire(Instant::now(), PING, IDLE, true).due,
            Some(Due::NoJoin)
        );
        assert_eq!(joined.fire(Instant::now(), PING, IDLE, true).due, None);
        // A join still waiting on the store holds the session: it is not cut short.
        let mut busy = Timers::new(start, PING, start + IDLE * 10, None, Some(start));
        assert_eq!(busy.fire(Instant::now(), PING, IDLE, false).due, None);
    }

    #[test]
    fn a_refresh_never_comes_sooner_than_half_the_remaining_life() {
        let hour = Duration::from_secs(3600);
        assert_eq!(refresh_wait(hour, Duration::ZERO), None, "refresh off");
        assert_eq!(
            refresh_wait(hour, Duration::from_secs(300)),
            Some(Duration::from_secs(3300))
        );
        assert_eq!(
            refresh_wait(hour, Duration::from_secs(7200)),
            Some(Duration::from_secs(1800)),
            "a lead longer than the token's life"
        );
        assert_eq!(refresh_wait(Duration::ZERO, hour), Some(Duration::ZERO));
    }
}
