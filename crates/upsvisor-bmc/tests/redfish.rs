//! Redfish against sushy-tools' emulator (PyPI `sushy-tools`, in the venv
//! `scripts/install-deps` makes) over HTTPS with basic auth, backed by a
//! real libvirtd test driver: a power-on really starts a domain, read back
//! with `virsh domstate`.
#![cfg(feature = "ureq")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use upsvisor_bmc::{PowerOnMethod, PowerProbe, Redfish, RedfishConfig, Thumbprint};
use upsvisor_core::{Credentials, ErrorKind};
use upsvisor_testkit::bmc::RedfishEmulator;

const HOST_A: &str = "11111111-2222-3333-4444-555555555555";
const HOST_B: &str = "11111111-2222-3333-4444-666666666666";
const PASSWORD: &str = "rf-s3cret";

fn start() -> Option<RedfishEmulator> {
    RedfishEmulator::start(
        PASSWORD,
        &[("host-a", HOST_A, false), ("host-b", HOST_B, false)],
    )
}

fn config(em: &RedfishEmulator, host: &str, system: Option<&str>, password: &str) -> RedfishConfig {
    let mut c = RedfishConfig::new(host, &em.url, Credentials::new("admin", password));
    c.pin_thumbprint(&Thumbprint::of_der(&em.cert_der).to_string())
        .unwrap()
        .timeout(Duration::from_secs(20));
    if let Some(s) = system {
        c.system_id(s);
    }
    c
}

#[test]
fn power_on_starts_the_domain_and_probe_reads_it() {
    let Some(em) = start() else { return };
    assert_eq!(em.lv.domstate("host-a"), "shut off");
    let rf = Redfish::new(config(&em, "esx-a", Some(HOST_A), PASSWORD)).unwrap();
    assert!(rf.can_probe());
    assert_eq!(
        futures::executor::block_on(rf.probe()).unwrap(),
        PowerProbe::Off
    );
    futures::executor::block_on(rf.power_on()).unwrap_or_else(|e| panic!("{e}\n{}", em.log()));
    assert_eq!(em.lv.domstate("host-a"), "running");
    assert_eq!(
        em.lv.domstate("host-b"),
        "shut off",
        "only the named system"
    );
    assert_eq!(
        futures::executor::block_on(rf.probe()).unwrap(),
        PowerProbe::On
    );
    // Already on: success, and no second reset is sent.
    let resets = em.log().matches("ComputerSystem.Reset").count();
    futures::executor::block_on(rf.power_on()).unwrap();
    assert_eq!(em.log().matches("ComputerSystem.Reset").count(), resets);
    assert!(rf.describe().contains(HOST_A), "{}", rf.describe());

    // The async backend's twin is tested on a tokio runtime below; the
    // path form of the id works as well.
    em.lv.virsh(&["destroy", HOST_A]);
    let rf = Redfish::new(config(
        &em,
        "esx-a",
        Some(&format!("/redfish/v1/Systems/{HOST_A}")),
        PASSWORD,
    ))
    .unwrap();
    futures::executor::block_on(rf.power_on()).unwrap();
    assert_eq!(em.lv.domstate("host-a"), "running");
}

#[test]
fn bad_inputs_give_clear_errors_naming_host_and_method() {
    let Some(em) = start() else { return };
    // Wrong password: Auth.
    let rf = Redfish::new(config(&em, "esx-a", Some(HOST_A), "wrong")).unwrap();
    let e = futures::executor::block_on(rf.power_on()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    let t = e.to_string();
    assert!(t.contains("esx-a (Redfish https://127.0.0.1:"), "{t}");
    assert!(!t.contains("wrong") && !t.contains(PASSWORD), "{t}");
    assert_eq!(em.lv.domstate("host-a"), "shut off");

    // Unknown system id: NotFound, listing what the BMC has.
    let rf = Redfish::new(config(&em, "esx-z", Some("no-such-system"), PASSWORD)).unwrap();
    let e = futures::executor::block_on(rf.power_on()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let t = e.to_string();
    assert!(
        t.contains("esx-z (Redfish") && t.contains("no-such-system") && t.contains(HOST_B),
        "{t}"
    );

    // No id and several systems: a configuration error naming them.
    let rf = Redfish::new(config(&em, "esx-a", None, PASSWORD)).unwrap();
    let e = futures::executor::block_on(rf.probe()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.to_string().contains(HOST_A), "{e}");

    // An unpinned certificate is refused (web roots only).
    let rf = Redfish::new(RedfishConfig::new(
        "esx-a",
        &em.url,
        Credentials::new("admin", PASSWORD),
    ))
    .unwrap();
    let e = futures::executor::block_on(rf.probe()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert!(e.to_string().contains("esx-a (Redfish"), "{e}");

    // A wrong pin too.
    let mut c = RedfishConfig::new("esx-a", &em.url, Credentials::new("admin", PASSWORD));
    c.pin_thumbprint(&"ab".repeat(32)).unwrap();
    let e = futures::executor::block_on(Redfish::new(c).unwrap().probe()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert_eq!(em.lv.domstate("host-a"), "shut off");
    assert_eq!(em.lv.domstate("host-b"), "shut off");
}

#[test]
fn a_silent_bmc_costs_its_deadline_only() {
    // A TCP listener that accepts and never answers (a hung BMC).
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let url = format!("https://127.0.0.1:{}", l.local_addr().unwrap().port());
    let mut c = RedfishConfig::new("esx-h", &url, Credentials::new("admin", "x"));
    c.system_id("1").timeout(Duration::from_millis(800));
    let rf = Redfish::new(c).unwrap();
    let t0 = Instant::now();
    let e = futures::executor::block_on(rf.power_on()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.to_string().contains("esx-h (Redfish"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    drop(l);
}

#[cfg(feature = "reqwest")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reqwest_backend_powers_on_too() {
    let Some(em) = tokio::task::spawn_blocking(start).await.unwrap() else {
        return;
    };
    let rf = Redfish::new_reqwest(config(&em, "esx-b", Some(HOST_B), PASSWORD)).unwrap();
    assert_eq!(rf.probe().await.unwrap(), PowerProbe::Off);
    rf.power_on().await.unwrap();
    assert_eq!(em.lv.domstate("host-b"), "running");
    let rf = Redfish::new_reqwest(config(&em, "esx-b", Some(HOST_B), "nope")).unwrap();
    assert_eq!(rf.probe().await.unwrap_err().kind(), ErrorKind::Auth);
    tokio::task::spawn_blocking(move || drop(em)).await.unwrap();
}
