//! The whole cycle of issue 14 over real peers only:
//!
//! - **Power:** NUT's `upsd` with its `nutdrv_qx` driver on a pty, talking
//!   to a UPS that speaks the Megatec protocol (`upsvisor_testkit::megatec`).
//!   A real driver, because `dummy-ups` 2.8 offers `load.off` only and
//!   NUT's `clone` driver 2.8.0 crashes on `shutdown.return` (both tried):
//!   here upsd really accepts `SET VAR ups.delay.shutdown` and `INSTCMD
//!   shutdown.return`, and the driver sends the UPS `S.2`.
//! - **Hosts:** a libvirt hypervisor `kvm1` (real `virsh` over a real
//!   OpenSSH `sshd`, against libvirtd's test driver) whose BMC is
//!   sushy-tools' Redfish emulator (its system is a domain in a second
//!   libvirtd), and a plain server `nas` (`ssh-server`, shut down after
//!   `kvm1`) whose BMC is OpenIPMI's `ipmi_sim`.
//! - **A host answers only while its BMC says it is on.** Each host is
//!   reached through a relay the test closes when the host halts (the shim
//!   records its shutdown; the test then turns its BMC's power off, as a
//!   halt does) and opens when its BMC says the power is on again. So
//!   restore finds both hosts silent and must power them on out of band.
//!
//! - **A bad method:** a third host, `backup` (a plain server), has a
//!   Redfish method whose password is stale: `check` fails it naming the
//!   host and the method, and at restore its refusal is audited once and
//!   holds no other host.
//!
//! Mains fails with low battery: the VM stops, then `kvm1` (and `backup`),
//! then `nas`; then shutdown-with-return. Mains returns: `nas` is powered
//! on over IPMI (the chassis is told `power 1`) and, once it answers,
//! `kvm1` over Redfish (the domain really starts): storage first. Both
//! answer again and the VM is started, while `backup` stays off.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::nut::{audit_lines, get, start_daemon, vm_power, wait};
use common::ssh::{Libvirtd, Sshd};
use serde_json::Value;
use upsvisor_testkit::TempDir;
use upsvisor_testkit::bmc::{IpmiSim, RedfishEmulator};
use upsvisor_testkit::megatec::MegatecUps;
use upsvisor_testkit::nut::start_nut_megatec;
use upsvisor_testkit::relay::Relay;

const API_TOKEN: &str = "restore-e2e-token-0123456789abcdef";
const BMC_PASSWORD: &str = "bmc-s3cret";
const KVM1_SYSTEM: &str = "7c0b2a4e-5d1f-4e6a-9b3c-0d8e1f2a3b4c";
const BACKUP_SYSTEM: &str = "7c0b2a4e-5d1f-4e6a-9b3c-0d8e1f2a3b4d";

fn is(v: &Value, ptr: &str, want: &str) -> bool {
    v.pointer(ptr) == Some(&Value::from(want))
}

/// Index of the first audit line with `audit` = `stage` for a host
/// command `op` on `host`.
fn host_cmd(lines: &[Value], stage: &str, op: &str, host: &str) -> Option<usize> {
    lines.iter().position(|v| {
        is(v, "/what/audit", stage)
            && is(v, "/what/cmd/kind", "host")
            && is(v, "/what/cmd/op", op)
            && is(v, "/what/cmd/host", host)
    })
}

#[test]
fn outage_shutdown_with_return_and_power_on_over_redfish_and_ipmi() {
    let Some(sshd) = Sshd::start() else { return };
    let Some(lv) = Libvirtd::start() else { return };
    let Some(ups) = MegatecUps::start() else {
        return;
    };
    let Some(redfish) = RedfishEmulator::start(
        BMC_PASSWORD,
        &[("kvm1", KVM1_SYSTEM, true), ("backup", BACKUP_SYSTEM, true)],
    ) else {
        return;
    };
    let Some(ipmi) = IpmiSim::start(BMC_PASSWORD) else {
        return;
    };
    ipmi.set_power(true);
    let dir = TempDir::new("upsvisord-restore-e2e");
    let d = dir.path();
    let Some(nut) = start_nut_megatec(d, &ups.tty) else {
        return;
    };
    nut.wait_status("OL", Duration::from_secs(30));

    let upstream = ([127, 0, 0, 1], sshd.port).into();
    let (kvm1_link, nas_link, backup_link) = (
        Relay::start(upstream),
        Relay::start(upstream),
        Relay::start(upstream),
    );

    let key = d.join("id_ed25519");
    std::fs::write(&key, &sshd.user_key).unwrap();
    let creds = d.join("credentials.toml");
    std::fs::write(
        &creds,
        format!(
            "[kvm]\nusername = \"{}\"\nprivate_key_file = \"id_ed25519\"\n\
             [nut]\nusername = \"admin\"\npassword = \"adminpw\"\n\
             [bmc]\nusername = \"admin\"\npassword = \"{BMC_PASSWORD}\"\n\
             [bmc-stale]\nusername = \"admin\"\npassword = \"an-old-password\"\n",
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
    let pin = upsvisor_bmc::Thumbprint::of_der(&redfish.cert_der).to_string();
    let cfg = format!(
        r#"
version = 1
armed = true
[api]
token_file = "token"
[credentials]
file = "credentials.toml"
[poller]
period_s = 2
on_battery_period_s = 1
host_deadline_s = 5
status_interval_s = 1
[policy]
on_battery_for_s = 0
runtime_below_s = 0
debounce_s = 1
stable_for_s = 2
[sequencer]
default_timeout_s = 15
shutdown_hosts = true
host_down_wait_s = 20
host_down_deadline_s = 60
# The backup server's BMC refuses: give it up after a minute, not 15, so
# the episode ends and the live host test below may start.
restore_host_wait_s = 60
# nutdrv_qx takes 12..600 s (ups.delay.shutdown's range).
final_action = "shutdown_return"
final_delay_s = 12
margin_s = 10
[[device]]
id = "ups1"
kind = "nut"
address = "127.0.0.1:{nut_port}"
ups = "ups1"
credentials = "nut"
# `admin` may SET and INSTCMD but is no upsmon account.
nut_login = false
[[device.outlet]]
id = "main"
hosts = ["kvm1", "nas", "backup"]
[[host]]
id = "nas"
transport = "ssh-server"
address = "127.0.0.1:{nas_port}"
credentials = "kvm"
host_key = "[127.0.0.1]:{nas_port} {hostpub}"
shutdown_command = ["nas-poweroff", "now"]
after = ["kvm1"]
# ipmi_sim offers cipher suite 3 (SHA-1 forms), not 17.
power_on = {{ method = "ipmi", address = "127.0.0.1", port = {ipmi_port}, credentials = "bmc", cipher_suite = 3, timeout_s = 20 }}
# A backup server whose BMC password was changed and not here: its
# power-on is refused (auth), which must hold no other host.
[[host]]
id = "backup"
transport = "ssh-server"
address = "127.0.0.1:{backup_port}"
credentials = "kvm"
host_key = "[127.0.0.1]:{backup_port} {hostpub}"
shutdown_command = ["nas-poweroff", "backup"]
power_on = {{ method = "redfish", url = "{rf_url}", system_id = "{BACKUP_SYSTEM}", credentials = "bmc-stale", tls_thumbprint = "{pin}", timeout_s = 20 }}
[[host]]
id = "kvm1"
transport = "ssh-libvirt"
address = "127.0.0.1:{kvm1_port}"
credentials = "kvm"
host_key = "[127.0.0.1]:{kvm1_port} {hostpub}"
libvirt_uri = "{uri}"
power_on = {{ method = "redfish", url = "{rf_url}", system_id = "{KVM1_SYSTEM}", credentials = "bmc", tls_thumbprint = "{pin}", timeout_s = 20 }}
"#,
        nut_port = nut.port,
        nas_port = nas_link.port,
        kvm1_port = kvm1_link.port,
        backup_port = backup_link.port,
        hostpub = sshd.host_pub,
        uri = lv.uri,
        ipmi_port = ipmi.port,
        rf_url = redfish.url,
    );
    let cfg_path = d.join("upsvisord.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let token = d.join("token");
    common::write(&token, API_TOKEN, 0o600);

    // Preflight: `check` probes both BMCs (harmless reads) and the UPS.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_upsvisord"))
        .args(["check", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stdout);
    // A Megatec UPS reports no runtime, so the plan's fit is unknown, and
    // unknown is not "fits": that item fails. So does the backup server's
    // BMC probe (a refused password), naming the host and the method.
    let fails: Vec<&str> = t.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 2, "{t}");
    assert!(
        fails
            .iter()
            .any(|l| l.contains("no device reported a runtime")),
        "{t}"
    );
    assert!(
        fails
            .iter()
            .any(|l| l.contains("power-on backup") && l.contains("backup (Redfish https://")),
        "{t}"
    );
    assert_eq!(o.status.code(), Some(1), "{t}");
    for (item, method) in [
        ("power-on nas ", "IPMI lanplus"),
        ("power-on kvm1 ", "Redfish https://"),
    ] {
        assert!(
            t.lines()
                .any(|l| l.starts_with("OK") && l.contains(item) && l.contains(method)),
            "{item}: {t}"
        );
    }
    assert!(
        !t.contains(BMC_PASSWORD) && !t.contains("an-old-password"),
        "{t}"
    );

    let audit = d.join("audit.jsonl");
    let (daemon, base) = start_daemon(&cfg_path, &audit);
    wait("upsd on line and the VM listed", 60, || {
        get(&format!("{base}/api/power"))["devices"]["ups1"]["last"]["tokens"]
            == serde_json::json!(["OL"])
            && vm_power(&base, "test") == "powered_on"
    });

    // Each host answers only while its BMC says it is on; a shutdown the
    // shim records halts it (its BMC's power goes off a moment later).
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let (mut kvm1_up, mut nas_up) = (true, true);
            // Shutdowns seen so far, per host: each new one halts it.
            let (mut kvm1_halted, mut nas_halted, mut backup_halted) = (0, 0, 0);
            while !stop.load(Ordering::SeqCst) {
                let calls = sshd.calls();
                let called = |c: &str| calls.lines().filter(|l| l.trim() == c).count();
                if called("systemctl poweroff") > kvm1_halted {
                    kvm1_halted = called("systemctl poweroff");
                    std::thread::sleep(Duration::from_millis(500));
                    redfish.lv.virsh(&["destroy", "kvm1"]);
                }
                if called("nas-poweroff now") > nas_halted {
                    nas_halted = called("nas-poweroff now");
                    std::thread::sleep(Duration::from_millis(500));
                    ipmi.set_power(false);
                }
                if called("nas-poweroff backup") > backup_halted {
                    backup_halted = called("nas-poweroff backup");
                    std::thread::sleep(Duration::from_millis(500));
                    redfish.lv.virsh(&["destroy", "backup"]);
                    backup_link.blip();
                }
                let k = redfish.lv.domstate("kvm1") == "running";
                if k != kvm1_up {
                    if k {
                        kvm1_link.recover()
                    } else {
                        kvm1_link.blip()
                    }
                    kvm1_up = k;
                }
                let n = ipmi.power_file() == "1";
                if n != nas_up {
                    if n {
                        nas_link.recover()
                    } else {
                        nas_link.blip()
                    }
                    nas_up = n;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            outage_and_return(&base, &audit, &ups, &redfish, &ipmi);
            live_host_test(&base, &audit, &token, &redfish);
        }));
        stop.store(true, Ordering::SeqCst);
        if let Err(p) = result {
            eprintln!("emulator log:\n{}", redfish.log());
            eprintln!("power: {}", get(&format!("{base}/api/power")));
            eprintln!("status: {}", get(&format!("{base}/api/status")));
            std::panic::resume_unwind(p);
        }
    });
    drop(daemon);
}

/// With mains on line again, an operator's live test of kvm1 (`upsvisord
/// test --host kvm1 --live`): its VM stops, kvm1 shuts down, it is powered
/// on over Redfish and its VM starts again; the NAS, the backup server and
/// the UPS get nothing.
fn live_host_test(
    base: &str,
    audit: &std::path::Path,
    token: &std::path::Path,
    redfish: &RedfishEmulator,
) {
    wait("the outage's episode ended and mains stable", 120, || {
        audit_lines(audit)
            .iter()
            .any(|v| is(v, "/what/audit", "episode_ended"))
            && get(&format!("{base}/api/power"))["devices"]["ups1"]["mains_stable"] == true
    });
    let before = audit_lines(audit).len();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_upsvisord"))
        .args([
            "test",
            "--url",
            base,
            "--host",
            "kvm1",
            "--live",
            "--token-file",
        ])
        .arg(token)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("live test of host kvm1 started"), "{out}");
    wait("kvm1 shut down by the test", 120, || {
        redfish.lv.domstate("kvm1") == "shut off"
    });
    wait("kvm1 powered on over Redfish again", 120, || {
        redfish.lv.domstate("kvm1") == "running"
    });
    wait("the test's episode ended", 120, || {
        audit_lines(audit)[before..]
            .iter()
            .any(|v| is(v, "/what/audit", "episode_ended"))
    });
    let lines = audit_lines(audit);
    let test: Vec<&Value> = lines[before..].iter().collect();
    let ended = test
        .iter()
        .find(|v| is(v, "/what/audit", "episode_ended"))
        .unwrap();
    assert!(
        ended["what"]["outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("restored: 1 of 1")),
        "{ended}"
    );
    assert_eq!(vm_power(base, "test"), "powered_on");
    let issued: Vec<String> = test
        .iter()
        .filter(|v| is(v, "/what/audit", "issued"))
        .map(|v| {
            format!(
                "{} {}",
                v.pointer("/what/cmd/op")
                    .and_then(Value::as_str)
                    .unwrap_or("?"),
                v.pointer("/what/cmd/name")
                    .or_else(|| v.pointer("/what/cmd/host"))
                    .or_else(|| v.pointer("/what/cmd/device"))
                    .and_then(Value::as_str)
                    .unwrap_or("?")
            )
        })
        .collect();
    assert_eq!(
        issued,
        [
            "shutdown_guest test",
            "shutdown kvm1",
            "power_on kvm1",
            "power_on test"
        ],
        "kvm1 and its VM only, in order: {test:?}"
    );
}

fn outage_and_return(
    base: &str,
    audit: &std::path::Path,
    ups: &MegatecUps,
    redfish: &RedfishEmulator,
    ipmi: &IpmiSim,
) {
    ups.on_battery(true);
    wait("shutdown-with-return sent to the UPS", 120, || {
        ups.received().iter().any(|r| r.starts_with("S."))
    });
    let lines = audit_lines(audit);
    let vm_stop = lines
        .iter()
        .position(|v| is(v, "/what/audit", "issued") && is(v, "/what/cmd/kind", "vm"))
        .unwrap_or_else(|| panic!("no VM command: {lines:?}"));
    let kvm1_down = host_cmd(&lines, "issued", "shutdown", "kvm1").expect("kvm1 shut down");
    let nas_down = host_cmd(&lines, "issued", "shutdown", "nas").expect("nas shut down");
    let ret = lines
        .iter()
        .position(|v| {
            is(v, "/what/audit", "issued")
                && is(v, "/what/cmd/kind", "device")
                && v.pointer("/what/cmd/cmd")
                    .is_some_and(|c| c.to_string().contains("shutdown_return"))
        })
        .unwrap_or_else(|| panic!("no shutdown_return in {lines:?}"));
    assert!(
        vm_stop < kvm1_down && kvm1_down < nas_down && nas_down < ret,
        "VMs, then kvm1, then the NAS after it, then the UPS: {lines:?}"
    );
    assert_eq!(vm_power(base, "test"), "powered_off");
    // The driver turned the delay into Megatec's minutes (.2 = 12 s); with
    // its `ondelay` 0 there is no R part: back as soon as mains is.
    assert!(
        ups.received().iter().any(|r| r == "S.2"),
        "{:?}",
        ups.received()
    );
    assert_eq!(redfish.lv.domstate("kvm1"), "shut off", "kvm1 halted");
    assert_eq!(ipmi.power_file(), "0", "the NAS halted");

    ups.on_line();
    // Storage first: the NAS (which shuts down after kvm1) is powered on
    // before kvm1, whose power-on waits until the NAS answers.
    wait("the NAS powered on over IPMI", 120, || {
        ipmi.events().contains("power 1")
    });
    wait("kvm1 powered on over Redfish", 120, || {
        redfish.lv.domstate("kvm1") == "running"
    });
    wait("the VM back on kvm1", 120, || {
        vm_power(base, "test") == "powered_on"
    });
    let lines = audit_lines(audit);
    // The backup server's BMC refused: audited with the host and the
    // method, asked once, and it held neither kvm1's VM nor the NAS.
    let refusals: Vec<&Value> = lines
        .iter()
        .filter(|v| {
            is(v, "/what/audit", "completed")
                && is(v, "/what/cmd/op", "power_on")
                && is(v, "/what/cmd/host", "backup")
        })
        .collect();
    assert_eq!(refusals.len(), 1, "{lines:?}");
    let err = refusals[0]["what"]["error"].to_string();
    assert!(err.contains("backup (Redfish https://127.0.0.1:"), "{err}");
    assert_eq!(redfish.lv.domstate("backup"), "shut off");
    for host in ["kvm1", "nas"] {
        assert!(
            host_cmd(&lines, "completed", "power_on", host).is_some(),
            "{host}'s power-on audited as completed: {lines:?}"
        );
    }
    let nas_on = host_cmd(&lines, "issued", "power_on", "nas").expect("nas powered on");
    let kvm1_on = host_cmd(&lines, "issued", "power_on", "kvm1").expect("kvm1 powered on");
    assert!(
        nas_on < kvm1_on,
        "the NAS powered on before the hypervisor using it: {lines:?}"
    );
    assert!(
        lines.iter().any(|v| v["what"]["text"].as_str().is_some_and(
            |t| t == "kvm1 is powered on once nas is back (nas shuts down after kvm1)"
        )),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|v| v["what"]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("kvm1 does not answer: powering it on out of band"))),
        "{lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|v| v.to_string().contains(BMC_PASSWORD)
                || v.to_string().contains("an-old-password")),
        "no BMC password in the audit"
    );
}
