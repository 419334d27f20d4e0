//! How the sequencer's and engine's own work grows with the estate: the
//! demo outage (mains lost, VMs shut down group by group, hosts, UPS,
//! mains back, restore) on a simulated clock, at 200 and at 2,000 VMs, in
//! one run. On a simulated clock the run's wall time is only CPU: the
//! engine, the sequencer and the simulator. Linear work gives a ratio near
//! 10; the ratio is the figure (issue 17: the shutdown fan-out).
//!
//! Run: `cargo bench --bench episode_scale` (`-- --quick`: 100 and 1,000
//! VMs). Prints `episode_scale vms=N wall_ms=W commands=C` per size, then
//! the ratio.

#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant as WallInstant};

use upsvisor::sim::demo::{Demo, DemoSpec};
use upsvisor::{Audit, DeviceId, Engine, EngineConfig, EngineEvent, Instant, SimClock};

/// Runs the whole demo outage for `hosts` × 20 VMs; wall ms and commands.
fn run(hosts: usize) -> (u128, usize) {
    let clock = SimClock::new();
    let demo = Demo::build(Arc::new(clock.clone()), &DemoSpec::default().hosts(hosts));
    let estate = demo.estate;
    let mut engine = Engine::new(
        Arc::new(clock.clone()),
        demo.inventory,
        demo.poller,
        demo.policy,
        demo.sequencer,
    )
    .expect("valid inventory")
    .with_config(
        EngineConfig::default()
            .status_interval(demo.status_interval)
            .clone(),
    );
    for h in estate.host_ids() {
        engine
            .add_host(&h, Arc::new(estate.transport(&h)))
            .expect("host in inventory");
    }
    engine.add_device(DeviceId::from("ups1"), Arc::new(demo.ups.clone()));
    let mut events = engine.subscribe(1 << 20);
    let t0 = WallInstant::now();
    clock.block_on(engine.run_until(Instant::from_millis(75 * 60 * 1000)));
    let wall = t0.elapsed().as_millis();
    let mut commands = 0;
    while let Some(ev) = events.try_next() {
        if let EngineEvent::Audit(a) = &*ev {
            if matches!(a.what, Audit::Issued { .. }) {
                commands += 1;
            }
        }
    }
    (wall, commands)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (small, large) = if quick { (5, 50) } else { (10, 100) };
    let mut rows = Vec::new();
    for hosts in [small, large] {
        let (wall, commands) = run(hosts);
        println!(
            "episode_scale vms={} wall_ms={wall} commands={commands}",
            hosts * 20
        );
        rows.push((hosts * 20, wall.max(1), commands));
    }
    let ratio = rows[1].1 as f64 / rows[0].1 as f64;
    println!(
        "{} VMs took {ratio:.1}x the wall time of {} VMs ({}x the VMs; linear work gives about {}x)",
        rows[1].0,
        rows[0].0,
        rows[1].0 / rows[0].0,
        rows[1].0 / rows[0].0
    );
    let _ = Duration::ZERO;
}
