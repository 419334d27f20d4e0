//! The demo estate: the one `examples/outage.rs` drills and
//! `upsvisord run --demo` / `upsvisord drill` show.
//!
//! Hosts `esx01..` with VMs (every 41st guest ignores shutdown, every 23rd
//! has no guest tools, every 11th is off), a vCenter appliance on `esx01`
//! (a management VM, shut down last), this controller itself as the VM
//! `upsvisor` on the last host (its host goes last, after the UPS
//! command; the host's autostop is on), one UPS `ups1` feeding every host,
//! mains lost after 5 minutes and back after 45, and the policy and
//! sequencer settings that go with them.
//!
//! ```
//! use std::sync::Arc;
//! use upsvisor_core::{Engine, SimClock};
//! use upsvisor_sim::demo::{Demo, DemoSpec};
//!
//! let clock = SimClock::new();
//! let d = Demo::build(Arc::new(clock.clone()), &DemoSpec::default().hosts(2).vms_per_host(3));
//! assert_eq!(d.inventory.hosts.len(), 2);
//! // and the vCenter appliance, and upsvisor itself as a VM
//! assert_eq!(d.estate.truth().len(), 2 * 3 + 2);
//! let engine = Engine::new(Arc::new(clock), d.inventory, d.poller, d.policy, d.sequencer);
//! assert!(engine.is_ok());
//! ```

use std::sync::Arc;
use std::time::Duration;

use upsvisor_core::{
    Clock, FinalAction, HostEntry, Inventory, Matcher, Outlet, PolicyConfig, PollerConfig,
    PowerState, SequencerConfig, TransportKind, VmAction, VmGroup, VmInfo,
};

use crate::{Estate, EstateSpec, Guest, SimUps, UpsConfig, UpsScript, UpsStep};

/// Demo settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DemoSpec {
    /// Hosts.
    pub hosts: usize,
    /// VMs per host.
    pub vms_per_host: usize,
    /// Mains fails this long after start (simulated time).
    pub mains_lost_after: Duration,
    /// Mains returns this long after start.
    pub mains_back_after: Duration,
}

impl Default for DemoSpec {
    /// 10 hosts, 20 VMs each; mains lost at 5 min, back at 45 min.
    fn default() -> Self {
        DemoSpec {
            hosts: 10,
            vms_per_host: 20,
            mains_lost_after: Duration::from_secs(300),
            mains_back_after: Duration::from_secs(45 * 60),
        }
    }
}

impl DemoSpec {
    /// Sets the number of hosts.
    pub fn hosts(mut self, n: usize) -> Self {
        self.hosts = n;
        self
    }

    /// Sets the VMs per host.
    pub fn vms_per_host(mut self, n: usize) -> Self {
        self.vms_per_host = n;
        self
    }

    /// Sets when mains fails.
    pub fn mains_lost_after(mut self, d: Duration) -> Self {
        self.mains_lost_after = d;
        self
    }

    /// Sets when mains returns.
    pub fn mains_back_after(mut self, d: Duration) -> Self {
        self.mains_back_after = d;
        self
    }
}

/// The demo estate and the engine settings that go with it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Demo {
    /// The simulated hosts and VMs.
    pub estate: Estate,
    /// The UPS `ups1`, feeding every host, with the scripted outage.
    pub ups: SimUps,
    /// Hosts (`esx01.lab`, ...) and the one outlet `ups1/main`.
    pub inventory: Inventory,
    /// Poll every 60 s, every 15 s on battery, 10 s host deadline.
    pub poller: PollerConfig,
    /// Shut down after 5 min on battery or below 10 min of runtime;
    /// restore after mains is stable for 2 min.
    pub policy: PolicyConfig,
    /// Groups `batch` (shed on battery), `databases`, `management`
    /// (vCenter, last); maintenance mode; shutdown with return; then this
    /// controller's own VM (`upsvisor`, on the last host) with its host.
    pub sequencer: SequencerConfig,
    /// How often the UPS is read.
    pub status_interval: Duration,
}

impl Demo {
    /// Builds the demo estate on `clock`.
    pub fn build(clock: Arc<dyn Clock>, spec: &DemoSpec) -> Demo {
        let estate = Estate::generate(
            clock,
            &EstateSpec::new(spec.hosts, spec.vms_per_host)
                .stubborn_every(41)
                .no_tools_every(23)
                .off_every(11),
        );
        let ids = estate.host_ids();
        // A vCenter appliance: a management VM, shut down last.
        let mut vc = VmInfo::new(
            "4210ffff-0000-4000-8000-00000000vc01",
            "vcenter01",
            PowerState::PoweredOn,
        );
        vc.vcpus = Some(4);
        vc.memory_mib = Some(19456);
        vc.guest_os = Some("VMware Photon OS (64-bit)".into());
        if let Some(first) = ids.first() {
            estate.add_vm(first, vc, Guest::Cooperative(Duration::from_secs(90)));
        }
        // This controller itself, as a VM on the last host (the most common
        // deployment); that host's autostop shuts its guests down.
        if let Some(last) = ids.last() {
            let mut me = VmInfo::new(
                "4210ffff-0000-4000-8000-0000upsvisor",
                "upsvisor",
                PowerState::PoweredOn,
            );
            me.vcpus = Some(1);
            me.memory_mib = Some(512);
            me.guest_os = Some("Debian GNU/Linux 12 (64-bit)".into());
            estate.add_vm(last, me, Guest::Cooperative(Duration::from_secs(10)));
            estate.set_autostop(last, true);
        }
        let ups = SimUps::install(
            &estate,
            UpsConfig::feeding("ups1", ids.clone(), Duration::from_secs(40 * 60)),
            UpsScript::new()
                .at(spec.mains_lost_after, UpsStep::MainsLost)
                .at(spec.mains_back_after, UpsStep::MainsBack),
        );
        let inventory = Inventory::new(
            ids.iter()
                .map(|h| HostEntry::new(h.clone(), format!("{h}.lab"), TransportKind::Sim))
                .collect(),
            vec![Outlet::new("ups1", "main", ids.clone())],
        );
        let mut sequencer = SequencerConfig::default();
        sequencer
            .group(
                VmGroup::new(
                    "batch",
                    -10,
                    vec![Matcher::Name("vm-000?".into())],
                    Duration::from_secs(60),
                )
                .shed_on_battery(true),
            )
            .group(VmGroup::new(
                "databases",
                10,
                vec![Matcher::Name("vm-01??".into())],
                Duration::from_secs(180),
            ))
            .group(
                VmGroup::new(
                    "management",
                    100,
                    vec![Matcher::Name("vcenter*".into())],
                    Duration::from_secs(300),
                )
                .management(true),
            )
            .default_action(VmAction::Shutdown {
                timeout: Duration::from_secs(120),
            })
            .use_maintenance(true)
            .controller_vm(Some(Matcher::Name("upsvisor".into())))
            .final_action(FinalAction::ShutdownReturn {
                delay: Duration::from_secs(60),
            });
        let mut policy = PolicyConfig::default();
        policy
            .on_battery_for(Some(Duration::from_secs(5 * 60)))
            .runtime_below_s(Some(600))
            .stable_for(Duration::from_secs(120));
        let mut poller = PollerConfig::default();
        poller
            .period(Duration::from_secs(60))
            .on_battery_period(Duration::from_secs(15))
            .host_deadline(Duration::from_secs(10));
        Demo {
            estate,
            ups,
            inventory,
            poller,
            policy,
            sequencer,
            status_interval: Duration::from_secs(5),
        }
    }
}
