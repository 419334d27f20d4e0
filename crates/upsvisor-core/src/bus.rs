//! Publishing snapshots and events to whoever displays or forwards them.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_core::Stream;
use upsvisor_traits::internal::{Receiver, Sender, TrySendError, bounded};

use crate::merge::Event;
use crate::model::VmTable;

/// One published cycle: the new table and what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Update {
    /// The table after the cycle.
    pub table: Arc<VmTable>,
    /// What changed since the previous table.
    pub events: Vec<Event>,
}

/// A fan-out of messages (by default [`Update`]s). A subscriber that falls behind by more than its
/// buffer misses updates rather than holding memory; it can see how many
/// through [`Subscription::missed`]. Each update carries the whole table, so
/// a lagging subscriber still converges on the current state.
pub struct Bus<T = Update> {
    subs: Arc<Mutex<Vec<Sub<T>>>>,
}

type Sub<T> = (Sender<Arc<T>>, Arc<AtomicU64>);

impl<T> Clone for Bus<T> {
    fn clone(&self) -> Self {
        Bus {
            subs: self.subs.clone(),
        }
    }
}

impl<T> Default for Bus<T> {
    fn default() -> Self {
        Bus {
            subs: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl<T> std::fmt::Debug for Bus<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.subs.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("Bus").field("subscribers", &n).finish()
    }
}

impl<T> Bus<T> {
    /// A bus with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new subscriber with room for `buffer` unread updates.
    pub fn subscribe(&self, buffer: usize) -> Subscription<T> {
        let (tx, rx) = bounded(buffer.max(1));
        let missed = Arc::new(AtomicU64::new(0));
        self.subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((tx, missed.clone()));
        Subscription { rx, missed }
    }

    /// Sends `update` to every subscriber; drops closed ones.
    pub fn publish(&self, update: T) {
        let update = Arc::new(update);
        let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        subs.retain_mut(|(tx, missed)| match tx.try_send(update.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                missed.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Closed(_)) => false,
        });
    }
}

/// A stream of messages from a [`Bus`].
#[derive(Debug)]
pub struct Subscription<T = Update> {
    rx: Receiver<Arc<T>>,
    missed: Arc<AtomicU64>,
}

impl<T> Subscription<T> {
    /// Updates dropped because this subscriber was full.
    pub fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }

    /// The next update already waiting, without blocking.
    pub fn try_next(&mut self) -> Option<Arc<T>> {
        self.rx.try_recv().ok().flatten()
    }
}

impl<T> Stream for Subscription<T> {
    type Item = Arc<T>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_subscriber_misses_instead_of_growing() {
        let bus: Bus<u32> = Bus::new();
        let mut fast = bus.subscribe(100);
        let mut slow = bus.subscribe(1);
        for i in 0..10 {
            bus.publish(i);
        }
        assert_eq!(
            (0..10)
                .map(|_| *fast.try_next().unwrap())
                .collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        // The first update fills the slow one's buffer; the rest are missed.
        let got: Vec<u32> = std::iter::from_fn(|| slow.try_next().map(|v| *v)).collect();
        assert_eq!(got, [0]);
        assert_eq!(slow.missed(), 9);
        drop(fast);
        bus.publish(99);
        assert_eq!(
            bus.subs.lock().unwrap().len(),
            1,
            "closed subscriber is dropped"
        );
    }
}
