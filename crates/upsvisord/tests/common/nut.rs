//! Shared test helpers: a upsd + dummy-ups in a temp dir, the daemon as a
//! process, and small HTTP helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use upsvisor_testkit::KillOnDrop;
#[allow(unused_imports)] // each test binary uses its own subset
pub use upsvisor_testkit::nut::{Nut, dev, nut_cmd, rewrite, start_nut};

pub fn get(url: &str) -> Value {
    ureq::get(url).call().unwrap().into_json().unwrap()
}

pub fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    eprintln!("waiting for: {what}");
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A VM's power state by name in `/api/vms` (`""` when absent or the
/// daemon does not answer).
pub fn vm_power(base: &str, name: &str) -> String {
    ureq::get(&format!("{base}/api/vms"))
        .call()
        .ok()
        .and_then(|r| r.into_json::<Value>().ok())
        .and_then(|v| {
            v["vms"]
                .as_array()?
                .iter()
                .find(|v| v["name"] == name)
                .map(|v| v["power"].as_str().unwrap_or("").to_string())
        })
        .unwrap_or_default()
}

pub fn vms_on(base: &str) -> usize {
    get(&format!("{base}/api/vms"))["vms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["power"] == "powered_on")
        .count()
}

/// `upsvisord run --config cfg` on 127.0.0.1:0 with an audit log; returns
/// the process and its base URL.
pub fn start_daemon(cfg: &Path, audit: &Path) -> (KillOnDrop, String) {
    super::run_daemon(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
        ],
        Stdio::inherit(),
    )
}

pub fn audit_lines(audit: &Path) -> Vec<Value> {
    std::fs::read_to_string(audit)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect()
}

/// The sections after the top-level keys of a quick config: 1-2 s polls and
/// reads, LB triggers, 2 s of stable mains, guests given 10 s, hosts left
/// up and no device command (nothing on loopback powers a simulated host
/// back on); the upsd at `port` (its UPS `ups1`) feeding `hosts`, each a
/// simulated host.
pub fn fast_config(port: u16, hosts: &[&str]) -> String {
    let list = hosts
        .iter()
        .map(|h| format!("\"{h}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut c = format!(
        r#"[poller]
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
hosts = [{list}]
"#
    );
    for h in hosts {
        c.push_str(&format!(
            "[[host]]\nid = \"{h}\"\ntransport = \"sim\"\naddress = \"{h}.lab\"\n"
        ));
    }
    c
}
