//! Conformance: every recording of a real SNMP agent in
//! `../shared/data/snmprec/` (LibreNMS's `tests/snmpsim/` captures, see its
//! README), served by snmpsim (PyPI, in the venv `scripts/install-deps`
//! creates) on loopback with community = file base name, and read through
//! [`SnmpDevice`] over SNMPv1 and v2c.
//!
//! Each case states what the recording's raw objects say (values quoted in
//! the comments, `OID|type|value` as in the file) and the test checks the
//! MIB chosen, the source, charge, runtime and load — or, where the
//! recording lacks what a status needs, that the error names it. A
//! recording without a case fails the test, so a new capture cannot slip
//! through unread. Under `CI=true` a missing corpus or snmpsim fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::executor::block_on;
use upsvisor_core::{ErrorKind, PowerDevice, PowerSource};
use upsvisor_snmp::{Mib, MibSelection, Security, SnmpConfig, SnmpDevice};
use upsvisor_testkit::{
    KillOnDrop, TempDir, free_udp_port, is_root, require_corpus, require_venv_tool,
};

/// What a recording must read as.
enum Expect {
    Status {
        mib: Mib,
        source: PowerSource,
        charge: Option<f32>,
        runtime: Option<u32>,
        load: Option<f32>,
    },
    /// The MIB is found, and the status is an error naming these.
    Error {
        mib: Mib,
        names: &'static [&'static str],
    },
}

fn status(
    mib: Mib,
    source: PowerSource,
    charge: Option<f32>,
    runtime: Option<u32>,
    load: Option<f32>,
) -> Expect {
    Expect::Status {
        mib,
        source,
        charge,
        runtime,
        load,
    }
}

fn cases() -> Vec<(&'static str, Expect)> {
    use PowerSource::*;
    vec![
        // sysObjectID 318.1.3.4.8; rPDUIdentName absent, rPDUIdentModelNumber
        // "AP7900B"; no rPDUOutletStatus rows were recorded.
        (
            "apc_ap7900b",
            Expect::Error {
                mib: Mib::ApcPdu,
                names: &[
                    "rPDUOutletStatusOutletState",
                    ".1.3.6.1.4.1.318.1.1.12.3.5.1.1.4",
                ],
            },
        ),
        // upsBasicOutputStatus 2 (onLine); upsAdvBatteryCapacity 66|100;
        // upsAdvBatteryRunTimeRemaining 67|756000 (7560 s); upsAdvOutputLoad 66|31.
        (
            "apc_powerchute",
            status(Mib::ApcUps, OnLine, Some(100.0), Some(7560), Some(31.0)),
        ),
        // onLine; only upsHighPrecBatteryCapacity 66|1000 (100.0 %);
        // runtime 67|10976200 (109762 s, no load); upsHighPrecOutputLoad 66|0.
        (
            "apc_smt750x-nmc2",
            status(Mib::ApcUps, OnLine, Some(100.0), Some(109_762), Some(0.0)),
        ),
        // onLine; upsHighPrecBatteryCapacity 66|1000; runtime 67|570900;
        // upsHighPrecOutputLoad 66|202 (20.2 %), no upsAdvOutputLoad.
        (
            "apc_smx750i",
            status(Mib::ApcUps, OnLine, Some(100.0), Some(5709), Some(20.2)),
        ),
        // sysObjectID 12551.4.0 (unknown: probed); upsOutputSource 5 (battery);
        // charge 100; upsEstimatedMinutesRemaining 6000; loads 25, 0, 0.
        (
            "cetpower",
            status(
                Mib::UpsMib,
                OnBattery,
                Some(100.0),
                Some(360_000),
                Some(25.0),
            ),
        ),
        // normal(3); charge 98; 31 min; load.1 26.
        (
            "dell-ups_tower1000w",
            status(Mib::UpsMib, OnLine, Some(98.0), Some(1860), Some(26.0)),
        ),
        // sysObjectID 534.1; xupsOutputSource 3 (normal); xupsBatCapacity 100;
        // xupsBatTimeRemaining 8620 s; xupsOutputLoad 25; ABM resting(4).
        (
            "eatonups",
            status(Mib::EatonXups, OnLine, Some(100.0), Some(8620), Some(25.0)),
        ),
        // sysObjectID 1.3.6.1.2.1.33; bypass(4); charge 100; 544 min;
        // loads 2, 14, 2 (the most loaded phase counts).
        (
            "generex-ups_cs141",
            status(Mib::UpsMib, Bypass, Some(100.0), Some(32_640), Some(14.0)),
        ),
        // Gauge32 values; runtime 66|4294967295 ("unknown"); charge 100; load 27.
        (
            "huaweiups_ups2000",
            status(Mib::UpsMib, OnLine, Some(100.0), None, Some(27.0)),
        ),
        // normal(3); no charge, no load recorded; 52 min.
        (
            "liebert_weblbds",
            status(Mib::UpsMib, OnLine, None, Some(3120), None),
        ),
        // normal(3); charge 100; 135 min; loads 8, 0, 0.
        (
            "netmanplus_204",
            status(Mib::UpsMib, OnLine, Some(100.0), Some(8100), Some(8.0)),
        ),
        // sysObjectID 850.1.1.1 (Tripp Lite); upsOutputSource other(1) with
        // upsSecondsOnBattery 0: on mains. Charge 100; 72 min; load 10.
        (
            "poweralert_ups",
            status(Mib::UpsMib, OnLine, Some(100.0), Some(4320), Some(10.0)),
        ),
    ]
}

/// snmpsim serving a copy of the corpus.
struct Snmpsim {
    _proc: KillOnDrop,
    port: u16,
    log: PathBuf,
    _dir: TempDir,
}

impl Snmpsim {
    fn start(corpus: &Path) -> Option<Snmpsim> {
        let bin = require_venv_tool("snmpsim-command-responder", "snmpsim")?;
        let dir = TempDir::new("snmpsim");
        let data = dir.path().join("data");
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&cache).unwrap();
        for e in std::fs::read_dir(corpus).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "snmprec") {
                std::fs::copy(&p, data.join(p.file_name().unwrap())).unwrap();
            }
        }
        let port = free_udp_port();
        let log = dir.path().join("snmpsim.log");
        let mut cmd = Command::new(&bin);
        cmd.arg(format!("--data-dir={}", data.display()))
            .arg(format!("--cache-dir={}", cache.display()))
            .arg(format!("--agent-udpv4-endpoint=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("snmpsim.err")).unwrap());
        if is_root() {
            // snmpsim refuses to run as root; it drops to nobody, which
            // must be able to write its index cache.
            use std::os::unix::fs::PermissionsExt;
            for d in [dir.path(), data.as_path()] {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
            cmd.args(["--process-user=nobody", "--process-group=nogroup"]);
        }
        let proc = KillOnDrop(cmd.spawn().expect("start snmpsim"));
        let sim = Snmpsim {
            _proc: proc,
            port,
            log,
            _dir: dir,
        };
        // Indexing the recordings takes a few seconds on first start.
        let t0 = Instant::now();
        loop {
            let probe = sim.device("poweralert_ups", Security::v2c("poweralert_ups"));
            if block_on(probe.mib()).is_ok() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(90),
                "snmpsim did not answer within 90 s:\n{}",
                sim.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        Some(sim)
    }

    fn device(&self, _case: &str, security: Security) -> SnmpDevice {
        SnmpDevice::new(
            SnmpConfig::new(format!("127.0.0.1:{}", self.port))
                .with_security(security)
                .with_timeout(Duration::from_millis(1500))
                .with_retries(1),
        )
        .unwrap()
    }

    fn logs(&self) -> String {
        let err = self.log.with_file_name("snmpsim.err");
        format!(
            "{}\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            std::fs::read_to_string(err).unwrap_or_default()
        )
    }
}

#[test]
fn every_recording_reads_as_its_raw_objects_say() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let Some(corpus) = require_corpus(&root, "snmprec") else {
        return;
    };
    let cases = cases();
    let mut files: Vec<String> = std::fs::read_dir(&corpus)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "snmprec").then(|| p.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    files.sort();
    let known: Vec<&str> = cases.iter().map(|(n, _)| *n).collect();
    for f in &files {
        assert!(
            known.contains(&f.as_str()),
            "{f}.snmprec has no expected reading in this test: add one"
        );
    }
    assert_eq!(files.len(), cases.len(), "cases without a recording");
    let Some(sim) = Snmpsim::start(&corpus) else {
        return;
    };

    let mut report = Vec::new();
    for (name, expect) in &cases {
        for (ver, sec) in [("v1", Security::v1(*name)), ("v2c", Security::v2c(*name))] {
            let case = format!("{name}.snmprec ({ver})");
            let dev = sim.device(name, sec);
            let mib = block_on(dev.mib())
                .unwrap_or_else(|e| panic!("{case}: detection failed: {e}\n{}", sim.logs()));
            let got = block_on(dev.status());
            match expect {
                Expect::Status {
                    mib: want_mib,
                    source,
                    charge,
                    runtime,
                    load,
                } => {
                    assert_eq!(mib, *want_mib, "{case}: MIB");
                    let s = got.unwrap_or_else(|e| panic!("{case}: {e}"));
                    assert_eq!(s.source, *source, "{case}: source ({:?})", s.tokens);
                    assert_eq!(s.charge_pct, *charge, "{case}: charge");
                    assert_eq!(s.runtime_s, *runtime, "{case}: runtime");
                    assert_eq!(s.load_pct, *load, "{case}: load");
                    assert!(s.warnings.is_empty(), "{case}: {:?}", s.warnings);
                    report.push(format!(
                        "{case}: {} {:?} charge {:?} runtime {:?} load {:?}",
                        mib.name(),
                        s.source,
                        s.charge_pct,
                        s.runtime_s,
                        s.load_pct
                    ));
                }
                Expect::Error {
                    mib: want_mib,
                    names,
                } => {
                    assert_eq!(mib, *want_mib, "{case}: MIB");
                    let e = got.expect_err(&case);
                    assert_eq!(e.kind(), ErrorKind::NotFound, "{case}: {e}");
                    let m = e.to_string();
                    for n in *names {
                        assert!(m.contains(n), "{case}: error does not name {n}: {m}");
                    }
                    report.push(format!("{case}: {} error: {m}", mib.name()));
                }
            }
        }
    }
    // A MIB fixed in the configuration that the agent does not answer is an
    // error naming the missing objects, not an empty status.
    for (name, mib, missing) in [
        ("apc_powerchute", Mib::EatonXups, "xupsOutputSource"),
        ("eatonups", Mib::UpsMib, "upsOutputSource"),
        ("poweralert_ups", Mib::ApcUps, "upsBasicOutputStatus"),
    ] {
        let dev = SnmpDevice::new(
            SnmpConfig::new(format!("127.0.0.1:{}", sim.port))
                .with_security(Security::v2c(name))
                .with_mib(MibSelection::Fixed(mib))
                .with_timeout(Duration::from_millis(1500)),
        )
        .unwrap();
        let e = block_on(dev.status()).expect_err(name);
        assert_eq!(e.kind(), ErrorKind::NotFound, "{name}: {e}");
        assert!(e.to_string().contains(missing), "{name}: {e}");
        report.push(format!(
            "{name}.snmprec (v2c, fixed {}): error: {e}",
            mib.name()
        ));
    }

    // The per-case report, kept in the test output (`--nocapture`).
    for line in &report {
        println!("{line}");
    }
}
