//! Against a real NUT `upsd` + `dummy-ups` (Debian `nut-server`), started
//! by each test in its own temp dir on a free 127.0.0.1 port.

mod common;

use std::time::{Duration, Instant};

use common::*;

use futures::executor::block_on;
use upsvisor_core::{Credentials, DeviceCommand, ErrorKind, OutletId, PowerDevice, PowerSource};
use upsvisor_nut::{NutClient, NutDevice};

const DELL: &str = "Dell__UPS_RackTower_2700W_HV__usbhid-ups__2.7.4__02.dev";
const PIJUICE: &str = "PiSupply__PiJuice_Zero_pHAT__pijuice__2.8.0__01.dev";
const DEFENDER: &str = "Power_Shield__Defender_1200VA__blazer_usb__2.6.3__01.dev";
const APC: &str = "APC__Back-UPS_ES_725__usbhid-ups__2.6.5__02.dev";

#[test]
fn recorded_dumps_served_by_upsd_map_like_the_files() {
    let files = [
        ("dell", DELL),
        ("pijuice", PIJUICE),
        ("defender", DEFENDER),
        ("apc", APC),
    ];
    let upses: Vec<(&str, &str, String)> = files
        .iter()
        .map(|(n, f)| (*n, *f, std::fs::read_to_string(data(f)).unwrap()))
        .collect();
    let Some(nut) = Nut::start(&upses, None) else {
        return;
    };

    let mut c = NutClient::new(nut.cfg("dell")).unwrap();
    let mut listed: Vec<String> = c.list_ups().unwrap().into_iter().map(|(n, _)| n).collect();
    listed.sort();
    assert_eq!(listed, ["apc", "defender", "dell", "pijuice"]);
    let vars = c.list_vars().unwrap();
    assert_eq!(vars["outlet.1.desc"], "PowerShare Outlet 1");
    assert_eq!(c.get_var("battery.charge").unwrap(), "97");
    assert!(c.list_rw().unwrap().contains_key("ups.delay.shutdown"));

    for (name, file) in files {
        let dev = nut.admin(name);
        let got = block_on(dev.status()).unwrap();
        assert_eq!(got, expected(file), "{name}");
        assert!(dev.last_seen().is_some());
    }
    let dell = block_on(nut.admin("dell").status()).unwrap();
    assert_eq!(dell.source, PowerSource::OnLine);
    assert_eq!(dell.charge_pct, Some(97.0));
    assert_eq!(dell.runtime_s, Some(22617));
    assert_eq!(dell.outlets.len(), 2);
    assert!(
        dell.outlets
            .iter()
            .all(|o| o.switchable && o.on == Some(true))
    );
    let caps = block_on(nut.admin("dell").capabilities()).unwrap();
    assert_eq!(
        caps.switchable_outlets,
        [OutletId::from("1"), OutletId::from("2")]
    );
    assert!(caps.set_fsd);
    assert!(!caps.shutdown_return, "dummy-ups offers only load.off");

    let pij = block_on(nut.admin("pijuice").status()).unwrap();
    assert!(pij.on_battery());
    assert_eq!(pij.charge_pct, Some(51.4));
    assert_eq!(pij.runtime_s, None, "absent stays None");
    let def = block_on(nut.admin("defender").status()).unwrap();
    assert_eq!((def.charge_pct, def.load_pct), (None, Some(8.0)));
}

#[test]
fn seq_script_goes_on_line_on_battery_low_battery() {
    let seq = "ups.status: OL\nbattery.charge: 100\nTIMER 2\n\
               ups.status: OB DISCHRG\nbattery.charge: 60\nTIMER 2\n\
               ups.status: OB LB\nbattery.charge: 10\nTIMER 2\n";
    let Some(nut) = Nut::start(&[("seq", "power.seq", seq.to_owned())], None) else {
        return;
    };
    let dev = nut.admin("seq");
    // Poll well within one TIMER step; record each distinct state.
    let mut seen: Vec<(PowerSource, bool, Option<f32>)> = Vec::new();
    let t0 = Instant::now();
    let want = [
        (PowerSource::OnLine, false, Some(100.0)),
        (PowerSource::OnBattery, false, Some(60.0)),
        (PowerSource::OnBattery, true, Some(10.0)),
    ];
    let found_in_order =
        |seen: &[(PowerSource, bool, Option<f32>)]| seen.windows(3).any(|w| w == want);
    while !found_in_order(&seen) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "states seen: {seen:?}"
        );
        let s = block_on(dev.status()).unwrap();
        let state = (s.source, s.low_battery, s.charge_pct);
        if seen.last() != Some(&state) {
            seen.push(state);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn edited_dev_file_is_picked_up_and_fsd_latches() {
    let Some(nut) = Nut::start(&[("ups1", "ups1.dev", simple_dev("OL", 100))], None) else {
        return;
    };
    let dev = nut.admin("ups1");
    let s = block_on(dev.status()).unwrap();
    assert_eq!(
        (s.source, s.fsd, s.charge_pct),
        (PowerSource::OnLine, false, Some(100.0))
    );

    nut.rewrite("ups1.dev", &simple_dev("OB DISCHRG", 80));
    let s = poll_until(&dev, 15, |s| s.charge_pct == Some(80.0));
    assert!(s.on_battery());
    assert_eq!(s.runtime_s, Some(2400));

    block_on(dev.command(DeviceCommand::SetFsd)).unwrap();
    let s = block_on(dev.status()).unwrap();
    assert!(s.fsd, "{s:?}");
    // The device data changes (mains back), FSD stays: upsd latches it.
    nut.rewrite("ups1.dev", &simple_dev("OL CHRG", 81));
    let s = poll_until(&dev, 15, |s| s.charge_pct == Some(81.0));
    assert!(s.fsd, "FSD must latch: {s:?}");
    assert_eq!(s.source, PowerSource::OnLine);
    // A second client sees it too.
    let other = NutDevice::new(nut.cfg("ups1")).unwrap();
    assert!(block_on(other.status()).unwrap().fsd);
}

#[test]
fn wrong_password_and_unknown_ups_and_unsupported() {
    let Some(nut) = Nut::start(&[("ups1", "ups1.dev", simple_dev("OL", 100))], None) else {
        return;
    };

    let bad = NutDevice::new(
        nut.cfg("ups1")
            .credentials(Credentials::new(ADMIN, "not-the-password"))
            .login(true),
    )
    .unwrap();
    let e = block_on(bad.status()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert!(!e.to_string().contains("not-the-password"));
    let bad = NutDevice::new(nut.cfg("ups1").credentials(Credentials::new(ADMIN, "nope"))).unwrap();
    // (upsd checks that the command exists before the password, so use one
    // dummy-ups has.)
    let e = block_on(bad.command(DeviceCommand::OutletOff {
        outlet: "main".into(),
        delay: Duration::ZERO,
    }))
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    // No credentials at all: commands need them.
    let anon = NutDevice::new(nut.cfg("ups1")).unwrap();
    let e = block_on(anon.command(DeviceCommand::SetFsd)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    // A user without the FSD action.
    let viewer = NutDevice::new(
        nut.cfg("ups1")
            .credentials(Credentials::new("viewer", "viewpw")),
    )
    .unwrap();
    let e = block_on(viewer.command(DeviceCommand::SetFsd)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert!(
        !block_on(anon.status()).unwrap().fsd,
        "refused FSD must not be set"
    );

    let unknown = nut.admin("nosuchups");
    let e = block_on(unknown.status()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("nosuchups"), "{e}");
    let mut c = NutClient::new(nut.cfg("ups1")).unwrap();
    assert_eq!(
        c.get_var("no.such.var").unwrap_err().kind(),
        ErrorKind::NotFound
    );

    // dummy-ups offers load.off only.
    let dev = nut.admin("ups1");
    let e = block_on(dev.command(DeviceCommand::OutletOn { outlet: "1".into() })).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    block_on(dev.command(DeviceCommand::OutletOff {
        outlet: "main".into(),
        delay: Duration::ZERO,
    }))
    .unwrap();
    // shutdown.return: the delay is set, then the command is refused.
    let e = block_on(dev.command(DeviceCommand::ShutdownReturn {
        delay: Duration::from_secs(45),
    }))
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    let t0 = Instant::now();
    while c.get_var("ups.delay.shutdown").unwrap() != "45" {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "SET VAR not applied"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The session is still usable after all those errors.
    assert_eq!(block_on(dev.status()).unwrap().source, PowerSource::OnLine);
}

#[test]
fn data_stale_gives_stale_status_then_recovers() {
    let Some(nut) = Nut::start(
        &[("ups1", "ups1.dev", simple_dev("OB DISCHRG", 70))],
        Some(2),
    ) else {
        return;
    };
    let dev = nut.admin("ups1");
    let first = block_on(dev.status()).unwrap();
    assert!(first.on_battery() && !first.stale);

    nut.signal("ups1", "-STOP");
    let s = poll_until(&dev, 20, |s| s.stale);
    assert_eq!(
        s.source,
        PowerSource::Unknown,
        "stale must not invent a state"
    );
    assert_eq!(s.charge_pct, None);
    let last = dev.last_seen().unwrap();
    assert_eq!(last.status, first);

    nut.signal("ups1", "-CONT");
    let s = poll_until(&dev, 20, |s| !s.stale);
    assert!(s.on_battery());

    // Driver gone: upsd says DRIVER-NOT-CONNECTED.
    nut.signal("ups1", "-KILL");
    let t0 = Instant::now();
    loop {
        match block_on(dev.status()) {
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
                break;
            }
            Ok(s) => assert!(t0.elapsed() < Duration::from_secs(10), "still {s:?}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn reconnects_after_upsd_restart() {
    let Some(mut nut) = Nut::start(&[("ups1", "ups1.dev", simple_dev("OL", 90))], None) else {
        return;
    };
    let dev = nut.admin("ups1");
    assert_eq!(block_on(dev.status()).unwrap().charge_pct, Some(90.0));

    nut.upsd = None; // kills upsd
    let e = block_on(dev.status()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
    assert!(e.is_transient());

    nut.start_upsd();
    nut.wait_ready("ups1");
    assert_eq!(block_on(dev.status()).unwrap().charge_pct, Some(90.0));
    // And a command on the re-established session (authenticated again).
    block_on(dev.command(DeviceCommand::OutletOff {
        outlet: "0".into(),
        delay: Duration::ZERO,
    }))
    .unwrap();
}

#[test]
fn outlet_without_instant_commands_switches_by_set_var() {
    // tripplite_usb publishes outlet.1.switch and no outlet.N.load.*
    // commands; dummy-ups serves the recorded dump through a real upsd.
    let file = "Tripp_Lite__SMART500RT1U__tripplite_usb__2.7.2__05.dev";
    let text = std::fs::read_to_string(data(file)).unwrap();
    let Some(nut) = Nut::start(&[("tl", file, text)], None) else {
        return;
    };
    let dev = nut.admin("tl");
    let s = block_on(dev.status()).unwrap();
    let o1 = s.outlets.iter().find(|o| o.id.as_str() == "1").unwrap();
    assert_eq!((o1.on, o1.switchable), (Some(true), true), "{s:?}");
    let caps = block_on(dev.capabilities()).unwrap();
    assert_eq!(
        caps.switchable_outlets,
        vec![upsvisor_core::OutletId::from("1")]
    );

    block_on(dev.command(DeviceCommand::OutletOff {
        outlet: "1".into(),
        delay: Duration::ZERO,
    }))
    .unwrap();
    poll_until(&dev, 10, |s| {
        s.outlets
            .iter()
            .any(|o| o.id.as_str() == "1" && o.on == Some(false))
    });
    block_on(dev.command(DeviceCommand::OutletOn { outlet: "1".into() })).unwrap();
    poll_until(&dev, 10, |s| {
        s.outlets
            .iter()
            .any(|o| o.id.as_str() == "1" && o.on == Some(true))
    });
    // Outlet 2 has neither an instant command nor outlet.2.switch.
    let e = block_on(dev.command(DeviceCommand::OutletOff {
        outlet: "2".into(),
        delay: Duration::ZERO,
    }))
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("cannot be switched"), "{e}");
}
