//! Integration tests through a real OpenSSH sshd: libvirt against real
//! virsh + libvirtd (test driver); ESXi, Proxmox and Hyper-V against the
//! shims in `tests/shims/`. Driven with `futures::executor::block_on`: no
//! tokio runtime in the test itself.

mod harness;

use std::time::{Duration, Instant};

use futures::executor::block_on;
use harness::{Libvirtd, Sshd};
use upsvisor_core::{ErrorKind, HostOp, HostTransport, PowerState, ToolsState, VmId, VmOp};
use upsvisor_ssh::{Dialect, SshConfig, SshTransport};

fn transport(cfg: SshConfig) -> SshTransport {
    SshTransport::new(cfg).unwrap()
}

fn power_of(t: &SshTransport, id: &str) -> PowerState {
    let inv = block_on(t.inventory()).unwrap();
    inv.vms
        .iter()
        .find(|v| v.id.as_str() == id)
        .unwrap_or_else(|| panic!("{id} not in {:?}", inv.vms))
        .power
}

// ---------------------------------------------------------------- libvirt

#[test]
fn libvirt_inventory_and_power_round_trip_with_real_virsh() {
    let Some(sshd) = Sshd::start() else { return };
    let Some(lv) = Libvirtd::start() else { return };
    let t = transport(sshd.config(Dialect::Libvirt).with_libvirt_uri(&lv.uri));
    let id = "6695eb01-f6a4-8304-79aa-97f2502e193f";

    let inv = block_on(t.inventory()).unwrap();
    assert_eq!(inv.info.product.as_deref(), Some("libvirt"));
    assert_eq!(inv.vms.len(), 1, "{:?}", inv.vms);
    let vm = &inv.vms[0];
    assert_eq!(vm.id.as_str(), id);
    assert_eq!(vm.name, "test");
    assert_eq!(vm.power, PowerState::PoweredOn);
    assert_eq!(vm.vcpus, Some(2));
    assert_eq!(vm.memory_mib, Some(8192));
    assert_eq!(
        vm.ips,
        vec!["192.168.122.3".parse::<std::net::IpAddr>().unwrap()]
    );

    block_on(t.vm_power(&id.into(), VmOp::PowerOff)).unwrap();
    assert_eq!(power_of(&t, id), PowerState::PoweredOff);
    // Idempotent: already off.
    block_on(t.vm_power(&id.into(), VmOp::PowerOff)).unwrap();
    // Reset of an off VM is refused, not attempted.
    let e = block_on(t.vm_power(&id.into(), VmOp::Reset)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidState, "{e}");
    block_on(t.vm_power(&id.into(), VmOp::PowerOn)).unwrap();
    assert_eq!(power_of(&t, id), PowerState::PoweredOn);
    block_on(t.vm_power(&id.into(), VmOp::Reset)).unwrap();
    block_on(t.vm_power(&id.into(), VmOp::Suspend)).unwrap();
    assert_eq!(power_of(&t, id), PowerState::Suspended);
    block_on(t.vm_power(&id.into(), VmOp::PowerOn)).unwrap();
    block_on(t.vm_power(&id.into(), VmOp::ShutdownGuest)).unwrap();
    assert_eq!(power_of(&t, id), PowerState::PoweredOff);

    let e = block_on(t.vm_info(&"00000000-0000-0000-0000-000000000000".into())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    // One connection served all of it.
    assert_eq!(t.connection_count(), 1);
    // Host power is not exercised here: it would run the real systemctl.
    assert!(t.capabilities().supports_host(HostOp::Shutdown));
}

#[test]
fn linux_host_power_goes_to_systemctl() {
    let Some(sshd) = Sshd::start() else { return };
    if upsvisor_testkit::require_peer(&["ssh"], "openssh-client").is_none() {
        return;
    }
    // Safety first: this must reach the shim, never the machine's own
    // systemctl.
    let which = sshd.remote_which("systemctl");
    let shims = sshd.dir.path().join("shims/systemctl");
    assert_eq!(which, shims.to_str().unwrap(), "refusing to run host power");
    for (d, op, want) in [
        (Dialect::Libvirt, HostOp::Shutdown, "poweroff"),
        (Dialect::Proxmox, HostOp::Reboot, "reboot"),
        (Dialect::Proxmox, HostOp::Shutdown, "poweroff"),
    ] {
        let t = transport(sshd.config(d));
        block_on(t.host_power(op)).unwrap();
        assert_eq!(sshd.read_state("linux.host").trim(), want);
        let e = block_on(t.host_power(HostOp::EnterMaintenance)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{d}: {e}");
    }
}

// ---------------------------------------------------------------- server

/// Issue 14: a machine that is not a hypervisor. Its info and reachability
/// come from `uname` over the connection, it lists no VMs, and its
/// shutdown is the configured command.
#[test]
fn a_plain_server_answers_with_no_vms_and_shuts_down_with_its_command() {
    let Some(sshd) = Sshd::start() else { return };
    if upsvisor_testkit::require_peer(&["ssh"], "openssh-client").is_none() {
        return;
    }
    // Safety first: the command must be the shim, never anything real.
    let which = sshd.remote_which("nas-poweroff");
    let shim = sshd.dir.path().join("shims/nas-poweroff");
    assert_eq!(which, shim.to_str().unwrap(), "refusing to run a shutdown");
    let t = transport(
        sshd.config(Dialect::Server)
            .with_shutdown_command(["nas-poweroff", "--now", "it's late; $(x)"])
            .unwrap(),
    );
    let caps = t.capabilities();
    assert!(caps.vm_ops.is_empty() && caps.host_ops == [HostOp::Shutdown]);
    let inv = block_on(t.inventory()).unwrap();
    assert!(inv.vms.is_empty());
    let uname = std::process::Command::new("uname")
        .args(["-s", "-r"])
        .output()
        .unwrap();
    let uname = String::from_utf8_lossy(&uname.stdout);
    let mut u = uname.split_whitespace();
    assert_eq!(inv.info.product.as_deref(), u.next());
    assert_eq!(inv.info.version.as_deref(), u.next());
    let e = block_on(t.vm_power(&VmId::new("x"), VmOp::ShutdownGuest)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    let e = block_on(t.host_power(HostOp::EnterMaintenance)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");

    block_on(t.host_power(HostOp::Shutdown)).unwrap();
    assert_eq!(
        sshd.read_state("server.shutdown").trim(),
        "nas-poweroff --now it's late; $(x)",
        "each argument quoted, nothing run by the remote shell"
    );

    // A command that is not there is a clear, named error.
    let t = transport(
        sshd.config(Dialect::Server)
            .with_shutdown_command(["no-such-poweroff"])
            .unwrap(),
    );
    let e = block_on(t.host_power(HostOp::Shutdown)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(
        e.to_string().contains("shutdown host failed (exit 127)"),
        "{e}"
    );
    assert!(
        SshConfig::new("h", "u", Dialect::Server)
            .with_shutdown_command(Vec::<String>::new())
            .is_err()
    );
}

// ---------------------------------------------------------------- ESXi

#[test]
fn esxi_inventory_and_power_round_trip_via_shims() {
    let Some(sshd) = Sshd::start() else { return };
    let t = transport(sshd.config(Dialect::Esxi));
    let inv = block_on(t.inventory()).unwrap();
    // The sessions load a Chinese locale (sshd SetEnv, as Debian's PAM
    // does from /etc/default/locale); every command still ran in C.
    let locales = sshd.read_state("locale.log");
    assert!(!locales.is_empty());
    assert!(locales.lines().all(|l| l == "C C C"), "{locales}");
    assert_eq!(inv.info.product.as_deref(), Some("VMware ESXi"));
    assert_eq!(inv.info.version.as_deref(), Some("8.0.2"));
    assert_eq!(inv.vms.len(), 3, "{:?}", inv.vms);
    let vcsa = &inv.vms[0];
    assert_eq!(vcsa.id.as_str(), "5261c1d4-8f0e-4b5e-9a43-1d2c3b4a5f60");
    assert_eq!(vcsa.name, "vcsa");
    assert_eq!(vcsa.power, PowerState::PoweredOn);
    assert_eq!(vcsa.tools, ToolsState::Running);
    assert_eq!(vcsa.ips.len(), 2, "{:?}", vcsa.ips);
    // A VM whose *name* is full of shell metacharacters is listed as is,
    // and driven by id without anything being executed.
    let evil = &inv.vms[1];
    assert_eq!(evil.name, "web; touch PWNED $(touch PWNED2)");
    assert_eq!(evil.power, PowerState::PoweredOff);
    block_on(t.vm_power(&evil.id, VmOp::PowerOn)).unwrap();
    assert_eq!(power_of(&t, evil.id.as_str()), PowerState::PoweredOn);
    block_on(t.vm_power(&evil.id, VmOp::ShutdownGuest)).unwrap();
    assert_eq!(power_of(&t, evil.id.as_str()), PowerState::PoweredOff);
    for f in ["PWNED", "PWNED2"] {
        assert!(!sshd.state().join(f).exists());
        assert!(!std::path::Path::new("/root").join(f).exists());
    }
    // Guest shutdown without tools: the right kind, state unchanged.
    let no_tools = VmId::from("5261c1d4-8f0e-4b5e-9a43-1d2c3b4a5f63");
    let e = block_on(t.vm_power(&no_tools, VmOp::ShutdownGuest)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ToolsUnavailable, "{e}");
    block_on(t.vm_power(&no_tools, VmOp::PowerOff)).unwrap();
    block_on(t.vm_power(&no_tools, VmOp::Suspend)).unwrap();
    // A bare Vmid works too.
    block_on(t.vm_power(&"3".into(), VmOp::PowerOn)).unwrap();
    block_on(t.vm_power(&"3".into(), VmOp::Suspend)).unwrap();
    assert_eq!(power_of(&t, no_tools.as_str()), PowerState::Suspended);

    // Host: ESXi refuses poweroff outside maintenance mode.
    let e = block_on(t.host_power(HostOp::Shutdown)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidState, "{e}");
    assert!(e.to_string().contains("maintenance"), "{e}");
    block_on(t.host_power(HostOp::EnterMaintenance)).unwrap();
    assert!(sshd.state().join("esxi.maintenance").exists());
    block_on(t.host_power(HostOp::Shutdown)).unwrap();
    assert_eq!(sshd.read_state("esxi.host").trim(), "poweroff");
    block_on(t.host_power(HostOp::ExitMaintenance)).unwrap();
    assert!(!sshd.state().join("esxi.maintenance").exists());
}

// ---------------------------------------------------------------- Proxmox

#[test]
fn proxmox_inventory_and_power_round_trip_via_shims() {
    let Some(sshd) = Sshd::start() else { return };
    let t = transport(
        sshd.config(Dialect::Proxmox)
            .with_guest_shutdown_wait(Duration::from_secs(1)),
    );
    let inv = block_on(t.inventory()).unwrap();
    assert_eq!(inv.info.product.as_deref(), Some("Proxmox VE"));
    let ids: Vec<&str> = inv.vms.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, ["qemu/100", "qemu/101", "qemu/102", "lxc/200"]);
    // VMIDs are unique within one cluster only: the engine keys them with
    // their host.
    assert!(inv.vms.iter().all(|v| v.host_local));
    let web = &inv.vms[0];
    assert_eq!(web.name, "web1");
    assert_eq!(web.power, PowerState::PoweredOn);
    assert_eq!(web.tools, ToolsState::Running);
    assert_eq!(
        web.ips,
        vec!["10.0.0.21".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(inv.vms[2].tools, ToolsState::NotInstalled);
    assert_eq!(inv.vms[3].name, "ct1");
    assert_eq!(
        inv.vms[3].ips,
        vec!["10.0.0.30".parse::<std::net::IpAddr>().unwrap()]
    );

    block_on(t.vm_power(&"qemu/100".into(), VmOp::ShutdownGuest)).unwrap();
    block_on(t.vm_power(&"qemu/101".into(), VmOp::PowerOn)).unwrap();
    block_on(t.vm_power(&"lxc/200".into(), VmOp::ShutdownGuest)).unwrap();
    let inv = block_on(t.inventory()).unwrap();
    let p: Vec<PowerState> = inv.vms.iter().map(|v| v.power).collect();
    assert_eq!(
        p,
        [
            PowerState::PoweredOff,
            PowerState::PoweredOn,
            PowerState::PoweredOn,
            PowerState::PoweredOff
        ]
    );
    // Guest shutdown without an agent times out on the node: accepted.
    block_on(t.vm_power(&"qemu/102".into(), VmOp::ShutdownGuest)).unwrap();
    block_on(t.vm_power(&"qemu/102".into(), VmOp::PowerOff)).unwrap();
    assert_eq!(power_of(&t, "qemu/102"), PowerState::PoweredOff);
    let e = block_on(t.vm_power(&"lxc/200".into(), VmOp::Suspend)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    let e = block_on(t.vm_info(&"qemu/999".into())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(t.connection_count(), 1);
}

/// A node of a Proxmox cluster keys its guests with the cluster (VMIDs
/// are unique cluster-wide and survive migration), so two nodes of one
/// cluster name a guest alike and a migration keeps its key; a membership
/// that cannot be read leaves host-local keys.
#[test]
fn proxmox_cluster_nodes_key_guests_with_their_cluster() {
    let Some(sshd) = Sshd::start() else { return };
    let status = r#"[{"id":"cluster","name":"corp-pve","nodes":2,"quorate":1,"type":"cluster","version":4},
{"id":"node/pve","ip":"127.0.0.1","level":"","local":1,"name":"pve","nodeid":1,"online":1,"type":"node"},
{"id":"node/pve2","ip":"127.0.0.2","level":"","local":0,"name":"pve2","nodeid":2,"online":0,"type":"node"}]"#;
    let scope = upsvisor_ssh::codec::proxmox::parse_cluster_status(status)
        .unwrap()
        .scope()
        .unwrap();

    // Unreadable first (pvesh fails): host-local keys, as on a standalone
    // node.
    std::fs::write(sshd.state().join("pve.cluster"), "not json").unwrap();
    let t = transport(sshd.config(Dialect::Proxmox));
    let inv = block_on(t.inventory()).unwrap();
    assert_eq!(inv.vms[0].id.as_str(), "qemu/100");
    assert!(inv.vms.iter().all(|v| v.host_local));

    // A fresh transport on a node whose membership reads: cluster keys.
    std::fs::write(sshd.state().join("pve.cluster"), status).unwrap();
    let a = transport(sshd.config(Dialect::Proxmox));
    let b = transport(sshd.config(Dialect::Proxmox));
    let inv = block_on(a.inventory()).unwrap();
    let ids: Vec<&str> = inv.vms.iter().map(|v| v.id.as_str()).collect();
    let want: Vec<String> = ["qemu/100", "qemu/101", "qemu/102", "lxc/200"]
        .iter()
        .map(|g| format!("pve:{scope}/{g}"))
        .collect();
    assert_eq!(ids, want);
    assert!(inv.vms.iter().all(|v| !v.host_local));
    // Another node of the same cluster names the same guest alike.
    let other = block_on(b.inventory()).unwrap();
    assert_eq!(other.vms[0].id, inv.vms[0].id);

    // Commands take the scoped key; a key of another cluster names no
    // guest here (its VMID would be another VM's).
    let web = inv.vms[0].id.clone();
    block_on(a.vm_power(&web, VmOp::ShutdownGuest)).unwrap();
    assert_eq!(power_of(&a, web.as_str()), PowerState::PoweredOff);
    let foreign = VmId::from("pve:corp-pve~00000000/qemu/101");
    let e = block_on(a.vm_power(&foreign, VmOp::PowerOff)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = block_on(a.vm_info(&foreign)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(
        power_of(&a, &format!("pve:{scope}/qemu/101")),
        PowerState::PoweredOff
    );
}

// ---------------------------------------------------------------- Hyper-V

#[test]
fn hyperv_inventory_and_power_round_trip_via_shims() {
    let Some(sshd) = Sshd::start() else { return };
    let t = transport(sshd.config(Dialect::HyperV));
    let dc = "0b1f8a52-9c1e-4f6f-8a0e-2f7d3c1a9e10";
    let file = "5c2b0e7a-1111-4222-8333-944455556666";
    let inv = block_on(t.inventory()).unwrap();
    assert_eq!(inv.info.hostname.as_deref(), Some("HV01"));
    assert_eq!(inv.vms.len(), 2);
    assert_eq!(inv.vms[0].id.as_str(), dc);
    assert_eq!(inv.vms[0].tools, ToolsState::Running);
    assert_eq!(inv.vms[0].memory_mib, Some(4096));
    assert_eq!(inv.vms[1].power, PowerState::PoweredOff);

    block_on(t.vm_power(&dc.into(), VmOp::ShutdownGuest)).unwrap();
    block_on(t.vm_power(&file.into(), VmOp::PowerOn)).unwrap();
    assert_eq!(power_of(&t, dc), PowerState::PoweredOff);
    assert_eq!(power_of(&t, file), PowerState::PoweredOn);
    block_on(t.vm_power(&file.into(), VmOp::Suspend)).unwrap();
    assert_eq!(power_of(&t, file), PowerState::Suspended);
    block_on(t.vm_power(&file.into(), VmOp::PowerOn)).unwrap();
    block_on(t.vm_power(&file.into(), VmOp::PowerOff)).unwrap();
    assert_eq!(power_of(&t, file), PowerState::PoweredOff);
    let e = block_on(t.vm_power(&dc.into(), VmOp::RebootGuest)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    let e = block_on(t.vm_info(&"11111111-2222-3333-4444-555555555555".into())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    // The scripts went through -EncodedCommand and only held the GUID.
    let scripts = std::fs::read_to_string(sshd.state().join("scripts.log")).unwrap();
    assert!(scripts.contains(&format!("Get-VM -Id '{file}' | Stop-VM -TurnOff -Force")));
    block_on(t.host_power(HostOp::Shutdown)).unwrap();
    assert_eq!(sshd.read_state("hv.host").trim(), "off");
    // No Hyper-V rights on a German Windows: Auth, from the error record's
    // category, whatever the message's language.
    std::fs::write(sshd.state().join("hv.denied"), "").unwrap();
    let e = block_on(t.inventory()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    let e = block_on(t.vm_power(&dc.into(), VmOp::PowerOff)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
}

// ---------------------------------------------------------------- refusals

#[test]
fn unknown_host_key_is_refused_and_named() {
    let Some(sshd) = Sshd::start() else { return };
    let cfg = SshConfig::new("127.0.0.1", harness::user(), Dialect::Esxi)
        .with_port(sshd.port)
        .with_private_key(sshd.user_key.clone(), None);
    let t = transport(cfg.clone());
    let e = block_on(t.host_info()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    let fp = upsvisor_ssh::HostKeyPin::parse(&sshd.host_pub)
        .unwrap()
        .fingerprint();
    assert!(e.to_string().contains("unknown host key"), "{e}");
    assert!(e.to_string().contains(&fp), "{e} should name {fp}");
    assert!(!sshd.log().contains("Accepted publickey"), "{}", sshd.log());
    // The escape hatch, explicitly named.
    let t = transport(cfg.dangerous_accept_any_host_key(true));
    block_on(t.host_info()).unwrap();
}

#[test]
fn changed_host_key_is_refused_before_authenticating() {
    let Some(sshd) = Sshd::start() else { return };
    let (_, other_pub) = sshd.other_key("impostor");
    let cfg = SshConfig::new("127.0.0.1", harness::user(), Dialect::Esxi)
        .with_port(sshd.port)
        .with_private_key(sshd.user_key.clone(), None)
        .with_host_key(&other_pub)
        .unwrap();
    let e = block_on(transport(cfg).host_info()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert!(e.to_string().contains("host key changed"), "{e}");
    assert!(!sshd.log().contains("Accepted"), "{}", sshd.log());
    // The fingerprint form of the right key works.
    let fp = upsvisor_ssh::HostKeyPin::parse(&sshd.host_pub)
        .unwrap()
        .fingerprint();
    let cfg = SshConfig::new("127.0.0.1", harness::user(), Dialect::Esxi)
        .with_port(sshd.port)
        .with_private_key(sshd.user_key.clone(), None)
        .with_host_key(&fp)
        .unwrap();
    block_on(transport(cfg).host_info()).unwrap();
}

#[test]
fn wrong_password_and_wrong_key_are_auth_errors() {
    let Some(sshd) = Sshd::start() else { return };
    let pin = format!("[127.0.0.1]:{} {}", sshd.port, sshd.host_pub);
    let cfg = SshConfig::new("127.0.0.1", harness::user(), Dialect::Esxi)
        .with_port(sshd.port)
        .with_host_key(&pin)
        .unwrap();
    let e =
        block_on(transport(cfg.clone().with_password("not-the-password")).host_info()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert!(!e.to_string().contains("not-the-password"), "{e}");
    assert!(e.to_string().contains("password"), "{e}");
    let (other, _) = sshd.other_key("stranger");
    let e = block_on(transport(cfg.clone().with_private_key(other, None)).host_info()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert!(e.to_string().contains("public key SHA256:"), "{e}");
    // A key that does not decode is a configuration error up front.
    let e = SshTransport::new(cfg.with_private_key("garbage", None)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
}

#[test]
fn ids_with_shell_metacharacters_never_reach_the_host() {
    let Some(sshd) = Sshd::start() else { return };
    let evil = [
        "1; touch PWNED",
        "$(touch PWNED)",
        "`touch PWNED`",
        "1 && touch PWNED",
        "qemu/100;touch PWNED",
        "6695eb01-f6a4-8304-79aa-97f2502e193f' ; touch PWNED; '",
        "1\ntouch PWNED",
    ];
    for d in [
        Dialect::Esxi,
        Dialect::Libvirt,
        Dialect::Proxmox,
        Dialect::HyperV,
    ] {
        let t = transport(sshd.config(d));
        for id in evil {
            let e = block_on(t.vm_power(&id.into(), VmOp::PowerOff)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NotFound, "{d} {id:?}: {e}");
            let e = block_on(t.vm_info(&id.into())).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NotFound, "{d} {id:?}: {e}");
        }
        assert_eq!(t.connection_count(), 0, "{d}: refused before connecting");
    }
    assert!(!sshd.calls().contains("PWNED"), "{}", sshd.calls());
    assert!(!sshd.state().join("PWNED").exists());
}

// ---------------------------------------------------------------- limits

#[test]
fn hung_command_times_out_and_the_next_call_uses_a_fresh_connection() {
    let Some(sshd) = Sshd::start() else { return };
    let t = transport(
        sshd.config(Dialect::Proxmox)
            .with_command_timeout(Duration::from_secs(2)),
    );
    block_on(t.host_info()).unwrap();
    sshd.set_mode("hang");
    let t0 = Instant::now();
    let e = block_on(t.host_info()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    // The channel is closed and the command sent SIGTERM, but OpenSSH
    // refuses "signal" requests in root sessions ("session signalling
    // requires privilege separation"), so the hung shim may outlive the
    // call: only the caller is freed. Checked here so the docs stay true.
    assert!(sshd.shim_processes() > 0);
    sshd.set_mode("");
    // A connection on which anything timed out is not trusted again (it
    // may be half-open): the next call opens a fresh one.
    block_on(t.host_info()).unwrap();
    assert_eq!(t.connection_count(), 2);
    block_on(t.host_info()).unwrap();
    assert_eq!(t.connection_count(), 2);
}

#[test]
fn huge_output_hits_the_limit() {
    let Some(sshd) = Sshd::start() else { return };
    let t = transport(sshd.config(Dialect::Esxi).with_max_output(1 << 20));
    sshd.set_mode("huge");
    let e = block_on(t.inventory()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
    assert!(e.to_string().contains("limit"), "{e}");
    sshd.set_mode("");
    assert_eq!(block_on(t.inventory()).unwrap().vms.len(), 3);
}

#[test]
fn garbage_and_failures_are_clear_errors() {
    let Some(sshd) = Sshd::start() else { return };
    for d in [Dialect::Esxi, Dialect::Proxmox, Dialect::HyperV] {
        let t = transport(sshd.config(d));
        sshd.set_mode("garbage");
        let e = block_on(t.inventory()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{d}: {e}");
        sshd.set_mode("fail");
        let e = block_on(t.inventory()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{d}: {e}");
        assert!(e.to_string().contains("exit 3"), "{d}: {e}");
        sshd.set_mode("");
        block_on(t.inventory()).unwrap();
    }
}

#[test]
fn one_connection_is_reused_and_rebuilt_after_a_drop() {
    let Some(mut sshd) = Sshd::start() else {
        return;
    };
    let t = transport(sshd.config(Dialect::HyperV));
    for _ in 0..5 {
        block_on(t.inventory()).unwrap();
    }
    // Concurrent calls share it too.
    let calls: Vec<_> = (0..4).map(|_| t.host_info()).collect();
    for r in block_on(futures::future::join_all(calls)) {
        r.unwrap();
    }
    assert_eq!(t.connection_count(), 1);
    // More calls at once than OpenSSH's default MaxSessions (10): the
    // transport queues them on its channel limit instead of failing.
    let calls: Vec<_> = (0..24).map(|_| t.host_info()).collect();
    for r in block_on(futures::future::join_all(calls)) {
        r.unwrap();
    }
    assert_eq!(t.connection_count(), 1);
    sshd.restart();
    block_on(t.inventory()).unwrap();
    assert_eq!(t.connection_count(), 2);
}

#[test]
fn unreachable_port_is_unreachable() {
    let port = upsvisor_testkit::free_port();
    let cfg = SshConfig::new("127.0.0.1", harness::user(), Dialect::Esxi)
        .with_port(port)
        .with_password("x")
        .dangerous_accept_any_host_key(true);
    let e = block_on(transport(cfg).host_info()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
    assert!(e.is_transient());
}

// ------------------------------------------------- password auth (russh peer)

/// A successful password login cannot be shown against this machine's
/// sshd without giving a system account a password, so this uses russh's
/// own server, in-process on 127.0.0.1, as the peer.
mod russh_peer {
    use std::sync::Arc;

    use russh::server::{self, Auth, Msg, Session};
    use russh::{Channel, ChannelId};

    pub const USER: &str = "ups";
    pub const PASSWORD: &str = "correct horse battery staple";
    /// A user who may log in only by keyboard-interactive (as on ESXi).
    pub const KI_USER: &str = "esx";

    struct Peer;

    impl server::Handler for Peer {
        type Error = russh::Error;

        async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
            Ok(if user == KI_USER {
                // Like ESXi: passwords only through keyboard-interactive.
                Auth::Reject {
                    proceed_with_methods: Some(russh::MethodSet::from(
                        &[russh::MethodKind::KeyboardInteractive][..],
                    )),
                    partial_success: false,
                }
            } else if user == USER && password == PASSWORD {
                Auth::Accept
            } else {
                Auth::reject()
            })
        }

        async fn auth_keyboard_interactive<'a>(
            &'a mut self,
            user: &str,
            _submethods: &str,
            response: Option<server::Response<'a>>,
        ) -> Result<Auth, Self::Error> {
            if user != KI_USER {
                return Ok(Auth::reject());
            }
            Ok(match response {
                None => Auth::Partial {
                    name: "".into(),
                    instructions: "".into(),
                    prompts: vec![("Password: ".into(), false)].into(),
                },
                Some(mut r) => {
                    if r.next().as_deref() == Some(PASSWORD.as_bytes()) {
                        Auth::Accept
                    } else {
                        Auth::reject()
                    }
                }
            })
        }

        async fn channel_open_session(
            &mut self,
            _channel: Channel<Msg>,
            reply: server::ChannelOpenHandle,
            _session: &mut Session,
        ) -> Result<(), Self::Error> {
            reply.accept().await;
            Ok(())
        }

        async fn exec_request(
            &mut self,
            ch: ChannelId,
            data: &[u8],
            s: &mut Session,
        ) -> Result<(), Self::Error> {
            s.channel_success(ch)?;
            // Every POSIX command runs in the C locale.
            let cmd = data.strip_prefix(b"env LC_ALL=C LANG=C LANGUAGE=C ".as_slice());
            let (out, status) = if cmd == Some(b"pveversion".as_slice()) {
                (
                    "pve-manager/8.1.3/b46aac3b42da5d15 (running kernel: 6.5.11-4-pve)\n",
                    0,
                )
            } else {
                ("", 127)
            };
            s.data(ch, out.as_bytes().to_vec())?;
            s.exit_status_request(ch, status)?;
            s.eof(ch)?;
            s.close(ch)?;
            Ok(())
        }
    }

    /// Starts the peer; returns its port and host public key line.
    pub fn start(dir: &std::path::Path) -> (u16, String) {
        let key_path = dir.join("russh_host_key");
        let st = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key_path)
            .status()
            .unwrap();
        assert!(st.success());
        let key =
            russh::keys::decode_secret_key(&std::fs::read_to_string(&key_path).unwrap(), None)
                .unwrap();
        let public = std::fs::read_to_string(key_path.with_extension("pub")).unwrap();
        let config = Arc::new(server::Config {
            keys: vec![key],
            auth_rejection_time: std::time::Duration::from_millis(10),
            auth_rejection_time_initial: Some(std::time::Duration::ZERO),
            ..Default::default()
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let config = config.clone();
                    tokio::spawn(async move {
                        if let Ok(session) = server::run_stream(config, stream, Peer).await {
                            let _ = session.await;
                        }
                    });
                }
            });
        });
        (port, public.trim().to_owned())
    }
}

#[test]
fn password_authentication_works_and_wrong_password_is_refused() {
    if upsvisor_testkit::require_peer(&["ssh-keygen"], "openssh-client").is_none() {
        return;
    }
    let dir = upsvisor_testkit::TempDir::new("russh-peer");
    let (port, host_pub) = russh_peer::start(dir.path());
    let cfg = SshConfig::new("127.0.0.1", russh_peer::USER, Dialect::Proxmox)
        .with_port(port)
        .with_host_key(&host_pub)
        .unwrap();
    let info =
        block_on(transport(cfg.clone().with_password(russh_peer::PASSWORD)).host_info()).unwrap();
    assert_eq!(info.version.as_deref(), Some("8.1.3"));
    let e = block_on(transport(cfg.with_password("Tr0ub4dor&3")).host_info()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert!(!e.to_string().contains("Tr0ub4dor"), "{e}");
    // Keyboard-interactive only (ESXi's usual setup): the password answers
    // the prompt.
    let ki = SshConfig::new("127.0.0.1", russh_peer::KI_USER, Dialect::Proxmox)
        .with_port(port)
        .with_host_key(&host_pub)
        .unwrap();
    let info =
        block_on(transport(ki.clone().with_password(russh_peer::PASSWORD)).host_info()).unwrap();
    assert_eq!(info.version.as_deref(), Some("8.1.3"));
    let e = block_on(transport(ki.with_password("wrong")).host_info()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
}

#[test]
fn silent_or_non_ssh_peers_fail_cleanly() {
    use std::io::Write;
    // Accepts TCP (kernel backlog) but never speaks: connect deadline.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = |port| {
        SshConfig::new("127.0.0.1", harness::user(), Dialect::Esxi)
            .with_port(port)
            .with_password("x")
            .dangerous_accept_any_host_key(true)
            .with_connect_timeout(Duration::from_secs(1))
    };
    let t0 = Instant::now();
    let e = block_on(transport(cfg(silent.local_addr().unwrap().port())).host_info()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(t0.elapsed() < Duration::from_secs(4));
    // Speaks something else (an HTTP server on the SSH port), then hangs
    // up. RFC 4253 lets a server send lines before its banner, so the
    // client reads on until the hang-up: Unreachable, not a hang.
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = http.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in http.incoming().take(1) {
            let mut s = s.unwrap();
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let e = block_on(transport(cfg(port)).host_info()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
    drop(silent);
}

// ------------------------------------------------- with the core engine

#[test]
fn the_core_poller_drives_all_four_dialects_without_a_tokio_runtime() {
    use std::sync::Arc;
    use upsvisor_core::{Event, HostId, Poller, PollerConfig, SystemClock};

    let Some(sshd) = Sshd::start() else { return };
    let Some(lv) = Libvirtd::start() else { return };
    let mut poller = Poller::new(
        Arc::new(SystemClock::new()),
        PollerConfig::default()
            .host_deadline(Duration::from_secs(30))
            .clone(),
    );
    let esxi = Arc::new(transport(sshd.config(Dialect::Esxi)));
    poller.add_host(HostId::from("esx1"), esxi.clone());
    poller.add_host(
        HostId::from("kvm1"),
        Arc::new(transport(
            sshd.config(Dialect::Libvirt).with_libvirt_uri(&lv.uri),
        )),
    );
    poller.add_host(
        HostId::from("pve1"),
        Arc::new(transport(sshd.config(Dialect::Proxmox))),
    );
    poller.add_host(
        HostId::from("hv1"),
        Arc::new(transport(sshd.config(Dialect::HyperV))),
    );

    let first = block_on(poller.poll_once());
    assert_eq!(
        first.table.vm_count(),
        3 + 1 + 4 + 2,
        "{}",
        first.table.to_json()
    );
    assert!(
        first.table.hosts.values().all(|h| h.is_fresh()),
        "{}",
        first.table.to_json()
    );

    let vcsa = VmId::from("5261c1d4-8f0e-4b5e-9a43-1d2c3b4a5f60");
    block_on(esxi.vm_power(&vcsa, VmOp::PowerOff)).unwrap();
    let second = block_on(poller.poll_once());
    let changed: Vec<_> = second
        .events
        .iter()
        .filter(|e| matches!(e, Event::VmPowerChanged { vm, .. } if *vm == vcsa))
        .collect();
    assert_eq!(changed.len(), 1, "{:?}", second.events);
    let (host, vm) = second.table.locate(&vcsa).unwrap();
    assert_eq!(host.as_str(), "esx1");
    assert_eq!(vm.power, PowerState::PoweredOff);
}

#[test]
fn dropping_a_call_cancels_it_and_keeps_the_transport_usable() {
    use upsvisor_core::{Clock, SystemClock, with_deadline};
    let Some(sshd) = Sshd::start() else { return };
    let t = transport(sshd.config(Dialect::Proxmox)); // 10 s command deadline
    block_on(t.host_info()).unwrap();
    sshd.set_mode("hang");
    let clock = SystemClock::new();
    let t0 = Instant::now();
    let deadline = clock.now() + Duration::from_millis(800);
    let r = block_on(with_deadline(&clock, deadline, t.host_info()));
    assert!(r.is_err(), "the engine's deadline must win");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    sshd.set_mode("");
    // The cancelled call's connection is discarded like a timed-out one.
    block_on(t.host_info()).unwrap();
    assert_eq!(t.connection_count(), 2);
}

// ---------------------------------------------------------------- commands

/// An operator's command (a hook) over the host's connection: argv quoted,
/// variables passed through `env`, exit status honoured; one still running
/// at its timeout is stopped on the host.
#[test]
fn a_command_runs_with_its_environment_and_is_stopped_at_its_timeout() {
    let Some(sshd) = Sshd::start() else { return };
    let t = transport(sshd.config(Dialect::Server));
    let out = sshd.state().join("cmd.out");
    let argv: Vec<String> = vec![
        "/bin/sh".into(),
        "-c".into(),
        format!(
            "printf '%s|%s' \"$UPSVISOR_HOOK\" \"$1\" > {}",
            out.display()
        ),
        "sh".into(),
        "it's; $(touch PWNED)".into(),
    ];
    let env = vec![("UPSVISOR_HOOK".to_owned(), "a b'c".to_owned())];
    block_on(t.run_command(&argv, &env, Duration::from_secs(10))).unwrap();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "a b'c|it's; $(touch PWNED)"
    );
    assert!(!sshd.state().join("PWNED").exists());
    let e = block_on(t.run_command(
        &["/bin/sh".into(), "-c".into(), "exit 4".into()],
        &[],
        Duration::from_secs(10),
    ))
    .unwrap_err();
    assert!(e.to_string().contains("exit status 4"), "{e}");
    let e = block_on(t.run_command(
        &["x".into()],
        &[("A B".into(), "1".into())],
        Duration::from_secs(1),
    ))
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    // Still running at its timeout: a timeout, and the command stopped.
    let t0 = Instant::now();
    let e = block_on(t.run_command(
        &["sleep".into(), "4141".into()],
        &[],
        Duration::from_secs(2),
    ))
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(t0.elapsed() < Duration::from_secs(4));
    let running = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
            std::fs::read(p.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x004141\x00")
                && std::fs::read_to_string(p.path().join("stat")).is_ok_and(|s| !s.contains(") Z "))
        })
    };
    let t1 = Instant::now();
    while running() && t1.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !running(),
        "the remote command outlived its timeout; sshd log:\n{}",
        sshd.log()
    );
}
