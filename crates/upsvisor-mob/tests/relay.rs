//! Issue 20 drill: the MOB transport behind a TCP relay that swallows
//! traffic without FIN or RST (a lost NAT or firewall state), in front of
//! the vSphere simulator harness's MOB pages. Every call returns `Timeout`
//! within its deadline during the blip; the first call after it succeeds,
//! even though connections sat idle in the pool through the blip.

mod common;

use std::time::{Duration, Instant};

use common::Sim;
use futures::executor::block_on;
use upsvisor_core::{Credentials, ErrorKind, HostTransport};
use upsvisor_mob::MobConfig;
use upsvisor_testkit::relay::Relay;

both_backends!(
    half_open_connections_time_out_within_the_deadline_and_are_replaced,
    half_open_connections_time_out_within_the_deadline_and_are_replaced_reqwest,
    half_open_body
);

fn half_open_body() {
    let Some(sim) = Sim::start(&["-mode", "esx", "-vms", "3", "-seed", "3"]) else {
        return;
    };
    // http(s)://127.0.0.1:<port>
    let base = sim.base();
    let (scheme, authority) = base.split_once("://").unwrap();
    let relay = Relay::start(authority.parse().unwrap());
    let deadline = Duration::from_secs(3);
    let slack = Duration::from_millis(1500);
    let cfg = MobConfig::new(
        format!("{scheme}://127.0.0.1:{}", relay.port),
        Credentials::new("user", "pass"),
    )
    .timeout(deadline)
    .pacing(Duration::ZERO);
    let cfg = if sim.thumbprint.is_empty() {
        cfg.dangerous_allow_plain_http(true)
    } else {
        cfg.pin_thumbprint(&sim.thumbprint).unwrap()
    };
    let t = common::mob_new(cfg).unwrap();
    for r in block_on(futures::future::join_all((0..3).map(|_| t.inventory()))) {
        assert_eq!(r.unwrap().vms.len(), 3);
    }

    relay.blip();
    // One call only: connections that sat idle in the pool through the
    // blip must not be what the first call after it gets.
    for i in 0..1 {
        let t0 = Instant::now();
        let e = block_on(t.host_info()).unwrap_err();
        let took = t0.elapsed();
        assert_eq!(e.kind(), ErrorKind::Timeout, "call {i}: {e}");
        assert!(took <= deadline + slack, "call {i} took {took:?}: {e}");
    }

    relay.recover();
    let t0 = Instant::now();
    let inv = block_on(t.inventory()).expect("the first call after the blip");
    assert_eq!(inv.vms.len(), 3);
    assert!(t0.elapsed() < deadline * 2, "{:?}", t0.elapsed());
}
