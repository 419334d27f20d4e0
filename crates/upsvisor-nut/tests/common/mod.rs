//! Shared harness: a upsd with dummy-ups drivers in a temp dir.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::executor::block_on;
use upsvisor_core::{Credentials, PowerDevice, PowerStatus};
use upsvisor_nut::{NutClient, NutConfig, NutDevice, parse_upsc_dump, status_from_vars};
use upsvisor_testkit::{KillOnDrop, TempDir, free_port, require_peer, wait_for_port};

pub const ADMIN: &str = "admin";
pub const ADMIN_PW: &str = "s3cret-pw";

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A upsd with dummy-ups drivers in a temp dir.
pub struct Nut {
    // Processes first: fields drop in order, and the dir must outlive them.
    pub upsd: Option<KillOnDrop>,
    pub drivers: Vec<(String, KillOnDrop)>,
    pub port: u16,
    pub upsd_bin: PathBuf,
    pub dir: TempDir,
}

impl Nut {
    /// `upses`: (name, data file name, contents). `maxage`: upsd's MAXAGE.
    pub fn start(upses: &[(&str, &str, String)], maxage: Option<u32>) -> Option<Nut> {
        Nut::start_with(upses, maxage, "")
    }

    /// As `start`, with extra lines for upsd.conf.
    pub fn start_with(
        upses: &[(&str, &str, String)],
        maxage: Option<u32>,
        extra_conf: &str,
    ) -> Option<Nut> {
        let upsd_bin = require_peer(
            &["/lib/nut/upsd", "/usr/lib/nut/upsd", "/usr/sbin/upsd"],
            "nut-server",
        )?;
        let driver = require_peer(
            &["/lib/nut/dummy-ups", "/usr/lib/nut/dummy-ups"],
            "nut-server",
        )?;
        let dir = TempDir::new("nut");
        let port = free_port();
        let mut ups_conf = String::new();
        for (name, file, contents) in upses {
            std::fs::write(dir.path().join(file), contents).unwrap();
            ups_conf += &format!(
                "[{name}]\n  driver = dummy-ups\n  port = {file}\n  desc = \"test {name}\"\n"
            );
        }
        std::fs::write(dir.path().join("ups.conf"), ups_conf).unwrap();
        let mut upsd_conf = format!("LISTEN 127.0.0.1 {port}\n");
        if let Some(m) = maxage {
            upsd_conf += &format!("MAXAGE {m}\n");
        }
        upsd_conf += extra_conf;
        std::fs::write(dir.path().join("upsd.conf"), upsd_conf).unwrap();
        std::fs::write(
            dir.path().join("upsd.users"),
            format!(
                "[{ADMIN}]\n  password = {ADMIN_PW}\n  actions = SET\n  actions = FSD\n  instcmds = ALL\n  upsmon primary\n\
                 [viewer]\n  password = viewpw\n  upsmon secondary\n\
                 [fsdonly]\n  password = fsdpw\n  actions = FSD\n"
            ),
        )
        .unwrap();
        let mut nut = Nut {
            upsd: None,
            drivers: Vec::new(),
            port,
            upsd_bin,
            dir,
        };
        for (name, _, _) in upses {
            let child = nut.cmd(&driver).args(["-a", name]).spawn().unwrap();
            nut.drivers.push((name.to_string(), KillOnDrop(child)));
        }
        for (name, _, _) in upses {
            let sock = nut.dir.path().join(format!("dummy-ups-{name}"));
            let t0 = Instant::now();
            while !sock.exists() {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "dummy-ups {name} did not start"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        nut.start_upsd();
        for (name, _, _) in upses {
            nut.wait_ready(name);
        }
        Some(nut)
    }

    pub fn cmd(&self, bin: &Path) -> Command {
        let mut c = Command::new(bin);
        c.env("NUT_CONFPATH", self.dir.path())
            .env("NUT_STATEPATH", self.dir.path())
            .env("NUT_ALTPIDPATH", self.dir.path())
            .arg("-F")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if is_root() {
            // Started as root, NUT daemons switch to the `nut` user, which
            // cannot read the temp dir; stay root instead.
            c.args(["-u", "root"]);
        }
        c
    }

    pub fn start_upsd(&mut self) {
        let child = self.cmd(&self.upsd_bin).spawn().unwrap();
        self.upsd = Some(KillOnDrop(child));
        wait_for_port(([127, 0, 0, 1], self.port).into(), Duration::from_secs(10)).unwrap();
    }

    /// Waits until upsd has the driver's data (status no longer `WAIT`).
    pub fn wait_ready(&self, ups: &str) {
        let mut c = NutClient::new(self.cfg(ups)).unwrap();
        let t0 = Instant::now();
        loop {
            if let Ok(s) = c.get_var("ups.status") {
                if s != "WAIT" {
                    return;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "{ups} never became ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn cfg(&self, ups: &str) -> NutConfig {
        NutConfig::new(ups)
            .port(self.port)
            .call_timeout(Duration::from_secs(3))
    }

    pub fn admin(&self, ups: &str) -> NutDevice {
        NutDevice::new(self.cfg(ups).credentials(Credentials::new(ADMIN, ADMIN_PW))).unwrap()
    }

    pub fn driver_pid(&self, ups: &str) -> u32 {
        self.drivers
            .iter()
            .find(|(n, _)| n == ups)
            .unwrap()
            .1
            .0
            .id()
    }

    pub fn signal(&self, ups: &str, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.driver_pid(ups).to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// Rewrites a `.dev` file so that dummy-ups sees a new modification
    /// time (it compares whole seconds).
    pub fn rewrite(&self, file: &str, contents: &str) {
        std::thread::sleep(Duration::from_millis(1100));
        std::fs::write(self.dir.path().join(file), contents).unwrap();
    }
}

pub fn expected(file: &str) -> PowerStatus {
    let text = std::fs::read_to_string(data(file)).unwrap();
    let vars = parse_upsc_dump(&text).unwrap();
    status_from_vars(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Polls `dev` until `pred` holds; returns the status that satisfied it.
pub fn poll_until(dev: &NutDevice, secs: u64, pred: impl Fn(&PowerStatus) -> bool) -> PowerStatus {
    let t0 = Instant::now();
    loop {
        let s = block_on(dev.status()).unwrap();
        if pred(&s) {
            return s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "condition not reached in {secs}s; last status {s:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn simple_dev(status: &str, charge: u32) -> String {
    format!(
        "ups.status: {status}\nbattery.charge: {charge}\nbattery.runtime: {}\nups.load: 20\nups.delay.shutdown: 20\n",
        charge * 30
    )
}
