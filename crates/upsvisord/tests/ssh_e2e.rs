//! End to end over real protocols on both sides: a NUT `upsd` +
//! `dummy-ups` for power, and a libvirt host reached over a real OpenSSH
//! `sshd` running real `virsh` against `libvirtd`'s test driver (host
//! power goes to the harness's `systemctl` shim, never the real one).
//! A plain server (`ssh-server`, a NAS) on the same UPS shuts down after
//! the hypervisor (`after = ["kvm1"]`), with its configured command (a
//! recording shim). Low battery: the VM is shut down over SSH, then the
//! host, then the NAS; mains back: the VM is started again. The audit log
//! records every command.

mod common;

use common::nut::{audit_lines, dev, get, rewrite, start_daemon, start_nut, vm_power, wait};
use common::ssh::{Libvirtd, Sshd};
use serde_json::Value;
use upsvisor_testkit::TempDir;

#[test]
fn outage_with_upsd_and_libvirt_over_ssh() {
    let Some(sshd) = Sshd::start() else { return };
    let Some(lv) = Libvirtd::start() else { return };
    let dir = TempDir::new("upsvisord-ssh-e2e");
    let d = dir.path();
    let Some(nut) = start_nut(d) else { return };
    let key = d.join("id_ed25519");
    std::fs::write(&key, &sshd.user_key).unwrap();
    let creds = d.join("credentials.toml");
    std::fs::write(
        &creds,
        format!(
            "[kvm]\nusername = \"{}\"\nprivate_key_file = \"id_ed25519\"\n",
            common::ssh::user()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        for f in [&key, &creds] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    let cfg = format!(
        r#"
version = 1
armed = true
[credentials]
file = "credentials.toml"
[poller]
period_s = 2
on_battery_period_s = 1
host_deadline_s = 10
status_interval_s = 1
[policy]
on_battery_for_s = 0
runtime_below_s = 0
debounce_s = 1
stable_for_s = 2
[sequencer]
default_timeout_s = 15
shutdown_hosts = true
# The shim's poweroff does not take the host down: count it down soon.
host_down_wait_s = 5
final_action = "none"
margin_s = 10
[[device]]
id = "ups1"
kind = "nut"
address = "127.0.0.1:{port}"
ups = "ups1"
[[device.outlet]]
id = "main"
hosts = ["kvm1", "nas"]
[[host]]
id = "nas"
transport = "ssh-server"
address = "127.0.0.1:{sshport}"
credentials = "kvm"
host_key = "[127.0.0.1]:{sshport} {hostpub}"
shutdown_command = ["nas-poweroff", "now"]
after = ["kvm1"]
[[host]]
id = "kvm1"
transport = "ssh-libvirt"
address = "127.0.0.1:{sshport}"
credentials = "kvm"
host_key = "[127.0.0.1]:{sshport} {hostpub}"
libvirt_uri = "{uri}"
"#,
        port = nut.port,
        sshport = sshd.port,
        hostpub = sshd.host_pub,
        uri = lv.uri,
    );
    let cfg_path = d.join("upsvisord.toml");
    std::fs::write(&cfg_path, cfg).unwrap();

    let audit = d.join("audit.jsonl");
    let (_daemon, base) = start_daemon(&cfg_path, &audit);
    wait("upsd ready and the VM listed", 30, || {
        get(&format!("{base}/api/power"))["devices"]["ups1"]["last"]["tokens"]
            == serde_json::json!(["OL"])
            && vm_power(&base, "test") == "powered_on"
    });
    // Preflight against the same peers.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_upsvisord"))
        .args(["check", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("libvirt"), "{t}");

    rewrite(d, &dev("OB DISCHRG LB", 20));
    wait("VM off over SSH", 60, || {
        vm_power(&base, "test") == "powered_off"
    });
    wait("host shutdown issued", 60, || {
        audit_lines(&audit).iter().any(|v| {
            v.pointer("/what/audit") == Some(&Value::from("completed"))
                && v.pointer("/what/cmd/kind") == Some(&Value::from("host"))
                && v.pointer("/what/cmd/op") == Some(&Value::from("shutdown"))
        })
    });
    // The audit file is written from the event stream, so it may trail
    // the command itself: wait for its line, then look at the shim.
    wait("the NAS shut down after the hypervisor", 60, || {
        audit_lines(&audit).iter().any(|v| {
            v.pointer("/what/audit") == Some(&Value::from("completed"))
                && v.pointer("/what/cmd/kind") == Some(&Value::from("host"))
                && v.pointer("/what/cmd/host") == Some(&Value::from("nas"))
        })
    });
    assert_eq!(
        sshd.read_state("server.shutdown").trim(),
        "nas-poweroff now"
    );
    let lines = audit_lines(&audit);
    let issued = |kind: &str, op: &str, host: Option<&str>| {
        lines
            .iter()
            .position(|v| {
                v.pointer("/what/audit") == Some(&Value::from("issued"))
                    && v.pointer("/what/cmd/kind") == Some(&Value::from(kind))
                    && v.pointer("/what/cmd/op") == Some(&Value::from(op))
                    && host.is_none_or(|h| v.pointer("/what/cmd/host") == Some(&Value::from(h)))
            })
            .unwrap_or_else(|| panic!("no {kind} {op} {host:?} in {lines:?}"))
    };
    let pos = |kind: &str, op: &str| issued(kind, op, None);
    assert!(
        issued("host", "shutdown", Some("kvm1")) < issued("host", "shutdown", Some("nas")),
        "the NAS goes after the hypervisor it is `after`"
    );
    assert!(
        lines.iter().any(|v| v["what"]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("nas shuts down after kvm1"))),
        "the wait is said: {lines:?}"
    );
    // libvirt says nothing of guest tools (Unknown): a graceful attempt
    // first (`virsh shutdown`, ACPI, needs no agent), which the test driver
    // honours, so no power-off is needed.
    assert!(
        pos("vm", "shutdown_guest") < pos("host", "shutdown"),
        "VMs before hosts"
    );
    assert!(
        !lines
            .iter()
            .any(|v| v.pointer("/what/cmd/op") == Some(&Value::from("power_off"))),
        "a guest that stopped gracefully is not powered off: {lines:?}"
    );
    // The host's poweroff went to the shim.
    assert!(sshd.calls().contains("systemctl"), "{}", sshd.calls());

    rewrite(d, &dev("OL CHRG", 90));
    wait("VM restored", 90, || {
        vm_power(&base, "test") == "powered_on"
    });
}
