//! The shutdown/restore sequencer: a sans-IO state machine.
//!
//! Feed it the time, the live [`VmTable`] and a [`PowerView`] with
//! [`Sequencer::step`]; it answers with commands to run. Feed each command's
//! result back with [`Sequencer::complete`]. It never waits and never does
//! I/O, so the same code runs under the [`crate::Engine`], in simulations and
//! in table tests. Its whole state serialises (feature `serde`), which is
//! what the journal (feature `journal`) stores after every change.
//!
//! An *episode* runs from the trigger to the end of restore:
//!
//! 1. **Stopping**, stage by stage: VM groups in ascending order (guest
//!    shutdown, power off at the group's timeout or at once when guest tools
//!    are missing), then hosts without management VMs, then management
//!    groups, then their hosts, then the power-device action. A host is shut
//!    down only when none of its VMs is on, unless the forced deadline has
//!    passed, which is logged with the VMs still on.
//! 2. **Down**: waiting for mains to be stable.
//! 3. **Restoring**: outlets on (if we switched them off), hosts answering,
//!    maintenance exited, then the VMs this episode stopped are powered on,
//!    groups in reverse order. VMs that were already off stay off.
//!
//! Mains that is stable before the commit point aborts stopping and goes
//! straight to restoring what was stopped. Within an episode a VM only
//! ever gets stop commands, then start commands: never stop after start.
//! A new trigger during restore closes the episode and opens a new one.
//!
//! Hooks ([`config::Hook`]) run at named points (on battery, the trigger,
//! before a group, before a host's shutdown, after restore); a blocking
//! hook holds its step while it runs and after it failed, until the
//! forced deadline or the battery budget, like every other wait.
//!
//! # Call contract
//!
//! The driver (the [`crate::Engine`], a simulation, a test) owns the clock,
//! the I/O and the journal. It calls, on one thread:
//!
//! | call | when | what comes back |
//! |---|---|---|
//! | [`Sequencer::step`]`(now, table, view)` | after every poll merge, every power-policy verdict, and at [`Sequencer::next_wakeup`] | commands ([`Issued`]) to run now, each with an id |
//! | [`Sequencer::complete`]`(now, id, result)` | once per issued id, when its call returns or its deadline passes (a timeout is `ErrorKind::Timeout`) | nothing; call `step` next |
//! | [`Sequencer::next_wakeup`] | after each `step`/`complete` | the latest instant by which `step` must run again even if nothing happens (`None`: only on new input) |
//! | [`Sequencer::take_audit`], [`Sequencer::take_poll_wanted`], [`Sequencer::take_dirty`] | after each `step`/`complete` | audit lines to publish; whether a poll is wanted at once (a VM moved, a refusal to look at); whether state changed and must be journaled **before** the commands are run |
//!
//! Rules the driver keeps:
//! - `now` never goes backwards; instants from a journal are rebased onto
//!   the driver's clock before [`Sequencer::resume_with`] (see
//!   [`crate::clock`]).
//! - Every issued command is completed exactly once. After a restart,
//!   commands that were in flight are reported by `resume_with` itself
//!   (outcome unknown: VM and host commands are sent again; device commands
//!   are taken as delivered).
//! - `table` is the merged view at `table.taken_at`; decisions that need
//!   evidence (a host empty, a host down) read only rows fresh in it.
//! - Configuration ([`config::SequencerConfig`], the inventory) is the
//!   caller's and is never journaled: `resume_with` applies the current one
//!   to the journaled episode state.
//!
//! - A [`Command::Hook`] is completed like any other command, by its
//!   deadline (its own, not the call deadline). The sequencer also counts
//!   a hook without a result at its deadline as failed on its own (at a
//!   `step` at or after [`Sequencer::next_wakeup`]); a result that comes
//!   later is ignored. Hooks run at their points even outside an episode
//!   (on battery, after restore), so completing one needs no episode.
//!
//! The sequencer never blocks, sleeps, reads a clock or does I/O.
//!
//! # Layout
//!
//! [`config`](mod@config) (what the caller configures) and [`plan`](mod@plan) (the dry run) are
//! public; the episode state (`state`), the stopping stages (`stop` for VM
//! groups, `hosts`, `finals` for the power-device actions), `hooks`,
//! `restore`,
//! command `results` and the hand-on between episodes (`handoff`) are
//! private modules of this one.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::DeviceCommand;
use crate::clock::Instant;
use crate::model::{
    DeviceId, Freshness, HostId, Inventory, OutletId, PowerState, ToolsState, VmId, VmTable,
};
use crate::{Capabilities, HostOp, VmOp};
use crate::{Error, ErrorKind};

mod audit;
mod command;
pub mod config;
mod finals;
mod handoff;
mod hooks;
mod hosts;
mod observe;
pub mod plan;
mod restore;
mod results;
mod retry;
mod state;
mod stop;

pub use audit::{Audit, AuditEntry, EpisodeStatus};
pub use command::{Command, Issued};
use config::{CommitPoint, FinalAction, HookPoint, SequencerConfig, VmAction};
use hooks::Holds;
use observe::{knows_vms_now, locate, seen_down};
use plan::{Plan, plan};
use state::*;

/// What the power policy says, as the sequencer needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct PowerView {
    /// Hosts whose feeds are no longer enough (see [`crate::policy::hosts_at_risk`]).
    pub at_risk: BTreeSet<HostId>,
    /// Devices whose trigger has fired.
    pub unhealthy: BTreeSet<DeviceId>,
    /// Some device feeding the estate is on battery (debounced).
    pub on_battery: bool,
    /// Every device is on stable mains with enough charge and no `LB`.
    /// Restore issues nothing, and its waits do not run, while this is
    /// false: power that is failing again (even before the on-battery
    /// debounce) must not have VMs started on it.
    pub mains_stable: bool,
    /// The least remaining runtime, in seconds, reported by a device that
    /// is on battery now; `None` when none is, or none reports a runtime.
    /// Guest shutdown timeouts and the forced host deadline are cut short
    /// when it no longer covers them.
    #[cfg_attr(feature = "serde", serde(default))]
    pub runtime_s: Option<u32>,
    /// A device on battery now reports `LB` or `FSD` (NUT's status
    /// tokens, from a fresh reading): its battery is about to run out. An
    /// LB that arrives during an episode ends every blocking hook's hold,
    /// with or without a runtime reading; an episode that began at LB (the
    /// operator's chosen trigger) holds within the forced deadline and the
    /// battery budget as before.
    #[cfg_attr(feature = "serde", serde(default))]
    pub low_battery: bool,
    /// Every device has been on line for `stable_for`, whatever its
    /// battery: the outage is over. Ends stopping before the commit point
    /// and the *down* phase; restore then waits for `mains_stable`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub mains_back: bool,
    /// A description of the trigger, for the audit log.
    pub reason: String,
}

/// The sequencer. See the module docs.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Sequencer {
    /// Configuration is the caller's, never the journal's: after a restart
    /// [`Sequencer::resume_with`] puts the current one in force.
    #[cfg_attr(feature = "serde", serde(skip))]
    cfg: SequencerConfig,
    #[cfg_attr(feature = "serde", serde(skip))]
    inventory: Inventory,
    episode: Option<Episode>,
    /// An operator aborted an episode for this reason: no new one starts
    /// until power is no longer at risk (journaled, so a restart does not
    /// start it again).
    #[cfg_attr(feature = "serde", serde(default))]
    held: Option<String>,
    next_id: u64,
    episodes: u64,
    /// Guest shutdown times seen, in ms.
    measured: BTreeMap<VmId, u64>,
    #[cfg_attr(feature = "serde", serde(skip))]
    audit: Vec<AuditEntry>,
    #[cfg_attr(feature = "serde", serde(skip))]
    poll_wanted: bool,
    /// Changed since the last [`Sequencer::take_dirty`].
    #[cfg_attr(feature = "serde", serde(skip))]
    dirty: bool,
    /// Groups may have changed since the journal was written: VMs are
    /// assigned again from the table at the next step.
    #[cfg_attr(feature = "serde", serde(skip))]
    regroup: bool,
    /// When this controller resumed from the journal: a controller that
    /// runs again after its own host's shutdown was sent knows that host
    /// came back.
    #[cfg_attr(feature = "serde", serde(skip))]
    resumed_at: Option<Instant>,
    /// Disarmed, what was said for this outage (see
    /// [`SequencerConfig::armed`]): said again after power is safe again.
    #[cfg_attr(feature = "serde", serde(skip))]
    disarmed_said: bool,
    /// What each host's transport can do (see
    /// [`Sequencer::set_capabilities`]); set by the engine, never journaled.
    #[cfg_attr(feature = "serde", serde(skip))]
    caps: BTreeMap<HostId, Capabilities>,
    /// Hooks in flight, by command id (on-battery and after-restore hooks
    /// run outside an episode).
    #[cfg_attr(feature = "serde", serde(default))]
    hook_runs: BTreeMap<u64, HookRun>,
    /// The on-battery hooks ran for this outage.
    #[cfg_attr(feature = "serde", serde(default))]
    battery_hooked: bool,
}

impl Sequencer {
    /// A sequencer with no episode.
    pub fn new(cfg: SequencerConfig, inventory: Inventory) -> Self {
        Sequencer {
            cfg,
            inventory,
            episode: None,
            held: None,
            next_id: 1,
            episodes: 0,
            measured: BTreeMap::new(),
            audit: Vec::new(),
            disarmed_said: false,
            poll_wanted: false,
            dirty: false,
            regroup: false,
            resumed_at: None,
            caps: BTreeMap::new(),
            hook_runs: BTreeMap::new(),
            battery_hooked: false,
        }
    }

    /// What `host`'s transport can do ([`crate::HostTransport::capabilities`]),
    /// so that nothing is planned or sent that it cannot do:
    /// - a transport without [`VmOp::ShutdownGuest`] gets its running VMs
    ///   powered off at once (audited), never a guest shutdown that can
    ///   only fail, and the plan says so;
    /// - one without [`HostOp::EnterMaintenance`] is shut down without
    ///   maintenance mode;
    /// - one without [`HostOp::Shutdown`] is not asked: the host is marked
    ///   failed with the reason, as an `Unsupported` answer would, and the
    ///   plan says the host stays up.
    ///
    /// A host without an entry is taken to support every operation (an
    /// unsupported call then falls back when it is refused, as before).
    /// [`crate::Engine`] sets this from each transport it is given.
    pub fn set_capabilities(&mut self, host: HostId, caps: Capabilities) {
        self.caps.insert(host, caps);
    }

    /// Whether `host`'s transport can run `op` (unknown: yes).
    fn can_vm(&self, host: &HostId, op: VmOp) -> bool {
        self.caps.get(host).is_none_or(|c| c.supports_vm(op))
    }

    /// Whether `host`'s transport can run `op` (unknown: yes).
    fn can_host(&self, host: &HostId, op: HostOp) -> bool {
        self.caps.get(host).is_none_or(|c| c.supports_host(op))
    }

    /// After loading a journaled state: puts `cfg` and `inventory` (the
    /// caller's current ones) in force, then resumes: a power-device command that
    /// was in flight when the controller stopped is taken as delivered (it
    /// is not safe to repeat); a VM or host command in flight is failed as
    /// "outcome unknown" (transient) and sent again by the usual rules
    /// (each is safe to repeat: a guest asked twice, a VM found on, a host
    /// already halting). The journal holds episode state only, so an edited group,
    /// outlet or final action applies after a restart. What conflicts is
    /// said in the audit: a host no longer in the inventory is dropped from
    /// the episode (it is no longer ours to command), and VMs are assigned
    /// to the current groups at the next step.
    pub fn resume_with(&mut self, cfg: SequencerConfig, inventory: Inventory, now: Instant) {
        self.regroup =
            self.cfg.groups != cfg.groups || self.cfg.default_action != cfg.default_action;
        self.cfg = cfg;
        self.inventory = inventory;
        self.resumed_at = Some(now);
        let mut removed = Vec::new();
        if let Some(e) = self.episode.as_mut() {
            let known: BTreeSet<HostId> =
                self.inventory.hosts.iter().map(|h| h.id.clone()).collect();
            removed = e.scope.difference(&known).cloned().collect::<Vec<_>>();
            for h in &removed {
                e.scope.remove(h);
                e.hosts.remove(h);
            }
            self.regroup = true;
        }
        if let Some(id) = self.episode.as_ref().map(|e| e.id) {
            for h in removed {
                self.note(
                    now,
                    id,
                    format!("{h} is no longer in the configuration: dropped from this episode"),
                );
            }
        }
        self.resume(now);
    }

    /// The configuration.
    pub fn config(&self) -> &SequencerConfig {
        &self.cfg
    }

    /// Whether an episode is running.
    pub fn busy(&self) -> bool {
        self.episode.is_some()
    }

    /// The running episode, for display.
    pub fn status(&self) -> Option<EpisodeStatus> {
        self.episode.as_ref().map(|e| EpisodeStatus {
            id: e.id,
            phase: match &e.phase {
                Phase::Stopping { stage } => format!(
                    "stopping ({})",
                    self.stage_name(self.stages().get(*stage).copied())
                ),
                Phase::Down => "down, waiting for mains".into(),
                Phase::Restoring { .. } => "restoring".into(),
            },
            committed: e.committed,
            vms: e.vms.len(),
            stopped: e.vms.values().filter(|v| v.stopped_by_us).count(),
            in_flight: e.in_flight.len(),
        })
    }

    /// Audit entries since the last call.
    pub fn take_audit(&mut self) -> Vec<AuditEntry> {
        std::mem::take(&mut self.audit)
    }

    /// Whether the sequencer wants a fresh table now (a VM moved, a
    /// command found nothing). Reading resets it.
    pub fn take_poll_wanted(&mut self) -> bool {
        std::mem::take(&mut self.poll_wanted)
    }

    /// Guest shutdown times measured so far.
    pub fn measured(&self) -> BTreeMap<VmId, Duration> {
        self.measured
            .iter()
            .map(|(k, v)| (k.clone(), Duration::from_millis(*v)))
            .collect()
    }

    /// The dry-run plan for the hosts in `scope`, from the live table.
    pub fn plan(&self, table: &VmTable, scope: &BTreeSet<HostId>) -> Plan {
        plan(
            &self.cfg,
            table,
            scope,
            &self.measured(),
            &self.caps,
            &self.inventory,
        )
    }

    /// After a restart from the journal: commands that were in flight when
    /// the controller stopped (see [`Sequencer::resume_with`]).
    fn resume(&mut self, now: Instant) {
        self.resume_hooks(now);
        let ids: Vec<(u64, bool)> = self
            .episode
            .as_ref()
            .map(|e| {
                e.in_flight
                    .iter()
                    .map(|(id, c)| (*id, matches!(c, Command::Vm { .. } | Command::Host { .. })))
                    .collect()
            })
            .unwrap_or_default();
        let resend: Vec<VmId> = self
            .episode
            .as_ref()
            .map(|e| {
                e.in_flight
                    .values()
                    .filter_map(|c| match c {
                        Command::Vm { vm, .. } => Some(vm.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (id, unknown) in ids {
            // A VM or host command in flight when the old process died may
            // never have left it. Taken as delivered, a lost guest shutdown
            // became a hard power-off at its timeout, and a lost power-on
            // left the VM off with the restore counted done (found by the
            // restart suite and the daemon's SIGKILL suite). Their outcome
            // is unknown: failed as transient, so the usual rules send them
            // again (each is safe to repeat: a guest asked twice, a VM
            // found on, a host already halting). A power-device command is
            // not safe to repeat (a second shutdown-with-return restarts
            // its timer): it is taken as delivered.
            let r = if unknown {
                Err(Error::unreachable(
                    "controller",
                    "restarted while this command was in flight: outcome unknown",
                ))
            } else {
                Ok(())
            };
            self.complete(now, id, r);
        }
        // Not the platform's failure: no back-off before sending again.
        if let Some(e) = self.episode.as_mut() {
            for vm in resend {
                if let Some(t) = e.vms.get_mut(&vm) {
                    if t.retry_at.is_some() {
                        t.retry_at = Some(now);
                    }
                }
            }
        }
        if let Some(e) = &self.episode {
            let ep = e.id;
            self.note(
                now,
                ep,
                "controller restarted: resuming from the journal".into(),
            );
        }
        self.poll_wanted = true;
    }

    /// Ends the episode in progress on an operator's explicit request: no
    /// further command is issued for it (commands in flight finish and are
    /// not audited as the episode's), VMs are left as they are, and no new
    /// episode starts until power is no longer at risk (the abort holds for
    /// this outage, also across a restart). Audited as the episode's end
    /// with `reason`. Returns false when no episode is in progress.
    pub fn abort(&mut self, now: Instant, reason: &str) -> bool {
        let Some(e) = self.episode.take() else {
            return false;
        };
        self.push(
            now,
            e.id,
            Audit::EpisodeEnded {
                outcome: format!(
                    "aborted by the operator ({reason}); {} command(s) in flight left to finish, VMs left as they are, no new episode until power is no longer at risk",
                    e.in_flight.len()
                ),
            },
        );
        self.held = Some(reason.to_owned());
        self.dirty = true;
        true
    }

    /// Why new episodes are held (an operator aborted one during this
    /// outage), if they are.
    pub fn held(&self) -> Option<&str> {
        self.held.as_deref()
    }

    /// Whether an episode is in progress, and if so whether it is restoring
    /// (`Some(true)`) or stopping / waiting for mains (`Some(false)`): what
    /// an operator's command must not contradict.
    pub(crate) fn episode_restoring(&self) -> Option<bool> {
        self.episode
            .as_ref()
            .map(|e| matches!(e.phase, Phase::Restoring { .. }))
    }

    /// The next instant the sequencer needs a step even if nothing else
    /// happens (a guest timeout, a retry, a forced deadline).
    pub fn next_wakeup(&self) -> Option<Instant> {
        let hooks = self.hook_wakeup();
        let Some(e) = self.episode.as_ref() else {
            return hooks;
        };
        let mut t: Vec<Instant> = Vec::new();
        t.extend(hooks);
        for v in e.vms.values() {
            match v.st {
                VmSt::ShutdownSent { deadline } => t.push(deadline),
                VmSt::StartAccepted { at } => t.push(at + self.start_confirm_wait()),
                _ => {}
            }
            t.extend(v.retry_at);
        }
        for h in e.hosts.values() {
            t.extend(h.retry_at);
            if let (Some(s), Phase::Restoring { .. }) = (h.power_on_sent, &e.phase) {
                t.push(s + self.power_on_interval());
            }
            if let HostSt::ShutdownSent { at } = h.st {
                t.push(at + self.cfg.host_down_wait);
                t.push(at + self.cfg.host_down_deadline);
            }
        }
        t.extend(e.finals.iter().filter_map(|f| f.retry_at));
        if let (Some(f), Phase::Stopping { .. }) = (self.cfg.force_host_after, &e.phase) {
            t.push(e.started + f);
        }
        if let Phase::Restoring {
            since,
            group_since,
            wait_from,
            ..
        } = &e.phase
        {
            t.push(wait_from.unwrap_or(*since) + self.cfg.restore_host_wait);
            t.extend(
                e.finals
                    .iter()
                    .filter_map(FinalCmd::cut_at)
                    .filter(|c| *c > *since),
            );
            if let Some(g) = group_since {
                t.push(*g + self.cfg.restore_vm_wait);
            }
        }
        t.into_iter().min()
    }

    /// Whether the state changed in a way worth journaling since the last
    /// call (every audited change, every command result). Reading resets it.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    fn push(&mut self, now: Instant, episode: u64, what: Audit) {
        self.dirty = true;
        self.audit.push(AuditEntry {
            at: now,
            episode,
            what,
        });
    }

    /// Disarmed: nothing is started or sent; what an armed controller
    /// would do is said once per outage.
    fn disarmed(&mut self, now: Instant, view: &PowerView) {
        if let Some(id) = self.episode.as_ref().map(|e| e.id) {
            if !self.disarmed_said {
                self.disarmed_said = true;
                self.note(now, id, "disarmed: this episode is held where it is and nothing is sent until the controller is armed".into());
            }
            return;
        }
        let shed = self.cfg.groups.iter().any(|g| g.shed_on_battery)
            && view.on_battery
            && !view.mains_stable;
        if view.at_risk.is_empty() && !shed {
            if !view.on_battery {
                self.disarmed_said = false;
            }
            return;
        }
        if !self.disarmed_said {
            self.disarmed_said = true;
            let text = format!(
                "disarmed: {}; an armed controller would start a {} now; nothing is sent",
                view.reason,
                if view.at_risk.is_empty() {
                    "load-shedding episode"
                } else {
                    "shutdown episode"
                }
            );
            self.note(now, 0, text);
        }
    }

    fn note(&mut self, now: Instant, episode: u64, text: String) {
        self.push(now, episode, Audit::Note { text });
    }

    /// Advances the state machine; returns commands to run now.
    pub fn step(&mut self, now: Instant, table: &VmTable, view: &PowerView) -> Vec<Issued> {
        let mut out = Vec::new();
        if !self.cfg.armed {
            self.disarmed(now, view);
            return out;
        }
        self.disarmed_said = false;
        self.expire_hooks(now);
        self.on_battery_hooks(now, view, &mut out);
        self.maybe_start(now, table, view);
        let Some(mut e) = self.episode.take() else {
            return out;
        };
        if !view.unhealthy.is_subset(&e.devices) {
            e.devices.extend(view.unhealthy.iter().cloned());
            self.dirty = true;
        }
        let reappeared = {
            let index = table.index();
            let mut any = false;
            if std::mem::take(&mut self.regroup) {
                for t in e.vms.values_mut() {
                    t.regroup = true;
                }
            }
            let groups = self.cfg.groups.len();
            for (h, ht) in e.hosts.iter_mut() {
                if !knows_vms_now(table, h) {
                    ht.silent_at = Some(now);
                }
            }
            let mut revived = Vec::new();
            let restoring = matches!(e.phase, Phase::Restoring { .. });
            for (id, t) in e.vms.iter_mut() {
                // After a restart with edited groups: each VM joins its
                // current group when a list first shows it (an index from
                // the old configuration is never trusted).
                if t.regroup {
                    if let Some((_, v)) = locate(table, &index, id) {
                        t.group = self.cfg.group_of(v);
                        t.regroup = false;
                        any = true;
                    } else {
                        t.group = t.group.min(groups);
                    }
                }
                // A VM we stopped that a fresh list shows running again
                // (HA, host autostart, a person) is stopped again before
                // its host goes down, whatever stage the episode is in.
                if !restoring && t.st == VmSt::Off {
                    if let Some((h, v)) = locate(table, &index, id) {
                        // (A VM handed on from an interrupted restore is
                        // `Off` without a time: its stop may never have
                        // finished.)
                        if v.power == PowerState::PoweredOn
                            && knows_vms_now(table, h)
                            && t.off_at.is_none_or(|o| o < table.taken_at)
                        {
                            t.st = VmSt::Pending;
                            t.force_off = true;
                            t.retry_at = None;
                            any = true;
                        }
                    }
                }
                if t.missing_since.is_some() && index.contains_key(id) {
                    t.missing_since = None;
                }
                if t.unseen && index.contains_key(id) {
                    t.unseen = false;
                    any = true;
                }
                // Commands that failed (the host unreachable, say) are not
                // the end of a VM that its host, answering again, still
                // shows on: it is taken up again, a bounded number of times.
                if let (VmSt::Failed { .. }, Some(failed_at)) = (&t.st, t.failed_at) {
                    // (The command began up to a call deadline before it
                    // failed; silence since then is what it failed on.)
                    let sent = Instant::from_millis(
                        failed_at
                            .as_millis()
                            .saturating_sub(self.cfg.call_deadline.as_millis() as u64),
                    );
                    let on_again = locate(table, &index, id).is_some_and(|(h, v)| {
                        v.power.is_on()
                            && e.hosts
                                .get(h)
                                .and_then(|ht| ht.silent_at)
                                .is_some_and(|s| s >= sent)
                            && table.host(h).is_some_and(|r| {
                                r.is_fresh() && r.last_seen.is_some_and(|s| s > failed_at)
                            })
                    });
                    if on_again && t.revivals < MAX_REVIVALS {
                        t.revivals += 1;
                        t.st = VmSt::Pending;
                        t.attempts = 0;
                        t.retry_at = None;
                        // A guest that got its request has had its chance:
                        // power off. One that never got it gets a graceful
                        // attempt with a fresh timeout.
                        t.force_off = t.asked;
                        if !t.asked {
                            t.sent_at = None;
                        }
                        revived.push(t.name.clone());
                        any = true;
                    }
                }
            }
            for name in revived {
                self.note(
                    now,
                    e.id,
                    format!("{name}: its host answers again and it is still on: trying again"),
                );
            }
            any
        };
        self.log_late_arrivals(now, &mut e, table);
        if self.track_new_vms(&mut e, table) || reappeared {
            if let Phase::Stopping { stage } = &mut e.phase {
                // A VM arrived (first answer, migration into scope) after its
                // group's stage: walk the stages again; finished ones finish
                // at once.
                *stage = 0;
            }
        }
        // The trigger hooks start with the shutdown, before any table.
        if e.full && matches!(e.phase, Phase::Stopping { .. }) {
            self.hook_gate(now, &mut e, view, &HookPoint::Trigger, Holds::Vms, &mut out);
        }
        // Decide nothing from a table older than the episode: it may show a
        // VM off that was just started, or miss one that just arrived.
        // (A table that was never polled says nothing at all.)
        if table.taken_at < e.started || table.cycle == 0 {
            self.poll_wanted = true;
            self.episode = Some(e);
            return out;
        }
        let mut announced = self.phase_name(&e);
        loop {
            let name = self.phase_name(&e);
            if name != announced {
                announced = name.clone();
                self.push(now, e.id, Audit::Phase { phase: name });
            }
            let phase = e.phase.clone();
            match phase {
                Phase::Stopping { stage } => {
                    // A live test stops its group with mains on line, then
                    // restores it once past the VM groups' stages.
                    let testing = (e.test.is_some()
                        && !e.full
                        && matches!(self.stages().get(stage), Some(Stage::Group { .. })))
                        || e.test_host.is_some();
                    if e.test.is_some() && !testing && !e.full {
                        self.note(now, e.id, "test: the group is down; restoring it".into());
                        e.phase = Phase::Restoring {
                            since: now,
                            outlets_on: true,
                            group: 0,
                            group_since: None,
                            wait_from: None,
                        };
                        continue;
                    }
                    if !testing && !e.committed && view.mains_back && view.at_risk.is_empty() {
                        self.note(now, e.id, "mains stable before the commit point: aborting, restoring what was stopped".into());
                        e.phase = Phase::Restoring {
                            since: now,
                            outlets_on: true,
                            group: 0,
                            group_since: None,
                            wait_from: None,
                        };
                        continue;
                    }
                    let stages = self.stages();
                    let Some(&st) = stages.get(stage) else {
                        e.phase = Phase::Down;
                        continue;
                    };
                    if !e.full && !matches!(st, Stage::Group { .. }) {
                        break; // load shedding stops at the VM groups
                    }
                    // A blocking trigger hook holds every stopping stage
                    // (an outage's: a host test triggers nothing).
                    if e.full
                        && e.test_host.is_none()
                        && !self.hook_gate(
                            now,
                            &mut e,
                            view,
                            &HookPoint::Trigger,
                            Holds::Vms,
                            &mut out,
                        )
                    {
                        break;
                    }
                    // Per-host pipelines: a troubled host did not hold the
                    // stages already passed, so its VMs (and, once they are
                    // down or its deadline passes, its shutdown) are still
                    // stepped there.
                    if e.hosts.values().any(|h| h.troubled) {
                        for passed in stages.iter().take(stage).copied() {
                            match passed {
                                Stage::Group { index } => {
                                    self.step_group(now, &mut e, table, view, index, &mut out);
                                }
                                Stage::Hosts { management: false } if e.full => {
                                    self.step_hosts(now, &mut e, table, view, false, &mut out);
                                }
                                _ => {}
                            }
                        }
                    }
                    let done = match st {
                        Stage::Group { index } => {
                            self.step_group(now, &mut e, table, view, index, &mut out)
                        }
                        Stage::Hosts { management } => {
                            self.step_hosts(now, &mut e, table, view, management, &mut out)
                        }
                        Stage::Final => self.step_final(now, &mut e, table, view, &mut out),
                        Stage::OwnHost => self.step_own_host(now, &mut e, table, &mut out),
                    };
                    if done {
                        e.phase = Phase::Stopping { stage: stage + 1 };
                        continue;
                    }
                    break;
                }
                Phase::Down => {
                    if view.mains_back {
                        e.phase = Phase::Restoring {
                            since: now,
                            outlets_on: false,
                            group: 0,
                            group_since: None,
                            wait_from: None,
                        };
                        continue;
                    }
                    // A host that went down answers again while a device
                    // is on battery (a UPS that cycled its output on a
                    // short return of mains, a host powered on by hand):
                    // waiting for mains would leave it to the battery. This
                    // episode ends and a new one stops everything again;
                    // the VMs still to restore are handed on.
                    let own = self.own_host(&e, table);
                    // A host whose shutdown hung still answers until the
                    // cut this episode ordered: that is expected (it was
                    // named in a `ForcedPowerCut`), not a return. It counts
                    // as back only once the cut is past by long enough for
                    // polls to have shown it down (a device that ignored
                    // the command leaves it running on battery).
                    let cut_settling = e
                        .finals
                        .iter()
                        .filter(|f| f.sent)
                        .filter_map(FinalCmd::cut_at)
                        .any(|c| now <= c + self.cfg.observe_lag * 3);
                    let back: Vec<HostId> = e
                        .hosts
                        .iter()
                        .filter(|(h, t)| {
                            e.scope.contains(*h)
                                && knows_vms_now(table, h)
                                && match t.st {
                                    HostSt::Down => true,
                                    // (This controller runs again on its own
                                    // host after that host's shutdown.)
                                    HostSt::ShutdownSent { at } => {
                                        (!cut_settling
                                            && table.taken_at >= at + self.cfg.host_down_deadline)
                                            || (own.as_ref() == Some(*h)
                                                && self
                                                    .resumed_at
                                                    .is_some_and(|r| r > at && table.taken_at > r))
                                    }
                                    _ => false,
                                }
                        })
                        .map(|(h, _)| h.clone())
                        .collect();
                    if !back.is_empty() && view.on_battery && !view.at_risk.is_empty() {
                        // (A VM running again is the new episode's to stop,
                        // gracefully, and then to restore.)
                        let outcome = |n: usize| {
                            format!(
                                "{back:?} answer again while power is still at risk: a new episode stops them; {n} VM(s) to restore are handed on"
                            )
                        };
                        return self.hand_on(now, e, table, view, outcome, out);
                    }
                    break;
                }
                Phase::Restoring { .. } => {
                    if !view.at_risk.is_empty() {
                        // Power failed again during restore: this episode ends
                        // here, and the VMs it had not yet brought back are
                        // handed to the next one, so that they are restored
                        // when power finally holds.
                        // (A VM running now, started already or never
                        // stopped, is the next episode's to stop: gracefully,
                        // like any VM running when an episode begins.)
                        let outcome = |n: usize| {
                            format!(
                                "interrupted by a new power failure; {n} VM(s) still to restore are handed on"
                            )
                        };
                        return self.hand_on(now, e, table, view, outcome, out);
                    }
                    if self.step_restore(now, &mut e, table, view, &mut out) {
                        for device in std::mem::take(&mut e.detached) {
                            self.issue(now, &mut e, Command::Attach { device }, &mut out);
                        }
                        let stopped = e.vms.values().filter(|v| v.stopped_by_us).count();
                        let started = e.vms.values().filter(|v| v.st == VmSt::Started).count();
                        let failed = e
                            .vms
                            .values()
                            .filter(|v| matches!(v.st, VmSt::StartFailed { .. }))
                            .count();
                        self.push(
                            now,
                            e.id,
                            Audit::EpisodeEnded {
                                outcome: format!("restored: {started} of {stopped} stopped VMs running again, {failed} failed"),
                            },
                        );
                        self.start_hooks(now, e.id, &HookPoint::AfterRestore, &mut out);
                        return out;
                    }
                    break;
                }
            }
        }
        let name = self.phase_name(&e);
        if name != announced {
            self.push(now, e.id, Audit::Phase { phase: name });
        }
        self.log_cuts_ahead(now, &mut e, table);
        self.episode = Some(e);
        out
    }
}

/// How old the table that confirms a host empty may be when its shutdown
/// is sent.
const CONFIRM_MAX_AGE: Duration = Duration::from_secs(5);

/// How often a VM whose commands failed is taken up again when its host
/// answers with it still on.
const MAX_REVIVALS: u32 = 3;

/// Time for a power-off to land before the host shutdown that follows it.
const BUDGET_MARGIN: Duration = Duration::from_secs(30);
