//! End to end: the daemon with a real NUT `upsd` + `dummy-ups` (Debian
//! `nut-server`) and simulated hosts. The UPS goes on battery, then low
//! battery: every VM is shut down and the audit log records every command;
//! mains returns and the VMs are started again.
//!
//! The hosts stay up here (`shutdown_hosts = false`): nothing on loopback
//! can power a simulated host back on the way a UPS outlet does, so host
//! shutdown and the power-returns boot are covered by the simulated drill
//! (`tests/cli.rs`) instead.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use upsvisor_testkit::{KillOnDrop, TempDir, free_port, require_peer, wait_for_port};

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn nut_cmd(bin: &Path, dir: &Path) -> Command {
    let mut c = Command::new(bin);
    c.env("NUT_CONFPATH", dir)
        .env("NUT_STATEPATH", dir)
        .env("NUT_ALTPIDPATH", dir)
        .arg("-F")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if is_root() {
        c.args(["-u", "root"]);
    }
    c
}

fn dev(status: &str, charge: u32) -> String {
    format!(
        "ups.status: {status}\nbattery.charge: {charge}\nbattery.runtime: {}\nups.load: 20\n",
        charge * 30
    )
}

fn rewrite(dir: &Path, contents: &str) {
    // dummy-ups compares whole-second modification times.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(dir.join("ups1.dev"), contents).unwrap();
}

fn get(url: &str) -> Value {
    ureq::get(url).call().unwrap().into_json().unwrap()
}

fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn vms_on(base: &str) -> usize {
    get(&format!("{base}/api/vms"))["vms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["power"] == "powered_on")
        .count()
}

#[test]
fn outage_on_a_real_upsd() {
    let Some(upsd) = require_peer(
        &["/lib/nut/upsd", "/usr/lib/nut/upsd", "/usr/sbin/upsd"],
        "nut-server",
    ) else {
        return;
    };
    let Some(driver) = require_peer(
        &["/lib/nut/dummy-ups", "/usr/lib/nut/dummy-ups"],
        "nut-server",
    ) else {
        return;
    };
    let dir = TempDir::new("upsvisord-nut");
    let d = dir.path();
    let port = free_port();
    std::fs::write(d.join("ups1.dev"), dev("OL", 100)).unwrap();
    std::fs::write(
        d.join("ups.conf"),
        "[ups1]\n  driver = dummy-ups\n  port = ups1.dev\n  desc = \"e2e\"\n",
    )
    .unwrap();
    std::fs::write(d.join("upsd.conf"), format!("LISTEN 127.0.0.1 {port}\n")).unwrap();
    std::fs::write(
        d.join("upsd.users"),
        "[upsmon]\n  password = monpw\n  upsmon secondary\n",
    )
    .unwrap();
    let _driver = KillOnDrop(nut_cmd(&driver, d).args(["-a", "ups1"]).spawn().unwrap());
    let t0 = Instant::now();
    while !d.join("dummy-ups-ups1").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "dummy-ups did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _upsd = KillOnDrop(nut_cmd(&upsd, d).spawn().unwrap());
    wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(10)).unwrap();

    let cfg = format!(
        r#"
version = 1
[poller]
period_s = 2
on_battery_period_s = 1
host_deadline_s = 5
status_interval_s = 1
[policy]
on_battery_for_s = 0
runtime_below_s = 0
on_low_battery = true
debounce_s = 1
stable_for_s = 2
[sequencer]
default_timeout_s = 10
shutdown_hosts = false
final_action = "none"
margin_s = 10
[[device]]
id = "ups1"
kind = "nut"
address = "127.0.0.1:{port}"
ups = "ups1"
[[device.outlet]]
id = "main"
hosts = ["kvm1", "kvm2"]
[[host]]
id = "kvm1"
transport = "sim"
address = "kvm1.lab"
[[host]]
id = "kvm2"
transport = "sim"
address = "kvm2.lab"
"#
    );
    let cfg_path = d.join("upsvisord.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let audit = d.join("audit.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_upsvisord"))
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg_path)
        .arg("--audit-log")
        .arg(&audit)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _daemon = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("{line}"))
        .trim_end_matches('/')
        .to_string();

    wait("8 VMs on", 20, || vms_on(&base) == 8);
    let power = |k: &str| get(&format!("{base}/api/power"))["devices"]["ups1"][k].clone();
    wait("upsd has the driver's data", 20, || {
        power("last")["tokens"] == serde_json::json!(["OL"])
    });
    assert_eq!(power("on_battery"), false);
    // `check` against the same peers first.
    let o = Command::new(env!("CARGO_BIN_EXE_upsvisord"))
        .args(["check", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("device ups1  OL"), "{t}");

    rewrite(d, &dev("OB DISCHRG", 80));
    wait("on battery", 20, || power("on_battery") == true);
    assert_eq!(vms_on(&base), 8, "on battery alone triggers nothing here");

    rewrite(d, &dev("OB DISCHRG LB", 20));
    wait("every VM off", 60, || vms_on(&base) == 0);
    let text = std::fs::read_to_string(&audit).unwrap();
    let issued: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.pointer("/what/audit") == Some(&Value::from("issued")))
        .collect();
    let shutdowns: std::collections::BTreeSet<&str> = issued
        .iter()
        .filter(|v| v.pointer("/what/cmd/op") == Some(&Value::from("shutdown_guest")))
        .filter_map(|v| v.pointer("/what/cmd/name").and_then(Value::as_str))
        .collect();
    assert_eq!(shutdowns.len(), 8, "{text}");
    assert!(
        text.contains("ups1: LowBattery"),
        "trigger recorded: {text}"
    );

    rewrite(d, &dev("OL CHRG", 90));
    wait("VMs restored", 60, || vms_on(&base) == 8);
    wait("episode ended", 30, || {
        std::fs::read_to_string(&audit)
            .unwrap()
            .contains("\"audit\":\"episode_ended\"")
    });
    let text = std::fs::read_to_string(&audit).unwrap();
    let power_ons = text
        .lines()
        .filter(|l| l.contains("\"issued\"") && l.contains("\"power_on\""))
        .count();
    assert_eq!(power_ons, 8, "{text}");
}
