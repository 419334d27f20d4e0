//! Randomised outage episodes on the simulated estate, with the simulated
//! clock: topology, guests (cooperative, stubborn, tool-less), migrations
//! during the episode, failing and slow hosts, power returning (or
//! flapping) at a random moment, and a controller restart at a random
//! moment. Invariants are checked after every 5 s slice and at the end.
//!
//! `UPSVISOR_EPISODES=N` sets the count (default 10,000); the ignored
//! `stress_episodes` runs 100,000. A failing seed prints its scenario;
//! `UPSVISOR_SEED=S` replays one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use upsvisor::sim::{
    Estate, Guest, HostBehavior, LossCause, SimHostConfig, SimUps, UpsConfig, UpsScript, UpsStep,
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
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn at(s: u64) -> Instant {
    Instant::from_millis(s * 1000)
}

fn script_end(back: Option<u64>, lost: u64, runtime: Duration) -> u64 {
    match back {
        // A flap may add up to ~1000 s after `back`.
        Some(b) => b + 1100,
        None => lost + runtime.as_secs(),
    }
}

/// Runs one seed; returns stats or a description of the broken invariant.
fn episode(seed: u64) -> Result<Stats, String> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut stats = Stats::default();
    let clock = SimClock::new();
    let estate = Estate::new(Arc::new(clock.clone()));
    let n_hosts = rng.range(1, 4) as usize;
    let hosts: Vec<HostId> = (0..n_hosts).map(|i| HostId::new(format!("h{i}"))).collect();
    for h in &hosts {
        let cfg = SimHostConfig::default()
            .latency(Duration::from_millis(rng.range(1, 300)))
            .bulk_inventory(rng.chance(0.7));
        estate.add_host(h.clone(), cfg);
    }
    let mut vm_ids = Vec::new();
    for (hi, h) in hosts.iter().enumerate() {
        for j in 0..rng.range(0, 5) {
            let mgmt = rng.chance(0.1);
            let name = if mgmt {
                format!("mgmt-{hi}-{j}")
            } else {
                format!("vm-{hi}-{j}")
            };
            let id = VmId::new(format!("{seed}-{hi}-{j}"));
            let on = rng.chance(0.8);
            let guest = match rng.below(10) {
                0 => Guest::Stubborn,
                1 => Guest::NoTools,
                _ => Guest::Cooperative(secs(rng.range(2, 150))),
            };
            let mut vm = VmInfo::new(
                id.clone(),
                name,
                if on {
                    PowerState::PoweredOn
                } else {
                    PowerState::PoweredOff
                },
            );
            if rng.chance(0.2) {
                vm.tags.push("low".into());
            }
            estate.add_vm(h, vm, guest);
            vm_ids.push(id);
        }
    }
    let per_host_outlets = rng.chance(0.4);
    let outlets: BTreeMap<OutletId, Vec<HostId>> = if per_host_outlets {
        hosts
            .iter()
            .map(|h| (OutletId::new(format!("o-{h}")), vec![h.clone()]))
            .collect()
    } else {
        BTreeMap::from([(OutletId::from("main"), hosts.clone())])
    };
    let runtime = secs(rng.range(300, 5400));
    let lost = rng.range(30, 600);
    let mut script = UpsScript::new().at(secs(lost), UpsStep::MainsLost);
    let back = match rng.below(4) {
        0 => None,
        _ => Some(lost + rng.range(3, 3600)),
    };
    if let Some(b) = back {
        script = script.at(secs(b), UpsStep::MainsBack);
        if rng.chance(0.25) {
            // Flapping: mains fails again shortly after.
            let again = b + rng.range(1, 120);
            script = script
                .at(secs(again), UpsStep::MainsLost)
                .at(secs(again + rng.range(5, 900)), UpsStep::MainsBack);
        }
    }
    if rng.chance(0.1) {
        script = script.at(secs(lost + rng.range(1, 300)), UpsStep::LowBattery(true));
    }
    let ups_cfg = UpsConfig::feeding("ups", hosts.clone(), runtime).outlets(outlets.clone());
    let ups = SimUps::install(&estate, ups_cfg, script);

    let mut troubled = false;
    for vm in &vm_ids {
        if rng.chance(0.15) && n_hosts > 1 {
            let to = hosts[rng.below(n_hosts as u64) as usize].clone();
            estate.schedule_migration(at(lost + rng.range(0, 600)), vm, &to);
            stats.migrations += 1;
        }
    }
    let failing = if rng.chance(0.1) {
        let h = hosts[rng.below(n_hosts as u64) as usize].clone();
        let b = if rng.chance(0.5) {
            HostBehavior::Fail
        } else {
            HostBehavior::Hang
        };
        troubled = true;
        Some((h, b, lost + rng.range(0, 300), rng.range(10, 600)))
    } else {
        None
    };

    let inventory = Inventory::new(
        hosts
            .iter()
            .map(|h| HostEntry::new(h.clone(), h.to_string(), TransportKind::Sim))
            .collect(),
        outlets
            .iter()
            .map(|(o, hs)| upsvisor::Outlet::new("ups", o.clone(), hs.clone()))
            .collect(),
    );
    let final_action = match rng.below(4) {
        0 => FinalAction::ShutdownStayOff {
            delay: secs(rng.range(0, 60)),
        },
        1 => FinalAction::OutletsOff {
            delay: secs(rng.range(0, 60)),
        },
        2 => FinalAction::None,
        _ => FinalAction::ShutdownReturn {
            delay: secs(rng.range(0, 120)),
        },
    };
    let seq_cfg = SequencerConfig::default()
        .group(
            VmGroup::new(
                "low",
                -5,
                vec![Matcher::Tag("low".into())],
                secs(rng.range(10, 120)),
            )
            .shed_on_battery(rng.chance(0.5)),
        )
        .group(
            VmGroup::new(
                "mgmt",
                50,
                vec![Matcher::Name("mgmt-*".into())],
                secs(rng.range(30, 300)),
            )
            .management(true),
        )
        .default_action(upsvisor::VmAction::Shutdown {
            timeout: secs(rng.range(20, 300)),
        })
        .use_maintenance(rng.chance(0.4))
        .commit_point(match rng.below(3) {
            0 => CommitPoint::FirstVmCommand,
            1 => CommitPoint::FinalAction,
            _ => CommitPoint::FirstHostShutdown,
        })
        .force_host_after(Some(secs(rng.range(600, 2400))))
        .host_down_wait(secs(60))
        .final_action(final_action)
        .in_flight(rng.range(1, 16) as usize, rng.range(1, 4) as usize)
        .call_deadline(secs(30));
    let policy = PolicyConfig::default()
        .on_battery_for(if rng.chance(0.5) {
            Some(secs(rng.range(10, 900)))
        } else {
            None
        })
        .runtime_below_s(Some(rng.range(120, 900) as u32))
        .stable_for(secs(rng.range(20, 120)))
        .restore_min_charge_pct(0.0);
    let poller = PollerConfig::default()
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
        .with_config(EngineConfig::default().status_interval(secs(5)))
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
    let restart_at = rng.chance(0.3).then(|| lost + rng.range(0, 1800));
    // Long enough for the battery to run flat (no return), or for restore
    // to finish after the last return (stable_for + boot + restore waits).
    let last_event = script_end(back, lost, runtime);
    let end = last_event + 45 * 60;

    let mut audit: Vec<AuditEntry> = Vec::new();
    // Nothing changes VM power before the first episode: this is the
    // state every VM must end in (or off).
    let prior: BTreeMap<VmId, PowerState> = estate
        .truth()
        .into_iter()
        .map(|(id, (_, v))| (id, v.power))
        .collect();
    let mut budget_ok: BTreeMap<u64, bool> = BTreeMap::new();
    let mut checker = Checker::default();
    let mut t = 0;
    let fail = |msg: String| Err(format!("seed {seed}: {msg}"));
    while t < end {
        t += 5;
        if let Some((h, b, from, dur)) = &failing {
            if t == *from - *from % 5 {
                estate.set_behavior(h, *b);
            }
            if t == (*from + *dur) - (*from + *dur) % 5 {
                estate.set_behavior(h, HostBehavior::Normal);
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
                let became_full = matches!(&a.what, Audit::EpisodeStarted { full: true, .. })
                    || matches!(&a.what, Audit::Note { text } if text.starts_with("load shedding becomes a full"));
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
            return Err(format!("seed {seed}: {m}"));
        }
    }
    drop(events);

    trace(&estate, &audit);
    if std::env::var_os("UPSVISOR_TRACE").is_some() {
        eprintln!(
            "lost={lost} back={back:?} restart={restart_at:?} failing={failing:?} final={final_action:?}"
        );
    }
    let episodes: BTreeSet<u64> = audit.iter().map(|a| a.episode).collect();
    stats.episodes += episodes.len() as u64;
    stats.forced_hosts += audit
        .iter()
        .filter(|a| matches!(a.what, Audit::ForcedHostShutdown { .. }))
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
        if !troubled && restart_at.is_none() {
            stats.budget_checked += 1;
            if let Some(u) = unclean.iter().find(|u| u.cause == LossCause::PowerLoss) {
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
        {
            return fail(format!(
                "{id} on {h} still on at the end of an outage that never ended"
            ));
        }
    }
    if episodes.iter().all(|e| {
        !audit
            .iter()
            .any(|a| a.episode == *e && matches!(a.what, Audit::EpisodeStarted { full: true, .. }))
    }) {
        stats.aborted_or_shed_only += episodes.len() as u64;
    }
    Ok(stats)
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
    forced: BTreeSet<HostId>,
    starts: BTreeSet<(u64, VmId)>,
    once: BTreeSet<(u64, String)>,
}

impl Checker {
    fn check(&mut self, estate: &Estate, audit: &[AuditEntry]) -> Result<(), String> {
        // Per episode: a VM gets stop commands, then start commands, never a
        // stop after a start; and no successful non-idempotent command twice.
        for a in audit.get(self.audit_seen..).unwrap_or_default() {
            match &a.what {
                Audit::ForcedHostShutdown { host, .. } => {
                    self.forced.insert(host.clone());
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
        Ok(())
    }
}

fn run_many(n: u64) {
    let only: Option<u64> = std::env::var("UPSVISOR_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let seeds: Vec<u64> = match only {
        Some(s) => vec![s],
        None => (0..n).collect(),
    };
    let mut total = Stats::default();
    let t0 = std::time::Instant::now();
    let mut failures = Vec::new();
    for s in seeds.iter().copied() {
        match episode(s) {
            Ok(st) => {
                total.episodes += st.episodes;
                total.full += st.full;
                total.aborted_or_shed_only += st.aborted_or_shed_only;
                total.restarts += st.restarts;
                total.power_returned += st.power_returned;
                total.restored_vms += st.restored_vms;
                total.forced_hosts += st.forced_hosts;
                total.budget_checked += st.budget_checked;
                total.battery_ran_out += st.battery_ran_out;
                total.migrations += st.migrations;
            }
            Err(e) => failures.push(e),
        }
    }
    let summary = format!(
        "simulated scenarios: {} ({:?} wall); episodes: {}, of which full shutdowns: {}, without a full shutdown: {}; controller restarts: {}; migrations scripted: {}; mains returned for good: {}; VMs checked restored: {}; forced host shutdowns (logged): {}; budget-fits checked: {}; scenarios where the battery ran out: {}; failures: {}",
        seeds.len(),
        t0.elapsed(),
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
        failures.len()
    );
    println!("{summary}");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let _ = std::fs::write(dir.join("episodes-summary.txt"), format!("{summary}\n"));
    assert!(
        failures.is_empty(),
        "{} of {} scenarios broke an invariant; first ones:\n{}",
        failures.len(),
        seeds.len(),
        failures
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        only.is_some()
            || total.full > 0
                && total.restarts > 0
                && total.power_returned > 0
                && total.budget_checked > 0,
        "the generator lost its variety: {summary}"
    );
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
