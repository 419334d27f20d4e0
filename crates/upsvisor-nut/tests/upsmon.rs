//! NUT as NUT users run it: a real `upsmon` primary (Debian `nut-client`)
//! and upsvisor as a secondary on the same real `upsd` + `dummy-ups`.
//!
//! upsvisor `LOGIN`s like a upsmon secondary, so upsd counts it; when the
//! UPS goes critical (OB LB) the primary raises `FSD`, which upsvisor reads
//! as `fsd`, and then waits for its secondaries (up to `HOSTSYNC`) before
//! running its shutdown command — here a shim that records when it ran.
//! The primary must wait while upsvisor is still logged in, and go on as
//! soon as upsvisor logs out (long before `HOSTSYNC` runs out).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures::executor::block_on;
use upsvisor_core::{Credentials, PowerDevice, PowerSource};
use upsvisor_nut::NutDevice;
use upsvisor_testkit::{KillOnDrop, require_peer};

/// The primary's HOSTSYNC: long enough that "went on at once after LOGOUT"
/// and "waited HOSTSYNC out" cannot be confused.
const HOSTSYNC: u64 = 15;

/// `GET NUMLOGINS ups`: how many clients upsd counts as logged in.
fn numlogins(port: u16, ups: &str) -> u32 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    writeln!(s, "GET NUMLOGINS {ups}").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    let _ = s.write_all(b"LOGOUT\n");
    line.trim()
        .strip_prefix(&format!("NUMLOGINS {ups} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected reply to GET NUMLOGINS: {line:?}"))
}

fn wait_for(what: &str, secs: u64, mut pred: impl FnMut() -> bool) -> Instant {
    let t0 = Instant::now();
    while !pred() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Instant::now()
}

fn start_upsmon(nut: &Nut, upsmon: &Path) -> (KillOnDrop, std::path::PathBuf) {
    let dir = nut.dir.path();
    let shim = dir.join("shutdown-shim");
    let called = dir.join("shutdown-called");
    std::fs::write(
        &shim,
        format!("#!/bin/sh\ndate +%s.%N >> '{}'\n", called.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = dir.join("upsmon.conf");
    std::fs::write(
        &conf,
        format!(
            "MONITOR ups1@127.0.0.1:{port} 1 {ADMIN} {ADMIN_PW} primary\n\
             MINSUPPLIES 1\n\
             SHUTDOWNCMD \"{shim}\"\n\
             POLLFREQ 1\n\
             POLLFREQALERT 1\n\
             HOSTSYNC {HOSTSYNC}\n\
             DEADTIME 15\n\
             FINALDELAY 0\n\
             POWERDOWNFLAG {dir}/killpower\n",
            port = nut.port,
            shim = shim.display(),
            dir = dir.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let log = std::fs::File::create(dir.join("upsmon.log")).unwrap();
    let mut cmd = Command::new(upsmon);
    cmd.env("NUT_CONFPATH", dir)
        .env("NUT_STATEPATH", dir)
        .env("NUT_ALTPIDPATH", dir)
        // Foreground, one privileged process (no user switch: the temp
        // dir is the test's), some debug output for the log.
        .args(["-F", "-p", "-D"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    (KillOnDrop(cmd.spawn().expect("start upsmon")), called)
}

#[test]
fn primary_upsmon_waits_for_upsvisor_until_it_logs_out() {
    let Some(upsmon) = require_peer(&["/lib/nut/upsmon", "/usr/lib/nut/upsmon"], "nut-client")
    else {
        return;
    };
    let Some(nut) = Nut::start(&[("ups1", "ups1.dev", simple_dev("OL", 100))], None) else {
        return;
    };
    let log = || std::fs::read_to_string(nut.dir.path().join("upsmon.log")).unwrap_or_default();

    // upsvisor as a secondary: the `viewer` account has `upsmon secondary`.
    let dev = NutDevice::new(
        nut.cfg("ups1")
            .credentials(Credentials::new("viewer", "viewpw"))
            .login(true),
    )
    .unwrap();
    let s = block_on(dev.status()).unwrap();
    assert_eq!(s.source, PowerSource::OnLine);
    assert!(!s.fsd);
    assert_eq!(numlogins(nut.port, "ups1"), 1, "upsvisor is counted");

    let (_upsmon, called) = start_upsmon(&nut, &upsmon);
    wait_for("upsmon primary logged in", 15, || {
        numlogins(nut.port, "ups1") == 2
    });

    // Mains fails and the battery is low: the primary raises FSD.
    nut.rewrite("ups1.dev", &simple_dev("OB LB", 9));
    let mut last = None;
    let t_fsd = wait_for("FSD seen by upsvisor", 20, || {
        let s = block_on(dev.status()).unwrap();
        let fsd = s.fsd;
        last = Some(s);
        fsd
    });
    let s = last.unwrap();
    assert!(s.on_battery() && s.low_battery, "{s:?}");

    // upsvisor is still shutting its estate down: the primary must wait.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !called.exists(),
        "the primary ran its shutdown command while upsvisor was logged in\n{}",
        log()
    );
    assert_eq!(numlogins(nut.port, "ups1"), 2);
    assert!(block_on(dev.status()).unwrap().fsd, "FSD stays set");

    // Hosts are down: the engine detaches the device (through the trait,
    // as it holds it), upsvisor logs out, and the primary goes on at once.
    let ups: &dyn PowerDevice = &dev;
    block_on(ups.detach()).unwrap();
    let t_logout = Instant::now();
    let t_shut = wait_for("shutdown command after LOGOUT", HOSTSYNC + 10, || {
        called.exists()
    });
    let after_logout = t_shut - t_logout;
    let after_fsd = t_shut - t_fsd;
    assert!(
        after_logout < Duration::from_secs(5),
        "the primary waited {after_logout:?} after upsvisor logged out\n{}",
        log()
    );
    assert!(
        after_fsd < Duration::from_secs(HOSTSYNC - 3),
        "the shutdown came {after_fsd:?} after FSD: HOSTSYNC ran out instead of upsvisor's LOGOUT counting"
    );
    // Status reads go on without LOGIN.
    let s = block_on(dev.status()).unwrap();
    assert!(s.fsd && s.on_battery());
    eprintln!(
        "FSD seen, held 4 s, LOGOUT; primary's shutdown command {after_logout:?} after LOGOUT, {after_fsd:?} after FSD (HOSTSYNC {HOSTSYNC} s)"
    );
}
