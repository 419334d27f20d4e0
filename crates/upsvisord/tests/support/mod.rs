//! Helpers shared by the daemon's end-to-end tests: a real `upsd` with
//! `dummy-ups` in a temp dir, the daemon itself, and its HTTP API.
#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use upsvisor_testkit::{KillOnDrop, free_port, require_peer, wait_for_port};

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

/// A `.dev` file body for dummy-ups.
pub fn dev(status: &str, charge: u32) -> String {
    format!(
        "ups.status: {status}\nbattery.charge: {charge}\nbattery.runtime: {}\nups.load: 20\n",
        charge * 30
    )
}

/// Rewrites `ups1.dev` (dummy-ups compares whole-second modification times).
pub fn rewrite(dir: &Path, contents: &str) {
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(dir.join("ups1.dev"), contents).unwrap();
}

/// A running upsd serving `ups1` from `dir/ups1.dev`.
pub struct Upsd {
    pub port: u16,
    _driver: KillOnDrop,
    _upsd: KillOnDrop,
}

/// Starts dummy-ups and upsd in `dir`; `None` when NUT is missing (not CI).
pub fn start_upsd(dir: &Path) -> Option<Upsd> {
    let upsd = require_peer(
        &["/lib/nut/upsd", "/usr/lib/nut/upsd", "/usr/sbin/upsd"],
        "nut-server",
    )?;
    let driver = require_peer(
        &["/lib/nut/dummy-ups", "/usr/lib/nut/dummy-ups"],
        "nut-server",
    )?;
    let port = free_port();
    std::fs::write(dir.join("ups1.dev"), dev("OL", 100)).unwrap();
    std::fs::write(
        dir.join("ups.conf"),
        "[ups1]\n  driver = dummy-ups\n  port = ups1.dev\n  desc = \"e2e\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("upsd.conf"), format!("LISTEN 127.0.0.1 {port}\n")).unwrap();
    std::fs::write(
        dir.join("upsd.users"),
        "[upsmon]\n  password = monpw\n  upsmon secondary\n",
    )
    .unwrap();
    let driver = KillOnDrop(nut_cmd(&driver, dir).args(["-a", "ups1"]).spawn().unwrap());
    let t0 = Instant::now();
    while !dir.join("dummy-ups-ups1").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "dummy-ups did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let upsd = KillOnDrop(nut_cmd(&upsd, dir).spawn().unwrap());
    wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(10)).unwrap();
    Some(Upsd {
        port,
        _driver: driver,
        _upsd: upsd,
    })
}

/// A running daemon and its API base URL.
pub struct Daemon {
    pub base: String,
    _child: KillOnDrop,
}

/// Starts `upsvisord run` on 127.0.0.1:0 with `config`, auditing to `audit`.
pub fn start_daemon(config: &Path, audit: &Path) -> Daemon {
    let mut child = Command::new(env!("CARGO_BIN_EXE_upsvisord"))
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--audit-log")
        .arg(audit)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("{line}"))
        .trim_end_matches('/')
        .to_string();
    Daemon {
        base,
        _child: child,
    }
}

/// GET a JSON document.
pub fn get(url: &str) -> Value {
    ureq::get(url).call().unwrap().into_json().unwrap()
}

/// Polls `f` every 250 ms until it holds or `secs` pass.
pub fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// VMs the daemon sees powered on.
pub fn vms_on(base: &str) -> usize {
    get(&format!("{base}/api/vms"))["vms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["power"] == "powered_on")
        .count()
}

/// Audit lines of kind `issued` from the JSON-lines audit log.
pub fn issued(audit: &Path) -> Vec<Value> {
    std::fs::read_to_string(audit)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.pointer("/what/audit") == Some(&Value::from("issued")))
        .collect()
}
