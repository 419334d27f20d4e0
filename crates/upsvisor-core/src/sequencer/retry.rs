//! The one retry policy. Every failed command's next step in `results.rs`
//! is decided here, from the error's kind and the attempt count, with
//! [`SequencerConfig::retries`] and [`SequencerConfig::retry_backoff`]:
//!
//! | failure | rule |
//! |---|---|
//! | transient ([`Error::is_transient`]: unreachable, timeout, busy) | sent again after `retry_backoff`, up to `retries` attempts |
//! | a VM not found or changing state (`NotFound`, `InvalidState`: moved by DRS or HA, or already starting) | looked up again in a fresh table, up to `retries + 2` attempts (the table has to catch up first) |
//! | a restore power-on failing transiently | sent again with a backoff that doubles per attempt up to 30 s, up to `retries` attempts or, once sent, until `restore_vm_wait` from the first |
//! | anything else | not sent again (what happens instead is the caller's rule: a power-off after a refused guest shutdown, maintenance mode after a refused host shutdown, ...) |
//!
//! What is never sent again whatever the count is also the caller's: a
//! call that ran out its deadline may have been delivered (see
//! `results.rs`).
//!
//! [`Error::is_transient`]: crate::Error::is_transient

use std::time::Duration;

use super::SequencerConfig;
use crate::Instant;

/// The policy, read from the configuration at each result.
pub(super) struct Retry {
    retries: u32,
    backoff: Duration,
    restore_vm_wait: Duration,
}

/// The doubling backoff's ceiling.
const MAX_DOUBLED: Duration = Duration::from_secs(30);

impl Retry {
    pub(super) fn of(cfg: &SequencerConfig) -> Retry {
        Retry {
            retries: cfg.retries,
            backoff: cfg.retry_backoff,
            restore_vm_wait: cfg.restore_vm_wait,
        }
    }

    /// Whether failed attempt number `attempt` (1 for the first) of a
    /// transient failure may be followed by another.
    pub(super) fn may_retry(&self, attempt: u32) -> bool {
        attempt <= self.retries
    }

    /// Whether a VM not found or changing state at attempt `attempt` is
    /// looked up again.
    pub(super) fn may_look_again(&self, attempt: u32) -> bool {
        attempt <= self.retries + 2
    }

    /// Whether a restore power-on that failed transiently at attempt
    /// `attempt`, first sent at `first`, is sent again.
    pub(super) fn may_retry_start(
        &self,
        attempt: u32,
        first: Option<Instant>,
        now: Instant,
    ) -> bool {
        self.may_retry(attempt) || first.is_some_and(|f| now < f + self.restore_vm_wait)
    }

    /// When the next attempt goes.
    pub(super) fn next(&self, now: Instant) -> Instant {
        now + self.backoff
    }

    /// When the next attempt of a restore power-on goes: the backoff
    /// doubled per failed attempt, at most 30 s (a host failing now and
    /// then gets tries spread over the restore wait, not a burst).
    pub(super) fn next_doubled(&self, attempt: u32, now: Instant) -> Instant {
        now + self
            .backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(8))
            .min(MAX_DOUBLED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_backoffs() {
        let mut cfg = SequencerConfig::default();
        cfg.retries(2).retry_backoff(Duration::from_secs(5));
        let r = Retry::of(&cfg);
        assert!(r.may_retry(2) && !r.may_retry(3));
        assert!(r.may_look_again(4) && !r.may_look_again(5));
        let t = Instant::from_millis(1_000_000);
        assert_eq!(r.next(t), t + Duration::from_secs(5));
        assert_eq!(r.next_doubled(1, t), t + Duration::from_secs(5));
        assert_eq!(r.next_doubled(3, t), t + Duration::from_secs(20));
        assert_eq!(r.next_doubled(9, t), t + Duration::from_secs(30));
        // Past the count, within the restore wait from the first try.
        assert!(r.may_retry_start(7, Some(t), t + Duration::from_secs(10)));
        assert!(!r.may_retry_start(7, None, t));
    }
}
