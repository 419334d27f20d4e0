//! `ShutdownGuest` as vSphere documents it: the call "returns immediately
//! and does not wait for the guest operating system to complete the
//! operation" (vSphere Web Services API reference,
//! `VirtualMachine.ShutdownGuest`). The harness models it with
//! `-guest-shutdown-ms`; this checks the model and that the transport
//! reports the guest as running until it has really stopped.
#![cfg(feature = "ureq")]

mod common;

use std::time::{Duration, Instant};

use common::Sim;
use futures::executor::block_on;
use upsvisor_core::{HostTransport, PowerState, VmOp};
use upsvisor_soap::HostSelector;

fn power_of(sim: &Sim, moref: &str) -> String {
    let truth = sim.truth();
    truth
        .hosts
        .iter()
        .flat_map(|h| &h.vms)
        .find(|v| v.moref == moref)
        .map(|v| v.power_state.clone())
        .unwrap_or_else(|| panic!("{moref} is not in the truth"))
}

#[test]
fn shutdown_guest_answers_before_the_guest_stops() {
    let Some(sim) = Sim::start(&[
        "-mode=esx",
        "-vms=2",
        "-randomize=false",
        "-guest-shutdown-ms=1500",
    ]) else {
        return;
    };
    let truth = sim.truth();
    let host = &truth.hosts[0];
    let (slow, forced) = (&host.vms[0], &host.vms[1]);
    assert_eq!(slow.power_state, "poweredOn");
    assert_eq!(forced.power_state, "poweredOn");
    let t = sim.transport(HostSelector::Only);
    let inv = block_on(t.inventory()).unwrap();
    let id_of = |uuid: &str| {
        inv.vms
            .iter()
            .find(|v| v.id.as_str() == uuid)
            .map(|v| v.id.clone())
            .unwrap()
    };
    let (slow_id, forced_id) = (id_of(&slow.instance_uuid), id_of(&forced.instance_uuid));

    let asked = Instant::now();
    block_on(t.vm_power(&slow_id, VmOp::ShutdownGuest)).unwrap();
    block_on(t.vm_power(&forced_id, VmOp::ShutdownGuest)).unwrap();
    assert!(
        asked.elapsed() < Duration::from_millis(1000),
        "ShutdownGuest waited for the guest: {:?}",
        asked.elapsed()
    );
    // Answered, and the guests still run: the transport must say so.
    assert_eq!(power_of(&sim, &slow.moref), "poweredOn");
    let inv = block_on(t.inventory()).unwrap();
    let power = |id| inv.vms.iter().find(|v| &v.id == id).unwrap().power;
    assert_eq!(power(&slow_id), PowerState::PoweredOn);

    // The fallback: one guest is powered off before it stops by itself.
    block_on(t.vm_power(&forced_id, VmOp::PowerOff)).unwrap();
    assert_eq!(power_of(&sim, &forced.moref), "poweredOff");

    // The other stops about 1.5 s after it was asked, by itself.
    let give_up = Instant::now() + Duration::from_secs(20);
    while power_of(&sim, &slow.moref) == "poweredOn" {
        assert!(Instant::now() < give_up, "the guest never stopped");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        asked.elapsed() >= Duration::from_millis(1400),
        "the guest stopped after {:?}, before its 1.5 s",
        asked.elapsed()
    );
    let inv = block_on(t.inventory()).unwrap();
    for v in &inv.vms {
        assert_eq!(v.power, PowerState::PoweredOff, "{}", v.name);
    }
    // A guest powered off during its shutdown stays off.
    assert_eq!(power_of(&sim, &forced.moref), "poweredOff");
}
