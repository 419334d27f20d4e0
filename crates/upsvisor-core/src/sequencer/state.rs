//! The journaled state of an episode: per VM, per host, per device
//! command, and the phase it is in. Configuration is never in it.

#[allow(unused_imports)]
use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "state"))]
pub(super) enum VmSt {
    Pending,
    ShutdownSent {
        deadline: Instant,
    },
    PowerOffSent,
    Off,
    Left,
    Failed {
        error: String,
    },
    StartPending,
    StartSent,
    /// The platform accepted the power-on at `at`; restored once a list
    /// shows it running (a platform task can still fail, or be undone).
    StartAccepted {
        at: Instant,
    },
    Started,
    StartFailed {
        error: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(super) struct VmTrack {
    pub(super) name: String,
    pub(super) group: usize,
    pub(super) was_on: bool,
    pub(super) st: VmSt,
    pub(super) attempts: u32,
    pub(super) retry_at: Option<Instant>,
    pub(super) force_off: bool,
    pub(super) stopped_by_us: bool,
    pub(super) sent_at: Option<Instant>,
    pub(super) off_at: Option<Instant>,
    /// In no host's list while some host in scope is silent: it may be
    /// on that host. Silence never deletes, so it is not left alone; it is
    /// looked at again as soon as a list shows it.
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) unseen: bool,
    /// When its commands last failed for good (`Failed`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) failed_at: Option<Instant>,
    /// How often a failed VM was taken up again because its host answered
    /// with it still on (bounded by [`MAX_REVIVALS`]).
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) revivals: u32,
    /// A guest shutdown request was delivered (it is not sent twice).
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) asked: bool,
    /// When restore sent its first power-on: transient failures are
    /// retried until the restore wait (`restore_vm_wait`) from then.
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) start_first: Option<Instant>,
    /// Join the current configuration's group when next located.
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) regroup: bool,
    /// First table (all hosts answering) in which it was in no list: a
    /// live migration can make a VM miss one table.
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) missing_since: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "state"))]
pub(super) enum HostSt {
    Up,
    MaintSent,
    InMaint,
    ShutdownSent { at: Instant },
    Down,
    Failed { error: String },
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(super) struct HostTrack {
    pub(super) st: HostSt,
    pub(super) attempts: u32,
    pub(super) retry_at: Option<Instant>,
    pub(super) maint: bool,
    pub(super) no_maint: bool,
    pub(super) forced: bool,
    pub(super) exit_maint_sent: bool,
    pub(super) lost: bool,
    /// When the host was first seen with no VM on; its shutdown waits for a
    /// table taken after that, so a VM that migrated in meanwhile is seen.
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) empty_since: Option<Instant>,
    /// The host refused a shutdown outside maintenance mode (the rule for
    /// ESXi's `esxcli system shutdown poweroff`): it enters maintenance
    /// mode first, then the shutdown is sent again.
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) needs_maint: bool,
    /// A command for this host ran out its call deadline in this episode
    /// (a hung task queue, a stuck agent): its VMs and its shutdown go on
    /// at its own pace and no longer hold the VM groups' stages or the
    /// stage of hosts without management VMs for the other hosts. The
    /// management hosts' stage, and so the power-device action, still
    /// waits for it, up to its own deadlines.
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) troubled: bool,
    /// Restore's out-of-band power-on: when last sent, and whether the
    /// method refused for good (unsupported, wrong credentials).
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) power_on_sent: Option<Instant>,
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) no_power_on: bool,
    /// An earlier episode, handing on to this one, had taken this host
    /// down: restore may power it on as if this one had.
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) taken_down_before: bool,
    /// Restore saw this host halt only after restore began (a slow halt):
    /// its restore wait counts from then.
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) halted_at: Option<Instant>,
    /// A forced power cut under this host was logged already.
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) cut_logged: bool,
    /// The last step at which its list was not evidence (the host did not
    /// answer the latest poll). A failed VM is taken up again only if its
    /// host was silent since the command failed: a host whose polls kept
    /// answering while a power command hung does not "answer again".
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) silent_at: Option<Instant>,
    /// Its shutdown call timed out: nothing says it was delivered, so a
    /// silent host may still be running (silence is not "down").
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) unconfirmed: bool,
    /// Its wait for the hosts it shuts down after was said.
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) order_said: bool,
    /// At restore, that its VMs wait for a host shut down after it was
    /// said.
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) restore_order_said: bool,
    /// At restore, its out-of-band power-on waited for hosts that shut
    /// down after it (storage first): whether that was said, and when the
    /// wait ended (its own restore wait counts from then).
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) power_on_order_said: bool,
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) power_on_free_at: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(super) struct FinalCmd {
    pub(super) device: DeviceId,
    pub(super) cmd: DeviceCommand,
    pub(super) sent: bool,
    pub(super) done: bool,
    pub(super) attempts: u32,
    pub(super) retry_at: Option<Instant>,
    /// When it was sent (a delayed cut happens at `sent_at + delay`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) sent_at: Option<Instant>,
}

impl FinalCmd {
    /// When this command cuts power, if it does.
    pub(super) fn cut_at(&self) -> Option<Instant> {
        let delay = match &self.cmd {
            DeviceCommand::ShutdownReturn { delay }
            | DeviceCommand::ShutdownStayOff { delay }
            | DeviceCommand::OutletOff { delay, .. } => *delay,
            _ => return None,
        };
        Some(self.sent_at? + delay)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "stage"))]
pub(super) enum Stage {
    Group {
        index: usize,
    },
    Hosts {
        management: bool,
    },
    Final,
    /// This controller's own host, after the power devices.
    OwnHost,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "phase"))]
pub(super) enum Phase {
    Stopping {
        stage: usize,
    },
    Down,
    Restoring {
        since: Instant,
        outlets_on: bool,
        group: usize,
        group_since: Option<Instant>,
        /// Where the restore waits count from: the last moment power was
        /// not good (mains unstable, or a delayed cut still pending).
        #[cfg_attr(feature = "serde", serde(default))]
        wait_from: Option<Instant>,
    },
}

/// Where one hook stands in an episode.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "state"))]
pub(super) enum HookSt {
    Running {
        id: u64,
        deadline: Instant,
    },
    Succeeded,
    /// Failed, or no result by its deadline (unknown is not success).
    Failed {
        error: String,
        /// That it holds its step was said.
        #[cfg_attr(feature = "serde", serde(default))]
        held_said: bool,
    },
    /// A blocking hook's hold was overridden by a forced deadline or the
    /// battery budget (audited as `ForcedPastHook`).
    Overridden,
}

/// A hook in flight, kept beside the episode: on-battery and after-restore
/// hooks run outside one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(super) struct HookRun {
    pub(super) hook: String,
    pub(super) episode: u64,
    pub(super) deadline: Instant,
}

/// The state of one episode.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(super) struct Episode {
    pub(super) id: u64,
    pub(super) started: Instant,
    pub(super) reason: String,
    pub(super) full: bool,
    pub(super) phase: Phase,
    pub(super) scope: BTreeSet<HostId>,
    pub(super) vms: BTreeMap<VmId, VmTrack>,
    pub(super) hosts: BTreeMap<HostId, HostTrack>,
    pub(super) in_flight: BTreeMap<u64, Command>,
    pub(super) committed: bool,
    pub(super) finals: Vec<FinalCmd>,
    /// Devices whose trigger fired during this episode. Journaled, so a
    /// restarted controller (whose fresh policy has not fired yet) still
    /// sends their final command.
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) devices: BTreeSet<DeviceId>,
    /// "Restore held" was said once.
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) held_noted: bool,
    /// Devices detached (their clients no longer wait for us); attached
    /// again when the restore is done.
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) detached: BTreeSet<DeviceId>,
    /// Outlets an earlier episode switched off and never switched on
    /// again (it handed on before its restore did): restore switches them
    /// on, whichever way it began.
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) outlets_left_off: Vec<(DeviceId, OutletId)>,
    /// The episode's hooks that were started, by name.
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) hooks: BTreeMap<String, HookSt>,
    /// An operator's live test of one VM group ([`super::Sequencer::start_test`]):
    /// only that group is stopped, then restored while mains is on line.
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) test: Option<String>,
    /// An operator's live test of one host ([`super::Sequencer::start_host_test`]):
    /// its VMs and the host are stopped, then it is powered on out of band
    /// and its VMs restored, while mains is on line.
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) test_host: Option<HostId>,
    /// A device reported LB (or FSD) when the episode began: the operator
    /// chose to shut down at LB, and its blocking hooks are held within
    /// the forced deadline and the battery budget. An LB that comes later
    /// ends their holds at once ([`PowerView::low_battery`]).
    #[cfg_attr(feature = "serde", serde(default))]
    pub(super) lb_at_start: bool,
}

pub(super) fn new_host() -> HostTrack {
    HostTrack {
        st: HostSt::Up,
        attempts: 0,
        retry_at: None,
        maint: false,
        no_maint: false,
        forced: false,
        exit_maint_sent: false,
        lost: false,
        empty_since: None,
        needs_maint: false,
        cut_logged: false,
        troubled: false,
        power_on_sent: None,
        no_power_on: false,
        taken_down_before: false,
        halted_at: None,
        silent_at: None,
        unconfirmed: false,
        order_said: false,
        restore_order_said: false,
        power_on_order_said: false,
        power_on_free_at: None,
    }
}
