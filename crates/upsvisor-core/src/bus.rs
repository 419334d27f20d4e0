//! Publishing snapshots and events to whoever displays or forwards them.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::Stream;
use futures::channel::mpsc;
use serde::Serialize;

use crate::merge::Event;
use crate::model::VmTable;

/// One published cycle: the new table and what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Update {
    /// The table after the cycle.
    pub table: Arc<VmTable>,
    /// What changed since the previous table.
    pub events: Vec<Event>,
}

/// A fan-out of [`Update`]s. A subscriber that falls behind by more than its
/// buffer misses updates rather than holding memory; it can see how many
/// through [`Subscription::missed`]. Each update carries the whole table, so
/// a lagging subscriber still converges on the current state.
#[derive(Clone, Default)]
pub struct Bus {
    subs: Arc<Mutex<Vec<(mpsc::Sender<Arc<Update>>, Arc<AtomicU64>)>>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.subs.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("Bus").field("subscribers", &n).finish()
    }
}

impl Bus {
    /// A bus with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new subscriber with room for `buffer` unread updates.
    pub fn subscribe(&self, buffer: usize) -> Subscription {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let missed = Arc::new(AtomicU64::new(0));
        self.subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((tx, missed.clone()));
        Subscription { rx, missed }
    }

    /// Sends `update` to every subscriber; drops closed ones.
    pub fn publish(&self, update: Update) {
        let update = Arc::new(update);
        let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        subs.retain_mut(|(tx, missed)| match tx.try_send(update.clone()) {
            Ok(()) => true,
            Err(e) if e.is_full() => {
                missed.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        });
    }
}

/// A stream of [`Update`]s.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Arc<Update>>,
    missed: Arc<AtomicU64>,
}

impl Subscription {
    /// Updates dropped because this subscriber was full.
    pub fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }

    /// The next update already waiting, without blocking.
    pub fn try_next(&mut self) -> Option<Arc<Update>> {
        self.rx.try_recv().ok()
    }
}

impl Stream for Subscription {
    type Item = Arc<Update>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}
