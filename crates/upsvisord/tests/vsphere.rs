//! The daemon against VMware's vSphere simulator (harness/vcsim): a SOAP
//! host and a MOB host in one config, read by `check` and `status`.
// The shared helper has a ureq-only fn behind a feature this crate lacks.
#![allow(unexpected_cfgs)]

#[path = "../../upsvisor-soap/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use upsvisor_testkit::TempDir;

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_upsvisord"))
        .args(args)
        .output()
        .unwrap()
}

fn write(p: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(p, text).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn soap_and_mob_hosts_from_config() {
    let Some(sim) = common::Sim::start(&["-mode=esx", "-vms=4", "-seed=5"]) else {
        return;
    };
    let d = TempDir::new("daemon-vsphere");
    let host = sim
        .url
        .trim_end_matches("/sdk")
        .trim_start_matches("https://")
        .to_string();
    let cfg = format!(
        r#"
version = 1
[credentials]
file = "credentials.toml"
[[device]]
id = "ups1"
kind = "sim"
[[device.outlet]]
id = "main"
hosts = ["esx-soap", "esx-mob"]
[[host]]
id = "esx-soap"
transport = "soap"
address = "{host}"
credentials = "esx"
tls_thumbprint = "{tp}"
[[host]]
id = "esx-mob"
transport = "mob"
address = "{host}"
credentials = "esx"
tls_thumbprint = "{tp}"
"#,
        tp = sim.thumbprint
    );
    let p = d.path().join("upsvisord.toml");
    write(&p, &cfg, 0o644);
    write(
        &d.path().join("credentials.toml"),
        "[esx]\nusername = \"user\"\npassword = \"pass\"\n",
        0o600,
    );
    let ps = p.to_str().unwrap();
    let o = bin(&["check", "--config", ps, "--json"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    let items = v["items"].as_array().unwrap();
    for h in ["host esx-soap", "host esx-mob"] {
        let i = items
            .iter()
            .find(|i| i["item"] == h)
            .unwrap_or_else(|| panic!("{h} missing: {out}"));
        assert_eq!(i["ok"], true, "{h}: {i}");
    }
    assert!(!out.contains("pass\""), "secret echoed: {out}");
    // Both views list the simulator's VMs (same host, read two ways).
    let o = bin(&["status", "--config", ps, "--json"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let truth = sim.truth();
    let names: Vec<String> = truth
        .hosts
        .iter()
        .flat_map(|h| h.vms.iter().map(|v| v.name.clone()))
        .collect();
    assert_eq!(names.len(), 4, "{out}");
    for n in &names {
        assert_eq!(
            out.matches(&format!("\"{n}\"")).count(),
            2,
            "{n} should appear once per transport: {out}"
        );
    }
    // A wrong thumbprint is refused and named.
    let bad = cfg.replace(
        &sim.thumbprint,
        &"AB:"
            .repeat(31)
            .to_string()
            .chars()
            .chain("AB".chars())
            .collect::<String>(),
    );
    write(&p, &bad, 0o644);
    let o = bin(&["check", "--config", ps]);
    let t = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("esx-soap") && t.to_lowercase().contains("thumbprint"),
        "{t}"
    );
}
