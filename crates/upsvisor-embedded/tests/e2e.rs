//! The firmware-sized binary against real peers: NUT's `upsd` + `dummy-ups`
//! and the govmomi vSphere simulator (harness/vcsim) as a vCenter.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(unexpected_cfgs)] // its `ureq` feature is the soap crate's
#[path = "../../upsvisor-soap/tests/common/mod.rs"]
mod vcsim;

use std::process::{Command, Output};

use upsvisor_testkit::TempDir;
use upsvisor_testkit::nut;

fn run(env: &[(&str, String)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_upsvisor-embedded"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run upsvisor-embedded")
}

/// A secret file as the binary requires it: mode 600.
fn write_secret(p: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(p, text).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn vcenter() -> Option<vcsim::Sim> {
    vcsim::Sim::start(&[
        "-mode=vpx",
        "-clusters=1",
        "-cluster-hosts=3",
        "-standalone=1",
        "-vms=3",
        "-seed=11",
    ])
}

#[test]
fn polls_a_vcenter_and_reads_the_ups_without_a_runtime() {
    let Some(sim) = vcenter() else { return };
    let d = TempDir::new("embedded-e2e");
    let Some(ups) = nut::start_nut(d.path()) else {
        return;
    };
    ups.wait_status("OL", std::time::Duration::from_secs(15));
    let truth = sim.truth();
    let pw = d.path().join("password");
    write_secret(&pw, "pass\n");
    let names: Vec<&str> = truth.hosts.iter().map(|h| h.name.as_str()).collect();
    let vms = truth.hosts.iter().map(|h| h.vms.len()).sum::<usize>();
    let on = truth
        .hosts
        .iter()
        .flat_map(|h| &h.vms)
        .filter(|v| v.power_state == "poweredOn")
        .count();
    let base = vec![
        ("UPSVISOR_NUT", format!("127.0.0.1:{}", ups.port)),
        ("UPSVISOR_UPS", "ups1".to_owned()),
        ("UPSVISOR_VSPHERE_URL", sim.url.clone()),
        ("UPSVISOR_VSPHERE_USER", "user".to_owned()),
        (
            "UPSVISOR_VSPHERE_PASSWORD_FILE",
            pw.to_str().unwrap().to_owned(),
        ),
        ("UPSVISOR_VSPHERE_THUMBPRINT", sim.thumbprint.clone()),
        ("UPSVISOR_HOSTS", names.join(",")),
        ("UPSVISOR_CYCLES", "2".to_owned()),
        ("UPSVISOR_PERIOD_S", "1".to_owned()),
    ];
    let o = run(&base);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("disarmed"), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("cycle 2:"))
        .unwrap_or_else(|| panic!("no second cycle in {out}"));
    assert!(
        line.contains(&format!(
            "{} hosts (0 not fresh), {vms} VMs ({on} on); UPS: OL",
            names.len()
        )),
        "{line}\n{out}"
    );
    assert!(line.contains("charge 100%"), "{line}");

    // A refused login is not an empty estate: every host is reported not
    // fresh, and no VM is invented.
    let wrong = d.path().join("wrong");
    write_secret(&wrong, "nope\n");
    let mut env = base.clone();
    env.retain(|(k, _)| *k != "UPSVISOR_VSPHERE_PASSWORD_FILE");
    env.push((
        "UPSVISOR_VSPHERE_PASSWORD_FILE",
        wrong.to_str().unwrap().to_owned(),
    ));
    let o = run(&env);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains(&format!(
            "cycle 1: {n} hosts ({n} not fresh), 0 VMs (0 on)",
            n = names.len()
        )),
        "{out}"
    );
    assert!(!out.contains("nope") && !String::from_utf8_lossy(&o.stderr).contains("nope"));
    drop(ups);
}

#[test]
fn bad_settings_are_named_and_exit_2() {
    let o = run(&[("UPSVISOR_NUT", "no-port".to_owned())]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("UPSVISOR_NUT=\"no-port\" is not host:port"),
        "{err}"
    );
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("UPSVISOR_VSPHERE_URL is not set"), "{err}");
    let base = [
        ("UPSVISOR_VSPHERE_URL", "https://127.0.0.1:1/sdk".to_owned()),
        ("UPSVISOR_HOSTS", "h1".to_owned()),
    ];
    let with = |k: &'static str, v: &str| {
        let mut e = base.to_vec();
        e.retain(|(x, _)| *x != k);
        e.push((k, v.to_owned()));
        run(&e)
    };
    for (k, v, says) in [
        (
            "UPSVISOR_VSPHERE_URL",
            "http://10.0.0.1/sdk",
            "must start with https://",
        ),
        ("UPSVISOR_HOSTS", "h1,h1", "names `h1` twice"),
        ("UPSVISOR_PERIOD_S", "0", "at least 1"),
        ("UPSVISOR_ARMED", "maybe", "say 1/true/yes or 0/false/no"),
    ] {
        let o = with(k, v);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{k}={v}: {err}");
        assert!(err.contains(k) && err.contains(says), "{k}={v}: {err}");
    }
    // A password file others can read is refused, as upsvisord does.
    let d = TempDir::new("embedded-bad");
    let pw = d.path().join("pw");
    std::fs::write(&pw, "x").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut e = base.to_vec();
    e.push(("UPSVISOR_VSPHERE_USER", "u".to_owned()));
    e.push((
        "UPSVISOR_VSPHERE_PASSWORD_FILE",
        pw.to_str().unwrap().to_owned(),
    ));
    let o = run(&e);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("readable by others"), "{err}");
    let o = Command::new(env!("CARGO_BIN_EXE_upsvisor-embedded"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("UPSVISOR_VSPHERE_THUMBPRINT"));
}

/// The binary running in the background, its output lines collected as
/// they come (stdout and stderr, in arrival order per stream).
struct Running {
    child: upsvisor_testkit::KillOnDrop,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Running {
    fn start(env: &[(&str, String)]) -> Running {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut c = Command::new(env!("CARGO_BIN_EXE_upsvisor-embedded"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("start upsvisor-embedded");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [out, err] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for l in std::io::BufReader::new(stream).lines() {
                    let Ok(l) = l else { break };
                    lines.lock().unwrap().push(l);
                }
            });
        }
        Running {
            child: upsvisor_testkit::KillOnDrop(child),
            lines,
        }
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The `audit` lines so far, as JSON.
    fn audits(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.strip_prefix("audit "))
            .map(|j| serde_json::from_str(j).unwrap_or_else(|e| panic!("{j}: {e}")))
            .collect()
    }

    /// SIGKILL, as a watchdog or a crash ends it: nothing is flushed or
    /// saved on the way out.
    fn kill(mut self) -> String {
        self.child.0.kill().unwrap();
        self.child.0.wait().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        self.text()
    }
}

/// Waits up to `secs` for `cond`, polling every 250 ms; panics with
/// `what` and `ctx()` if it never holds.
fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool, ctx: impl Fn() -> String) {
    let t0 = std::time::Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(secs),
            "{what}: not within {secs} s\n{}",
            ctx()
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// Issue 18, part 7, with issue 16's restart safety: killed (SIGKILL) once
/// the episode has shut every VM down, and started again with the same
/// journal, the binary resumes that episode instead of starting a new one
/// on a powered-off estate: when mains is back it starts the VMs it shut
/// down (a new process without the journal would find them off and take
/// them as off by choice). Real peers: upsd + dummy-ups, and vcsim as a
/// vCenter whose hosts go dark when shut down.
#[test]
fn killed_mid_episode_it_resumes_from_the_journal_and_restores() {
    let Some(sim) = vcsim::Sim::start(&[
        "-mode=vpx",
        "-clusters=1",
        "-cluster-hosts=2",
        "-standalone=0",
        "-vms=2",
        "-randomize=false",
    ]) else {
        return;
    };
    let d = TempDir::new("embedded-restart");
    let Some(ups) = nut::start_nut(d.path()) else {
        return;
    };
    ups.wait_status("OL", std::time::Duration::from_secs(15));
    let truth = sim.truth();
    let on: Vec<String> = truth
        .hosts
        .iter()
        .flat_map(|h| &h.vms)
        .filter(|v| v.power_state == "poweredOn")
        .map(|v| v.instance_uuid.clone())
        .collect();
    assert!(on.len() >= 2, "{:?}", sim.ctl("/truth"));
    let power = |uuid: &str| sim.truth().vm(uuid).1.power_state.clone();
    let pw = d.path().join("password");
    write_secret(&pw, "pass\n");
    let journal = d.path().join("state").join("upsvisor.journal");
    std::fs::create_dir(journal.parent().unwrap()).unwrap();
    let names: Vec<&str> = truth.hosts.iter().map(|h| h.name.as_str()).collect();
    let env = vec![
        ("UPSVISOR_NUT", format!("127.0.0.1:{}", ups.port)),
        ("UPSVISOR_UPS", "ups1".to_owned()),
        ("UPSVISOR_VSPHERE_URL", sim.url.clone()),
        ("UPSVISOR_VSPHERE_USER", "user".to_owned()),
        (
            "UPSVISOR_VSPHERE_PASSWORD_FILE",
            pw.to_str().unwrap().to_owned(),
        ),
        ("UPSVISOR_VSPHERE_THUMBPRINT", sim.thumbprint.clone()),
        ("UPSVISOR_HOSTS", names.join(",")),
        ("UPSVISOR_PERIOD_S", "1".to_owned()),
        ("UPSVISOR_ARMED", "1".to_owned()),
        ("UPSVISOR_JOURNAL", journal.to_str().unwrap().to_owned()),
    ];

    let first = Running::start(&env);
    wait_until(
        60,
        "first process polls the estate",
        || first.text().contains("cycle 2:"),
        || first.text(),
    );
    assert!(
        !first.text().contains("no UPSVISOR_JOURNAL"),
        "{}",
        first.text()
    );
    // Mains fails and the battery is low: an episode at once (after the
    // 5 s debounce).
    nut::rewrite(d.path(), &nut::dev("OB LB", 20));
    // Killed once its audit says each VM's guest shutdown completed and
    // vCenter has them all off.
    let stopped = |a: &serde_json::Value, uuid: &str| {
        a["audit"] == "completed"
            && a["error"].is_null()
            && a["cmd"]["vm"] == uuid
            && a["cmd"]["op"] == "shutdown_guest"
    };
    wait_until(
        120,
        "the first process shuts every running VM down",
        || {
            let audits = first.audits();
            on.iter()
                .all(|u| audits.iter().any(|a| stopped(a, u)) && power(u) == "poweredOff")
        },
        || format!("{}\n{}", first.text(), sim.ctl("/truth")),
    );
    let episode = first
        .audits()
        .iter()
        .find(|a| stopped(a, &on[0]))
        .map(|a| a["episode"].clone())
        .unwrap();
    let before = first.kill();
    assert!(before.contains("\"audit\":\"episode_started\""), "{before}");
    let saved = std::fs::read_to_string(&journal).unwrap();
    assert!(
        saved.contains("\"episode\":{"),
        "an episode journaled: {saved}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&journal).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the journal names hosts and VMs");
    }

    // The watchdog starts it again, still on battery.
    let second = Running::start(&env);
    wait_until(
        30,
        "the second process reads the journal",
        || second.text().contains("journal: "),
        || second.text(),
    );
    assert!(
        second
            .text()
            .contains("journal: resumed the episode in progress"),
        "{}",
        second.text()
    );
    // The episode carries on: the hosts, emptied, are shut down (by
    // either process), go dark, and the episode reaches its end state
    // (the UPS command is refused: this NUT account may not send it).
    wait_until(
        240,
        "every host shut down and the episode down, waiting for mains",
        || {
            sim.truth().hosts.iter().all(|h| h.dark)
                && second.audits().iter().any(|a| {
                    a["audit"] == "phase" && a["phase"].as_str().unwrap_or("").starts_with("down")
                })
        },
        || {
            format!(
                "{before}\n-- restarted --\n{}\n{}",
                second.text(),
                sim.ctl("/truth")
            )
        },
    );
    // Mains is back; the hosts power up with it (as a BIOS set to
    // "power on after AC loss" does).
    nut::rewrite(d.path(), &nut::dev("OL", 100));
    for h in &truth.hosts {
        sim.ctl(&format!("/ctl/host-power?host={}&on=1", h.moref));
    }
    // After 60 s of stable mains the episode restores what it stopped:
    // its audit says each VM's power-on completed, and vCenter has them on.
    let restored = |a: &serde_json::Value, uuid: &str| {
        a["audit"] == "completed"
            && a["error"].is_null()
            && a["episode"] == episode
            && a["cmd"]["vm"] == uuid
            && a["cmd"]["op"] == "power_on"
    };
    wait_until(
        240,
        "the VMs the first process shut down are started again by its episode",
        || {
            let audits = second.audits();
            on.iter()
                .all(|u| audits.iter().any(|a| restored(a, u)) && power(u) == "poweredOn")
        },
        || {
            format!(
                "{before}\n-- restarted --\n{}\n{}",
                second.text(),
                sim.ctl("/truth")
            )
        },
    );
    let after = second.kill();
    // One episode across both processes: the second started none of its
    // own (a fresh start on battery would have, on a powered-off estate).
    assert!(!after.contains("\"audit\":\"episode_started\""), "{after}");
    drop(ups);
}

/// `UPSVISOR_JOURNAL` is checked before anything runs (exit 2, named);
/// a journal the engine cannot read is set aside and reported on stderr
/// while the binary goes on; no journal at all is warned about.
#[test]
fn journal_settings_are_checked_and_an_unreadable_journal_is_reported() {
    use std::os::unix::fs::PermissionsExt;
    let d = TempDir::new("embedded-journal");
    let pw = d.path().join("pw");
    write_secret(&pw, "x\n");
    // Nothing answers on port 1: one cycle, every host not fresh.
    let base = vec![
        ("UPSVISOR_VSPHERE_URL", "https://127.0.0.1:1/sdk".to_owned()),
        ("UPSVISOR_HOSTS", "h1".to_owned()),
        ("UPSVISOR_VSPHERE_USER", "u".to_owned()),
        (
            "UPSVISOR_VSPHERE_PASSWORD_FILE",
            pw.to_str().unwrap().to_owned(),
        ),
        ("UPSVISOR_NUT", "127.0.0.1:1".to_owned()),
        ("UPSVISOR_CYCLES", "1".to_owned()),
    ];
    let with = |journal: &std::path::Path| {
        let mut e = base.clone();
        e.push(("UPSVISOR_JOURNAL", journal.to_str().unwrap().to_owned()));
        run(&e)
    };
    let o = run(&base);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("WARNING: no UPSVISOR_JOURNAL"), "{err}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("journal none"));

    let mut bad = vec![
        (d.path().to_path_buf(), "is a directory"),
        (d.path().join("no/such/dir/j.json"), "does not exist"),
        (
            std::path::PathBuf::from("/proc/self/j.json"),
            "cannot write in /proc/self",
        ),
    ];
    if upsvisor_testkit::is_root() {
        // Someone else's file is refused, as upsvisord refuses it.
        let theirs = d.path().join("theirs.json");
        std::fs::write(&theirs, "{}").unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        bad.push((theirs, "owned by uid 65534"));
    } else {
        let ro = d.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).unwrap();
        bad.push((ro.join("j.json"), "cannot write in"));
    }
    for (path, says) in &bad {
        let o = with(path);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{}: {err}", path.display());
        assert!(
            err.contains("UPSVISOR_JOURNAL") && err.contains(says),
            "{}: {err}",
            path.display()
        );
    }

    // Garbage, readable by others: tightened, set aside (kept), reported,
    // and journaling starts afresh.
    let j = d.path().join("upsvisor.journal");
    std::fs::write(&j, "\u{0}not json").unwrap();
    std::fs::set_permissions(&j, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = with(&j);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("mode 644 tightened to 600"), "{err}");
    assert!(
        err.contains("CRITICAL: journal unreadable") && err.contains("set aside as"),
        "{err}"
    );
    assert!(!err.contains("no UPSVISOR_JOURNAL"), "{err}");
    let kept: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("upsvisor.journal.corrupt-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read_to_string(&kept[0]).unwrap(), "\u{0}not json");
    let fresh = std::fs::read_to_string(&j).unwrap();
    assert!(fresh.contains("\"format\":2"), "{fresh}");
    let mode = std::fs::metadata(&j).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Started again on that journal: read, nothing set aside.
    let o = with(&j);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && !err.contains("CRITICAL"), "{err}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("journal: resumed with no episode in progress"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = Command::new(env!("CARGO_BIN_EXE_upsvisor-embedded"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("UPSVISOR_JOURNAL"));
}
