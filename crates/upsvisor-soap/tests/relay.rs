//! Issue 20 drill: the SOAP transport behind a TCP relay that swallows
//! traffic without FIN or RST (a lost NAT or firewall state), in front of
//! VMware's vSphere simulator (`harness/vcsim`). Every call returns
//! `Timeout` within its deadline during the blip; the first call after it
//! succeeds.
#![cfg(feature = "ureq")]

mod common;

use std::time::{Duration, Instant};

use common::Sim;
use futures::executor::block_on;
use upsvisor_core::{ErrorKind, HostTransport};
use upsvisor_soap::{HostSelector, SoapTransport};
use upsvisor_testkit::relay::Relay;

#[test]
fn half_open_connections_time_out_within_the_deadline_and_are_replaced() {
    let Some(sim) = Sim::start(&["-mode=esx", "-vms=4", "-seed=7"]) else {
        return;
    };
    // http(s)://127.0.0.1:<port>/sdk
    let (scheme, rest) = sim.url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let upstream: std::net::SocketAddr = authority.parse().unwrap();
    let relay = Relay::start(upstream);
    let via = format!("{scheme}://127.0.0.1:{}/{path}", relay.port);
    let deadline = Duration::from_secs(3);
    let slack = Duration::from_millis(1500);
    let mut cfg = upsvisor_soap::SoapConfig::new(
        via.as_str(),
        upsvisor_core::Credentials::new("user", "pass"),
    )
    .host(HostSelector::Only)
    .timeout(deadline)
    .task_timeout(deadline);
    cfg = if sim.thumbprint.is_empty() {
        cfg.dangerous_allow_plain_http(true)
    } else {
        cfg.pin_thumbprint(&sim.thumbprint).unwrap()
    };
    let t = SoapTransport::new(cfg).unwrap();
    // Several calls at once first, so that several connections sit idle
    // in the pool when the network goes.
    for r in block_on(futures::future::join_all((0..3).map(|_| t.inventory()))) {
        assert_eq!(r.unwrap().vms.len(), 4);
    }

    relay.blip();
    // One call only: connections that sat idle in the pool through the
    // blip must not be what the first call after it gets.
    for i in 0..1 {
        let t0 = Instant::now();
        let e = block_on(t.inventory()).unwrap_err();
        let took = t0.elapsed();
        assert_eq!(e.kind(), ErrorKind::Timeout, "call {i}: {e}");
        assert!(took <= deadline + slack, "call {i} took {took:?}: {e}");
    }

    relay.recover();
    let t0 = Instant::now();
    let inv = block_on(t.inventory()).expect("the first call after the blip");
    assert_eq!(inv.vms.len(), 4);
    assert!(t0.elapsed() < deadline, "{:?}", t0.elapsed());
}
