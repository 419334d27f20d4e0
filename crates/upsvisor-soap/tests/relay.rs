//! Issue 20 drill: the SOAP transport behind a TCP relay that swallows
//! traffic without FIN or RST (a lost NAT or firewall state), in front of
//! VMware's vSphere simulator (`harness/vcsim`). Every call returns
//! `Timeout` within its deadline during the blip; the first call after it
//! succeeds, even though connections sat idle in the pool through the
//! blip. Both backends.
#![cfg(any(feature = "ureq", feature = "reqwest"))]

mod common;

use std::time::{Duration, Instant};

use common::Sim;
use upsvisor_core::{Credentials, ErrorKind, HostTransport};
use upsvisor_soap::{HostSelector, SoapConfig, SoapTransport};
use upsvisor_testkit::relay::Relay;

const DEADLINE: Duration = Duration::from_secs(3);
const SLACK: Duration = Duration::from_millis(1500);

/// The simulator, a relay in front of it, and a config through the relay.
fn setup() -> Option<(Sim, Relay, SoapConfig)> {
    let sim = Sim::start(&["-mode=esx", "-vms=4", "-seed=7"])?;
    // http(s)://127.0.0.1:<port>/sdk
    let (scheme, rest) = sim.url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let relay = Relay::start(authority.parse().unwrap());
    let via = format!("{scheme}://127.0.0.1:{}/{path}", relay.port);
    let cfg = SoapConfig::new(via.as_str(), Credentials::new("user", "pass"))
        .host(HostSelector::Only)
        .timeout(DEADLINE)
        .task_timeout(DEADLINE);
    let cfg = if sim.thumbprint.is_empty() {
        cfg.dangerous_allow_plain_http(true)
    } else {
        cfg.pin_thumbprint(&sim.thumbprint).unwrap()
    };
    Some((sim, relay, cfg))
}

async fn drill(t: SoapTransport, relay: &Relay) {
    // Several calls at once first, so that several connections sit idle
    // in the pool when the network goes.
    for r in futures::future::join_all((0..3).map(|_| t.inventory())).await {
        assert_eq!(r.unwrap().vms.len(), 4);
    }
    relay.blip();
    // One call only: the connections that sat idle through the blip must
    // not be what the first call after it gets.
    let t0 = Instant::now();
    let e = t.inventory().await.unwrap_err();
    let took = t0.elapsed();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(took <= DEADLINE + SLACK, "took {took:?}: {e}");

    relay.recover();
    let t0 = Instant::now();
    let inv = t.inventory().await.expect("the first call after the blip");
    assert_eq!(inv.vms.len(), 4);
    assert!(t0.elapsed() < DEADLINE, "{:?}", t0.elapsed());
}

#[cfg(feature = "ureq")]
#[test]
fn half_open_connections_time_out_within_the_deadline_and_are_replaced() {
    let Some((_sim, relay, cfg)) = setup() else {
        return;
    };
    futures::executor::block_on(drill(SoapTransport::new(cfg).unwrap(), &relay));
}

#[cfg(feature = "reqwest")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_time_out_within_the_deadline_and_are_replaced_reqwest() {
    let Some((_sim, relay, cfg)) = setup() else {
        return;
    };
    drill(SoapTransport::new_reqwest(cfg).unwrap(), &relay).await;
}
