//! The engine: the small async driver around the poller, the power
//! policies and the sequencer.
//!
//! Each turn it reads the power devices (every
//! [`EngineConfig::status_interval`]), polls the hosts when due (at once
//! on a power event or when the sequencer asks, faster while on battery or
//! during an episode), steps the sequencer, journals its state, and runs the
//! commands it produced concurrently, each under its deadline. No task is
//! spawned and no runtime is assumed: it runs under any executor, and under
//! [`crate::SimClock::block_on`] an hour of outage takes milliseconds.
//!
//! Logging contract (feature `tracing`; see [`Engine`]): `warn` for forced
//! host shutdowns, steps forced past a blocking hook, failed commands and
//! failed hooks; `info` for episode start/end, phase changes, every
//! command and every hook; `debug` for power readings.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};

use crate::HostTransport;
use crate::PowerDevice;
use crate::bus::{Bus, Subscription, Update};
use crate::clock::{Clock, Instant, TimeBasis, with_deadline};
#[cfg(feature = "journal")]
use crate::clock::{TimeAnchor, rebased};
use crate::hook::{HookCall, HookRunner};
#[cfg(feature = "journal")]
use crate::journal::Journal;
use crate::logging;
use crate::model::{DeviceId, HostId, Inventory, VmId, VmTable};
use crate::policy::{Policy, PolicyConfig, Verdict, hosts_at_risk};
use crate::poller::{Poller, PollerConfig};
use crate::sequencer::config::SequencerConfig;
use crate::sequencer::plan::Plan;
use crate::sequencer::{AuditEntry, Command, Issued, PowerView, Sequencer};
use crate::{Error, Result};
use upsvisor_traits::internal::{Receiver, Sender, bounded};

/// Engine settings: `Default`, then the setters for what differs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineConfig {
    /// How often power devices are read.
    pub(crate) status_interval: Duration,
    /// Deadline for one power-device read.
    pub(crate) device_deadline: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            status_interval: Duration::from_secs(5),
            device_deadline: Duration::from_secs(10),
        }
    }
}

impl EngineConfig {
    /// Sets how often power devices are read.
    ///
    /// Default: 5 s.
    pub fn status_interval(&mut self, d: Duration) -> &mut Self {
        self.status_interval = d;
        self
    }
    /// Sets the deadline for one power-device read: a device that has not
    /// answered by then is reported as a [`EngineEvent::DeviceError`].
    ///
    /// Default: 10 s.
    pub fn device_deadline(&mut self, d: Duration) -> &mut Self {
        self.device_deadline = d;
        self
    }
}

/// What the engine publishes.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "type"))]
#[non_exhaustive]
pub enum EngineEvent {
    /// A poll cycle finished.
    Table(Arc<Update>),
    /// A device's verdict changed.
    Power {
        /// When it was read.
        at: Instant,
        /// Device.
        device: DeviceId,
        /// New verdict.
        verdict: Verdict,
    },
    /// An audit line.
    Audit(AuditEntry),
    /// A device could not be read (or, for an outlet's device id that no
    /// attached device has, can never be). Published on every failed read:
    /// a failure is an event, never a silent `None`.
    DeviceError {
        /// When.
        at: Instant,
        /// Device.
        device: DeviceId,
        /// What failed.
        error: String,
    },
    /// An operator's command ([`Engine::submit_vm`], [`Engine::submit_host`])
    /// finished.
    Manual {
        /// When it finished.
        at: Instant,
        /// What ran.
        cmd: Command,
        /// Why it failed, if it did.
        error: Option<String>,
    },
    /// What the engine found in its journal when it was attached (published
    /// once, at the first [`Engine::run_until`]), and journal write
    /// failures. Only with the `journal` feature.
    Journal {
        /// When (this process's clock).
        at: Instant,
        /// What was found and done.
        report: JournalReport,
    },
}

/// What `Engine::with_journal` (feature `journal`) did with the journal it
/// found, and how journal writes fare. Never raised without the feature.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "kind"))]
#[non_exhaustive]
pub enum JournalReport {
    /// Journaled state was taken up: every journaled instant moved onto this
    /// process's clock by the time measured between saving and now.
    Resumed {
        /// An episode was in progress and continues.
        episode: bool,
        /// Power-device states taken up (outage timers, last reading).
        devices: usize,
        /// Time between the last save and this start, milliseconds.
        stopped_ms: u64,
        /// How that time was measured.
        basis: TimeBasis,
        /// Why the measurement is not trusted, when it is not (then the
        /// time while stopped counts as zero).
        warning: Option<String>,
    },
    /// Journal writes fail (disk full, read-only, permissions): a restart
    /// now would lose track of the episode. Raised once per distinct error;
    /// protection goes on.
    WriteFailed {
        /// The error.
        error: String,
    },
    /// Journal writes succeed again after [`JournalReport::WriteFailed`].
    WritesResumed,
    /// The journal could not be read or understood. It was moved aside
    /// (kept for inspection) and the engine starts from the current power
    /// state: a critical condition, because an episode in progress may have
    /// been lost, but never one that stops protection.
    SetAside {
        /// Why it could not be used.
        error: String,
        /// Where the unreadable document now is, if it was kept.
        kept_at: Option<String>,
    },
}

/// The journal's document, format 2 (see `crate::journal`).
#[cfg(feature = "journal")]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
struct JournalDocOut<'a> {
    format: u32,
    saved: TimeAnchor,
    sequencer: &'a Sequencer,
    policies: &'a BTreeMap<DeviceId, Policy>,
}

type Done = (u64, Result<()>);

/// Ids of operators' commands start here (the sequencer's count up from 1).
const MANUAL_BASE: u64 = 1 << 62;

/// The result of an operator's command ([`Engine::submit_vm`],
/// [`Engine::submit_host`]), once the engine has run it.
///
/// Poll it with [`ManualResult::try_recv`] from the thread that drives the
/// engine, or await it from another task (it is a `Future`).
#[derive(Debug)]
pub struct ManualResult(Receiver<Result<()>>);

impl ManualResult {
    /// `Ok(None)` while the command runs, `Ok(Some(result))` once it
    /// finished.
    ///
    /// # Errors
    /// [`Canceled`] when the engine was dropped before the command
    /// finished (the daemon rebuilds its engine when a host is
    /// registered): whether it was delivered is unknown.
    pub fn try_recv(&mut self) -> std::result::Result<Option<Result<()>>, Canceled> {
        self.0.try_recv().map_err(|_| Canceled)
    }
}

impl std::future::Future for ManualResult {
    type Output = std::result::Result<Result<()>, Canceled>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Self::Output> {
        self.0.poll_recv(cx).map(|r| r.ok_or(Canceled))
    }
}

/// The engine was dropped before an operator's command finished (see
/// [`ManualResult`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canceled;

impl std::fmt::Display for Canceled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the engine was dropped before the command finished")
    }
}

impl std::error::Error for Canceled {}

/// How often the power state is journaled while an outage lasts.
const JOURNAL_POWER_EVERY: Duration = Duration::from_secs(5);

/// The engine. Build it with [`Engine::new`], add hosts and devices, then
/// [`Engine::run_until`].
///
/// **Without a journal (feature `journal`, `Engine::with_journal`) the
/// episode in progress is lost on restart**: see the crate docs.
///
/// Logging contract, with the `tracing` feature: `error` when the journal
/// cannot be written or read, `warn` for forced host shutdowns, failed
/// commands and device reads, `info` for episode start/end, phase changes
/// and every command, `debug` for power readings. Without the feature
/// nothing is logged; every failure is still published as an
/// [`EngineEvent`].
pub struct Engine {
    clock: Arc<dyn Clock>,
    poller: Poller,
    devices: Vec<(DeviceId, Arc<dyn PowerDevice>)>,
    policies: BTreeMap<DeviceId, Policy>,
    verdicts: BTreeMap<DeviceId, Verdict>,
    /// The last read error published per device (published again only when
    /// it changes, or after a good read).
    device_errors: BTreeMap<DeviceId, String>,
    policy_cfg: PolicyConfig,
    inventory: Inventory,
    seq: Sequencer,
    #[cfg(feature = "journal")]
    journal: Option<Box<dyn Journal>>,
    /// Journaled policy state waiting for its device to be attached
    /// (always empty without the `journal` feature).
    resumed_policies: BTreeMap<DeviceId, Policy>,
    /// The power policies changed in a way worth journaling.
    power_dirty: bool,
    power_saved_at: Option<Instant>,
    /// The last journal write error, while writes fail.
    #[cfg(feature = "journal")]
    journal_failing: Option<String>,
    /// Events raised before anyone could subscribe (journal findings).
    pending_events: Vec<EngineEvent>,
    /// Operators' commands in flight: id → (command, where the result goes).
    manual: BTreeMap<u64, (Command, Sender<Result<()>>)>,
    manual_next: u64,
    cfg: EngineConfig,
    events: Bus<EngineEvent>,
    next_status: Instant,
    next_poll: Instant,
    last_view: PowerView,
    inflight: FuturesUnordered<BoxFuture<'static, Done>>,
    hooks: Option<Arc<dyn HookRunner>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("poller", &self.poller)
            .field(
                "devices",
                &self.devices.iter().map(|(d, _)| d).collect::<Vec<_>>(),
            )
            .field("episode", &self.seq.status())
            .finish()
    }
}

impl Engine {
    /// An engine for `inventory` (validated here). Transports and devices
    /// are attached with [`Engine::add_host`] and [`Engine::add_device`].
    pub fn new(
        clock: Arc<dyn Clock>,
        inventory: Inventory,
        poller: PollerConfig,
        policy: PolicyConfig,
        mut sequencer: SequencerConfig,
    ) -> Result<Self> {
        inventory.validate()?;
        sequencer.validate_hooks(&inventory)?;
        sequencer.observe_lag = sequencer.observe_lag.max(poller.on_battery_period);
        let now = clock.now();
        Ok(Engine {
            poller: Poller::new(clock.clone(), poller),
            clock,
            devices: Vec::new(),
            policies: BTreeMap::new(),
            verdicts: BTreeMap::new(),
            device_errors: BTreeMap::new(),
            policy_cfg: policy,
            seq: Sequencer::new(sequencer, inventory.clone()),
            inventory,
            #[cfg(feature = "journal")]
            journal: None,
            resumed_policies: BTreeMap::new(),
            power_dirty: false,
            power_saved_at: None,
            pending_events: Vec::new(),
            #[cfg(feature = "journal")]
            journal_failing: None,
            manual: BTreeMap::new(),
            manual_next: MANUAL_BASE,
            cfg: EngineConfig::default(),
            events: Bus::new(),
            next_status: now,
            next_poll: now,
            last_view: PowerView::default(),
            inflight: FuturesUnordered::new(),
            hooks: None,
        })
    }

    /// Sets the engine settings.
    pub fn with_config(mut self, cfg: EngineConfig) -> Self {
        self.cfg = cfg;
        self
    }

    /// Registers what runs the configured hooks (see [`crate::Hook`]).
    pub fn with_hook_runner(mut self, runner: Arc<dyn HookRunner>) -> Self {
        self.hooks = Some(runner);
        self
    }

    /// Attaches a journal. If it holds state (the controller restarted),
    /// that state is resumed under this engine's configuration and
    /// inventory (see [`Sequencer::resume_with`]): an in-flight power-device
    /// command is taken as delivered, an in-flight VM or host command is
    /// sent again (its outcome is unknown), and the power policies
    /// keep their outage timers and last reading (so a restart while on
    /// battery with the UPS unreachable still applies the lost-contact
    /// rule). Every journaled instant is moved onto this process's clock
    /// (see [`TimeAnchor::shift_to`]).
    ///
    /// A journal that cannot be read or understood never stops the engine:
    /// it is set aside ([`Journal::set_aside`]), logged at error level, and
    /// reported as [`JournalReport::SetAside`]; the engine starts from the
    /// current power state.
    ///
    /// Only with the `journal` feature: without it nothing survives a
    /// restart.
    ///
    /// # Errors
    /// None today; the `Result` is kept for journals that may refuse to
    /// attach.
    #[cfg(feature = "journal")]
    pub fn with_journal(mut self, mut journal: Box<dyn Journal>) -> Result<Self> {
        let now_anchor = self.clock.anchor();
        let at = now_anchor.instant;
        match journal.load() {
            Ok(None) => {}
            Ok(Some(doc)) => match self.take_up(&doc, &now_anchor) {
                Ok(report) => {
                    logging::info!(?report, "journal taken up");
                    #[cfg(feature = "tracing")]
                    if let JournalReport::Resumed {
                        warning: Some(w), ..
                    } = &report
                    {
                        tracing::warn!(warning = %w, "time while stopped is not known");
                    }
                    self.pending_events
                        .push(EngineEvent::Journal { at, report });
                }
                Err(error) => self.set_aside(&mut *journal, at, error),
            },
            Err(e) => self.set_aside(&mut *journal, at, format!("cannot read it: {e}")),
        }
        self.journal = Some(journal);
        Ok(self)
    }

    /// Reads a journal document and takes up its state.
    #[cfg(feature = "journal")]
    fn take_up(
        &mut self,
        doc: &str,
        now_anchor: &TimeAnchor,
    ) -> std::result::Result<JournalReport, String> {
        let value: serde_json::Value =
            serde_json::from_str(doc).map_err(|e| format!("not JSON: {e}"))?;
        let saved_instant = value
            .get("saved")
            .and_then(|v| v.get("instant"))
            .and_then(serde_json::Value::as_i64);
        let (seq_value, policies_value, shift) = match value.get("format") {
            None => (value, None, (0, TimeBasis::Unknown, None, 0)),
            Some(f) if f.as_u64() == Some(2) => {
                let saved: TimeAnchor = value
                    .get("saved")
                    .cloned()
                    .ok_or("format 2 without `saved`")
                    .and_then(|v| serde_json::from_value(v).map_err(|_| "bad `saved`"))?;
                let (gap, _, _) = saved.elapsed_to(now_anchor);
                let (by, basis, warn) = saved.shift_to(now_anchor);
                let gap = u64::try_from(gap.as_millis()).unwrap_or(u64::MAX);
                let seq = value
                    .get("sequencer")
                    .cloned()
                    .ok_or("format 2 without `sequencer`")?;
                (seq, value.get("policies").cloned(), (by, basis, warn, gap))
            }
            Some(f) => return Err(format!("unknown journal format {f}")),
        };
        let (by, basis, mut warning, stopped_ms) = shift;
        // A clock that counts from process start has no room below its
        // origin: journaled times older than this process are clamped to
        // it, and an outage's age or a debounce cannot outlive a restart.
        if let Some(saved) = saved_instant {
            if saved.saturating_add(by) < 0 {
                let w = "this clock's instants start too close to zero to hold the journaled times: times before this process are clamped to its start (start the clock at the Unix time, as SystemClock does)";
                warning = Some(match warning {
                    Some(old) => format!("{old}; {w}"),
                    None => w.to_owned(),
                });
            }
        }
        let (seq, policies) = rebased(by, || {
            let seq: std::result::Result<Sequencer, _> = serde_json::from_value(seq_value);
            let pol: std::result::Result<BTreeMap<DeviceId, Policy>, _> = policies_value
                .map(serde_json::from_value)
                .unwrap_or_else(|| Ok(BTreeMap::new()));
            (seq, pol)
        });
        let mut seq = seq.map_err(|e| format!("unreadable sequencer state: {e}"))?;
        let policies = policies.map_err(|e| format!("unreadable power state: {e}"))?;
        // The journal holds episode state; the configuration in force is
        // this engine's (an edit made while the controller was down
        // applies now).
        let now = now_anchor.instant;
        seq.resume_with(self.seq.config().clone(), self.inventory.clone(), now);
        let episode = seq.status().is_some();
        self.seq = seq;
        self.sync_capabilities();
        self.next_poll = now;
        let devices = policies.len();
        for (id, mut p) in policies {
            p.resume_with(self.policy_cfg.clone());
            match self.policies.get_mut(&id) {
                Some(slot) => *slot = p,
                None => {
                    self.resumed_policies.insert(id, p);
                }
            }
        }
        Ok(JournalReport::Resumed {
            episode,
            devices,
            stopped_ms,
            basis,
            warning,
        })
    }

    #[cfg(feature = "journal")]
    fn set_aside(&mut self, journal: &mut dyn Journal, at: Instant, error: String) {
        let (kept_at, error) = match journal.set_aside() {
            Ok(k) => (k, error),
            Err(e) => {
                logging::error!(error = %e, "cannot set the unreadable journal aside; the next save replaces it");
                let error =
                    format!("{error}; cannot set it aside ({e}): the next save replaces it");
                (None, error)
            }
        };
        logging::error!(%error, kept_at = ?kept_at, "journal unreadable: set aside, starting from the current power state");
        self.pending_events.push(EngineEvent::Journal {
            at,
            report: JournalReport::SetAside { error, kept_at },
        });
    }

    /// Takes over `old`'s power state and episode, for an engine rebuilt in
    /// the same process (the daemon rebuilds it when a host is registered
    /// or removed): the outage timers, last readings and verdicts of every
    /// device both have, and the episode, resumed under this engine's
    /// configuration and inventory as after a restart (commands `old` had
    /// in flight are taken as delivered). Without it a registration during
    /// an outage restarted the on-battery timers. Both engines must run on
    /// the same clock.
    pub fn adopt(&mut self, old: &Engine) {
        for (id, p) in &old.policies {
            if let Some(slot) = self.policies.get_mut(id) {
                let mut p = p.clone();
                p.resume_with(self.policy_cfg.clone());
                *slot = p;
                if let Some(v) = old.verdicts.get(id) {
                    self.verdicts.insert(id.clone(), v.clone());
                }
            }
        }
        let mut seq = old.seq.clone();
        let now = self.clock.now();
        seq.resume_with(self.seq.config().clone(), self.inventory.clone(), now);
        self.seq = seq;
        self.sync_capabilities();
        self.next_poll = now;
        self.power_dirty = true;
    }

    /// Attaches a host's transport. The host must be in the inventory.
    pub fn add_host(&mut self, id: &HostId, transport: Arc<dyn HostTransport>) -> Result<()> {
        if self.inventory.host(id).is_none() {
            return Err(Error::config(format!("hosts.{id}"), "not in the inventory"));
        }
        self.seq
            .set_capabilities(id.clone(), transport.capabilities());
        self.poller.add_host(id.clone(), transport);
        Ok(())
    }

    /// Gives a sequencer taken from a journal or an older engine what this
    /// engine's transports can do (never journaled: a transport can change
    /// across a restart).
    fn sync_capabilities(&mut self) {
        let caps: Vec<(HostId, crate::Capabilities)> = self
            .poller
            .host_ids()
            .filter_map(|h| Some((h.clone(), self.poller.transport(h)?.capabilities())))
            .collect();
        for (h, c) in caps {
            self.seq.set_capabilities(h, c);
        }
    }

    /// Checks that every outlet's device is attached, every host has a
    /// transport, and configured hooks have a runner. Call it after the last [`Engine::add_device`] /
    /// [`Engine::add_host`]: a typo in a device id would otherwise leave
    /// that feed without a verdict forever.
    ///
    /// # Errors
    /// A [`crate::ErrorKind::Config`] error naming every outlet whose device
    /// is missing, or every host without a transport, or the first hook
    /// when no [`HookRunner`] is registered.
    pub fn validate(&self) -> Result<()> {
        if self.hooks.is_none() {
            if let Some(h) = self.seq.config().hooks.first() {
                return Err(Error::config(
                    format!("hooks.{}", h.name),
                    "hooks are configured but no hook runner is registered (Engine::with_hook_runner)",
                ));
            }
        }
        let missing = self.missing_devices();
        if !missing.is_empty() {
            return Err(Error::config(
                "outlets",
                format!(
                    "no device attached with id {}: check the outlets' device ids",
                    missing
                        .iter()
                        .map(|d| format!("{d:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let hosts: Vec<String> = self
            .inventory
            .hosts
            .iter()
            .filter(|h| self.poller.transport(&h.id).is_none())
            .map(|h| h.id.to_string())
            .collect();
        if !hosts.is_empty() {
            return Err(Error::config(
                "hosts",
                format!("no transport attached for {}", hosts.join(", ")),
            ));
        }
        Ok(())
    }

    fn missing_devices(&self) -> BTreeSet<DeviceId> {
        self.inventory
            .outlets
            .iter()
            .map(|o| o.device.clone())
            .filter(|d| !self.devices.iter().any(|(id, _)| id == d))
            .collect()
    }

    /// Attaches a power device.
    pub fn add_device(&mut self, id: DeviceId, device: Arc<dyn PowerDevice>) {
        let policy = self
            .resumed_policies
            .remove(&id)
            .unwrap_or_else(|| Policy::new(self.policy_cfg.clone(), self.clock.now()));
        self.policies.insert(id.clone(), policy);
        self.devices.retain(|(d, _)| d != &id);
        self.devices.push((id, device));
    }

    /// Queues an operator's power operation on a VM of the table (by its
    /// table key, which may be host-scoped). It runs inside the engine, on
    /// the host the VM is on now, under the same per-call deadline as the
    /// sequencer's commands, while polling and power reads go on; the
    /// receiver gets its result (also published as [`EngineEvent::Manual`]).
    /// Drive the engine ([`Engine::run_until`]) for it to run.
    ///
    /// # Errors
    /// `NotFound` when the VM is not in the table or its host has no
    /// transport; `InvalidState` when the controller is disarmed
    /// ([`SequencerConfig::armed`]), or when an episode is in progress and the
    /// command contradicts it (starting anything while it stops VMs or
    /// waits for mains; stopping anything while it restores), with the
    /// episode's phase in the message.
    pub fn submit_vm(&mut self, vm: &VmId, op: crate::VmOp) -> Result<ManualResult> {
        use crate::VmOp;
        let (host, name) = self
            .table()
            .locate(vm)
            .map(|(h, v)| (h.clone(), v.name.clone()))
            .ok_or_else(|| Error::not_found(format!("VM {vm} is not in the VM table")))?;
        let starts = matches!(op, VmOp::PowerOn | VmOp::Reset | VmOp::RebootGuest);
        self.refuse_if_contradicting(starts, &format!("{op} {name}"))?;
        Ok(self.submit(Command::Vm {
            host,
            vm: vm.clone(),
            name,
            op,
        }))
    }

    /// Queues an operator's power operation on a host (see
    /// [`Engine::submit_vm`] for how it runs).
    ///
    /// # Errors
    /// `NotFound` for a host without a transport; `InvalidState` as for
    /// [`Engine::submit_vm`] (exiting maintenance and reboot count as
    /// starting).
    pub fn submit_host(&mut self, host: &HostId, op: crate::HostOp) -> Result<ManualResult> {
        use crate::HostOp;
        if self.poller.transport(host).is_none() {
            return Err(Error::not_found(format!("no host {host}")));
        }
        let starts = matches!(op, HostOp::ExitMaintenance | HostOp::Reboot);
        self.refuse_if_contradicting(starts, &format!("{op} host {host}"))?;
        Ok(self.submit(Command::Host {
            host: host.clone(),
            op,
        }))
    }

    /// Aborts the episode in progress on an operator's explicit request (see
    /// [`Sequencer::abort`]): nothing more is sent for it, and no new
    /// episode starts until power is no longer at risk. Journaled.
    ///
    /// # Errors
    /// `InvalidState` when no episode is in progress.
    pub fn abort_episode(&mut self, reason: &str) -> Result<()> {
        let now = self.clock.now();
        if !self.seq.abort(now, reason) {
            return Err(Error::invalid_state("no episode is in progress"));
        }
        logging::warn!(%reason, "episode aborted by the operator");
        self.save();
        self.flush_audit();
        Ok(())
    }

    /// Starts an operator's live test of VM group `group`: the group's
    /// VMs are stopped as an outage would stop them, then started again;
    /// nothing else is touched (see [`Sequencer::start_test`]). Runs
    /// inside the engine like any episode: journaled, audited, with its
    /// hooks. Returns the episode's id.
    ///
    /// # Errors
    /// `InvalidState` when disarmed, during an episode, or unless mains is
    /// on line and stable (so before the first power reading too);
    /// `Config` for an unknown group.
    pub fn start_test(&mut self, group: &str) -> Result<u64> {
        let now = self.clock.now();
        let view = self.view();
        let table = self.poller.table().clone();
        let id = self.seq.start_test(now, &table, &view, group)?;
        logging::warn!(%group, episode = id, "live test started by the operator");
        self.save();
        self.flush_audit();
        Ok(id)
    }

    /// Starts an operator's live test of one host now: its VMs stop, the
    /// host shuts down, then it is powered on out of band and its VMs are
    /// started again (see [`Sequencer::start_host_test`]). Returns the
    /// episode's id.
    ///
    /// # Errors
    /// As [`Engine::start_test`]; `Config` for an unknown host, one without
    /// an out-of-band power-on, or with host shutdown off; `InvalidState`
    /// for the controller's own host or a host that did not answer the
    /// latest poll.
    pub fn start_host_test(&mut self, host: &HostId) -> Result<u64> {
        let now = self.clock.now();
        let view = self.view();
        let table = self.poller.table().clone();
        let id = self.seq.start_host_test(now, &table, &view, host)?;
        logging::warn!(%host, episode = id, "live host test started by the operator");
        self.save();
        self.flush_audit();
        Ok(id)
    }

    fn refuse_if_contradicting(&self, starts: bool, what: &str) -> Result<()> {
        if !self.seq.config().armed {
            return Err(Error::invalid_state(format!(
                "{what} refused: this controller is disarmed and sends no power command (arm it to act)"
            )));
        }
        let Some(restoring) = self.seq.episode_restoring() else {
            return Ok(());
        };
        if starts == restoring {
            return Ok(());
        }
        let phase = self
            .seq
            .status()
            .map(|s| format!("episode {} is {}", s.id, s.phase))
            .unwrap_or_default();
        Err(Error::invalid_state(format!(
            "{what} refused: {phase}, and this would {} it (abort the episode first to act by hand)",
            if restoring {
                "undo what it restores"
            } else {
                "start what it stops"
            }
        )))
    }

    fn submit(&mut self, cmd: Command) -> ManualResult {
        let (tx, rx) = bounded(1);
        let id = self.manual_next;
        self.manual_next += 1;
        logging::info!(?cmd, "operator's command");
        self.manual.insert(id, (cmd.clone(), tx));
        self.launch(Issued { id, cmd });
        ManualResult(rx)
    }

    /// Subscribes to tables, power verdicts and audit lines.
    pub fn subscribe(&self, buffer: usize) -> Subscription<EngineEvent> {
        self.events.subscribe(buffer)
    }

    /// The latest VM table.
    pub fn table(&self) -> &Arc<VmTable> {
        self.poller.table()
    }

    /// The latest verdict per device.
    pub fn verdicts(&self) -> &BTreeMap<DeviceId, Verdict> {
        &self.verdicts
    }

    /// The sequencer (episode status, measured times).
    pub fn sequencer(&self) -> &Sequencer {
        &self.seq
    }

    /// The dry-run plan if every fed host lost power now.
    pub fn plan(&self) -> Plan {
        let scope = self
            .inventory
            .hosts
            .iter()
            .filter(|h| self.inventory.feeds_of(&h.id).next().is_some())
            .map(|h| h.id.clone())
            .collect();
        self.seq.plan(self.table(), &scope)
    }

    /// Runs until `end` on the engine's clock. Commands still in flight
    /// stay in flight and finish in the next call (or, if the engine is
    /// dropped, are resumed from the journal as delivered).
    pub async fn run_until(&mut self, end: Instant) {
        for ev in std::mem::take(&mut self.pending_events) {
            self.events.publish(ev);
        }
        loop {
            let now = self.clock.now();
            if now >= end {
                return;
            }
            let mut done = Vec::new();
            if now >= self.next_status {
                self.read_power(now, &mut done).await;
            }
            let view = self.view();
            let event = (view.on_battery && !self.last_view.on_battery)
                || (!view.at_risk.is_empty() && self.last_view.at_risk != view.at_risk);
            self.last_view = view.clone();
            if event || self.seq.take_poll_wanted() {
                self.next_poll = self.clock.now();
            }
            if self.clock.now() >= self.next_poll {
                let started = self.clock.now();
                let update = drive(self.poller.poll_once(), &mut self.inflight, &mut done).await;
                self.events.publish(EngineEvent::Table(update));
                let fast = view.on_battery || self.seq.busy();
                let cfg = self.poller.config();
                self.next_poll = started
                    + if fast {
                        cfg.on_battery_period
                    } else {
                        cfg.period
                    };
            }
            for (id, r) in done {
                self.complete(id, r);
            }
            let now = self.clock.now();
            let table = self.poller.table().clone();
            let cmds = self.seq.step(now, &table, &view);
            self.save();
            self.flush_audit();
            for c in cmds {
                self.launch(c);
            }
            if self.seq.take_poll_wanted() {
                self.next_poll = now;
                continue;
            }
            // The step just handled everything due now; only later wake-ups count.
            let seq_wake = self.seq.next_wakeup().filter(|w| *w > now);
            let wake = [
                Some(self.next_status),
                Some(self.next_poll),
                seq_wake,
                Some(end),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end)
            .max(now);
            let clock = self.clock.clone();
            let mut sleep = pin!(clock.sleep_until(wake));
            let inflight = &mut self.inflight;
            // Biased: a command's result is taken before the timer, so a
            // result that arrives with the wake-up is never left for the
            // next turn (an empty set is skipped: it has nothing to give).
            let first = std::future::poll_fn(|cx| {
                if !inflight.is_empty() {
                    if let Poll::Ready(Some(r)) = inflight.poll_next_unpin(cx) {
                        return Poll::Ready(Some(r));
                    }
                }
                sleep.as_mut().poll(cx).map(|()| None)
            })
            .await;
            if let Some(r) = first {
                // A result may unblock the next step at once. Every
                // other result already in is taken with it, so that a
                // burst of answers costs one step and one journal
                // write, not one each (a step walks the episode's VMs:
                // per answer that is quadratic in the estate).
                self.complete(r.0, r.1);
                while let Some(Some(r)) = self.inflight.next().now_or_never() {
                    self.complete(r.0, r.1);
                }
                self.save();
                self.flush_audit();
            }
        }
    }

    fn view(&self) -> PowerView {
        // An outlet whose device was never attached (a typo) has no verdict
        // and never will: it is reported as a device error on every read
        // and never counts as a failed feed. Missing information does not
        // start a shutdown.
        let missing = self.missing_devices();
        let at_risk = if missing.is_empty() {
            hosts_at_risk(&self.inventory, &self.verdicts)
        } else {
            let mut inv = self.inventory.clone();
            inv.outlets.retain(|o| !missing.contains(&o.device));
            hosts_at_risk(&inv, &self.verdicts)
        };
        let unhealthy = self
            .verdicts
            .iter()
            .filter(|(_, v)| !v.healthy())
            .map(|(d, _)| d.clone())
            .collect();
        let reason = self
            .verdicts
            .iter()
            .filter_map(|(d, v)| v.trigger.as_ref().map(|t| format!("{d}: {t:?}")))
            .collect::<Vec<_>>()
            .join("; ");
        PowerView {
            at_risk,
            unhealthy,
            on_battery: self.verdicts.values().any(|v| v.on_battery),
            mains_stable: !self.verdicts.is_empty()
                && self.verdicts.values().all(|v| v.mains_stable),
            mains_back: !self.verdicts.is_empty() && self.verdicts.values().all(|v| v.mains_back),
            // Only readings the battery budget can trust: fresh, without a
            // plausibility warning (minutes reported as seconds...).
            runtime_s: self
                .verdicts
                .values()
                .filter_map(|v| v.last.as_ref())
                .filter(|s| s.on_battery() && !s.stale && s.warnings.is_empty())
                .filter_map(|s| s.runtime_s)
                .min(),
            low_battery: self
                .verdicts
                .values()
                .filter_map(|v| v.last.as_ref())
                .any(|s| s.on_battery() && !s.stale && (s.low_battery || s.fsd)),
            reason: if reason.is_empty() {
                self.verdicts
                    .iter()
                    .filter(|(_, v)| v.on_battery)
                    .map(|(d, _)| format!("{d}: on battery"))
                    .collect::<Vec<_>>()
                    .join("; ")
            } else {
                reason
            },
        }
    }

    async fn read_power(&mut self, now: Instant, done: &mut Vec<Done>) {
        let clock = self.clock.clone();
        let deadline = now + self.cfg.device_deadline;
        let reads = futures_util::future::join_all(self.devices.iter().map(|(id, d)| {
            let clock = clock.clone();
            let d = d.clone();
            let id = id.clone();
            async move {
                let r = match with_deadline(&*clock, deadline, d.status()).await {
                    Ok(Ok(s)) => Ok(s),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer within the device deadline".to_string()),
                };
                (id, r)
            }
        }));
        let results = drive(reads, &mut self.inflight, done).await;
        let now = self.clock.now();
        for id in self.missing_devices() {
            let error = "no device with this id is attached (an outlet names it)".to_string();
            self.device_failed(now, &id, error);
        }
        for (id, r) in results {
            let status = match r {
                Ok(s) => {
                    self.device_errors.remove(&id);
                    Some(s)
                }
                Err(error) => {
                    self.device_failed(now, &id, error);
                    None
                }
            };
            let Some(p) = self.policies.get_mut(&id) else {
                continue;
            };
            let v = p.observe(now, status.as_ref());
            logging::debug!(device = %id, on_battery = v.on_battery, trigger = ?v.trigger, "power");
            let changed = self.verdicts.get(&id).is_none_or(|old| {
                old.on_battery != v.on_battery
                    || old.trigger != v.trigger
                    || old.mains_stable != v.mains_stable
                    || old.alerts != v.alerts
            });
            // Journaled on every change, and every few seconds while an
            // outage lasts (when the last reading and "heard at" matter to
            // the lost-contact rule after a restart); not on every quiet
            // on-line read, which would wear a small board's flash.
            let due = self
                .power_saved_at
                .is_none_or(|t| now - t >= JOURNAL_POWER_EVERY);
            if changed || (p.in_outage() && due) {
                self.power_dirty = true;
            }
            if changed {
                self.events.publish(EngineEvent::Power {
                    at: now,
                    device: id.clone(),
                    verdict: v.clone(),
                });
            }
            self.verdicts.insert(id, v);
        }
        self.next_status = now + self.cfg.status_interval;
    }

    /// Logs and publishes a device failure when it is new (first, changed,
    /// or after a good read), so a dead device does not flood the history.
    fn device_failed(&mut self, now: Instant, id: &DeviceId, error: String) {
        if self.device_errors.get(id) == Some(&error) {
            return;
        }
        logging::warn!(device = %id, %error, "device read failed");
        self.device_errors.insert(id.clone(), error.clone());
        self.events.publish(EngineEvent::DeviceError {
            at: now,
            device: id.clone(),
            error,
        });
    }

    fn launch(&mut self, issued: Issued) {
        let Issued { id, cmd } = issued;
        let clock = self.clock.clone();
        let deadline = clock.now() + self.seq.config().call_deadline;
        let after = self.seq.config().call_deadline;
        let fut: BoxFuture<'static, Result<()>> = match &cmd {
            Command::Vm { host, vm, op, .. } => match self.poller.transport(host).cloned() {
                Some(t) => {
                    // The table's key may be host-scoped; the platform
                    // wants its own id (`VmInfo::platform_id`).
                    let vm = match self
                        .poller
                        .table()
                        .hosts
                        .get(host)
                        .and_then(|r| r.vms.get(vm))
                    {
                        Some(info) => info.platform_id(host),
                        None => vm.local_on(host).map_or_else(|| vm.clone(), VmId::from),
                    };
                    let op = *op;
                    async move { t.vm_power(&vm, op).await }.boxed()
                }
                None => futures_util::future::ready(Err(Error::not_found(format!("host {host}"))))
                    .boxed(),
            },
            Command::Host { host, op } => match self.poller.transport(host).cloned() {
                Some(t) => {
                    let op = *op;
                    async move { t.host_power(op).await }.boxed()
                }
                None => futures_util::future::ready(Err(Error::not_found(format!("host {host}"))))
                    .boxed(),
            },
            Command::Detach { device } | Command::Attach { device } => {
                match self.devices.iter().find(|(d, _)| d == device) {
                    Some((_, d)) => {
                        let d = d.clone();
                        if matches!(cmd, Command::Detach { .. }) {
                            async move { d.detach().await }.boxed()
                        } else {
                            async move { d.attach().await }.boxed()
                        }
                    }
                    None => futures_util::future::ready(Err(Error::not_found(format!(
                        "power device {device}"
                    ))))
                    .boxed(),
                }
            }
            Command::Hook {
                hook,
                point,
                episode,
                deadline,
            } => match self.hooks.clone() {
                Some(runner) => {
                    let call = HookCall::new(hook.clone(), point.clone(), *episode, *deadline);
                    async move { runner.run(&call).await }.boxed()
                }
                None => futures_util::future::ready(Err(Error::config(
                    format!("hooks.{hook}"),
                    "no hook runner is registered",
                )))
                .boxed(),
            },
            Command::Device { device, cmd } => match self.devices.iter().find(|(d, _)| d == device)
            {
                Some((_, d)) => {
                    let (d, cmd) = (d.clone(), cmd.clone());
                    async move { d.command(cmd).await }.boxed()
                }
                None => futures_util::future::ready(Err(Error::not_found(format!(
                    "power device {device}"
                ))))
                .boxed(),
            },
        };
        // A hook gets its own deadline, not the call deadline.
        let (deadline, after) = match &cmd {
            Command::Hook { deadline: d, .. } => (clock.now() + *d, *d),
            _ => (deadline, after),
        };
        let what = match &cmd {
            Command::Hook { hook, .. } => format!("hook {hook}"),
            other => format!("{other:?}"),
        };
        self.inflight.push(
            async move {
                let r = match with_deadline(&*clock, deadline, fut).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::timeout(what, after)),
                };
                (id, r)
            }
            .boxed(),
        );
    }

    fn complete(&mut self, id: u64, r: Result<()>) {
        let now = self.clock.now();
        if let Some((cmd, tx)) = self.manual.remove(&id) {
            let error = r.as_ref().err().map(ToString::to_string);
            #[cfg(feature = "tracing")]
            match &error {
                Some(e) => tracing::warn!(?cmd, error = %e, "operator's command failed"),
                None => tracing::info!(?cmd, "operator's command done"),
            }
            self.events.publish(EngineEvent::Manual {
                at: now,
                cmd,
                error,
            });
            // The caller may have stopped waiting: nothing to do then.
            let _ = tx.try_send(r);
            return;
        }
        self.seq.complete(now, id, r);
    }

    /// Journals the episode and power state if they changed (a no-op
    /// without the `journal` feature, which only clears the dirty marks).
    fn save(&mut self) {
        let seq_dirty = self.seq.take_dirty();
        if !seq_dirty && !self.power_dirty {
            return;
        }
        self.power_dirty = false;
        #[cfg(feature = "journal")]
        if self.journal.is_some() {
            // The anchor (wall and boot clocks) is read only for a journal.
            let saved = self.clock.anchor();
            self.power_saved_at = Some(saved.instant);
            self.write_journal(saved);
            return;
        }
        self.power_saved_at = Some(self.clock.now());
    }

    #[cfg(feature = "journal")]
    fn write_journal(&mut self, saved: TimeAnchor) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        let doc = JournalDocOut {
            format: 2,
            saved,
            sequencer: &self.seq,
            policies: &self.policies,
        };
        let written = serde_json::to_string(&doc)
            .map_err(|e| format!("cannot serialise the state: {e}"))
            .and_then(|doc| j.save(&doc).map_err(|e| e.to_string()));
        match written {
            // Said once per distinct error, not on every step of an outage
            // (a full disk would flood the log).
            Err(error) => {
                if self.journal_failing.as_ref() != Some(&error) {
                    logging::error!(%error, "cannot write the journal; a restart now would lose track of this episode");
                    self.events.publish(EngineEvent::Journal {
                        at: self.clock.now(),
                        report: JournalReport::WriteFailed {
                            error: error.clone(),
                        },
                    });
                    self.journal_failing = Some(error);
                }
            }
            Ok(()) => {
                if self.journal_failing.take().is_some() {
                    logging::info!("journal writes succeed again");
                    self.events.publish(EngineEvent::Journal {
                        at: self.clock.now(),
                        report: JournalReport::WritesResumed,
                    });
                }
            }
        }
    }

    fn flush_audit(&mut self) {
        for a in self.seq.take_audit() {
            #[cfg(feature = "tracing")]
            log_audit(&a);
            self.events.publish(EngineEvent::Audit(a));
        }
    }
}

#[cfg(feature = "tracing")]
fn log_audit(a: &AuditEntry) {
    use crate::sequencer::Audit;
    match &a.what {
        Audit::ForcedHostShutdown { host, reason } => {
            tracing::warn!(episode = a.episode, %host, %reason, "forced host shutdown")
        }
        Audit::ForcedPowerCut { host, reason } => {
            tracing::warn!(episode = a.episode, %host, %reason, "power cut under a host that still answers")
        }
        Audit::ForcedPastHook { hook, reason } => {
            tracing::warn!(episode = a.episode, %hook, %reason, "step forced past a blocking hook")
        }
        Audit::HookFinished {
            hook,
            error: Some(e),
            ..
        } => {
            tracing::warn!(episode = a.episode, %hook, error = %e, "hook failed")
        }
        Audit::Completed {
            error: Some(e),
            cmd,
            ..
        } => {
            tracing::warn!(episode = a.episode, ?cmd, error = %e, "command failed")
        }
        other => tracing::info!(episode = a.episode, what = ?other, "audit"),
    }
}

/// Polls `fut` to completion while also collecting finished commands.
///
/// Biased toward `fut`: it is polled first, and again after each collected
/// result, so collecting never delays it.
async fn drive<F: Future>(
    fut: F,
    inflight: &mut FuturesUnordered<BoxFuture<'static, Done>>,
    done: &mut Vec<Done>,
) -> F::Output {
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| {
        loop {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(v);
            }
            match inflight.poll_next_unpin(cx) {
                Poll::Ready(Some(d)) => done.push(d),
                // Empty (`Ready(None)`) or nothing finished yet: `fut`'s
                // waker and the set's are registered.
                _ => return Poll::Pending,
            }
        }
    })
    .await
}
