//! Real BMC peers for host power-on tests: OpenIPMI's LAN simulator
//! `ipmi_sim` (Debian `openipmi`, driven by real `ipmitool`) and
//! sushy-tools' Redfish emulator (PyPI `sushy-tools`, in the venv
//! `scripts/install-deps` makes) over HTTPS, backed by a real libvirtd test
//! driver so that a power-on really starts a domain.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::libvirtd::Libvirtd;
use crate::{
    KillOnDrop, TempDir, free_port, free_udp_port, require_peer, require_venv_tool, venv_dir,
    wait_for_port,
};

/// `ipmi_sim` with one BMC (IPMB 0x20) on a loopback UDP port, whose
/// chassis control is a script that keeps the power state in the file
/// `power` (`0`/`1`) and appends `power <0|1>` to `events` at each change.
pub struct IpmiSim {
    _child: KillOnDrop,
    /// The UDP port the BMC listens on (127.0.0.1).
    pub port: u16,
    /// The `ipmitool` found.
    pub ipmitool: PathBuf,
    /// The simulator's directory (config, `power`, `events`, `sim.log`).
    pub dir: TempDir,
}

/// The chassis-control program: ipmi_sim runs it as
/// `<script> 0x20 get power` (answering `power:<0|1>`) and
/// `<script> 0x20 set power <0|1>` (OpenIPMI's `ipmi_sim_cmd(5)`,
/// `chassis_control`).
const CHASSIS: &str = r#"#!/bin/sh
dir=$(dirname "$0")
state="$dir/power"
[ -f "$state" ] || echo 0 > "$state"
shift
op=$1; shift
case "$op" in
  get)
    for p in "$@"; do
      case "$p" in
        power) echo "power:$(cat "$state")" ;;
        *) echo "$p:0" ;;
      esac
    done ;;
  set)
    while [ $# -ge 2 ]; do
      case "$1" in
        power) echo "$2" > "$state"; echo "power $2" >> "$dir/events" ;;
      esac
      shift 2
    done ;;
esac
exit 0
"#;

impl IpmiSim {
    /// Starts the simulator with two users sharing `password`: `admin`
    /// (may reach ADMINISTRATOR) and `viewer` (USER only; chassis control
    /// is an OPERATOR command). The chassis starts off. Waits until
    /// `ipmitool mc info` opens a session. Missing `ipmi_sim`/`ipmitool`:
    /// see [`require_peer`].
    pub fn start(password: &str) -> Option<IpmiSim> {
        let sim = require_peer(&["ipmi_sim", "/usr/bin/ipmi_sim"], "openipmi")?;
        let ipmitool = require_peer(&["ipmitool", "/usr/bin/ipmitool"], "ipmitool")?;
        let dir = TempDir::new("ipmi-sim");
        let d = dir.path();
        let script = d.join("chassis");
        std::fs::write(&script, CHASSIS).expect("chassis script");
        Command::new("chmod")
            .arg("0755")
            .arg(&script)
            .status()
            .expect("chmod");
        let port = free_udp_port();
        std::fs::write(
            d.join("lan.conf"),
            format!(
                r#"name "upsvisor-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{} 0x20"
  user 2 true "admin" "{password}" admin 10 none md2 md5 straight
  user 3 true "viewer" "{password}" user 10 none md2 md5 straight
"#,
                script.display()
            ),
        )
        .expect("lan.conf");
        std::fs::write(
            d.join("cmds.emu"),
            "mc_setbmc 0x20\n\
             mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
             mc_enable 0x20\n",
        )
        .expect("cmds.emu");
        std::fs::create_dir_all(d.join("state")).expect("state dir");
        let log = std::fs::File::create(d.join("sim.log")).expect("sim.log");
        let child = Command::new(&sim)
            .arg("-c")
            .arg(d.join("lan.conf"))
            .arg("-f")
            .arg(d.join("cmds.emu"))
            .arg("-s")
            .arg(d.join("state"))
            .arg("-n")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn ipmi_sim");
        let me = IpmiSim {
            _child: KillOnDrop(child),
            port,
            ipmitool,
            dir,
        };
        let t0 = Instant::now();
        loop {
            let ok = Command::new(&me.ipmitool)
                .args(["-I", "lanplus", "-H", "127.0.0.1", "-p", &port.to_string()])
                .args(["-U", "admin", "-E", "-N", "1", "-R", "1", "mc", "info"])
                .env("IPMI_PASSWORD", password)
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "ipmi_sim never answered: {}",
                std::fs::read_to_string(me.dir.path().join("sim.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(me)
    }

    /// Every power change the BMC was told, one `power <0|1>` per line.
    pub fn events(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("events")).unwrap_or_default()
    }

    /// The chassis power state as the BMC reports it: `"0"`, `"1"`, or
    /// `""` before the first `get`/`set`.
    pub fn power_file(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("power"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// Sets the chassis state behind the BMC's back (the host powered on
    /// by hand, or halted by its OS), without an `events` line.
    pub fn set_power(&self, on: bool) {
        std::fs::write(
            self.dir.path().join("power"),
            if on { "1\n" } else { "0\n" },
        )
        .expect("power file");
    }
}

/// sushy-tools' Redfish emulator over HTTPS (a fresh self-signed
/// certificate for 127.0.0.1) with basic auth (`admin` / the password),
/// serving libvirtd test-driver domains as Redfish systems (system id =
/// domain UUID).
pub struct RedfishEmulator {
    // Drop order: the emulator, then libvirtd, then the directory.
    _child: KillOnDrop,
    /// The libvirtd behind the emulator (`domstate` reads what a power-on
    /// did).
    pub lv: Libvirtd,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The emulator's certificate, DER (to pin).
    pub cert_der: Vec<u8>,
    /// Certificate, key, htpasswd and `emulator.log`.
    pub dir: TempDir,
}

impl RedfishEmulator {
    /// Defines each `(name, uuid, running)` domain in a fresh libvirtd and
    /// starts the emulator on it. Missing `sushy-emulator`, `openssl` or
    /// libvirtd: see [`require_peer`].
    pub fn start(password: &str, systems: &[(&str, &str, bool)]) -> Option<RedfishEmulator> {
        let emulator = require_venv_tool("sushy-emulator", "sushy-tools")?;
        let openssl = require_peer(&["openssl"], "openssl")?;
        let lv = Libvirtd::start()?;
        for (name, uuid, running) in systems {
            lv.define(name, uuid, *running);
        }
        let dir = TempDir::new("redfish");
        let d = dir.path();
        let ok = Command::new(&openssl)
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .arg("-keyout")
            .arg(d.join("key.pem"))
            .arg("-out")
            .arg(d.join("cert.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(ok.success(), "openssl req failed");
        let cert_der = Command::new(&openssl)
            .args(["x509", "-outform", "DER", "-in"])
            .arg(d.join("cert.pem"))
            .output()
            .expect("openssl x509")
            .stdout;
        // sushy-tools takes bcrypt htpasswd entries only; bcrypt comes with it.
        let hash = Command::new(venv_dir().join("bin/python"))
            .args([
                "-c",
                "import bcrypt,sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(4)).decode())",
                password,
            ])
            .output()
            .expect("python");
        assert!(hash.status.success(), "bcrypt: {hash:?}");
        std::fs::write(
            d.join("htpasswd"),
            format!("admin:{}\n", String::from_utf8_lossy(&hash.stdout).trim()),
        )
        .expect("htpasswd");
        std::fs::write(
            d.join("emulator.conf"),
            format!(
                "SUSHY_EMULATOR_AUTH_FILE = '{}'\n",
                d.join("htpasswd").display()
            ),
        )
        .expect("emulator.conf");
        let port = free_port();
        let log = std::fs::File::create(d.join("emulator.log")).expect("emulator.log");
        let child = Command::new(&emulator)
            .arg("--config")
            .arg(d.join("emulator.conf"))
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .arg("--ssl-certificate")
            .arg(d.join("cert.pem"))
            .arg("--ssl-key")
            .arg(d.join("key.pem"))
            .args(["--libvirt-uri", &lv.uri])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn sushy-emulator");
        let child = KillOnDrop(child);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        if let Err(e) = wait_for_port(addr, Duration::from_secs(30)) {
            panic!(
                "{e}: {}",
                std::fs::read_to_string(d.join("emulator.log")).unwrap_or_default()
            );
        }
        Some(RedfishEmulator {
            _child: child,
            lv,
            url: format!("https://127.0.0.1:{port}"),
            cert_der,
            dir,
        })
    }

    /// The emulator's log (every request line).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("emulator.log")).unwrap_or_default()
    }
}
