//! `[[hook]]` end to end (issue 15, item 3), against real peers: power from
//! a NUT `upsd` + `dummy-ups`, local hooks as real programs (a script that
//! records its environment at each point), and remote hooks over a real
//! OpenSSH `sshd` (the host's own SSH transport, host key pinned).
//! A blocking hook that fails holds its host until the forced deadline; a
//! hook still running at its deadline is a failure and is killed.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::nut::{audit_lines, dev, fast_config, get, rewrite, start_daemon, start_nut, wait};
use common::write;
use serde_json::Value;
use upsvisor_testkit::TempDir;

/// A hook script: appends one line of its environment to `out`, then
/// exits with its first argument (default 0).
fn recorder(d: &Path, out: &Path) -> PathBuf {
    let p = d.join("record.sh");
    write(
        &p,
        &format!(
            "#!/bin/sh\nprintf '%s|%s|%s|%s|%s|%s|%s|%s|%s\\n' \"$UPSVISOR_HOOK\" \"$UPSVISOR_HOOK_POINT\" \"$NOTIFYTYPE\" \"$UPSNAME\" \"$UPSVISOR_GROUP\" \"$UPSVISOR_HOST\" \"$UPSVISOR_EPISODE\" \"$UPSVISOR_HOOK_DEADLINE_S\" \"${{HOME-unset}}\" >> {}\nexit \"${{1:-0}}\"\n",
            out.display()
        ),
        0o755,
    );
    p
}

fn lines_of(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn line_for(out: &Path, hook: &str) -> Option<String> {
    lines_of(out)
        .into_iter()
        .find(|l| l.starts_with(&format!("{hook}|")))
}

/// The position of the first audit line matching `f`.
fn at(lines: &[Value], what: &str, f: impl Fn(&Value) -> bool) -> usize {
    lines
        .iter()
        .position(f)
        .unwrap_or_else(|| panic!("no {what} in {lines:#?}"))
}

fn audit_is(v: &Value, audit: &str) -> bool {
    v.pointer("/what/audit") == Some(&Value::from(audit))
}

fn hook_is(v: &Value, audit: &str, hook: &str) -> bool {
    audit_is(v, audit) && v.pointer("/what/hook") == Some(&Value::from(hook))
}

/// Whether a process runs whose command line is exactly `argv`.
fn running(argv: &[&str]) -> bool {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            // (A zombie is not running: its stat says Z.)
            std::fs::read_to_string(e.path().join("stat")).is_ok_and(|s| !s.contains(") Z "))
        })
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want))
}

#[test]
fn local_hooks_run_at_each_point_of_a_real_outage_with_their_environment() {
    let dir = TempDir::new("upsvisord-hooks-local");
    let d = dir.path();
    let Some(nut) = start_nut(d) else { return };
    let out = d.join("hooks.txt");
    let rec = recorder(d, &out);
    let rec = rec.display();
    let cfg = format!(
        r#"version = 1
armed = true
{fast}
[[hook]]
name = "onbatt"
point = "on_battery"
command = ["{rec}"]
deadline = "5s"
[[hook]]
name = "trig"
point = "trigger"
command = ["{rec}"]
deadline = "5s"
blocking = true
[[hook]]
name = "grp"
point = "before_group"
group = "default"
command = ["{rec}"]
deadline = "5s"
blocking = true
[[hook]]
name = "grp-fails"
point = "before_group"
group = "default"
command = ["{rec}", "3"]
deadline = "5s"
[[hook]]
name = "back"
point = "after_restore"
command = ["{rec}"]
deadline = "5s"
"#,
        fast = fast_config(nut.port, &["kvm1"]).replace(
            "shutdown_hosts = false",
            "shutdown_hosts = false\nforce_host_after_s = 900"
        ),
    );
    let cfg_path = d.join("upsvisord.toml");
    write(&cfg_path, &cfg, 0o644);
    let audit = d.join("audit.jsonl");
    let (_daemon, base) = start_daemon(&cfg_path, &audit);
    wait("on line and the VMs listed", 30, || {
        get(&format!("{base}/api/power"))["devices"]["ups1"]["last"]["tokens"]
            == serde_json::json!(["OL"])
            && common::nut::vms_on(&base) == 4
    });
    // The plan lists the hooks where they run, blocking ones in the estimate.
    let plan = get(&format!("{base}/api/plan"));
    let stages = plan["plan"]["stages"]
        .as_array()
        .unwrap_or_else(|| panic!("{plan}"));
    let hooks_of = |name: &str| -> Vec<String> {
        stages
            .iter()
            .filter(|s| s["name"] == name)
            .flat_map(|s| s["items"].as_array().unwrap().iter())
            .filter_map(|i| i["hook"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(hooks_of("trigger hooks"), ["trig"], "{plan}");
    assert_eq!(hooks_of("group default"), ["grp", "grp-fails"], "{plan}");
    let side: Vec<&str> = plan["plan"]["side_hooks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["hook"].as_str())
        .collect();
    assert_eq!(side, ["onbatt", "back"], "{plan}");
    let trigger_stage = stages
        .iter()
        .find(|s| s["name"] == "trigger hooks")
        .unwrap();
    assert_eq!(
        trigger_stage["estimate"], 5,
        "a blocking hook's deadline counts"
    );
    // `check` names each hook and finds its program.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_upsvisord"))
        .args(["check", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(
        t.contains("hook grp") && t.contains("before group default, blocking, deadline 5 s"),
        "{t}"
    );

    // So does the text plan, with the hooks outside the stages.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_upsvisord"))
        .args(["plan", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(
        t.contains("hook trig (trigger; blocking: a failure holds this step, deadline 5 s)"),
        "{t}"
    );
    assert!(t.contains("first hook grp (before group default;"), "{t}");
    assert!(
        t.contains("also hook onbatt (on_battery; not waited for"),
        "{t}"
    );
    assert!(t.contains("also hook back (after_restore;"), "{t}");

    // On battery: the on-battery hook only (no trigger yet).
    rewrite(d, &dev("OB DISCHRG", 90));
    wait("the on-battery hook", 30, || {
        line_for(&out, "onbatt").is_some()
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(line_for(&out, "trig").is_none(), "{:?}", lines_of(&out));
    // Low battery: the trigger, then the group's hooks, then its VMs.
    rewrite(d, &dev("OB DISCHRG LB", 20));
    wait("the VMs stopped", 60, || common::nut::vms_on(&base) == 0);
    wait("the group hooks audited", 30, || {
        let l = audit_lines(&audit);
        l.iter().any(|v| hook_is(v, "hook_finished", "grp"))
            && l.iter().any(|v| hook_is(v, "hook_finished", "grp-fails"))
    });
    let l = audit_lines(&audit);
    let first_vm = at(&l, "a VM command", |v| {
        audit_is(v, "issued") && v.pointer("/what/cmd/kind") == Some(&Value::from("vm"))
    });
    let trig_done = at(&l, "trig finished", |v| hook_is(v, "hook_finished", "trig"));
    let grp_done = at(&l, "grp finished", |v| hook_is(v, "hook_finished", "grp"));
    assert!(
        trig_done < first_vm && grp_done < first_vm,
        "blocking hooks first: {l:#?}"
    );
    assert_eq!(l[grp_done].pointer("/what/error"), Some(&Value::Null));
    let failed = at(&l, "grp-fails finished", |v| {
        hook_is(v, "hook_finished", "grp-fails")
    });
    assert!(
        l[failed]
            .pointer("/what/error")
            .and_then(Value::as_str)
            .is_some_and(|e| e.contains("exit status: 3")),
        "{:#?}",
        l[failed]
    );
    assert!(
        !l.iter().any(|v| audit_is(v, "forced_past_hook")),
        "nothing was held"
    );

    // Mains back: the restore, then the after-restore hook.
    rewrite(d, &dev("OL CHRG", 90));
    wait("the after-restore hook", 90, || {
        line_for(&out, "back").is_some()
    });
    assert_eq!(common::nut::vms_on(&base), 4);

    // What each got: NUT's NOTIFYTYPE and UPSNAME, the hook, its point,
    // group or host, episode, deadline; nothing of the daemon's own
    // environment (HOME).
    assert_eq!(
        line_for(&out, "onbatt").unwrap(),
        "onbatt|on_battery|ONBATT|ups1|||0|5|unset"
    );
    assert_eq!(
        line_for(&out, "trig").unwrap(),
        "trig|trigger|TRIGGER|ups1|||1|5|unset"
    );
    assert_eq!(
        line_for(&out, "grp").unwrap(),
        "grp|before_group|BEFORE_GROUP|ups1|default||1|5|unset"
    );
    assert_eq!(
        line_for(&out, "back").unwrap(),
        "back|after_restore|AFTER_RESTORE|ups1|||1|5|unset"
    );
    assert_eq!(
        lines_of(&out).len(),
        5,
        "each hook once: {:?}",
        lines_of(&out)
    );
}

#[test]
fn a_failed_blocking_hook_holds_its_host_until_the_forced_deadline_and_a_hung_hook_is_killed() {
    let dir = TempDir::new("upsvisord-hooks-hold");
    let d = dir.path();
    let Some(nut) = start_nut(d) else { return };
    let out = d.join("hooks.txt");
    let rec = recorder(d, &out);
    let hang = d.join("hang.sh");
    let pidfile = d.join("hang.pid");
    write(
        &hang,
        &format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 4343\n",
            pidfile.display()
        ),
        0o755,
    );
    let fast = fast_config(nut.port, &["kvm1"]).replace(
        "shutdown_hosts = false",
        "shutdown_hosts = true\nforce_host_after_s = 15\nhost_down_wait_s = 3",
    );
    let cfg = format!(
        r#"version = 1
armed = true
{fast}
[[hook]]
name = "hold"
point = "before_host_shutdown"
host = "kvm1"
command = ["{rec}", "1"]
deadline = "5s"
blocking = true
[[hook]]
name = "hang"
point = "trigger"
command = ["{hang}"]
deadline = "2s"
"#,
        rec = rec.display(),
        hang = hang.display(),
    );
    let cfg_path = d.join("upsvisord.toml");
    write(&cfg_path, &cfg, 0o644);
    let audit = d.join("audit.jsonl");
    let (_daemon, base) = start_daemon(&cfg_path, &audit);
    wait("on line and the VMs listed", 30, || {
        common::nut::vms_on(&base) == 4
    });
    rewrite(d, &dev("OB DISCHRG LB", 20));
    // The hung trigger hook: failed at its deadline, killed.
    wait("the hung hook's end", 30, || {
        audit_lines(&audit)
            .iter()
            .any(|v| hook_is(v, "hook_finished", "hang"))
    });
    let l = audit_lines(&audit);
    let hung = at(&l, "hang finished", |v| hook_is(v, "hook_finished", "hang"));
    assert!(
        l[hung].pointer("/what/error").is_some_and(|e| !e.is_null()),
        "{:#?}",
        l[hung]
    );
    assert!(std::fs::read_to_string(&pidfile).is_ok(), "it ran");
    wait("its process gone", 5, || !running(&["sleep", "4343"]));
    // The host's hook fails: its shutdown is held until the forced
    // deadline, which is audited, then sent.
    wait("the host shut down past its hook", 60, || {
        audit_lines(&audit).iter().any(|v| {
            audit_is(v, "issued")
                && v.pointer("/what/cmd/kind") == Some(&Value::from("host"))
                && v.pointer("/what/cmd/op") == Some(&Value::from("shutdown"))
        })
    });
    let l = audit_lines(&audit);
    let failed = at(&l, "hold failed", |v| hook_is(v, "hook_finished", "hold"));
    let forced = at(&l, "forced past hold", |v| {
        hook_is(v, "forced_past_hook", "hold")
    });
    let shutdown = at(&l, "host shutdown", |v| {
        audit_is(v, "issued") && v.pointer("/what/cmd/op") == Some(&Value::from("shutdown"))
    });
    assert!(failed < forced && forced < shutdown, "{l:#?}");
    assert!(
        l[forced]
            .pointer("/what/reason")
            .and_then(Value::as_str)
            .is_some_and(|r| r.contains("forced deadline")),
        "{:#?}",
        l[forced]
    );
    let started = at(&l, "episode start", |v| audit_is(v, "episode_started"));
    let t = |i: usize| {
        l[i]["at_ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("no at_ms in {}", l[i]))
    };
    let held = Duration::from_millis(t(shutdown) - t(started));
    assert!(held >= Duration::from_secs(14), "held {held:?} only");
    assert_eq!(
        line_for(&out, "hold").unwrap(),
        "hold|before_host_shutdown|BEFORE_HOST_SHUTDOWN|ups1||kvm1|1|5|unset"
    );
}

#[test]
fn remote_hooks_run_over_the_hosts_ssh_transport() {
    let Some(sshd) = common::ssh::Sshd::start() else {
        return;
    };
    let dir = TempDir::new("upsvisord-hooks-ssh");
    let d = dir.path();
    let Some(nut) = start_nut(d) else { return };
    let key = d.join("id_ed25519");
    std::fs::write(&key, &sshd.user_key).unwrap();
    let creds = d.join("credentials.toml");
    std::fs::write(
        &creds,
        format!(
            "[nas]\nusername = \"{}\"\nprivate_key_file = \"id_ed25519\"\n",
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
    let record = "env | grep -E '^(UPSVISOR_|NOTIFYTYPE|UPSNAME)' | sort > \"$SHIM_STATE/hook-$UPSVISOR_HOOK.env\"";
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
shutdown_hosts = true
force_host_after_s = 900
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
hosts = ["nas"]
[[host]]
id = "nas"
transport = "ssh-server"
address = "127.0.0.1:{sshport}"
credentials = "nas"
host_key = "[127.0.0.1]:{sshport} {hostpub}"
shutdown_command = ["nas-poweroff", "now"]
[[hook]]
name = "remote-trig"
point = "trigger"
on = "nas"
command = ["/bin/sh", "-c", {record:?}]
deadline = "10s"
[[hook]]
name = "remote-host"
point = "before_host_shutdown"
host = "nas"
on = "nas"
command = ["/bin/sh", "-c", {record:?}]
deadline = "10s"
blocking = true
[[hook]]
name = "remote-hang"
point = "trigger"
on = "nas"
command = ["sleep", "4242"]
deadline = "3s"
"#,
        port = nut.port,
        sshport = sshd.port,
        hostpub = sshd.host_pub,
    );
    let cfg_path = d.join("upsvisord.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let audit = d.join("audit.jsonl");
    let (_daemon, base) = start_daemon(&cfg_path, &audit);
    wait("on line and the NAS answering", 30, || {
        get(&format!("{base}/api/power"))["devices"]["ups1"]["last"]["tokens"]
            == serde_json::json!(["OL"])
            && get(&format!("{base}/api/vms"))["cycle"]
                .as_u64()
                .unwrap_or(0)
                >= 1
    });
    rewrite(d, &dev("OB DISCHRG LB", 20));
    wait("the NAS shut down", 60, || {
        sshd.read_state("server.shutdown").trim() == "nas-poweroff now"
    });
    let trig = sshd.read_state("hook-remote-trig.env");
    assert!(trig.contains("UPSVISOR_HOOK=remote-trig\n"), "{trig}");
    assert!(trig.contains("UPSVISOR_HOOK_POINT=trigger\n"), "{trig}");
    assert!(trig.contains("NOTIFYTYPE=TRIGGER\n"), "{trig}");
    assert!(trig.contains("UPSNAME=ups1\n"), "{trig}");
    assert!(trig.contains("UPSVISOR_EPISODE=1\n"), "{trig}");
    let host = sshd.read_state("hook-remote-host.env");
    assert!(host.contains("UPSVISOR_HOST=nas\n"), "{host}");
    assert!(
        host.contains("UPSVISOR_HOOK_POINT=before_host_shutdown\n"),
        "{host}"
    );
    // The blocking host hook finished (ok) before the shutdown was sent.
    wait("the audit caught up", 30, || {
        audit_lines(&audit).iter().any(|v| {
            audit_is(v, "issued") && v.pointer("/what/cmd/op") == Some(&Value::from("shutdown"))
        }) && audit_lines(&audit)
            .iter()
            .any(|v| hook_is(v, "hook_finished", "remote-hang"))
    });
    let l = audit_lines(&audit);
    let host_done = at(&l, "remote-host finished", |v| {
        hook_is(v, "hook_finished", "remote-host")
    });
    assert_eq!(
        l[host_done].pointer("/what/error"),
        Some(&Value::Null),
        "{:#?}",
        l[host_done]
    );
    let shutdown = at(&l, "host shutdown", |v| {
        audit_is(v, "issued") && v.pointer("/what/cmd/op") == Some(&Value::from("shutdown"))
    });
    assert!(host_done < shutdown, "{l:#?}");
    // The hung remote hook failed at its deadline and was stopped on the host.
    let hung = at(&l, "remote-hang finished", |v| {
        hook_is(v, "hook_finished", "remote-hang")
    });
    assert!(
        l[hung]
            .pointer("/what/error")
            .and_then(Value::as_str)
            .is_some(),
        "{:#?}",
        l[hung]
    );
    wait("the remote sleep stopped", 10, || {
        !running(&["sleep", "4242"])
    });
}
