//! Table tests of the sequencer as a pure state machine: hand-built tables
//! and power views in, commands out.

use std::collections::BTreeSet;
use std::time::Duration;

use upsvisor_core::{
    Audit, Command, HostEntry, HostId, HostInfo, HostInventory, HostOutcome, Instant, Inventory,
    Outlet, PowerState, PowerView, Sequencer, SequencerConfig, ToolsState, TransportKind, VmInfo,
    VmOp, VmTable, merge,
};

fn vm(id: &str, power: PowerState, tools: ToolsState) -> VmInfo {
    let mut v = VmInfo::new(id, format!("name-{id}"), power);
    v.tools = tools;
    v
}

const ON: PowerState = PowerState::PoweredOn;
const OFF: PowerState = PowerState::PoweredOff;
const TOOLS: ToolsState = ToolsState::Running;

/// A table from `host -> vms`, taken at `at` seconds, merged on `prev`.
fn table(prev: &VmTable, at: u64, hosts: &[(&str, Vec<VmInfo>)]) -> VmTable {
    let outcomes = hosts
        .iter()
        .map(|(h, vms)| {
            (
                HostId::from(*h),
                HostOutcome::Answered(HostInventory::new(HostInfo::new("t", "1"), vms.clone())),
            )
        })
        .collect::<Vec<_>>();
    merge(prev, outcomes, Instant::from_millis(at * 1000)).0
}

fn inventory(hosts: &[&str]) -> Inventory {
    Inventory::new(
        hosts
            .iter()
            .map(|h| HostEntry::new(*h, *h, TransportKind::Sim))
            .collect(),
        vec![Outlet::new(
            "ups",
            "main",
            hosts.iter().map(|h| HostId::from(*h)),
        )],
    )
}

fn failing(hosts: &[&str]) -> PowerView {
    let mut v = PowerView::default();
    v.at_risk = hosts.iter().map(|h| HostId::from(*h)).collect();
    v.unhealthy = BTreeSet::from(["ups".into()]);
    v.on_battery = true;
    v.reason = "test".into();
    v
}

fn stable() -> PowerView {
    let mut v = PowerView::default();
    v.mains_stable = true;
    v.mains_back = true;
    v
}

fn t(s: u64) -> Instant {
    Instant::from_millis(s * 1000)
}

fn ops(cmds: &[upsvisor_core::Issued]) -> Vec<String> {
    cmds.iter()
        .map(|i| match &i.cmd {
            Command::Vm { vm, op, .. } => format!("{op} {vm}"),
            Command::Host { host, op } => format!("{op} {host}"),
            Command::Device { device, cmd } => format!("{device} {cmd:?}"),
            Command::Detach { device } => format!("detach {device}"),
            Command::Attach { device } => format!("attach {device}"),
            _ => "?".into(),
        })
        .collect()
}

#[test]
fn guest_shutdown_then_power_off_then_host_then_ups() {
    let mut cfg = SequencerConfig::default();
    cfg.force_host_after(None);
    let mut s = Sequencer::new(cfg, inventory(&["h1"]));
    let t0 = table(
        &VmTable::default(),
        0,
        &[(
            "h1",
            vec![
                vm("a", ON, TOOLS),
                vm("b", ON, ToolsState::NotInstalled),
                vm("c", OFF, TOOLS),
            ],
        )],
    );
    // The first step opens the episode but waits for a table newer than it.
    assert!(s.step(t(1), &t0, &failing(&["h1"])).is_empty());
    assert!(s.take_poll_wanted());
    let t1 = table(
        &t0,
        2,
        &[(
            "h1",
            vec![
                vm("a", ON, TOOLS),
                vm("b", ON, ToolsState::NotInstalled),
                vm("c", OFF, TOOLS),
            ],
        )],
    );
    let cmds = s.step(t(2), &t1, &failing(&["h1"]));
    assert_eq!(
        ops(&cmds),
        vec!["shutdown_guest a", "power_off b"],
        "no tools: off at once; c is already off"
    );
    for c in &cmds {
        s.complete(t(2), c.id, Ok(()));
    }
    // Stubborn: still on at the 120 s timeout -> power off. The host waits.
    let t2 = table(
        &t1,
        100,
        &[(
            "h1",
            vec![vm("a", ON, TOOLS), vm("b", OFF, TOOLS), vm("c", OFF, TOOLS)],
        )],
    );
    assert!(s.step(t(100), &t2, &failing(&["h1"])).is_empty());
    assert_eq!(s.next_wakeup(), Some(t(122)));
    let cmds = s.step(t(122), &t2, &failing(&["h1"]));
    assert_eq!(ops(&cmds), vec!["power_off a"]);
    s.complete(t(122), cmds[0].id, Ok(()));
    let t3 = table(
        &t2,
        123,
        &[(
            "h1",
            vec![
                vm("a", OFF, TOOLS),
                vm("b", OFF, TOOLS),
                vm("c", OFF, TOOLS),
            ],
        )],
    );
    // Empty: but a shutdown cannot be called back, so it waits for one more
    // table (a VM may have migrated in since this one).
    assert!(s.step(t(123), &t3, &failing(&["h1"])).is_empty());
    assert!(s.take_poll_wanted());
    let t3 = table(
        &t3,
        124,
        &[(
            "h1",
            vec![
                vm("a", OFF, TOOLS),
                vm("b", OFF, TOOLS),
                vm("c", OFF, TOOLS),
            ],
        )],
    );
    let cmds = s.step(t(124), &t3, &failing(&["h1"]));
    assert_eq!(ops(&cmds), vec!["shutdown h1"]);
    s.complete(t(124), cmds[0].id, Ok(()));
    // The host stops answering: down; then the UPS.
    let t4 = merge(
        &t3,
        [(
            HostId::from("h1"),
            HostOutcome::Failed(upsvisor_core::Error::unreachable("h1", "down")),
        )],
        t(140),
    )
    .0;
    // One missed poll is not "down" (a host busy halting its VMs may miss
    // one): power waits for it to stay silent for a poll period.
    assert!(s.step(t(140), &t4, &failing(&["h1"])).is_empty());
    let t5 = merge(
        &t4,
        [(
            HostId::from("h1"),
            HostOutcome::Failed(upsvisor_core::Error::unreachable("h1", "down")),
        )],
        t(156),
    )
    .0;
    let cmds = s.step(t(156), &t5, &failing(&["h1"]));
    assert_eq!(ops(&cmds), vec!["ups ShutdownReturn { delay: 30s }"]);
    let audit = s.take_audit();
    assert!(audit.iter().any(|a| matches!(&a.what, Audit::Note { text } if text.contains("did not stop within its timeout"))));
    assert!(
        !audit
            .iter()
            .any(|a| matches!(a.what, Audit::ForcedHostShutdown { .. }))
    );
}

#[test]
fn host_waits_for_running_vm_until_forced_deadline_and_logs_it() {
    let mut cfg = SequencerConfig::default();
    cfg.force_host_after(Some(Duration::from_secs(300)))
        .default_action(upsvisor_core::VmAction::LeaveRunning);
    let mut s = Sequencer::new(cfg, inventory(&["h1"]));
    let t0 = table(&VmTable::default(), 1, &[("h1", vec![vm("a", ON, TOOLS)])]);
    s.step(t(0), &VmTable::default(), &failing(&["h1"]));
    assert!(
        s.step(t(1), &t0, &failing(&["h1"])).is_empty(),
        "left running: the host must wait"
    );
    assert!(s.step(t(299), &t0, &failing(&["h1"])).is_empty());
    let cmds = s.step(t(300), &t0, &failing(&["h1"]));
    assert_eq!(ops(&cmds), vec!["shutdown h1"]);
    let audit = s.take_audit();
    let forced: Vec<_> = audit
        .iter()
        .filter_map(|a| match &a.what {
            Audit::ForcedHostShutdown { host, reason } => Some((host.clone(), reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(forced.len(), 1);
    assert!(forced[0].1.contains("name-a"), "{forced:?}");
}

#[test]
fn mains_back_before_commit_aborts_and_restores_only_what_was_stopped() {
    let mut s = Sequencer::new(SequencerConfig::default(), inventory(&["h1"]));
    let vms = || vec![vm("a", ON, TOOLS), vm("b", ON, TOOLS), vm("c", OFF, TOOLS)];
    s.step(t(0), &VmTable::default(), &failing(&["h1"]));
    let t1 = table(&VmTable::default(), 1, &[("h1", vms())]);
    let cmds = s.step(t(1), &t1, &failing(&["h1"]));
    assert_eq!(ops(&cmds), vec!["shutdown_guest a", "shutdown_guest b"]);
    for c in &cmds {
        s.complete(t(1), c.id, Ok(()));
    }
    // a stopped, b is still shutting down when mains is stable again.
    let t2 = table(
        &t1,
        30,
        &[(
            "h1",
            vec![vm("a", OFF, TOOLS), vm("b", ON, TOOLS), vm("c", OFF, TOOLS)],
        )],
    );
    let cmds = s.step(t(30), &t2, &stable());
    assert!(
        s.take_audit()
            .iter()
            .any(|a| matches!(&a.what, Audit::Note { text } if text.contains("aborting")))
    );
    assert_eq!(
        ops(&cmds),
        vec!["power_on a"],
        "b is mid-shutdown: wait for it; c was off: leave it"
    );
    s.complete(t(30), cmds[0].id, Ok(()));
    let t3 = table(
        &t2,
        60,
        &[(
            "h1",
            vec![vm("a", ON, TOOLS), vm("b", OFF, TOOLS), vm("c", OFF, TOOLS)],
        )],
    );
    let cmds = s.step(t(60), &t3, &stable());
    assert_eq!(ops(&cmds), vec!["power_on b"]);
    s.complete(t(60), cmds[0].id, Ok(()));
    let t4 = table(
        &t3,
        70,
        &[(
            "h1",
            vec![vm("a", ON, TOOLS), vm("b", ON, TOOLS), vm("c", OFF, TOOLS)],
        )],
    );
    assert!(s.step(t(70), &t4, &stable()).is_empty());
    assert!(!s.busy(), "episode over");
}

#[test]
fn migrated_vm_is_followed_to_its_new_host() {
    let mut s = Sequencer::new(SequencerConfig::default(), inventory(&["h1", "h2"]));
    s.step(t(0), &VmTable::default(), &failing(&["h1", "h2"]));
    let t1 = table(
        &VmTable::default(),
        1,
        &[("h1", vec![vm("a", ON, TOOLS)]), ("h2", vec![])],
    );
    let t2 = table(&t1, 2, &[("h1", vec![]), ("h2", vec![vm("a", ON, TOOLS)])]);
    let cmds = s.step(t(2), &t2, &failing(&["h1", "h2"]));
    match &cmds[..] {
        [c] => assert!(
            matches!(&c.cmd, Command::Vm { host, op: VmOp::ShutdownGuest, .. } if host.as_str() == "h2")
        ),
        other => panic!("{other:?}"),
    }
    // The VM moved again before the command landed: NotFound asks for a poll and it is retried.
    s.complete(
        t(2),
        cmds[0].id,
        Err(upsvisor_core::Error::not_found("VM a on h2")),
    );
    assert!(s.take_poll_wanted());
    let t3 = table(&t2, 3, &[("h1", vec![vm("a", ON, TOOLS)]), ("h2", vec![])]);
    let cmds = s.step(t(3), &t3, &failing(&["h1", "h2"]));
    assert!(
        matches!(&cmds[0].cmd, Command::Vm { host, .. } if host.as_str() == "h1"),
        "{cmds:?}"
    );
}

// The journal's encoding: serde (serde_json stands in for it here).
#[cfg(feature = "serde")]
#[test]
fn restart_resumes_without_resending() {
    let mut s = Sequencer::new(SequencerConfig::default(), inventory(&["h1"]));
    s.step(t(0), &VmTable::default(), &failing(&["h1"]));
    let t1 = table(&VmTable::default(), 1, &[("h1", vec![vm("a", OFF, TOOLS)])]);
    assert!(
        s.step(t(1), &t1, &failing(&["h1"])).is_empty(),
        "confirming with a newer table"
    );
    let t1 = table(&t1, 2, &[("h1", vec![vm("a", OFF, TOOLS)])]);
    let cmds = s.step(t(2), &t1, &failing(&["h1"]));
    assert_eq!(ops(&cmds), vec!["shutdown h1"], "{:#?}", s.take_audit());
    // The controller dies with the host shutdown in flight.
    let saved = serde_json::to_string(&s).unwrap();
    let mut back: Sequencer = serde_json::from_str(&saved).unwrap();
    back.resume_with(SequencerConfig::default(), inventory(&["h1"]), t(5));
    let t2 = table(&t1, 6, &[("h1", vec![vm("a", OFF, TOOLS)])]);
    let again = back.step(t(6), &t2, &failing(&["h1"]));
    assert!(
        !ops(&again).iter().any(|o| o.starts_with("shutdown h1")),
        "{again:?}"
    );
    assert!(
        back.take_audit()
            .iter()
            .any(|a| matches!(&a.what, Audit::Note { text } if text.contains("restarted")))
    );
}

#[test]
fn plan_orders_groups_and_estimates() {
    use upsvisor_core::{Matcher, VmGroup};
    let mut cfg = SequencerConfig::default();
    cfg.group(
        VmGroup::new(
            "mgmt",
            0,
            vec![Matcher::Name("name-vc*".into())],
            Duration::from_secs(300),
        )
        .management(true),
    )
    .group(VmGroup::new(
        "web",
        1,
        vec![Matcher::Name("name-w*".into())],
        Duration::from_secs(60),
    ));
    let s = Sequencer::new(cfg, inventory(&["h1", "h2"]));
    let tb = table(
        &VmTable::default(),
        1,
        &[
            ("h1", vec![vm("vc", ON, TOOLS), vm("w1", ON, TOOLS)]),
            ("h2", vec![vm("w2", ON, TOOLS), vm("x", OFF, TOOLS)]),
        ],
    );
    let scope: BTreeSet<HostId> = ["h1".into(), "h2".into()].into();
    let p = s.plan(&tb, &scope);
    let names: Vec<&str> = p.stages.iter().map(|st| st.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "group web",
            "hosts",
            "group mgmt",
            "management hosts",
            "power devices"
        ]
    );
    assert_eq!(
        p.stages[1]
            .items
            .iter()
            .filter_map(|i| i.host.as_ref())
            .map(|h| h.as_str())
            .collect::<Vec<_>>(),
        vec!["h2"]
    );
    // web: 60 s + 15 s observe lag + 5 s; hosts: 120 + 15 s; mgmt: 300 + 20; hosts 135; UPS 30.
    assert_eq!(p.estimate, Duration::from_secs(80 + 135 + 320 + 135 + 30));
    // Fits when estimate + the 60 s margin <= runtime.
    assert!(p.fits(760));
    assert!(!p.fits(759));
}

fn failing_with_runtime(hosts: &[&str], runtime_s: u32) -> PowerView {
    let mut v = failing(hosts);
    v.runtime_s = Some(runtime_s);
    v
}

/// Rule: guest shutdown deadlines are bounded by the remaining runtime. A
/// guest still shutting down when the battery only covers the host's own
/// shutdown (plus a margin) is powered off, with the reason in the audit,
/// instead of waiting out a timeout the battery cannot carry (seed 47397
/// of the 100,000-scenario run lost power this way).
#[test]
fn guest_timeout_is_cut_short_when_runtime_no_longer_covers_it() {
    let mut cfg = SequencerConfig::default();
    cfg.force_host_after(None)
        .host_down_wait(Duration::from_secs(60))
        .default_action(upsvisor_core::VmAction::Shutdown {
            timeout: Duration::from_secs(600),
        });
    let mut s = Sequencer::new(cfg, inventory(&["h1"]));
    let t0 = table(&VmTable::default(), 1, &[("h1", vec![vm("a", ON, TOOLS)])]);
    s.step(
        t(0),
        &VmTable::default(),
        &failing_with_runtime(&["h1"], 900),
    );
    let cmds = s.step(t(1), &t0, &failing_with_runtime(&["h1"], 900));
    assert_eq!(ops(&cmds), vec!["shutdown_guest a"]);
    s.complete(t(1), cmds[0].id, Ok(()));
    // Plenty of runtime: the guest keeps its timeout.
    assert!(
        s.step(t(30), &t0, &failing_with_runtime(&["h1"], 300))
            .is_empty()
    );
    // 90 s left = host_down_wait (60 s) + margin (30 s): power off now.
    let cmds = s.step(t(40), &t0, &failing_with_runtime(&["h1"], 90));
    assert_eq!(ops(&cmds), vec!["power_off a"]);
    assert!(s.take_audit().iter().any(|a| matches!(&a.what,
        Audit::Note { text } if text.contains("90 s left no longer cover"))));
}

/// Rule: when the battery only covers the host's own shutdown, a host still
/// blocked by a VM is shut down as a logged forced decision (the battery,
/// not the host, would otherwise stop the VM).
#[test]
fn host_is_forced_and_logged_when_runtime_only_covers_its_own_shutdown() {
    let mut cfg = SequencerConfig::default();
    cfg.force_host_after(None)
        .host_down_wait(Duration::from_secs(60))
        .default_action(upsvisor_core::VmAction::LeaveRunning);
    let mut s = Sequencer::new(cfg, inventory(&["h1"]));
    let t0 = table(&VmTable::default(), 1, &[("h1", vec![vm("a", ON, TOOLS)])]);
    s.step(
        t(0),
        &VmTable::default(),
        &failing_with_runtime(&["h1"], 600),
    );
    assert!(
        s.step(t(1), &t0, &failing_with_runtime(&["h1"], 600))
            .is_empty(),
        "a VM left running holds its host while the battery lasts"
    );
    let cmds = s.step(t(2), &t0, &failing_with_runtime(&["h1"], 60));
    assert_eq!(ops(&cmds), vec!["shutdown h1"]);
    assert!(s.take_audit().iter().any(|a| matches!(&a.what,
        Audit::ForcedHostShutdown { reason, .. } if reason.contains("60 s left"))));
}

/// Rule: only a list the host gave in the latest poll is evidence that it
/// runs no VM. A host that is silent (here it never answered the restarted
/// controller) is not shut down on silence, and a tracked VM that is in no
/// list is kept, not dropped (seed 43213 shut a host down under a running
/// management VM this way).
#[test]
fn silent_host_is_not_shut_down_and_its_vms_are_not_dropped() {
    let mut cfg = SequencerConfig::default();
    cfg.force_host_after(None);
    let mut s = Sequencer::new(cfg, inventory(&["h1", "h2"]));
    let t0 = table(
        &VmTable::default(),
        1,
        &[
            ("h1", vec![vm("a", OFF, TOOLS)]),
            ("h2", vec![vm("b", ON, TOOLS)]),
        ],
    );
    s.step(t(0), &VmTable::default(), &failing(&["h1", "h2"]));
    let cmds = s.step(t(1), &t0, &failing(&["h1", "h2"]));
    assert_eq!(ops(&cmds), vec!["shutdown_guest b"]);
    s.complete(t(1), cmds[0].id, Ok(()));
    // The controller restarts: a new process's table, in which h2 has
    // never answered (its row is stale with no VMs and no last_seen).
    s.resume_with(
        SequencerConfig::default().force_host_after(None).clone(),
        inventory(&["h1", "h2"]),
        t(5),
    );
    let poll = |prev: &VmTable, at: u64| {
        merge(
            prev,
            [
                (
                    HostId::from("h1"),
                    HostOutcome::Answered(HostInventory::new(
                        HostInfo::new("t", "1"),
                        vec![vm("a", OFF, TOOLS)],
                    )),
                ),
                (
                    HostId::from("h2"),
                    HostOutcome::Failed(upsvisor_core::Error::unreachable("h2", "down")),
                ),
            ],
            t(at),
        )
        .0
    };
    let mut tab = VmTable::default();
    let mut sent = Vec::new();
    for at in [10, 20, 30, 400, 800, 810, 820, 3000] {
        tab = poll(&tab, at);
        for c in s.step(t(at), &tab, &failing(&["h1", "h2"])) {
            sent.extend(ops(std::slice::from_ref(&c)));
            s.complete(t(at), c.id, Ok(()));
        }
    }
    let audit = s.take_audit();
    assert!(sent.contains(&"shutdown h1".to_string()), "{sent:?}");
    assert!(
        !sent.contains(&"shutdown h2".to_string()),
        "a silent host is never shut down on silence: {sent:?}"
    );
    assert!(
        !audit.iter().any(|a| matches!(&a.what,
            Audit::Note { text } if text.contains("left alone"))),
        "a VM on a silent host is not dropped"
    );
    assert!(
        audit.iter().any(|a| matches!(&a.what,
            Audit::Note { text } if text.contains("is kept until one shows it"))),
        "the audit says why the VM is kept"
    );
}

/// Rule: the journal holds episode state, never configuration. A restart
/// puts the caller's current configuration in force (an edited final
/// action applies), and a host removed from the inventory is dropped from
/// the episode with a note.
// The journal's encoding: serde (serde_json stands in for it here).
#[cfg(feature = "serde")]
#[test]
fn resume_uses_the_current_config_not_the_journaled_one() {
    use upsvisor_core::FinalAction;
    let mut old = SequencerConfig::default();
    old.final_action(FinalAction::ShutdownStayOff {
        delay: Duration::from_secs(5),
    });
    let mut s = Sequencer::new(old, inventory(&["h1", "h2"]));
    s.step(t(0), &VmTable::default(), &failing(&["h1", "h2"]));
    let saved = serde_json::to_string(&s).unwrap();
    assert!(
        !saved.contains("ShutdownStayOff") && !saved.contains("shutdown_stay_off"),
        "configuration is not journaled: {saved}"
    );
    let mut back: Sequencer = serde_json::from_str(&saved).unwrap();
    let mut new = SequencerConfig::default();
    new.final_action(FinalAction::OutletsOff {
        delay: Duration::from_secs(0),
    });
    back.resume_with(new.clone(), inventory(&["h1"]), t(5));
    assert_eq!(back.config(), &new);
    assert!(back.take_audit().iter().any(|a| matches!(&a.what,
        Audit::Note { text } if text.contains("h2 is no longer in the configuration"))));
    // h1 empty: host shutdown, then the current final action.
    let mut tab = VmTable::default();
    let mut sent = Vec::new();
    for at in [6, 7, 8] {
        tab = table(&tab, at, &[("h1", vec![])]);
        for c in back.step(t(at), &tab, &failing(&["h1"])) {
            sent.extend(ops(std::slice::from_ref(&c)));
            back.complete(t(at), c.id, Ok(()));
        }
    }
    let dark = merge(
        &tab,
        [(
            HostId::from("h1"),
            HostOutcome::Failed(upsvisor_core::Error::unreachable("h1", "down")),
        )],
        t(20),
    )
    .0;
    let dark = merge(
        &dark,
        [(
            HostId::from("h1"),
            HostOutcome::Failed(upsvisor_core::Error::unreachable("h1", "down")),
        )],
        t(40),
    )
    .0;
    for c in back.step(t(40), &dark, &failing(&["h1"])) {
        sent.extend(ops(std::slice::from_ref(&c)));
    }
    assert!(sent.contains(&"shutdown h1".to_string()), "{sent:?}");
    assert!(
        sent.iter().any(|o| o.contains("OutletOff")),
        "the edited final action is the one in force: {sent:?}"
    );
    assert!(!sent.iter().any(|o| o.contains("StayOff")), "{sent:?}");
}

/// Rule: a VM that was stopped and comes back (HA, host autostart, a
/// person) is stopped again before its host is shut down, even when its
/// group's stage is over.
#[test]
fn a_vm_restarted_after_its_stage_is_stopped_again() {
    let mut cfg = SequencerConfig::default();
    cfg.force_host_after(None)
        .default_action(upsvisor_core::VmAction::PowerOff);
    let mut s = Sequencer::new(cfg, inventory(&["h1"]));
    let mut tab = table(&VmTable::default(), 1, &[("h1", vec![vm("a", ON, TOOLS)])]);
    s.step(t(0), &VmTable::default(), &failing(&["h1"]));
    let cmds = s.step(t(1), &tab, &failing(&["h1"]));
    assert_eq!(ops(&cmds), vec!["power_off a"]);
    s.complete(t(1), cmds[0].id, Ok(()));
    // Off; the host stage confirms with a newer table.
    tab = table(&tab, 5, &[("h1", vec![vm("a", OFF, TOOLS)])]);
    assert!(s.step(t(5), &tab, &failing(&["h1"])).is_empty());
    // HA starts it again before the confirming table.
    tab = table(&tab, 10, &[("h1", vec![vm("a", ON, TOOLS)])]);
    let cmds = s.step(t(10), &tab, &failing(&["h1"]));
    assert_eq!(ops(&cmds), vec!["power_off a"], "stopped again, host held");
}

/// Rule: a battery that holds restore (no charge reading, lingering LB)
/// ends the outage all the same, and a later outage opens a new episode;
/// nothing stays stuck in "down".
#[test]
fn restore_held_by_the_battery_still_answers_a_new_outage() {
    let mut cfg = SequencerConfig::default();
    cfg.force_host_after(None)
        .final_action(upsvisor_core::FinalAction::None);
    cfg.shutdown_hosts(false);
    let mut s = Sequencer::new(cfg, inventory(&["h1"]));
    let mut tab = table(&VmTable::default(), 1, &[("h1", vec![vm("a", ON, TOOLS)])]);
    s.step(t(0), &VmTable::default(), &failing(&["h1"]));
    let cmds = s.step(t(1), &tab, &failing(&["h1"]));
    assert_eq!(ops(&cmds), vec!["shutdown_guest a"]);
    s.complete(t(1), cmds[0].id, Ok(()));
    tab = table(&tab, 30, &[("h1", vec![vm("a", OFF, TOOLS)])]);
    for at in [30, 31, 32] {
        tab = table(&tab, at, &[("h1", vec![vm("a", OFF, TOOLS)])]);
        for c in s.step(t(at), &tab, &failing(&["h1"])) {
            s.complete(t(at), c.id, Ok(()));
        }
    }
    // Mains back, battery not good enough: the outage is over, restore held.
    let mut held = PowerView::default();
    held.mains_back = true;
    tab = table(&tab, 100, &[("h1", vec![vm("a", OFF, TOOLS)])]);
    assert!(s.step(t(100), &tab, &held).is_empty(), "nothing started");
    assert!(s.status().is_some_and(|st| st.phase == "restoring"));
    // A new outage: a new episode.
    tab = table(&tab, 200, &[("h1", vec![vm("a", OFF, TOOLS)])]);
    s.step(t(200), &tab, &failing(&["h1"]));
    assert_eq!(s.status().map(|st| st.id), Some(2), "a new episode opened");
}

/// Rule (NUT as its users expect): upsvisor holds a primary `upsmon`
/// back only while it still has hosts to stop. Once the hosts are down and
/// the power-device command is out, each device feeding them is detached
/// (NUT `LOGOUT`); it is attached again (`LOGIN`) when the restore is done.
#[test]
fn devices_are_detached_once_hosts_are_down_and_attached_after_restore() {
    let mut cfg = SequencerConfig::default();
    cfg.force_host_after(None);
    cfg.shutdown_hosts(false);
    let mut s = Sequencer::new(cfg, inventory(&["h1"]));
    let mut tab = table(&VmTable::default(), 1, &[("h1", vec![vm("a", OFF, TOOLS)])]);
    s.step(t(0), &VmTable::default(), &failing(&["h1"]));
    let mut sent = Vec::new();
    for at in [1, 2, 3] {
        tab = table(&tab, at, &[("h1", vec![vm("a", OFF, TOOLS)])]);
        for c in s.step(t(at), &tab, &failing(&["h1"])) {
            sent.extend(ops(std::slice::from_ref(&c)));
            s.complete(t(at), c.id, Ok(()));
        }
    }
    let ups = sent.iter().position(|o| o.contains("ShutdownReturn"));
    let detach = sent.iter().position(|o| o == "detach ups");
    assert!(ups.is_some() && detach > ups, "{sent:?}");
    assert!(!sent.iter().any(|o| o.starts_with("attach")), "{sent:?}");
    // Mains back for good: restore, then attach.
    let mut all = Vec::new();
    for at in [400, 401, 402, 403] {
        tab = table(&tab, at, &[("h1", vec![vm("a", OFF, TOOLS)])]);
        for c in s.step(t(at), &tab, &stable()) {
            all.extend(ops(std::slice::from_ref(&c)));
            s.complete(t(at), c.id, Ok(()));
        }
    }
    assert!(all.contains(&"attach ups".to_string()), "{all:?}");
    assert!(!s.busy(), "the episode ended");
}

/// Issue 18: nothing is planned or sent that a transport says it cannot do.
#[test]
fn capabilities_are_honoured_in_the_plan_and_the_commands() {
    use upsvisor_core::{Capabilities, HostOp};
    let mut cfg = SequencerConfig::default();
    cfg.force_host_after(None).use_maintenance(true);
    let mut s = Sequencer::new(cfg, inventory(&["h1", "h2"]));
    // h1: no guest shutdown, no maintenance mode. h2: cannot shut down.
    s.set_capabilities(
        "h1".into(),
        Capabilities::all()
            .with_vm_ops([VmOp::PowerOff, VmOp::PowerOn])
            .with_host_ops([HostOp::Shutdown]),
    );
    s.set_capabilities(
        "h2".into(),
        Capabilities::all().with_host_ops([HostOp::EnterMaintenance, HostOp::ExitMaintenance]),
    );
    let rows = |a: PowerState, b: PowerState| {
        vec![
            ("h1", vec![vm("a", a, TOOLS)]),
            ("h2", vec![vm("b", b, TOOLS)]),
        ]
    };
    let t0 = table(&VmTable::default(), 0, &rows(ON, ON));
    let scope: BTreeSet<HostId> = ["h1".into(), "h2".into()].into();
    let plan = s.plan(&t0, &scope);
    let item = |host: &str, vm: Option<&str>| {
        plan.stages
            .iter()
            .flat_map(|st| &st.items)
            .filter(|i| {
                i.host.as_ref().map(HostId::as_str) == Some(host)
                    && i.vm.as_ref().map(|(id, _)| id.as_str()) == vm
            })
            .map(|i| i.action.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        item("h1", Some("a")),
        ["power off (its host's transport cannot shut guests down)"]
    );
    assert_eq!(
        item("h2", Some("b")),
        ["guest shutdown, power off after timeout"]
    );
    assert_eq!(item("h1", None), ["shut down host"], "no maintenance on h1");
    assert_eq!(
        item("h2", None),
        ["stays up: its transport cannot shut it down"]
    );

    assert!(s.step(t(1), &t0, &failing(&["h1", "h2"])).is_empty());
    let t1 = table(&t0, 2, &rows(ON, ON));
    let cmds = s.step(t(2), &t1, &failing(&["h1", "h2"]));
    assert_eq!(
        ops(&cmds),
        vec!["power_off a", "shutdown_guest b"],
        "a is powered off at once: its transport cannot ask the guest"
    );
    for c in &cmds {
        s.complete(t(2), c.id, Ok(()));
    }
    let t2 = table(&t1, 10, &rows(OFF, OFF));
    let mut sent = Vec::new();
    for (at, tb) in [(10, t2.clone()), (11, table(&t2, 11, &rows(OFF, OFF)))] {
        let cmds = s.step(t(at), &tb, &failing(&["h1", "h2"]));
        for c in &cmds {
            s.complete(t(at), c.id, Ok(()));
        }
        sent.extend(ops(&cmds));
    }
    assert_eq!(
        sent,
        vec!["shutdown h1"],
        "h1 straight to shutdown, h2 never asked"
    );
    let audit = s.take_audit();
    let notes: Vec<&str> = audit
        .iter()
        .filter_map(|a| match &a.what {
            Audit::Note { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        notes.iter().any(|n| n
            .contains("name-a is on h1, whose transport cannot shut guests down: powering off")),
        "{notes:#?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("h2: its transport cannot shut the host down; it stays up")),
        "{notes:#?}"
    );
}

/// Issue 14: a host listed `after` others (storage after the hypervisors
/// that use it) shuts down only once they are down or past their expected
/// halt time; the plan shows the order.
#[test]
fn a_host_after_others_waits_for_them_and_the_plan_says_so() {
    let mut inv = inventory(&["h1", "nas"]);
    inv.hosts[1] = HostEntry::new("nas", "nas", TransportKind::SshServer).with_after(["h1"]);
    inv.validate().unwrap();
    let mut cfg = SequencerConfig::default();
    cfg.force_host_after(None);
    let mut s = Sequencer::new(cfg, inv);
    let rows = |a: PowerState| vec![("h1", vec![vm("a", a, TOOLS)]), ("nas", vec![])];
    let t0 = table(&VmTable::default(), 0, &rows(ON));
    let scope: BTreeSet<HostId> = ["h1".into(), "nas".into()].into();
    let plan = s.plan(&t0, &scope);
    let hosts: Vec<(String, String)> = plan
        .stages
        .iter()
        .flat_map(|st| &st.items)
        .filter(|i| i.vm.is_none())
        .filter_map(|i| Some((i.host.clone()?.to_string(), i.action.clone())))
        .collect();
    assert_eq!(
        hosts,
        [
            ("h1".to_owned(), "shut down host".to_owned()),
            ("nas".to_owned(), "shut down host (after h1)".to_owned())
        ]
    );
    // The order is in the plan's data too, not only its text.
    let afters: Vec<(String, Vec<HostId>)> = plan
        .stages
        .iter()
        .flat_map(|st| &st.items)
        .filter(|i| i.vm.is_none() && i.hook.is_none())
        .filter_map(|i| Some((i.host.clone()?.to_string(), i.after.clone())))
        .collect();
    assert_eq!(
        afters,
        [
            ("h1".to_owned(), vec![]),
            ("nas".to_owned(), vec![HostId::from("h1")])
        ]
    );

    let fail = failing(&["h1", "nas"]);
    let mut sent: Vec<(u64, String)> = Vec::new();
    let mut tb = t0;
    let step = |s: &mut Sequencer, at: u64, tb: &VmTable, sent: &mut Vec<(u64, String)>| {
        let cmds = s.step(t(at), tb, &fail);
        for c in &cmds {
            s.complete(t(at), c.id, Ok(()));
        }
        sent.extend(ops(&cmds).into_iter().map(|o| (at, o)));
    };
    step(&mut s, 1, &tb, &mut sent);
    for at in [2, 3, 4] {
        tb = table(&tb, at, &rows(ON));
        step(&mut s, at, &tb, &mut sent);
    }
    assert_eq!(
        sent,
        [(2, "shutdown_guest a".to_owned())],
        "nas waits for h1"
    );
    for at in [10, 11, 12] {
        tb = table(&tb, at, &rows(OFF));
        step(&mut s, at, &tb, &mut sent);
    }
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[1].1, "shutdown h1");
    // h1 halting: nas still waits, until h1 is seen down.
    tb = table(&tb, 20, &[("nas", vec![])]);
    step(&mut s, 20, &tb, &mut sent);
    assert_eq!(sent.len(), 2, "{sent:?}");
    for at in [40, 60] {
        tb = merge(
            &tb,
            [
                (
                    HostId::from("h1"),
                    HostOutcome::Failed(upsvisor_core::Error::unreachable("h1", "down")),
                ),
                (
                    HostId::from("nas"),
                    HostOutcome::Answered(HostInventory::new(HostInfo::new("t", "1"), vec![])),
                ),
            ],
            t(at),
        )
        .0;
        step(&mut s, at, &tb, &mut sent);
    }
    let nas = sent.iter().find(|(_, o)| o == "shutdown nas");
    assert!(nas.is_some_and(|(at, _)| *at >= 40), "{sent:?}");
    let audit = s.take_audit();
    assert!(
        audit.iter().any(|a| matches!(&a.what, Audit::Note { text }
            if text == "nas shuts down after h1: waiting for them to go down")),
        "{audit:#?}"
    );
}

#[test]
fn a_shutdown_order_with_a_cycle_or_an_unknown_host_is_refused() {
    let mut inv = inventory(&["a", "b", "c"]);
    inv.hosts[0] = HostEntry::new("a", "a", TransportKind::Sim).with_after(["c"]);
    inv.hosts[1] = HostEntry::new("b", "b", TransportKind::Sim).with_after(["a"]);
    inv.hosts[2] = HostEntry::new("c", "c", TransportKind::Sim).with_after(["b"]);
    let e = inv.validate().unwrap_err().to_string();
    assert!(
        e.contains("the shutdown order has a cycle: a -> c -> b -> a"),
        "{e}"
    );
    inv.hosts[2] = HostEntry::new("c", "c", TransportKind::Sim).with_after(["x"]);
    let e = inv.validate().unwrap_err().to_string();
    assert!(
        e.contains("hosts[2].after[0]") && e.contains("unknown host \"x\""),
        "{e}"
    );
    inv.hosts[2] = HostEntry::new("c", "c", TransportKind::Sim).with_after(["c"]);
    let e = inv.validate().unwrap_err().to_string();
    assert!(e.contains("cannot shut down after itself"), "{e}");
}

/// A host with no VMs (a NAS) waiting for a hypervisor that never goes
/// down is not left to the battery: the wait yields when the battery only
/// covers its own shutdown, logged as a forced decision.
#[test]
fn a_waiting_host_is_not_left_to_the_battery() {
    let mut inv = inventory(&["h1", "nas"]);
    inv.hosts[1] = HostEntry::new("nas", "nas", TransportKind::SshServer).with_after(["h1"]);
    let mut cfg = SequencerConfig::default();
    cfg.force_host_after(None);
    let mut s = Sequencer::new(cfg, inv);
    let nas_only = |prev: &VmTable, at: u64| {
        merge(
            prev,
            [
                (
                    HostId::from("h1"),
                    HostOutcome::Failed(upsvisor_core::Error::unreachable("h1", "silent")),
                ),
                (
                    HostId::from("nas"),
                    HostOutcome::Answered(HostInventory::new(HostInfo::new("t", "1"), vec![])),
                ),
            ],
            t(at),
        )
        .0
    };
    let t0 = table(
        &VmTable::default(),
        0,
        &[("h1", vec![vm("a", ON, TOOLS)]), ("nas", vec![])],
    );
    let mut tb = nas_only(&t0, 1);
    let mut sent = Vec::new();
    let mut fail = failing(&["h1", "nas"]);
    fail.runtime_s = Some(1800);
    for at in [2, 3, 30, 60] {
        tb = nas_only(&tb, at);
        let cmds = s.step(t(at), &tb, &fail);
        sent.extend(ops(&cmds));
        for c in &cmds {
            s.complete(t(at), c.id, Ok(()));
        }
    }
    assert!(!sent.contains(&"shutdown nas".to_owned()), "{sent:?}");
    // The battery now only covers a host's own shutdown (120 s).
    // h1's commands fail: it is silent.
    fail.runtime_s = Some(100);
    let mut at = 61;
    let mut sent = Vec::new();
    while at < 120 && !sent.contains(&"shutdown nas".to_owned()) {
        tb = nas_only(&tb, at);
        let cmds = s.step(t(at), &tb, &fail);
        for c in &cmds {
            let silent = matches!(&c.cmd, Command::Vm { host, .. } | Command::Host { host, .. } if host.as_str() == "h1");
            let r = if silent {
                Err(upsvisor_core::Error::unreachable("h1", "silent"))
            } else {
                Ok(())
            };
            s.complete(t(at), c.id, r);
        }
        sent.extend(ops(&cmds));
        at += 5;
    }
    assert!(sent.contains(&"shutdown nas".to_owned()), "{sent:?}");
    let audit = s.take_audit();
    assert!(
        audit.iter().any(
            |a| matches!(&a.what, Audit::ForcedHostShutdown { host, reason }
            if host.as_str() == "nas" && reason.contains("not waiting any longer for h1"))
        ),
        "{audit:#?}"
    );
}

/// Issue 15, part 4: an operator's live test of one group stops that
/// group's VMs (and nothing else: no other VM, no host, no device) with
/// mains on line, then starts them again, as one audited episode.
#[test]
fn a_live_test_stops_and_restores_one_group_only() {
    let mut cfg = SequencerConfig::default();
    cfg.group(upsvisor_core::VmGroup::new(
        "batch",
        -10,
        vec![upsvisor_core::Matcher::Name("name-b*".into())],
        Duration::from_secs(60),
    ));
    let mut s = Sequencer::new(cfg.clone(), inventory(&["h1", "h2"]));
    let on = |at: u64, prev: &VmTable, b: PowerState| {
        table(
            prev,
            at,
            &[
                ("h1", vec![vm("a", ON, TOOLS), vm("b1", b, TOOLS)]),
                ("h2", vec![vm("b2", b, TOOLS)]),
            ],
        )
    };
    let t0 = on(0, &VmTable::default(), ON);
    // Refused: unknown group, on battery, disarmed.
    let e = s.start_test(t(1), &t0, &stable(), "nope").unwrap_err();
    assert!(
        e.to_string().contains("no group `nope`") && e.to_string().contains("batch"),
        "{e}"
    );
    let e = s
        .start_test(t(1), &t0, &failing(&["h1"]), "batch")
        .unwrap_err();
    assert!(e.to_string().contains("mains on line"), "{e}");
    let mut off = cfg.clone();
    off.armed(false);
    let mut d = Sequencer::new(off, inventory(&["h1", "h2"]));
    assert!(
        d.start_test(t(1), &t0, &stable(), "batch")
            .unwrap_err()
            .to_string()
            .contains("disarmed")
    );

    let id = s.start_test(t(1), &t0, &stable(), "batch").unwrap();
    assert!(
        s.start_test(t(1), &t0, &stable(), "batch").is_err(),
        "one at a time"
    );
    let t2 = on(2, &t0, ON);
    let cmds = s.step(t(2), &t2, &stable());
    let mut got = ops(&cmds);
    got.sort();
    assert_eq!(got, ["shutdown_guest b1", "shutdown_guest b2"]);
    for c in &cmds {
        s.complete(t(2), c.id, Ok(()));
    }
    // The group is down: restored, with mains on line throughout.
    let t3 = on(10, &t2, OFF);
    let cmds = s.step(t(10), &t3, &stable());
    let cmds = if cmds.is_empty() {
        s.step(t(11), &on(11, &t3, OFF), &stable())
    } else {
        cmds
    };
    let mut got = ops(&cmds);
    got.sort();
    assert_eq!(got, ["power_on b1", "power_on b2"]);
    for c in &cmds {
        s.complete(t(12), c.id, Ok(()));
    }
    let t4 = on(20, &t3, ON);
    assert!(s.step(t(20), &t4, &stable()).is_empty());
    let audit = s.take_audit();
    assert!(audit.iter().any(|a| a.episode == id
        && matches!(&a.what, Audit::EpisodeStarted { reason, full: false, .. } if reason == "operator's test of group batch")));
    assert!(audit.iter().any(|a| a.episode == id
        && matches!(&a.what, Audit::EpisodeEnded { outcome } if outcome.starts_with("restored: 2 of 2"))), "{audit:#?}");
    assert!(
        !audit.iter().any(|a| matches!(
            &a.what,
            Audit::Issued {
                cmd: Command::Host { .. } | Command::Device { .. },
                ..
            }
        )),
        "no host or device command"
    );
}
