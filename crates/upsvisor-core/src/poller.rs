//! The poller: every cycle, one future per host, all at once; then merge.
//!
//! No task is spawned: a cycle is one future that drives every host's
//! inventory concurrently (`buffer_unordered`, at most
//! [`PollerConfig::max_concurrency`] at a time), each under its own deadline
//! that starts when that host's poll starts. The table is merged and
//! published only when every host has answered or hit its deadline.
//!
//! Logging contract: `info` for host state changes (unreachable,
//! recovered) and migrations; `debug` for each cycle's summary; `trace`
//! for each host's result. Credentials are never logged.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use crate::Error;
use crate::HostTransport;
use crate::bus::{Bus, Subscription, Update};
use crate::clock::{Clock, with_deadline};
use crate::logging;
use crate::merge::{HostOutcome, merge};
use crate::model::{HostId, VmTable};

/// Poller settings: `Default`, then the setters for what differs.
///
/// ```
/// use std::time::Duration;
/// let mut c = upsvisor_core::PollerConfig::default();
/// c.period(Duration::from_secs(30)).max_concurrency(16);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PollerConfig {
    /// Cycle period on mains (the design's `t`).
    pub(crate) period: Duration,
    /// Cycle period while on battery.
    pub(crate) on_battery_period: Duration,
    /// Deadline for one host's whole inventory.
    pub(crate) host_deadline: Duration,
    /// Hosts polled at once.
    pub(crate) max_concurrency: usize,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            period: Duration::from_secs(60),
            on_battery_period: Duration::from_secs(10),
            host_deadline: Duration::from_secs(30),
            max_concurrency: 256,
        }
    }
}

impl PollerConfig {
    /// Sets the cycle period on mains.
    ///
    /// Cycle period on mains (the design's `t`).
    ///
    /// Default: `Duration::from_secs(60)`.
    pub fn period(&mut self, d: Duration) -> &mut Self {
        self.period = d;
        self
    }
    /// Sets the cycle period on battery.
    ///
    /// Cycle period while on battery.
    ///
    /// Default: `Duration::from_secs(10)`.
    pub fn on_battery_period(&mut self, d: Duration) -> &mut Self {
        self.on_battery_period = d;
        self
    }
    /// Sets the per-host deadline.
    ///
    /// Deadline for one host's whole inventory.
    ///
    /// Default: `Duration::from_secs(30)`.
    pub fn host_deadline(&mut self, d: Duration) -> &mut Self {
        self.host_deadline = d;
        self
    }
    /// Sets how many hosts are polled at once (at least 1).
    ///
    /// Default: 256.
    pub fn max_concurrency(&mut self, n: usize) -> &mut Self {
        self.max_concurrency = n.max(1);
        self
    }
}

/// Polls a set of hosts and keeps the VM table.
pub struct Poller {
    clock: Arc<dyn Clock>,
    config: PollerConfig,
    hosts: Vec<(HostId, Arc<dyn HostTransport>)>,
    table: Arc<VmTable>,
    bus: Bus,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("config", &self.config)
            .field(
                "hosts",
                &self.hosts.iter().map(|(h, _)| h).collect::<Vec<_>>(),
            )
            .field("cycle", &self.table.cycle)
            .finish()
    }
}

impl Poller {
    /// A poller with no hosts.
    pub fn new(clock: Arc<dyn Clock>, config: PollerConfig) -> Self {
        Poller {
            clock,
            config,
            hosts: Vec::new(),
            table: Arc::new(VmTable::default()),
            bus: Bus::new(),
        }
    }

    /// Adds a host (replacing one with the same id).
    pub fn add_host(&mut self, id: HostId, transport: Arc<dyn HostTransport>) {
        self.hosts.retain(|(h, _)| h != &id);
        let mut t = (*self.table).clone();
        t.hosts
            .entry(id.clone())
            .or_insert_with(crate::model::HostRecord::unknown);
        self.table = Arc::new(t);
        self.hosts.push((id, transport));
    }

    /// The transport of a host.
    pub fn transport(&self, id: &HostId) -> Option<&Arc<dyn HostTransport>> {
        self.hosts.iter().find(|(h, _)| h == id).map(|(_, t)| t)
    }

    /// The hosts polled.
    pub fn host_ids(&self) -> impl Iterator<Item = &HostId> {
        self.hosts.iter().map(|(h, _)| h)
    }

    /// The latest table.
    pub fn table(&self) -> &Arc<VmTable> {
        &self.table
    }

    /// The settings.
    pub fn config(&self) -> &PollerConfig {
        &self.config
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Subscribes to published updates.
    pub fn subscribe(&self, buffer: usize) -> Subscription {
        self.bus.subscribe(buffer)
    }

    /// The bus updates are published on.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Runs one cycle: polls every host, merges, publishes, returns the update.
    pub async fn poll_once(&mut self) -> Arc<Update> {
        let collect = collect_outcomes(&*self.clock, &self.config, &self.hosts);
        #[cfg(feature = "tracing")]
        let (span, started) = (
            tracing::debug_span!("cycle", n = self.table.cycle + 1, hosts = self.hosts.len()),
            self.clock.now(),
        );
        #[cfg(feature = "tracing")]
        let collect = tracing::Instrument::instrument(collect, span.clone());
        let outcomes = collect.await;
        let now = self.clock.now();
        let (table, events) = merge(&self.table, outcomes, now);
        #[cfg(feature = "tracing")]
        let _g = span.enter();
        #[cfg(feature = "tracing")]
        log_events(&events);
        logging::debug!(
            vms = table.vm_count(),
            events = events.len(),
            took_ms = (now - started).as_millis() as u64,
            "cycle done"
        );
        self.table = Arc::new(table);
        let update = Update {
            table: self.table.clone(),
            events,
        };
        self.bus.publish(update.clone());
        Arc::new(update)
    }
}

#[cfg(feature = "tracing")]
fn log_events(events: &[crate::merge::Event]) {
    use crate::merge::Event;
    for e in events {
        match e {
            Event::HostUnreachable { host, kind, error } => {
                logging::info!(%host, ?kind, %error, "host unreachable; keeping its last VMs as stale")
            }
            Event::HostRecovered { host, .. } => logging::info!(%host, "host recovered"),
            Event::VmMigrated { vm, name, from, to } => {
                logging::info!(%vm, %name, %from, %to, "VM migrated")
            }
            _ => logging::trace!(?e, "change"),
        }
    }
}

async fn collect_outcomes(
    clock: &dyn Clock,
    config: &PollerConfig,
    hosts: &[(HostId, Arc<dyn HostTransport>)],
) -> Vec<(HostId, HostOutcome)> {
    futures_util::stream::iter(hosts.iter().map(|(id, t)| {
        let poll = async move {
            let deadline = clock.now() + config.host_deadline;
            let r = with_deadline(clock, deadline, t.inventory()).await;
            let outcome = match r {
                Ok(Ok(inv)) => HostOutcome::Answered(inv),
                Ok(Err(e)) => HostOutcome::Failed(e),
                Err(_) => HostOutcome::Failed(Error::timeout(
                    format!("inventory of {id}"),
                    config.host_deadline,
                )),
            };
            logging::trace!(ok = matches!(outcome, HostOutcome::Answered(_)), "polled");
            (id.clone(), outcome)
        };
        #[cfg(feature = "tracing")]
        let poll = tracing::Instrument::instrument(poll, tracing::trace_span!("host", host = %id));
        poll
    }))
    .buffer_unordered(config.max_concurrency.max(1))
    .collect()
    .await
}
