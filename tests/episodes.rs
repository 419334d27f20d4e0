//! Randomised outage episodes on the simulated estate, with the simulated
//! clock: topology, guests (cooperative, stubborn, tool-less, ACPI-only,
//! stale tools), migrations during the episode, failing and slow hosts,
//! hosts whose power commands hang or fail some of the time, HA-managed
//! VMs and cluster system VMs that come back after a stop, power returning
//! (or flapping, or flickering) at a random moment, UPS quirks (no charge
//! or runtime, lingering LB, shutdown.return ignored on line, output back
//! after a flat battery), the controller inside the estate, and a
//! controller restart at a random moment. Invariants are checked after
//! every 5 s slice and at the end; the summary says how often each
//! behaviour was drawn and each invariant exercised.
//!
//! A seed is first drawn into a [`Scenario`]: plain data (topology, guests,
//! the UPS script, faults, the restart moment, the configuration), which is
//! then run. A failing seed prints its scenario as JSON and writes it to
//! `target/tmp/failed-scenarios/`; saved scenarios under `tests/scenarios/`
//! are replayed by `saved_scenarios`, so a regression outlives any change
//! to the generator.
//!
//! - `UPSVISOR_EPISODES=N` sets the count (default 10,000); the ignored
//!   `stress_episodes` runs 100,000.
//! - `UPSVISOR_SEED_BASE=B` starts the window at seed B (default 0);
//!   `scripts/test` draws the base from a hash of the source tree (new
//!   seeds for every change, the same for a given tree) and prints it.
//! - `UPSVISOR_SEED=S` replays one seed; `UPSVISOR_TRACE=1` prints its audit
//!   and command log.
//! - `UPSVISOR_THREADS=N` sets the worker threads (default: the cores).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use upsvisor::sim::{
    Estate, Guest, HostBehavior, LossCause, SimHostConfig, SimUps, Starter, UpsConfig, UpsScript,
    UpsStep,
};
use upsvisor::{
    Audit, AuditEntry, CommitPoint, DeviceId, Engine, EngineConfig, EngineEvent, FinalAction,
    HostEntry, HostId, Instant, Inventory, Matcher, MemJournal, OutletId, PolicyConfig,
    PollerConfig, PowerState, SequencerConfig, SimClock, TransportKind, VmGroup, VmId, VmInfo,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, a: u64, b: u64) -> u64 {
        a + self.below(b - a + 1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

#[derive(Debug, Default, Clone)]
struct Stats {
    episodes: u64,
    full: u64,
    aborted_or_shed_only: u64,
    restarts: u64,
    power_returned: u64,
    restored_vms: u64,
    forced_hosts: u64,
    budget_checked: u64,
    battery_ran_out: u64,
    migrations: u64,
    /// How often each platform behaviour was drawn, and what it led to.
    slow_hosts: u64,
    maintenance_hosts: u64,
    refusals_remedied: u64,
    acpi_guests: u64,
    acpi_graceful: u64,
    no_charge: u64,
    no_runtime: u64,
    lb_linger: u64,
    flicker: u64,
    forced_cuts: u64,
    host_cuts_by_battery: u64,
    controllers_in_estate: u64,
    controller_deaths: u64,
    hung_hosts: u64,
    flaky_hosts: u64,
    hosts_powered_on: u64,
    back_across_restart: u64,
    flaky_failures: u64,
    maintenance_waits: u64,
    ha_vms: u64,
    ha_restarts: u64,
    system_vms: u64,
    system_restarts: u64,
    stale_tools: u64,
    empty_ids: u64,
    ups_ignores_return_on_line: u64,
    returns_ignored_on_line: u64,
    ups_restarts_after_flat: u64,
    restarted_after_flat: u64,
    charge_gate: u64,
    starts_checked_against_ups: u64,
    power_offs_checked_graceful: u64,
    found_running_in_restore: u64,
    isolation_checked: u64,
    /// Scenarios with a shutdown order, and host shutdowns checked by it.
    ordered: u64,
    order_checked: u64,
    /// Scenarios with host-local ids shared across hosts, and VM commands
    /// checked to name the right VM.
    host_local: u64,
    ids_checked: u64,
    /// Hooks started, failed (or without a result by their deadline), and
    /// steps forced past a blocking one.
    hooks_started: u64,
    hooks_failed: u64,
    hooks_forced_past: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.episodes += o.episodes;
        self.full += o.full;
        self.aborted_or_shed_only += o.aborted_or_shed_only;
        self.restarts += o.restarts;
        self.power_returned += o.power_returned;
        self.restored_vms += o.restored_vms;
        self.forced_hosts += o.forced_hosts;
        self.budget_checked += o.budget_checked;
        self.battery_ran_out += o.battery_ran_out;
        self.migrations += o.migrations;
        self.slow_hosts += o.slow_hosts;
        self.maintenance_hosts += o.maintenance_hosts;
        self.refusals_remedied += o.refusals_remedied;
        self.acpi_guests += o.acpi_guests;
        self.acpi_graceful += o.acpi_graceful;
        self.no_charge += o.no_charge;
        self.no_runtime += o.no_runtime;
        self.lb_linger += o.lb_linger;
        self.flicker += o.flicker;
        self.forced_cuts += o.forced_cuts;
        self.host_cuts_by_battery += o.host_cuts_by_battery;
        self.controllers_in_estate += o.controllers_in_estate;
        self.controller_deaths += o.controller_deaths;
        self.hung_hosts += o.hung_hosts;
        self.flaky_hosts += o.flaky_hosts;
        self.hosts_powered_on += o.hosts_powered_on;
        self.back_across_restart += o.back_across_restart;
        self.flaky_failures += o.flaky_failures;
        self.maintenance_waits += o.maintenance_waits;
        self.ha_vms += o.ha_vms;
        self.ha_restarts += o.ha_restarts;
        self.system_vms += o.system_vms;
        self.system_restarts += o.system_restarts;
        self.stale_tools += o.stale_tools;
        self.empty_ids += o.empty_ids;
        self.ups_ignores_return_on_line += o.ups_ignores_return_on_line;
        self.returns_ignored_on_line += o.returns_ignored_on_line;
        self.ups_restarts_after_flat += o.ups_restarts_after_flat;
        self.restarted_after_flat += o.restarted_after_flat;
        self.charge_gate += o.charge_gate;
        self.starts_checked_against_ups += o.starts_checked_against_ups;
        self.power_offs_checked_graceful += o.power_offs_checked_graceful;
        self.found_running_in_restore += o.found_running_in_restore;
        self.isolation_checked += o.isolation_checked;
        self.ordered += o.ordered;
        self.order_checked += o.order_checked;
        self.host_local += o.host_local;
        self.ids_checked += o.ids_checked;
        self.hooks_started += o.hooks_started;
        self.hooks_failed += o.hooks_failed;
        self.hooks_forced_past += o.hooks_forced_past;
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn at(s: u64) -> Instant {
    Instant::from_millis(s * 1000)
}

/// One scenario as data. Times are seconds from the start of the run.
/// Fields added later carry `#[serde(default)]`, so saved scenarios keep
/// replaying.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Scenario {
    /// The seed it was drawn from (for people; replay uses the data).
    seed: u64,
    /// For a saved scenario: the rule it guards and what broke it once.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    guards: String,
    hosts: Vec<ScHost>,
    vms: Vec<ScVm>,
    /// One outlet per host (else one outlet "main" feeds every host).
    per_host_outlets: bool,
    runtime_s: u64,
    /// When mains first fails.
    lost_s: u64,
    /// When mains first returns, if it does.
    back_s: Option<u64>,
    ups_script: Vec<(u64, ScUpsStep)>,
    migrations: Vec<ScMigration>,
    /// A host that fails or hangs for a while.
    failing: Option<ScFault>,
    /// When the controller dies and comes back from its journal.
    restart_s: Option<u64>,
    final_action: ScFinal,
    low_timeout_s: u64,
    low_shed: bool,
    mgmt_timeout_s: u64,
    default_timeout_s: u64,
    use_maintenance: bool,
    /// 0 first VM command, 1 final action, 2 first host shutdown.
    commit_point: u8,
    force_host_after_s: u64,
    max_in_flight: usize,
    per_host_in_flight: usize,
    on_battery_for_s: Option<u64>,
    runtime_below_s: u32,
    stable_for_s: u64,
    /// Platform and UPS behaviours (issue 12); absent in older files.
    #[serde(default)]
    platform: ScPlatform,
}

/// Behaviours of real platforms, each from a documented rule (see the
/// simulator's docs for the source of each).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct ScPlatform {
    /// Hosts that take this long to halt (s), by host id.
    slow_shutdown_s: BTreeMap<String, u64>,
    /// Hosts that refuse a shutdown outside maintenance mode (ESXi).
    needs_maintenance: BTreeSet<String>,
    /// VMs with no agent that obey ACPI (tools state Unknown): id -> s.
    acpi_guests: BTreeMap<String, u64>,
    /// The UPS reports no charge / no runtime.
    no_charge: bool,
    no_runtime: bool,
    /// `LB` stays set this long after mains returns (s).
    lb_linger_s: u64,
    /// Restore passes the charge gate without a charge reading.
    restore_without_charge: bool,
    /// Short returns of mains (at, length s) that never become stable.
    flicker: Vec<(u64, u64)>,
    /// The controller runs as a VM (`upsvisor`) on this host, whose
    /// autostop shuts its guests down and whose autostart brings the
    /// controller back with it. While its VM is off, the controller is dead:
    /// nothing runs.
    controller_host: Option<String>,
    /// Hosts whose power commands never return (polls are answered).
    hung_commands: BTreeSet<String>,
    /// Hosts whose power commands fail this often (percent, seeded).
    flaky_commands: BTreeMap<String, u8>,
    /// Hosts whose maintenance entry waits for running VMs (vSphere)
    /// instead of being refused.
    maintenance_waits: BTreeSet<String>,
    /// VMs under an HA manager that restarts them after a stop (s).
    ha_vms: BTreeMap<String, u64>,
    /// Hosts running a cluster manager's system VM (vCLS), restarted this
    /// long after any stop (s).
    system_vms: BTreeMap<String, u64>,
    /// VMs whose tools are reported running while the agent is silent.
    stale_tools: BTreeSet<String>,
    /// A VM whose platform reports an empty instance UUID (its id is "").
    empty_id: Option<String>,
    /// The UPS accepts shutdown-with-return on line but keeps its output.
    ups_ignores_return_on_line: bool,
    /// The UPS output comes back with mains after the battery ran flat.
    ups_restarts_after_flat: bool,
    /// Restore needs this charge (percent).
    restore_min_charge_pct: f32,
    /// Hosts with an out-of-band power-on (a BMC, Wake-on-LAN).
    power_on: BTreeSet<String>,
    /// Hosts whose firmware keeps them off when power returns ("stay off"
    /// after AC loss): only a power-on brings them back.
    stay_off: BTreeSet<String>,
    /// The shutdown order (`HostEntry::after`): a host (storage) and the
    /// hosts it shuts down after.
    after: BTreeMap<String, Vec<String>>,
    /// VM ids are host-local, numbered per host as standalone Proxmox
    /// nodes number their guests (`qemu/100`, `qemu/101`, ... on every
    /// node: VMIDs are unique within one cluster only, and a standalone
    /// node is a cluster of one; Proxmox VE admin guide, "Virtual
    /// Machines"), so hosts share ids. Such guests do not migrate.
    host_local_ids: bool,
    /// Operators' hooks (issue 15, part 3), run by a simulated runner.
    hooks: Vec<ScHook>,
}

/// A hook: where it runs, whether it blocks, and what it does.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ScHook {
    name: String,
    /// `on_battery`, `trigger`, `before_group` (`group`), `before_host_shutdown`
    /// (`host`), `after_restore`.
    point: String,
    #[serde(default)]
    target: String,
    blocking: bool,
    deadline_s: u64,
    /// Takes this long (s), then succeeds or fails; `None`: never answers.
    takes_s: Option<u64>,
    fails: bool,
}

impl ScHook {
    fn point(&self) -> upsvisor::HookPoint {
        match self.point.as_str() {
            "on_battery" => upsvisor::HookPoint::OnBattery,
            "trigger" => upsvisor::HookPoint::Trigger,
            "before_group" => upsvisor::HookPoint::BeforeGroup {
                group: self.target.clone(),
            },
            "before_host_shutdown" => upsvisor::HookPoint::BeforeHostShutdown {
                host: HostId::new(self.target.clone()),
            },
            _ => upsvisor::HookPoint::AfterRestore,
        }
    }
}

/// Runs the scenario's hooks on the simulated clock.
struct SimHooks {
    clock: SimClock,
    hooks: BTreeMap<String, ScHook>,
}

#[async_trait::async_trait]
impl upsvisor::HookRunner for SimHooks {
    async fn run(&self, call: &upsvisor::HookCall) -> upsvisor::Result<()> {
        use upsvisor::Clock;
        let h = self
            .hooks
            .get(&call.name)
            .ok_or_else(|| upsvisor::Error::not_found(call.name.clone()))?;
        let Some(takes) = h.takes_s else {
            return std::future::pending().await;
        };
        if std::env::var_os("UPSVISOR_TRACE").is_some() {
            println!("hook {} runs from {}", h.name, self.clock.now());
        }
        self.clock.sleep_until(self.clock.now() + secs(takes)).await;
        if h.fails {
            Err(upsvisor::Error::protocol(&h.name, "exit status 1"))
        } else {
            Ok(())
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ScHost {
    id: String,
    latency_ms: u64,
    bulk: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ScVm {
    host: String,
    id: String,
    name: String,
    on: bool,
    guest: ScGuest,
    tags: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ScGuest {
    Cooperative { shutdown_s: u64 },
    Stubborn,
    NoTools,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ScUpsStep {
    MainsLost,
    MainsBack,
    LowBattery(bool),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ScMigration {
    at_s: u64,
    vm: String,
    to: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ScFault {
    host: String,
    /// "fail" (unreachable) or "hang" (never answers).
    behavior: String,
    from_s: u64,
    for_s: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ScFinal {
    None,
    ShutdownStayOff { delay_s: u64 },
    ShutdownReturn { delay_s: u64 },
    OutletsOff { delay_s: u64 },
}

/// Draws a seed's scenario. The draw order is the generator's contract:
/// changing it changes what every seed means (saved scenarios don't care).
fn draw(seed: u64) -> Scenario {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let n_hosts = rng.range(1, 4) as usize;
    let hosts: Vec<ScHost> = (0..n_hosts)
        .map(|i| ScHost {
            id: format!("h{i}"),
            latency_ms: rng.range(1, 300),
            bulk: rng.chance(0.7),
        })
        .collect();
    let mut vms = Vec::new();
    for (hi, h) in hosts.iter().enumerate() {
        for j in 0..rng.range(0, 5) {
            let mgmt = rng.chance(0.1);
            let name = if mgmt {
                format!("mgmt-{hi}-{j}")
            } else {
                format!("vm-{hi}-{j}")
            };
            let on = rng.chance(0.8);
            let guest = match rng.below(10) {
                0 => ScGuest::Stubborn,
                1 => ScGuest::NoTools,
                _ => ScGuest::Cooperative {
                    shutdown_s: rng.range(2, 150),
                },
            };
            let tags = if rng.chance(0.2) {
                vec!["low".to_string()]
            } else {
                Vec::new()
            };
            vms.push(ScVm {
                host: h.id.clone(),
                id: format!("{seed}-{hi}-{j}"),
                name,
                on,
                guest,
                tags,
            });
        }
    }
    let per_host_outlets = rng.chance(0.4);
    let runtime_s = rng.range(300, 5400);
    let lost = rng.range(30, 600);
    let mut ups_script = vec![(lost, ScUpsStep::MainsLost)];
    let back = match rng.below(4) {
        0 => None,
        _ => Some(lost + rng.range(3, 3600)),
    };
    if let Some(b) = back {
        ups_script.push((b, ScUpsStep::MainsBack));
        if rng.chance(0.25) {
            // Flapping: mains fails again shortly after.
            let again = b + rng.range(1, 120);
            ups_script.push((again, ScUpsStep::MainsLost));
            ups_script.push((again + rng.range(5, 900), ScUpsStep::MainsBack));
        }
    }
    if rng.chance(0.1) {
        ups_script.push((lost + rng.range(1, 300), ScUpsStep::LowBattery(true)));
    }
    let mut migrations = Vec::new();
    for vm in &vms {
        if rng.chance(0.15) && n_hosts > 1 {
            let to = hosts[rng.below(n_hosts as u64) as usize].id.clone();
            migrations.push(ScMigration {
                at_s: lost + rng.range(0, 600),
                vm: vm.id.clone(),
                to,
            });
        }
    }
    let failing = if rng.chance(0.1) {
        let host = hosts[rng.below(n_hosts as u64) as usize].id.clone();
        let behavior = if rng.chance(0.5) { "fail" } else { "hang" }.to_string();
        Some(ScFault {
            host,
            behavior,
            from_s: lost + rng.range(0, 300),
            for_s: rng.range(10, 600),
        })
    } else {
        None
    };
    let final_action = match rng.below(4) {
        0 => ScFinal::ShutdownStayOff {
            delay_s: rng.range(0, 60),
        },
        1 => ScFinal::OutletsOff {
            delay_s: rng.range(0, 60),
        },
        2 => ScFinal::None,
        _ => ScFinal::ShutdownReturn {
            delay_s: rng.range(0, 120),
        },
    };
    let low_timeout_s = rng.range(10, 120);
    let low_shed = rng.chance(0.5);
    let mgmt_timeout_s = rng.range(30, 300);
    let default_timeout_s = rng.range(20, 300);
    let use_maintenance = rng.chance(0.4);
    let commit_point = match rng.below(3) {
        0 => 0,
        1 => 1,
        _ => 2,
    };
    let force_host_after_s = rng.range(600, 2400);
    let max_in_flight = rng.range(1, 16) as usize;
    let per_host_in_flight = rng.range(1, 4) as usize;
    let on_battery_for_s = if rng.chance(0.5) {
        Some(rng.range(10, 900))
    } else {
        None
    };
    let runtime_below_s = rng.range(120, 900) as u32;
    let stable_for_s = rng.range(20, 120);
    let restart_s = rng.chance(0.3).then(|| lost + rng.range(0, 1800));
    // Platform behaviours: drawn last, so the draws above keep their order.
    let mut platform = ScPlatform::default();
    for h in &hosts {
        if rng.chance(0.15) {
            platform
                .slow_shutdown_s
                .insert(h.id.clone(), rng.range(150, 900));
        }
        if rng.chance(0.2) {
            platform.needs_maintenance.insert(h.id.clone());
        }
    }
    for v in &vms {
        if rng.chance(0.1) {
            platform.acpi_guests.insert(v.id.clone(), rng.range(2, 120));
        }
    }
    platform.no_charge = rng.chance(0.1);
    platform.no_runtime = rng.chance(0.1);
    platform.restore_without_charge = platform.no_charge && rng.chance(0.5);
    if rng.chance(0.2) {
        platform.lb_linger_s = rng.range(10, 600);
    }
    if rng.chance(0.3) {
        platform.controller_host = Some(hosts[rng.below(n_hosts as u64) as usize].id.clone());
    }
    if rng.chance(0.15) {
        // Mains flickers: short returns, each shorter than stable_for.
        let mut t = lost + rng.range(5, 60);
        let end = back.unwrap_or(lost + runtime_s).min(lost + 2400);
        loop {
            let len = rng.range(1, stable_for_s.saturating_sub(1).max(1));
            if t + len + 5 >= end {
                break;
            }
            platform.flicker.push((t, len));
            t += len + rng.range(5, 300);
        }
    }
    for h in &hosts {
        if rng.chance(0.05) {
            platform.hung_commands.insert(h.id.clone());
        }
        if rng.chance(0.07) {
            platform
                .flaky_commands
                .insert(h.id.clone(), rng.range(10, 50) as u8);
        }
        if rng.chance(0.3) {
            platform.maintenance_waits.insert(h.id.clone());
        }
        if rng.chance(0.4) {
            platform.power_on.insert(h.id.clone());
        }
        if rng.chance(0.2) {
            platform.stay_off.insert(h.id.clone());
        }
        if rng.chance(0.1) {
            platform.system_vms.insert(h.id.clone(), rng.range(30, 90));
        }
    }
    for v in &vms {
        if rng.chance(0.08) {
            platform.ha_vms.insert(v.id.clone(), rng.range(5, 120));
        }
        if rng.chance(0.05) {
            platform.stale_tools.insert(v.id.clone());
        }
    }
    if !vms.is_empty() && rng.chance(0.03) {
        platform.empty_id = Some(vms[rng.below(vms.len() as u64) as usize].id.clone());
    }
    platform.ups_ignores_return_on_line = rng.chance(0.2);
    platform.ups_restarts_after_flat = rng.chance(0.5);
    if rng.chance(0.3) {
        platform.restore_min_charge_pct = rng.range(10, 60) as f32;
    }
    // Storage after the hypervisors that use it: the last host, after some
    // of the others (one outlet only, so every host is in the episode).
    if n_hosts > 1 && !per_host_outlets && rng.chance(0.25) {
        let last = hosts[n_hosts - 1].id.clone();
        let before: Vec<String> = hosts[..n_hosts - 1]
            .iter()
            .filter(|_| rng.chance(0.7))
            .map(|h| h.id.clone())
            .collect();
        if !before.is_empty() {
            platform.after.insert(last, before);
        }
    }
    // Standalone Proxmox nodes: the same ids on every host (drawn last).
    if n_hosts > 1 && rng.chance(0.15) {
        platform.host_local_ids = true;
        platform.empty_id = None;
        migrations.clear();
    }
    // Hooks, drawn last (the draws above stay as they were for every seed).
    if rng.chance(0.3) {
        for k in 0..rng.range(1, 4) {
            let (point, target) = match rng.below(5) {
                0 => ("on_battery", String::new()),
                1 => ("trigger", String::new()),
                2 => (
                    "before_group",
                    ["low", "mgmt", "default"][rng.below(3) as usize].to_owned(),
                ),
                3 => (
                    "before_host_shutdown",
                    hosts[rng.below(hosts.len() as u64) as usize].id.clone(),
                ),
                _ => ("after_restore", String::new()),
            };
            let deadline_s = rng.range(5, 120);
            let takes_s = match rng.below(4) {
                0 => None,
                1 => Some(deadline_s + rng.range(1, 60)),
                _ => Some(rng.range(0, deadline_s)),
            };
            platform.hooks.push(ScHook {
                name: format!("hook{k}"),
                point: point.to_owned(),
                target,
                blocking: rng.chance(0.5),
                deadline_s,
                takes_s,
                fails: rng.chance(0.3),
            });
        }
    }
    Scenario {
        seed,
        guards: String::new(),
        hosts,
        vms,
        per_host_outlets,
        runtime_s,
        lost_s: lost,
        back_s: back,
        ups_script,
        migrations,
        failing,
        restart_s,
        final_action,
        low_timeout_s,
        low_shed,
        mgmt_timeout_s,
        default_timeout_s,
        use_maintenance,
        commit_point,
        force_host_after_s,
        max_in_flight,
        per_host_in_flight,
        on_battery_for_s,
        runtime_below_s,
        stable_for_s,
        platform,
    }
}

/// How long a scenario runs: long enough for the battery to run flat (no
/// return), or for restore to finish after the last return (stable_for +
/// boot + restore waits).
fn scenario_end(sc: &Scenario) -> u64 {
    let last = match sc.back_s {
        // A flap may add up to ~1000 s after `back`.
        Some(b) => b + 1100,
        None => sc.lost_s + sc.runtime_s,
    };
    last + 45 * 60
}

/// Runs one seed; returns stats or a description of the broken invariant
/// (with the scenario as JSON).
fn episode(seed: u64) -> Result<Stats, String> {
    let sc = draw(seed);
    run(&sc).map_err(|m| {
        let json = serde_json::to_string_pretty(&sc).unwrap_or_default();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("failed-scenarios");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("seed-{seed}.json"));
        let _ = std::fs::write(&file, &json);
        format!("seed {seed}: {m}\n  scenario: {}\n{json}", file.display())
    })
}

/// Runs one scenario; returns stats or a description of the broken invariant.
fn run(sc: &Scenario) -> Result<Stats, String> {
    let mut stats = Stats::default();
    let clock = SimClock::new();
    let estate = Estate::new(Arc::new(clock.clone()));
    let hosts: Vec<HostId> = sc.hosts.iter().map(|h| HostId::new(h.id.clone())).collect();
    let pf = &sc.platform;
    for h in &sc.hosts {
        let mut cfg = SimHostConfig::default()
            .latency(Duration::from_millis(h.latency_ms))
            .bulk_inventory(h.bulk)
            .shutdown_needs_maintenance(pf.needs_maintenance.contains(&h.id))
            .autostop(pf.controller_host.as_deref() == Some(h.id.as_str()))
            .hung_power_commands(pf.hung_commands.contains(&h.id))
            .maintenance_entry_waits(pf.maintenance_waits.contains(&h.id))
            .power_on(pf.power_on.contains(&h.id))
            .boots_on_power_return(!pf.stay_off.contains(&h.id));
        if let Some(p) = pf.flaky_commands.get(&h.id) {
            cfg = cfg.flaky(*p, sc.seed ^ h.latency_ms);
        }
        if let Some(s) = pf.slow_shutdown_s.get(&h.id) {
            cfg = cfg.shutdown_time(secs(*s));
        }
        estate.add_host(HostId::new(h.id.clone()), cfg);
    }
    // Host-local ids: each VM's number on its host, from 100.
    let local_ids: BTreeMap<&str, (String, VmId)> = if pf.host_local_ids {
        let mut next: BTreeMap<&str, u32> = BTreeMap::new();
        sc.vms
            .iter()
            .map(|v| {
                let n = next.entry(v.host.as_str()).or_insert(100);
                let local = format!("qemu/{n}");
                *n += 1;
                let key = VmId::scoped(&HostId::new(v.host.clone()), &local);
                (v.id.as_str(), (local, key))
            })
            .collect()
    } else {
        BTreeMap::new()
    };
    // The VM's key in the simulator and the engine's table (empty: no
    // instance UUID; host-local: `<id>@<host>`).
    let vm_id = |id: &str| {
        if let Some((_, key)) = local_ids.get(id) {
            key.clone()
        } else if pf.empty_id.as_deref() == Some(id) {
            VmId::new("")
        } else {
            VmId::new(id)
        }
    };
    for v in &sc.vms {
        let id = vm_id(&v.id);
        // What the platform reports (the simulator keys a host-local one).
        let reported = local_ids
            .get(v.id.as_str())
            .map_or_else(|| id.clone(), |(local, _)| VmId::new(local.clone()));
        let guest = match (v.guest, pf.acpi_guests.get(&v.id)) {
            _ if pf.stale_tools.contains(&v.id) => Guest::StaleTools,
            (_, Some(s)) => Guest::Acpi(secs(*s)),
            (ScGuest::Stubborn, _) => Guest::Stubborn,
            (ScGuest::NoTools, _) => Guest::NoTools,
            (ScGuest::Cooperative { shutdown_s }, _) => Guest::Cooperative(secs(shutdown_s)),
        };
        let mut vm = VmInfo::new(
            reported,
            v.name.clone(),
            if v.on {
                PowerState::PoweredOn
            } else {
                PowerState::PoweredOff
            },
        )
        .host_local(pf.host_local_ids);
        vm.tags.extend(v.tags.iter().cloned());
        estate.add_vm(&HostId::new(v.host.clone()), vm, guest);
        if let Some(d) = pf.ha_vms.get(&v.id) {
            estate.set_ha_restart(&id, secs(*d), 3);
        }
    }
    // vSphere Cluster Services agents: one small system VM per host whose
    // cluster runs them, powered back on by the cluster manager.
    for (h, d) in &pf.system_vms {
        let id = VmId::new(format!("{}-vcls-{h}", sc.seed));
        let vm = VmInfo::new(id.clone(), format!("vCLS-{h}"), PowerState::PoweredOn);
        estate.add_vm(&HostId::new(h.clone()), vm, Guest::Cooperative(secs(5)));
        estate.set_system_vm(&id, secs(*d));
    }
    let controller = pf.controller_host.as_ref().map(|h| {
        let id = VmId::new(format!("{}-ctl", sc.seed));
        let vm = VmInfo::new(id.clone(), "upsvisor", PowerState::PoweredOn);
        let host = HostId::new(h.clone());
        estate.add_vm(&host, vm, Guest::Cooperative(secs(10)));
        (id, host)
    });
    let outlets: BTreeMap<OutletId, Vec<HostId>> = if sc.per_host_outlets {
        hosts
            .iter()
            .map(|h| (OutletId::new(format!("o-{h}")), vec![h.clone()]))
            .collect()
    } else {
        BTreeMap::from([(OutletId::from("main"), hosts.clone())])
    };
    let runtime = secs(sc.runtime_s);
    let mut script = UpsScript::new();
    // A forced LB is the device's alarm during the outage: it clears when
    // mains returns after it (an LB that lingers on line is `lb_linger_s`).
    let lb_from = sc
        .ups_script
        .iter()
        .filter(|(_, s)| matches!(s, ScUpsStep::LowBattery(true)))
        .map(|(t, _)| *t)
        .min();
    // Mains state at a moment, from the script's mains steps.
    let mains_on_at = |when: u64| {
        let mut steps: Vec<(u64, bool)> = sc
            .ups_script
            .iter()
            .filter_map(|(t, s)| match s {
                ScUpsStep::MainsLost => Some((*t, false)),
                ScUpsStep::MainsBack => Some((*t, true)),
                ScUpsStep::LowBattery(_) => None,
            })
            .collect();
        steps.sort_unstable();
        steps
            .iter()
            .take_while(|(t, _)| *t <= when)
            .last()
            .is_none_or(|(_, on)| *on)
    };
    for (t, s) in &sc.ups_script {
        let step = match s {
            ScUpsStep::MainsLost => UpsStep::MainsLost,
            ScUpsStep::MainsBack => UpsStep::MainsBack,
            // (An alarm drawn for a moment mains is already back is moot.)
            ScUpsStep::LowBattery(true) if mains_on_at(*t) => continue,
            ScUpsStep::LowBattery(b) => UpsStep::LowBattery(*b),
        };
        script = script.at(secs(*t), step);
        if matches!(s, ScUpsStep::MainsBack) && lb_from.is_some_and(|l| l < *t) {
            script = script.at(secs(*t), UpsStep::LowBattery(false));
        }
    }
    for (t, len) in &pf.flicker {
        script = script
            .at(secs(*t), UpsStep::MainsBack)
            .at(secs(t + len), UpsStep::MainsLost);
    }
    let ups_cfg = UpsConfig::feeding("ups", hosts.clone(), runtime)
        .outlets(outlets.clone())
        .reports(!pf.no_charge, !pf.no_runtime)
        .lb_linger(secs(pf.lb_linger_s))
        .cycles_output_on_line(!pf.ups_ignores_return_on_line)
        .restarts_after_flat(pf.ups_restarts_after_flat);
    let ups = SimUps::install(&estate, ups_cfg, script);
    for m in &sc.migrations {
        estate.schedule_migration(at(m.at_s), &vm_id(&m.vm), &HostId::new(m.to.clone()));
        stats.migrations += 1;
    }
    let troubled = sc.failing.is_some();
    // Hosts whose power commands hang or fail sometimes: their VMs may not
    // be stopped or restored at all, so only the safety invariants apply.
    let unruly: BTreeSet<HostId> = pf
        .hung_commands
        .iter()
        .chain(pf.flaky_commands.keys())
        .map(|h| HostId::new(h.clone()))
        .collect();
    // VMs that were on such a host at some time (where they began, or
    // where a scripted migration took them): a command that failed there
    // may have been their last chance (seed 2024007705: four power-ons
    // failed on a flaky host, then DRS moved the VM to a sound one).
    let on_unruly: BTreeSet<VmId> = sc
        .vms
        .iter()
        .filter(|v| unruly.contains(&HostId::new(v.host.clone())))
        .map(|v| vm_id(&v.id))
        .chain(
            sc.migrations
                .iter()
                .filter(|m| unruly.contains(&HostId::new(m.to.clone())))
                .map(|m| vm_id(&m.vm)),
        )
        .collect();
    // Every host that hangs or fails in some way.
    let mut troubled_hosts = unruly.clone();
    if let Some(f) = &sc.failing {
        troubled_hosts.insert(HostId::new(f.host.clone()));
    }
    let mgmt_host = |truth: &BTreeMap<VmId, (HostId, VmInfo)>, h: &HostId| {
        truth
            .values()
            .any(|(vh, v)| vh == h && v.name.starts_with("mgmt-") && v.power.is_on())
    };
    // A host that hangs or fails costs only its own deadline: any other
    // host whose VMs are all off has its shutdown requested within the
    // groups' timeouts, plus a few call deadlines (the first hung calls,
    // after which the troubled host holds no stage of the others: per-host
    // pipelines), plus polls. However many VMs the troubled host has.
    let isolation_bound = secs(sc.low_timeout_s + sc.default_timeout_s + 6 * 30 + 120);
    let failing = sc.failing.as_ref().map(|f| {
        let b = if f.behavior == "hang" {
            HostBehavior::Hang
        } else {
            HostBehavior::Fail
        };
        (HostId::new(f.host.clone()), b, f.from_s, f.for_s)
    });

    let inventory = Inventory::new(
        hosts
            .iter()
            .map(|h| {
                HostEntry::new(h.clone(), h.to_string(), TransportKind::Sim)
                    .with_power_on(pf.power_on.contains(h.as_str()))
                    .with_after(
                        pf.after
                            .get(h.as_str())
                            .into_iter()
                            .flatten()
                            .map(String::as_str),
                    )
            })
            .collect(),
        outlets
            .iter()
            .map(|(o, hs)| upsvisor::Outlet::new("ups", o.clone(), hs.clone()))
            .collect(),
    );
    let final_action = match sc.final_action {
        ScFinal::ShutdownStayOff { delay_s } => FinalAction::ShutdownStayOff {
            delay: secs(delay_s),
        },
        ScFinal::OutletsOff { delay_s } => FinalAction::OutletsOff {
            delay: secs(delay_s),
        },
        ScFinal::None => FinalAction::None,
        ScFinal::ShutdownReturn { delay_s } => FinalAction::ShutdownReturn {
            delay: secs(delay_s),
        },
    };
    let mut seq_cfg = SequencerConfig::default();
    seq_cfg
        .group(
            VmGroup::new(
                "low",
                -5,
                vec![Matcher::Tag("low".into())],
                secs(sc.low_timeout_s),
            )
            .shed_on_battery(sc.low_shed),
        )
        .group(
            VmGroup::new(
                "mgmt",
                50,
                vec![Matcher::Name("mgmt-*".into())],
                secs(sc.mgmt_timeout_s),
            )
            .management(true),
        )
        .default_action(upsvisor::VmAction::Shutdown {
            timeout: secs(sc.default_timeout_s),
        })
        .use_maintenance(sc.use_maintenance)
        .commit_point(match sc.commit_point {
            0 => CommitPoint::FirstVmCommand,
            1 => CommitPoint::FinalAction,
            _ => CommitPoint::FirstHostShutdown,
        })
        .force_host_after(Some(secs(sc.force_host_after_s)))
        .host_down_wait(secs(60))
        .final_action(final_action)
        .in_flight(sc.max_in_flight, sc.per_host_in_flight)
        .call_deadline(secs(30))
        .controller_vm(controller.as_ref().map(|(id, _)| Matcher::Id(id.clone())));
    for h in &pf.hooks {
        seq_cfg.hook(
            upsvisor::Hook::new(h.name.clone(), h.point(), secs(h.deadline_s)).blocking(h.blocking),
        );
    }
    let hook_runner: Arc<dyn upsvisor::HookRunner> = Arc::new(SimHooks {
        clock: clock.clone(),
        hooks: pf
            .hooks
            .iter()
            .map(|h| (h.name.clone(), h.clone()))
            .collect(),
    });
    let mut policy = PolicyConfig::default();
    policy
        .on_battery_for(sc.on_battery_for_s.map(secs))
        .runtime_below_s(Some(sc.runtime_below_s))
        .stable_for(secs(sc.stable_for_s))
        .restore_min_charge_pct(pf.restore_min_charge_pct)
        .restore_without_charge(pf.restore_without_charge);
    let mut poller = PollerConfig::default();
    poller
        .period(secs(60))
        .on_battery_period(secs(15))
        .host_deadline(secs(10));
    let journal = MemJournal::new();
    let build = |clock: &SimClock| -> Engine {
        let mut e = Engine::new(
            Arc::new(clock.clone()),
            inventory.clone(),
            poller.clone(),
            policy.clone(),
            seq_cfg.clone(),
        )
        .expect("valid inventory")
        .with_config(EngineConfig::default().status_interval(secs(5)).clone())
        .with_hook_runner(hook_runner.clone())
        .with_journal(Box::new(journal.clone()))
        .expect("journal loads");
        for h in &hosts {
            e.add_host(h, Arc::new(estate.transport(h)))
                .expect("known host");
        }
        e.add_device(DeviceId::from("ups"), Arc::new(ups.clone()));
        e
    };
    let mut engine = build(&clock);
    let mut events = engine.subscribe(1 << 20);
    let restart_at = sc.restart_s;
    let back = sc.back_s;
    let end = scenario_end(sc);

    let mut audit: Vec<AuditEntry> = Vec::new();
    // Nothing changes VM power before the first episode: this is the
    // state every VM must end in (or off).
    let prior: BTreeMap<VmId, PowerState> = estate
        .truth()
        .into_iter()
        .map(|(id, (_, v))| (id, v.power))
        .collect();
    let mut budget_ok: BTreeMap<u64, bool> = BTreeMap::new();
    let mut checker = Checker {
        troubled: failing.as_ref().map(|(h, _, from, dur)| {
            // Behaviour changes on 5 s slices; allow the slice around each end.
            (h.clone(), at(from.saturating_sub(5)), at(from + dur + 5))
        }),
        after: pf
            .after
            .iter()
            .map(|(h, a)| (HostId::new(h.clone()), a.iter().map(HostId::new).collect()))
            .collect(),
        own_host: pf.controller_host.as_ref().map(HostId::new),
        host_local_ids: pf.host_local_ids,
        ..Checker::default()
    };
    let mut t = 0;
    let fail = |msg: String| Err(msg);
    let mut dead = false;
    // VMs running when each episode started (before the slice it began in).
    let mut running_at_start: BTreeMap<u64, BTreeSet<VmId>> = BTreeMap::new();
    // VMs seen off at a slice start during each episode.
    let mut seen_off: BTreeSet<(u64, VmId)> = BTreeSet::new();
    // Since when each host has had no VM running (slice ends).
    let mut off_since: BTreeMap<HostId, Instant> = BTreeMap::new();
    let mut full_since: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut host_cmds: BTreeSet<(u64, HostId)> = BTreeSet::new();
    let mut isolation_checked = false;
    let mut restored_outcomes: Vec<(Instant, usize, usize)> = Vec::new();
    let mut pre_truth = estate.truth();
    while t < end {
        t += 5;
        let latest_ep = audit.last().map_or(0, |a| a.episode);
        for (id, (_, v)) in &pre_truth {
            if !v.power.is_on() {
                seen_off.insert((latest_ep, id.clone()));
            }
        }
        if let Some((h, b, from, dur)) = &failing {
            if t == *from - *from % 5 {
                estate.set_behavior(h, *b);
            }
            if t == (*from + *dur) - (*from + *dur) % 5 {
                estate.set_behavior(h, HostBehavior::Normal);
            }
        }
        if let Some((ctl, host)) = &controller {
            let on = estate
                .truth()
                .get(ctl)
                .is_some_and(|(_, v)| v.power == PowerState::PoweredOn);
            if !on && !dead {
                // The controller stops with its VM. If it stopped cleanly
                // (its own host's shutdown), the power-device command that
                // brings the estate back was sent before.
                dead = true;
                stats.controller_deaths += 1;
                let clean = !estate.unclean_power_losses().iter().any(|u| &u.vm == ctl);
                let full = audit
                    .iter()
                    .any(|a| matches!(a.what, Audit::EpisodeStarted { full: true, .. }));
                let returns = matches!(
                    sc.final_action,
                    ScFinal::ShutdownReturn { .. } | ScFinal::ShutdownStayOff { .. }
                );
                if clean && full && returns {
                    let sent = audit.iter().any(|a| {
                        matches!(
                            &a.what,
                            Audit::Issued {
                                cmd: upsvisor::Command::Device { .. },
                                ..
                            }
                        )
                    });
                    if !sent {
                        trace(&estate, &audit);
                        return Err(format!(
                            "the controller stopped at T+{t} s before sending the power-device command"
                        ));
                    }
                }
            }
            if dead && estate.host_up(host) {
                // Its host is back: autostart powers the controller's VM on
                // and it resumes from its journal.
                // (Refused while its host is still halting.)
                if estate.autostart(ctl) {
                    dead = false;
                    drop(events);
                    drop(engine);
                    engine = build(&clock);
                    events = engine.subscribe(1 << 20);
                }
            }
            if dead {
                // Time goes on without the controller.
                clock.advance_to(at(t));
                if let Err(m) = checker.check(&estate, &audit) {
                    trace(&estate, &audit);
                    return Err(m);
                }
                pre_truth = estate.truth();
                continue;
            }
        }
        if restart_at.is_some_and(|r| t == r - r % 5) {
            // The controller dies (commands in flight are dropped) and
            // comes back from its journal.
            drop(events);
            drop(engine);
            stats.restarts += 1;
            engine = build(&clock);
            events = engine.subscribe(1 << 20);
        }
        clock.block_on(engine.run_until(at(t)));
        while let Some(ev) = events.try_next() {
            if let EngineEvent::Audit(a) = &*ev {
                audit.push(a.clone());
                match &a.what {
                    Audit::EpisodeStarted { .. } => {
                        running_at_start.entry(a.episode).or_insert_with(|| {
                            pre_truth
                                .iter()
                                .filter(|(_, (_, v))| v.power.is_on())
                                .map(|(id, _)| id.clone())
                                .collect()
                        });
                    }
                    Audit::Issued {
                        cmd: upsvisor::Command::Host { host, .. },
                        ..
                    } => {
                        host_cmds.insert((a.episode, host.clone()));
                    }
                    Audit::EpisodeEnded { outcome } => {
                        if let Some(rest) = outcome.strip_prefix("restored: ") {
                            let failed = rest
                                .rsplit(", ")
                                .next()
                                .and_then(|f| f.strip_suffix(" failed"))
                                .and_then(|f| f.parse::<usize>().ok())
                                .unwrap_or(0);
                            let truth = estate.truth();
                            let off = truth.values().filter(|(_, v)| !v.power.is_on()).count();
                            restored_outcomes.push((a.at, failed, off));
                        }
                    }
                    _ => {}
                }
                let became_full = matches!(&a.what, Audit::EpisodeStarted { full: true, .. })
                    || matches!(&a.what, Audit::Note { text } if text.starts_with("load shedding becomes a full"));
                if became_full {
                    full_since.entry(a.episode).or_insert(a.at);
                }
                if became_full && !budget_ok.contains_key(&a.episode) {
                    stats.full += 1;
                    let plan = engine.plan();
                    let runtime = engine
                        .verdicts()
                        .values()
                        .filter_map(|v| v.last.as_ref()?.runtime_s)
                        .min()
                        .unwrap_or(0);
                    budget_ok.insert(a.episode, plan.fits(runtime));
                }
            }
        }
        if let Err(m) = checker.check(&estate, &audit) {
            trace(&estate, &audit);
            return Err(m);
        }
        let truth = estate.truth();
        for h in &hosts {
            let running = truth.values().any(|(vh, v)| vh == h && v.power.is_on());
            if running {
                off_since.remove(h);
            } else {
                off_since.entry(h.clone()).or_insert(at(t));
            }
        }
        // A host that hangs or fails never holds up another one.
        let ep = audit.last().map_or(0, |a| a.episode);
        let status = engine.sequencer().status();
        let stopping = status.as_ref().is_some_and(|s| {
            s.id == ep && (s.phase.starts_with("stopping (group") || s.phase == "stopping (hosts)")
        });
        if !troubled_hosts.is_empty() && restart_at.is_none() && stopping {
            let scope: Vec<HostId> = audit
                .iter()
                .rev()
                .find_map(|a| match &a.what {
                    Audit::EpisodeStarted { scope, .. } if a.episode == ep => Some(scope.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            let bothered = scope.iter().any(|h| troubled_hosts.contains(h));
            if let (true, Some(full)) = (bothered, full_since.get(&ep)) {
                for h in &scope {
                    // A host configured to shut down after a troubled
                    // host waits for it by design (`after`): bounded by
                    // that host's own progress, the forced deadline and
                    // the battery, which the order and budget invariants
                    // check (seeds 3630655121, 3630658352).
                    let waits_for_troubled = pf.after.get(h.as_str()).is_some_and(|ps| {
                        ps.iter()
                            .any(|p| troubled_hosts.contains(&HostId::new(p.clone())))
                    });
                    // A blocking hook (the trigger's, a group's, this
                    // host's) holds it by design, up to the forced
                    // deadline or the battery budget, which
                    // `check_hooks` and the budget invariant check.
                    let held_by_hook = audit.iter().any(|a| {
                        a.episode == ep
                            && matches!(&a.what, Audit::HookStarted { hook, blocking: true, .. }
                                if pf.hooks.iter().any(|x| &x.name == hook
                                    && (x.point != "before_host_shutdown" || x.target == h.as_str())))
                    });
                    if troubled_hosts.contains(h)
                        || waits_for_troubled
                        || held_by_hook
                        || controller.as_ref().is_some_and(|(_, ch)| ch == h)
                        || mgmt_host(&truth, h)
                        || !estate.host_up(h)
                        || host_cmds.contains(&(ep, h.clone()))
                    {
                        continue;
                    }
                    let Some(x) = off_since.get(h) else { continue };
                    isolation_checked = true;
                    let since = (*x).max(*full);
                    if at(t) >= since + isolation_bound {
                        trace(&estate, &audit);
                        return Err(format!(
                            "episode {ep}: {h} has had no VM running since {since} and got no host command by T+{t} s (bound {} s): a troubled host ({troubled_hosts:?}) held it up",
                            isolation_bound.as_secs()
                        ));
                    }
                }
            }
        }
        pre_truth = truth;
    }
    drop(events);
    stats.isolation_checked += u64::from(isolation_checked);
    stats.ordered += u64::from(!pf.after.is_empty());
    stats.order_checked += checker.order_checked;
    stats.host_local += u64::from(pf.host_local_ids);
    stats.ids_checked += checker.ids_checked;

    trace(&estate, &audit);
    if std::env::var_os("UPSVISOR_TRACE").is_some() {
        eprintln!(
            "lost={} back={back:?} restart={restart_at:?} failing={failing:?} final={final_action:?}",
            sc.lost_s
        );
    }
    let episodes: BTreeSet<u64> = audit.iter().map(|a| a.episode).collect();
    stats.episodes += episodes.len() as u64;
    stats.forced_hosts += audit
        .iter()
        .filter(|a| matches!(a.what, Audit::ForcedHostShutdown { .. }))
        .count() as u64;
    stats.forced_cuts += audit
        .iter()
        .filter(|a| matches!(a.what, Audit::ForcedPowerCut { .. }))
        .count() as u64;
    stats.refusals_remedied += audit
        .iter()
        .filter(
            |a| matches!(&a.what, Audit::Note { text } if text.contains("refused the shutdown")),
        )
        .count() as u64;
    stats.slow_hosts += pf.slow_shutdown_s.len() as u64;
    stats.maintenance_hosts += pf.needs_maintenance.len() as u64;
    stats.acpi_guests += pf.acpi_guests.len() as u64;
    stats.acpi_graceful += estate
        .command_log()
        .iter()
        .filter(|c| {
            c.op == "shutdown_guest"
                && c.outcome == "ok"
                && c.vm
                    .as_ref()
                    .is_some_and(|v| pf.acpi_guests.contains_key(v.as_str()))
        })
        .count() as u64;
    stats.no_charge += u64::from(pf.no_charge);
    stats.no_runtime += u64::from(pf.no_runtime);
    stats.lb_linger += u64::from(pf.lb_linger_s > 0);
    stats.flicker += u64::from(!pf.flicker.is_empty());
    stats.controllers_in_estate += u64::from(controller.is_some());
    stats.host_cuts_by_battery += estate
        .host_power_cuts()
        .iter()
        .filter(|c| c.battery_empty)
        .count() as u64;
    let unclean = estate.unclean_power_losses();
    let power_lost_vms: BTreeSet<VmId> = unclean.iter().map(|u| u.vm.clone()).collect();
    if unclean.iter().any(|u| u.cause == LossCause::PowerLoss) {
        stats.battery_ran_out += 1;
    }
    // The plan finishes within the budget whenever the budget allows it
    // (and every host can be reached: a host that cannot be commanded cannot
    // be shut down in time by anyone).
    let first_ep_ok = budget_ok.get(&1).copied();
    if let Some(true) = first_ep_ok {
        // (A failed blocking hook holds its step, by the operator's
        // choice, until the forced deadline or the battery budget: time
        // the plan at the trigger did not count. Seed 4083475797: held 14
        // minutes, then a system VM its manager kept restarting was still
        // on when the battery ran flat.)
        let forced_past_hook = audit
            .iter()
            .any(|a| a.episode == 1 && matches!(a.what, Audit::ForcedPastHook { .. }));
        if !troubled && unruly.is_empty() && restart_at.is_none() && !forced_past_hook {
            stats.budget_checked += 1;
            // (Once power was cut under the estate, by the plan's own
            // device command or a flat battery, a UPS that restores its
            // output on a short return of mains boots hosts onto a battery
            // that had no time to recharge: what follows is no longer the
            // plan's budget. Seed 3775697263: mains back for 30 s after 47
            // minutes off, the battery ran flat 84 s into the new outage.)
            // (The UPS's own cut counts too, with every host already
            // halted under it: seed 2337857590, shutdown-with-return with
            // all hosts down, mains back for 14 s after 58 minutes.)
            let first_cut = estate
                .host_power_cuts()
                .iter()
                .map(|c| c.at)
                .chain(ups.output_cuts())
                .min();
            if let Some(u) = unclean
                .iter()
                .find(|u| u.cause == LossCause::PowerLoss && first_cut.is_none_or(|f| u.at <= f))
            {
                return fail(format!(
                    "budget allowed the plan but {} lost power at {}",
                    u.vm, u.at
                ));
            }
        }
    }
    let truth = estate.truth();
    let mains_back_for_good = back.is_some() && ups.output_on();
    if mains_back_for_good {
        stats.power_returned += 1;
    }
    let busy = engine.sequencer().busy();
    // Out-of-band power-on goes only to hosts an episode took down (shut
    // down, or cut the power of), and brings back every such host that has
    // a method once mains is back for good.
    let mut taken_down: BTreeSet<(u64, HostId)> = BTreeSet::new();
    let mut cut_in: BTreeSet<u64> = BTreeSet::new();
    let mut first_down: BTreeMap<HostId, _> = BTreeMap::new();
    for a in &audit {
        match &a.what {
            // (A shutdown that failed did not take its host down: a host
            // lost to a flat battery is not the episode's to power on.
            // Seed 1204055070.)
            Audit::Completed {
                cmd:
                    upsvisor::Command::Host {
                        host,
                        op: upsvisor::HostOp::Shutdown | upsvisor::HostOp::ShutdownForce,
                    },
                error,
                ..
            } if error.as_deref().is_none_or(|e| e.contains("timed out")) => {
                // (A call that timed out may have been delivered: the
                // engine counts the host as taken down once it is seen
                // down, seed 1204064458.)
                taken_down.insert((a.episode, host.clone()));
                first_down.entry(host.clone()).or_insert(a.at);
            }
            Audit::Issued {
                cmd:
                    upsvisor::Command::Host {
                        host,
                        op: upsvisor::HostOp::PowerOn,
                    },
                ..
            } => {
                // (An episode that hands on passes on whom it took down.)
                if !taken_down
                    .iter()
                    .any(|(ep, t)| *ep <= a.episode && t == host)
                    && !cut_in.iter().any(|ep| *ep <= a.episode)
                {
                    return fail(format!(
                        "episode {}: {host} was powered on out of band, but no episode took it down",
                        a.episode
                    ));
                }
                stats.hosts_powered_on += 1;
            }
            Audit::Issued {
                cmd:
                    upsvisor::Command::Device {
                        cmd:
                            upsvisor::DeviceCommand::ShutdownReturn { .. }
                            | upsvisor::DeviceCommand::ShutdownStayOff { .. }
                            | upsvisor::DeviceCommand::OutletOff { .. },
                        ..
                    },
                ..
            } => {
                cut_in.insert(a.episode);
            }
            _ => {}
        }
    }
    // (A controller restart in between is included: who was taken down is
    // journaled, README "Host power-on".)
    if mains_back_for_good && !busy && !troubled {
        for h in &hosts {
            let ours = taken_down.iter().any(|(_, t)| t == h) || !cut_in.is_empty();
            if pf.power_on.contains(h.as_str()) && !unruly.contains(h) && ours {
                if !estate.host_up(h) {
                    return fail(format!(
                        "{h} has a power-on method and was taken down, but is still off after restore"
                    ));
                }
                let restarted_after = restart_at
                    .is_some_and(|r| first_down.get(h).is_some_and(|d| at(r - r % 5) > *d));
                if restarted_after {
                    stats.back_across_restart += 1;
                }
            }
        }
    }
    // Every episode ends once mains is back for good: restore finishes or
    // gives up within its waits (45 simulated minutes are left for it). The
    // exceptions: a battery that holds restore by configuration (no charge
    // reading), and a controller whose own host never got power back.
    let held = pf.no_charge && !pf.restore_without_charge;
    // A committed episode may run to its forced deadline after mains
    // returns: restore then needs its own waits (hosts, then groups).
    // (The running episode's own restore: an earlier episode's restore says
    // nothing about this one, seed 1480093196.)
    let current = audit.last().map(|a| a.episode);
    let restore_began = audit
        .iter()
        .rev()
        .filter(|a| Some(a.episode) == current)
        .find(|a| matches!(&a.what, Audit::Phase { phase } if phase == "restoring"))
        .map(|a| a.at);
    // Before restore, a committed episode with a host whose calls hang may
    // wait out its forced deadline, the hung shutdown call and then
    // `host_down_deadline` (900 s) before its power-device action (seed
    // 1699371376: mains came back 14 minutes into such an episode).
    let started = audit
        .iter()
        .rev()
        .find(|a| matches!(&a.what, Audit::EpisodeStarted { .. }))
        .map(|a| a.at);
    let had_time = match restore_began {
        Some(r) => at(end) >= r + secs(900 + 3 * 180 + 120),
        None => started.is_none_or(|s| {
            at(end) >= s + secs(sc.force_host_after_s + 60 + 900 + 120 + 900 + 3 * 180 + 120)
        }),
    };
    if mains_back_for_good && busy && !held && !dead && had_time {
        return fail(format!(
            "the episode never ended after mains returned: {:?}",
            engine.sequencer().status()
        ));
    }
    for (id, (h, v)) in &truth {
        let before = prior.get(id).copied().unwrap_or(v.power);
        if v.power == PowerState::PoweredOn && before != PowerState::PoweredOn {
            return fail(format!(
                "{id} on {h} was off before the episode and is on after it"
            ));
        }
        if mains_back_for_good
            && !busy
            && before == PowerState::PoweredOn
            && !power_lost_vms.contains(id)
            && !troubled
            && !unruly.contains(h)
            && !on_unruly.contains(id)
            && estate.host_up(h)
        {
            if v.power != PowerState::PoweredOn {
                return fail(format!(
                    "{id} on {h} was running before and was not restored ({:?})",
                    v.power
                ));
            }
            stats.restored_vms += 1;
        }
        if !mains_back_for_good
            && back.is_none()
            && v.power == PowerState::PoweredOn
            && !episodes.is_empty()
            && !troubled
            && !unruly.contains(h)
        {
            return fail(format!(
                "{id} on {h} still on at the end of an outage that never ended"
            ));
        }
    }
    // No VM is started while the UPS reports LB, or a charge below the
    // gate, or no charge at all (unless restore is configured to go
    // without): judged on the last reading before the start.
    let reported = ups.reported();
    for a in &audit {
        let Audit::Issued {
            cmd: upsvisor::Command::Vm { vm, op, .. },
            ..
        } = &a.what
        else {
            continue;
        };
        if *op != upsvisor::VmOp::PowerOn {
            continue;
        }
        let Some((when, last)) = reported.iter().rev().find(|(w, _)| *w <= a.at) else {
            continue;
        };
        stats.starts_checked_against_ups += 1;
        let bad = if last.low_battery {
            Some("LB".to_string())
        } else {
            match last.charge_pct {
                Some(c) if c < pf.restore_min_charge_pct => Some(format!(
                    "charge {c} % below the gate {} %",
                    pf.restore_min_charge_pct
                )),
                None if !pf.restore_without_charge => Some("no charge reading".to_string()),
                _ => None,
            }
        };
        if let Some(why) = bad {
            return fail(format!(
                "episode {}: {vm} started at {} while the UPS reported {why} (read at {when})",
                a.episode, a.at
            ));
        }
    }
    // Every VM running when its episode started gets a graceful attempt
    // before any power-off, unless the platform says it has no running
    // tools, the battery no longer allows one (both logged), or it stopped
    // and came back during the episode (HA, a cluster manager).
    let mut graceful: BTreeSet<(u64, VmId)> = BTreeSet::new();
    // (A guest asked to shut down and not started since counts as asked in
    // a later episode too: a shutdown still under way is handed on, seed
    // 68724079.)
    let mut asked: BTreeSet<VmId> = BTreeSet::new();
    let notes: Vec<(u64, &str)> = audit
        .iter()
        .filter_map(|a| match &a.what {
            Audit::Note { text } => Some((a.episode, text.as_str())),
            _ => None,
        })
        .collect();
    for a in &audit {
        let Audit::Issued {
            cmd: upsvisor::Command::Vm { vm, op, name, .. },
            ..
        } = &a.what
        else {
            continue;
        };
        let key = (a.episode, vm.clone());
        match op {
            upsvisor::VmOp::ShutdownGuest => {
                graceful.insert(key);
                asked.insert(vm.clone());
            }
            upsvisor::VmOp::PowerOn => {
                asked.remove(vm);
            }
            upsvisor::VmOp::PowerOff => {
                let was_running = running_at_start
                    .get(&a.episode)
                    .is_some_and(|r| r.contains(vm));
                if !was_running {
                    continue;
                }
                stats.power_offs_checked_graceful += 1;
                if graceful.contains(&key) || asked.contains(vm) || seen_off.contains(&key) {
                    continue;
                }
                let excused = notes.iter().any(|(e, text)| {
                    *e == a.episode
                        && (text.starts_with(&format!("{name} has no running guest tools"))
                            || text.starts_with(&format!("{name}: the battery's")))
                });
                if !excused {
                    return fail(format!(
                        "episode {}: {vm} ({name}) was powered off at {} without a graceful attempt",
                        a.episode, a.at
                    ));
                }
            }
            _ => {}
        }
    }
    // A VM found running during restore counts as restored: a restore
    // never reports more failures than VMs that are off.
    for (when, failed, off) in &restored_outcomes {
        if failed > off {
            return fail(format!(
                "restore ended at {when} with {failed} VMs failed, but only {off} VMs were off"
            ));
        }
    }
    let external = estate.external_starts();
    stats.ha_restarts += external.iter().filter(|x| x.by == Starter::Ha).count() as u64;
    stats.system_restarts += external
        .iter()
        .filter(|x| x.by == Starter::ClusterManager)
        .count() as u64;
    stats.found_running_in_restore += estate
        .command_log()
        .iter()
        .filter(|c| c.op == "power_on" && c.outcome.contains("already powered on"))
        .count() as u64;
    stats.flaky_failures += estate
        .command_log()
        .iter()
        .filter(|c| c.outcome.contains("simulated intermittent failure"))
        .count() as u64;
    stats.hung_hosts += pf.hung_commands.len() as u64;
    stats.flaky_hosts += pf.flaky_commands.len() as u64;
    stats.maintenance_waits += pf.maintenance_waits.len() as u64;
    stats.ha_vms += pf.ha_vms.len() as u64;
    stats.system_vms += pf.system_vms.len() as u64;
    stats.stale_tools += pf.stale_tools.len() as u64;
    stats.empty_ids += u64::from(pf.empty_id.is_some());
    stats.ups_ignores_return_on_line += u64::from(pf.ups_ignores_return_on_line);
    stats.returns_ignored_on_line += u64::from(ups.ignored_on_line());
    stats.ups_restarts_after_flat += u64::from(pf.ups_restarts_after_flat);
    stats.restarted_after_flat +=
        u64::from(pf.ups_restarts_after_flat && stats.host_cuts_by_battery > 0 && ups.output_on());
    stats.charge_gate += u64::from(pf.restore_min_charge_pct > 0.0);
    if episodes.iter().all(|e| {
        !audit
            .iter()
            .any(|a| a.episode == *e && matches!(a.what, Audit::EpisodeStarted { full: true, .. }))
    }) {
        stats.aborted_or_shed_only += episodes.len() as u64;
    }
    check_hooks(&pf.hooks, &sc.vms, &audit, at(end), &mut stats)?;
    Ok(stats)
}

/// Hooks' invariants, from the audit:
/// - every hook started gets exactly one result, by its deadline (a
///   restart fails it at once); one that never answers, or answers after
///   its deadline, is a failure, never a success (unknown is not "ok");
/// - a blocking hook's step acts only after it succeeded or after a
///   `forced_past_hook` for it: the trigger's VM stops, host shutdowns and
///   power-cutting device commands; a group's VM stops; a host's shutdown.
fn check_hooks(
    hooks: &[ScHook],
    vms: &[ScVm],
    audit: &[AuditEntry],
    end: Instant,
    stats: &mut Stats,
) -> Result<(), String> {
    use upsvisor::{Command, HostOp};
    let by_name: BTreeMap<&str, &ScHook> = hooks.iter().map(|h| (h.name.as_str(), h)).collect();
    // The group a VM stops with (as `run` configures them: `low` by tag
    // at order -5 wins over `mgmt` by name at 50).
    let group_of = |name: &str| match vms.iter().find(|v| v.name == name) {
        Some(v) if v.tags.iter().any(|t| t == "low") => "low",
        _ if name.starts_with("mgmt-") => "mgmt",
        _ => "default",
    };
    let mut started: BTreeMap<u64, (&ScHook, Instant, u64)> = BTreeMap::new();
    // (episode, hook) -> released (ok or forced past) at.
    let mut released: BTreeMap<(u64, &str), Instant> = BTreeMap::new();
    let mut restoring: BTreeSet<u64> = BTreeSet::new();
    let mut holding: BTreeMap<(u64, &str), Instant> = BTreeMap::new();
    for a in audit {
        match &a.what {
            Audit::HookStarted { id, hook, .. } => {
                let h = by_name
                    .get(hook.as_str())
                    .ok_or_else(|| format!("unknown hook {hook} started"))?;
                stats.hooks_started += 1;
                started.insert(*id, (h, a.at, a.episode));
                if h.blocking {
                    holding.insert((a.episode, h.name.as_str()), a.at);
                }
            }
            Audit::HookFinished { id, hook, error } => {
                let Some((h, at0, ep)) = started.remove(id) else {
                    return Err(format!(
                        "hook {hook} (id {id}) finished twice or never started"
                    ));
                };
                let took = a.at - at0;
                // (A restart fails it when the controller comes back, which
                // may be later.)
                let restarted = error.as_deref().is_some_and(|e| e.contains("restarted"));
                // (A result that came in during a poll is handed to the
                // sequencer when the poll ends: up to a host deadline and
                // a latency later.)
                if took > secs(h.deadline_s + 15) && !restarted {
                    return Err(format!(
                        "hook {hook} finished {took:?} after its start, past its {} s deadline",
                        h.deadline_s
                    ));
                }
                let on_time = h.takes_s.is_some_and(|t| t <= h.deadline_s);
                if error.is_none() && (!on_time || h.fails) {
                    return Err(format!(
                        "hook {hook} reported a success it never had (takes {:?}, fails {}, deadline {} s)",
                        h.takes_s, h.fails, h.deadline_s
                    ));
                }
                if error.is_some() {
                    stats.hooks_failed += 1;
                } else {
                    released.insert((ep, h.name.as_str()), a.at);
                }
            }
            Audit::ForcedPastHook { hook, .. } => {
                stats.hooks_forced_past += 1;
                if let Some(h) = by_name.get(hook.as_str()) {
                    released.entry((a.episode, h.name.as_str())).or_insert(a.at);
                }
            }
            // Restore holds nothing back: a power-off there power-cycles a
            // guest caught mid-shutdown to bring it back (seed 4083481497).
            Audit::Phase { phase } if phase == "restoring" => {
                restoring.insert(a.episode);
            }
            Audit::Phase { .. } => {
                restoring.remove(&a.episode);
            }
            Audit::Issued { .. } if restoring.contains(&a.episode) => {}
            Audit::Issued { cmd, .. } => {
                // Which blocking, holding hooks does this command wait for?
                let waits_for: Vec<&ScHook> = hooks
                    .iter()
                    .filter(|h| h.blocking)
                    .filter(|h| match (h.point.as_str(), cmd) {
                        ("trigger", Command::Vm { op, .. }) => {
                            matches!(op, upsvisor::VmOp::ShutdownGuest | upsvisor::VmOp::PowerOff)
                        }
                        ("trigger", Command::Host { op, .. }) => {
                            matches!(op, HostOp::Shutdown | HostOp::EnterMaintenance)
                        }
                        ("trigger", Command::Device { cmd, .. }) => matches!(
                            cmd,
                            upsvisor::DeviceCommand::ShutdownReturn { .. }
                                | upsvisor::DeviceCommand::ShutdownStayOff { .. }
                                | upsvisor::DeviceCommand::OutletOff { .. }
                        ),
                        ("before_group", Command::Vm { name, op, .. }) => {
                            group_of(name) == h.target
                                && matches!(
                                    op,
                                    upsvisor::VmOp::ShutdownGuest | upsvisor::VmOp::PowerOff
                                )
                        }
                        ("before_host_shutdown", Command::Host { host, op }) => {
                            host.as_str() == h.target && *op == HostOp::Shutdown
                        }
                        _ => false,
                    })
                    .collect();
                for h in waits_for {
                    let key = (a.episode, h.name.as_str());
                    // Started in this episode and not released: held.
                    if holding.contains_key(&key) && !released.contains_key(&key) {
                        return Err(format!(
                            "episode {}: {cmd:?} issued at {} while blocking hook {} held it",
                            a.episode, a.at, h.name
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    // Still running at the end: fine only if its deadline is after it, or
    // the controller stopped with its host (a hook of that host's own
    // shutdown is not waited for) and nothing runs to see the result.
    for (id, (h, at0, _)) in started {
        if at0 + secs(h.deadline_s) + secs(10) < end && stats.controller_deaths == 0 {
            return Err(format!(
                "hook {} (id {id}) got no result by its deadline",
                h.name
            ));
        }
    }
    Ok(())
}
/// With `UPSVISOR_TRACE` set: the audit and the hosts' command log.
fn trace(estate: &Estate, audit: &[AuditEntry]) {
    if std::env::var_os("UPSVISOR_TRACE").is_none() {
        return;
    }
    for a in audit {
        eprintln!("{} ep{} {:?}", a.at, a.episode, a.what);
    }
    for c in estate.command_log() {
        eprintln!(
            "cmd {} {} {:?} {} -> {}",
            c.at, c.target, c.vm, c.op, c.outcome
        );
    }
}

/// Invariants over everything seen so far, checked incrementally.
#[derive(Default)]
struct Checker {
    audit_seen: usize,
    losses_seen: usize,
    cuts_seen: usize,
    forced: BTreeSet<HostId>,
    /// Forced cuts logged, by episode: a decision in one episode does not
    /// excuse a cut in a later one.
    forced_cut: BTreeSet<(u64, HostId)>,
    episode: u64,
    /// A host that fails or hangs, and when (it does not answer then, so a
    /// cut under it is not a cut under an answering host).
    troubled: Option<(HostId, Instant, Instant)>,
    starts: BTreeSet<(u64, VmId)>,
    once: BTreeSet<(u64, String)>,
    /// Delayed device cuts: when each falls due, and the episode whose
    /// command it is (a cut is that episode's decision, even if it lands
    /// after a new episode began).
    /// Delayed cuts ordered: (when due, episode, when ordered).
    cuts_due: Vec<(Instant, u64, Instant)>,
    /// Since when each host has been up, as seen at the checks (every
    /// 5 s of simulated time); absent while it is down.
    up_since: BTreeMap<HostId, Instant>,
    /// The shutdown order, the controller's own host (never waited for),
    /// and per episode: its scope and start, the hosts whose shutdown was
    /// sent, the hosts with a forced decision.
    after: BTreeMap<HostId, Vec<HostId>>,
    own_host: Option<HostId>,
    scope: BTreeMap<u64, (BTreeSet<HostId>, Instant)>,
    shut_sent: BTreeSet<(u64, HostId)>,
    forced_in: BTreeSet<(u64, HostId)>,
    order_checked: u64,
    /// Hosts share host-local ids: every VM command must name the VM its
    /// key and host denote (issue 12, invariant B: two VMs with the same
    /// host-local id on different hosts are never confused).
    host_local_ids: bool,
    ids_checked: u64,
}

impl Checker {
    fn check(&mut self, estate: &Estate, audit: &[AuditEntry]) -> Result<(), String> {
        let now = estate.clock().now();
        for h in estate.host_ids() {
            if estate.host_up(&h) {
                self.up_since.entry(h).or_insert(now);
            } else {
                self.up_since.remove(&h);
            }
        }
        // Per episode: a VM gets stop commands, then start commands, never a
        // stop after a start; and no successful non-idempotent command twice.
        for a in audit.get(self.audit_seen..).unwrap_or_default() {
            // Host-local guests never move, so the truth now is the truth
            // when the command was issued.
            if let (
                true,
                Audit::Issued {
                    cmd: upsvisor::Command::Vm { host, vm, name, .. },
                    ..
                },
            ) = (self.host_local_ids, &a.what)
            {
                let truth = estate.truth();
                match truth.get(vm) {
                    Some((_, info)) if !info.host_local => {}
                    Some((h, info)) if h == host && info.name == *name => {
                        self.ids_checked += 1;
                    }
                    other => {
                        return Err(format!(
                            "episode {}: a VM command at {} for {vm} on {host} named {name:?}, but that key is {}",
                            a.episode,
                            a.at,
                            other.map_or("no VM".to_string(), |(h, i)| format!(
                                "{:?} on {h}",
                                i.name
                            ))
                        ));
                    }
                }
            }
            match &a.what {
                Audit::ForcedHostShutdown { host, .. } => {
                    self.forced.insert(host.clone());
                    self.forced_in.insert((a.episode, host.clone()));
                }
                Audit::EpisodeStarted { scope, .. } => {
                    self.episode = a.episode;
                    self.scope
                        .insert(a.episode, (scope.iter().cloned().collect(), a.at));
                }
                // The shutdown order: a host's shutdown is not sent while
                // a host it comes after, in the episode and not the
                // controller's own, has been up since before the episode
                // with no shutdown sent to it, unless a forced decision
                // for the host was logged.
                Audit::Issued {
                    cmd:
                        upsvisor::Command::Host {
                            host,
                            op: op @ (upsvisor::HostOp::Shutdown | upsvisor::HostOp::ShutdownForce),
                        },
                    ..
                } => {
                    let _ = op;
                    if let (Some(before), Some((scope, started))) =
                        (self.after.get(host), self.scope.get(&a.episode))
                    {
                        self.order_checked += 1;
                        for p in before {
                            let waited_for = scope.contains(p)
                                && Some(p) != self.own_host.as_ref()
                                && !self.shut_sent.contains(&(a.episode, p.clone()))
                                && self.up_since.get(p).is_some_and(|s| s <= started);
                            if waited_for && !self.forced_in.contains(&(a.episode, host.clone())) {
                                return Err(format!(
                                    "episode {}: {host} shut down at {} before {p}, which it comes after (up, no shutdown sent)",
                                    a.episode, a.at
                                ));
                            }
                        }
                    }
                    self.shut_sent.insert((a.episode, host.clone()));
                }
                Audit::ForcedPowerCut { host, .. } => {
                    self.forced_cut.insert((a.episode, host.clone()));
                }
                Audit::Issued {
                    cmd: upsvisor::Command::Device { cmd, .. },
                    ..
                } => {
                    let delay = match cmd {
                        upsvisor::DeviceCommand::ShutdownReturn { delay }
                        | upsvisor::DeviceCommand::ShutdownStayOff { delay }
                        | upsvisor::DeviceCommand::OutletOff { delay, .. } => Some(*delay),
                        _ => None,
                    };
                    if let Some(d) = delay {
                        self.cuts_due.push((a.at + d, a.episode, a.at));
                    }
                }
                Audit::Issued {
                    cmd: upsvisor::Command::Vm { vm, op, .. },
                    ..
                } => {
                    if *op == upsvisor::VmOp::PowerOn {
                        self.starts.insert((a.episode, vm.clone()));
                    } else if op.stops() && self.starts.contains(&(a.episode, vm.clone())) {
                        return Err(format!(
                            "episode {}: {vm} got {op} after a power on",
                            a.episode
                        ));
                    }
                }
                Audit::Completed {
                    id,
                    error: None,
                    cmd,
                } => {
                    let key = match cmd {
                        upsvisor::Command::Host { host, op }
                            if *op == upsvisor::HostOp::Shutdown =>
                        {
                            Some(format!("{host} {op}"))
                        }
                        upsvisor::Command::Device { device, cmd } => {
                            Some(format!("{device} {cmd:?}"))
                        }
                        upsvisor::Command::Vm { vm, op, .. }
                            if *op == upsvisor::VmOp::ShutdownGuest =>
                        {
                            Some(format!("{vm} {op}"))
                        }
                        _ => None,
                    };
                    if let Some(k) = key {
                        if !self.once.insert((a.episode, k.clone())) {
                            return Err(format!(
                                "episode {}: {k} succeeded twice (command {id})",
                                a.episode
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        self.audit_seen = audit.len();
        // No host shutdown while one of its VMs is on, unless forced and logged.
        let losses = estate.unclean_power_losses();
        for u in losses.get(self.losses_seen..).unwrap_or_default() {
            if u.cause == LossCause::HostShutdown && !self.forced.contains(&u.host) {
                return Err(format!(
                    "{} shut down at {} with {} running, no forced deadline logged",
                    u.host, u.at, u.vm
                ));
            }
        }
        self.losses_seen = losses.len();
        // Power is never cut under a host that still answers, unless a
        // forced decision naming it was logged first. (A flat battery is
        // the budget invariant's business.)
        let cuts = estate.host_power_cuts();
        for c in cuts.get(self.cuts_seen..).unwrap_or_default() {
            // (The sim applies a command a host's latency after it was
            // issued: allow a second.)
            let due_now = |due: &Instant| c.at >= *due && c.at <= *due + Duration::from_secs(1);
            // A host failing every call is silent to anyone: a cut during
            // that window, or one ordered in it (the controller then
            // stopped with its own host and could watch no longer; seed
            // 2024000375: a host halting slowly failed its polls when the
            // delayed cut was ordered and answered again before it), is
            // the scenario's fault, not a decision taken on a host seen
            // answering.
            let silent = self.troubled.as_ref().is_some_and(|(h, from, to)| {
                *h == c.host
                    && ((c.at >= *from && c.at <= *to)
                        || self
                            .cuts_due
                            .iter()
                            .any(|(due, _, at)| due_now(due) && *at >= *from && *at <= *to))
            });
            // A host that came up (booted on returning power) a poll
            // period or less before the cut could not have been seen
            // answering by anyone (seed 1699368267: h1 booted about 0.3 s
            // before the delayed cut ordered while it was down).
            let unseen_boot = self
                .up_since
                .get(&c.host)
                .is_none_or(|u| *u + Duration::from_secs(15) > c.at);
            let by_earlier = self.cuts_due.iter().any(|(due, ep, _)| {
                due_now(due) && self.forced_cut.contains(&(*ep, c.host.clone()))
            });
            if !c.battery_empty
                && !silent
                && !unseen_boot
                && !by_earlier
                && !self.forced_cut.contains(&(self.episode, c.host.clone()))
            {
                return Err(format!(
                    "power cut under {} at {} while it still answered, no forced decision logged",
                    c.host, c.at
                ));
            }
        }
        self.cuts_seen = cuts.len();
        Ok(())
    }
}

/// The seed window: `UPSVISOR_SEED` alone, else `n` seeds from
/// `UPSVISOR_SEED_BASE` (default 0).
fn seeds(n: u64) -> (Vec<u64>, bool) {
    let env = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    match env("UPSVISOR_SEED") {
        Some(s) => (vec![s], true),
        None => {
            let base = env("UPSVISOR_SEED_BASE").unwrap_or(0);
            ((base..base.saturating_add(n)).collect(), false)
        }
    }
}

fn run_many(n: u64) {
    let (seeds, only) = seeds(n);
    let threads = std::env::var("UPSVISOR_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 64);
    println!(
        "seed window: {}..={} ({} scenarios, {threads} threads; replay one with UPSVISOR_SEED=S)",
        seeds.first().copied().unwrap_or(0),
        seeds.last().copied().unwrap_or(0),
        seeds.len()
    );
    let t0 = std::time::Instant::now();
    // Seeds are dealt round-robin so every thread gets a similar mix.
    let results: Vec<(Stats, Vec<(u64, String)>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                let mine: Vec<u64> = seeds.iter().copied().skip(k).step_by(threads).collect();
                s.spawn(move || {
                    let mut total = Stats::default();
                    let mut failures = Vec::new();
                    for seed in mine {
                        match episode(seed) {
                            Ok(st) => total.add(&st),
                            Err(e) => failures.push((seed, e)),
                        }
                    }
                    (total, failures)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("episode thread panicked"))
            .collect()
    });
    let mut total = Stats::default();
    let mut failures: Vec<(u64, String)> = Vec::new();
    for (st, f) in results {
        total.add(&st);
        failures.extend(f);
    }
    failures.sort_by_key(|(s, _)| *s);
    let summary = summary(seeds.len(), t0.elapsed(), &total, failures.len());
    println!("{summary}");
    if !failures.is_empty() {
        for (_, e) in &failures {
            println!("{}", e.lines().next().unwrap_or_default());
        }
        println!(
            "failing seeds: {:?}",
            failures.iter().map(|(s, _)| *s).collect::<Vec<_>>()
        );
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let _ = std::fs::write(dir.join("episodes-summary.txt"), format!("{summary}\n"));
    assert!(
        failures.is_empty(),
        "{} of {} scenarios broke an invariant; first ones:\n{}",
        failures.len(),
        seeds.len(),
        failures
            .iter()
            .take(5)
            .map(|(_, e)| e.clone())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        only || total.full > 0
            && total.restarts > 0
            && total.power_returned > 0
            && total.budget_checked > 0,
        "the generator lost its variety: {summary}"
    );
}

fn summary(n: usize, wall: Duration, total: &Stats, failures: usize) -> String {
    format!(
        "simulated scenarios: {n} ({wall:?} wall); episodes: {}, of which full shutdowns: {}, without a full shutdown: {}; controller restarts: {}; migrations scripted: {}; mains returned for good: {}; VMs checked restored: {}; forced host shutdowns (logged): {}; budget-fits checked: {}; scenarios where the battery ran out: {}; failures: {failures}",
        total.episodes,
        total.full,
        total.aborted_or_shed_only,
        total.restarts,
        total.migrations,
        total.power_returned,
        total.restored_vms,
        total.forced_hosts,
        total.budget_checked,
        total.battery_ran_out,
    ) + &format!(
        "\nplatform behaviours: slow-halting hosts {}, hosts refusing shutdown outside maintenance {} (refusals remedied {}), ACPI-only guests {} (graceful shutdowns sent {}), UPS without charge {}, without runtime {}, LB lingering after return {}, flickering mains {}; power cuts logged as forced {}; hosts cut by a flat battery {}; controller inside the estate {} (it stopped with its host {} times)",
        total.slow_hosts,
        total.maintenance_hosts,
        total.refusals_remedied,
        total.acpi_guests,
        total.acpi_graceful,
        total.no_charge,
        total.no_runtime,
        total.lb_linger,
        total.flicker,
        total.forced_cuts,
        total.host_cuts_by_battery,
        total.controllers_in_estate,
        total.controller_deaths,
    ) + &format!(
        "\nmore platform behaviours: hosts with hung power commands {}, hosts with intermittent command failures {} (failures {}), hosts whose maintenance entry waits {}, HA-managed VMs {} (HA restarts {}), cluster system VMs {} (restarts by their manager {}), stale tools {}, empty instance UUIDs {}, UPS ignoring shutdown.return on line {} (ignored {}), UPS restarting after a flat battery {} (restarted {}), restore charge gate set {}, out-of-band power-ons sent {} (hosts taken down and back across a controller restart {})\ninvariants exercised: VM starts checked against the UPS reading {}, power-offs checked for a graceful attempt first {}, VMs found running during restore {}, scenarios checked for host isolation {}, scenarios with a shutdown order {} (host shutdowns checked against it {}), scenarios with host-local ids shared across hosts {} (VM commands checked to name the right VM {})",
        total.hung_hosts,
        total.flaky_hosts,
        total.flaky_failures,
        total.maintenance_waits,
        total.ha_vms,
        total.ha_restarts,
        total.system_vms,
        total.system_restarts,
        total.stale_tools,
        total.empty_ids,
        total.ups_ignores_return_on_line,
        total.returns_ignored_on_line,
        total.ups_restarts_after_flat,
        total.restarted_after_flat,
        total.charge_gate,
        total.hosts_powered_on,
        total.back_across_restart,
        total.starts_checked_against_ups,
        total.power_offs_checked_graceful,
        total.found_running_in_restore,
        total.isolation_checked,
        total.ordered,
        total.order_checked,
        total.host_local,
        total.ids_checked,
    ) + &format!(
        "\nhooks: started {}, failed or without a result by their deadline {}, steps forced past a blocking hook {}",
        total.hooks_started, total.hooks_failed, total.hooks_forced_past,
    )
}

/// The 10,000-scenario run. It is slow unoptimised, so debug builds skip
/// it and `scripts/test` runs it with `--release`.
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "run optimised: cargo test --release --test episodes"
)]
fn sim_episodes() {
    let n = std::env::var("UPSVISOR_EPISODES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    run_many(n);
}

/// A few hundred scenarios in every build, so a plain `cargo test` checks
/// the invariants too.
#[test]
fn sim_episodes_smoke() {
    run_many(if cfg!(debug_assertions) { 150 } else { 500 });
}

#[test]
#[ignore = "stress: 100,000 scenarios"]
fn stress_episodes() {
    run_many(100_000);
}

fn saved_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios")
}

/// Every scenario saved under `tests/scenarios/` (each once broke an
/// invariant; the file name says which rule it guards) still passes.
#[test]
fn saved_scenarios() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(saved_dir())
        .expect("tests/scenarios exists")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no saved scenarios");
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("readable scenario");
        let sc: Scenario = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not a scenario: {e}", f.display()));
        match run(&sc) {
            Ok(_) => println!("ok   {}", f.display()),
            Err(e) => failures.push(format!("{}: {e}", f.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A saved scenario is the data the seed draws: replaying the file and the
/// seed gives the same scenario while the generator is unchanged. When the
/// generator changes, the files keep their meaning and this test names the
/// drift instead of failing silently elsewhere.
#[test]
fn scenario_round_trips_as_json() {
    let sc = draw(43213);
    let json = serde_json::to_string(&sc).expect("serialises");
    let back: Scenario = serde_json::from_str(&json).expect("parses");
    assert_eq!(
        serde_json::to_string(&back).expect("serialises"),
        json,
        "a scenario survives JSON unchanged"
    );
}
