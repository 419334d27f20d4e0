//! IPMI over LAN v2.0 against OpenIPMI's BMC simulator `ipmi_sim` (Debian
//! `openipmi`) with real `ipmitool` (Debian `ipmitool`). The simulator's
//! chassis-control script keeps the power state in a file and records
//! every change, so the tests see what the BMC was told.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use upsvisor_bmc::{Ipmi, IpmiConfig, PowerOnMethod, PowerProbe, Privilege};
use upsvisor_core::{Credentials, ErrorKind};
use upsvisor_testkit::bmc::IpmiSim;
use upsvisor_testkit::free_udp_port;

const PASSWORD: &str = "ipmi-s3cret";

/// The simulator, with `admin` (ADMINISTRATOR) and `viewer` (USER).
fn start() -> Option<IpmiSim> {
    IpmiSim::start(PASSWORD)
}

fn config(sim: &IpmiSim, host: &str, user: &str, password: &str) -> IpmiConfig {
    let mut c = IpmiConfig::new(host, "127.0.0.1", Credentials::new(user, password));
    c.port(sim.port)
        .program(&sim.ipmitool)
        .retries(Duration::from_secs(1), 1)
        .timeout(Duration::from_secs(20));
    c
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

#[test]
fn power_on_reaches_the_chassis_and_probe_reads_it() {
    let Some(sim) = start() else { return };
    let ipmi = Ipmi::new(config(&sim, "esx1", "admin", PASSWORD)).unwrap();
    assert_eq!(block(ipmi.probe()).unwrap(), PowerProbe::Off);
    assert_eq!(sim.events(), "", "a probe changes nothing");
    block(ipmi.power_on()).unwrap();
    assert_eq!(sim.events(), "power 1\n");
    assert_eq!(sim.power_file(), "1");
    assert_eq!(block(ipmi.probe()).unwrap(), PowerProbe::On);
    // Again on a powered chassis: accepted, stays on.
    block(ipmi.power_on()).unwrap();
    assert_eq!(sim.power_file(), "1");
    assert!(
        ipmi.describe().starts_with("IPMI lanplus 127.0.0.1:"),
        "{}",
        ipmi.describe()
    );
}

#[test]
fn explicit_cipher_suite_and_administrator() {
    let Some(sim) = start() else { return };
    let mut c = config(&sim, "esx1", "admin", PASSWORD);
    // ipmi_sim offers suite 3 (SHA-1 forms), not 17.
    c.cipher_suite(3).privilege(Privilege::Administrator);
    block(Ipmi::new(c).unwrap().power_on()).unwrap();
    assert_eq!(sim.power_file(), "1");

    let mut c = config(&sim, "esx1", "admin", PASSWORD);
    c.cipher_suite(17);
    let e = block(Ipmi::new(c).unwrap().power_on()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("cipher suite"), "{e}");
}

#[test]
fn bad_credentials_are_auth_errors_naming_host_and_method() {
    let Some(sim) = start() else { return };
    for (user, password, word) in [
        ("admin", "wrong-password", "password"),
        ("nobody", PASSWORD, "user name"),
    ] {
        let ipmi = Ipmi::new(config(&sim, "esx1", user, password)).unwrap();
        let e = block(ipmi.power_on()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Auth, "{user}: {e}");
        let t = e.to_string();
        assert!(
            t.contains("esx1 (IPMI 127.0.0.1:") && t.contains(word),
            "{t}"
        );
        assert!(!t.contains(password), "{t}");
    }
    // A session at USER level may read but not switch power on. (ipmi_sim
    // grants OPERATOR to the USER-limited `viewer` when asked, which real
    // BMCs refuse, so the privilege is lowered on our side.)
    let mut c = config(&sim, "esx1", "viewer", PASSWORD);
    c.privilege(Privilege::User);
    let ipmi = Ipmi::new(c).unwrap();
    assert_eq!(block(ipmi.probe()).unwrap(), PowerProbe::Off);
    let e = block(ipmi.power_on()).unwrap_err();
    assert!(e.to_string().contains("privilege"), "{e}");
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert_eq!(sim.events(), "", "nothing reached the chassis");
}

#[test]
fn no_bmc_is_unreachable_and_a_hung_one_is_cut_at_the_deadline() {
    let Some(sim) = start() else { return };
    // Nothing listens: ipmitool gives up after its own tries.
    let mut c = config(&sim, "esx9", "admin", PASSWORD);
    c.port(free_udp_port());
    let t0 = Instant::now();
    let e = block(Ipmi::new(c).unwrap().power_on()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
    assert!(e.is_transient());
    assert!(e.to_string().contains("esx9 (IPMI"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());

    // A socket that swallows every datagram, and a deadline shorter than
    // ipmitool's own patience: the child is killed at the deadline.
    let hole = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let mut c = config(&sim, "esx8", "admin", PASSWORD);
    c.port(hole.local_addr().unwrap().port())
        .retries(Duration::from_secs(5), 5)
        .timeout(Duration::from_millis(700));
    let t0 = Instant::now();
    let e = block(Ipmi::new(c).unwrap().probe()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.to_string().contains("esx8 (IPMI"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}
