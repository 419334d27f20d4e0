//! The dry-run plan: the stages an episode would run now, from the live
//! table, with their estimated duration (what `check` and the budget
//! test compare with the runtime left).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[cfg(feature = "serde")]
use super::config::secs;
use super::config::*;
use crate::model::{HostId, Inventory, VmId, VmInfo, VmTable};
use crate::{Capabilities, HostOp, VmOp};

/// One line of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct PlanItem {
    /// Host (for VM and host items).
    pub host: Option<HostId>,
    /// VM name and id, for VM items.
    pub vm: Option<(VmId, String)>,
    /// What will be done.
    pub action: String,
    /// Expected time for this item.
    #[cfg_attr(feature = "serde", serde(with = "secs"))]
    pub estimate: Duration,
    /// The hook's name, for a hook item (its deadline is the estimate).
    #[cfg_attr(feature = "serde", serde(default))]
    pub hook: Option<String>,
    /// For a host's shutdown: the hosts in this plan it waits for (its
    /// `after` list, within the episode's scope), in configuration order.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub after: Vec<HostId>,
}

/// One stage of a plan: its items run concurrently (within limits); stages
/// run one after another.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct PlanStage {
    /// Stage name.
    pub name: String,
    /// Items.
    pub items: Vec<PlanItem>,
    /// Expected time of the stage.
    #[cfg_attr(feature = "serde", serde(with = "secs"))]
    pub estimate: Duration,
}

/// The ordered shutdown plan for the live table, with its estimate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Plan {
    /// Stages in order.
    pub stages: Vec<PlanStage>,
    /// Sum of stage estimates.
    #[cfg_attr(feature = "serde", serde(with = "secs"))]
    pub estimate: Duration,
    /// Margin from the configuration.
    #[cfg_attr(feature = "serde", serde(with = "secs"))]
    pub margin: Duration,
    /// Whether this controller's own VM (when configured) was found in the
    /// table, in scope; `None` when none is configured.
    #[cfg_attr(feature = "serde", serde(default))]
    pub controller_found: Option<bool>,
    /// Hooks outside the stopping stages (on battery, after restore): they
    /// hold nothing and add nothing to the estimate.
    #[cfg_attr(feature = "serde", serde(default))]
    pub side_hooks: Vec<PlanItem>,
}

impl Plan {
    /// Whether the plan fits `runtime_s` minus the margin.
    pub fn fits(&self, runtime_s: u32) -> bool {
        self.estimate + self.margin <= Duration::from_secs(u64::from(runtime_s))
    }
}

/// Builds the shutdown plan for the hosts in `scope` from the live table.
/// `measured` holds guest shutdown times seen in earlier episodes; a VM
/// without one is estimated at its timeout (the worst case). `caps` holds
/// what each host's transport can do (a host without an entry: everything);
/// nothing is planned that a transport cannot do (see
/// [`super::Sequencer::set_capabilities`]).
pub fn plan(
    cfg: &SequencerConfig,
    table: &VmTable,
    scope: &BTreeSet<HostId>,
    measured: &BTreeMap<VmId, Duration>,
    caps: &BTreeMap<HostId, Capabilities>,
    inventory: &Inventory,
) -> Plan {
    let after = |h: &HostId| -> &[HostId] { inventory.host(h).map_or(&[], |e| e.after.as_slice()) };
    let can_vm = |h: &HostId, op: VmOp| caps.get(h).is_none_or(|c| c.supports_vm(op));
    let can_host = |h: &HostId, op: HostOp| caps.get(h).is_none_or(|c| c.supports_host(op));
    let mut stages = Vec::new();
    let own: Option<(&HostId, &VmInfo)> =
        cfg.controller_in(table).filter(|(h, _)| scope.contains(*h));
    let own_host = own.map(|(h, _)| h);
    let on_in_scope: Vec<(&HostId, &VmInfo)> = table
        .vms()
        .filter(|(h, v)| {
            scope.contains(*h) && v.power.is_on() && own.is_none_or(|(_, o)| o.id != v.id)
        })
        .collect();
    // This controller's own host goes last, after the power devices.
    let scope_wo_own: BTreeSet<HostId> = scope
        .iter()
        .filter(|h| Some(*h) != own_host)
        .cloned()
        .collect();
    let scope = &scope_wo_own;
    let mgmt_hosts: BTreeSet<&HostId> = on_in_scope
        .iter()
        .filter(|(_, v)| cfg.group_props(cfg.group_of(v)).2)
        .map(|(h, _)| *h)
        .collect();
    let host_stage = |name: &str, hosts: Vec<&HostId>| {
        // The shutdown order (`after`) within the stage: a host's rank is
        // one more than the highest of the hosts it waits for here; each
        // rank costs one more halt. (Validated acyclic.)
        let mut rank: BTreeMap<&HostId, u32> = BTreeMap::new();
        while rank.len() < hosts.len() {
            let before = rank.len();
            for h in &hosts {
                if rank.contains_key(*h) {
                    continue;
                }
                let preds: Vec<&HostId> = after(h).iter().filter(|p| hosts.contains(p)).collect();
                if preds.iter().all(|p| rank.contains_key(*p)) {
                    let r = preds
                        .iter()
                        .filter_map(|p| rank.get(*p))
                        .max()
                        .map_or(0, |r| r + 1);
                    rank.insert(h, r);
                }
            }
            if rank.len() == before {
                break; // a cycle: refused by `Inventory::validate`
            }
        }
        let mut hosts = hosts;
        hosts.sort_by_key(|h| rank.get(*h).copied().unwrap_or(0));
        let depth = rank.values().copied().max().unwrap_or(0) + 1;
        let mut items = Vec::new();
        // Per rank, the longest blocking hook before a shutdown there.
        let mut hook_wait: BTreeMap<u32, Duration> = BTreeMap::new();
        for h in hosts {
            if !can_host(h, HostOp::Shutdown) {
                items.push(PlanItem {
                    host: Some(h.clone()),
                    vm: None,
                    action: "stays up: its transport cannot shut it down".into(),
                    estimate: Duration::ZERO,
                    hook: None,
                    after: Vec::new(),
                });
                continue;
            }
            if cfg.use_maintenance && can_host(h, HostOp::EnterMaintenance) {
                items.push(PlanItem {
                    host: Some(h.clone()),
                    vm: None,
                    action: "enter maintenance".into(),
                    estimate: Duration::from_secs(5),
                    hook: None,
                    after: Vec::new(),
                });
            }
            let waits: Vec<&str> = after(h)
                .iter()
                .filter(|p| scope.contains(*p))
                .map(HostId::as_str)
                .collect();
            let (hooked, wait) = hook_items(
                cfg,
                &HookPoint::BeforeHostShutdown { host: h.clone() },
                Some(h),
            );
            items.extend(hooked);
            let r = rank.get(h).copied().unwrap_or(0);
            let slot = hook_wait.entry(r).or_default();
            *slot = (*slot).max(wait);
            items.push(PlanItem {
                host: Some(h.clone()),
                vm: None,
                action: if waits.is_empty() {
                    "shut down host".into()
                } else {
                    format!("shut down host (after {})", waits.join(", "))
                },
                estimate: cfg.host_down_wait,
                hook: None,
                after: waits.iter().map(|w| HostId::from(*w)).collect(),
            });
        }
        let est = if items.is_empty() {
            Duration::ZERO
        } else {
            // One table to confirm the host is empty (or to see maintenance
            // mode take), then the shutdown.
            (cfg.host_down_wait.max(cfg.observe_lag) + cfg.observe_lag) * depth
                + hook_wait.values().sum::<Duration>()
        };
        PlanStage {
            name: name.into(),
            items,
            estimate: est,
        }
    };
    let (trigger, trigger_wait) = hook_items(cfg, &HookPoint::Trigger, None);
    stages.push(PlanStage {
        name: "trigger hooks".into(),
        items: trigger,
        estimate: trigger_wait,
    });
    let mut hosts_done = false;
    for gi in cfg.stop_order() {
        let (name, action, mgmt, _) = cfg.group_props(gi);
        if mgmt && !hosts_done && cfg.shutdown_hosts {
            let hs: Vec<&HostId> = scope.iter().filter(|h| !mgmt_hosts.contains(h)).collect();
            stages.push(host_stage("hosts", hs));
            hosts_done = true;
        }
        let mut items = Vec::new();
        let mut per_host: BTreeMap<&HostId, Vec<Duration>> = BTreeMap::new();
        for (h, v) in on_in_scope.iter().filter(|(_, v)| cfg.group_of(v) == gi) {
            let (what, est) = match action {
                VmAction::Shutdown { .. } if !can_vm(h, VmOp::ShutdownGuest) => (
                    "power off (its host's transport cannot shut guests down)".to_string(),
                    Duration::from_secs(2),
                ),
                VmAction::Shutdown { timeout } => {
                    let est = measured.get(&v.id).copied().unwrap_or(timeout).min(timeout);
                    ("guest shutdown, power off after timeout".to_string(), est)
                }
                VmAction::PowerOff => ("power off".to_string(), Duration::from_secs(2)),
                VmAction::LeaveRunning => ("leave running".to_string(), Duration::ZERO),
            };
            per_host.entry(h).or_default().push(est);
            items.push(PlanItem {
                host: Some((*h).clone()),
                vm: Some((v.id.clone(), v.name.clone())),
                action: what,
                estimate: est,
                hook: None,
                after: Vec::new(),
            });
        }
        let (hooked, hook_wait) = hook_items(
            cfg,
            &HookPoint::BeforeGroup {
                group: name.to_owned(),
            },
            None,
        );
        if items.is_empty() && hooked.is_empty() {
            continue;
        }
        // Within a host, at most `per_host_in_flight` at once; hosts in
        // parallel, but never more than `max_in_flight` overall. Each round
        // also waits to see its VMs off, and a power off after a timeout
        // takes a moment more.
        let round_extra = cfg.observe_lag + Duration::from_secs(5);
        let rounds = |ts: &[Duration], width: usize| -> Duration {
            let mut ts = ts.to_vec();
            ts.sort_unstable_by(|a, b| b.cmp(a));
            ts.chunks(width.max(1))
                .map(|c| c.first().copied().unwrap_or_default() + round_extra)
                .sum()
        };
        let slowest_host = per_host
            .values()
            .map(|ts| rounds(ts, cfg.per_host_in_flight))
            .max()
            .unwrap_or_default();
        let all: Vec<Duration> = per_host.values().flatten().copied().collect();
        let est = if all.is_empty() {
            Duration::ZERO
        } else {
            slowest_host.max(rounds(&all, cfg.max_in_flight))
        } + hook_wait;
        let items = hooked.into_iter().chain(items).collect();
        stages.push(PlanStage {
            name: format!("group {name}"),
            items,
            estimate: est,
        });
    }
    if cfg.shutdown_hosts {
        let rest: Vec<&HostId> = if hosts_done {
            scope.iter().filter(|h| mgmt_hosts.contains(h)).collect()
        } else {
            scope.iter().collect()
        };
        stages.push(host_stage(
            if hosts_done {
                "management hosts"
            } else {
                "hosts"
            },
            rest,
        ));
    }
    let stretch = |d: Duration| {
        if own.is_some() {
            cfg.own_host_delay(d)
        } else {
            d
        }
    };
    let (final_name, final_est) = match cfg.final_action {
        FinalAction::None => ("none".to_string(), Duration::ZERO),
        FinalAction::ShutdownReturn { delay } => {
            ("UPS shutdown with return".to_string(), stretch(delay))
        }
        FinalAction::ShutdownStayOff { delay } => {
            ("UPS shutdown, stay off".to_string(), stretch(delay))
        }
        FinalAction::OutletsOff { delay } => ("outlets off".to_string(), stretch(delay)),
    };
    stages.push(PlanStage {
        name: "power devices".into(),
        items: vec![PlanItem {
            host: None,
            vm: None,
            action: final_name,
            estimate: final_est,
            hook: None,
            after: Vec::new(),
        }],
        estimate: final_est,
    });
    if let Some((h, v)) = own {
        let mut items = vec![PlanItem {
            host: Some(h.clone()),
            vm: Some((v.id.clone(), v.name.clone())),
            action: "this controller's own VM: stops with its host".into(),
            estimate: Duration::ZERO,
            hook: None,
            after: Vec::new(),
        }];
        if cfg.shutdown_hosts {
            // Not waited for: the device's cut comes regardless.
            let (mut hooked, _) = hook_items(
                cfg,
                &HookPoint::BeforeHostShutdown { host: h.clone() },
                Some(h),
            );
            for i in &mut hooked {
                i.action
                    .push_str(", not waited for (after the power-device command)");
                i.estimate = Duration::ZERO;
            }
            items.extend(hooked);
            items.push(PlanItem {
                host: Some(h.clone()),
                vm: None,
                action: "shut down this controller's own host, last".into(),
                estimate: Duration::ZERO,
                hook: None,
                after: Vec::new(),
            });
        }
        // Its time is inside the stretched device delay above.
        stages.push(PlanStage {
            name: "this controller, last".into(),
            items,
            estimate: Duration::ZERO,
        });
    }
    stages.retain(|s| !s.items.is_empty());
    let estimate = stages.iter().map(|s| s.estimate).sum();
    let side_hooks = [HookPoint::OnBattery, HookPoint::AfterRestore]
        .iter()
        .flat_map(|p| hook_items(cfg, p, None).0)
        .map(|mut i| {
            i.estimate = Duration::ZERO;
            i
        })
        .collect();
    Plan {
        side_hooks,
        controller_found: cfg.controller_vm.as_ref().map(|_| own.is_some()),
        stages,
        estimate,
        margin: cfg.margin,
    }
}

/// The plan items of the hooks at `point`, and how long the step waits for
/// them at worst: the longest deadline of a blocking one (hooks at one
/// point run at once; a non-blocking hook is never waited for, so it adds
/// nothing). A failed blocking hook holds its step longer, up to the
/// forced deadline: that is a failure, not the plan.
fn hook_items(
    cfg: &SequencerConfig,
    point: &HookPoint,
    host: Option<&HostId>,
) -> (Vec<PlanItem>, Duration) {
    let mut wait = Duration::ZERO;
    let items = cfg
        .hooks_at(point)
        .map(|h| {
            if h.holds() {
                wait = wait.max(h.deadline);
            }
            PlanItem {
                host: host.cloned(),
                vm: None,
                action: format!(
                    "hook {} ({point}; {}, deadline {} s)",
                    h.name,
                    if h.holds() {
                        "blocking: a failure holds this step"
                    } else {
                        "not waited for"
                    },
                    h.deadline.as_secs()
                ),
                estimate: if h.holds() {
                    h.deadline
                } else {
                    Duration::ZERO
                },
                hook: Some(h.name.clone()),
                after: Vec::new(),
            }
        })
        .collect();
    (items, wait)
}

#[cfg(test)]
mod tests {

    #[test]
    fn machine_identity_matches_the_bios_uuid_in_either_byte_order_before_any_ip() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        // vSphere config.uuid of a VM, and what a guest on older virtual
        // hardware reads from DMI (first three fields swapped).
        let vsphere = "564d379a-5654-a8b9-daab-2ed35a1b2c3d";
        let mut vm = VmInfo::new("inst-1", "upsvisor", crate::PowerState::PoweredOn);
        vm.bios_uuid = Some(vsphere.into());
        vm.ips = vec![ip("10.0.0.5"), ip("127.0.0.1")];
        for dmi in [
            "564D379A-5654-A8B9-DAAB-2ED35A1B2C3D",
            "9a374d56-5456-b9a8-daab-2ed35a1b2c3d",
        ] {
            let me = MachineIdentity {
                bios_uuid: Some(dmi.into()),
                ips: vec![],
            };
            assert!(Matcher::Identity(me).matches(&vm), "{dmi}");
        }
        // A UUID that differs elsewhere, or a placeholder, is another machine;
        // a known UUID is never overruled by a shared address.
        let other = MachineIdentity {
            bios_uuid: Some("564d379a-5654-a8b9-daab-2ed35a1b2c3e".into()),
            ips: vec![ip("10.0.0.5")],
        };
        assert!(!other.is(&vm));
        assert!(!uuid_same_machine(
            "00000000-0000-0000-0000-000000000000",
            "00000000-0000-0000-0000-000000000000"
        ));
        assert!(!uuid_same_machine("not-a-uuid", "not-a-uuid"));
        // Unknown UUID here: a routable address of ours decides; loopback
        // never does.
        let by_ip = MachineIdentity {
            bios_uuid: None,
            ips: vec![ip("10.0.0.5")],
        };
        assert!(by_ip.is(&vm));
        let lo = MachineIdentity {
            bios_uuid: None,
            ips: vec![ip("127.0.0.1")],
        };
        assert!(!lo.is(&vm));
    }

    use super::*;

    #[test]
    fn globs() {
        assert!(glob("vc*", "vcenter01"));
        assert!(glob("*db?", "prod-db1"));
        assert!(!glob("*db?", "prod-db12"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("naïve", "naïve"));
    }

    #[test]
    fn groups_pick_lowest_order_and_management_goes_last() {
        let mut cfg = SequencerConfig::default();
        cfg.group(
            VmGroup::new(
                "mgmt",
                -10,
                vec![Matcher::Name("vcenter*".into())],
                Duration::from_secs(300),
            )
            .management(true),
        )
        .group(VmGroup::new(
            "test",
            1,
            vec![Matcher::Tag("test".into())],
            Duration::from_secs(60),
        ))
        .group(VmGroup::new(
            "web",
            5,
            vec![Matcher::Name("web*".into())],
            Duration::from_secs(60),
        ));
        let mut vm = VmInfo::new("1", "web1", crate::PowerState::PoweredOn);
        assert_eq!(cfg.group_of(&vm), 2);
        vm.tags.push("test".into());
        assert_eq!(cfg.group_of(&vm), 1);
        // default group (index 3) at order 0 sits between test(1)? No: order 0 < 1.
        assert_eq!(cfg.stop_order(), vec![3, 1, 2, 0]);
    }

    /// The overall in-flight limit bounds a stage as well as the per-host
    /// one: 4 hosts x 2 VMs at 60 s with 2 at once overall is 4 rounds, not
    /// the one round the per-host limit alone would give.
    #[test]
    fn overall_in_flight_limit_lengthens_the_estimate() {
        use crate::{HostId, PowerState, VmTable};
        let timeout = Duration::from_secs(60);
        let hosts: Vec<HostId> = (0..4).map(|i| HostId::from(format!("h{i}"))).collect();
        let mut table = VmTable::with_hosts(hosts.iter());
        for (i, h) in hosts.iter().enumerate() {
            let rec = table.hosts.get_mut(h).unwrap();
            for j in 0..2 {
                let v = VmInfo::new(
                    format!("vm{i}-{j}"),
                    format!("vm{i}-{j}"),
                    PowerState::PoweredOn,
                );
                std::sync::Arc::make_mut(&mut rec.vms).insert(v.id.clone(), std::sync::Arc::new(v));
            }
        }
        let scope: BTreeSet<HostId> = hosts.iter().cloned().collect();
        let cfg = |overall| {
            let mut c = SequencerConfig::default();
            c.in_flight(overall, 4);
            c.default_action = VmAction::Shutdown { timeout };
            c.shutdown_hosts = false;
            c.final_action = FinalAction::None;
            c
        };
        let round = timeout + SequencerConfig::default().observe_lag + Duration::from_secs(5);
        let wide = plan(
            &cfg(32),
            &table,
            &scope,
            &BTreeMap::new(),
            &BTreeMap::new(),
            &Inventory::default(),
        );
        assert_eq!(wide.stages[0].estimate, round);
        let narrow = plan(
            &cfg(2),
            &table,
            &scope,
            &BTreeMap::new(),
            &BTreeMap::new(),
            &Inventory::default(),
        );
        assert_eq!(narrow.stages[0].estimate, round * 4);
        assert!(narrow.estimate > wide.estimate);
    }

    #[test]
    fn a_controller_identity_two_vms_share_spares_neither() {
        use crate::{HostId, PowerState, VmTable};
        let ip: std::net::IpAddr = "192.0.2.10".parse().unwrap();
        let hosts: Vec<HostId> = (0..2).map(|i| HostId::from(format!("h{i}"))).collect();
        let mut table = VmTable::with_hosts(hosts.iter());
        for (i, h) in hosts.iter().enumerate() {
            // A keepalived pair: both report the virtual IP.
            let mut v = VmInfo::new(format!("lb{i}"), format!("lb{i}"), PowerState::PoweredOn);
            v.ips = vec![ip];
            let rec = table.hosts.get_mut(h).unwrap();
            std::sync::Arc::make_mut(&mut rec.vms).insert(v.id.clone(), std::sync::Arc::new(v));
        }
        let scope: BTreeSet<HostId> = hosts.iter().cloned().collect();
        let me = MachineIdentity {
            bios_uuid: None,
            ips: vec![ip],
        };
        let mut cfg = SequencerConfig::default();
        cfg.controller_vm(Some(Matcher::Identity(me)));
        assert!(cfg.controller_in(&table).is_none());
        let p = plan(
            &cfg,
            &table,
            &scope,
            &BTreeMap::new(),
            &BTreeMap::new(),
            &Inventory::default(),
        );
        assert_eq!(p.controller_found, Some(false));
        let stopped: Vec<&str> = p
            .stages
            .iter()
            .flat_map(|s| &s.items)
            .filter_map(|i| i.vm.as_ref().map(|(_, n)| n.as_str()))
            .collect();
        assert!(
            stopped.contains(&"lb0") && stopped.contains(&"lb1"),
            "{stopped:?}"
        );
        // With one of them gone the other is this machine.
        std::sync::Arc::make_mut(&mut table.hosts.get_mut(&hosts[1]).unwrap().vms).clear();
        assert_eq!(
            cfg.controller_in(&table).map(|(_, v)| v.name.as_str()),
            Some("lb0")
        );
    }
}
