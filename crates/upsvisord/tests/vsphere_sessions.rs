//! `upsvisord status` over 100 hosts of one vCenter (harness/vcsim), every
//! host a `soap` host with `vsphere_host` and one credentials entry: the
//! requests one run costs, counted by the simulator (`/ctl/stats`).
// The shared helper has a ureq-only fn behind a feature this crate lacks.
#![allow(unexpected_cfgs)]

#[path = "../../upsvisor-soap/tests/common/mod.rs"]
mod vcsim;

mod common;

use std::process::Command;

use common::write;
use serde_json::Value;
use upsvisor_testkit::TempDir;

/// With the poller's default concurrency (16 hosts at once), one `status`
/// of 100 hosts is one session, one listing of the hosts (a view and a
/// retrieval), one view of the datacenter and one fetch, and every VM is
/// listed once, under its host.
#[test]
fn status_of_a_hundred_hosts_is_one_listing_one_view_and_one_fetch() {
    let Some(sim) = vcsim::Sim::start(&[
        "-mode=vpx",
        "-clusters=10",
        "-cluster-hosts=10",
        "-standalone=0",
        "-vms=10",
        "-seed=21",
    ]) else {
        return;
    };
    let truth = sim.truth();
    assert_eq!(truth.hosts.len(), 100);
    let d = TempDir::new("daemon-vsphere-100");
    let address = common::sdk_address(&sim.url);
    let mut cfg = "version = 1\n[credentials]\nfile = \"credentials.toml\"\n".to_string();
    for (i, h) in truth.hosts.iter().enumerate() {
        cfg += &format!(
            "[[host]]\nid = \"h{i}\"\ntransport = \"soap\"\naddress = \"{address}\"\ncredentials = \"vc\"\ntls_thumbprint = \"{tp}\"\nvsphere_host = \"{name}\"\n",
            tp = sim.thumbprint,
            name = h.name
        );
    }
    let p = d.path().join("upsvisord.toml");
    write(&p, &cfg, 0o644);
    write(
        &d.path().join("credentials.toml"),
        "[vc]\nusername = \"user\"\npassword = \"pass\"\n",
        0o600,
    );
    let stats = || -> Value { serde_json::from_str(&sim.ctl("/ctl/stats")).unwrap() };
    let before = stats();
    let o = Command::new(env!("CARGO_BIN_EXE_upsvisord"))
        .args(["status", "--config", p.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let after = stats();
    let mut sent: Vec<(String, u64)> = after
        .as_object()
        .unwrap()
        .keys()
        .map(|m| {
            let n = after[m].as_u64().unwrap_or(0) - before[m].as_u64().unwrap_or(0);
            (m.clone(), n)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    sent.sort();
    let want: Vec<(String, u64)> = [
        ("CreateContainerView", 2),
        ("Login", 1),
        ("RetrievePropertiesEx", 2),
        ("RetrieveServiceContent", 1),
    ]
    .iter()
    .map(|(m, n)| ((*m).to_owned(), *n))
    .collect();
    // `Logout` may or may not be sent as the process ends.
    sent.retain(|(m, _)| m != "Logout");
    assert_eq!(sent, want, "requests of one status run");
    let s: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let listed = s.to_string();
    for h in &truth.hosts {
        for vm in &h.vms {
            assert_eq!(
                listed.matches(&format!("\"{}\"", vm.name)).count(),
                1,
                "{} of {}",
                vm.name,
                h.name
            );
        }
    }
}
