//! Simulated hosts and VMs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use upsvisor_core::{
    Capabilities, Clock, Error, HostId, HostInfo, HostInventory, HostOp, HostTransport, Instant,
    PowerState, Result, ToolsState, VmId, VmInfo, VmOp,
};

use crate::ups::UpsState;

/// How a guest OS answers a guest shutdown request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Guest {
    /// Shuts down, taking this long.
    Cooperative(Duration),
    /// Accepts the request and keeps running.
    Stubborn,
    /// Has no guest tools: guest operations fail with `ToolsUnavailable`.
    NoTools,
    /// No agent, but the guest OS obeys the ACPI power button, taking this
    /// long: the platform reports its tools state as `Unknown`, and a guest
    /// shutdown works. This is libvirt's shape: `virsh shutdown` sends an
    /// ACPI event by default and needs no guest agent (virsh(1), "shutdown":
    /// "the guest OS must respond to the ACPI event"), while `virsh dominfo`
    /// says nothing about an agent.
    Acpi(Duration),
    /// The platform reports guest tools running, but the agent in the
    /// guest no longer answers (a hung guest, a crashed agent whose state
    /// the host has not yet noticed). A guest shutdown waits for the agent
    /// and fails after [`STALE_AGENT_TIMEOUT`], as libvirt does: its
    /// guest-agent calls time out after 5 s by default and fail with
    /// "Guest agent is not responding" (libvirt API,
    /// `virDomainAgentSetResponseTimeout`: `VIR_DOMAIN_AGENT_RESPONSE_TIMEOUT_DEFAULT`
    /// is 5 s).
    StaleTools,
}

/// How long a guest shutdown to a [`Guest::StaleTools`] guest waits for
/// the agent before failing (libvirt's default agent response timeout).
pub const STALE_AGENT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a host answers requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HostBehavior {
    /// Answers after its latency.
    Normal,
    /// Fails every request (unreachable) after its latency.
    Fail,
    /// Never answers.
    Hang,
}

/// A simulated host's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimHostConfig {
    /// Delay before each answer.
    pub latency: Duration,
    /// Whether the host answers inventory in one request.
    pub bulk_inventory: bool,
    /// Time from power on to answering.
    pub boot_time: Duration,
    /// Time from a shutdown request to power off.
    pub shutdown_time: Duration,
    /// Refuses a shutdown (`InvalidState`) unless in maintenance mode. This
    /// is the ESXi rule for `esxcli system shutdown poweroff`, which "can be
    /// used only when the host is in maintenance mode" (VMware, esxcli
    /// command reference, `system shutdown poweroff`).
    pub shutdown_needs_maintenance: bool,
    /// On a shutdown request the host first asks its running guests to
    /// shut down (ESXi's VM autostop with "Guest Shutdown", libvirt-guests
    /// with `ON_SHUTDOWN=shutdown`); a guest that has not stopped when the
    /// host halts loses power.
    pub autostop: bool,
    /// Power commands (VM and host) are never answered, while inventory
    /// polls are: a management agent whose task queue is stuck (ESXi's
    /// `hostd` with a hung task, an NFS datastore that went away under
    /// `vmx`, `virsh` blocked on a domain job lock) still serves reads.
    /// Only the caller's own deadline ends such a call.
    pub hung_power_commands: bool,
    /// Power commands fail this often (percent, 0: never), drawn from
    /// `flaky_seed`: an overloaded management agent or a flapping link
    /// gives intermittent errors (ESXi `hostd` answering "503 Service
    /// Unavailable", SSH sessions reset). The failure is transient
    /// (`Unreachable`).
    pub flaky_pct: u8,
    /// Seed of the intermittent failures (same seed, same failures).
    pub flaky_seed: u64,
    /// Maintenance entry with running VMs waits for them instead of being
    /// refused: vSphere's `EnterMaintenanceMode_Task` does not complete
    /// until every running VM on the host has been powered off or
    /// evacuated (vSphere API reference, `HostSystem.EnterMaintenanceMode_Task`:
    /// "the host is in a state where no virtual machines are running and no
    /// provisioning operations are occurring"), and the host meanwhile
    /// refuses power-on. The request is not cancelled when the caller gives
    /// up: the host enters maintenance mode once its VMs are off.
    pub maintenance_entry_waits: bool,
    /// The host has an out-of-band power-on (a BMC: IPMI `chassis power
    /// on`, Redfish `ComputerSystem.Reset` `On`, or a NIC that wakes on a
    /// magic packet): [`HostOp::PowerOn`] boots it when it is halted and
    /// has power. Without one the request is `Unsupported`.
    pub power_on: bool,
    /// The host's firmware powers it on when power returns after a loss
    /// (the BIOS/BMC "restore on AC power loss" policy: "power on"). Off,
    /// it stays off ("stay off" / "last state" after a halt) until powered
    /// on out of band or by hand. Default: on.
    pub boots_on_power_return: bool,
    /// Product, version.
    pub info: HostInfo,
}

impl Default for SimHostConfig {
    fn default() -> Self {
        SimHostConfig {
            latency: Duration::from_millis(20),
            bulk_inventory: true,
            boot_time: Duration::from_secs(90),
            shutdown_time: Duration::from_secs(20),
            shutdown_needs_maintenance: false,
            autostop: false,
            hung_power_commands: false,
            flaky_pct: 0,
            flaky_seed: 0,
            maintenance_entry_waits: false,
            power_on: false,
            boots_on_power_return: true,
            info: HostInfo::new("Simulated ESXi", "8.0.2"),
        }
    }
}

impl SimHostConfig {
    /// Sets the latency.
    pub fn latency(mut self, d: Duration) -> Self {
        self.latency = d;
        self
    }
    /// Sets whether inventory is one request.
    pub fn bulk_inventory(mut self, yes: bool) -> Self {
        self.bulk_inventory = yes;
        self
    }
    /// Sets how long the host takes from power-on to answering (default
    /// 90 s).
    pub fn boot_time(mut self, d: Duration) -> Self {
        self.boot_time = d;
        self
    }
    /// Sets the time from a shutdown request to power off (real hosts may
    /// take many minutes: ESXi first stops its VMs per its autostop order).
    pub fn shutdown_time(mut self, d: Duration) -> Self {
        self.shutdown_time = d;
        self
    }
    /// Sets whether the host shuts its guests down before halting.
    pub fn autostop(mut self, yes: bool) -> Self {
        self.autostop = yes;
        self
    }
    /// Sets whether a shutdown is refused outside maintenance mode (ESXi).
    pub fn shutdown_needs_maintenance(mut self, yes: bool) -> Self {
        self.shutdown_needs_maintenance = yes;
        self
    }
    /// Sets whether the host has an out-of-band power-on.
    pub fn power_on(mut self, yes: bool) -> Self {
        self.power_on = yes;
        self
    }
    /// Sets whether the firmware powers the host on when power returns.
    pub fn boots_on_power_return(mut self, yes: bool) -> Self {
        self.boots_on_power_return = yes;
        self
    }
    /// Sets whether power commands hang (polls are still answered).
    pub fn hung_power_commands(mut self, yes: bool) -> Self {
        self.hung_power_commands = yes;
        self
    }
    /// Sets how often (percent) power commands fail, and the seed.
    pub fn flaky(mut self, pct: u8, seed: u64) -> Self {
        self.flaky_pct = pct.min(100);
        self.flaky_seed = seed;
        self
    }
    /// Sets whether maintenance entry waits for running VMs (vSphere)
    /// instead of being refused.
    pub fn maintenance_entry_waits(mut self, yes: bool) -> Self {
        self.maintenance_entry_waits = yes;
        self
    }
}

/// Who powered a VM on without being asked by the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Starter {
    /// An HA manager, restarting a VM that stopped.
    Ha,
    /// A cluster manager, restarting one of its own system VMs.
    ClusterManager,
    /// The host's autostart at boot.
    Autostart,
}

/// One VM power-on that no controller command caused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExternalStart {
    /// When.
    pub at: Instant,
    /// Which VM.
    pub vm: VmId,
    /// On which host.
    pub host: HostId,
    /// By whom.
    pub by: Starter,
}

/// Shape of a generated estate.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EstateSpec {
    /// Number of hosts (`esx01`, `esx02`, ...).
    pub hosts: usize,
    /// VMs per host.
    pub vms_per_host: usize,
    /// Host settings.
    pub host: SimHostConfig,
    /// One VM in this many ignores guest shutdown (0: none).
    pub stubborn_every: usize,
    /// One VM in this many has no guest tools (0: none).
    pub no_tools_every: usize,
    /// One VM in this many is powered off at the start (0: none).
    pub off_every: usize,
    /// Guest shutdown time of cooperative guests.
    pub guest_shutdown: Duration,
}

impl EstateSpec {
    /// `hosts` hosts with `vms_per_host` VMs each, default settings.
    pub fn new(hosts: usize, vms_per_host: usize) -> Self {
        EstateSpec {
            hosts,
            vms_per_host,
            host: SimHostConfig::default(),
            stubborn_every: 0,
            no_tools_every: 0,
            off_every: 0,
            guest_shutdown: Duration::from_secs(30),
        }
    }
    /// Sets the host settings.
    pub fn host(mut self, h: SimHostConfig) -> Self {
        self.host = h;
        self
    }
    /// One in `n` guests ignores shutdown.
    pub fn stubborn_every(mut self, n: usize) -> Self {
        self.stubborn_every = n;
        self
    }
    /// One in `n` guests has no tools.
    pub fn no_tools_every(mut self, n: usize) -> Self {
        self.no_tools_every = n;
        self
    }
    /// One in `n` VMs starts powered off.
    pub fn off_every(mut self, n: usize) -> Self {
        self.off_every = n;
        self
    }
}

/// Why a running VM lost power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LossCause {
    /// Its host was shut down with it still running.
    HostShutdown,
    /// Its host lost input power (UPS output or outlet off, battery flat).
    PowerLoss,
}

/// A VM that lost power while running: what upsvisor exists to prevent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UncleanLoss {
    /// When.
    pub at: Instant,
    /// Which VM.
    pub vm: VmId,
    /// On which host.
    pub host: HostId,
    /// Why.
    pub cause: LossCause,
}

/// Input power cut under a host whose OS was still running (answering):
/// what the sequencer must never do without a logged, forced decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostCut {
    /// When.
    pub at: Instant,
    /// Which host.
    pub host: HostId,
    /// The battery ran flat (no command cut it).
    pub battery_empty: bool,
}

/// One command a simulated host or UPS received, and what it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandRecord {
    /// When.
    pub at: Instant,
    /// Host or UPS.
    pub target: String,
    /// VM, if a VM command.
    pub vm: Option<VmId>,
    /// The operation.
    pub op: String,
    /// `ok` or the error.
    pub outcome: String,
}

#[derive(Debug, Clone)]
pub(crate) struct HostState {
    pub(crate) cfg: SimHostConfig,
    pub(crate) behavior: HostBehavior,
    /// Has power at its input.
    pub(crate) powered: bool,
    /// OS running and answering.
    pub(crate) up: bool,
    pub(crate) maintenance: bool,
    /// Maintenance entry requested, waiting for running VMs.
    pub(crate) entering_maintenance: bool,
    /// State of the intermittent-failure draw.
    pub(crate) flaky_rng: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct VmState {
    pub(crate) host: HostId,
    /// Shared with the answers handed out: a change copies it first if an
    /// answer (or the engine's table) still holds it ([`VmState::info_mut`]).
    pub(crate) info: Arc<VmInfo>,
    pub(crate) guest: Guest,
    /// HA restart: delay, restarts left.
    pub(crate) ha: Option<(Duration, u32)>,
    /// A cluster manager's system VM: restarted after this delay.
    pub(crate) system: Option<Duration>,
}

impl VmState {
    /// The record, to change: copied first if it is shared.
    pub(crate) fn info_mut(&mut self) -> &mut VmInfo {
        Arc::make_mut(&mut self.info)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    Migrate {
        vm: VmId,
        to: HostId,
    },
    /// The switchover of a live migration begun earlier.
    Switchover {
        vm: VmId,
        to: HostId,
    },
    GuestOff {
        vm: VmId,
    },
    HostBoot {
        host: HostId,
    },
    HostHalt {
        host: HostId,
    },
    /// An HA or cluster manager powers a VM back on.
    ExternalStart {
        vm: VmId,
        by: Starter,
    },
    Ups(crate::ups::UpsAction),
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) now: Instant,
    pub(crate) hosts: BTreeMap<HostId, HostState>,
    /// The VMs by key. Change a VM's host only through
    /// [`State::insert_vm`] and [`State::move_vm`], which keep `by_host`.
    pub(crate) vms: BTreeMap<VmId, VmState>,
    /// Each host's VMs (keys into `vms`), so a host's requests cost
    /// O(its VMs), not O(estate). A `BTreeSet` iterates in the same key
    /// order as `vms`, so answers list VMs in the same order as a scan.
    pub(crate) by_host: BTreeMap<HostId, BTreeSet<VmId>>,
    /// Some host may be entering maintenance mode (set whenever one
    /// starts; cleared when a scan finds none), so that `catch_up` need
    /// not scan every host on every request.
    pub(crate) maybe_entering: bool,
    pub(crate) actions: BTreeMap<(Instant, u64), Action>,
    pub(crate) seq: u64,
    pub(crate) log: Vec<CommandRecord>,
    /// VMs that lost power while running (the thing upsvisor prevents).
    pub(crate) unclean: Vec<UncleanLoss>,
    /// Power cut under running hosts.
    pub(crate) cuts: Vec<HostCut>,
    pub(crate) ups: Option<UpsState>,
    /// VMs powered on by something other than a controller's command.
    pub(crate) external_starts: Vec<ExternalStart>,
}

impl State {
    /// The VMs on `host`, in key order: the index's view of
    /// `vms.iter().filter(|v| v.host == host)`.
    pub(crate) fn vms_on<'a>(
        &'a self,
        host: &HostId,
    ) -> impl Iterator<Item = (&'a VmId, &'a VmState)> + 'a {
        self.by_host
            .get(host)
            .into_iter()
            .flatten()
            .filter_map(|id| self.vms.get_key_value(id))
    }

    /// The keys of the VMs on `host`, in key order.
    fn vm_keys_on(&self, host: &HostId) -> Vec<VmId> {
        self.by_host
            .get(host)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `host` runs a powered-on VM.
    fn runs_vms(&self, host: &HostId) -> bool {
        self.vms_on(host).any(|(_, v)| v.info.power.is_on())
    }

    /// Inserts (or replaces) a VM, keeping the host index right.
    pub(crate) fn insert_vm(&mut self, key: VmId, v: VmState) {
        let host = v.host.clone();
        if let Some(old) = self.vms.insert(key.clone(), v) {
            self.unindex(&old.host, &key);
        }
        self.by_host.entry(host).or_default().insert(key);
    }

    /// Moves a VM to another host, keeping the host index right.
    fn move_vm(&mut self, key: &VmId, to: HostId) {
        let Some(v) = self.vms.get_mut(key) else {
            return;
        };
        let from = std::mem::replace(&mut v.host, to.clone());
        if from != to {
            self.unindex(&from, key);
            self.by_host.entry(to).or_default().insert(key.clone());
        }
    }

    fn unindex(&mut self, host: &HostId, key: &VmId) {
        if let Some(s) = self.by_host.get_mut(host) {
            s.remove(key);
            if s.is_empty() {
                self.by_host.remove(host);
            }
        }
    }

    pub(crate) fn schedule(&mut self, at: Instant, a: Action) {
        let k = (at, self.seq);
        self.seq += 1;
        self.actions.insert(k, a);
    }

    /// Starts a guest's shutdown, to finish `after` from now, unless one is
    /// already under way. A guest that is stopping stays on its course: a
    /// repeated request (vSphere's `ShutdownGuest` again, which VMware Tools
    /// hands to the guest's own shutdown; the ACPI power button again, which
    /// systemd-logind maps to the `poweroff.target` job already queued,
    /// logind.conf(5) `HandlePowerKey`) does not start the shutdown over.
    /// The earlier finish stands.
    pub(crate) fn start_guest_shutdown(&mut self, vm: &VmId, after: Duration) {
        let pending = self
            .actions
            .values()
            .any(|a| matches!(a, Action::GuestOff { vm: v } if v == vm));
        if !pending {
            let at = self.now + after;
            self.schedule(at, Action::GuestOff { vm: vm.clone() });
        }
    }

    /// Applies everything due up to `now`, in time order.
    pub(crate) fn catch_up(&mut self, now: Instant) {
        loop {
            let action = self
                .actions
                .keys()
                .next()
                .copied()
                .filter(|(t, _)| *t <= now);
            let empty = self.ups_battery_empty_at().filter(|t| *t <= now);
            let t = match (action.map(|k| k.0), empty) {
                (Some(a), Some(e)) => a.min(e),
                (Some(x), None) | (None, Some(x)) => x,
                (None, None) => break,
            };
            self.advance_ups(t);
            self.now = self.now.max(t);
            if empty == Some(t) {
                self.ups_battery_empty();
            } else if let Some(k) = action.filter(|k| k.0 == t) {
                if let Some(a) = self.actions.remove(&k) {
                    self.apply(a);
                }
            }
        }
        self.advance_ups(now);
        self.now = self.now.max(now);
        self.finish_maintenance_entries();
    }

    /// A waiting maintenance entry completes once the host runs no VM.
    fn finish_maintenance_entries(&mut self) {
        if !self.maybe_entering {
            return;
        }
        let waiting: Vec<HostId> = self
            .hosts
            .iter()
            .filter(|(_, h)| h.entering_maintenance)
            .map(|(id, _)| id.clone())
            .collect();
        if waiting.is_empty() {
            self.maybe_entering = false;
        }
        for host in waiting {
            let running = self.runs_vms(&host);
            if let Some(h) = self.hosts.get_mut(&host) {
                if !h.up {
                    h.entering_maintenance = false;
                } else if !running {
                    h.entering_maintenance = false;
                    h.maintenance = true;
                }
            }
        }
    }

    /// A VM stopped by a request that did not go through its HA or
    /// cluster manager: the manager starts it again.
    ///
    /// - HA: Proxmox VE's HA manager keeps a resource in its requested
    ///   state; a VM whose requested state is `started` and that is found
    ///   stopped (shut down from inside the guest, or by a tool talking to
    ///   the node instead of to `ha-manager`) is started again (Proxmox VE
    ///   admin guide, "High Availability", resource state `started`: "the
    ///   CRM tries to start the resource"). vSphere HA's VM monitoring
    ///   resets a guest whose heartbeats stop in the same spirit.
    /// - System VMs: vSphere Cluster Services (vCLS) agent VMs are powered
    ///   back on by the ESX Agent Manager shortly after anything powers
    ///   them off (VMware KB 80472, "vSphere Cluster Services (vCLS)"),
    ///   except on a host entering or in maintenance mode, which they leave.
    fn after_stop(&mut self, vm: &VmId) {
        let now = self.now;
        let Some(v) = self.vms.get_mut(vm) else {
            return;
        };
        if let Some(d) = v.system {
            self.schedule(
                now + d,
                Action::ExternalStart {
                    vm: vm.clone(),
                    by: Starter::ClusterManager,
                },
            );
        } else if let Some((d, left)) = v.ha.as_mut() {
            if *left > 0 {
                *left -= 1;
                let d = *d;
                self.schedule(
                    now + d,
                    Action::ExternalStart {
                        vm: vm.clone(),
                        by: Starter::Ha,
                    },
                );
            }
        }
    }

    /// Powers a VM on for an external actor (HA, cluster manager,
    /// autostart): the host's own rules apply as to any power-on.
    pub(crate) fn external_start(&mut self, vm: &VmId, by: Starter) -> Result<()> {
        let Some(host) = self.vms.get(vm).map(|v| v.host.clone()) else {
            return Err(Error::not_found(format!("VM {vm}")));
        };
        if !self.hosts.get(&host).is_some_and(|h| h.up) {
            return Err(Error::unreachable(host.as_str(), "host is down"));
        }
        let r = vm_op(self, &host, vm, VmOp::PowerOn);
        let op = match by {
            Starter::Ha => "ha_restart",
            Starter::ClusterManager => "cluster_manager_restart",
            Starter::Autostart => "autostart",
        };
        self.record(host.as_str(), Some(vm), op, &r);
        if r.is_ok() {
            self.external_starts.push(ExternalStart {
                at: self.now,
                vm: vm.clone(),
                host,
                by,
            });
        }
        r
    }

    fn apply(&mut self, a: Action) {
        let now = self.now;
        match a {
            // A VM whose id is unique on its host only has no identity a
            // migration could keep (standalone nodes share no inventory):
            // the simulation does not move it.
            Action::Migrate { vm, .. } if self.vms.get(&vm).is_some_and(|v| v.info.host_local) => {}
            Action::Migrate { vm, to } => {
                // A live migration (vMotion, virsh migrate --live) copies
                // memory while the VM keeps running on the source, and
                // switches over at the end (VMware, "vMotion migration":
                // the VM runs on the source host until switchover). A
                // powered-off VM is only re-registered, at once.
                let live = self.vms.get(&vm).is_some_and(|v| v.info.power.is_on());
                if live {
                    if self.can_take(&to) {
                        self.schedule(now + LIVE_MIGRATION, Action::Switchover { vm, to });
                    }
                } else {
                    self.switch_over(&vm, to);
                }
            }
            Action::Switchover { vm, to } => self.switch_over(&vm, to),
            Action::GuestOff { vm } => {
                // A shutdown ends with the guest: no other request for it
                // may still fire into a later, restarted guest.
                self.actions
                    .retain(|_, a| !matches!(a, Action::GuestOff { vm: v } if *v == vm));
                if let Some(v) = self.vms.get_mut(&vm) {
                    if v.info.power == PowerState::PoweredOn {
                        v.info_mut().power = PowerState::PoweredOff;
                        v.info_mut().ips.clear();
                        // The guest is down, and its tools with it.
                        if v.info.tools == ToolsState::Running {
                            v.info_mut().tools = ToolsState::NotRunning;
                        }
                        self.after_stop(&vm);
                    }
                }
            }
            Action::ExternalStart { vm, by } => {
                let _ = self.external_start(&vm, by);
            }
            Action::HostBoot { host } => {
                if let Some(h) = self.hosts.get_mut(&host) {
                    if h.powered {
                        h.up = true;
                    }
                }
            }
            Action::HostHalt { host } => self.host_goes_dark(&host, now, LossCause::HostShutdown),
            Action::Ups(u) => self.apply_ups(u),
        }
    }

    /// Whether `host` takes a VM now: up, not in maintenance mode, and not
    /// shutting down (a migration into a halting host fails).
    fn can_take(&self, host: &HostId) -> bool {
        let halting = self
            .actions
            .values()
            .any(|a| matches!(a, Action::HostHalt { host: h } if h == host));
        !halting && self.hosts.get(host).is_some_and(|h| h.up && !h.maintenance)
    }

    fn switch_over(&mut self, vm: &VmId, to: HostId) {
        let to_ok = self.can_take(&to);
        if let Some(v) = self.vms.get(vm) {
            let from_up = self.hosts.get(&v.host).is_some_and(|h| h.up);
            // A live migration needs both ends up at switchover; a
            // powered-off VM can be re-registered only if the target is up.
            if to_ok && (from_up || !v.info.power.is_on()) {
                self.move_vm(vm, to);
            }
        }
    }

    /// The host stops: anything still running on it loses power uncleanly.
    pub(crate) fn host_goes_dark(&mut self, host: &HostId, now: Instant, cause: LossCause) {
        if let Some(h) = self.hosts.get_mut(host) {
            h.up = false;
            h.entering_maintenance = false;
        }
        let on_host = self.vm_keys_on(host);
        for id in &on_host {
            let Some(v) = self.vms.get_mut(id) else {
                continue;
            };
            if v.info.power == PowerState::PoweredOn {
                self.unclean.push(UncleanLoss {
                    at: now,
                    vm: id.clone(),
                    host: host.clone(),
                    cause,
                });
            }
            if v.info.power != PowerState::Suspended {
                v.info_mut().power = PowerState::PoweredOff;
            }
            v.info_mut().ips.clear();
            if v.info.tools == ToolsState::Running {
                v.info_mut().tools = ToolsState::NotRunning;
            }
        }
        // Pending guest shutdowns on a dark host never complete.
        self.actions.retain(|_, a| {
            !matches!(a, Action::GuestOff { vm } | Action::ExternalStart { vm, .. } if on_host.contains(vm))
                && !matches!(a, Action::HostHalt { host: h } if h == host)
        });
    }

    /// Power at a host's input changes.
    pub(crate) fn set_host_power(&mut self, host: &HostId, on: bool) {
        let now = self.now;
        let Some(h) = self.hosts.get_mut(host) else {
            return;
        };
        if h.powered == on {
            return;
        }
        h.powered = on;
        if !on && h.up {
            let battery_empty = self.ups.as_ref().is_some_and(|u| u.battery_flat());
            self.cuts.push(HostCut {
                at: now,
                host: host.clone(),
                battery_empty,
            });
        }
        if on && h.cfg.boots_on_power_return {
            let boot = h.cfg.boot_time;
            self.schedule(now + boot, Action::HostBoot { host: host.clone() });
        } else if on {
            // Stays off until powered on out of band.
        } else {
            self.host_goes_dark(host, now, LossCause::PowerLoss);
            self.actions
                .retain(|_, a| !matches!(a, Action::HostBoot { host: h } if h == host));
        }
    }

    /// Load of `hosts`: a running host draws 1, a halted but powered one a
    /// little standby power.
    pub(crate) fn load_of<'a>(&self, hosts: impl Iterator<Item = &'a HostId>) -> f64 {
        hosts
            .filter_map(|h| self.hosts.get(h))
            .map(|s| match (s.powered, s.up) {
                (true, true) => 1.0,
                (true, false) => 0.05,
                _ => 0.0,
            })
            .sum()
    }

    pub(crate) fn record(&mut self, target: &str, vm: Option<&VmId>, op: &str, r: &Result<()>) {
        self.log.push(CommandRecord {
            at: self.now,
            target: target.to_owned(),
            vm: vm.cloned(),
            op: op.to_owned(),
            outcome: match r {
                Ok(()) => "ok".into(),
                Err(e) => e.to_string(),
            },
        });
    }
}

/// How long a live migration runs before its switchover.
const LIVE_MIGRATION: Duration = Duration::from_secs(10);

pub(crate) fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The simulated estate: hosts, VMs and (optionally) a UPS on one timeline.
#[derive(Clone)]
pub struct Estate {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Estate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = lock(&self.state);
        f.debug_struct("Estate")
            .field("hosts", &st.hosts.len())
            .field("vms", &st.vms.len())
            .finish()
    }
}

impl Estate {
    /// An empty estate.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Estate {
            clock,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// An estate of `spec.hosts` hosts named `esx01`... each with
    /// `spec.vms_per_host` VMs named `vm-0001`... Ids are UUID-shaped and
    /// stable for a given spec.
    pub fn generate(clock: Arc<dyn Clock>, spec: &EstateSpec) -> Self {
        let e = Estate::new(clock);
        let oses = [
            "Ubuntu Linux (64-bit)",
            "Microsoft Windows Server 2022 (64-bit)",
            "Red Hat Enterprise Linux 9 (64-bit)",
            "Debian GNU/Linux 12 (64-bit)",
        ];
        let mut n = 0usize;
        for h in 0..spec.hosts {
            let host = HostId::new(format!("esx{:02}", h + 1));
            e.add_host(host.clone(), spec.host.clone());
            for _ in 0..spec.vms_per_host {
                n += 1;
                let every = |k: usize| k != 0 && n % k == 0;
                let power = if every(spec.off_every) {
                    PowerState::PoweredOff
                } else {
                    PowerState::PoweredOn
                };
                let guest = if every(spec.no_tools_every) {
                    Guest::NoTools
                } else if every(spec.stubborn_every) {
                    Guest::Stubborn
                } else {
                    Guest::Cooperative(spec.guest_shutdown)
                };
                let mut vm = VmInfo::new(
                    VmId::new(format!("4210{:04x}-5e1d-4c3b-9a7e-{:012x}", h + 1, n)),
                    format!("vm-{n:04}"),
                    power,
                );
                if power == PowerState::PoweredOn {
                    vm.ips = vec![IpAddr::V4(Ipv4Addr::new(
                        10,
                        (n >> 16) as u8,
                        (n >> 8) as u8,
                        n as u8,
                    ))];
                }
                vm.vcpus = Some(1 << (n % 3));
                vm.memory_mib = Some(1024 << (n % 4));
                vm.guest_os = Some(oses[n % oses.len()].to_owned());
                e.add_vm(&host, vm, guest);
            }
        }
        e
    }

    /// Adds a host, powered and up.
    pub fn add_host(&self, id: HostId, cfg: SimHostConfig) {
        let flaky_rng = cfg.flaky_seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        lock(&self.state).hosts.insert(
            id,
            HostState {
                cfg,
                behavior: HostBehavior::Normal,
                powered: true,
                up: true,
                maintenance: false,
                entering_maintenance: false,
                flaky_rng,
            },
        );
    }

    /// Adds a VM to a host. Tools state follows `guest`.
    ///
    /// With `info.host_local` set, `info.id` is the platform's id on this
    /// host only (a Proxmox VMID: every standalone node numbers from 100),
    /// so another host may hold a VM with the same id. The estate then keys
    /// it as the engine's table does, [`VmId::scoped`] (`<id>@<host>`): that
    /// key names it in [`Estate::truth`], the command log and every estate
    /// method, while its host's transport lists and accepts the bare id.
    pub fn add_vm(&self, host: &HostId, mut info: VmInfo, guest: Guest) {
        info.tools = match (guest, info.power) {
            (Guest::NoTools, _) => ToolsState::NotInstalled,
            (Guest::Acpi(_), _) => ToolsState::Unknown,
            (_, PowerState::PoweredOn) => ToolsState::Running,
            _ => ToolsState::NotRunning,
        };
        let key = if info.host_local {
            VmId::scoped(host, info.id.as_str())
        } else {
            info.id.clone()
        };
        lock(&self.state).insert_vm(
            key,
            VmState {
                host: host.clone(),
                info: Arc::new(info),
                guest,
                ha: None,
                system: None,
            },
        );
    }

    /// Puts a VM under an HA manager that starts it again `after` it was
    /// stopped by anything but the manager, at most `times` times (see
    /// `State::after_stop` for the platform rule). The restart obeys the
    /// host's rules: none while the host is halting, down or in (or
    /// entering) maintenance mode.
    pub fn set_ha_restart(&self, vm: &VmId, after: Duration, times: u32) {
        if let Some(v) = lock(&self.state).vms.get_mut(vm) {
            v.ha = Some((after, times));
        }
    }

    /// Makes a VM a cluster manager's system VM (vSphere's vCLS agents):
    /// powered on again `after` any stop, as often as it is stopped, except
    /// on a host that is halting or in (or entering) maintenance mode.
    pub fn set_system_vm(&self, vm: &VmId, after: Duration) {
        if let Some(v) = lock(&self.state).vms.get_mut(vm) {
            v.system = Some(after);
        }
    }

    /// Every power-on that no controller command caused (HA, cluster
    /// manager, autostart), in time order.
    pub fn external_starts(&self) -> Vec<ExternalStart> {
        let now = self.clock.now();
        let mut st = lock(&self.state);
        st.catch_up(now);
        st.external_starts.clone()
    }

    /// The clock this estate runs on.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// A transport to one host (it need not exist: requests then fail with
    /// `Unreachable`, as an unknown address would).
    pub fn transport(&self, host: &HostId) -> SimHost {
        SimHost {
            estate: self.clone(),
            host: host.clone(),
        }
    }

    /// Host ids.
    pub fn host_ids(&self) -> Vec<HostId> {
        lock(&self.state).hosts.keys().cloned().collect()
    }

    /// Moves `vm` to `to` at `at` (live migration: both hosts must be up).
    pub fn schedule_migration(&self, at: Instant, vm: &VmId, to: &HostId) {
        lock(&self.state).schedule(
            at,
            Action::Migrate {
                vm: vm.clone(),
                to: to.clone(),
            },
        );
    }

    /// Sets how a host answers.
    pub fn set_behavior(&self, host: &HostId, b: HostBehavior) {
        if let Some(h) = lock(&self.state).hosts.get_mut(host) {
            h.behavior = b;
        }
    }

    /// Sets whether a host shuts its guests down before halting (see
    /// [`SimHostConfig::autostop`]).
    pub fn set_autostop(&self, host: &HostId, yes: bool) {
        if let Some(h) = lock(&self.state).hosts.get_mut(host) {
            h.cfg.autostop = yes;
        }
    }

    /// Sets a host's latency.
    pub fn set_latency(&self, host: &HostId, d: Duration) {
        if let Some(h) = lock(&self.state).hosts.get_mut(host) {
            h.cfg.latency = d;
        }
    }

    /// Changes a guest's behaviour.
    pub fn set_guest(&self, vm: &VmId, g: Guest) {
        if let Some(v) = lock(&self.state).vms.get_mut(vm) {
            v.guest = g;
            match g {
                Guest::NoTools => v.info_mut().tools = ToolsState::NotInstalled,
                Guest::Acpi(_) => v.info_mut().tools = ToolsState::Unknown,
                Guest::StaleTools if v.info.power.is_on() => {
                    v.info_mut().tools = ToolsState::Running
                }
                _ => {}
            }
        }
    }

    /// Ground truth now: every VM with its host (due events applied first).
    pub fn truth(&self) -> BTreeMap<VmId, (HostId, VmInfo)> {
        let now = self.clock.now();
        let mut st = lock(&self.state);
        st.catch_up(now);
        st.vms
            .iter()
            .map(|(id, v)| (id.clone(), (v.host.clone(), VmInfo::clone(&v.info))))
            .collect()
    }

    /// Whether a host is up (answering), after applying due events.
    pub fn host_up(&self, host: &HostId) -> bool {
        let now = self.clock.now();
        let mut st = lock(&self.state);
        st.catch_up(now);
        st.hosts.get(host).is_some_and(|h| h.up)
    }

    /// Whether a host is in maintenance mode.
    pub fn host_in_maintenance(&self, host: &HostId) -> bool {
        lock(&self.state)
            .hosts
            .get(host)
            .is_some_and(|h| h.maintenance)
    }

    /// Every command received so far.
    pub fn command_log(&self) -> Vec<CommandRecord> {
        lock(&self.state).log.clone()
    }

    /// VMs that lost power while running.
    pub fn unclean_power_losses(&self) -> Vec<UncleanLoss> {
        let now = self.clock.now();
        let mut st = lock(&self.state);
        st.catch_up(now);
        st.unclean.clone()
    }

    /// Powers a VM on as its host's autostart does at boot (no request, no
    /// latency). False when the platform refuses: host down or halting, in
    /// maintenance mode, or the VM already on.
    pub fn autostart(&self, vm: &VmId) -> bool {
        let now = self.clock.now();
        let mut st = lock(&self.state);
        st.catch_up(now);
        st.external_start(vm, Starter::Autostart).is_ok()
    }

    /// Power cuts under hosts whose OS was still running.
    pub fn host_power_cuts(&self) -> Vec<HostCut> {
        let now = self.clock.now();
        let mut st = lock(&self.state);
        st.catch_up(now);
        st.cuts.clone()
    }

    /// Cuts or restores a host's input power directly (as a PDU outlet would).
    pub fn set_host_power(&self, host: &HostId, on: bool) {
        let now = self.clock.now();
        let mut st = lock(&self.state);
        st.catch_up(now);
        st.set_host_power(host, on);
    }
}

/// A [`HostTransport`] to one simulated host.
#[derive(Clone)]
pub struct SimHost {
    estate: Estate,
    host: HostId,
}

impl std::fmt::Debug for SimHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHost").field("host", &self.host).finish()
    }
}

impl SimHost {
    /// Waits the host's latency, then returns the state lock with due
    /// events applied, or the error the host would give.
    /// [`HostOp::PowerOn`] through the host's BMC: it answers while the
    /// host is off (the BMC runs on standby power), not while the host's
    /// own management agent would. A host already up, or already booting,
    /// is success (IPMI `chassis power on` and Redfish `On` on a running
    /// system change nothing).
    async fn power_on_out_of_band(&self) -> Result<()> {
        let latency = {
            let st = lock(&self.estate.state);
            match st.hosts.get(&self.host) {
                None => return Err(Error::unreachable(self.host.as_str(), "no such host")),
                Some(h) => h.cfg.latency,
            }
        };
        if !latency.is_zero() {
            self.estate.clock.sleep(latency).await;
        }
        let now = self.estate.clock.now();
        let mut st = lock(&self.estate.state);
        st.catch_up(now);
        let host = self.host.clone();
        let r = match st.hosts.get(&host) {
            None => Err(Error::unreachable(host.as_str(), "no such host")),
            Some(h) if !h.cfg.power_on => Err(Error::unsupported(format!(
                "{host} has no out-of-band power-on"
            ))),
            // The BMC is on the same feed: no power, no answer.
            Some(h) if !h.powered => Err(Error::unreachable(
                host.as_str(),
                "BMC not answering (no power)",
            )),
            // Up, or still halting (up until it halts): nothing to do now;
            // restore sends it again if the host stays off.
            Some(h) if h.up => Ok(()),
            Some(h) => {
                let boot = h.cfg.boot_time;
                let booting = st
                    .actions
                    .values()
                    .any(|a| matches!(a, Action::HostBoot { host: b } if *b == host));
                if !booting {
                    st.schedule(now + boot, Action::HostBoot { host: host.clone() });
                }
                Ok(())
            }
        };
        st.record(&host.to_string(), None, &HostOp::PowerOn.to_string(), &r);
        r
    }

    async fn request(&self) -> Result<MutexGuard<'_, State>> {
        let (behavior, latency) = {
            let st = lock(&self.estate.state);
            match st.hosts.get(&self.host) {
                None => return Err(Error::unreachable(self.host.as_str(), "no such host")),
                Some(h) => (h.behavior, h.cfg.latency),
            }
        };
        if behavior == HostBehavior::Hang {
            futures::future::pending::<()>().await;
        }
        if !latency.is_zero() {
            self.estate.clock.sleep(latency).await;
        }
        let now = self.estate.clock.now();
        let mut st = lock(&self.estate.state);
        st.catch_up(now);
        let Some(h) = st.hosts.get(&self.host) else {
            return Err(Error::unreachable(self.host.as_str(), "no such host"));
        };
        if behavior == HostBehavior::Fail {
            return Err(Error::unreachable(
                self.host.as_str(),
                "connection refused (simulated failure)",
            ));
        }
        if !h.up {
            return Err(Error::unreachable(self.host.as_str(), "host is down"));
        }
        Ok(st)
    }

    /// The estate's key for the id this host's transport was given: the
    /// scoped key of a host-local VM on this host, else the id itself.
    fn key(&self, st: &State, vm: &VmId) -> VmId {
        let scoped = VmId::scoped(&self.host, vm.as_str());
        match st.vms.get(&scoped) {
            Some(v) if v.info.host_local => scoped,
            _ => vm.clone(),
        }
    }

    /// Gate of every power command: a host with hung power commands never
    /// answers one (only the caller's deadline ends the call); a flaky one
    /// fails some, by its seeded draw.
    async fn power_gate(&self, what: &str, vm: Option<&VmId>) -> Result<()> {
        let hung = {
            let mut st = lock(&self.estate.state);
            let Some(h) = st.hosts.get_mut(&self.host) else {
                return Ok(());
            };
            let hung = h.cfg.hung_power_commands;
            let flaky = h.cfg.flaky_pct > 0 && {
                h.flaky_rng ^= h.flaky_rng >> 12;
                h.flaky_rng ^= h.flaky_rng << 25;
                h.flaky_rng ^= h.flaky_rng >> 27;
                h.flaky_rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % 100 < u64::from(h.cfg.flaky_pct)
            };
            let target = self.host.to_string();
            if hung {
                st.record(
                    &target,
                    vm,
                    what,
                    &Err(Error::unsupported("hung: never answered")),
                );
            } else if flaky {
                let e = Error::unreachable(
                    self.host.as_str(),
                    "connection reset (simulated intermittent failure)",
                );
                st.record(&target, vm, what, &Err(e.clone()));
                return Err(e);
            }
            hung
        };
        if hung {
            futures::future::pending::<()>().await;
        }
        Ok(())
    }

    fn vm_on_host<'a>(&self, st: &'a State, vm: &VmId) -> Result<&'a VmState> {
        st.vms
            .get(&self.key(st, vm))
            .filter(|v| v.host == self.host)
            .ok_or_else(|| Error::not_found(format!("VM {vm} on {}", self.host)))
    }
}

#[async_trait]
impl HostTransport for SimHost {
    fn capabilities(&self) -> Capabilities {
        let bulk = lock(&self.estate.state)
            .hosts
            .get(&self.host)
            .is_some_and(|h| h.cfg.bulk_inventory);
        Capabilities::all().with_bulk_inventory(bulk)
    }

    async fn host_info(&self) -> Result<HostInfo> {
        let st = self.request().await?;
        Ok(st
            .hosts
            .get(&self.host)
            .map(|h| h.cfg.info.clone())
            .unwrap_or_default())
    }

    async fn list_vm_ids(&self) -> Result<Vec<VmId>> {
        let st = self.request().await?;
        Ok(st
            .vms_on(&self.host)
            .map(|(id, v)| {
                if v.info.host_local {
                    v.info.id.clone()
                } else {
                    id.clone()
                }
            })
            .collect())
    }

    async fn vm_info(&self, vm: &VmId) -> Result<VmInfo> {
        let st = self.request().await?;
        Ok(VmInfo::clone(&self.vm_on_host(&st, vm)?.info))
    }

    async fn inventory(&self) -> Result<HostInventory> {
        let bulk = self.capabilities().bulk_inventory;
        if !bulk {
            // The per-VM flow, one request each, as a host without a bulk
            // call would need.
            // A NotFound VM is left out only when a fresh listing agrees
            // it is gone (it migrated away between the list and the read).
            return upsvisor_core::per_vm_inventory(self, || async {}).await;
        }
        let st = self.request().await?;
        let info = st
            .hosts
            .get(&self.host)
            .map(|h| h.cfg.info.clone())
            .unwrap_or_default();
        let vms = st.vms_on(&self.host).map(|(_, v)| v.info.clone()).collect();
        Ok(HostInventory::shared(info, vms))
    }

    async fn vm_power(&self, vm: &VmId, op: VmOp) -> Result<()> {
        let vm = &{
            let st = self.request().await?;
            self.key(&st, vm)
        };
        self.power_gate(&op.to_string(), Some(vm)).await?;
        let stale = {
            let st = lock(&self.estate.state);
            op == VmOp::ShutdownGuest
                && st.vms.get(vm).is_some_and(|v| {
                    v.host == self.host && v.guest == Guest::StaleTools && v.info.power.is_on()
                })
        };
        if stale {
            // The host forwards the request to an agent that never answers.
            self.estate.clock.sleep(STALE_AGENT_TIMEOUT).await;
            let now = self.estate.clock.now();
            let mut st = lock(&self.estate.state);
            st.catch_up(now);
            let name = st
                .vms
                .get(vm)
                .map(|v| v.info.name.clone())
                .unwrap_or_default();
            let r = Err(Error::tools_unavailable(format!(
                "{name}: guest agent is not responding"
            )));
            let target = self.host.to_string();
            st.record(&target, Some(vm), &op.to_string(), &r);
            return r;
        }
        let now = self.estate.clock.now();
        let mut st = lock(&self.estate.state);
        st.catch_up(now);
        if !st.hosts.get(&self.host).is_some_and(|h| h.up) {
            return Err(Error::unreachable(self.host.as_str(), "host is down"));
        }
        let r = vm_op(&mut st, &self.host, vm, op);
        let target = self.host.to_string();
        st.record(&target, Some(vm), &op.to_string(), &r);
        r
    }

    async fn host_power(&self, op: HostOp) -> Result<()> {
        if op == HostOp::PowerOn {
            return self.power_on_out_of_band().await;
        }
        drop(self.request().await?);
        self.power_gate(&op.to_string(), None).await?;
        let waits = {
            let now = self.estate.clock.now();
            let mut st = lock(&self.estate.state);
            st.catch_up(now);
            let st = &mut *st;
            let running = st.runs_vms(&self.host);
            match st.hosts.get_mut(&self.host) {
                Some(h)
                    if op == HostOp::EnterMaintenance
                        && h.cfg.maintenance_entry_waits
                        && running =>
                {
                    h.entering_maintenance = true;
                    st.maybe_entering = true;
                    true
                }
                _ => false,
            }
        };
        if waits {
            // The task runs until the host's VMs are off, then the host is
            // in maintenance mode (see `finish_maintenance_entries`).
            loop {
                self.estate.clock.sleep(Duration::from_secs(1)).await;
                let now = self.estate.clock.now();
                let mut st = lock(&self.estate.state);
                st.catch_up(now);
                let (up, maint) = st
                    .hosts
                    .get(&self.host)
                    .map_or((false, false), |h| (h.up, h.maintenance));
                let target = self.host.to_string();
                if maint {
                    st.record(&target, None, &op.to_string(), &Ok(()));
                    return Ok(());
                }
                if !up {
                    return Err(Error::unreachable(self.host.as_str(), "host is down"));
                }
            }
        }
        let now = self.estate.clock.now();
        let mut st = lock(&self.estate.state);
        st.catch_up(now);
        if !st.hosts.get(&self.host).is_some_and(|h| h.up) {
            return Err(Error::unreachable(self.host.as_str(), "host is down"));
        }
        let r = match op {
            HostOp::EnterMaintenance => {
                let running = st
                    .vms_on(&self.host)
                    .filter(|(_, v)| v.info.power.is_on())
                    .count();
                if running > 0 {
                    Err(Error::invalid_state(format!(
                        "{} has {running} running VM(s); maintenance mode needs them off or moved",
                        self.host
                    )))
                } else {
                    set_maint(&mut st, &self.host, true);
                    Ok(())
                }
            }
            HostOp::ExitMaintenance => {
                set_maint(&mut st, &self.host, false);
                if let Some(h) = st.hosts.get_mut(&self.host) {
                    h.entering_maintenance = false;
                }
                Ok(())
            }
            HostOp::Shutdown | HostOp::Reboot
                if st
                    .hosts
                    .get(&self.host)
                    .is_some_and(|h| h.cfg.shutdown_needs_maintenance && !h.maintenance) =>
            {
                Err(Error::invalid_state(format!(
                    "{}: the host is not in maintenance mode",
                    self.host
                )))
            }
            HostOp::Shutdown | HostOp::ShutdownForce | HostOp::Reboot => {
                let d = st
                    .hosts
                    .get(&self.host)
                    .map(|h| h.cfg.shutdown_time)
                    .unwrap_or_default();
                if st.hosts.get(&self.host).is_some_and(|h| h.cfg.autostop) {
                    let guests: Vec<(VmId, Duration)> = st
                        .vms_on(&self.host)
                        .filter(|(_, v)| v.info.power.is_on())
                        .filter_map(|(id, v)| match v.guest {
                            Guest::Cooperative(g) | Guest::Acpi(g) => Some((id.clone(), g)),
                            _ => None,
                        })
                        .collect();
                    for (vm, g) in guests {
                        st.start_guest_shutdown(&vm, g);
                    }
                }
                st.schedule(
                    now + d,
                    Action::HostHalt {
                        host: self.host.clone(),
                    },
                );
                if op == HostOp::Reboot {
                    let boot = st
                        .hosts
                        .get(&self.host)
                        .map(|h| h.cfg.boot_time)
                        .unwrap_or_default();
                    st.schedule(
                        now + d + boot,
                        Action::HostBoot {
                            host: self.host.clone(),
                        },
                    );
                }
                Ok(())
            }
            _ => Err(Error::unsupported(format!("host operation {op}"))),
        };
        let target = self.host.to_string();
        st.record(&target, None, &op.to_string(), &r);
        r
    }
}

fn set_maint(st: &mut State, host: &HostId, on: bool) {
    if let Some(h) = st.hosts.get_mut(host) {
        h.maintenance = on;
    }
}

fn vm_op(st: &mut State, host: &HostId, vm: &VmId, op: VmOp) -> Result<()> {
    let v = st
        .vms
        .get_mut(vm)
        .filter(|v| &v.host == host)
        .ok_or_else(|| Error::not_found(format!("VM {vm} on {host}")))?;
    let on = v.info.power == PowerState::PoweredOn;
    match op {
        VmOp::ShutdownGuest | VmOp::RebootGuest => {
            if !on {
                // Idempotent: an off VM is already where shutdown leads.
                return if op == VmOp::ShutdownGuest {
                    Ok(())
                } else {
                    Err(Error::invalid_state(format!(
                        "{} is not running",
                        v.info.name
                    )))
                };
            }
            match v.guest {
                Guest::NoTools => Err(Error::tools_unavailable(v.info.name.clone())),
                // (Transports wait for the agent first; a direct call finds
                // it silent at once.)
                Guest::StaleTools => Err(Error::tools_unavailable(format!(
                    "{}: guest agent is not responding",
                    v.info.name
                ))),
                Guest::Stubborn => Ok(()),
                Guest::Cooperative(d) | Guest::Acpi(d) => {
                    if op == VmOp::ShutdownGuest {
                        st.start_guest_shutdown(vm, d);
                    }
                    Ok(())
                }
            }
        }
        VmOp::PowerOff => {
            v.info_mut().power = PowerState::PoweredOff;
            v.info_mut().ips.clear();
            if v.info.tools == ToolsState::Running {
                v.info_mut().tools = ToolsState::NotRunning;
            }
            let id = vm.clone();
            st.actions
                .retain(|_, a| *a != Action::GuestOff { vm: id.clone() });
            if on {
                st.after_stop(&id);
            }
            Ok(())
        }
        VmOp::PowerOn => {
            // vSphere's InvalidPowerState fault; virsh's "Domain is already
            // active"; qm's "VM ... already running".
            if on {
                return Err(Error::invalid_state(format!(
                    "{} is already powered on",
                    v.info.name
                )));
            }
            if st
                .hosts
                .get(host)
                .is_some_and(|h| h.maintenance || h.entering_maintenance)
            {
                return Err(Error::invalid_state(format!(
                    "{host} is in maintenance mode"
                )));
            }
            // A host that has been told to shut down starts nothing new.
            if st
                .actions
                .values()
                .any(|a| matches!(a, Action::HostHalt { host: h } if h == host))
            {
                return Err(Error::invalid_state(format!("{host} is shutting down")));
            }
            let Some(v) = st.vms.get_mut(vm) else {
                return Err(Error::not_found(format!("VM {vm}")));
            };
            v.info_mut().power = PowerState::PoweredOn;
            v.info_mut().tools = match v.guest {
                Guest::NoTools => ToolsState::NotInstalled,
                Guest::Acpi(_) => ToolsState::Unknown,
                _ => ToolsState::Running,
            };
            Ok(())
        }
        VmOp::Reset => {
            if on {
                Ok(())
            } else {
                Err(Error::invalid_state(format!(
                    "{} is not running",
                    v.info.name
                )))
            }
        }
        VmOp::Suspend => {
            if on {
                v.info_mut().power = PowerState::Suspended;
                v.info_mut().ips.clear();
            }
            Ok(())
        }
        _ => Err(Error::unsupported(format!("VM operation {op}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use upsvisor_core::{ErrorKind, SimClock};

    fn one_host(clock: &SimClock, cfg: SimHostConfig) -> (Estate, SimHost, Vec<VmId>) {
        let e = Estate::generate(
            Arc::new(clock.clone()),
            &EstateSpec::new(1, 3).host(cfg.latency(Duration::ZERO)),
        );
        let h = e.transport(&"esx01".into());
        let vms = e.truth().into_keys().collect();
        (e, h, vms)
    }

    /// The host index agrees with a scan of every VM's host.
    fn index_agrees(e: &Estate) {
        let st = lock(&e.state);
        let mut scan: BTreeMap<HostId, BTreeSet<VmId>> = BTreeMap::new();
        for (id, v) in &st.vms {
            scan.entry(v.host.clone()).or_default().insert(id.clone());
        }
        assert_eq!(st.by_host, scan);
    }

    #[test]
    fn the_host_index_follows_migrations_and_re_registrations() {
        let clock = SimClock::new();
        let e = Estate::generate(
            Arc::new(clock.clone()),
            &EstateSpec::new(3, 2)
                .off_every(2)
                .host(SimHostConfig::default().latency(Duration::ZERO)),
        );
        let (a, b, c): (HostId, HostId, HostId) = ("esx01".into(), "esx02".into(), "esx03".into());
        let on_a: Vec<VmId> = clock.block_on(e.transport(&a).list_vm_ids()).unwrap();
        // One running VM (live: switches over after 10 s), one off (at once).
        for vm in &on_a {
            e.schedule_migration(clock.now(), vm, &b);
        }
        // Host-local ids: the same id on two hosts, two VMs.
        for h in [&a, &c] {
            let mut v = VmInfo::new("qemu/100", "local", PowerState::PoweredOn);
            v.host_local = true;
            e.add_vm(h, v, Guest::Stubborn);
        }
        clock.advance_to(clock.now() + Duration::from_secs(11));
        index_agrees(&e);
        let listed = |h: &HostId| clock.block_on(e.transport(h).list_vm_ids()).unwrap();
        assert_eq!(listed(&a), vec![VmId::from("qemu/100")]);
        assert_eq!(listed(&b).len(), 4);
        assert!(on_a.iter().all(|v| listed(&b).contains(v)));
        // Registering an id again elsewhere moves it.
        e.add_vm(
            &c,
            VmInfo::new(on_a[0].as_str(), "again", PowerState::PoweredOff),
            Guest::Stubborn,
        );
        index_agrees(&e);
        assert!(!listed(&b).contains(&on_a[0]));
        let inv = clock.block_on(e.transport(&c).inventory()).unwrap();
        let ids: Vec<_> = inv.vms.iter().map(|v| v.id.clone()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "VMs in key order, as a scan lists them");
        assert_eq!(ids.len(), 4);
    }

    #[test]
    fn hung_power_commands_never_answer_while_polls_do() {
        let clock = SimClock::new();
        let (_, h, vms) = one_host(&clock, SimHostConfig::default().hung_power_commands(true));
        assert!(h.inventory().now_or_never().is_some_and(|r| r.is_ok()));
        assert!(h.vm_power(&vms[0], VmOp::PowerOff).now_or_never().is_none());
        assert!(h.host_power(HostOp::Shutdown).now_or_never().is_none());
    }

    #[test]
    fn flaky_commands_fail_some_of_the_time_by_seed() {
        let run = |seed| {
            let clock = SimClock::new();
            let (_, h, vms) = one_host(&clock, SimHostConfig::default().flaky(50, seed));
            (0..40)
                .map(|_| clock.block_on(h.vm_power(&vms[0], VmOp::Reset)).is_ok())
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7), "same seed, same failures");
        assert!(a.iter().any(|ok| *ok) && a.iter().any(|ok| !*ok), "{a:?}");
    }

    #[test]
    fn ha_restarts_a_stopped_vm_but_not_on_a_halting_host() {
        let clock = SimClock::new();
        let (e, h, vms) = one_host(&clock, SimHostConfig::default());
        e.set_ha_restart(&vms[0], Duration::from_secs(20), 2);
        clock.block_on(h.vm_power(&vms[0], VmOp::PowerOff)).unwrap();
        clock.advance_to(clock.now() + Duration::from_secs(21));
        assert!(e.truth()[&vms[0]].1.power.is_on());
        assert_eq!(e.external_starts().len(), 1);
        assert_eq!(e.external_starts()[0].by, Starter::Ha);
        // Stopped again, then the host is told to shut down: no restart.
        clock.block_on(h.vm_power(&vms[0], VmOp::PowerOff)).unwrap();
        clock.block_on(h.host_power(HostOp::ShutdownForce)).unwrap();
        clock.advance_to(clock.now() + Duration::from_secs(21));
        assert!(!e.truth()[&vms[0]].1.power.is_on());
        assert_eq!(e.external_starts().len(), 1);
    }

    #[test]
    fn system_vms_come_back_until_the_host_is_in_maintenance() {
        let clock = SimClock::new();
        let (e, h, vms) = one_host(
            &clock,
            SimHostConfig::default().maintenance_entry_waits(true),
        );
        e.set_system_vm(&vms[0], Duration::from_secs(60));
        for _ in 0..3 {
            clock.block_on(h.vm_power(&vms[0], VmOp::PowerOff)).unwrap();
            clock.advance_to(clock.now() + Duration::from_secs(61));
            assert!(e.truth()[&vms[0]].1.power.is_on());
        }
        for v in &vms {
            clock.block_on(h.vm_power(v, VmOp::PowerOff)).unwrap();
        }
        clock
            .block_on(h.host_power(HostOp::EnterMaintenance))
            .unwrap();
        clock.advance_to(clock.now() + Duration::from_secs(120));
        assert!(!e.truth()[&vms[0]].1.power.is_on());
        assert_eq!(e.external_starts().len(), 3);
    }

    #[test]
    fn maintenance_entry_waits_for_running_vms_and_blocks_power_on() {
        let clock = SimClock::new();
        let (e, h, vms) = one_host(
            &clock,
            SimHostConfig::default().maintenance_entry_waits(true),
        );
        clock.block_on(h.vm_power(&vms[2], VmOp::PowerOff)).unwrap();
        clock
            .block_on(h.vm_power(&vms[0], VmOp::ShutdownGuest))
            .unwrap();
        clock
            .block_on(h.vm_power(&vms[1], VmOp::ShutdownGuest))
            .unwrap();
        let t0 = clock.now();
        let mut entering = Box::pin(h.host_power(HostOp::EnterMaintenance));
        assert!(entering.as_mut().now_or_never().is_none());
        let err = clock
            .block_on(h.vm_power(&vms[2], VmOp::PowerOn))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidState);
        clock.block_on(entering).unwrap();
        assert!(clock.now() >= t0 + Duration::from_secs(30));
        assert!(e.host_in_maintenance(&"esx01".into()));
    }

    #[test]
    fn stale_tools_report_running_and_the_agent_times_out() {
        let clock = SimClock::new();
        let (e, h, vms) = one_host(&clock, SimHostConfig::default());
        e.set_guest(&vms[0], Guest::StaleTools);
        assert_eq!(e.truth()[&vms[0]].1.tools, ToolsState::Running);
        let t0 = clock.now();
        let err = clock
            .block_on(h.vm_power(&vms[0], VmOp::ShutdownGuest))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ToolsUnavailable);
        assert_eq!(clock.now(), t0 + STALE_AGENT_TIMEOUT);
        assert!(e.truth()[&vms[0]].1.power.is_on());
    }

    /// Seed 652075051: a second shutdown request during a shutdown in
    /// progress must not fire again into the guest once it was started anew.
    #[test]
    fn a_repeated_guest_shutdown_does_not_stop_the_restarted_guest() {
        let clock = SimClock::new();
        let (e, h, vms) = one_host(&clock, SimHostConfig::default());
        e.set_guest(&vms[0], Guest::Cooperative(Duration::from_secs(100)));
        clock
            .block_on(h.vm_power(&vms[0], VmOp::ShutdownGuest))
            .unwrap();
        clock.advance_to(clock.now() + Duration::from_secs(60));
        // Asked again 60 s in: the first request's finish stands.
        clock
            .block_on(h.vm_power(&vms[0], VmOp::ShutdownGuest))
            .unwrap();
        clock.advance_to(clock.now() + Duration::from_secs(41));
        assert!(!e.truth()[&vms[0]].1.power.is_on());
        clock.block_on(h.vm_power(&vms[0], VmOp::PowerOn)).unwrap();
        // Past where a restarted second shutdown would have ended.
        clock.advance_to(clock.now() + Duration::from_secs(100));
        assert!(e.truth()[&vms[0]].1.power.is_on());
    }
}
