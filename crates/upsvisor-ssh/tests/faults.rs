//! Issue 20 drills against real peers: libvirtd stopped in the middle of
//! an inventory (real sshd, real virsh, real libvirtd), server session
//! limits (real sshd `MaxSessions`), and half-open connections (a TCP
//! relay on loopback that swallows traffic). Driven with
//! `futures::executor::block_on`: no tokio runtime in the test itself.

mod harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::executor::block_on;
use harness::{Libvirtd, Sshd};
use upsvisor_core::{ErrorKind, HostId, HostTransport, Poller, PollerConfig, SystemClock};
use upsvisor_ssh::{Dialect, SshTransport};

/// A `virsh` first on the session's PATH that counts `dominfo` calls and,
/// at the `pause_at`-th, waits for the test to say go before running the
/// real `/usr/bin/virsh` (exec: the real tool does the work).
fn pausing_virsh(sshd: &Sshd, pause_at: u32) {
    let real = upsvisor_testkit::which("virsh").expect("virsh");
    let script = format!(
        "#!/bin/sh\n\
         S=\"$SHIM_STATE\"\n\
         case \" $* \" in *' dominfo '*)\n\
           n=$(( $(cat \"$S/virsh.count\" 2>/dev/null || echo 0) + 1 )); echo $n > \"$S/virsh.count\"\n\
           if [ $n -eq {pause_at} ]; then touch \"$S/virsh.paused\"; while [ ! -e \"$S/virsh.go\" ]; do sleep 0.05; done; fi ;;\n\
         esac\n\
         exec {real} \"$@\"\n",
        real = real.display()
    );
    let p = sshd.dir.path().join("shims/virsh");
    std::fs::write(&p, script).unwrap();
    let _ = std::process::Command::new("chmod")
        .args(["755"])
        .arg(&p)
        .status();
}

fn wait_for(path: &std::path::Path, within: Duration) {
    let t0 = Instant::now();
    while !path.exists() {
        assert!(t0.elapsed() < within, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Issue 20, fault 3: libvirtd stops while an inventory is half done. The
/// remaining `virsh dominfo` calls fail with "failed to connect to the
/// hypervisor ... No such file or directory": that is the host being
/// unreachable, not the domains being gone. The host must go stale with
/// all 13 VMs kept, never answer with the 4 read before the stop.
#[test]
fn libvirtd_stopped_mid_inventory_keeps_every_vm() {
    let Some(sshd) = Sshd::start() else { return };
    let Some(mut lv) = Libvirtd::start() else {
        return;
    };
    // The test driver's own domain plus 12: 13 VMs, some running.
    for i in 1..=12u32 {
        lv.define(
            &format!("vm{i:02}"),
            &format!("00000000-0000-4000-8000-0000000000{i:02}"),
            i % 3 == 0,
        );
    }
    let t = Arc::new(
        SshTransport::new(sshd.config(Dialect::Libvirt).with_libvirt_uri(&lv.uri)).unwrap(),
    );
    let mut poller = Poller::new(
        Arc::new(SystemClock::new()),
        PollerConfig::default().host_deadline(Duration::from_secs(60)),
    );
    poller.add_host(HostId::from("kvm1"), t.clone());
    let first = block_on(poller.poll_once());
    assert_eq!(first.table.vm_count(), 13, "{}", first.table.to_json());
    assert!(first.table.hosts.values().all(|h| h.is_fresh()));

    // Second cycle: libvirtd stops after the 4th VM was read.
    let state = sshd.state();
    pausing_virsh(&sshd, 5);
    let poll = std::thread::spawn(move || {
        let u = block_on(poller.poll_once());
        (u, poller)
    });
    wait_for(&state.join("virsh.paused"), Duration::from_secs(60));
    lv.stop();
    std::fs::write(state.join("virsh.go"), "").unwrap();
    let (second, _poller) = poll.join().unwrap();
    assert_eq!(
        second.table.vm_count(),
        13,
        "VMs were lost: {}",
        second.table.to_json()
    );
    let host = second.table.hosts.values().next().unwrap();
    assert!(!host.is_fresh(), "{}", second.table.to_json());

    // The transport itself: an error that says the hypervisor is
    // unreachable, not "not found", and not a short success.
    let e = block_on(t.inventory()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
}
