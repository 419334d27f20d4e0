//! STARTTLS against a real upsd 2.8.0 (built with NSS) holding a
//! certificate made by the test: `openssl` makes a CA and a server
//! certificate for 127.0.0.1; `certutil`/`pk12util` (Debian
//! `libnss3-tools`) put it in the NSS database upsd reads.
#![cfg(feature = "tls")]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use futures::executor::block_on;
use upsvisor_core::{Credentials, DeviceCommand, ErrorKind, PowerDevice, PowerSource};
use upsvisor_nut::{NutDevice, NutTls};
use upsvisor_testkit::TempDir;

/// The PKI (see [`upsvisor_testkit::upsd_tls_pki`]).
fn make_pki(dir: &Path) -> Option<()> {
    upsvisor_testkit::upsd_tls_pki(dir)
}

fn tls_nut(pki: &Path) -> Option<Nut> {
    let conf = format!(
        "CERTPATH {}\nCERTIDENT \"upsd\" \"dbpw\"\n",
        pki.join("db").display()
    );
    Nut::start_with(
        &[("ups1", "ups1.dev", simple_dev("OB DISCHRG", 55))],
        None,
        &conf,
    )
}

#[test]
fn status_and_commands_over_starttls() {
    let pki = TempDir::new("pki");
    let Some(()) = make_pki(pki.path()) else {
        return;
    };
    let Some(nut) = tls_nut(pki.path()) else {
        return;
    };
    let ca = std::fs::read(pki.path().join("ca.pem")).unwrap();

    let dev = NutDevice::new(
        nut.cfg("ups1")
            .credentials(Credentials::new(ADMIN, ADMIN_PW))
            .starttls(NutTls::with_ca_pem(ca.clone())),
    )
    .unwrap();
    let s = block_on(dev.status()).unwrap();
    assert_eq!(s.source, PowerSource::OnBattery);
    assert_eq!(s.charge_pct, Some(55.0));
    // Authenticated command over the TLS session.
    block_on(dev.command(DeviceCommand::OutletOff {
        outlet: "main".into(),
        delay: Duration::ZERO,
    }))
    .unwrap();
    // The certificate also names "localhost".
    let dev = NutDevice::new(
        nut.cfg("ups1")
            .host("localhost")
            .starttls(NutTls::with_ca_pem(ca)),
    )
    .unwrap();
    assert_eq!(block_on(dev.status()).unwrap().charge_pct, Some(55.0));
}

#[test]
fn untrusted_certificate_or_wrong_name_is_refused() {
    let pki = TempDir::new("pki");
    let Some(()) = make_pki(pki.path()) else {
        return;
    };
    let Some(nut) = tls_nut(pki.path()) else {
        return;
    };
    let ca = std::fs::read(pki.path().join("ca.pem")).unwrap();
    let other = std::fs::read(pki.path().join("other.pem")).unwrap();

    for (tls, why) in [
        (NutTls::with_ca_pem(other), "unknown issuer"),
        (
            NutTls::with_ca_pem(ca).server_name("ups.example"),
            "name mismatch",
        ),
    ] {
        let dev = NutDevice::new(
            nut.cfg("ups1")
                .credentials(Credentials::new(ADMIN, ADMIN_PW))
                .starttls(tls),
        )
        .unwrap();
        let e = block_on(dev.status()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Auth, "{why}: {e}");
        assert!(e.to_string().contains("TLS"), "{why}: {e}");
        assert!(!e.to_string().contains(ADMIN_PW));
        // Still refused on the next call: no plain-text fallback.
        assert_eq!(block_on(dev.status()).unwrap_err().kind(), ErrorKind::Auth);
    }
}

#[test]
fn upsd_without_tls_is_unsupported_not_plain_text() {
    let pki = TempDir::new("pki");
    let Some(()) = make_pki(pki.path()) else {
        return;
    };
    let Some(nut) = Nut::start(&[("ups1", "ups1.dev", simple_dev("OL", 90))], None) else {
        return;
    };
    let ca = std::fs::read(pki.path().join("ca.pem")).unwrap();
    let dev = NutDevice::new(nut.cfg("ups1").starttls(NutTls::with_ca_pem(ca))).unwrap();
    let e = block_on(dev.status()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("FEATURE-NOT-CONFIGURED"), "{e}");
}

#[test]
fn bad_ca_pem_is_a_config_error() {
    let e = NutDevice::new(
        upsvisor_nut::NutConfig::new("ups1").starttls(NutTls::with_ca_pem(b"not a pem".to_vec())),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
}
