//! An outage drill on a simulated estate: 10 hosts, 200 VMs and a UPS, on a
//! simulated clock (an hour of outage runs in well under a second).
//!
//! ```text
//! cargo run --example outage            # the timeline
//! cargo run --example outage -- --all   # every command too
//! cargo run --example outage -- --json table.json   # also write the VM table
//! ```
//!
//! The story: the VM table is built from the hosts; a VM migrates and the
//! next poll follows it; mains fails and a poll starts at once; low-priority
//! VMs are shed; the runtime trigger fires; VMs shut down group by group (a
//! stubborn guest is powered off at its deadline, tool-less guests at once),
//! management last; hosts shut down once empty; the UPS turns off with
//! return; mains comes back, the hosts boot and the VMs come back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use upsvisor::sim::demo::{Demo, DemoSpec};
use upsvisor::{
    Audit, Clock, Command, DeviceId, Engine, EngineConfig, EngineEvent, Event, HostId, Instant,
    PowerState, SimClock, VmTable,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = args.iter().any(|a| a == "--all");
    let json_out = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1).cloned());
    let wall = std::time::Instant::now();

    let clock = SimClock::new();
    // The demo estate `upsvisord run --demo` shows: 10 hosts with 20 VMs
    // each (some stubborn, some without tools, some off), a vCenter
    // appliance, UPS ups1 feeding every host; mains lost at 5 min, back at
    // 45 min; batch shed on battery, databases, management last.
    let demo = Demo::build(Arc::new(clock.clone()), &DemoSpec::default());
    let estate = demo.estate;
    let ups = demo.ups;
    let hosts = estate.host_ids();
    let (inventory, poller, policy, sequencer) =
        (demo.inventory, demo.poller, demo.policy, demo.sequencer);
    let mut engine = Engine::new(
        Arc::new(clock.clone()),
        inventory,
        poller,
        policy,
        sequencer,
    )
    .expect("valid inventory")
    .with_config({
        let mut c = EngineConfig::default();
        c.status_interval(demo.status_interval);
        c
    });
    for h in &hosts {
        engine
            .add_host(h, Arc::new(estate.transport(h)))
            .expect("host in inventory");
    }
    engine.add_device(DeviceId::from("ups1"), Arc::new(ups.clone()));
    let mut events = engine.subscribe(1 << 16);

    println!(
        "upsvisor outage drill: 10 hosts, {} VMs, UPS ups1 (simulated clock)\n",
        estate.truth().len()
    );
    estate.schedule_migration(
        Instant::from_millis(120_000),
        &"42100001-5e1d-4c3b-9a7e-000000000005".into(),
        &"esx02".into(),
    );

    let mut printed_table = false;
    let mut vm_cmds: BTreeMap<String, usize> = BTreeMap::new();
    let end = Instant::from_millis(75 * 60 * 1000);
    let mut t = Instant::ZERO;
    while t < end {
        t = t + Duration::from_secs(5);
        clock.block_on(engine.run_until(t));
        // Lines of this 5 s slice, printed in time order.
        let mut lines: Vec<(Instant, String)> = Vec::new();
        let mut say = |at: Instant, s: String| lines.push((at, s));
        while let Some(ev) = events.try_next() {
            match &*ev {
                EngineEvent::Table(u) => {
                    if !printed_table {
                        printed_table = true;
                        say(u.table.taken_at, table_text(&u.table));
                    }
                    for e in &u.events {
                        match e {
                            Event::VmMigrated { name, from, to, .. } => say(
                                u.table.taken_at,
                                format!(
                                    "poll #{}: {name} migrated {from} -> {to} (followed from the hosts' own lists)",
                                    u.table.cycle
                                ),
                            ),
                            Event::HostUnreachable { host, .. } => say(
                                u.table.taken_at,
                                format!(
                                    "poll #{}: {host} stopped answering; its VMs kept, marked stale",
                                    u.table.cycle
                                ),
                            ),
                            Event::HostRecovered { host, .. } => say(
                                u.table.taken_at,
                                format!("poll #{}: {host} answers again", u.table.cycle),
                            ),
                            _ => {}
                        }
                    }
                }
                EngineEvent::Power {
                    at,
                    device,
                    verdict,
                } => {
                    let s = verdict.last.as_ref();
                    say(
                        *at,
                        format!(
                            "{device}: {} charge {}% runtime {}s{}{}",
                            s.map(|s| s
                                .tokens
                                .iter()
                                .map(|t| t.to_string())
                                .collect::<Vec<_>>()
                                .join(" "))
                                .unwrap_or_else(|| "no answer".into()),
                            s.and_then(|s| s.charge_pct)
                                .map(|c| c.to_string())
                                .unwrap_or_else(|| "?".into()),
                            s.and_then(|s| s.runtime_s)
                                .map(|c| c.to_string())
                                .unwrap_or_else(|| "?".into()),
                            if verdict.on_battery {
                                " [on battery: polling at once, then every 15 s]"
                            } else {
                                ""
                            },
                            verdict
                                .trigger
                                .as_ref()
                                .map(|t| format!(" [TRIGGER {t:?}]"))
                                .unwrap_or_default(),
                        ),
                    );
                }
                EngineEvent::Audit(a) => match &a.what {
                    Audit::Issued {
                        cmd: Command::Vm { name, op, host, .. },
                        ..
                    } => {
                        *vm_cmds.entry(op.to_string()).or_default() += 1;
                        if all {
                            say(a.at, format!("-> {op} {name} on {host}"));
                        }
                    }
                    Audit::Completed {
                        cmd: Command::Vm { name, op, .. },
                        error: Some(e),
                        ..
                    } => say(a.at, format!("   {op} {name}: {e}")),
                    Audit::Completed {
                        cmd: Command::Vm { .. },
                        error: None,
                        ..
                    } => {}
                    Audit::Issued {
                        cmd: Command::Host { host, op },
                        ..
                    } if all
                        || matches!(
                            op,
                            upsvisor::HostOp::Shutdown | upsvisor::HostOp::ShutdownForce
                        ) =>
                    {
                        say(a.at, format!("-> host {host}: {op}"))
                    }
                    Audit::Issued {
                        cmd: Command::Device { device, cmd },
                        ..
                    } => say(a.at, format!("-> {device}: {cmd:?}")),
                    Audit::Completed { .. } | Audit::Issued { .. } => {}
                    Audit::EpisodeStarted {
                        reason,
                        scope,
                        full,
                    } => say(
                        a.at,
                        format!(
                            "EPISODE {} {}: {reason} ({} hosts)",
                            a.episode,
                            if *full {
                                "full shutdown"
                            } else {
                                "load shedding"
                            },
                            scope.len()
                        ),
                    ),
                    Audit::Phase { phase } => say(a.at, format!("phase: {phase}")),
                    Audit::Note { text } => say(a.at, format!("note: {text}")),
                    Audit::ForcedHostShutdown { host, reason } => {
                        say(a.at, format!("FORCED {host}: {reason}"))
                    }
                    Audit::EpisodeEnded { outcome } => {
                        say(a.at, format!("EPISODE {} ended: {outcome}", a.episode))
                    }
                    other => say(a.at, format!("{other:?}")),
                },
                other => say(t, format!("{other:?}")),
            }
        }
        lines.sort_by_key(|(at, _)| *at);
        for (at, l) in lines {
            if l.starts_with('\n') {
                println!("{at}  {}", l.trim_start());
            } else {
                println!("{at}  {l}");
            }
        }
    }

    let truth = estate.truth();
    let on = truth
        .values()
        .filter(|(_, v)| v.power == PowerState::PoweredOn)
        .count();
    let unclean = estate.unclean_power_losses();
    println!("\nVM commands issued: {vm_cmds:?}");
    println!(
        "after the drill: {on} of {} VMs running; VMs that lost power while running: {}; simulated {} in {:?} of wall time",
        truth.len(),
        unclean.len(),
        clock.now(),
        wall.elapsed()
    );
    if let Some(path) = json_out {
        std::fs::write(&path, engine.table().to_json()).expect("write JSON");
        println!("VM table written to {path}");
    }
    if !unclean.is_empty() {
        std::process::exit(1);
    }
}

fn table_text(t: &VmTable) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "VM table after poll #{} (built from the hosts themselves):",
        t.cycle
    );
    let _ = writeln!(
        o,
        "  {:<6} {:<8} {:>4} {:>4}  product",
        "host", "state", "on", "vms"
    );
    for (h, r) in &t.hosts {
        let product = r
            .info
            .as_ref()
            .map(|i| {
                format!(
                    "{} {}",
                    i.product.as_deref().unwrap_or("?"),
                    i.version.as_deref().unwrap_or("")
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "  {:<6} {:<8} {:>4} {:>4}  {}",
            h,
            if r.is_fresh() { "fresh" } else { "stale" },
            r.vms_on().count(),
            r.vms.len(),
            product
        );
    }
    let first = HostId::from("esx01");
    if let Some(r) = t.host(&first) {
        let _ = writeln!(o, "  {first} in detail:");
        let _ = writeln!(
            o,
            "    {:<10} {:<12} {:<13} {:>4} {:>7}  {:<14} guest OS",
            "name", "power", "ip", "cpu", "MiB", "tools"
        );
        for v in r.vms.values() {
            let _ = writeln!(
                o,
                "    {:<10} {:<12} {:<13} {:>4} {:>7}  {:<14} {}",
                v.name,
                format!("{:?}", v.power),
                v.ips.first().map(|i| i.to_string()).unwrap_or_default(),
                v.vcpus.unwrap_or(0),
                v.memory_mib.unwrap_or(0),
                format!("{:?}", v.tools),
                v.guest_os.as_deref().unwrap_or("")
            );
        }
    }
    let _ = writeln!(o,);
    o.trim_end().to_string()
}
