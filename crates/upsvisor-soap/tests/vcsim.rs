//! The transport against VMware's vSphere simulator (govmomi 0.24.2) with
//! upsvisor's harness in front (`harness/vcsim`).
#![cfg(feature = "ureq")]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Sim, Truth, assert_matches};
use futures::executor::block_on;
use upsvisor_core::{ErrorKind, HostOp, HostTransport, PowerState, ToolsState, VmId, VmOp};
use upsvisor_soap::{HostSelector, SoapTransport};

fn by_name(sim: &Sim, name: &str) -> SoapTransport {
    sim.transport(HostSelector::Name(name.to_owned()))
}

fn check_all(sim: &Sim, transports: &BTreeMap<String, SoapTransport>) -> Truth {
    let truth = sim.truth();
    for th in &truth.hosts {
        let inv = block_on(transports[&th.name].inventory())
            .unwrap_or_else(|e| panic!("{}: {e}", th.name));
        assert_matches(&inv, th);
    }
    truth
}

#[test]
fn inventory_equals_truth_over_random_topologies_and_relocations() {
    // Small deterministic generator: the topologies vary per seed.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for seed in 1..=3u64 {
        let (dc, clusters, hosts, standalone, vms) =
            (1 + next(2), 1 + next(2), 1 + next(4), next(2), 1 + next(8));
        let args: Vec<String> = [
            "-mode=vpx".to_owned(),
            format!("-dc={dc}"),
            format!("-clusters={clusters}"),
            format!("-cluster-hosts={hosts}"),
            format!("-standalone={standalone}"),
            format!("-vms={vms}"),
            format!("-seed={seed}"),
        ]
        .into();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let Some(sim) = Sim::start(&args) else { return };
        let truth = sim.truth();
        let n_vms: usize = truth.hosts.iter().map(|h| h.vms.len()).sum();
        eprintln!(
            "seed {seed}: {} hosts, {n_vms} VMs ({args:?})",
            truth.hosts.len()
        );
        assert!(n_vms > 0);
        let transports: BTreeMap<String, SoapTransport> = truth
            .hosts
            .iter()
            .map(|h| (h.name.clone(), by_name(&sim, &h.name)))
            .collect();
        check_all(&sim, &transports);
        // Random relocations, then every host again.
        for _ in 0..2 {
            let moves: Vec<serde_json::Value> =
                serde_json::from_str(&sim.ctl("/ctl/shuffle?n=5")).unwrap();
            eprintln!("  {} relocations", moves.len());
            check_all(&sim, &transports);
        }
    }
}

#[test]
fn esx_direct_inventory_equals_truth() {
    let Some(sim) = Sim::start(&["-mode=esx", "-vms=6", "-seed=7"]) else {
        return;
    };
    let t = sim.transport(HostSelector::Only);
    let truth = sim.truth();
    assert_eq!(truth.hosts.len(), 1);
    let inv = block_on(t.inventory()).unwrap();
    assert_matches(&inv, &truth.hosts[0]);
    assert_eq!(inv.vms.len(), 6);
    assert!(t.capabilities().bulk_inventory);
    // The default flow (ids, then each VM) agrees with the bulk answer.
    let ids = block_on(t.list_vm_ids()).unwrap();
    assert_eq!(ids.len(), 6);
    let one = block_on(t.vm_info(&ids[0])).unwrap();
    assert!(inv.vms.iter().any(|v| **v == one));
    assert_eq!(
        block_on(t.vm_info(&VmId::new("no-such-vm")))
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    block_on(t.close()).unwrap();
}

#[test]
fn relocation_is_seen_on_the_next_inventory() {
    let Some(sim) = Sim::start(&[
        "-mode=vpx",
        "-clusters=1",
        "-cluster-hosts=2",
        "-standalone=1",
        "-vms=3",
        "-randomize=false",
    ]) else {
        return;
    };
    let truth = sim.truth();
    let from = truth
        .hosts
        .iter()
        .find(|h| !h.vms.is_empty())
        .unwrap()
        .clone();
    let to = truth
        .hosts
        .iter()
        .find(|h| h.name != from.name && h.datacenter == from.datacenter)
        .unwrap()
        .clone();
    let vm = from.vms[0].clone();
    let (ta, tb) = (by_name(&sim, &from.name), by_name(&sim, &to.name));
    let id = VmId::new(vm.instance_uuid.clone());
    assert!(
        block_on(ta.inventory())
            .unwrap()
            .vms
            .iter()
            .any(|v| v.id == id)
    );
    assert!(
        !block_on(tb.inventory())
            .unwrap()
            .vms
            .iter()
            .any(|v| v.id == id)
    );

    sim.ctl(&format!("/ctl/relocate?vm={}&host={}", vm.moref, to.moref));
    let t0 = Instant::now();
    let a = block_on(ta.inventory()).unwrap();
    let b = block_on(tb.inventory()).unwrap();
    eprintln!("one cycle after the move: {:?}", t0.elapsed());
    assert!(!a.vms.iter().any(|v| v.id == id), "still on the old host");
    let moved = b.vms.iter().find(|v| v.id == id).expect("on the new host");
    assert_eq!(moved.name, vm.name);
    let truth = sim.truth();
    assert_matches(&a, truth.host(&from.name));
    assert_matches(&b, truth.host(&to.name));
}

/// A sequencer-like shutdown: guest shutdown with a deadline, power off as
/// the fallback, then the host once none of its VMs is on.
#[test]
fn shutdown_round_trip_with_stubborn_and_toolless_guests() {
    let Some(sim) = Sim::start(&[
        "-mode=esx",
        "-vms=4",
        "-randomize=false",
        "-dark-delay-ms=200",
    ]) else {
        return;
    };
    let truth = sim.truth();
    let host = &truth.hosts[0];
    let (stubborn, toolless) = (&host.vms[0], &host.vms[1]);
    sim.ctl(&format!("/ctl/vm-mode?vm={}&mode=stubborn", stubborn.moref));
    sim.ctl(&format!("/ctl/vm-mode?vm={}&mode=toolless", toolless.moref));
    let t = sim.transport(HostSelector::Only);
    let inv = block_on(t.inventory()).unwrap();
    assert_eq!(
        inv.vms
            .iter()
            .filter(|v| v.power == PowerState::PoweredOn)
            .count(),
        4
    );
    let tl = inv
        .vms
        .iter()
        .find(|v| v.id.as_str() == toolless.instance_uuid)
        .unwrap();
    assert_eq!(tl.tools, ToolsState::NotRunning);

    let deadline = Duration::from_millis(800);
    let mut forced = Vec::new();
    for v in &inv.vms {
        match block_on(t.vm_power(&v.id, VmOp::ShutdownGuest)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::ToolsUnavailable => {
                // No tools: power off at once.
                block_on(t.vm_power(&v.id, VmOp::PowerOff)).unwrap();
                forced.push((v.name.clone(), "tools"));
            }
            Err(e) => panic!("{}: {e}", v.name),
        }
    }
    // Wait for the guests, up to the deadline; then power off the rest.
    let t0 = Instant::now();
    loop {
        let on: Vec<_> = block_on(t.inventory())
            .unwrap()
            .vms
            .into_iter()
            .filter(|v| v.power.is_on())
            .collect();
        if on.is_empty() {
            break;
        }
        if t0.elapsed() >= deadline {
            for v in on {
                block_on(t.vm_power(&v.id, VmOp::PowerOff)).unwrap();
                forced.push((v.name.clone(), "deadline"));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    forced.sort();
    let mut want = vec![
        (stubborn.name.clone(), "deadline"),
        (toolless.name.clone(), "tools"),
    ];
    want.sort();
    assert_eq!(forced, want);
    let inv = block_on(t.inventory()).unwrap();
    let on: Vec<_> = inv
        .vms
        .iter()
        .filter(|v| v.power != PowerState::PoweredOff)
        .map(|v| (&v.name, v.power))
        .collect();
    assert!(on.is_empty(), "{on:?} {}", sim.ctl("/truth"));
    // Idempotent: stopping a stopped VM is fine.
    let id = &inv.vms[0].id;
    block_on(t.vm_power(id, VmOp::PowerOff)).unwrap();
    block_on(t.vm_power(id, VmOp::ShutdownGuest)).unwrap();
    block_on(t.vm_power(id, VmOp::Suspend)).unwrap();

    // Only now the host; afterwards it answers nothing.
    block_on(t.host_power(HostOp::Shutdown)).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let err = block_on(t.inventory()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert!(sim.truth().hosts[0].dark);

    // Power restored: the host answers again, VMs still off; power them on.
    sim.ctl(&format!("/ctl/host-power?host={}&on=1", host.moref));
    let inv = block_on(t.inventory()).unwrap();
    assert!(inv.vms.iter().all(|v| v.power == PowerState::PoweredOff));
    block_on(t.vm_power(id, VmOp::PowerOn)).unwrap();
    block_on(t.vm_power(id, VmOp::PowerOn)).unwrap();
    assert_matches(&block_on(t.inventory()).unwrap(), &sim.truth().hosts[0]);
}

#[test]
fn vm_and_host_operations_through_vcenter() {
    let Some(sim) = Sim::start(&[
        "-mode=vpx",
        "-clusters=1",
        "-cluster-hosts=2",
        "-standalone=0",
        "-vms=4",
        "-randomize=false",
    ]) else {
        return;
    };
    let truth = sim.truth();
    let h = truth
        .hosts
        .iter()
        .find(|h| h.vms.len() >= 2)
        .unwrap()
        .clone();
    let t = by_name(&sim, &h.name);
    let inv = block_on(t.inventory()).unwrap();
    let (a, b) = (inv.vms[0].id.clone(), inv.vms[1].id.clone());
    block_on(t.vm_power(&a, VmOp::Suspend)).unwrap();
    block_on(t.vm_power(&b, VmOp::Reset)).unwrap();
    block_on(t.vm_power(&b, VmOp::RebootGuest)).unwrap();
    let inv = block_on(t.inventory()).unwrap();
    let get = |id: &VmId| inv.vms.iter().find(|v| &v.id == id).unwrap().power;
    assert_eq!(get(&a), PowerState::Suspended);
    assert_eq!(get(&b), PowerState::PoweredOn);
    block_on(t.host_power(HostOp::EnterMaintenance)).unwrap();
    assert!(sim.truth().host(&h.name).in_maintenance);
    block_on(t.host_power(HostOp::ExitMaintenance)).unwrap();
    assert!(!sim.truth().host(&h.name).in_maintenance);
    // Reset of an off VM is refused, not silently accepted.
    block_on(t.vm_power(&b, VmOp::PowerOff)).unwrap();
    assert_eq!(
        block_on(t.vm_power(&b, VmOp::Reset)).unwrap_err().kind(),
        ErrorKind::InvalidState
    );

    // A host shut down through vCenter: vCenter answers, the host is notResponding.
    block_on(t.host_power(HostOp::Shutdown)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let err = block_on(t.inventory()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert!(err.to_string().contains("notResponding"), "{err}");
    let th = sim.truth();
    assert!(
        th.host(&h.name)
            .vms
            .iter()
            .all(|v| v.power_state != "poweredOn")
    );
    // A reboot comes back by itself.
    sim.ctl(&format!("/ctl/host-power?host={}&on=1", h.moref));
    block_on(t.host_power(HostOp::Reboot)).unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    block_on(t.inventory()).unwrap();
}

#[test]
fn expired_session_logs_in_again_transparently() {
    let Some(sim) = Sim::start(&["-mode=esx", "-vms=2"]) else {
        return;
    };
    let t = sim.transport(HostSelector::Only);
    let before = block_on(t.inventory()).unwrap();
    let n: serde_json::Value = serde_json::from_str(&sim.ctl("/ctl/expire-sessions")).unwrap();
    assert_eq!(n["expired"], 1);
    let after = block_on(t.inventory()).unwrap();
    assert_eq!(before, after);
    // Keepalive on a live session, then on an expired one (renewed).
    block_on(t.keepalive()).unwrap();
    sim.ctl("/ctl/expire-sessions");
    block_on(t.keepalive()).unwrap();
    // The second inventory ran on a new session, which is now the only live one.
    let n: serde_json::Value = serde_json::from_str(&sim.ctl("/ctl/expire-sessions")).unwrap();
    assert_eq!(n["expired"], 1);
    // Power calls re-login too.
    let id = after.vms[0].id.clone();
    block_on(t.vm_power(&id, VmOp::PowerOff)).unwrap();
    block_on(t.close()).unwrap();
}

#[test]
fn wrong_password_is_an_auth_error() {
    let Some(sim) = Sim::start(&["-mode=esx", "-vms=1"]) else {
        return;
    };
    let cfg = sim
        .config(HostSelector::Only)
        .credentials(upsvisor_core::Credentials::new("user", "wrong-secret-123"));
    let t = SoapTransport::new(cfg).unwrap();
    let err = block_on(t.inventory()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(err.to_string().contains("login refused"), "{err}");
    assert!(!err.to_string().contains("wrong-secret-123"), "{err}");
}

#[test]
fn vcenter_needs_a_host_name_and_unknown_names_are_not_found() {
    let Some(sim) = Sim::start(&["-mode=vpx", "-vms=1"]) else {
        return;
    };
    let err = block_on(sim.transport(HostSelector::Only).inventory()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("HostSelector::Name"), "{err}");
    let err = block_on(by_name(&sim, "no-such-host").inventory()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let h = &sim.truth().hosts[0];
    let inv = block_on(
        sim.transport(HostSelector::MoRef(h.moref.clone()))
            .inventory(),
    )
    .unwrap();
    assert_matches(&inv, h);
}

#[test]
fn tls_pinning() {
    let Some(sim) = Sim::start(&["-mode=esx", "-vms=1"]) else {
        return;
    };
    assert!(sim.url.starts_with("https://"));
    // The right pin connects.
    block_on(sim.transport(HostSelector::Only).inventory()).unwrap();
    // A different pin is refused, saying which thumbprint was seen.
    let cfg = sim.config(HostSelector::Only).clear_pinned_thumbprints();
    let cfg = cfg
        .pin_thumbprint(&"AB:".repeat(31).to_string().add_last("AB"))
        .unwrap();
    let err = block_on(SoapTransport::new(cfg).unwrap().inventory()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("does not match the pinned"), "{msg}");
    assert!(msg.contains(&sim.thumbprint), "{msg}");
    // No pin: the self-signed certificate is not trusted, and the error says how to pin it.
    let cfg = sim.config(HostSelector::Only).clear_pinned_thumbprints();
    let err = block_on(SoapTransport::new(cfg.clone()).unwrap().inventory()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(err.to_string().contains("not trusted"), "{err}");
    assert!(err.to_string().contains(&sim.thumbprint), "{err}");
    // Only the explicitly dangerous option skips verification.
    let cfg = cfg.dangerous_accept_invalid_certs(true);
    block_on(SoapTransport::new(cfg).unwrap().inventory()).unwrap();
}

trait AddLast {
    fn add_last(self, s: &str) -> String;
}
impl AddLast for String {
    fn add_last(mut self, s: &str) -> String {
        self.push_str(s);
        self
    }
}

#[test]
fn plain_http_needs_the_dangerous_option_and_slow_methods_time_out() {
    let Some(sim) = Sim::start(&["-mode=esx", "-vms=1", "-tls=false"]) else {
        return;
    };
    assert!(sim.url.starts_with("http://"));
    let cfg = sim
        .config(HostSelector::Only)
        .dangerous_allow_plain_http(false);
    assert_eq!(
        SoapTransport::new(cfg).unwrap_err().kind(),
        ErrorKind::Config
    );
    let t = SoapTransport::new(
        sim.config(HostSelector::Only)
            .timeout(Duration::from_millis(500)),
    )
    .unwrap();
    block_on(t.inventory()).unwrap();
    sim.ctl("/ctl/latency?method=RetrievePropertiesEx&ms=1500");
    let t0 = Instant::now();
    let err = block_on(t.inventory()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        t0.elapsed() < Duration::from_millis(1400),
        "{:?}",
        t0.elapsed()
    );
    sim.ctl("/ctl/latency?method=RetrievePropertiesEx&ms=0");
    block_on(t.inventory()).unwrap();
}

/// Transports sharing one session, polled at once as the poller does, cost
/// one RetrievePropertiesEx for the whole datacenter, and still match the
/// truth host by host.
#[test]
fn shared_transports_join_one_fetch_per_cycle() {
    let Some(sim) = Sim::start(&[
        "-mode=vpx",
        "-clusters=2",
        "-cluster-hosts=4",
        "-standalone=1",
        "-vms=10",
        "-seed=3",
    ]) else {
        return;
    };
    let truth = sim.truth();
    let first = by_name(&sim, &truth.hosts[0].name);
    let all: Vec<SoapTransport> = truth
        .hosts
        .iter()
        .map(|h| first.share(HostSelector::Name(h.name.clone())))
        .collect();
    let cycle = || {
        block_on(futures::future::join_all(all.iter().map(|t| t.inventory())))
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    };
    cycle(); // resolves hosts and creates the view
    let stats = |m: &str| -> u64 {
        let v: serde_json::Value = serde_json::from_str(&sim.ctl("/ctl/stats")).unwrap();
        v[m].as_u64().unwrap_or(0)
    };
    let (rp, logins) = (stats("RetrievePropertiesEx"), stats("Login"));
    let invs = cycle();
    assert_eq!(
        stats("RetrievePropertiesEx") - rp,
        1,
        "one fetch for {} hosts",
        all.len()
    );
    assert_eq!(stats("Login"), logins);
    assert_eq!(logins, 1, "one session for all hosts");
    let mut seen = std::collections::BTreeSet::new();
    for (inv, th) in invs.iter().zip(&truth.hosts) {
        assert_matches(inv, th);
        for v in &inv.vms {
            assert!(seen.insert(v.id.clone()), "{} under two hosts", v.id);
        }
    }
    // After relocations, still right.
    sim.ctl("/ctl/shuffle?n=10");
    let truth = sim.truth();
    for (inv, th) in cycle().iter().zip(&truth.hosts) {
        assert_matches(inv, th);
    }
}

/// The change feed reports a relocation within a second, without waiting
/// for the next cycle; the inventory right after shows it.
#[test]
fn change_feed_reports_a_relocation_within_a_second() {
    let Some(sim) = Sim::start(&[
        "-mode=vpx",
        "-clusters=1",
        "-cluster-hosts=2",
        "-standalone=0",
        "-vms=4",
        "-randomize=false",
    ]) else {
        return;
    };
    let truth = sim.truth();
    let from = truth
        .hosts
        .iter()
        .find(|h| !h.vms.is_empty())
        .unwrap()
        .clone();
    let to = truth
        .hosts
        .iter()
        .find(|h| h.name != from.name)
        .unwrap()
        .clone();
    let vm = from.vms[0].clone();
    let t = by_name(&sim, &to.name);
    block_on(t.inventory()).unwrap();
    assert!(
        !block_on(t.wait_for_change(Duration::from_secs(5))).unwrap(),
        "set-up call reports nothing"
    );
    // Quiet: the wait ends without a change.
    let t0 = Instant::now();
    assert!(!block_on(t.wait_for_change(Duration::from_secs(1))).unwrap());
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );

    let ctl = sim.ctl.clone();
    let (vm_ref, to_ref) = (vm.moref.clone(), to.moref.clone());
    let mover = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let addr = ctl.trim_start_matches("http://").to_owned();
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        use std::io::{Read, Write};
        write!(
            s,
            "GET /ctl/relocate?vm={vm_ref}&host={to_ref} HTTP/1.0\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(
            out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
            "{out}"
        );
        Instant::now()
    });
    assert!(block_on(t.wait_for_change(Duration::from_secs(10))).unwrap());
    let seen = Instant::now();
    let moved = mover.join().unwrap();
    let lag = seen.saturating_duration_since(moved);
    eprintln!("change feed lag after the relocation: {lag:?}");
    assert!(lag < Duration::from_secs(1), "{lag:?}");
    let inv = block_on(t.inventory()).unwrap();
    assert!(inv.vms.iter().any(|v| v.id.as_str() == vm.instance_uuid));
    // A session that expires under the feed is renewed like any other.
    sim.ctl("/ctl/expire-sessions");
    assert!(!block_on(t.wait_for_change(Duration::from_secs(1))).unwrap());
}

/// The largest topology the issue names (20 hosts × 50 VMs), every field,
/// before and after 50 random relocations.
#[test]
fn inventory_equals_truth_at_20_hosts_by_50_vms() {
    let Some(sim) = Sim::start(&[
        "-mode=vpx",
        "-dc=1",
        "-clusters=4",
        "-cluster-hosts=5",
        "-standalone=0",
        "-vms=250",
        "-seed=20",
    ]) else {
        return;
    };
    let truth = sim.truth();
    assert_eq!(truth.hosts.len(), 20);
    assert_eq!(truth.hosts.iter().map(|h| h.vms.len()).sum::<usize>(), 1000);
    let first = by_name(&sim, &truth.hosts[0].name);
    let all: Vec<SoapTransport> = truth
        .hosts
        .iter()
        .map(|h| first.share(HostSelector::Name(h.name.clone())))
        .collect();
    for round in 0..2 {
        let truth = sim.truth();
        let invs = block_on(futures::future::join_all(all.iter().map(|t| t.inventory())));
        for (inv, th) in invs.into_iter().zip(&truth.hosts) {
            assert_matches(&inv.unwrap(), th);
        }
        if round == 0 {
            let moves: Vec<serde_json::Value> =
                serde_json::from_str(&sim.ctl("/ctl/shuffle?n=50")).unwrap();
            assert!(moves.len() >= 40, "{}", moves.len());
        }
    }
}
