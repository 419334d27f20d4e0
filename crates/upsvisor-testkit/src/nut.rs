//! NUT's `upsd` with one `dummy-ups` driver in a temporary directory: the
//! real UPS server tests read, switch and watch (nut-server, Debian).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{KillOnDrop, free_port, is_root, require_peer, wait_for_port};

/// A NUT daemon (`upsd`, `dummy-ups`) command run in `dir`: its config,
/// state and pid files all there, in the foreground, as root when the
/// tests run as root (NUT drops privileges otherwise).
pub fn nut_cmd(bin: &Path, dir: &Path) -> Command {
    let mut c = Command::new(bin);
    c.env("NUT_CONFPATH", dir)
        .env("NUT_STATEPATH", dir)
        .env("NUT_ALTPIDPATH", dir)
        .arg("-F")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if is_root() {
        c.args(["-u", "root"]);
    }
    c
}

/// A dummy-ups definition file: `ups.status`, `battery.charge`,
/// `battery.runtime` (30 s per percent) and `ups.load`.
pub fn dev(status: &str, charge: u32) -> String {
    format!(
        "ups.status: {status}\nbattery.charge: {charge}\nbattery.runtime: {}\nups.load: 20\n",
        charge * 30
    )
}

/// Replaces `ups1.dev` in `dir` so that dummy-ups sees the change.
pub fn rewrite(dir: &Path, contents: &str) {
    // dummy-ups compares whole-second modification times.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(dir.join("ups1.dev"), contents).unwrap();
}

/// upsd + one dummy-ups `ups1` reading `ups1.dev` in `dir`.
#[allow(missing_docs)]
pub struct Nut {
    pub upsd: KillOnDrop,
    pub driver: KillOnDrop,
    pub port: u16,
}

/// Starts upsd on a free loopback port and `dummy-ups` for `ups1`
/// (on line, 100 %); `None` when nut-server is missing outside CI (under
/// `CI=true` a missing peer panics, see [`require_peer`]).
pub fn start_nut(d: &Path) -> Option<Nut> {
    let upsd = require_peer(
        &["/lib/nut/upsd", "/usr/lib/nut/upsd", "/usr/sbin/upsd"],
        "nut-server",
    )?;
    let driver = require_peer(
        &["/lib/nut/dummy-ups", "/usr/lib/nut/dummy-ups"],
        "nut-server",
    )?;
    std::fs::write(d.join("ups1.dev"), dev("OL", 100)).unwrap();
    Some(start_upsd(
        d,
        &upsd,
        &driver,
        "[ups1]\n  driver = dummy-ups\n  port = ups1.dev\n  desc = \"e2e\"\n",
        "[upsmon]\n  password = monpw\n  upsmon secondary\n",
        "dummy-ups-ups1",
    ))
}

/// Writes `ups.conf` and `upsd.users`, starts `driver -a ups1`, waits for
/// its socket `sock`, then starts upsd on a free loopback port.
fn start_upsd(
    d: &Path,
    upsd: &Path,
    driver: &Path,
    ups_conf: &str,
    users: &str,
    sock: &str,
) -> Nut {
    let port = free_port();
    std::fs::write(d.join("ups.conf"), ups_conf).unwrap();
    std::fs::write(d.join("upsd.conf"), format!("LISTEN 127.0.0.1 {port}\n")).unwrap();
    std::fs::write(d.join("upsd.users"), users).unwrap();
    let driver_child = KillOnDrop(nut_cmd(driver, d).args(["-a", "ups1"]).spawn().unwrap());
    let t0 = Instant::now();
    while !d.join(sock).exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{} did not start",
            driver.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let upsd = KillOnDrop(nut_cmd(upsd, d).spawn().unwrap());
    wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(10)).unwrap();
    Nut {
        upsd,
        driver: driver_child,
        port,
    }
}

impl Nut {
    /// Waits until upsd serves `ups1`'s `ups.status` as `want` (dummy-ups
    /// takes a moment to hand its first reading over; until then upsd
    /// answers `ERR DATA-STALE` or a `WAIT` status). Panics after
    /// `timeout`.
    pub fn wait_status(&self, want: &str, timeout: Duration) {
        use std::io::{BufRead, BufReader, Write};
        let t0 = Instant::now();
        let mut last = String::new();
        while t0.elapsed() < timeout {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                if s.write_all(b"GET VAR ups1 ups.status\n").is_ok() {
                    last.clear();
                    let _ = BufReader::new(&s).read_line(&mut last);
                    if last.trim_end() == format!("VAR ups1 ups.status \"{want}\"") {
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("upsd never served ups.status {want:?} (last answer {last:?})");
    }
}

/// Starts upsd on a free loopback port with NUT's `nutdrv_qx` driver
/// (`protocol = megatec`; `ondelay = 0`: after a cut the output returns
/// as soon as mains is back) for `ups1` on the serial port `tty` (a
/// [`crate::megatec::MegatecUps`]). `upsd.users` has `upsmon`
/// (`upsmon secondary`, password `monpw`) and `admin` (password
/// `adminpw`, `actions = SET FSD`, `instcmds = ALL`), so that `SET VAR
/// ups.delay.shutdown` and `INSTCMD shutdown.return` are allowed.
/// `None` when nut-server is missing outside CI.
pub fn start_nut_megatec(d: &Path, tty: &Path) -> Option<Nut> {
    let upsd = require_peer(
        &["/lib/nut/upsd", "/usr/lib/nut/upsd", "/usr/sbin/upsd"],
        "nut-server",
    )?;
    let driver = require_peer(
        &["/lib/nut/nutdrv_qx", "/usr/lib/nut/nutdrv_qx"],
        "nut-server",
    )?;
    Some(start_upsd(
        d,
        &upsd,
        &driver,
        &format!(
            "[ups1]\n  driver = nutdrv_qx\n  protocol = megatec\n  port = {}\n  pollinterval = 1\n  ondelay = 0\n  desc = \"e2e megatec\"\n",
            tty.display()
        ),
        "[upsmon]\n  password = monpw\n  upsmon secondary\n\
         [admin]\n  password = adminpw\n  actions = SET FSD\n  instcmds = ALL\n",
        "nutdrv_qx-ups1",
    ))
}
