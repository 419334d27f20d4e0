//! Time, as the engine sees it: the [`Clock`] trait, its [`Instant`]s and
//! the [`TimeAnchor`]s that carry a journal across a restart.
//!
//! The implementations live in `upsvisor-core`: `SystemClock` (real time,
//! one timer thread, no async runtime) and `SimClock` (simulated time that
//! jumps to the next deadline). A vendor with its own timer implements
//! [`Clock`] directly.

use std::fmt;
use std::future::Future;
use std::ops::{Add, Sub};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;

/// A point on a [`Clock`]'s monotonic time line, in milliseconds since the
/// clock's origin. Serialises as that number (feature `serde`).
///
/// A `SystemClock`'s origin is the Unix epoch as read at process start:
/// its instants look like Unix times in milliseconds but never step with
/// the wall clock. Instants of another process's clock are brought onto
/// this one's line only through a journal (see [`TimeAnchor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Instant(u64);

#[cfg(feature = "serde")]
thread_local! {
    /// Milliseconds added to every [`Instant`] deserialised on this thread
    /// inside [`rebased`].
    static REBASE: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Instant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let ms = <u64 as serde::Deserialize>::deserialize(d)?;
        let by = REBASE.with(|r| r.get());
        Ok(Instant(ms.saturating_add_signed(by)))
    }
}

/// Runs `f` (a deserialisation of journaled state) with every [`Instant`]
/// it reads moved by `by_ms`.
///
/// Why here and not field by field: a journal written by an earlier process
/// holds instants on that process's time line, spread over dozens of fields
/// in the sequencer and the power policies. Moving them where they are read
/// back means no field, including one added later, can be forgotten (a
/// forgotten field is exactly the restart stall of issue 16).
#[cfg(feature = "serde")]
#[doc(hidden)]
pub fn rebased<T>(by_ms: i64, f: impl FnOnce() -> T) -> T {
    struct Reset(i64);
    impl Drop for Reset {
        fn drop(&mut self) {
            REBASE.with(|r| r.set(self.0));
        }
    }
    let _reset = Reset(REBASE.with(|r| r.replace(by_ms)));
    f()
}

/// One instant of a clock, read together with the time outside the
/// process at the same moment: what lets a journal written by one process
/// be read by the next on the right time line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TimeAnchor {
    /// The clock's instant.
    pub instant: Instant,
    /// Wall-clock time (UTC), milliseconds since the Unix epoch, if known.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub unix_ms: Option<u64>,
    /// Time since the machine booted, if known.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub boot: Option<BootTime>,
}

/// Time since boot, from the kernel: Linux `/proc/sys/kernel/random/boot_id`
/// and the first field of `/proc/uptime` (`CLOCK_BOOTTIME`, which counts
/// suspend and never steps with NTP; see proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BootTime {
    /// The kernel's boot id (a new one every boot).
    pub boot_id: String,
    /// Milliseconds since that boot.
    pub since_boot_ms: u64,
}

/// How the time between two [`TimeAnchor`]s was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum TimeBasis {
    /// Same boot: the kernel's boot clock, immune to wall-clock steps.
    Boot,
    /// Different boot (or no boot clock): the wall clock.
    Wall,
    /// Nothing trustworthy: taken as no time at all (see [`TimeAnchor::elapsed_to`]).
    Unknown,
}

/// Wall-clock readings before this (2020-01-01T00:00:00Z) are not
/// believed: a small board whose RTC was reset boots in 1970 until NTP
/// answers.
const PLAUSIBLE_UNIX_MS: u64 = 1_577_836_800_000;

impl TimeAnchor {
    /// The time from `self` (saved earlier) to `later`, how it was
    /// measured, and a warning when it could not be trusted.
    ///
    /// Rules, most trusted first: the same boot id means the boot clock
    /// decides; otherwise both wall-clock readings must be plausible (after
    /// 2020) and in order. A wall clock that went backwards (an NTP step, an
    /// RTC reset) or an implausible one gives zero: deadlines then count
    /// from the restart, later rather than sooner, and the runtime budget
    /// from fresh UPS readings still bounds them.
    pub fn elapsed_to(&self, later: &TimeAnchor) -> (Duration, TimeBasis, Option<String>) {
        if let (Some(a), Some(b)) = (&self.boot, &later.boot) {
            if a.boot_id == b.boot_id && b.since_boot_ms >= a.since_boot_ms {
                return (
                    Duration::from_millis(b.since_boot_ms - a.since_boot_ms),
                    TimeBasis::Boot,
                    None,
                );
            }
        }
        match (self.unix_ms, later.unix_ms) {
            (Some(a), Some(b)) if a < PLAUSIBLE_UNIX_MS || b < PLAUSIBLE_UNIX_MS => (
                Duration::ZERO,
                TimeBasis::Unknown,
                Some(format!(
                    "wall clock not plausible (saved {a} ms, now {b} ms since the Unix epoch): time while stopped taken as zero"
                )),
            ),
            (Some(a), Some(b)) if b < a => (
                Duration::ZERO,
                TimeBasis::Unknown,
                Some(format!(
                    "wall clock went back {} ms across the restart: time while stopped taken as zero",
                    a - b
                )),
            ),
            (Some(a), Some(b)) => (Duration::from_millis(b - a), TimeBasis::Wall, None),
            _ => (
                Duration::ZERO,
                TimeBasis::Unknown,
                Some("no wall clock or boot clock: time while stopped taken as zero".into()),
            ),
        }
    }

    /// Milliseconds to add to an instant on `self`'s time line to put it on
    /// `later`'s, and the measurement (see [`TimeAnchor::elapsed_to`]).
    pub fn shift_to(&self, later: &TimeAnchor) -> (i64, TimeBasis, Option<String>) {
        let (gap, basis, warn) = self.elapsed_to(later);
        let gap = i64::try_from(gap.as_millis()).unwrap_or(i64::MAX);
        let old = i64::try_from(self.instant.0).unwrap_or(i64::MAX);
        let new = i64::try_from(later.instant.0).unwrap_or(i64::MAX);
        (new.saturating_sub(old.saturating_add(gap)), basis, warn)
    }
}

impl Instant {
    /// The clock's origin.
    pub const ZERO: Instant = Instant(0);

    /// An instant `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms)
    }

    /// Milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Time since `earlier`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(ms))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_since(earlier)
    }
}

impl fmt::Display for Instant {
    /// `T+hh:mm:ss.mmm` from the origin, or, for an instant on the Unix
    /// time line (a `SystemClock`'s), the UTC date and time (RFC 3339).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= PLAUSIBLE_UNIX_MS {
            return f.write_str(&rfc3339_utc(self.0));
        }
        let s = self.0 / 1000;
        write!(
            f,
            "T+{:02}:{:02}:{:02}.{:03}",
            s / 3600,
            (s / 60) % 60,
            s % 60,
            self.0 % 1000
        )
    }
}

/// Monotonic time and waiting. Object safe: engines hold `Arc<dyn Clock>`.
#[async_trait]
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Instant;

    /// Completes at or after `deadline`.
    async fn sleep_until(&self, deadline: Instant);

    /// This instant with the time outside the process (wall clock, boot
    /// clock) read at the same moment, for journals that outlive the
    /// process. The default knows neither: a journal resumed from it counts
    /// no time while the controller was stopped.
    ///
    /// Journaled instants are moved onto the next process's time line, so
    /// an implementation whose instants count from process start has no
    /// room for times before it (they are clamped to its origin, and the
    /// engine warns): start instants at the Unix time, as `SystemClock`
    /// does.
    fn anchor(&self) -> TimeAnchor {
        TimeAnchor {
            instant: self.now(),
            unix_ms: None,
            boot: None,
        }
    }

    /// Completes after `d`.
    async fn sleep(&self, d: Duration) {
        let at = self.now() + d;
        self.sleep_until(at).await
    }
}

/// The deadline passed before the work finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// Runs `fut` until `deadline` on `clock`; `Err(Elapsed)` if the deadline
/// came first (the future is dropped, which cancels it).
pub async fn with_deadline<F: Future>(
    clock: &dyn Clock,
    deadline: Instant,
    fut: F,
) -> Result<F::Output, Elapsed> {
    let mut fut = pin!(fut);
    let mut sleep = clock.sleep_until(deadline);
    // The work is polled first: an answer that is ready when the deadline
    // also is counts as in time.
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        sleep.as_mut().poll(cx).map(|()| Err(Elapsed))
    })
    .await
}

/// `ms` since the Unix epoch as `YYYY-MM-DDThh:mm:ss.mmmZ`.
///
/// Own code rather than chrono/humantime/time: those would be a dependency
/// of the crate vendors link for one Display impl (issue 18 counts that
/// tree). The date is the inverse of days-from-civil in the proleptic
/// Gregorian calendar (H. Hinnant, "chrono-Compatible Low-Level Date
/// Algorithms").
#[doc(hidden)]
pub fn rfc3339_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod anchor_tests {
    use super::*;

    fn anchor(instant: u64, unix: Option<u64>, boot: Option<(&str, u64)>) -> TimeAnchor {
        TimeAnchor {
            instant: Instant::from_millis(instant),
            unix_ms: unix,
            boot: boot.map(|(id, ms)| BootTime {
                boot_id: id.into(),
                since_boot_ms: ms,
            }),
        }
    }

    const T: u64 = 1_800_000_000_000;

    #[test]
    fn same_boot_trusts_the_boot_clock_over_a_stepped_wall_clock() {
        // Old process: instant 7 days in; saved at boot+100 s. The wall clock
        // was then stepped back an hour by NTP; the new process starts 3 s
        // after the save at instant 2 s of its own line.
        let week = 7 * 86_400_000;
        let old = anchor(week, Some(T), Some(("b1", 100_000)));
        let new = anchor(2_000, Some(T - 3_600_000), Some(("b1", 103_000)));
        let (gap, basis, warn) = old.elapsed_to(&new);
        assert_eq!(
            (gap, basis, warn),
            (Duration::from_secs(3), TimeBasis::Boot, None)
        );
        let (by, ..) = old.shift_to(&new);
        // The saved moment maps to 3 s before the new process's now
        // (here before its origin, so it saturates at zero).
        assert_eq!(
            Instant::from_millis(week)
                .as_millis()
                .saturating_add_signed(by),
            0
        );
        assert_eq!(by, 2_000 - 3_000 - week as i64);
    }

    #[test]
    fn another_boot_uses_the_wall_clock_and_distrusts_steps_back_and_1970() {
        let old = anchor(500, Some(T), Some(("b1", 100_000)));
        let later = anchor(9_000_000, Some(T + 60_000), Some(("b2", 5_000)));
        assert_eq!(old.elapsed_to(&later).0, Duration::from_secs(60));
        assert_eq!(old.elapsed_to(&later).1, TimeBasis::Wall);
        let back = anchor(9_000_000, Some(T - 60_000), Some(("b2", 5_000)));
        let (gap, basis, warn) = old.elapsed_to(&back);
        assert_eq!((gap, basis), (Duration::ZERO, TimeBasis::Unknown));
        assert!(warn.unwrap().contains("went back"));
        // A board whose RTC was reset boots in 1970.
        let rtc = anchor(9_000_000, Some(5_000), None);
        let (gap, basis, warn) = old.elapsed_to(&rtc);
        assert_eq!((gap, basis), (Duration::ZERO, TimeBasis::Unknown));
        assert!(warn.unwrap().contains("not plausible"));
        // Unknown: the saved moment becomes now (nothing counted as passed).
        assert_eq!(old.shift_to(&rtc).0, 9_000_000 - 500);
        let none = anchor(1_000, None, None);
        assert_eq!(old.elapsed_to(&none).1, TimeBasis::Unknown);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn rebased_moves_every_instant_read_inside_it_and_only_there() {
        #[derive(serde::Deserialize)]
        struct S {
            a: Instant,
            b: Option<Instant>,
            c: Vec<Instant>,
        }
        let doc = r#"{"a":1000,"b":2000,"c":[3000,4000]}"#;
        let s: S = rebased(-500, || serde_json::from_str(doc).unwrap());
        assert_eq!(
            (
                s.a.as_millis(),
                s.b.unwrap().as_millis(),
                s.c[1].as_millis()
            ),
            (500, 1500, 3500)
        );
        let s: S = serde_json::from_str(doc).unwrap();
        assert_eq!(s.a.as_millis(), 1000, "outside `rebased` nothing moves");
        // Below the origin saturates instead of wrapping.
        let s: S = rebased(-5000, || serde_json::from_str(doc).unwrap());
        assert_eq!(s.a.as_millis(), 0);
    }

    #[test]
    fn unix_line_instants_display_as_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            Instant::from_millis(1_795_985_107_123).to_string(),
            "2026-11-29T20:45:07.123Z"
        );
        assert_eq!(Instant::from_millis(61_500).to_string(), "T+00:01:01.500");
    }
}
