//! A bounded queue with one reader that wakes it: the oneshot behind
//! [`spawn_blocking`](crate::spawn_blocking) and, in `upsvisor-core`, the
//! operator's command results and the event bus's subscriptions.
//!
//! Why not `futures-channel`: it is the one crate that kept
//! `upsvisor-core`'s tree above its budget of 12 (docs/design.md,
//! "Dependency budget"), and what the engine needs is small: a sender that
//! never waits (a full queue is the caller's decision: drop and count, as
//! the bus does), one reader, and an end when every sender is gone. A
//! `Mutex` around a `VecDeque` and the reader's `Waker` is all of it.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

struct State<T> {
    queue: VecDeque<T>,
    cap: usize,
    senders: usize,
    receiver: bool,
    waker: Option<Waker>,
}

struct Shared<T>(Mutex<State<T>>);

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while the lock is held leaves the queue itself intact.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A queue holding at most `cap` (at least 1) items.
pub fn bounded<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared(Mutex::new(State {
        queue: VecDeque::new(),
        cap: cap.max(1),
        senders: 1,
        receiver: true,
        waker: None,
    })));
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// Why [`Sender::try_send`] did not queue its item (handed back).
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue holds `cap` items.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// The sending side; clones share the queue.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Queues `item` without waiting, and wakes the receiver.
    ///
    /// # Errors
    /// [`TrySendError::Full`] when the queue holds `cap` items,
    /// [`TrySendError::Closed`] when the receiver was dropped.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut s = self.shared.lock();
        if !s.receiver {
            return Err(TrySendError::Closed(item));
        }
        if s.queue.len() >= s.cap {
            return Err(TrySendError::Full(item));
        }
        s.queue.push_back(item);
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.senders -= 1;
        // The last sender gone ends the queue: the reader must hear it.
        let waker = if s.senders == 0 { s.waker.take() } else { None };
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

/// Every sender is gone and nothing is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// The receiving side.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next queued item without waiting: `Ok(None)` while the queue is
    /// empty and a sender remains.
    ///
    /// # Errors
    /// [`Closed`] when it is empty and every sender is gone.
    pub fn try_recv(&mut self) -> Result<Option<T>, Closed> {
        let mut s = self.shared.lock();
        match s.queue.pop_front() {
            Some(item) => Ok(Some(item)),
            None if s.senders == 0 => Err(Closed),
            None => Ok(None),
        }
    }

    /// The next item, `Ready(None)` once every sender is gone and the
    /// queue is drained; `Pending` registers `cx`'s waker.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = self.shared.lock();
        match s.queue.pop_front() {
            Some(item) => Poll::Ready(Some(item)),
            None if s.senders == 0 => Poll::Ready(None),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.receiver = false;
        // Free what nobody will read now, not when the last sender goes.
        let queued = std::mem::take(&mut s.queue);
        drop(s);
        drop(queued);
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn full_closed_and_drained() {
        let (tx, mut rx) = bounded(2);
        assert_eq!(rx.try_recv(), Ok(None));
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        let tx2 = tx.clone();
        drop(tx);
        assert_eq!(rx.try_recv(), Ok(Some(1)));
        drop(tx2);
        // Queued items outlive the senders; then the end.
        assert_eq!(rx.try_recv(), Ok(Some(2)));
        assert_eq!(rx.try_recv(), Err(Closed));
        let (tx, rx) = bounded::<u8>(0);
        drop(rx);
        assert_eq!(tx.try_send(7), Err(TrySendError::Closed(7)));
    }

    #[test]
    fn the_reader_is_woken_by_an_item_and_by_the_last_sender() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let (tx, mut rx) = bounded(1);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Pending);
        tx.try_send("a").unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some("a")));
        assert_eq!(rx.poll_recv(&mut cx), Poll::Pending);
        let tx2 = tx.clone();
        drop(tx);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "one sender remains");
        drop(tx2);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(None));
    }
}
