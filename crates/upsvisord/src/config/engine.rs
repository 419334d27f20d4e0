//! `[poller]`, `[policy]`, `[sequencer]` and `[[group]]`, and the core
//! settings and inventory they make.

use std::time::Duration;

use serde::Deserialize;
use upsvisor_core::{
    FinalAction, Inventory, Matcher, Outlet, PolicyConfig, PollerConfig, SequencerConfig, VmAction,
    VmGroup,
};

use super::Config;

/// `[poller]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct PollerSection {
    /// Poll period in seconds (the patent's `t`).
    pub period_s: u64,
    /// Poll period while on battery or during an episode.
    pub on_battery_period_s: u64,
    /// Deadline for one host's answer.
    pub host_deadline_s: u64,
    /// Hosts polled at once.
    pub max_concurrency: usize,
    /// How often power devices are read.
    pub status_interval_s: u64,
}

impl Default for PollerSection {
    fn default() -> Self {
        PollerSection {
            period_s: 60,
            on_battery_period_s: 15,
            host_deadline_s: 10,
            max_concurrency: 16,
            status_interval_s: 5,
        }
    }
}

/// `[policy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct PolicySection {
    /// Full shutdown after this long on battery (0 = off).
    pub on_battery_for_s: u64,
    /// Full shutdown when the runtime falls below this (0 = off).
    pub runtime_below_s: u32,
    /// Full shutdown when the charge falls below this (0 = off).
    pub charge_below_pct: f32,
    /// Act on low battery.
    pub on_low_battery: bool,
    /// Act on forced shutdown from the device.
    pub on_fsd: bool,
    /// Mains must be back this long before restore.
    pub stable_for_s: u64,
    /// Minimum charge before restore.
    pub restore_min_charge_pct: f32,
    /// Whether a device that reports no charge (Q1 serial UPSes, PDUs)
    /// passes the restore gate; off: unknown charge holds restore.
    pub restore_without_charge: bool,
    /// A device silent this long counts as lost.
    pub dead_time_s: u64,
    /// On-battery readings must hold this long to count.
    pub debounce_s: u64,
}

impl Default for PolicySection {
    fn default() -> Self {
        PolicySection {
            on_battery_for_s: 300,
            runtime_below_s: 600,
            charge_below_pct: 0.0,
            on_low_battery: true,
            on_fsd: true,
            stable_for_s: 120,
            restore_min_charge_pct: 0.0,
            restore_without_charge: false,
            dead_time_s: 60,
            debounce_s: 5,
        }
    }
}

/// `[sequencer]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct SequencerSection {
    /// Guest shutdown timeout for VMs in no group.
    pub default_timeout_s: u64,
    /// Put hosts in maintenance mode before shutting them down.
    pub use_maintenance: bool,
    /// Shut hosts down once empty.
    pub shutdown_hosts: bool,
    /// Force a host down after this long even with VMs on (0 = never).
    pub force_host_after_s: u64,
    /// How long a host takes to halt after its shutdown was sent; the next
    /// stage may begin after it.
    pub host_down_wait_s: u64,
    /// How long the power-device action waits for a host to be seen down
    /// (stop answering); past it power is cut anyway, logged as forced.
    pub host_down_deadline_s: u64,
    /// At restore, how long a host this episode took down may take to
    /// answer again (its out-of-band power-on is repeated meanwhile);
    /// past it the host is given up and its VMs stay off.
    pub restore_host_wait_s: u64,
    /// At restore, how long a VM's start may take to show in a poll
    /// before it counts as failed.
    pub restore_vm_wait_s: u64,
    /// This controller's own VM when it runs inside the estate: a VM name
    /// glob, `id:<vm id>`, or `auto` (this machine's SMBIOS UUID, read from
    /// `/sys/class/dmi/id/product_uuid` as root, else its addresses; see
    /// `upsvisord::identity`). Empty: it runs outside.
    pub controller_vm: String,
    /// `none`, `shutdown_return`, `shutdown_stay_off`, `outlets_off`.
    pub final_action: String,
    /// Delay for the final device action.
    pub final_delay_s: u64,
    /// Deadline for one command.
    pub call_deadline_s: u64,
    /// Safety margin the plan must leave against the runtime.
    pub margin_s: u64,
}

impl Default for SequencerSection {
    fn default() -> Self {
        SequencerSection {
            default_timeout_s: 120,
            use_maintenance: false,
            shutdown_hosts: true,
            force_host_after_s: 0,
            host_down_wait_s: 120,
            host_down_deadline_s: 900,
            restore_host_wait_s: 900,
            restore_vm_wait_s: 180,
            controller_vm: String::new(),
            final_action: "none".into(),
            final_delay_s: 60,
            call_deadline_s: 30,
            margin_s: 120,
        }
    }
}

/// `[[group]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GroupSection {
    /// Name.
    pub name: String,
    /// Lower goes first.
    #[serde(default)]
    pub order: i32,
    /// VM name globs (`*`, `?`).
    #[serde(rename = "match")]
    pub matches: Vec<String>,
    /// Guest shutdown timeout before power-off.
    #[serde(default = "default_group_timeout")]
    pub timeout_s: u64,
    /// Management VMs (vCenter, the controller): last.
    #[serde(default)]
    pub management: bool,
    /// Shut down as soon as mains is lost.
    #[serde(default)]
    pub shed_on_battery: bool,
}

fn default_group_timeout() -> u64 {
    120
}

impl Config {
    /// The inventory the engine gets.
    pub fn inventory(&self) -> Inventory {
        let hosts = self.hosts.iter().map(super::HostSection::entry).collect();
        let outlets = self
            .devices
            .iter()
            .flat_map(|d| {
                d.outlets.iter().map(|o| {
                    Outlet::new(
                        d.id.as_str(),
                        o.id.as_str(),
                        o.hosts
                            .iter()
                            .map(|h| upsvisor_core::HostId::from(h.as_str())),
                    )
                })
            })
            .collect();
        Inventory::new(hosts, outlets)
    }

    /// Poller settings.
    pub fn poller_config(&self) -> PollerConfig {
        let mut c = PollerConfig::default();
        c.period(Duration::from_secs(self.poller.period_s))
            .on_battery_period(Duration::from_secs(self.poller.on_battery_period_s))
            .host_deadline(Duration::from_secs(self.poller.host_deadline_s))
            .max_concurrency(self.poller.max_concurrency.max(1));
        c
    }

    /// Policy settings.
    pub fn policy_config(&self) -> PolicyConfig {
        let p = &self.policy;
        let nz = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        let mut c = PolicyConfig::default();
        c.on_battery_for(nz(p.on_battery_for_s))
            .runtime_below_s((p.runtime_below_s > 0).then_some(p.runtime_below_s))
            .charge_below_pct((p.charge_below_pct > 0.0).then_some(p.charge_below_pct))
            .stable_for(Duration::from_secs(p.stable_for_s))
            .restore_min_charge_pct(p.restore_min_charge_pct)
            .restore_without_charge(p.restore_without_charge)
            .dead_time(Duration::from_secs(p.dead_time_s.max(1)))
            .debounce(Duration::from_secs(p.debounce_s));
        c.on_low_battery(p.on_low_battery).on_fsd(p.on_fsd);
        c
    }

    /// Sequencer settings.
    pub fn sequencer_config(&self) -> SequencerConfig {
        let s = &self.sequencer;
        let delay = Duration::from_secs(s.final_delay_s);
        let final_action = match s.final_action.as_str() {
            "shutdown_return" => FinalAction::ShutdownReturn { delay },
            "shutdown_stay_off" => FinalAction::ShutdownStayOff { delay },
            "outlets_off" => FinalAction::OutletsOff { delay },
            _ => FinalAction::None,
        };
        let mut c = SequencerConfig::default();
        c.default_action(VmAction::Shutdown {
            timeout: Duration::from_secs(s.default_timeout_s),
        })
        .use_maintenance(s.use_maintenance)
        .final_action(final_action)
        .force_host_after(
            (s.force_host_after_s > 0).then(|| Duration::from_secs(s.force_host_after_s)),
        )
        .host_down_wait(Duration::from_secs(s.host_down_wait_s.max(1)))
        .host_down_deadline(Duration::from_secs(s.host_down_deadline_s.max(1)))
        .restore_host_wait(Duration::from_secs(s.restore_host_wait_s.max(1)))
        .restore_vm_wait(Duration::from_secs(s.restore_vm_wait_s.max(1)))
        .controller_vm(match s.controller_vm.trim() {
            "" => None,
            "auto" => {
                let (me, note) = crate::identity::this_machine();
                if let Some(n) = note {
                    tracing::warn!("{n}");
                }
                Some(upsvisor_core::Matcher::Identity(me))
            }
            v => Some(match v.strip_prefix("id:") {
                Some(id) => upsvisor_core::Matcher::Id(id.trim().into()),
                None => upsvisor_core::Matcher::Name(v.into()),
            }),
        })
        .call_deadline(Duration::from_secs(s.call_deadline_s.max(1)))
        .margin(Duration::from_secs(s.margin_s))
        .armed(self.armed)
        .shutdown_hosts(s.shutdown_hosts);
        for h in self
            .hooks
            .iter()
            .filter_map(crate::hooks::HookSection::to_core)
        {
            c.hook(h);
        }
        for g in &self.groups {
            c.group(
                VmGroup::new(
                    g.name.clone(),
                    g.order,
                    g.matches.iter().map(|m| Matcher::Name(m.clone())).collect(),
                    Duration::from_secs(g.timeout_s),
                )
                .management(g.management)
                .shed_on_battery(g.shed_on_battery),
            );
        }
        c
    }
}
