//! The two [`Clock`]s that ship with the engine: [`SystemClock`] (real
//! time, one small timer thread shared by the process, works under any
//! executor or under `futures::executor::block_on`) and [`SimClock`]
//! (simulated time that jumps straight to the next deadline, so an
//! hour-long outage runs in milliseconds and every run is the same).
//!
//! The trait and its time types are in `upsvisor-traits` and re-exported
//! here.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use async_trait::async_trait;

#[cfg(feature = "journal")]
pub(crate) use upsvisor_traits::internal::rebased;
pub use upsvisor_traits::{
    BootTime, Clock, Elapsed, Instant, TimeAnchor, TimeBasis, with_deadline,
};

// ---------------------------------------------------------------- system

/// Real monotonic time. Waiting is served by one timer thread per process,
/// started on first use; no async runtime is involved.
///
/// Its instants start at the wall-clock time of [`SystemClock::new`] (Unix
/// epoch, milliseconds) and then follow the monotonic clock: readable as
/// dates, never stepped by NTP, and a restarted process's instants continue
/// roughly where the last one's ended, whatever either's uptime.
#[derive(Debug, Clone)]
pub struct SystemClock {
    origin: std::time::Instant,
    origin_unix_ms: u64,
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        SystemClock {
            origin: std::time::Instant::now(),
            origin_unix_ms: unix_now_ms().unwrap_or(0),
        }
    }

    fn to_std(&self, at: Instant) -> std::time::Instant {
        self.origin + Duration::from_millis(at.as_millis().saturating_sub(self.origin_unix_ms))
    }
}

fn unix_now_ms() -> Option<u64> {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    u64::try_from(d.as_millis()).ok()
}

/// The boot clock (see [`BootTime`]); `None` where `/proc` has no answer.
fn boot_time() -> Option<BootTime> {
    // The boot id is fixed for the life of the process: read once (the
    // journal takes an anchor at every write).
    static BOOT_ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let id = BOOT_ID
        .get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .clone()?;
    let up = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs = up.split_whitespace().next()?;
    let (whole, frac) = secs.split_once('.').unwrap_or((secs, "0"));
    let frac: String = frac.chars().chain("000".chars()).take(3).collect();
    let ms = whole
        .parse::<u64>()
        .ok()?
        .checked_mul(1000)?
        .checked_add(frac.parse::<u64>().ok()?)?;
    Some(BootTime {
        boot_id: id,
        since_boot_ms: ms,
    })
}

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> Instant {
        let ms = self.origin.elapsed().as_millis();
        Instant::from_millis(
            self.origin_unix_ms
                .saturating_add(u64::try_from(ms).unwrap_or(u64::MAX)),
        )
    }

    fn anchor(&self) -> TimeAnchor {
        TimeAnchor {
            instant: self.now(),
            unix_ms: unix_now_ms(),
            boot: boot_time(),
        }
    }

    async fn sleep_until(&self, deadline: Instant) {
        TimerSleep {
            at: self.to_std(deadline),
            id: None,
        }
        .await
    }
}

struct TimerState {
    // One entry per sleep, registered at its first poll. A dropped sleep
    // takes its waker out at once; its heap entry is skipped when due, and
    // the heap is compacted when such entries outnumber live ones (a
    // deadline raced against a call that won leaves one behind, and a
    // daemon makes thousands of those per deadline window).
    heap: BinaryHeap<Reverse<(std::time::Instant, u64)>>,
    wakers: BTreeMap<u64, Waker>,
    next_id: u64,
}

struct Timer {
    state: Mutex<TimerState>,
    cv: Condvar,
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    TIMER.get_or_init(|| {
        let t: &'static Timer = Box::leak(Box::new(Timer {
            state: Mutex::new(TimerState {
                heap: BinaryHeap::new(),
                wakers: BTreeMap::new(),
                next_id: 0,
            }),
            cv: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("upsvisor-timer".into())
            .spawn(move || timer_loop(t))
            .map(|_| ())
            .unwrap_or_else(|e| {
                // Without the thread no sleep ever completes; make that loud,
                // on stderr when no logger is compiled in.
                #[cfg(feature = "tracing")]
                tracing::error!(error = %e, "cannot start the timer thread");
                #[cfg(not(feature = "tracing"))]
                eprintln!("upsvisor: cannot start the timer thread: {e}");
            });
        t
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn timer_loop(t: &'static Timer) {
    let mut st = lock(&t.state);
    loop {
        let now = std::time::Instant::now();
        while let Some(Reverse((at, id))) = st.heap.peek().copied() {
            if at > now {
                break;
            }
            st.heap.pop();
            if let Some(w) = st.wakers.remove(&id) {
                w.wake();
            }
        }
        st = match st.heap.peek().copied() {
            Some(Reverse((at, _))) => {
                let wait = at.saturating_duration_since(now);
                t.cv.wait_timeout(st, wait)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0)
            }
            None => t.cv.wait(st).unwrap_or_else(|p| p.into_inner()),
        };
    }
}

struct TimerSleep {
    at: std::time::Instant,
    /// Its registration with the timer thread, from the first pending poll.
    id: Option<u64>,
}

impl Future for TimerSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let me = self.get_mut();
        if std::time::Instant::now() >= me.at {
            if let Some(id) = me.id.take() {
                lock(&timer().state).wakers.remove(&id);
            }
            return Poll::Ready(());
        }
        let t = timer();
        let mut st = lock(&t.state);
        // Polled again (a select re-polls every branch at each wake-up):
        // keep the one registration, with the newest waker.
        if let Some(w) = me.id.and_then(|id| st.wakers.get_mut(&id)) {
            if !w.will_wake(cx.waker()) {
                *w = cx.waker().clone();
            }
            return Poll::Pending;
        }
        let id = st.next_id;
        st.next_id += 1;
        let earliest = st.heap.peek().map(|Reverse((at, _))| *at);
        st.heap.push(Reverse((me.at, id)));
        st.wakers.insert(id, cx.waker().clone());
        me.id = Some(id);
        drop(st);
        if earliest.is_none_or(|e| me.at < e) {
            t.cv.notify_one();
        }
        Poll::Pending
    }
}

impl Drop for TimerSleep {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let mut st = lock(&timer().state);
        st.wakers.remove(&id);
        if st.heap.len() > 64 && st.heap.len() > 2 * st.wakers.len() {
            let TimerState { heap, wakers, .. } = &mut *st;
            heap.retain(|Reverse((_, id))| wakers.contains_key(id));
        }
    }
}

// ------------------------------------------------------------- simulated

/// Simulated time. Nothing moves it but [`SimClock::advance`], which jumps
/// to the earliest pending deadline; [`SimClock::block_on`] runs a future
/// and advances whenever the future has nothing else to do.
///
/// Everything driven by a `SimClock` must wait only on that clock (and on
/// channels fed by futures it also runs); waiting on real I/O stalls the
/// simulation, which `block_on` reports.
#[derive(Clone, Default)]
pub struct SimClock {
    inner: Arc<Mutex<SimState>>,
}

struct SimState {
    now: Instant,
    timers: BTreeMap<(Instant, u64), Waker>,
    next_id: u64,
    /// Wall-clock time at instant zero, when the simulation has one.
    unix_at_zero: Option<u64>,
    /// Boot id and boot-clock reading at instant zero.
    boot_at_zero: Option<(String, u64)>,
}

/// A simulation's wall clock at instant zero unless told otherwise:
/// 2026-01-01T00:00:00Z. Two engines on one `SimClock` (a restart in a
/// test) then measure the time between them exactly.
const SIM_UNIX_AT_ZERO: u64 = 1_767_225_600_000;

impl Default for SimState {
    fn default() -> Self {
        SimState {
            now: Instant::ZERO,
            timers: BTreeMap::new(),
            next_id: 0,
            unix_at_zero: Some(SIM_UNIX_AT_ZERO),
            boot_at_zero: None,
        }
    }
}

impl fmt::Debug for SimClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = lock(&self.inner);
        f.debug_struct("SimClock")
            .field("now", &st.now)
            .field("pending", &st.timers.len())
            .finish()
    }
}

/// [`SimClock::try_block_on`] found the future waiting with no pending
/// deadline: it can never finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stalled {
    /// Simulated time when it stalled.
    pub at: Instant,
}

impl SimClock {
    /// A simulated clock at its origin.
    pub fn new() -> Self {
        Self::default()
    }

    /// A simulated clock already at `at` (a process started at another
    /// point of a time line).
    pub fn starting_at(at: Instant) -> Self {
        let c = Self::default();
        lock(&c.inner).now = at;
        c
    }

    /// Gives the simulation a wall clock reading `unix_ms` at instant zero
    /// (default 2026-01-01T00:00:00Z; `None`: no wall clock) and, with `boot`, a boot clock (`(boot id, ms since boot at instant
    /// zero)`), for [`Clock::anchor`]. Restart tests use them to put two
    /// simulated processes on one machine's time.
    pub fn with_outside_time(self, unix_ms: Option<u64>, boot: Option<(String, u64)>) -> Self {
        {
            let mut st = lock(&self.inner);
            st.unix_at_zero = unix_ms;
            st.boot_at_zero = boot;
        }
        self
    }

    /// Moves time to the earliest pending deadline and wakes its sleepers.
    /// Returns false when nothing is pending.
    pub fn advance(&self) -> bool {
        let mut st = lock(&self.inner);
        let Some(&(at, _)) = st.timers.keys().next() else {
            return false;
        };
        st.now = st.now.max(at);
        let now = st.now;
        let later = st
            .timers
            .split_off(&(Instant::from_millis(now.as_millis().saturating_add(1)), 0));
        let due = std::mem::replace(&mut st.timers, later);
        drop(st);
        for w in due.into_values() {
            w.wake();
        }
        true
    }

    /// Sets the time forward to `at` (never backward), waking sleepers due.
    pub fn advance_to(&self, at: Instant) {
        let mut st = lock(&self.inner);
        st.now = st.now.max(at);
        let now = st.now;
        let later = st
            .timers
            .split_off(&(Instant::from_millis(now.as_millis().saturating_add(1)), 0));
        let due = std::mem::replace(&mut st.timers, later);
        drop(st);
        for w in due.into_values() {
            w.wake();
        }
    }

    /// Runs `fut` to completion on this thread, jumping time forward
    /// whenever it is idle.
    ///
    /// # Panics
    /// If the future stalls (see [`SimClock::try_block_on`]).
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        match self.try_block_on(fut) {
            Ok(v) => v,
            Err(s) => panic!(
                "simulation stalled at {}: the future waits on something other than the simulated clock",
                s.at
            ),
        }
    }

    /// Like [`SimClock::block_on`], but reports a stall instead of panicking.
    pub fn try_block_on<F: Future>(&self, fut: F) -> Result<F::Output, Stalled> {
        struct Flag(AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Arc::new(Flag(AtomicBool::new(true)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(fut);
        loop {
            flag.0.store(false, Ordering::SeqCst);
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return Ok(v);
            }
            if flag.0.load(Ordering::SeqCst) {
                continue;
            }
            if !self.advance() {
                return Err(Stalled { at: self.now() });
            }
        }
    }

    /// Number of sleepers waiting.
    pub fn pending(&self) -> usize {
        lock(&self.inner).timers.len()
    }
}

struct SimSleep {
    clock: SimClock,
    at: Instant,
    key: Option<(Instant, u64)>,
}

impl Future for SimSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let clock = self.clock.clone();
        let mut st = lock(&clock.inner);
        if st.now >= self.at {
            if let Some(k) = self.key.take() {
                st.timers.remove(&k);
            }
            return Poll::Ready(());
        }
        let key = match self.key {
            Some(k) => k,
            None => {
                let k = (self.at, st.next_id);
                st.next_id += 1;
                self.key = Some(k);
                k
            }
        };
        st.timers.insert(key, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for SimSleep {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            lock(&self.clock.inner).timers.remove(&k);
        }
    }
}

#[async_trait]
impl Clock for SimClock {
    fn now(&self) -> Instant {
        lock(&self.inner).now
    }

    fn anchor(&self) -> TimeAnchor {
        let st = lock(&self.inner);
        TimeAnchor {
            instant: st.now,
            unix_ms: st
                .unix_at_zero
                .map(|u| u.saturating_add(st.now.as_millis())),
            boot: st.boot_at_zero.as_ref().map(|(id, ms)| BootTime {
                boot_id: id.clone(),
                since_boot_ms: ms.saturating_add(st.now.as_millis()),
            }),
        }
    }

    async fn sleep_until(&self, deadline: Instant) {
        SimSleep {
            clock: self.clone(),
            at: deadline,
            key: None,
        }
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17: a sleep polled again keeps one registration, and a
    /// dropped one takes its waker out (before, every poll added an entry
    /// and a cancelled deadline left its waker until it fell due).
    #[test]
    fn a_sleep_registers_once_and_unregisters_when_dropped() {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut s = TimerSleep {
            at: std::time::Instant::now() + Duration::from_secs(3600),
            id: None,
        };
        assert!(Pin::new(&mut s).poll(&mut cx).is_pending());
        let id = s.id.expect("registered");
        for _ in 0..100 {
            assert!(Pin::new(&mut s).poll(&mut cx).is_pending());
        }
        assert_eq!(s.id, Some(id), "one registration");
        assert!(lock(&timer().state).wakers.contains_key(&id));
        drop(s);
        assert!(!lock(&timer().state).wakers.contains_key(&id));
        // Due: ready, and nothing left behind.
        let mut due = TimerSleep {
            at: std::time::Instant::now() + Duration::from_millis(20),
            id: None,
        };
        futures_util::FutureExt::now_or_never(&mut due);
        let id = due.id.expect("registered");
        std::thread::sleep(Duration::from_millis(40));
        assert!(Pin::new(&mut due).poll(&mut cx).is_ready());
        assert!(!lock(&timer().state).wakers.contains_key(&id));
    }

    #[test]
    fn sim_clock_jumps_to_deadlines_in_order() {
        let clock = SimClock::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let c = clock.clone();
        let l = log.clone();
        clock.block_on(async move {
            let a = async {
                c.sleep(Duration::from_secs(3600)).await;
                lock(&l).push(("hour", c.now()));
            };
            let b = async {
                c.sleep(Duration::from_millis(5)).await;
                lock(&l).push(("5ms", c.now()));
            };
            futures_util::future::join(a, b).await;
        });
        assert_eq!(
            *lock(&log),
            vec![
                ("5ms", Instant::from_millis(5)),
                ("hour", Instant::from_millis(3_600_000))
            ]
        );
    }

    #[test]
    fn deadline_cancels_the_slow_side() {
        let clock = SimClock::new();
        let c = clock.clone();
        let r = clock.block_on(async move {
            with_deadline(
                &c,
                Instant::from_millis(100),
                c.sleep(Duration::from_secs(10)),
            )
            .await
        });
        assert_eq!(r, Err(Elapsed));
        assert_eq!(clock.now(), Instant::from_millis(100));
        assert_eq!(clock.pending(), 0, "the dropped sleeper must deregister");
    }

    #[test]
    fn stall_is_reported() {
        let clock = SimClock::new();
        let r = clock.try_block_on(futures_util::future::pending::<()>());
        assert_eq!(r, Err(Stalled { at: Instant::ZERO }));
    }

    #[test]
    fn system_clock_sleeps_without_a_runtime() {
        let clock = SystemClock::new();
        let t0 = std::time::Instant::now();
        futures::executor::block_on(clock.sleep(Duration::from_millis(30)));
        assert!(t0.elapsed() >= Duration::from_millis(30));
        assert!(clock.now() >= Instant::from_millis(30));
    }

    #[test]
    fn instant_display() {
        assert_eq!(
            Instant::from_millis(3_723_004).to_string(),
            "T+01:02:03.004"
        );
    }

    #[test]
    fn system_clock_instants_are_on_the_unix_line() {
        let c = SystemClock::new();
        let a = c.anchor();
        let unix = a.unix_ms.unwrap();
        assert!(
            a.instant.as_millis().abs_diff(unix) < 5_000,
            "{} vs {unix}",
            a.instant.as_millis()
        );
    }
}
