//! Operators' commands go through the engine as submitted work (issue 16,
//! items 4 and 5): they run under the engine's per-call deadline while
//! polling and power reads go on, and during an episode a command that
//! contradicts it is refused with the reason.

use std::sync::Arc;
use std::time::Duration;

use upsvisor::sim::{
    Estate, Guest, HostBehavior, SimHostConfig, SimUps, UpsConfig, UpsScript, UpsStep,
};
use upsvisor::{
    DeviceId, Engine, EngineConfig, EngineEvent, ErrorKind, HostEntry, HostId, HostOp, Instant,
    Inventory, PolicyConfig, PollerConfig, PowerState, SequencerConfig, SimClock, TransportKind,
    VmId, VmInfo, VmOp,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn at(s: u64) -> Instant {
    Instant::from_millis(s * 1000)
}

struct World {
    clock: SimClock,
    estate: Estate,
    engine: Engine,
}

/// `h1` (fed by the UPS) with `a`, `b`, `c`; mains lost at `lost` s.
fn world(lost: u64) -> World {
    world_with(lost, SequencerConfig::default())
}

fn world_with(lost: u64, seq: SequencerConfig) -> World {
    let clock = SimClock::new();
    let estate = Estate::new(Arc::new(clock.clone()));
    let h = HostId::from("h1");
    estate.add_host(h.clone(), SimHostConfig::default());
    for id in ["a", "b", "c"] {
        estate.add_vm(
            &h,
            VmInfo::new(id, id, PowerState::PoweredOn),
            Guest::Cooperative(secs(20)),
        );
    }
    let ups = SimUps::install(
        &estate,
        UpsConfig::feeding("ups", vec![h.clone()], secs(3600)),
        UpsScript::new().at(secs(lost), UpsStep::MainsLost),
    );
    let mut engine = engine_on(&clock, &estate, seq);
    engine.add_device(DeviceId::from("ups"), Arc::new(ups));
    World {
        clock,
        estate,
        engine,
    }
}

/// Item 4: three commands that hang on their host never freeze the
/// engine: the power event of a mains failure 10 s later is read and
/// published on time, and each command ends at its deadline with a clear
/// error.
#[test]
fn hanging_operator_commands_never_block_power_reads_or_polling() {
    let mut w = world(20);
    let mut events = w.engine.subscribe(1 << 16);
    w.clock.block_on(w.engine.run_until(at(10)));
    w.estate
        .set_behavior(&HostId::from("h1"), HostBehavior::Hang);
    let pending: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|v| w.engine.submit_vm(&VmId::from(*v), VmOp::PowerOff).unwrap())
        .collect();
    w.clock.block_on(w.engine.run_until(at(40)));
    let mut on_battery_at = None;
    let mut tables_while_hanging = 0;
    let mut manual = Vec::new();
    while let Some(ev) = events.try_next() {
        match &*ev {
            EngineEvent::Power { at, verdict, .. } if verdict.on_battery => {
                on_battery_at.get_or_insert(*at);
            }
            EngineEvent::Table(u) if u.table.taken_at > at(10) => tables_while_hanging += 1,
            EngineEvent::Manual { .. } => manual.push(ev.clone()),
            _ => {}
        }
    }
    let ob = on_battery_at.expect("the mains failure was read while the commands hung");
    assert!(
        ob <= at(30),
        "read within a status interval and the debounce: {ob}"
    );
    assert!(
        tables_while_hanging >= 3,
        "polling went on: {tables_while_hanging} tables"
    );
    assert!(manual.is_empty(), "nothing finished yet: {manual:?}");
    // The per-call deadline (60 s) ends them, each with its own error.
    w.clock.block_on(w.engine.run_until(at(90)));
    for mut rx in pending {
        let r = rx.try_recv().expect("not cancelled").expect("finished");
        let e = r.expect_err("timed out");
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    }
}

/// Item 5: during an episode, a command that would start what it stops is
/// refused (`InvalidState`, with the phase); one that helps it is run.
/// Outside an episode everything is accepted; an unknown VM is `NotFound`.
#[test]
fn during_an_episode_contradicting_commands_are_refused_with_the_reason() {
    let mut w = world(10);
    w.clock.block_on(w.engine.run_until(at(5)));
    let e = w
        .engine
        .submit_vm(&VmId::from("nope"), VmOp::PowerOff)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    // Mains lost at 10 s, on battery for 30 s: the episode starts by ~45 s.
    w.clock.block_on(w.engine.run_until(at(60)));
    assert!(w.engine.sequencer().status().is_some(), "an episode runs");
    let e = w
        .engine
        .submit_vm(&VmId::from("a"), VmOp::PowerOn)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidState, "{e}");
    assert!(e.to_string().contains("stopping"), "{e}");
    let e = w
        .engine
        .submit_host(&HostId::from("h1"), HostOp::ExitMaintenance)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidState, "{e}");
    let mut rx = w
        .engine
        .submit_vm(&VmId::from("b"), VmOp::PowerOff)
        .expect("a power-off helps the episode");
    w.clock.block_on(w.engine.run_until(at(70)));
    assert!(matches!(rx.try_recv(), Ok(Some(Ok(())))));
    assert_eq!(
        w.estate.truth()[&VmId::from("b")].1.power,
        PowerState::PoweredOff
    );
}

/// Issue 16, item 10: an engine rebuilt in the same process (the daemon
/// does it when a host is registered) keeps the outage's timers and the
/// episode instead of starting them again.
#[test]
fn a_rebuilt_engine_adopts_the_outage_and_the_episode() {
    let mut w = world(10);
    // On battery from 10 s; on_battery_for is 30 s.
    w.clock.block_on(w.engine.run_until(at(25)));
    let ups = DeviceId::from("ups");
    assert!(w.engine.verdicts()[&ups].on_battery);
    assert!(w.engine.sequencer().status().is_none());
    // A new engine on the same estate and clock, as the daemon's rebuild.
    let mut e = engine_on(&w.clock, &w.estate, SequencerConfig::default());
    let ups_dev = SimUps::install(
        &w.estate,
        UpsConfig::feeding("ups", vec![HostId::from("h1")], secs(3600)),
        UpsScript::new().at(secs(0), UpsStep::MainsLost),
    );
    e.add_device(ups.clone(), Arc::new(ups_dev));
    e.adopt(&w.engine);
    assert!(e.verdicts()[&ups].on_battery, "the verdict carries over");
    // The trigger fires 30 s after the outage began (10 s), not 30 s
    // after the rebuild (25 s).
    w.clock.block_on(e.run_until(at(46)));
    assert!(
        e.sequencer().status().is_some(),
        "the episode started on the outage's clock"
    );
}

/// Issue 16, item 5: the operator can still abort an episode explicitly.
/// Nothing more is sent for it, it is audited with the reason, no new
/// episode starts while the same outage lasts (also across a restart: the
/// hold is journaled), and a command refused during it is accepted after.
#[test]
fn an_operator_can_abort_an_episode_and_it_holds_for_the_outage() {
    let mut w = world(10);
    let mut events = w.engine.subscribe(1 << 16);
    w.clock.block_on(w.engine.run_until(at(50)));
    assert!(w.engine.sequencer().status().is_some(), "an episode runs");
    w.engine.abort_episode("maintenance window").unwrap();
    assert!(w.engine.sequencer().status().is_none());
    assert_eq!(w.engine.sequencer().held(), Some("maintenance window"));
    let sent_before = w.estate.command_log().len();
    w.clock.block_on(w.engine.run_until(at(400)));
    assert!(
        w.engine.sequencer().status().is_none(),
        "no new episode on the same outage"
    );
    let mut ended = false;
    while let Some(ev) = events.try_next() {
        if let EngineEvent::Audit(a) = &*ev {
            if let upsvisor::Audit::EpisodeEnded { outcome } = &a.what {
                ended |= outcome.contains("aborted by the operator (maintenance window)");
            }
        }
    }
    assert!(ended, "audited with the reason");
    // Commands in flight at the abort may land; nothing new is issued.
    assert!(
        w.estate.command_log().len() <= sent_before + 3,
        "{:?}",
        &w.estate.command_log()[sent_before..]
    );
    let e = w.engine.abort_episode("again").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidState);
    let mut rx = w
        .engine
        .submit_vm(&VmId::from("a"), VmOp::PowerOn)
        .expect("accepted once the episode is aborted");
    w.clock.block_on(w.engine.run_until(at(410)));
    assert!(matches!(rx.try_recv(), Ok(Some(Ok(())))));
}

/// An engine for `h1` on `estate` and `clock` with `seq` (no device yet):
/// the world's, and a new one as the daemon's rebuild makes it (a
/// registration, a reload), which the caller makes adopt the old.
fn engine_on(clock: &SimClock, estate: &Estate, seq: SequencerConfig) -> Engine {
    let h = HostId::from("h1");
    let mut e = Engine::new(
        Arc::new(clock.clone()),
        Inventory::new(
            vec![HostEntry::new("h1", "h1", TransportKind::Sim)],
            vec![upsvisor::Outlet::new("ups", "main", vec![h.clone()])],
        ),
        PollerConfig::default()
            .period(secs(10))
            .on_battery_period(secs(5))
            .host_deadline(secs(5))
            .clone(),
        PolicyConfig::default()
            .on_battery_for(Some(secs(30)))
            .clone(),
        seq,
    )
    .unwrap()
    .with_config(EngineConfig::default().status_interval(secs(5)).clone());
    e.add_host(&h, Arc::new(estate.transport(&h))).unwrap();
    e
}

/// Audit notes of a disarmed controller seen on `events`.
fn disarmed_notes(events: &mut upsvisor::Subscription<EngineEvent>) -> Vec<(u64, String)> {
    let mut notes = Vec::new();
    while let Some(ev) = events.try_next() {
        if let EngineEvent::Audit(a) = &*ev {
            if let upsvisor::Audit::Note { text } = &a.what {
                if text.starts_with("disarmed:") {
                    notes.push((a.episode, text.clone()));
                }
            }
        }
    }
    notes
}

/// Issue 15, item 4: disarmed, a mains failure that would start a shutdown
/// sends nothing to any host, and the audit says once what an armed
/// controller would do; operators' power commands are refused. The same
/// world armed does shut down (the control).
#[test]
fn a_disarmed_controller_sends_nothing_and_says_what_it_would_do() {
    let mut w = world_with(10, SequencerConfig::default().armed(false).clone());
    let mut events = w.engine.subscribe(1 << 16);
    w.clock.block_on(w.engine.run_until(at(600)));
    assert!(w.engine.sequencer().status().is_none(), "no episode");
    assert!(
        w.estate.command_log().is_empty(),
        "nothing sent: {:?}",
        w.estate.command_log()
    );
    let notes = disarmed_notes(&mut events);
    assert_eq!(notes.len(), 1, "said once for the outage: {notes:?}");
    assert_eq!(notes[0].0, 0, "outside any episode");
    assert!(
        notes[0].1.contains("would start a shutdown episode"),
        "{notes:?}"
    );
    let e = w
        .engine
        .submit_vm(&VmId::from("a"), VmOp::PowerOff)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidState, "{e}");
    assert!(e.to_string().contains("disarmed"), "{e}");
    let e = w
        .engine
        .submit_host(&HostId::from("h1"), HostOp::Shutdown)
        .unwrap_err();
    assert!(e.to_string().contains("disarmed"), "{e}");

    let mut armed = world_with(10, SequencerConfig::default());
    armed.clock.block_on(armed.engine.run_until(at(600)));
    assert!(
        armed
            .estate
            .command_log()
            .iter()
            .any(|c| c.op == "shutdown_guest"),
        "armed, the same outage shuts guests down: {:?}",
        armed.estate.command_log()
    );
}

/// Disarmed after an episode began (a restart with `armed = false`, here a
/// rebuilt engine adopting the running one): the episode is held where it
/// is, nothing more is sent, and the audit says so once.
#[test]
fn disarming_holds_an_episode_in_progress() {
    let mut w = world(10);
    w.clock.block_on(w.engine.run_until(at(50)));
    assert!(w.engine.sequencer().status().is_some(), "an episode runs");
    let mut e = engine_on(
        &w.clock,
        &w.estate,
        SequencerConfig::default().armed(false).clone(),
    );
    e.adopt(&w.engine);
    let mut events = e.subscribe(1 << 16);
    let sent = w.estate.command_log().len();
    w.clock.block_on(e.run_until(at(900)));
    let id = e.sequencer().status().expect("still there, held").id;
    assert_eq!(
        w.estate.command_log().len(),
        sent,
        "nothing more sent: {:?}",
        &w.estate.command_log()[sent..]
    );
    let notes = disarmed_notes(&mut events);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].0, id);
    assert!(notes[0].1.contains("held"), "{notes:?}");
}
