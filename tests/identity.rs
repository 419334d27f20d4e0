//! VM identity scoped to what the platform guarantees (issue 12, scenario
//! 6). Two standalone Proxmox nodes each run `qemu/100` (every node numbers
//! its guests from 100; VMIDs are unique within one cluster only, and a
//! standalone node is a cluster of one: Proxmox VE admin guide, "Virtual
//! Machines"). The merge used to keep one of them, and a power-off meant
//! for one hit the other, with the audit naming the wrong VM.

use std::sync::Arc;
use std::time::Duration;

use upsvisor::sim::{Estate, Guest, SimHostConfig, SimUps, UpsConfig, UpsScript, UpsStep};
use upsvisor::{
    Audit, Command, DeviceId, Engine, EngineConfig, EngineEvent, HostEntry, HostId, Instant,
    Inventory, PolicyConfig, PollerConfig, PowerState, SequencerConfig, SimClock, TransportKind,
    VmId, VmInfo,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// `h1` and `h2` each with a host-local `qemu/100`: on `h1` it shuts down
/// when asked, on `h2` it ignores the request. `fed` are the hosts the UPS
/// feeds (the others are on another supply).
fn run(fed: &[&str]) -> (Estate, Vec<upsvisor::AuditEntry>, Arc<upsvisor::VmTable>) {
    let clock = SimClock::new();
    let estate = Estate::new(Arc::new(clock.clone()));
    let pve = SimHostConfig::default();
    for (h, guest) in [
        ("h1", Guest::Cooperative(secs(20))),
        ("h2", Guest::Stubborn),
    ] {
        let h = HostId::from(h);
        estate.add_host(h.clone(), pve.clone());
        estate.add_vm(
            &h,
            VmInfo::new("qemu/100", format!("app-{h}"), PowerState::PoweredOn).host_local(true),
            guest,
        );
    }
    let fed: Vec<HostId> = fed.iter().map(|h| HostId::from(*h)).collect();
    let ups = SimUps::install(
        &estate,
        UpsConfig::feeding("ups", fed.clone(), secs(3600)),
        UpsScript::new().at(secs(10), UpsStep::MainsLost),
    );
    let inventory = Inventory::new(
        vec![
            HostEntry::new("h1", "h1", TransportKind::Sim),
            HostEntry::new("h2", "h2", TransportKind::Sim),
        ],
        vec![upsvisor::Outlet::new("ups", "main", fed)],
    );
    let mut e = Engine::new(
        Arc::new(clock.clone()),
        inventory,
        PollerConfig::default()
            .period(secs(60))
            .on_battery_period(secs(15))
            .host_deadline(secs(10))
            .clone(),
        PolicyConfig::default()
            .on_battery_for(Some(secs(30)))
            .clone(),
        SequencerConfig::default(),
    )
    .unwrap()
    .with_config(EngineConfig::default().status_interval(secs(5)).clone());
    for h in ["h1", "h2"] {
        let h = HostId::from(h);
        e.add_host(&h, Arc::new(estate.transport(&h))).unwrap();
    }
    e.add_device(DeviceId::from("ups"), Arc::new(ups));
    e.validate().unwrap();
    let mut events = e.subscribe(1 << 16);
    clock.block_on(e.run_until(Instant::from_millis(900_000)));
    let mut audit = Vec::new();
    while let Some(ev) = events.try_next() {
        if let EngineEvent::Audit(a) = &*ev {
            audit.push(a.clone());
        }
    }
    let table = e.table().clone();
    (estate, audit, table)
}

fn issued(audit: &[upsvisor::AuditEntry]) -> Vec<(HostId, VmId, String)> {
    audit
        .iter()
        .filter_map(|a| match &a.what {
            Audit::Issued {
                cmd: Command::Vm { host, vm, op, .. },
                ..
            } => Some((host.clone(), vm.clone(), op.to_string())),
            _ => None,
        })
        .collect()
}

#[test]
fn the_same_host_local_id_on_two_hosts_is_two_vms() {
    // Only h2 is fed: only h2's qemu/100 is shut down (and, as it ignores
    // the request, powered off); h1's is never touched.
    let (estate, audit, table) = run(&["h2"]);
    let h1 = VmId::scoped(&HostId::from("h1"), "qemu/100");
    let h2 = VmId::scoped(&HostId::from("h2"), "qemu/100");
    assert_eq!(h1.as_str(), "qemu/100@h1");
    // The table holds both, each under its host, named by its own name.
    assert_eq!(
        table
            .locate(&h1)
            .map(|(h, v)| (h.as_str(), v.name.as_str())),
        Some(("h1", "app-h1"))
    );
    assert_eq!(
        table
            .locate(&h2)
            .map(|(h, v)| (h.as_str(), v.name.as_str())),
        Some(("h2", "app-h2"))
    );
    let cmds = issued(&audit);
    assert!(!cmds.is_empty(), "an episode ran: {audit:?}");
    assert!(
        cmds.iter()
            .all(|(h, vm, _)| h.as_str() == "h2" && vm == &h2),
        "every command names h2's VM: {cmds:?}"
    );
    assert!(cmds.iter().any(|(_, _, op)| op == "power_off"), "{cmds:?}");
    // What the hosts received agrees: h1 got nothing, and its VM runs on.
    let log = estate.command_log();
    assert!(log.iter().all(|c| c.target != "h1"), "{log:?}");
    let truth = estate.truth();
    assert_eq!(truth[&h1].1.power, PowerState::PoweredOn);
    assert_eq!(truth[&h2].1.power, PowerState::PoweredOff);
    assert!(estate.unclean_power_losses().is_empty());
}

#[test]
fn both_fed_each_gets_its_own_commands() {
    let (estate, audit, _) = run(&["h1", "h2"]);
    let h1 = VmId::scoped(&HostId::from("h1"), "qemu/100");
    let h2 = VmId::scoped(&HostId::from("h2"), "qemu/100");
    let cmds = issued(&audit);
    // h1's cooperative guest is asked once and stops; h2's stubborn one is
    // asked, then powered off. No command crosses hosts.
    for (h, vm, _) in &cmds {
        assert_eq!(vm.local_on(h), Some("qemu/100"), "{cmds:?}");
    }
    assert!(
        !cmds
            .iter()
            .any(|(_, vm, op)| vm == &h1 && op == "power_off"),
        "{cmds:?}"
    );
    assert!(
        cmds.iter()
            .any(|(_, vm, op)| vm == &h2 && op == "power_off"),
        "{cmds:?}"
    );
    let truth = estate.truth();
    assert_eq!(truth[&h1].1.power, PowerState::PoweredOff);
    assert_eq!(truth[&h2].1.power, PowerState::PoweredOff);
    assert!(estate.unclean_power_losses().is_empty());
}

/// The controller finds its own VM without being told its name (issue 12,
/// "the controller knows itself"): by the SMBIOS UUID it reads from DMI,
/// here in the byte order a guest on older VMware virtual hardware sees
/// against vSphere's `config.uuid`. Its VM gets no command; the UPS command
/// goes before its own host's forced shutdown.
#[test]
fn the_controller_finds_its_own_vm_by_its_smbios_uuid() {
    let run = |dmi: &str| {
        let clock = SimClock::new();
        let estate = Estate::new(Arc::new(clock.clone()));
        let h = HostId::from("h1");
        estate.add_host(h.clone(), SimHostConfig::default().autostop(true));
        estate.add_vm(
            &h,
            VmInfo::new("a", "app", PowerState::PoweredOn),
            Guest::Cooperative(secs(20)),
        );
        let mut ctl = VmInfo::new("inst-ctl", "ups-box-7", PowerState::PoweredOn);
        ctl.bios_uuid = Some("564d379a-5654-a8b9-daab-2ed35a1b2c3d".into());
        estate.add_vm(&h, ctl, Guest::Cooperative(secs(10)));
        let ups = SimUps::install(
            &estate,
            UpsConfig::feeding("ups", vec![h.clone()], secs(3600)),
            UpsScript::new().at(secs(10), UpsStep::MainsLost),
        );
        let me = upsvisor::MachineIdentity {
            bios_uuid: Some(dmi.into()),
            ips: vec![],
        };
        let mut e = Engine::new(
            Arc::new(clock.clone()),
            Inventory::new(
                vec![HostEntry::new("h1", "h1", TransportKind::Sim)],
                vec![upsvisor::Outlet::new("ups", "main", vec![h.clone()])],
            ),
            PollerConfig::default()
                .period(secs(60))
                .on_battery_period(secs(15))
                .clone(),
            PolicyConfig::default()
                .on_battery_for(Some(secs(30)))
                .clone(),
            SequencerConfig::default()
                .controller_vm(Some(upsvisor::Matcher::Identity(me)))
                .final_action(upsvisor::FinalAction::ShutdownReturn { delay: secs(5) })
                .clone(),
        )
        .unwrap()
        .with_config(EngineConfig::default().status_interval(secs(5)).clone());
        e.add_host(&h, Arc::new(estate.transport(&h))).unwrap();
        e.add_device(DeviceId::from("ups"), Arc::new(ups));
        let mut events = e.subscribe(1 << 16);
        clock.block_on(e.run_until(Instant::from_millis(5_000)));
        let found = e.plan().controller_found;
        clock.block_on(e.run_until(Instant::from_millis(1_200_000)));
        let mut issued = Vec::new();
        while let Some(ev) = events.try_next() {
            if let EngineEvent::Audit(a) = &*ev {
                if let Audit::Issued { cmd, .. } = &a.what {
                    issued.push(format!("{cmd:?}"));
                }
            }
        }
        (found, issued, estate)
    };
    let (found, issued, estate) = run("9A374D56-5456-B9A8-DAAB-2ED35A1B2C3D");
    assert_eq!(found, Some(true));
    let pos = |pat: &str| issued.iter().position(|c| c.contains(pat));
    assert!(
        !issued.iter().any(|c| c.contains("inst-ctl")),
        "its own VM gets no command: {issued:?}"
    );
    let ups = pos("ShutdownReturn").expect("the UPS command is sent");
    let own = pos("ShutdownForce").expect("its own host goes last");
    assert!(pos("\"a\"").unwrap() < ups && ups < own, "{issued:?}");
    assert!(estate.unclean_power_losses().is_empty());
    // Another machine's UUID: not found, said so, and nothing is held back.
    let (found, issued, _) = run("564d379a-5654-a8b9-daab-2ed35a1b2c3e");
    assert_eq!(found, Some(false));
    assert!(issued.iter().any(|c| c.contains("inst-ctl")), "{issued:?}");
}
