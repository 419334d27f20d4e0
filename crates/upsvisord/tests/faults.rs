//! Fault injection against real peers on loopback (issue 16): the daemon is
//! killed with SIGKILL at random moments of real outages and restores, and
//! restarted at once from its journal, as systemd's `Restart=always` would.
//! Power: NUT `upsd` + `dummy-ups`; host: a libvirt test-driver domain over
//! a real OpenSSH `sshd` (host power goes to the harness's `systemctl`
//! shim). Then the NUT driver is stopped (SIGSTOP: `DATA-STALE`) and upsd
//! killed and restarted while the daemon runs.
//!
//! Figures are printed as `FIGURE name value` lines (collected into
//! docs/RELIABILITY.md): restarts, commands sent twice (must be 0), time
//! from restart to the next command.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant as StdInstant, SystemTime, UNIX_EPOCH};

use common::nut::{audit_lines, dev, get, rewrite, start_daemon, start_nut, vm_power, wait};
use common::ssh::{Libvirtd, Sshd};
use serde_json::Value;
use upsvisor_testkit::TempDir;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// xorshift64*: the kill moments, from a seed printed for replay.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// `(episode, kind, op, target)` of every `issued` audit line, with its
/// time (unix ms).
fn issued(audit: &Path) -> Vec<((u64, String, String, String), u64)> {
    audit_lines(audit)
        .iter()
        .filter(|v| v.pointer("/what/audit") == Some(&Value::from("issued")))
        .map(|v| {
            let cmd = &v["what"]["cmd"];
            let target = cmd
                .get("vm")
                .or_else(|| cmd.get("host"))
                .or_else(|| cmd.get("device"))
                .map(|t| t.to_string())
                .unwrap_or_default();
            (
                (
                    v["episode"].as_u64().unwrap_or(0),
                    cmd["kind"].as_str().unwrap_or("").to_owned(),
                    cmd["op"].as_str().unwrap_or("").to_owned(),
                    target,
                ),
                v["at_ms"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn kill_9_at_random_moments_never_sends_twice_and_resumes_at_once() {
    let Some(mut sshd) = Sshd::start() else {
        return;
    };
    let Some(lv) = Libvirtd::start() else { return };
    let dir = TempDir::new("upsvisord-faults");
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
journal = "journal.json"
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
host_down_wait_s = 3
host_down_deadline_s = 4
final_action = "none"
margin_s = 10
[[device]]
id = "ups1"
kind = "nut"
address = "127.0.0.1:{port}"
ups = "ups1"
[[device.outlet]]
id = "main"
hosts = ["kvm1"]
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
    let (mut daemon, mut base) = start_daemon(&cfg_path, &audit);
    wait("upsd ready and the VM listed", 30, || {
        vm_power(&base, "test") == "powered_on"
    });

    let seed = std::env::var("UPSVISOR_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| unix_ms() | 1);
    println!("UPSVISOR_FAULT_SEED={seed}");
    let mut rng = Rng(seed);
    let calls = sshd.state().join("calls.log");
    let mut restarts: Vec<u64> = Vec::new();
    let mut sshd_restarts = 0;
    let mut cycles = 0;
    let t0 = StdInstant::now();
    // Kills at random moments until `done`, restarting at once each time.
    let mut kill_until = |done: &dyn Fn(&str) -> bool,
                          daemon: &mut upsvisor_testkit::KillOnDrop,
                          base: &mut String,
                          restarts: &mut Vec<u64>| {
        let start = StdInstant::now();
        loop {
            let pause = 300 + rng.below(3700);
            std::thread::sleep(Duration::from_millis(pause));
            if done(base) {
                return;
            }
            if start.elapsed() > Duration::from_secs(120) {
                let power = ureq::get(&format!("{base}/api/power"))
                    .call()
                    .ok()
                    .and_then(|r| r.into_string().ok());
                let status = ureq::get(&format!("{base}/api/status"))
                    .call()
                    .ok()
                    .and_then(|r| r.into_string().ok());
                panic!(
                    "no progress in 120 s across restarts (seed {seed})\npower: {power:?}\nstatus: {status:?}"
                );
            }
            if rng.below(5) == 0 {
                // The host's sshd killed with every session (a command in
                // flight fails; the daemon must retry, not lose track).
                sshd.restart();
                sshd_restarts += 1;
                continue;
            }
            // SIGKILL: no chance to flush or say goodbye.
            daemon.0.kill().unwrap();
            let _ = daemon.0.wait();
            let (d2, b2) = start_daemon(&cfg_path, &audit);
            *daemon = d2;
            *base = b2;
            restarts.push(unix_ms());
        }
    };
    while restarts.len() < 50 && cycles < 24 {
        cycles += 1;
        // This outage's host poweroff, as the host saw it (the audit file
        // is written after each engine slice, so a SIGKILL can lose its
        // last lines: see docs/RELIABILITY.md).
        let poweroffs_in = |p: &Path| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("systemctl") && l.contains("poweroff"))
                .count()
        };
        let before = poweroffs_in(&calls);
        rewrite(d, &dev("OB DISCHRG LB", 20));
        let c = calls.clone();
        let done_down = move |_: &str| poweroffs_in(&c) > before;
        kill_until(&done_down, &mut daemon, &mut base, &mut restarts);
        rewrite(d, &dev("OL CHRG", 90));
        // The base URL changes with every restart: read the current one.
        let done_up = |b: &str| vm_power(b, "test") == "powered_on";
        kill_until(&done_up, &mut daemon, &mut base, &mut restarts);
        // The restarted daemon's base URL changes; read it fresh.
        wait("VM back on", 60, || vm_power(&base, "test") == "powered_on");
    }

    // Sent twice: a command issued again within its episode although its
    // last sending did not fail (completed fine, or was in flight when the
    // daemon died and so must be taken as delivered). A retry after a failed
    // completion (sshd killed mid-command) is legitimate.
    let all = issued(&audit);
    let mut state: BTreeMap<(u64, String, String, String), &str> = BTreeMap::new();
    let mut twice = Vec::new();
    let mut retries = 0;
    for v in audit_lines(&audit) {
        let what = v
            .pointer("/what/audit")
            .and_then(Value::as_str)
            .unwrap_or("");
        if what != "issued" && what != "completed" {
            continue;
        }
        let cmd = &v["what"]["cmd"];
        let key = (
            v["episode"].as_u64().unwrap_or(0),
            cmd["kind"].as_str().unwrap_or("").to_owned(),
            cmd["op"].as_str().unwrap_or("").to_owned(),
            cmd.get("vm")
                .or_else(|| cmd.get("host"))
                .or_else(|| cmd.get("device"))
                .map(|t| t.to_string())
                .unwrap_or_default(),
        );
        if what == "issued" {
            match state.get(&key).copied() {
                Some("failed") => retries += 1,
                Some(_) => twice.push(key.clone()),
                None => {}
            }
            state.insert(key, "issued");
        } else {
            let failed = v.pointer("/what/error").is_some_and(|e| !e.is_null());
            state.insert(key, if failed { "failed" } else { "ok" });
        }
    }
    // Host side, ground truth: the shim's poweroff calls, one per cycle.
    let poweroffs = sshd
        .calls()
        .lines()
        .filter(|l| l.contains("systemctl") && l.contains("poweroff"))
        .count();
    // Time from each restart to the next command, when one followed before
    // the next restart.
    let mut delays: Vec<u64> = Vec::new();
    for (i, r) in restarts.iter().enumerate() {
        let next_restart = restarts.get(i + 1).copied().unwrap_or(u64::MAX);
        if let Some(at) = all
            .iter()
            .map(|(_, at)| *at)
            .filter(|at| *at >= *r && *at < next_restart)
            .min()
        {
            delays.push(at - r);
        }
    }
    delays.sort_unstable();
    let median = delays.get(delays.len() / 2).copied().unwrap_or(0);
    let max = delays.last().copied().unwrap_or(0);
    println!("FIGURE restarts {}", restarts.len());
    println!("FIGURE cycles {cycles}");
    println!("FIGURE commands_issued {}", all.len());
    println!("FIGURE commands_sent_twice {}", twice.len());
    println!("FIGURE sshd_restarts {sshd_restarts} (retries after a failed command: {retries})");
    println!("FIGURE host_poweroffs {poweroffs} (cycles {cycles})");
    println!(
        "FIGURE restart_to_next_command_ms median {median} max {max} (n={})",
        delays.len()
    );
    println!("FIGURE wall_s {}", t0.elapsed().as_secs());
    assert!(restarts.len() >= 50, "{} restarts", restarts.len());
    assert!(twice.is_empty(), "sent twice (seed {seed}): {twice:?}");
    // One per outage, more only where sshd died under one (retried).
    assert!(
        poweroffs >= cycles,
        "a host poweroff per outage: {poweroffs}"
    );
    // Before issue 16 a restart stalled for as long as the old process had
    // been up when the episode began; now the next command follows within
    // the polls it needs (a fresh table, the host seen).
    assert!(max < 15_000, "restart to next command: max {max} ms");
}

/// The UPS's data goes stale (the NUT driver is stopped: `DATA-STALE`), and
/// upsd is killed and restarted, while the daemon runs on line: neither is
/// read as a power failure, and the daemon reads the UPS again once it is
/// back.
#[test]
fn stale_driver_and_restarted_upsd_are_not_power_failures() {
    let dir = TempDir::new("upsvisord-faults-nut");
    let d = dir.path();
    let Some(mut nut) = start_nut(d) else { return };
    let port = nut.port;
    let cfg = format!(
        r#"
version = 1
armed = true
[poller]
period_s = 2
on_battery_period_s = 1
host_deadline_s = 5
status_interval_s = 1
[policy]
on_battery_for_s = 0
debounce_s = 1
stable_for_s = 2
[sequencer]
shutdown_hosts = false
final_action = "none"
[[device]]
id = "ups1"
kind = "nut"
address = "127.0.0.1:{port}"
ups = "ups1"
[[device.outlet]]
id = "main"
hosts = ["kvm1"]
[[host]]
id = "kvm1"
transport = "sim"
address = "kvm1.lab"
"#
    );
    let cfg_path = d.join("upsvisord.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let audit = d.join("audit.jsonl");
    let (_daemon, base) = start_daemon(&cfg_path, &audit);
    let power = || get(&format!("{base}/api/power"))["devices"]["ups1"].clone();
    wait("on line", 20, || {
        power()["last"]["tokens"] == serde_json::json!(["OL"])
    });

    // SIGSTOP the driver: upsd answers DATA-STALE after its MAXAGE (15 s).
    let pid = nut.driver.0.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(Duration::from_secs(20));
    let p = power();
    assert_eq!(p["on_battery"], false, "stale data is not on battery: {p}");
    assert!(
        p["trigger"].is_null(),
        "stale data fires nothing while last seen on line: {p}"
    );
    assert!(
        std::process::Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );

    // Kill upsd and bring it back on the same port.
    nut.upsd.0.kill().unwrap();
    let _ = nut.upsd.0.wait();
    std::thread::sleep(Duration::from_secs(3));
    let p = power();
    assert_eq!(
        p["on_battery"], false,
        "an unreachable upsd is not on battery: {p}"
    );
    let upsd = ["/lib/nut/upsd", "/usr/lib/nut/upsd", "/usr/sbin/upsd"]
        .iter()
        .find(|p| Path::new(p).exists())
        .unwrap();
    nut.upsd =
        upsvisor_testkit::KillOnDrop(common::nut::nut_cmd(Path::new(upsd), d).spawn().unwrap());
    wait("read again after upsd restarted", 30, || {
        power()["last"]["tokens"] == serde_json::json!(["OL"])
            && power()["alerts"].as_array().is_none_or(Vec::is_empty)
    });
    // And a real failure after all that is still seen.
    rewrite(d, &dev("OB DISCHRG", 80));
    wait("on battery seen", 20, || power()["on_battery"] == true);
    assert!(
        !audit_lines(&audit)
            .iter()
            .any(|v| v.pointer("/what/audit") == Some(&Value::from("issued"))
                && v.pointer("/what/cmd/op") == Some(&Value::from("power_off"))),
        "no power-off came from the faults"
    );
}

/// Unmounts on drop.
struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// The state directory's filesystem is full (a 64 KiB tmpfs filled up):
/// journal writes fail, and protection goes on all the same; once there is
/// room again the journal is written.
#[test]
fn a_full_state_disk_does_not_stop_an_outage() {
    let dir = TempDir::new("upsvisord-faults-disk");
    let d = dir.path();
    let state = d.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
        .arg(&state)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        let msg = "cannot mount a small tmpfs for the state directory (needs root)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("SKIPPED (not CI): {msg}");
        return;
    }
    let _mount = Mount(state.clone());
    let Some(nut) = start_nut(d) else { return };
    let port = nut.port;
    let cfg = format!(
        r#"
version = 1
armed = true
journal = "state/journal.json"
[poller]
period_s = 2
on_battery_period_s = 1
host_deadline_s = 5
status_interval_s = 1
[policy]
on_battery_for_s = 0
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
hosts = ["kvm1"]
[[host]]
id = "kvm1"
transport = "sim"
address = "kvm1.lab"
"#
    );
    let cfg_path = d.join("upsvisord.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let audit = d.join("audit.jsonl");
    let (_daemon, base) = start_daemon(&cfg_path, &audit);
    wait("VMs on", 20, || common::nut::vms_on(&base) > 0);
    // Fill the state filesystem to the last byte.
    let filler = state.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = [0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let before = std::fs::read_to_string(state.join("journal.json")).unwrap_or_default();
    rewrite(d, &dev("OB DISCHRG LB", 20));
    wait("every VM shut down with the disk full", 60, || {
        common::nut::vms_on(&base) == 0
    });
    assert!(
        audit_lines(&audit)
            .iter()
            .any(|v| v.pointer("/what/audit") == Some(&Value::from("episode_started"))),
        "the episode started and was audited"
    );
    let during = std::fs::read_to_string(state.join("journal.json")).unwrap_or_default();
    assert_eq!(
        before, during,
        "nothing could be journaled while the disk was full"
    );
    // Room again: the next change is journaled.
    std::fs::remove_file(&filler).unwrap();
    rewrite(d, &dev("OL CHRG", 90));
    wait("the journal written once there is room", 60, || {
        std::fs::read_to_string(state.join("journal.json"))
            .is_ok_and(|j| j.contains("\"format\":2") && j != before)
    });
    wait("VMs restored", 60, || common::nut::vms_on(&base) > 0);
}
