//! The reqwest backend (async, on tokio) against the same simulator and
//! bad peers as the ureq backend.
#![cfg(feature = "reqwest")]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::{Sim, assert_matches};
use upsvisor_core::{ErrorKind, HostTransport, PowerState, VmOp};
use upsvisor_soap::{HostSelector, SoapConfig, SoapTransport};

fn transport(sim: &Sim, cfg: SoapConfig) -> SoapTransport {
    let _ = sim;
    SoapTransport::new_reqwest(cfg).expect("transport")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_power_and_relogin() {
    let Some(sim) = Sim::start(&["-mode=esx", "-vms=5", "-seed=11"]) else {
        return;
    };
    let t = transport(&sim, sim.config(HostSelector::Only));
    let inv = t.inventory().await.unwrap();
    assert_matches(&inv, &sim.truth().hosts[0]);
    let on = inv
        .vms
        .iter()
        .find(|v| v.power == PowerState::PoweredOn)
        .unwrap()
        .id
        .clone();
    t.vm_power(&on, VmOp::PowerOff).await.unwrap();
    t.vm_power(&on, VmOp::PowerOff).await.unwrap();
    sim.ctl("/ctl/expire-sessions");
    let inv = t.inventory().await.unwrap();
    assert_eq!(
        inv.vms.iter().find(|v| v.id == on).unwrap().power,
        PowerState::PoweredOff
    );
    assert_matches(&inv, &sim.truth().hosts[0]);
    t.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_pin_mismatch_and_timeout() {
    let Some(sim) = Sim::start(&["-mode=esx", "-vms=1"]) else {
        return;
    };
    let cfg = sim.config(HostSelector::Only).clear_pinned_thumbprints();
    let cfg = cfg.pin_thumbprint(&"00".repeat(32)).unwrap();
    let err = transport(&sim, cfg).inventory().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(
        err.to_string().contains("does not match the pinned"),
        "{err}"
    );
    let t = transport(
        &sim,
        sim.config(HostSelector::Only)
            .timeout(Duration::from_millis(400)),
    );
    t.inventory().await.unwrap();
    sim.ctl("/ctl/latency?method=RetrievePropertiesEx&ms=1500");
    assert_eq!(t.inventory().await.unwrap_err().kind(), ErrorKind::Timeout);
}

#[test]
fn outside_a_tokio_runtime_is_a_config_error() {
    let cfg = SoapConfig::new(
        "https://127.0.0.1:9",
        upsvisor_core::Credentials::new("u", "p"),
    );
    let t = SoapTransport::new_reqwest(cfg).unwrap();
    let err = futures::executor::block_on(t.inventory()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

fn serve_once(reply: Vec<u8>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(2) {
            let Ok(mut s) = s else { return };
            let mut b = [0u8; 8192];
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let _ = s.read(&mut b);
            let _ = s.write_all(&reply);
        }
    });
    format!("http://{addr}/sdk")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_replies() {
    let cfg = |url: String| {
        SoapConfig::new(url, upsvisor_core::Credentials::new("u", "p"))
            .dangerous_allow_plain_http(true)
            .max_reply_bytes(1000)
    };
    let url = serve_once(b"\x00\x01garbage\r\n\r\n".to_vec());
    let err = SoapTransport::new_reqwest(cfg(url))
        .unwrap()
        .inventory()
        .await
        .unwrap_err();
    eprintln!("{:?}: {err}", err.kind());
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    let mut big = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'<', 5000));
    let err = SoapTransport::new_reqwest(cfg(serve_once(big)))
        .unwrap()
        .inventory()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(err.to_string().contains("larger than"), "{err}");
}
