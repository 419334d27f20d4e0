//! What real platforms do, driven through the engine on the simulated
//! estate, one scenario per failure report replayed from users of today's
//! tools (issue 12). Each sets the simulator's documented behaviour and
//! asserts the outcome a careful operator expects.

use std::sync::Arc;
use std::time::Duration;

use upsvisor::sim::{Estate, Guest, SimHostConfig, SimUps, UpsConfig, UpsScript, UpsStep};
use upsvisor::{
    Audit, AuditEntry, DeviceId, Engine, EngineConfig, EngineEvent, FinalAction, HostEntry, HostId,
    Instant, Inventory, PolicyConfig, PollerConfig, PowerState, SequencerConfig, SimClock,
    TransportKind, VmId, VmInfo,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn at(s: u64) -> Instant {
    Instant::from_millis(s * 1000)
}

struct Run {
    estate: Estate,
    audit: Vec<AuditEntry>,
}

impl Run {
    /// Commands the simulated hosts and UPS received, as `target op -> outcome`.
    fn log(&self) -> Vec<(Instant, String)> {
        self.estate
            .command_log()
            .into_iter()
            .map(|c| {
                let vm = c.vm.map(|v| format!(" {v}")).unwrap_or_default();
                (c.at, format!("{}{vm} {} -> {}", c.target, c.op, c.outcome))
            })
            .collect()
    }

    fn first(&self, pat: &str) -> Option<Instant> {
        self.log()
            .into_iter()
            .find(|(_, l)| l.contains(pat))
            .map(|(t, _)| t)
    }
}

/// One host `h1` with `vms`, one UPS feeding it, run until `end` seconds.
fn run(
    host: SimHostConfig,
    vms: Vec<(VmInfo, Guest)>,
    ups: UpsConfig,
    script: UpsScript,
    policy: PolicyConfig,
    seq: SequencerConfig,
    end: u64,
) -> Run {
    let power_on = host.power_on;
    run_hosts(
        vec![("h1", host, power_on, vms)],
        ups,
        script,
        policy,
        seq,
        end,
    )
}

/// One host of [`run_hosts`]: `(id, platform, the inventory lists a
/// power-on method, VMs)`.
type SimHostSpec<'a> = (&'a str, SimHostConfig, bool, Vec<(VmInfo, Guest)>);

/// `after` lists by host id, for [`run_hosts_after`].
type After<'a> = &'a [(&'a str, &'a [&'a str])];

/// Several hosts on one outlet. A method in the inventory that the platform
/// lacks is a BMC that refuses every power-on (`Unsupported`, as a wrong
/// password's `Auth` is: sending it again cannot help).
fn run_hosts(
    hosts: Vec<SimHostSpec<'_>>,
    ups: UpsConfig,
    script: UpsScript,
    policy: PolicyConfig,
    seq: SequencerConfig,
    end: u64,
) -> Run {
    run_hosts_after(hosts, &[], ups, script, policy, seq, end)
}

/// [`run_hosts`] with a shutdown order.
fn run_hosts_after(
    hosts: Vec<SimHostSpec<'_>>,
    after: After<'_>,
    ups: UpsConfig,
    script: UpsScript,
    policy: PolicyConfig,
    seq: SequencerConfig,
    end: u64,
) -> Run {
    run_hosts_acting(hosts, after, ups, script, policy, seq, end, &mut |_, _| {})
}

/// [`run_hosts_after`], calling `act` with the time (s) and the engine
/// every 5 simulated seconds (an operator's command).
#[allow(clippy::too_many_arguments)]
fn run_hosts_acting(
    hosts: Vec<SimHostSpec<'_>>,
    after: After<'_>,
    ups: UpsConfig,
    script: UpsScript,
    policy: PolicyConfig,
    seq: SequencerConfig,
    end: u64,
    act: &mut dyn FnMut(u64, &mut Engine),
) -> Run {
    let clock = SimClock::new();
    let estate = Estate::new(Arc::new(clock.clone()));
    let mut entries = Vec::new();
    let mut ids = Vec::new();
    for (id, cfg, power_on, vms) in hosts {
        let h = HostId::from(id);
        estate.add_host(h.clone(), cfg);
        for (v, g) in vms {
            estate.add_vm(&h, v, g);
        }
        let preds = after
            .iter()
            .find(|(h, _)| *h == id)
            .map_or(&[][..], |(_, p)| *p);
        entries.push(
            HostEntry::new(id, id, TransportKind::Sim)
                .with_power_on(power_on)
                .with_after(preds.iter().copied()),
        );
        ids.push(h);
    }
    let ups = SimUps::install(&estate, ups, script);
    let inventory = Inventory::new(
        entries,
        vec![upsvisor::Outlet::new("ups", "main", ids.clone())],
    );
    let mut poller = PollerConfig::default();
    poller
        .period(secs(60))
        .on_battery_period(secs(15))
        .host_deadline(secs(10));
    let mut engine = Engine::new(Arc::new(clock.clone()), inventory, poller, policy, seq)
        .expect("valid inventory")
        .with_config(EngineConfig::default().status_interval(secs(5)).clone());
    for h in &ids {
        engine
            .add_host(h, Arc::new(estate.transport(h)))
            .expect("known host");
    }
    engine.add_device(DeviceId::from("ups"), Arc::new(ups));
    let mut events = engine.subscribe(1 << 16);
    let mut audit = Vec::new();
    let mut t = 0;
    while t < end {
        t += 5;
        act(t, &mut engine);
        clock.block_on(engine.run_until(at(t)));
        while let Some(ev) = events.try_next() {
            if let EngineEvent::Audit(a) = &*ev {
                audit.push(a.clone());
            }
        }
    }
    Run { estate, audit }
}

fn on(id: &str) -> VmInfo {
    VmInfo::new(VmId::from(id), id, PowerState::PoweredOn)
}

fn outage(lost: u64, back: Option<u64>) -> UpsScript {
    let s = UpsScript::new().at(secs(lost), UpsStep::MainsLost);
    match back {
        Some(b) => s.at(secs(b), UpsStep::MainsBack),
        None => s,
    }
}

fn quick_policy() -> PolicyConfig {
    PolicyConfig::default()
        .on_battery_for(Some(secs(30)))
        .stable_for(secs(30))
        .restore_min_charge_pct(0.0)
        .clone()
}

/// Report: hosts took 300 s to halt; after `host_down_wait` (120 s) they
/// counted as down although they still answered, and shutdown-with-return
/// cut them. Rule: power waits until the host is *seen* down.
#[test]
fn ups_waits_for_a_slow_host_to_be_seen_down() {
    let r = run(
        SimHostConfig::default().shutdown_time(secs(300)),
        vec![(on("a"), Guest::Cooperative(secs(20)))],
        UpsConfig::feeding("ups", vec!["h1".into()], secs(3600)),
        outage(10, None),
        quick_policy(),
        SequencerConfig::default()
            .host_down_wait(secs(120))
            .final_action(FinalAction::ShutdownReturn { delay: secs(0) })
            .clone(),
        1200,
    );
    let host_shutdown = r.first("h1 shutdown -> ok").expect("host shut down");
    let ups = r.first("shutdown.return").expect("UPS command sent");
    assert!(
        ups >= host_shutdown + secs(300),
        "the UPS command waited for the 300 s halt: host {host_shutdown}, UPS {ups}"
    );
    assert!(
        r.estate.host_power_cuts().is_empty(),
        "no cut under a running host: {:?}",
        r.estate.host_power_cuts()
    );
    assert!(r.estate.unclean_power_losses().is_empty());
}

/// Report: ESXi refuses `esxcli system shutdown poweroff` outside
/// maintenance mode; with the default `use_maintenance = false` the refusal
/// was final and the UPS command followed with the host running. Rule: a
/// refusal with a known remedy gets it (enter maintenance, shut down
/// again), and power is never cut under a host that still answers without
/// a logged forced decision.
#[test]
fn esxi_refusing_shutdown_outside_maintenance_is_remedied() {
    let r = run(
        SimHostConfig::default().shutdown_needs_maintenance(true),
        vec![(on("a"), Guest::Cooperative(secs(20)))],
        UpsConfig::feeding("ups", vec!["h1".into()], secs(3600)),
        outage(10, None),
        quick_policy(),
        SequencerConfig::default()
            .use_maintenance(false)
            .final_action(FinalAction::ShutdownReturn { delay: secs(0) })
            .clone(),
        1200,
    );
    let log: Vec<String> = r
        .log()
        .into_iter()
        .map(|(_, l)| l)
        .filter(|l| l.starts_with("h1 ") && !l.contains(" a "))
        .collect();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(
        log[0].starts_with("h1 shutdown -> ") && log[0].contains("maintenance"),
        "{log:?}"
    );
    assert_eq!(log[1], "h1 enter_maintenance -> ok");
    assert_eq!(log[2], "h1 shutdown -> ok");
    assert!(r.audit.iter().any(|a| matches!(&a.what,
        Audit::Note { text } if text.contains("refused the shutdown"))));
    assert!(r.estate.host_power_cuts().is_empty());
    assert!(r.estate.unclean_power_losses().is_empty());
}

/// Report: the libvirt transport reports tools `Unknown` for every domain,
/// and every VM was powered off with no graceful attempt, although
/// `virsh shutdown` (ACPI) works without an agent. Rule: unknown tools
/// state gets a graceful attempt first.
#[test]
fn unknown_tools_state_gets_a_graceful_attempt() {
    let r = run(
        SimHostConfig::default(),
        vec![(on("acpi"), Guest::Acpi(secs(40)))],
        UpsConfig::feeding("ups", vec!["h1".into()], secs(3600)),
        outage(10, None),
        quick_policy(),
        SequencerConfig::default(),
        1200,
    );
    let vm_log: Vec<String> = r
        .log()
        .into_iter()
        .map(|(_, l)| l)
        .filter(|l| l.contains(" acpi "))
        .collect();
    assert_eq!(
        vm_log,
        vec!["h1 acpi shutdown_guest -> ok"],
        "no power-off needed"
    );
    assert!(r.estate.unclean_power_losses().is_empty());
}

/// Report: mains returned while the UPS still reported `OL LB` (charge
/// 50 %, above the gate) and all VMs were started; a UPS that reports no
/// charge always passed the gate. Rule: LB blocks restore; unknown charge
/// blocks it unless configured.
#[test]
fn restore_waits_while_lb_and_without_a_charge_reading() {
    let lb_script = outage(10, Some(400))
        .at(secs(60), UpsStep::LowBattery(true))
        .at(secs(1500), UpsStep::LowBattery(false));
    // Hosts stay up (no power cycle in this drill): only the VMs' restore
    // is at stake.
    let mut seq = SequencerConfig::default();
    seq.final_action(FinalAction::None);
    seq.shutdown_hosts(false);
    let r = run(
        SimHostConfig::default(),
        vec![(on("a"), Guest::Cooperative(secs(20)))],
        UpsConfig::feeding("ups", vec!["h1".into()], secs(3600)),
        lb_script,
        quick_policy(),
        seq.clone(),
        2400,
    );
    let started = r.first("power_on -> ok").expect("restored once LB cleared");
    assert!(started >= at(1500), "started at {started}, under LB");

    // No charge reading: held, then allowed by configuration.
    let no_charge =
        || UpsConfig::feeding("ups", vec!["h1".into()], secs(3600)).reports(false, true);
    let held = run(
        SimHostConfig::default(),
        vec![(on("a"), Guest::Cooperative(secs(20)))],
        no_charge(),
        outage(10, Some(400)),
        quick_policy().on_battery_for(Some(secs(30))).clone(),
        seq.clone(),
        2400,
    );
    assert!(
        held.first("shutdown_guest -> ok").is_some(),
        "the outage shut it down"
    );
    assert_eq!(held.first("power_on"), None, "unknown charge holds restore");
    let allowed = run(
        SimHostConfig::default(),
        vec![(on("a"), Guest::Cooperative(secs(20)))],
        no_charge(),
        outage(10, Some(400)),
        quick_policy().restore_without_charge(true).clone(),
        seq,
        2400,
    );
    assert!(
        allowed.first("power_on -> ok").is_some(),
        "configured: restored"
    );
}

/// Report: an outlet whose device id has no device (a one-character typo
/// in `add_device`) started a full shutdown while mains was on line. Rule:
/// `Engine::validate` names the missing device; a feed without a device is
/// reported as a device error on every read and never counts as failed.
#[test]
fn an_outlet_naming_no_device_is_refused_and_starts_nothing() {
    let clock = SimClock::new();
    let estate = Estate::new(Arc::new(clock.clone()));
    let h = HostId::from("h1");
    estate.add_host(h.clone(), SimHostConfig::default());
    estate.add_vm(&h, on("a"), Guest::Cooperative(secs(20)));
    let ups = SimUps::install(
        &estate,
        UpsConfig::feeding("ups", vec![h.clone()], secs(3600)),
        UpsScript::new(),
    );
    let inventory = Inventory::new(
        vec![HostEntry::new("h1", "h1", TransportKind::Sim)],
        vec![upsvisor::Outlet::new("ups1", "main", vec![h.clone()])],
    );
    let mut engine = Engine::new(
        Arc::new(clock.clone()),
        inventory,
        PollerConfig::default(),
        quick_policy(),
        SequencerConfig::default(),
    )
    .expect("valid inventory");
    engine
        .add_host(&h, Arc::new(estate.transport(&h)))
        .expect("known host");
    engine.add_device(DeviceId::from("ups"), Arc::new(ups)); // typo: "ups" vs "ups1"
    let err = engine.validate().expect_err("the typo is refused");
    assert!(err.to_string().contains("ups1"), "{err}");
    let mut events = engine.subscribe(1 << 12);
    clock.block_on(engine.run_until(at(600)));
    let mut device_errors = 0;
    while let Some(ev) = events.try_next() {
        match &*ev {
            EngineEvent::DeviceError { device, .. } if device.as_str() == "ups1" => {
                device_errors += 1
            }
            EngineEvent::Audit(a) => panic!("nothing may start on line: {a:?}"),
            _ => {}
        }
    }
    assert_eq!(device_errors, 1, "the missing device is reported, once");
    assert!(!engine.sequencer().busy());
    assert!(
        estate.command_log().is_empty(),
        "{:?}",
        estate.command_log()
    );
}

/// Report: upsvisor runs in a VM on a host the UPS feeds (the most common
/// deployment). Its VM was shut down with its group before any UPS command
/// was sent; with `leave_running` the forced host shutdown killed it first.
/// Rule: this controller's own VM and host go last; the power-device
/// command that brings the estate back is sent first, with a delay that
/// covers the own host's shutdown, and its hypervisor (autostop) stops the
/// controller's VM gracefully with the host.
#[test]
fn the_controller_in_the_estate_sends_the_ups_command_before_it_stops() {
    let ctl = VmInfo::new(VmId::from("ctl"), "upsvisor", PowerState::PoweredOn);
    let r = run(
        SimHostConfig::default().autostop(true),
        vec![
            (on("a"), Guest::Cooperative(secs(20))),
            (ctl, Guest::Cooperative(secs(10))),
        ],
        UpsConfig::feeding("ups", vec!["h1".into()], secs(3600)),
        outage(10, None),
        quick_policy(),
        SequencerConfig::default()
            .controller_vm(Some(upsvisor::Matcher::Name("upsvisor".into())))
            .final_action(FinalAction::ShutdownReturn { delay: secs(5) })
            .clone(),
        1200,
    );
    let issued: Vec<String> = r
        .audit
        .iter()
        .filter_map(|a| match &a.what {
            Audit::Issued { cmd, .. } => Some(format!("{cmd:?}")),
            _ => None,
        })
        .collect();
    let pos = |pat: &str| issued.iter().position(|c| c.contains(pat));
    let a_stop = pos("\"a\"").expect("the other VM is stopped");
    let ups = pos("ShutdownReturn").expect("the UPS command is sent");
    let own = pos("ShutdownForce").expect("its own host goes last");
    assert!(a_stop < ups && ups < own, "{issued:?}");
    assert_eq!(
        own,
        issued.len() - 1,
        "nothing after its own host: {issued:?}"
    );
    assert!(
        !issued.iter().any(|c| c.contains("\"ctl\"")),
        "its own VM gets no command of its own: {issued:?}"
    );
    // The delay was stretched towards `host_down_deadline` (900 s), which
    // the hour of runtime allows: a host may take minutes to halt.
    assert!(issued[ups].contains("900s"), "{}", issued[ups]);
    // Nothing watches its own host halt after that: the cut is a forced
    // decision, logged before the command.
    let logged = r
        .audit
        .iter()
        .position(
            |a| matches!(&a.what, Audit::ForcedPowerCut { host, .. } if host.as_str() == "h1"),
        )
        .expect("the cut under its own host is logged as forced");
    let sent = r
        .audit
        .iter()
        .position(|a| matches!(&a.what, Audit::Issued { cmd, .. } if format!("{cmd:?}").contains("ShutdownReturn")))
        .expect("sent");
    assert!(logged < sent);
    assert!(
        r.estate.unclean_power_losses().is_empty(),
        "autostop stopped it cleanly: {:?}",
        r.estate.unclean_power_losses()
    );
}

/// Operators' request: hosts halted during an outage stay off when mains
/// returns before the UPS cut its output (nothing cycles their power),
/// until someone presses a button. Rule (issue 14): restore powers on, out
/// of band, a host this episode took down and that does not answer, again
/// at intervals, until it answers; then its VMs are started. Without a
/// method the host stays off and its VMs with it.
#[test]
fn restore_powers_on_a_halted_host_out_of_band() {
    let go = |method: bool| {
        run(
            SimHostConfig::default().power_on(method),
            vec![(on("a"), Guest::Cooperative(secs(20)))],
            UpsConfig::feeding("ups", vec!["h1".into()], secs(3600)),
            outage(10, Some(400)),
            quick_policy(),
            SequencerConfig::default()
                .final_action(FinalAction::None)
                .clone(),
            1500,
        )
    };
    let r = go(true);
    let halted = r.first("h1 shutdown -> ok").expect("host shut down");
    let powered = r.first("h1 power_on -> ok").expect("host powered on");
    assert!(
        powered > halted + secs(300),
        "after mains came back: {powered}"
    );
    assert!(r.estate.host_up(&HostId::from("h1")), "{:?}", r.log());
    let started = r.first("h1 a power_on -> ok").expect("VM started");
    assert!(
        started > powered,
        "the VM after its host: {started} vs {powered}"
    );
    assert!(
        r.audit.iter().any(|a| matches!(&a.what, Audit::EpisodeEnded { outcome } if outcome.starts_with("restored: 1 of 1"))),
        "{:?}",
        r.audit
    );
    let r = go(false);
    assert!(r.first("h1 power_on").is_none(), "no method, nothing sent");
    assert!(
        !r.estate.host_up(&HostId::from("h1")),
        "stays off without a method"
    );
}

/// Issue 14: a bad power-on method (a wrong BMC password, an unknown
/// system) never blocks other hosts. h2's BMC refuses every power-on; h1's
/// works. Restore powers h1 on and starts its VM as soon as h1 answers,
/// not after h2's restore wait (900 s); h2 is asked once (a refusal for
/// good is not sent again), holds only its own VM, and is given up at its
/// wait.
#[test]
fn a_host_whose_bmc_refuses_holds_only_its_own_vms() {
    let stays_off = || SimHostConfig::default().boots_on_power_return(false);
    let r = run_hosts(
        vec![
            (
                "h1",
                stays_off().power_on(true),
                true,
                vec![(on("a"), Guest::Cooperative(secs(20)))],
            ),
            (
                "h2",
                stays_off().power_on(false),
                true,
                vec![(on("b"), Guest::Cooperative(secs(20)))],
            ),
        ],
        UpsConfig::feeding("ups", vec!["h1".into(), "h2".into()], secs(3600)),
        outage(10, Some(400)),
        quick_policy(),
        SequencerConfig::default()
            .final_action(FinalAction::None)
            .clone(),
        1800,
    );
    let refused = r.first("h2 power_on -> ").expect("h2's BMC asked");
    let powered = r.first("h1 power_on -> ok").expect("h1 powered on");
    let started = r.first("h1 a power_on -> ok").expect("h1's VM started");
    assert!(
        started > powered && started < at(400 + 300),
        "h1's VM as soon as h1 is back, not at h2's restore wait: {started} {:?}",
        r.log()
    );
    assert!(refused < started + secs(60), "{refused}");
    assert_eq!(
        r.log()
            .iter()
            .filter(|(_, l)| l.starts_with("h2 power_on"))
            .count(),
        1,
        "a refusal for good is not sent again: {:?}",
        r.log()
    );
    assert!(
        r.first("h2 b power_on").is_none(),
        "h2's VM is never started"
    );
    assert!(
        r.audit.iter().any(|a| matches!(&a.what, Audit::Note { text } if text.starts_with("h2 did not answer within the restore wait"))),
        "{:?}",
        r.audit
    );
    assert!(
        r.audit.iter().any(|a| matches!(&a.what, Audit::EpisodeEnded { outcome } if outcome.starts_with("restored: 1 of 2"))),
        "{:?}",
        r.audit
    );
}

/// The shutdown order read backwards for power, too: h1 (a hypervisor
/// using the NAS) shut down before the NAS, so restore powers the NAS on
/// first and h1 only once the NAS answers again; a hypervisor booted
/// before its NFS/iSCSI datastore finds it missing. The wait is said once
/// and does not eat h1's own restore wait.
#[test]
fn restore_powers_on_storage_before_the_hosts_that_use_it() {
    let stays_off = || {
        SimHostConfig::default()
            .boots_on_power_return(false)
            .power_on(true)
    };
    let r = run_hosts_after(
        vec![
            (
                "h1",
                stays_off(),
                true,
                vec![(on("a"), Guest::Cooperative(secs(20)))],
            ),
            ("nas", stays_off().boot_time(secs(300)), true, vec![]),
        ],
        &[("nas", &["h1"])],
        UpsConfig::feeding("ups", vec!["h1".into(), "nas".into()], secs(3600)),
        outage(10, Some(600)),
        quick_policy(),
        SequencerConfig::default()
            .final_action(FinalAction::None)
            .clone(),
        2400,
    );
    let nas_on = r.first("nas power_on -> ok").expect("NAS powered on");
    let h1_on = r.first("h1 power_on -> ok").expect("h1 powered on");
    assert!(
        h1_on >= nas_on + secs(300),
        "h1 once the NAS answers (300 s boot), not with it: {h1_on} vs {nas_on}: {:?}",
        r.log()
    );
    assert!(
        r.first("h1 a power_on -> ok").is_some_and(|t| t > h1_on),
        "h1's VM comes back after h1: {:?}",
        r.log()
    );
    let said: Vec<&str> = r
        .audit
        .iter()
        .filter_map(|a| match &a.what {
            Audit::Note { text } if text.starts_with("h1 is powered on once") => {
                Some(text.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        said,
        ["h1 is powered on once nas is back (nas shuts down after h1)"]
    );
}

/// A NAS that restore cannot power on (its method refuses for good, and
/// no cut cycled its power) will not come back by itself: h1 does not
/// wait for it.
#[test]
fn a_host_that_cannot_be_powered_on_does_not_hold_the_hosts_before_it() {
    let r = run_hosts_after(
        vec![
            (
                "h1",
                SimHostConfig::default()
                    .boots_on_power_return(false)
                    .power_on(true),
                true,
                vec![(on("a"), Guest::Cooperative(secs(20)))],
            ),
            (
                "nas",
                SimHostConfig::default()
                    .boots_on_power_return(false)
                    .power_on(false),
                true,
                vec![],
            ),
        ],
        &[("nas", &["h1"])],
        UpsConfig::feeding("ups", vec!["h1".into(), "nas".into()], secs(3600)),
        outage(10, Some(600)),
        quick_policy(),
        SequencerConfig::default()
            .final_action(FinalAction::None)
            .clone(),
        2400,
    );
    let refused = r
        .first("nas power_on -> unsupported")
        .unwrap_or_else(|| panic!("the NAS's power-on is refused: {:?}", r.log()));
    let h1_on = r.first("h1 power_on -> ok").expect("h1 powered on");
    assert!(
        h1_on <= refused + secs(120),
        "h1 is not held by a NAS nothing can bring back: {h1_on} vs {refused}: {:?}",
        r.log()
    );
    assert!(r.first("h1 a power_on -> ok").is_some(), "{:?}", r.log());
}

/// Issue 15: an operator's live test of one host, with mains on line. Its
/// VMs stop, the host shuts down, it is powered on out of band, and its
/// VMs start again; the other host, its VM and the UPS are not touched.
/// Refused for a host without a power-on method.
#[test]
fn a_live_host_test_stops_and_brings_back_one_host_only() {
    let host = || {
        SimHostConfig::default()
            .boots_on_power_return(false)
            .power_on(true)
    };
    let mut started = None;
    let mut refused = None;
    let r = run_hosts_acting(
        vec![
            (
                "h1",
                host(),
                true,
                vec![
                    (on("a"), Guest::Cooperative(secs(20))),
                    (on("b"), Guest::Cooperative(secs(30))),
                ],
            ),
            (
                "h2",
                host(),
                false,
                vec![(on("c"), Guest::Cooperative(secs(20)))],
            ),
        ],
        &[],
        UpsConfig::feeding("ups", vec!["h1".into(), "h2".into()], secs(3600)),
        UpsScript::new(),
        quick_policy(),
        SequencerConfig::default(),
        1500,
        &mut |t, engine| {
            if t == 120 {
                refused = Some(engine.start_host_test(&HostId::from("h2")).unwrap_err());
                started = Some(engine.start_host_test(&HostId::from("h1")));
            }
        },
    );
    let e = refused.expect("asked");
    assert!(e.to_string().contains("no out-of-band power-on"), "{e}");
    started
        .expect("asked")
        .expect("the test starts with mains on line");
    let stop_a = r.first("h1 a shutdown_guest -> ok").expect("a stopped");
    let down = r.first("h1 shutdown -> ok").expect("h1 shut down");
    let up = r.first("h1 power_on -> ok").expect("h1 powered on");
    let back = r.first("h1 a power_on -> ok").expect("a started again");
    assert!(stop_a < down && down < up && up < back, "{:?}", r.log());
    assert!(
        r.first("h1 b power_on -> ok").is_some_and(|t| t > up),
        "{:?}",
        r.log()
    );
    let others: Vec<String> = r
        .log()
        .into_iter()
        .map(|(_, l)| l)
        .filter(|l| l.starts_with("h2") || l.starts_with("ups"))
        .collect();
    assert!(others.is_empty(), "nothing else is touched: {others:?}");
    let device_cmds: Vec<&AuditEntry> = r
        .audit
        .iter()
        .filter(|a| {
            matches!(
                &a.what,
                Audit::Issued {
                    cmd: upsvisor::Command::Device { .. }
                        | upsvisor::Command::Detach { .. }
                        | upsvisor::Command::Attach { .. },
                    ..
                }
            )
        })
        .collect();
    assert!(
        device_cmds.is_empty(),
        "no device command, no detach from the UPS: {device_cmds:?}"
    );
    assert!(
        r.audit.iter().any(|a| matches!(&a.what, Audit::EpisodeStarted { reason, .. } if reason == "operator's test of host h1")),
        "{:?}",
        r.audit
    );
    assert!(
        r.audit.iter().any(|a| matches!(&a.what, Audit::EpisodeEnded { outcome } if outcome.starts_with("restored: 2 of 2"))),
        "{:?}",
        r.audit
    );
}

/// A real outage during a host test makes it the outage's episode: every
/// host fed is shut down and the UPS gets its command, as without the
/// test.
#[test]
fn an_outage_during_a_host_test_becomes_the_outages_episode() {
    let host = || {
        SimHostConfig::default()
            .boots_on_power_return(false)
            .power_on(true)
    };
    let r = run_hosts_acting(
        vec![
            (
                "h1",
                host(),
                true,
                vec![(on("a"), Guest::Cooperative(secs(60)))],
            ),
            (
                "h2",
                host(),
                true,
                vec![(on("c"), Guest::Cooperative(secs(20)))],
            ),
        ],
        &[],
        UpsConfig::feeding("ups", vec!["h1".into(), "h2".into()], secs(3600)),
        outage(130, None),
        quick_policy(),
        SequencerConfig::default()
            .final_action(FinalAction::ShutdownReturn { delay: secs(0) })
            .clone(),
        1500,
        &mut |t, engine| {
            if t == 120 {
                engine
                    .start_host_test(&HostId::from("h1"))
                    .expect("mains on line at 120 s");
            }
        },
    );
    assert!(
        r.first("h2 c shutdown_guest -> ok").is_some(),
        "{:?}",
        r.log()
    );
    assert!(r.first("h2 shutdown -> ok").is_some(), "{:?}", r.log());
    assert!(
        r.first("shutdown.return").is_some(),
        "the UPS command: {:?}",
        r.log()
    );
    assert!(
        r.audit.iter().any(|a| matches!(&a.what, Audit::Note { text } if text.starts_with("a real outage during the host test"))),
        "{:?}",
        r.audit
    );
    assert!(
        r.first("h1 power_on").is_none(),
        "no restore while mains is out: {:?}",
        r.log()
    );
}

/// Issue 14: the shutdown order read backwards at restore. A NAS that shuts
/// down after the hypervisor using it (`after = ["h1"]`) serves it: h1's VM
/// starts only once the NAS is back, although h1 boots first (90 s against
/// the NAS's 300 s), and the wait is said once.
#[test]
fn restore_starts_vms_after_the_hosts_that_shut_down_after_theirs() {
    // No out-of-band power-on: the UPS's shutdown-with-return cuts both,
    // and both boot when power returns (at 600 s), h1 first.
    let boots = || {
        SimHostConfig::default()
            .boots_on_power_return(true)
            .power_on(false)
    };
    let r = run_hosts_after(
        vec![
            (
                "h1",
                boots(),
                false,
                vec![(on("a"), Guest::Cooperative(secs(20)))],
            ),
            ("nas", boots().boot_time(secs(300)), false, vec![]),
        ],
        &[("nas", &["h1"])],
        UpsConfig::feeding("ups", vec!["h1".into(), "nas".into()], secs(3600)),
        outage(10, Some(600)),
        quick_policy(),
        SequencerConfig::default()
            .final_action(FinalAction::ShutdownReturn { delay: secs(0) })
            .clone(),
        2400,
    );
    let h1_down = r.first("h1 shutdown -> ok").expect("h1 shut down");
    let nas_down = r.first("nas shutdown -> ok").expect("nas shut down");
    assert!(nas_down > h1_down, "the NAS after h1 on the way down");
    let started = r.first("h1 a power_on -> ok").expect("h1's VM started");
    assert!(
        started > Instant::ZERO + secs(600 + 300),
        "h1's VM once the NAS is back (power at 600 s, 300 s boot), not when h1 is (90 s): {started}: {:?}",
        r.log()
    );
    let said: Vec<&str> = r
        .audit
        .iter()
        .filter_map(|a| match &a.what {
            Audit::Note { text } if text.starts_with("h1's VMs wait for nas") => {
                Some(text.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        said,
        ["h1's VMs wait for nas to be back (nas shuts down after h1)"]
    );
}
