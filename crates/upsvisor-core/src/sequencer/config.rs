//! Shutdown configuration: VM groups and how to pick their VMs, actions,
//! limits, deadlines, the final power-device action, and how this
//! controller finds its own VM. Plain data the caller owns; the journal
//! never holds it.

use std::time::Duration;

use crate::model::{HostId, VmId, VmInfo, VmTable};

/// Picks VMs for a group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Matcher {
    /// This exact VM id.
    Id(VmId),
    /// Names matching a glob (`*` any run, `?` one character).
    Name(String),
    /// VMs carrying this tag.
    Tag(String),
    /// The VM that is this machine (see [`MachineIdentity`]).
    Identity(MachineIdentity),
}

impl Matcher {
    /// Whether `vm` matches.
    pub fn matches(&self, vm: &VmInfo) -> bool {
        match self {
            Matcher::Id(id) => &vm.id == id,
            Matcher::Name(g) => glob(g, &vm.name),
            Matcher::Tag(t) => vm.tags.iter().any(|x| x == t),
            Matcher::Identity(me) => me.is(vm),
        }
    }
}

/// What identifies the machine this controller runs on, when it is a VM:
/// its SMBIOS system UUID (Linux `/sys/class/dmi/id/product_uuid`, readable
/// by root) and, as the fallback when that is unknown, its own IP
/// addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MachineIdentity {
    /// The SMBIOS system UUID as this machine reads it.
    #[cfg_attr(feature = "serde", serde(default))]
    pub bios_uuid: Option<String>,
    /// This machine's own addresses (loopback and link-local left out).
    #[cfg_attr(feature = "serde", serde(default))]
    pub ips: Vec<std::net::IpAddr>,
}

impl MachineIdentity {
    /// Whether `vm` is this machine.
    ///
    /// By SMBIOS UUID when both sides know it, in either byte order: SMBIOS
    /// 2.6 and later store the first three fields little-endian (DMTF
    /// DSP0134 7.2.1), and guests on older VMware virtual hardware read
    /// them swapped against vSphere's `config.uuid`. Only when this machine
    /// does not know its UUID: by an address the VM reports that is one of
    /// ours (a shared virtual IP could match another VM, so the UUID, when
    /// known, is never overruled by an address).
    pub fn is(&self, vm: &VmInfo) -> bool {
        match (&self.bios_uuid, &vm.bios_uuid) {
            (Some(me), Some(it)) => uuid_same_machine(me, it),
            (Some(_), None) => false,
            (None, _) => vm
                .ips
                .iter()
                .any(|ip| usable_ip(ip) && self.ips.contains(ip)),
        }
    }
}

fn usable_ip(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v) => !v.is_loopback() && !v.is_link_local() && !v.is_unspecified(),
        std::net::IpAddr::V6(v) => {
            !v.is_loopback() && !v.is_unspecified() && (v.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// The 16 bytes of a UUID written as 32 hex digits (dashes, braces and
/// spaces ignored, as vSphere's `config.uuid`, libvirt and DMI write it).
fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s
        .bytes()
        .filter(|b| !matches!(b, b'-' | b'{' | b'}' | b' '))
        .collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let txt = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(txt, 16).ok()?;
    }
    Some(out)
}

/// Same machine: equal UUIDs, or equal once the first three fields of one
/// are byte-swapped (see [`MachineIdentity::is`]). The all-zero and
/// all-ones placeholders never match.
pub(crate) fn uuid_same_machine(a: &str, b: &str) -> bool {
    let (Some(a), Some(b)) = (uuid_bytes(a), uuid_bytes(b)) else {
        return false;
    };
    if a == [0; 16] || a == [0xff; 16] {
        return false;
    }
    let mut swapped = a;
    swapped[0..4].reverse();
    swapped[4..6].reverse();
    swapped[6..8].reverse();
    a == b || swapped == b
}

/// Glob match with `*` and `?`, over characters.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || Some(&c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

/// What to do with a running VM on the way down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "action"))]
#[non_exhaustive]
pub enum VmAction {
    /// Guest shutdown; power off if still on after `timeout`.
    Shutdown {
        /// How long the guest gets.
        #[cfg_attr(feature = "serde", serde(with = "secs"))]
        timeout: Duration,
    },
    /// Power off at once.
    PowerOff,
    /// Leave it running (its host then waits for the forced deadline).
    LeaveRunning,
}

/// A VM group: which VMs, in which order, how.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct VmGroup {
    /// Name (shown in plans and logs).
    pub name: String,
    /// Groups stop in ascending order (restore in descending).
    pub order: i32,
    /// Any matcher puts a VM in the group; the first group (by order, then
    /// position) that matches wins.
    pub matchers: Vec<Matcher>,
    /// What to do.
    pub action: VmAction,
    /// Management VMs (vCenter, storage, the controller's own VM): they stop
    /// after every other group, and their hosts after every other host.
    pub management: bool,
    /// Stop this group as soon as the UPS is on battery, to stretch runtime,
    /// and start it again if mains returns first.
    pub shed_on_battery: bool,
}

impl VmGroup {
    /// A group with a guest shutdown action of `timeout`.
    pub fn new(
        name: impl Into<String>,
        order: i32,
        matchers: Vec<Matcher>,
        timeout: Duration,
    ) -> Self {
        VmGroup {
            name: name.into(),
            order,
            matchers,
            action: VmAction::Shutdown { timeout },
            management: false,
            shed_on_battery: false,
        }
    }
    /// Sets the action.
    pub fn action(mut self, a: VmAction) -> Self {
        self.action = a;
        self
    }
    /// Marks the group as management.
    pub fn management(mut self, yes: bool) -> Self {
        self.management = yes;
        self
    }
    /// Marks the group for load shedding.
    pub fn shed_on_battery(mut self, yes: bool) -> Self {
        self.shed_on_battery = yes;
        self
    }
}

/// What the power devices do once the hosts are down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "action"))]
#[non_exhaustive]
pub enum FinalAction {
    /// Nothing.
    None,
    /// UPS off after `delay`, back on when mains returns.
    ShutdownReturn {
        /// Delay.
        #[cfg_attr(feature = "serde", serde(with = "secs"))]
        delay: Duration,
    },
    /// UPS off after `delay` and stays off (if mains is already back when it
    /// is sent, shutdown-with-return is sent instead so hosts get power back).
    ShutdownStayOff {
        /// Delay.
        #[cfg_attr(feature = "serde", serde(with = "secs"))]
        delay: Duration,
    },
    /// The outlets feeding the hosts off after `delay`; on again at restore.
    OutletsOff {
        /// Delay.
        #[cfg_attr(feature = "serde", serde(with = "secs"))]
        delay: Duration,
    },
}

/// Where in an outage a [`Hook`] runs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "point"))]
#[non_exhaustive]
pub enum HookPoint {
    /// A device feeding the estate went on battery (debounced, the
    /// policy's `on_battery`); once per outage. Holds nothing.
    OnBattery,
    /// A shutdown episode began (a trigger fired; a load-shedding episode
    /// that becomes a full shutdown counts then). A blocking hook holds
    /// every stopping stage.
    Trigger,
    /// Before the VM group's stage sends its first command (the group of
    /// VMs no other group matches is `default`). A blocking hook holds that
    /// group, and so the stages after it.
    BeforeGroup {
        /// The group's name.
        group: String,
    },
    /// Before the host's shutdown is sent (after maintenance mode, if
    /// used). A blocking hook holds that host's shutdown.
    BeforeHostShutdown {
        /// The host.
        host: HostId,
    },
    /// The episode's restore finished. Holds nothing.
    AfterRestore,
}

impl HookPoint {
    /// The point's name as configured (`on_battery`, `trigger`,
    /// `before_group`, `before_host_shutdown`, `after_restore`).
    pub fn name(&self) -> &'static str {
        match self {
            HookPoint::OnBattery => "on_battery",
            HookPoint::Trigger => "trigger",
            HookPoint::BeforeGroup { .. } => "before_group",
            HookPoint::BeforeHostShutdown { .. } => "before_host_shutdown",
            HookPoint::AfterRestore => "after_restore",
        }
    }
    /// Whether a blocking hook here can hold a step (on battery and after
    /// restore never hold anything).
    pub fn can_hold(&self) -> bool {
        !matches!(self, HookPoint::OnBattery | HookPoint::AfterRestore)
    }
}

impl std::fmt::Display for HookPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookPoint::BeforeGroup { group } => write!(f, "before group {group}"),
            HookPoint::BeforeHostShutdown { host } => write!(f, "before {host}'s shutdown"),
            other => f.write_str(other.name()),
        }
    }
}

/// A command the operator wants run at a [`HookPoint`]. What it runs and
/// where is the driver's business (its [`crate::HookRunner`] gets the
/// name); the sequencer starts it at its point, waits for its result up to
/// `deadline` (no result by then is a failure: unknown is never success),
/// and audits its start and end ([`crate::Audit::HookStarted`],
/// [`crate::Audit::HookFinished`]).
///
/// A *blocking* hook that fails holds its step (the trigger: every
/// stopping stage; a group: its VM commands; a host: its shutdown) until
/// the same limits that end other waits: the forced deadline
/// ([`SequencerConfig::force_host_after`] from the episode's start) or a
/// battery whose runtime left no longer covers what follows. Then the step
/// goes on, audited as [`crate::Audit::ForcedPastHook`]. A blocking hook
/// is also waited for while it runs, up to its deadline. A non-blocking
/// hook is started and never waited for; neither kind ever holds the
/// power-device action itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Hook {
    /// Name (unique; shown in plans, audit lines, and handed to the runner).
    pub name: String,
    /// Where it runs.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub point: HookPoint,
    /// How long its result is waited for.
    #[cfg_attr(feature = "serde", serde(with = "secs"))]
    pub deadline: Duration,
    /// Whether a failure holds its step (see above). Default `false`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub blocking: bool,
}

impl Hook {
    /// A non-blocking hook.
    pub fn new(name: impl Into<String>, point: HookPoint, deadline: Duration) -> Self {
        Hook {
            name: name.into(),
            point,
            deadline,
            blocking: false,
        }
    }
    /// Makes its failure hold its step (ignored at points that hold
    /// nothing: on battery, after restore).
    pub fn blocking(mut self, yes: bool) -> Self {
        self.blocking = yes;
        self
    }
    /// Whether it holds its step when it fails or while it runs.
    pub fn holds(&self) -> bool {
        self.blocking && self.point.can_hold()
    }
}

/// When an episode stops being abortable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum CommitPoint {
    /// The first VM command: once anything is stopped, go to the end.
    FirstVmCommand,
    /// The first host shutdown (default): VMs can be restored until then.
    FirstHostShutdown,
    /// The power-device action (or the first host shutdown, which cannot
    /// be called back, if that comes first).
    FinalAction,
}

/// Shutdown and restore settings: `Default`, then the setters for what
/// differs (each documents its value and default).
///
/// ```
/// use std::time::Duration;
/// use upsvisor_core::{FinalAction, SequencerConfig};
/// let mut c = SequencerConfig::default();
/// c.armed(true)
///     .final_action(FinalAction::ShutdownReturn { delay: Duration::from_secs(60) });
/// assert!(c.is_armed());
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct SequencerConfig {
    /// VM groups.
    pub(crate) groups: Vec<VmGroup>,
    /// Action for VMs no group matches (order 0, not management).
    pub(crate) default_action: VmAction,
    /// Enter maintenance mode before shutting a host down.
    pub(crate) use_maintenance: bool,
    /// Shut hosts down at all.
    pub(crate) shutdown_hosts: bool,
    /// How long a host takes to halt after its shutdown is sent: after this
    /// long the next stage may begin (estimates and battery budgets use it
    /// too). Power is still cut only once the host is *seen* down, see
    /// [`SequencerConfig::host_down_deadline`].
    #[cfg_attr(feature = "serde", serde(with = "secs"))]
    pub(crate) host_down_wait: Duration,
    /// How long the power-device action waits, after a host's shutdown was
    /// sent, for the host to stop answering. Past it (or once the battery's
    /// runtime only covers the device's own delay) power is cut anyway,
    /// logged as [`crate::Audit::ForcedPowerCut`] naming the host. Hosts
    /// may take many minutes to halt (ESXi waits for its VMs' autostop).
    #[cfg_attr(
        feature = "serde",
        serde(with = "secs", default = "default_host_down_deadline")
    )]
    pub(crate) host_down_deadline: Duration,
    /// Shut a host down even with VMs on, this long after the episode began
    /// (logged with the reason). `None`: never.
    #[cfg_attr(feature = "serde", serde(with = "opt_secs"))]
    pub(crate) force_host_after: Option<Duration>,
    /// The power-device action.
    pub(crate) final_action: FinalAction,
    /// This controller's own VM, when it runs inside the estate (the most
    /// common deployment: a VM on a host the UPS feeds). It is never
    /// stopped with its group; its host is shut down last, after the
    /// power-device command (whose delay is stretched to cover the host's
    /// shutdown), and that host's hypervisor stops the controller's VM with
    /// it (configure its autostop / `libvirt-guests` to shut guests down).
    #[cfg_attr(feature = "serde", serde(default))]
    pub(crate) controller_vm: Option<Matcher>,
    /// When the episode can no longer be aborted.
    pub(crate) commit_point: CommitPoint,
    /// Commands in flight at once, overall.
    pub(crate) max_in_flight: usize,
    /// Commands in flight at once, per host.
    pub(crate) per_host_in_flight: usize,
    /// Deadline for one command.
    #[cfg_attr(feature = "serde", serde(with = "secs"))]
    pub(crate) call_deadline: Duration,
    /// Retries of a command that failed transiently (unreachable, timeout).
    pub(crate) retries: u32,
    /// Pause before a retry.
    #[cfg_attr(feature = "serde", serde(with = "secs"))]
    pub(crate) retry_backoff: Duration,
    /// How long restore waits for a host to answer again.
    #[cfg_attr(feature = "serde", serde(with = "secs"))]
    pub(crate) restore_host_wait: Duration,
    /// How long restore waits for a started VM before going to the next group.
    #[cfg_attr(feature = "serde", serde(with = "secs"))]
    pub(crate) restore_vm_wait: Duration,
    /// Safety margin subtracted from the runtime when judging a plan.
    #[cfg_attr(feature = "serde", serde(with = "secs"))]
    pub(crate) margin: Duration,
    /// How long it takes to see a change in the table (the on-battery poll
    /// period; the engine raises it to that). Part of every estimate.
    #[cfg_attr(feature = "serde", serde(with = "secs"))]
    pub(crate) observe_lag: Duration,
    /// Whether this controller acts. Disarmed (`false`), the sequencer
    /// starts no episode and sends nothing: when power is at risk it says
    /// once, in the audit ([`crate::Audit::Note`], episode 0), what an
    /// armed controller would do; an episode resumed from the journal is
    /// held where it is, and the engine refuses operators' power commands.
    /// Polling, power readings, the plan and events go on. For setting a
    /// site up (`upsvisord` starts a fresh config disarmed, PowerChute and
    /// NUT's `upsmon` have no such state and act at once). Default `true`.
    #[cfg_attr(feature = "serde", serde(default = "armed_by_default"))]
    pub(crate) armed: bool,
    /// Commands run at named points of an outage (see [`Hook`]). The
    /// driver runs them through a [`crate::HookRunner`]; the sequencer owns
    /// when they start, how long they are waited for, and what a failure
    /// holds.
    #[cfg_attr(feature = "serde", serde(default))]
    pub(crate) hooks: Vec<Hook>,
}

#[cfg(feature = "serde")]
fn armed_by_default() -> bool {
    true
}

fn default_host_down_deadline() -> Duration {
    Duration::from_secs(900)
}

impl Default for SequencerConfig {
    fn default() -> Self {
        SequencerConfig {
            groups: Vec::new(),
            default_action: VmAction::Shutdown {
                timeout: Duration::from_secs(120),
            },
            use_maintenance: false,
            shutdown_hosts: true,
            host_down_wait: Duration::from_secs(120),
            host_down_deadline: default_host_down_deadline(),
            force_host_after: Some(Duration::from_secs(900)),
            final_action: FinalAction::ShutdownReturn {
                delay: Duration::from_secs(30),
            },
            controller_vm: None,
            commit_point: CommitPoint::FirstHostShutdown,
            max_in_flight: 32,
            per_host_in_flight: 4,
            call_deadline: Duration::from_secs(60),
            retries: 3,
            retry_backoff: Duration::from_secs(5),
            restore_host_wait: Duration::from_secs(900),
            restore_vm_wait: Duration::from_secs(180),
            margin: Duration::from_secs(60),
            observe_lag: Duration::from_secs(15),
            armed: true,
            hooks: Vec::new(),
        }
    }
}

impl SequencerConfig {
    /// Whether this controller sends power commands (see
    /// [`SequencerConfig::armed`]).
    pub fn is_armed(&self) -> bool {
        self.armed
    }
    /// The VM groups, in the order they were added.
    pub fn groups(&self) -> &[VmGroup] {
        &self.groups
    }
    /// Adds a group.
    pub fn group(&mut self, g: VmGroup) -> &mut Self {
        self.groups.push(g);
        self
    }
    /// Sets the default action.
    ///
    /// Action for VMs no group matches (order 0, not management).
    pub fn default_action(&mut self, a: VmAction) -> &mut Self {
        self.default_action = a;
        self
    }
    /// Sets maintenance mode use.
    ///
    /// Enter maintenance mode before shutting a host down.
    ///
    /// Default: `false`.
    pub fn use_maintenance(&mut self, yes: bool) -> &mut Self {
        self.use_maintenance = yes;
        self
    }
    /// Arms or disarms this controller.
    ///
    /// Whether this controller acts. Disarmed (`false`), the sequencer
    /// starts no episode and sends nothing: when power is at risk it says
    /// once, in the audit ([`crate::Audit::Note`], episode 0), what an
    /// armed controller would do; an episode resumed from the journal is
    /// held where it is, and the engine refuses operators' power commands.
    /// Polling, power readings, the plan and events go on. For setting a
    /// site up (`upsvisord` starts a fresh config disarmed, PowerChute and
    /// NUT's `upsmon` have no such state and act at once). Default `true`.
    pub fn armed(&mut self, yes: bool) -> &mut Self {
        self.armed = yes;
        self
    }
    /// Sets the final action.
    ///
    /// The power-device action.
    pub fn final_action(&mut self, a: FinalAction) -> &mut Self {
        self.final_action = a;
        self
    }
    /// Sets this controller's own VM (see [`SequencerConfig::controller_vm`]).
    ///
    /// This controller's own VM, when it runs inside the estate (the most
    /// common deployment: a VM on a host the UPS feeds). It is never
    /// stopped with its group; its host is shut down last, after the
    /// power-device command (whose delay is stretched to cover the host's
    /// shutdown), and that host's hypervisor stops the controller's VM with
    /// it (configure its autostop / `libvirt-guests` to shut guests down).
    ///
    /// Default: `None`.
    pub fn controller_vm(&mut self, m: Option<Matcher>) -> &mut Self {
        self.controller_vm = m;
        self
    }
    /// Whether `vm` matches this controller's own VM (see
    /// [`SequencerConfig::controller_in`], which is what the sequencer
    /// uses: a match must also be the only one).
    pub fn is_controller(&self, vm: &VmInfo) -> bool {
        self.controller_vm.as_ref().is_some_and(|m| m.matches(vm))
    }
    /// This controller's own VM in `table` and its host: the one VM that
    /// matches [`SequencerConfig::controller_vm`]. When two or more match
    /// (a shared virtual IP under the address fallback of
    /// [`MachineIdentity`], two VMs with the same name), which one is this
    /// machine is unknown, and none is spared from its group's shutdown:
    /// `None`, and the plan reports the controller as not found.
    pub fn controller_in<'a>(&self, table: &'a VmTable) -> Option<(&'a HostId, &'a VmInfo)> {
        let m = self.controller_vm.as_ref()?;
        let mut found = table.vms().filter(|(_, v)| m.matches(v));
        let first = found.next()?;
        found.next().is_none().then_some(first)
    }
    /// The delay for a device command that cuts power under this
    /// controller's own host: long enough for that host to shut down after
    /// the command is sent (`host_down_wait` + 30 s), or the configured one
    /// if longer.
    pub(crate) fn own_host_delay(&self, delay: Duration) -> Duration {
        delay.max(self.host_down_wait + Duration::from_secs(30))
    }
    /// Sets the commit point.
    ///
    /// When the episode can no longer be aborted.
    ///
    /// Default: `CommitPoint::FirstHostShutdown`.
    pub fn commit_point(&mut self, c: CommitPoint) -> &mut Self {
        self.commit_point = c;
        self
    }
    /// Sets the forced host deadline.
    ///
    /// Shut a host down even with VMs on, this long after the episode began
    /// (logged with the reason). `None`: never.
    ///
    /// Default: `Some(Duration::from_secs(900))`.
    pub fn force_host_after(&mut self, d: Option<Duration>) -> &mut Self {
        self.force_host_after = d;
        self
    }
    /// Sets the host-down wait.
    ///
    /// How long a host takes to halt after its shutdown is sent: after this
    /// long the next stage may begin (estimates and battery budgets use it
    /// too). Power is still cut only once the host is *seen* down, see
    /// [`SequencerConfig::host_down_deadline`].
    ///
    /// Default: `Duration::from_secs(120)`.
    pub fn host_down_wait(&mut self, d: Duration) -> &mut Self {
        self.host_down_wait = d;
        self
    }
    /// Sets whether hosts are shut down at all (default `true`; `false`:
    /// VMs only, then the power-device action).
    ///
    /// Shut hosts down at all.
    pub fn shutdown_hosts(&mut self, yes: bool) -> &mut Self {
        self.shutdown_hosts = yes;
        self
    }
    /// Sets how many commands may be in flight at once, overall (at
    /// least 1; default 32).
    ///
    /// Commands in flight at once, overall.
    pub fn max_in_flight(&mut self, n: usize) -> &mut Self {
        self.max_in_flight = n.max(1);
        self
    }
    /// Sets how many commands may be in flight at once on one host (at
    /// least 1; default 4).
    ///
    /// Commands in flight at once, per host.
    pub fn per_host_in_flight(&mut self, n: usize) -> &mut Self {
        self.per_host_in_flight = n.max(1);
        self
    }
    /// Sets how many times a command that failed transiently
    /// (unreachable, timeout) is retried.
    ///
    /// Retries of a command that failed transiently (unreachable, timeout).
    ///
    /// Default: `3`.
    pub fn retries(&mut self, n: u32) -> &mut Self {
        self.retries = n;
        self
    }
    /// Sets the pause before a retry (doubled per attempt for restore's
    /// power-ons, up to 30 s).
    ///
    /// Pause before a retry.
    ///
    /// Default: `Duration::from_secs(5)`.
    pub fn retry_backoff(&mut self, d: Duration) -> &mut Self {
        self.retry_backoff = d;
        self
    }
    /// Sets how long restore waits for a host to answer again.
    ///
    /// How long restore waits for a host to answer again.
    ///
    /// Default: `Duration::from_secs(900)`.
    pub fn restore_host_wait(&mut self, d: Duration) -> &mut Self {
        self.restore_host_wait = d;
        self
    }
    /// Sets how long restore waits for a started VM before the next group.
    ///
    /// How long restore waits for a started VM before going to the next group.
    ///
    /// Default: `Duration::from_secs(180)`.
    pub fn restore_vm_wait(&mut self, d: Duration) -> &mut Self {
        self.restore_vm_wait = d;
        self
    }
    /// Sets how long a change takes to show in the table (the engine
    /// raises it to the on-battery poll period). Part of every estimate.
    ///
    /// How long it takes to see a change in the table (the on-battery poll
    /// period; the engine raises it to that). Part of every estimate.
    ///
    /// Default: `Duration::from_secs(15)`.
    pub fn observe_lag(&mut self, d: Duration) -> &mut Self {
        self.observe_lag = d;
        self
    }
    /// Sets how long power waits for a host to be seen down.
    pub fn host_down_deadline(&mut self, d: Duration) -> &mut Self {
        self.host_down_deadline = d;
        self
    }
    /// The final action's own delay before it cuts power.
    pub(crate) fn final_delay(&self) -> Duration {
        match self.final_action {
            FinalAction::None => Duration::ZERO,
            FinalAction::ShutdownReturn { delay }
            | FinalAction::ShutdownStayOff { delay }
            | FinalAction::OutletsOff { delay } => delay,
        }
    }
    /// Sets the concurrency limits.
    pub fn in_flight(&mut self, overall: usize, per_host: usize) -> &mut Self {
        self.max_in_flight = overall.max(1);
        self.per_host_in_flight = per_host.max(1);
        self
    }
    /// Sets the per-call deadline.
    ///
    /// Deadline for one command.
    ///
    /// Default: `Duration::from_secs(60)`.
    pub fn call_deadline(&mut self, d: Duration) -> &mut Self {
        self.call_deadline = d;
        self
    }
    /// Sets the margin.
    ///
    /// Safety margin subtracted from the runtime when judging a plan.
    ///
    /// Default: `Duration::from_secs(60)`.
    pub fn margin(&mut self, d: Duration) -> &mut Self {
        self.margin = d;
        self
    }
    /// Adds a hook (see [`Hook`]).
    pub fn hook(&mut self, h: Hook) -> &mut Self {
        self.hooks.push(h);
        self
    }
    /// The hooks, in configuration order.
    pub fn hooks(&self) -> &[Hook] {
        &self.hooks
    }
    /// The hooks that run at `point`, in configuration order.
    pub(crate) fn hooks_at<'a>(&'a self, point: &'a HookPoint) -> impl Iterator<Item = &'a Hook> {
        self.hooks.iter().filter(move |h| &h.point == point)
    }
    /// Checks the hooks against the groups and `inventory`.
    ///
    /// # Errors
    /// A [`crate::ErrorKind::Config`] error naming the first hook with an
    /// empty or repeated name, a zero deadline, a group that is not
    /// configured (`default` is the group of VMs no other group matches),
    /// or a host that is not in the inventory.
    pub fn validate_hooks(&self, inventory: &crate::model::Inventory) -> crate::Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for h in &self.hooks {
            let at = format!("hooks.{}", h.name);
            if h.name.is_empty() {
                return Err(crate::Error::config("hooks", "a hook has an empty name"));
            }
            if !seen.insert(h.name.as_str()) {
                return Err(crate::Error::config(at, "two hooks have this name"));
            }
            if h.deadline.is_zero() {
                return Err(crate::Error::config(at, "the deadline must be above zero"));
            }
            match &h.point {
                HookPoint::BeforeGroup { group }
                    if group != "default" && !self.groups.iter().any(|g| &g.name == group) =>
                {
                    return Err(crate::Error::config(
                        at,
                        format!("no VM group named {group:?}"),
                    ));
                }
                HookPoint::BeforeHostShutdown { host } if inventory.host(host).is_none() => {
                    return Err(crate::Error::config(
                        at,
                        format!("no host {host} in the inventory"),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Groups sorted for stopping: non-management by order, then management
    /// by order. The default group has index `groups.len()`.
    pub(crate) fn stop_order(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..=self.groups.len()).collect();
        idx.sort_by_key(|&i| match self.groups.get(i) {
            Some(g) => (g.management, g.order, i),
            None => (false, 0, i),
        });
        idx
    }

    /// The group index of `vm` (`groups.len()` for the default group).
    pub fn group_of(&self, vm: &VmInfo) -> usize {
        let mut best: Option<(i32, usize)> = None;
        for (i, g) in self.groups.iter().enumerate() {
            if g.matchers.iter().any(|m| m.matches(vm)) && best.is_none_or(|(o, _)| g.order < o) {
                best = Some((g.order, i));
            }
        }
        best.map(|(_, i)| i).unwrap_or(self.groups.len())
    }

    /// A group's name, action and flags (`None` index = default group).
    pub(crate) fn group_props(&self, i: usize) -> (&str, VmAction, bool, bool) {
        match self.groups.get(i) {
            Some(g) => (&g.name, g.action, g.management, g.shed_on_battery),
            None => ("default", self.default_action, false, false),
        }
    }
}

#[cfg(feature = "serde")]
pub(crate) mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(feature = "serde")]
pub(crate) mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|o| o.map(Duration::from_secs))
    }
}
