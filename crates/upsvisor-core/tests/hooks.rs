//! Table tests of hooks in the sequencer: when they start, what a blocking
//! failure holds, what ends the hold, and what the plan says.

use std::collections::BTreeSet;
use std::time::Duration;

use upsvisor_core::{
    Audit, Command, Error, Hook, HookPoint, HostEntry, HostId, HostInfo, HostInventory,
    HostOutcome, Instant, Inventory, Issued, Matcher, Outlet, PowerState, PowerView, Sequencer,
    SequencerConfig, ToolsState, TransportKind, VmGroup, VmInfo, VmTable, merge,
};

const ON: PowerState = PowerState::PoweredOn;
const OFF: PowerState = PowerState::PoweredOff;

fn vm(id: &str, power: PowerState) -> VmInfo {
    let mut v = VmInfo::new(id, format!("name-{id}"), power);
    v.tools = ToolsState::Running;
    v
}

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

fn failing(runtime_s: Option<u32>) -> PowerView {
    let mut v = PowerView::default();
    v.at_risk = BTreeSet::from([HostId::from("h1")]);
    v.unhealthy = BTreeSet::from(["ups".into()]);
    v.on_battery = true;
    v.runtime_s = runtime_s;
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

/// Commands as text; hooks as `hook NAME`.
fn ops(cmds: &[Issued]) -> Vec<String> {
    cmds.iter()
        .map(|i| match &i.cmd {
            Command::Vm { vm, op, .. } => format!("{op} {vm}"),
            Command::Host { host, op } => format!("{op} {host}"),
            Command::Device { device, .. } => format!("device {device}"),
            Command::Hook { hook, .. } => format!("hook {hook}"),
            Command::Detach { device } => format!("detach {device}"),
            Command::Attach { device } => format!("attach {device}"),
            _ => "?".into(),
        })
        .collect()
}

fn hook_id(cmds: &[Issued], name: &str) -> u64 {
    cmds.iter()
        .find(|i| matches!(&i.cmd, Command::Hook { hook, .. } if hook == name))
        .map(|i| i.id)
        .unwrap_or_else(|| panic!("no hook {name} in {:?}", ops(cmds)))
}

/// One group `db` (VM `a` on `h1`), forced deadline 600 s.
fn cfg_with(hook: Hook) -> SequencerConfig {
    SequencerConfig::default()
        .force_host_after(Some(Duration::from_secs(600)))
        .group(VmGroup::new(
            "db",
            1,
            vec![Matcher::Name("name-a".into())],
            Duration::from_secs(120),
        ))
        .hook(hook)
        .clone()
}

fn group_hook(blocking: bool) -> Hook {
    Hook::new(
        "flush",
        HookPoint::BeforeGroup { group: "db".into() },
        Duration::from_secs(30),
    )
    .blocking(blocking)
}

/// The episode opens at 0 s; at 1 s a fresh table shows `a` on.
fn started(s: &mut Sequencer) -> (VmTable, Vec<Issued>) {
    assert!(s.step(t(0), &VmTable::default(), &failing(None)).is_empty());
    let t1 = table(&VmTable::default(), 1, &[("h1", vec![vm("a", ON)])]);
    let cmds = s.step(t(1), &t1, &failing(None));
    (t1, cmds)
}

fn audits(s: &mut Sequencer) -> Vec<Audit> {
    s.take_audit().into_iter().map(|a| a.what).collect()
}

#[test]
fn a_failed_blocking_hook_holds_its_group_until_the_forced_deadline() {
    let mut s = Sequencer::new(cfg_with(group_hook(true)), inventory(&["h1"]));
    let (t1, cmds) = started(&mut s);
    assert_eq!(
        ops(&cmds),
        vec!["hook flush"],
        "the group waits for its hook"
    );
    let id = hook_id(&cmds, "flush");
    let a = audits(&mut s);
    assert!(a.iter().any(|a| matches!(a, Audit::HookStarted { hook, blocking: true, deadline_s: 30, .. } if hook == "flush")), "{a:?}");
    s.complete(
        t(5),
        id,
        Err(Error::protocol("hook flush", "exit status 1")),
    );
    assert!(
        s.step(t(5), &t1, &failing(None)).is_empty(),
        "held after the failure"
    );
    let a = audits(&mut s);
    assert!(a.iter().any(|a| matches!(a, Audit::HookFinished { error: Some(e), .. } if e.contains("exit status 1"))), "{a:?}");
    assert!(
        a.iter()
            .any(|a| matches!(a, Audit::Note { text } if text.contains("held"))),
        "{a:?}"
    );
    assert!(s.step(t(599), &t1, &failing(None)).is_empty(), "still held");
    assert_eq!(s.next_wakeup(), Some(t(600)));
    // The forced deadline ends the hold, audited.
    let cmds = s.step(t(600), &t1, &failing(None));
    assert_eq!(ops(&cmds), vec!["shutdown_guest a"]);
    let a = audits(&mut s);
    assert!(
        a.iter().any(|a| matches!(a, Audit::ForcedPastHook { hook, reason } if hook == "flush" && reason.contains("forced deadline"))),
        "{a:?}"
    );
}

/// LB (or FSD) arriving during an episode means the battery is about to
/// run out: a held step goes on at once, without a runtime reading and
/// long before the forced deadline. An episode that began at LB (the
/// trigger the operator chose) holds as configured.
#[test]
fn low_battery_ends_a_blocking_hooks_hold() {
    let mut lb = failing(None);
    lb.low_battery = true;
    {
        let mut s = Sequencer::new(cfg_with(group_hook(true)), inventory(&["h1"]));
        assert!(s.step(t(0), &VmTable::default(), &lb).is_empty());
        let t1 = table(&VmTable::default(), 1, &[("h1", vec![vm("a", ON)])]);
        let cmds = s.step(t(1), &t1, &lb);
        let id = hook_id(&cmds, "flush");
        s.complete(
            t(5),
            id,
            Err(Error::protocol("hook flush", "exit status 1")),
        );
        assert!(
            s.step(t(60), &t1, &lb).is_empty(),
            "an episode begun at LB holds within its forced deadline"
        );
        let cmds = s.step(t(600), &t1, &lb);
        assert_eq!(ops(&cmds), vec!["shutdown_guest a"]);
    }
    let mut s = Sequencer::new(cfg_with(group_hook(true)), inventory(&["h1"]));
    let (t1, cmds) = started(&mut s);
    let id = hook_id(&cmds, "flush");
    s.complete(
        t(5),
        id,
        Err(Error::protocol("hook flush", "exit status 1")),
    );
    assert!(s.step(t(60), &t1, &failing(None)).is_empty(), "held");
    let cmds = s.step(t(61), &t1, &lb);
    assert_eq!(ops(&cmds), vec!["shutdown_guest a"], "LB ends the hold");
    let a = audits(&mut s);
    assert!(
        a.iter().any(|a| matches!(a, Audit::ForcedPastHook { hook, reason } if hook == "flush" && reason.contains("LB"))),
        "{a:?}"
    );
}

#[test]
fn a_blocking_hook_that_succeeds_releases_its_group_at_once() {
    let mut s = Sequencer::new(cfg_with(group_hook(true)), inventory(&["h1"]));
    let (t1, cmds) = started(&mut s);
    s.complete(t(3), hook_id(&cmds, "flush"), Ok(()));
    assert_eq!(
        ops(&s.step(t(3), &t1, &failing(None))),
        vec!["shutdown_guest a"]
    );
    assert!(
        !audits(&mut s)
            .iter()
            .any(|a| matches!(a, Audit::ForcedPastHook { .. }))
    );
}

#[test]
fn a_non_blocking_hook_that_fails_holds_nothing() {
    let mut s = Sequencer::new(cfg_with(group_hook(false)), inventory(&["h1"]));
    let (t1, cmds) = started(&mut s);
    assert_eq!(
        ops(&cmds),
        vec!["hook flush", "shutdown_guest a"],
        "started, not waited for"
    );
    s.complete(
        t(2),
        hook_id(&cmds, "flush"),
        Err(Error::protocol("hook", "exit status 2")),
    );
    s.step(t(2), &t1, &failing(None));
    let a = audits(&mut s);
    assert!(
        a.iter()
            .any(|a| matches!(a, Audit::HookFinished { error: Some(_), .. }))
    );
    assert!(
        !a.iter()
            .any(|a| matches!(a, Audit::ForcedPastHook { .. } | Audit::Note { .. })),
        "{a:?}"
    );
}

#[test]
fn no_result_by_the_deadline_is_a_failure_and_a_late_success_changes_nothing() {
    let mut s = Sequencer::new(cfg_with(group_hook(true)), inventory(&["h1"]));
    let (t1, cmds) = started(&mut s);
    assert_eq!(ops(&cmds), vec!["hook flush"]);
    let id = hook_id(&cmds, "flush");
    assert_eq!(s.next_wakeup(), Some(t(31)), "its deadline is a wake-up");
    assert!(
        s.step(t(20), &t1, &failing(None)).is_empty(),
        "waited for while it runs"
    );
    assert!(
        s.step(t(31), &t1, &failing(None)).is_empty(),
        "unknown is not success"
    );
    let a = audits(&mut s);
    assert!(
        a.iter().any(
            |a| matches!(a, Audit::HookFinished { error: Some(e), .. } if e.contains("deadline"))
        ),
        "{a:?}"
    );
    // The runner answers after the deadline: too late.
    s.complete(t(40), id, Ok(()));
    assert!(s.step(t(40), &t1, &failing(None)).is_empty());
}

#[test]
fn the_battery_budget_overrides_a_held_host_shutdown() {
    let hook = Hook::new(
        "unmount",
        HookPoint::BeforeHostShutdown { host: "h1".into() },
        Duration::from_secs(30),
    )
    .blocking(true);
    let cfg = SequencerConfig::default()
        .force_host_after(None)
        .host_down_wait(Duration::from_secs(60))
        .hook(hook)
        .clone();
    let mut s = Sequencer::new(cfg, inventory(&["h1"]));
    s.step(t(0), &VmTable::default(), &failing(Some(900)));
    // No VM: the host is confirmed empty by a second table, then its hook.
    let t1 = table(&VmTable::default(), 1, &[("h1", vec![vm("a", OFF)])]);
    assert!(s.step(t(1), &t1, &failing(Some(900))).is_empty());
    let t2 = table(&t1, 2, &[("h1", vec![vm("a", OFF)])]);
    let cmds = s.step(t(2), &t2, &failing(Some(900)));
    assert_eq!(
        ops(&cmds),
        vec!["hook unmount"],
        "the shutdown waits for it"
    );
    s.complete(
        t(3),
        hook_id(&cmds, "unmount"),
        Err(Error::protocol("hook", "exit status 1")),
    );
    let t3 = table(&t2, 3, &[("h1", vec![vm("a", OFF)])]);
    assert!(
        s.step(t(3), &t3, &failing(Some(900))).is_empty(),
        "held: no forced deadline, battery ample"
    );
    // 60 s left only covers the host's own shutdown: it goes now.
    let t4 = table(&t3, 4, &[("h1", vec![vm("a", OFF)])]);
    let cmds = s.step(t(4), &t4, &failing(Some(60)));
    assert_eq!(ops(&cmds), vec!["shutdown h1"]);
    let a = audits(&mut s);
    assert!(
        a.iter().any(|a| matches!(a, Audit::ForcedPastHook { hook, reason } if hook == "unmount" && reason.contains("60 s left"))),
        "{a:?}"
    );
}

#[test]
fn a_blocking_trigger_hook_holds_every_stage_and_battery_hooks_hold_nothing() {
    let cfg = SequencerConfig::default()
        .force_host_after(Some(Duration::from_secs(600)))
        .hook(Hook::new("page", HookPoint::OnBattery, Duration::from_secs(10)).blocking(true))
        .hook(Hook::new("quiesce", HookPoint::Trigger, Duration::from_secs(20)).blocking(true))
        .hook(Hook::new("report", HookPoint::AfterRestore, Duration::from_secs(10)).blocking(true))
        .clone();
    let mut s = Sequencer::new(cfg, inventory(&["h1"]));
    // On battery without a trigger: the on-battery hook only, once.
    let mut ob = PowerView::default();
    ob.on_battery = true;
    let cmds = s.step(t(0), &VmTable::default(), &ob);
    assert_eq!(ops(&cmds), vec!["hook page"]);
    assert!(
        s.step(t(1), &VmTable::default(), &ob).is_empty(),
        "once per outage"
    );
    // The trigger: its hook starts at once, and holds the stages.
    let cmds = s.step(t(2), &VmTable::default(), &failing(None));
    assert_eq!(ops(&cmds), vec!["hook quiesce"]);
    let quiesce = hook_id(&cmds, "quiesce");
    let t3 = table(&VmTable::default(), 3, &[("h1", vec![vm("a", ON)])]);
    assert!(
        s.step(t(3), &t3, &failing(None)).is_empty(),
        "held while it runs"
    );
    // The on-battery hook's failure holds nothing (it was never waited for).
    s.step(t(11), &t3, &failing(None));
    assert!(
        audits(&mut s).iter().any(
            |a| matches!(a, Audit::HookFinished { hook, error: Some(_), .. } if hook == "page")
        )
    );
    s.complete(t(12), quiesce, Ok(()));
    assert_eq!(
        ops(&s.step(t(12), &t3, &failing(None))),
        vec!["shutdown_guest a"]
    );
}

#[test]
fn after_restore_hooks_start_when_the_restore_is_done() {
    let cfg = SequencerConfig::default()
        .commit_point(upsvisor_core::CommitPoint::FinalAction)
        .hook(Hook::new(
            "report",
            HookPoint::AfterRestore,
            Duration::from_secs(10),
        ))
        .clone();
    let mut s = Sequencer::new(cfg, inventory(&["h1"]));
    s.step(t(0), &VmTable::default(), &failing(None));
    let t1 = table(&VmTable::default(), 1, &[("h1", vec![vm("a", ON)])]);
    let cmds = s.step(t(1), &t1, &failing(None));
    assert_eq!(ops(&cmds), vec!["shutdown_guest a"]);
    s.complete(t(2), cmds[0].id, Ok(()));
    let t2 = table(&t1, 5, &[("h1", vec![vm("a", OFF)])]);
    s.step(t(5), &t2, &failing(None));
    // Mains back before the commit point: restore what was stopped.
    let mut restored = Vec::new();
    let mut tb = t2.clone();
    for at in 6..40 {
        let on = restored.iter().any(|o: &String| o.starts_with("power_on"));
        tb = table(&tb, at, &[("h1", vec![vm("a", if on { ON } else { OFF })])]);
        let cmds = s.step(t(at), &tb, &stable());
        for c in &cmds {
            if !matches!(c.cmd, Command::Hook { .. }) {
                s.complete(t(at), c.id, Ok(()));
            }
        }
        restored.extend(ops(&cmds));
        if !s.busy() {
            break;
        }
    }
    assert!(!s.busy(), "{restored:?}");
    assert_eq!(
        restored.last().map(String::as_str),
        Some("hook report"),
        "{restored:?}"
    );
    assert!(restored.iter().any(|o| o == "power_on a"), "{restored:?}");
    // Its deadline is still watched with no episode left.
    assert!(s.next_wakeup().is_some());
}

#[test]
fn the_plan_adds_blocking_hook_deadlines_and_lists_every_hook() {
    let t1 = table(&VmTable::default(), 1, &[("h1", vec![vm("a", ON)])]);
    let scope = BTreeSet::from([HostId::from("h1")]);
    let plan_of = |cfg: SequencerConfig| Sequencer::new(cfg, inventory(&["h1"])).plan(&t1, &scope);
    let base = plan_of(cfg_with(Hook::new(
        "page",
        HookPoint::OnBattery,
        Duration::from_secs(10),
    )));
    let blocking = plan_of(
        cfg_with(group_hook(true))
            .hook(Hook::new("quiesce", HookPoint::Trigger, Duration::from_secs(20)).blocking(true))
            .hook(
                Hook::new(
                    "unmount",
                    HookPoint::BeforeHostShutdown { host: "h1".into() },
                    Duration::from_secs(40),
                )
                .blocking(true),
            )
            .clone(),
    );
    assert_eq!(
        blocking.estimate,
        base.estimate + Duration::from_secs(30 + 20 + 40),
        "{blocking:#?}"
    );
    let non_blocking = plan_of(cfg_with(group_hook(false)));
    assert_eq!(non_blocking.estimate, base.estimate, "never waited for");
    // Listed where they run.
    let named = |p: &upsvisor_core::Plan, stage: &str, hook: &str| {
        p.stages
            .iter()
            .filter(|s| s.name == stage)
            .flat_map(|s| &s.items)
            .any(|i| i.hook.as_deref() == Some(hook))
    };
    assert!(named(&blocking, "trigger hooks", "quiesce"));
    assert!(named(&blocking, "group db", "flush"));
    assert!(named(&blocking, "hosts", "unmount"));
    assert!(named(&non_blocking, "group db", "flush"));
    assert_eq!(base.side_hooks.len(), 1);
    assert_eq!(base.side_hooks[0].hook.as_deref(), Some("page"));
    #[cfg(feature = "serde")]
    {
        let json = serde_json::to_value(&blocking).unwrap();
        assert!(json.to_string().contains("\"hook\":\"unmount\""));
    }
}

// The journal's encoding: serde (serde_json stands in for it here).
#[cfg(feature = "serde")]
#[test]
fn old_journals_load_and_a_hook_in_flight_at_a_restart_failed() {
    let mut s = Sequencer::new(cfg_with(group_hook(true)), inventory(&["h1"]));
    let (t1, cmds) = started(&mut s);
    hook_id(&cmds, "flush");
    // A journal from before hooks: no hook fields anywhere.
    let mut doc = serde_json::to_value(&s).unwrap();
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("hooks");
                m.remove("hook_runs");
                m.remove("battery_hooked");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut old = doc.clone();
    strip(&mut old);
    let mut back: Sequencer = serde_json::from_value(old).unwrap();
    back.resume_with(cfg_with(group_hook(true)), inventory(&["h1"]), t(2));
    assert!(back.busy());
    // With the hook fields: the hook in flight failed (outcome unknown),
    // and its blocking hold stands.
    let mut s2: Sequencer = serde_json::from_value(doc.take()).unwrap();
    s2.resume_with(cfg_with(group_hook(true)), inventory(&["h1"]), t(2));
    let a = audits(&mut s2);
    assert!(
        a.iter().any(
            |a| matches!(a, Audit::HookFinished { error: Some(e), .. } if e.contains("restarted"))
        ),
        "{a:?}"
    );
    let t2 = table(&t1, 3, &[("h1", vec![vm("a", ON)])]);
    assert!(s2.step(t(3), &t2, &failing(None)).is_empty());
}

#[test]
fn hooks_naming_what_does_not_exist_are_refused() {
    let inv = inventory(&["h1"]);
    let bad_group = SequencerConfig::default()
        .hook(Hook::new(
            "x",
            HookPoint::BeforeGroup {
                group: "nope".into(),
            },
            Duration::from_secs(5),
        ))
        .clone();
    assert!(bad_group.validate_hooks(&inv).is_err());
    let bad_host = SequencerConfig::default()
        .hook(Hook::new(
            "x",
            HookPoint::BeforeHostShutdown { host: "h9".into() },
            Duration::from_secs(5),
        ))
        .clone();
    assert!(bad_host.validate_hooks(&inv).is_err());
    let zero = SequencerConfig::default()
        .hook(Hook::new("x", HookPoint::Trigger, Duration::ZERO))
        .clone();
    assert!(zero.validate_hooks(&inv).is_err());
    let twice = SequencerConfig::default()
        .hook(Hook::new("x", HookPoint::Trigger, Duration::from_secs(1)))
        .hook(Hook::new("x", HookPoint::OnBattery, Duration::from_secs(1)))
        .clone();
    assert!(twice.validate_hooks(&inv).is_err());
    let ok = SequencerConfig::default()
        .hook(Hook::new(
            "x",
            HookPoint::BeforeGroup {
                group: "default".into(),
            },
            Duration::from_secs(5),
        ))
        .clone();
    assert!(ok.validate_hooks(&inv).is_ok());
}

#[test]
fn an_engine_with_hooks_and_no_runner_is_refused() {
    use std::sync::Arc;
    let cfg = SequencerConfig::default()
        .hook(Hook::new("x", HookPoint::Trigger, Duration::from_secs(5)))
        .clone();
    let engine = upsvisor_core::Engine::new(
        Arc::new(upsvisor_core::SimClock::new()),
        inventory(&["h1"]),
        upsvisor_core::PollerConfig::default(),
        upsvisor_core::PolicyConfig::default(),
        cfg,
    )
    .unwrap();
    let err = engine.validate().unwrap_err();
    assert!(err.to_string().contains("no hook runner"), "{err}");
}
