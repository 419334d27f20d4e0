//! Shared vCenter sessions against the vSphere simulator (harness/vcsim):
//! requests per cycle counted by the simulator (`/ctl/stats`), the fetch
//! reuse window, and views scoped to a cluster.
#![cfg(feature = "ureq")]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Sim, assert_matches};
use futures::StreamExt;
use futures::executor::block_on;
use upsvisor_core::{HostInventory, HostTransport, PowerState, VmOp};
use upsvisor_soap::{HostSelector, SoapTransport};

fn stats(sim: &Sim) -> serde_json::Value {
    serde_json::from_str(&sim.ctl("/ctl/stats")).unwrap()
}

fn count(v: &serde_json::Value, method: &str) -> u64 {
    v[method].as_u64().unwrap_or(0)
}

/// Requests per method between two `/ctl/stats` readings.
fn delta(before: &serde_json::Value, after: &serde_json::Value) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = after
        .as_object()
        .unwrap()
        .keys()
        .map(|m| (m.clone(), count(after, m) - count(before, m)))
        .filter(|(_, n)| *n > 0)
        .collect();
    out.sort();
    out
}

fn shared(sim: &Sim, names: &[String], reuse: Duration) -> Vec<SoapTransport> {
    let first = SoapTransport::new(
        sim.config(HostSelector::Name(names[0].clone()))
            .fetch_reuse(reuse),
    )
    .unwrap();
    names
        .iter()
        .map(|n| first.share(HostSelector::Name(n.clone())))
        .collect()
}

/// One poll cycle as the poller runs it: `limit` hosts at a time, each
/// next host started as one finishes; answers in the order of `all`.
fn cycle(all: &[SoapTransport], limit: usize) -> Vec<HostInventory> {
    let mut out: Vec<(usize, HostInventory)> = block_on(
        futures::stream::iter(all.iter().enumerate())
            .map(|(i, t)| async move { (i, t.inventory().await.unwrap()) })
            .buffer_unordered(limit)
            .collect(),
    );
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, inv)| inv).collect()
}

fn check(sim: &Sim, names: &[String], invs: &[HostInventory]) {
    let truth = sim.truth();
    let mut seen = BTreeSet::new();
    for (name, inv) in names.iter().zip(invs) {
        assert_matches(inv, truth.host(name));
        for v in &inv.vms {
            assert!(seen.insert(v.id.clone()), "{} under two hosts", v.id);
        }
    }
}

/// 100 hosts of one vCenter in one session, polled 16 at a time (the
/// daemon's default): the first cycle costs one host listing, one view and
/// one fetch; later cycles one fetch each. A migration shows at the next
/// cycle, every VM under exactly one host.
#[test]
fn a_hundred_shared_hosts_cost_one_listing_one_view_and_one_fetch_per_cycle() {
    let Some(sim) = Sim::start(&[
        "-mode=vpx",
        "-clusters=10",
        "-cluster-hosts=10",
        "-standalone=0",
        "-vms=20",
        "-seed=5",
    ]) else {
        return;
    };
    let names: Vec<String> = sim.truth().hosts.iter().map(|h| h.name.clone()).collect();
    assert_eq!(names.len(), 100);
    let reuse = Duration::from_secs(2);
    let all = shared(&sim, &names, reuse);

    let s0 = stats(&sim);
    let invs = cycle(&all, 16);
    let s1 = stats(&sim);
    check(&sim, &names, &invs);
    assert_eq!(
        delta(&s0, &s1),
        [
            ("CreateContainerView".to_owned(), 2),
            ("Login".to_owned(), 1),
            ("RetrievePropertiesEx".to_owned(), 2),
            ("RetrieveServiceContent".to_owned(), 1),
        ],
        "first cycle: a session, a host listing (view + retrieval), the datacenter's view and one fetch"
    );
    for t in &all {
        assert_eq!(
            t.inventory_scope().map(|(kind, _)| kind).as_deref(),
            Some("Datacenter"),
            "every host of the datacenter polled: one datacenter view"
        );
    }

    // Later cycles, back to back: one fetch each (every host asks once a
    // cycle, and a fetch serves each host once), migrations followed.
    for _ in 0..2 {
        sim.ctl("/ctl/shuffle?n=20");
        let s0 = stats(&sim);
        let invs = cycle(&all, 16);
        let s1 = stats(&sim);
        assert_eq!(
            delta(&s0, &s1),
            [("RetrievePropertiesEx".to_owned(), 1)],
            "one fetch per cycle"
        );
        check(&sim, &names, &invs);
    }
}

/// The reuse window: within it a second caller takes the fetch already
/// made (no request); after it, the server is asked again and the change
/// shows. A failed fetch is never reused, and a power call drops what is
/// kept.
#[test]
fn the_reuse_window_never_serves_older_data_nor_failures() {
    let Some(sim) = Sim::start(&[
        "-mode=vpx",
        "-clusters=1",
        "-cluster-hosts=2",
        "-standalone=0",
        "-vms=4",
        "-randomize=false",
    ]) else {
        return;
    };
    let truth = sim.truth();
    let names: Vec<String> = truth.hosts.iter().map(|h| h.name.clone()).collect();
    let reuse = Duration::from_millis(800);
    let all = shared(&sim, &names, reuse);
    let (from, to) = if truth.hosts[0].vms.is_empty() {
        (1, 0)
    } else {
        (0, 1)
    };
    let vm = truth.hosts[from].vms[0].clone();

    block_on(all[from].inventory()).unwrap();
    sim.ctl(&format!(
        "/ctl/relocate?vm={}&host={}",
        vm.moref, truth.hosts[to].moref
    ));
    // Within the window: the fetch made before the move serves, no request.
    let s0 = stats(&sim);
    let inv = block_on(all[to].inventory()).unwrap();
    assert_eq!(
        count(&stats(&sim), "RetrievePropertiesEx"),
        count(&s0, "RetrievePropertiesEx")
    );
    assert!(!inv.vms.iter().any(|v| v.id.as_str() == vm.instance_uuid));
    // After it: asked again, the move shows.
    std::thread::sleep(reuse);
    let inv = block_on(all[to].inventory()).unwrap();
    assert_eq!(
        count(&stats(&sim), "RetrievePropertiesEx"),
        count(&s0, "RetrievePropertiesEx") + 1
    );
    assert!(inv.vms.iter().any(|v| v.id.as_str() == vm.instance_uuid));
    check(
        &sim,
        &names,
        &[
            block_on(all[0].inventory()).unwrap(),
            block_on(all[1].inventory()).unwrap(),
        ],
    );

    // A power call: the next inventory asks the server, and sees it off.
    block_on(all[to].vm_power(&upsvisor_core::VmId::new(&vm.instance_uuid), VmOp::PowerOff))
        .unwrap();
    let inv = block_on(all[to].inventory()).unwrap();
    let v = inv
        .vms
        .iter()
        .find(|v| v.id.as_str() == vm.instance_uuid)
        .unwrap();
    assert_eq!(v.power, PowerState::PoweredOff);

    // A failed fetch is not kept: with a 60 s window, the call after a
    // fetch that timed out asks the server again.
    let t = SoapTransport::new(
        sim.config(HostSelector::Name(names[from].clone()))
            .fetch_reuse(Duration::from_secs(60))
            .timeout(Duration::from_millis(500)),
    )
    .unwrap();
    let t2 = t.share(HostSelector::Name(names[to].clone()));
    block_on(t.inventory()).unwrap();
    let s0 = stats(&sim);
    block_on(t2.inventory()).unwrap();
    assert_eq!(delta(&s0, &stats(&sim)), [], "kept for 60 s: no request");
    // The same host asking again (its next poll) gets a new fetch.
    block_on(t.inventory()).unwrap();
    assert_eq!(
        delta(&s0, &stats(&sim)),
        [("RetrievePropertiesEx".to_owned(), 1)]
    );
    // (A power call drops what is kept.)
    let id = upsvisor_core::VmId::new(&vm.instance_uuid);
    block_on(t.vm_power(&id, VmOp::PowerOn)).unwrap();
    sim.ctl("/ctl/latency?method=RetrievePropertiesEx&ms=1500");
    let err = block_on(t.inventory()).unwrap_err();
    assert_eq!(err.kind(), upsvisor_core::ErrorKind::Timeout, "{err}");
    sim.ctl("/ctl/latency?method=RetrievePropertiesEx&ms=0");
    let s0 = stats(&sim);
    let inv = block_on(t2.inventory()).expect("a failure is not served again");
    assert_eq!(
        delta(&s0, &stats(&sim)),
        [("RetrievePropertiesEx".to_owned(), 1)]
    );
    let v = inv.vms.iter().find(|v| v.id == id).unwrap();
    assert_eq!(v.power, PowerState::PoweredOn);
}

/// A lone host of a vCenter with several clusters views its cluster, not
/// the datacenter, and still follows migrations into and out of it.
#[test]
fn a_lone_host_views_its_cluster_and_follows_migrations() {
    let Some(sim) = Sim::start(&[
        "-mode=vpx",
        "-clusters=4",
        "-cluster-hosts=3",
        "-standalone=1",
        "-vms=4",
        "-seed=9",
    ]) else {
        return;
    };
    let truth = sim.truth();
    // A cluster host, and a VM on a host of another cluster (not the
    // standalone one).
    let lone = truth
        .hosts
        .iter()
        .find(|h| !h.name.contains("DC0_H"))
        .unwrap()
        .clone();
    let t = SoapTransport::new(
        sim.config(HostSelector::Name(lone.name.clone()))
            .fetch_reuse(Duration::ZERO),
    )
    .unwrap();
    let inv = block_on(t.inventory()).unwrap();
    assert_matches(&inv, &lone);
    assert_eq!(
        t.inventory_scope().map(|(kind, _)| kind).as_deref(),
        Some("ClusterComputeResource")
    );
    let lone_cluster = lone.name.split('_').take(2).collect::<Vec<_>>().join("_");
    let elsewhere = truth
        .hosts
        .iter()
        .find(|h| !h.vms.is_empty() && !h.name.starts_with(&lone_cluster))
        .unwrap();
    let vm = elsewhere.vms[0].clone();
    sim.ctl(&format!(
        "/ctl/relocate?vm={}&host={}",
        vm.moref, lone.moref
    ));
    let inv = block_on(t.inventory()).unwrap();
    assert_matches(&inv, sim.truth().host(&lone.name));
    assert!(inv.vms.iter().any(|v| v.id.as_str() == vm.instance_uuid));
    sim.ctl(&format!(
        "/ctl/relocate?vm={}&host={}",
        vm.moref, elsewhere.moref
    ));
    let inv = block_on(t.inventory()).unwrap();
    assert_matches(&inv, sim.truth().host(&lone.name));

    // The whole vCenter in one session: one datacenter view.
    let names: Vec<String> = truth.hosts.iter().map(|h| h.name.clone()).collect();
    let all = shared(&sim, &names, Duration::from_secs(2));
    let invs = cycle(&all, 16);
    check(&sim, &names, &invs);
    assert!(
        all.iter()
            .all(|t| t.inventory_scope().is_some_and(|(k, _)| k == "Datacenter"))
    );
}
