//! `upsvisord test --group G --live` (issue 15, part 4), against a real
//! NUT `upsd` + `dummy-ups` on line and simulated hosts: a live test stops
//! one VM group as an outage would and starts it again, as one audited
//! episode, touching no other VM, no host and no power device. Without
//! `--live` nothing is sent; an unknown group, and a second test while one
//! runs, are refused.

mod common;

use std::path::Path;
use std::process::Command;

use common::nut::{audit_lines, fast_config, get, start_daemon, start_nut, vms_on, wait};
use common::write;
use serde_json::Value;
use upsvisor_testkit::TempDir;

const TOKEN: &str = "live-test-token-0123456789abcdef";

fn cli_test(base: &str, token: &Path, group: &str, live: bool) -> (Option<i32>, String) {
    cli_test_of(base, token, "--group", group, live)
}

fn cli_test_of(
    base: &str,
    token: &Path,
    what: &str,
    name: &str,
    live: bool,
) -> (Option<i32>, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_upsvisord"));
    c.args(["test", "--url", base, what, name, "--token-file"])
        .arg(token);
    if live {
        c.arg("--live");
    }
    let o = c.output().unwrap();
    (
        o.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn vm_commands(audit: &Path) -> Vec<(String, String)> {
    audit_lines(audit)
        .iter()
        .filter(|v| v.pointer("/what/audit") == Some(&Value::from("issued")))
        .filter_map(|v| {
            Some((
                v.pointer("/what/cmd/op")?.as_str()?.to_owned(),
                v.pointer("/what/cmd/name")
                    .or_else(|| v.pointer("/what/cmd/host"))
                    .or_else(|| v.pointer("/what/cmd/device"))?
                    .as_str()?
                    .to_owned(),
            ))
        })
        .collect()
}

#[test]
fn a_live_test_stops_and_restores_one_group_only() {
    let dir = TempDir::new("upsvisord-live-test");
    let d = dir.path();
    let Some(nut) = start_nut(d) else { return };
    let token = d.join("token");
    write(&token, TOKEN, 0o600);
    let cfg_path = d.join("upsvisord.toml");
    write(
        &cfg_path,
        &format!(
            "version = 1\narmed = true\n[api]\ntoken_file = \"token\"\n[[group]]\nname = \"batch\"\norder = -10\nmatch = [\"*-vm0\"]\ntimeout_s = 20\n{}",
            fast_config(nut.port, &["kvm1", "kvm2"])
        ),
        0o644,
    );
    let audit = d.join("audit.jsonl");
    let (_daemon, base) = start_daemon(&cfg_path, &audit);
    wait("8 VMs on", 30, || vms_on(&base) == 8);
    wait("upsd on line and stable", 30, || {
        get(&format!("{base}/api/power"))["devices"]["ups1"]["mains_stable"] == true
    });

    // Without --live: nothing is sent.
    let (code, out) = cli_test(&base, &token, "batch", false);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("add --live"), "{out}");
    // An unknown group: refused, naming the groups there are.
    let (code, out) = cli_test(&base, &token, "nope", true);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("refused") && out.contains("no group `nope`") && out.contains("batch"),
        "{out}"
    );
    assert!(vm_commands(&audit).is_empty(), "nothing sent yet");
    // A host test: refused for a host nothing could power on again, and
    // for a host the configuration does not have.
    let (code, out) = cli_test_of(&base, &token, "--host", "kvm1", false);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("host kvm1") && out.contains("add --live"),
        "{out}"
    );
    let (code, out) = cli_test_of(&base, &token, "--host", "kvm1", true);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no out-of-band power-on method"), "{out}");
    let (code, out) = cli_test_of(&base, &token, "--host", "nope", true);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("no host `nope`") && out.contains("kvm2"),
        "{out}"
    );
    assert!(vm_commands(&audit).is_empty(), "nothing sent yet");

    let (code, out) = cli_test(&base, &token, "batch", true);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("live test of group batch started"), "{out}");
    // One at a time.
    let (code, out) = cli_test(&base, &token, "batch", true);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("in progress"), "{out}");

    wait("the test's episode ended", 90, || {
        audit_lines(&audit)
            .iter()
            .any(|v| v.pointer("/what/audit") == Some(&Value::from("episode_ended")))
    });
    let lines = audit_lines(&audit);
    let ended = lines
        .iter()
        .find(|v| v.pointer("/what/audit") == Some(&Value::from("episode_ended")))
        .unwrap();
    assert!(
        ended["what"]["outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("restored: 2 of 2")),
        "{ended}"
    );
    assert!(
        lines
            .iter()
            .any(|v| v["what"]["reason"] == "operator's test of group batch"),
        "{lines:?}"
    );
    let mut cmds = vm_commands(&audit);
    cmds.sort();
    assert_eq!(
        cmds,
        [
            ("power_on".to_owned(), "kvm1-vm0".to_owned()),
            ("power_on".to_owned(), "kvm2-vm0".to_owned()),
            ("shutdown_guest".to_owned(), "kvm1-vm0".to_owned()),
            ("shutdown_guest".to_owned(), "kvm2-vm0".to_owned()),
        ],
        "the group's VMs only: no other VM, no host, no device"
    );
    wait("8 VMs on again", 30, || vms_on(&base) == 8);
    // The API refuses a body without a group or host, and one with both.
    for body in ["{}", r#"{"group": "batch", "host": "kvm1"}"#] {
        let r = ureq::post(&format!("{base}/api/test"))
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .send_string(body);
        assert!(
            matches!(r, Err(ureq::Error::Status(400, _))),
            "{body}: {r:?}"
        );
    }
    // A host the configuration does not have: 422.
    let r = ureq::post(&format!("{base}/api/test"))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .send_string(r#"{"host": "nope"}"#);
    assert!(matches!(r, Err(ureq::Error::Status(422, _))), "{r:?}");
    drop(nut);
}
