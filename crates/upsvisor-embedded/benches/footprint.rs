//! The firmware build's footprint (issue 18, part 7): the stripped size of
//! `upsvisor-embedded` built with the `firmware` profile, and its peak
//! resident memory while polling a 20-host vCenter (the govmomi simulator)
//! and reading a UPS from a real upsd, with its journal
//! (`UPSVISOR_JOURNAL`) and without, against the floor of NUT's own C
//! client reading the same UPS.
//!
//! Run: `cargo bench -p upsvisor-embedded --bench footprint` (it builds the
//! firmware profile first). Figures go to docs/BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(unexpected_cfgs)] // its `ureq` feature is the soap crate's
#[path = "../../upsvisor-soap/tests/common/mod.rs"]
mod vcsim;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use upsvisor_testkit::{TempDir, nut, require_peer};

const HOSTS: usize = 20;
const CYCLES: &str = "5";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// Peak RSS in KiB and wall seconds of `cmd`, from GNU time.
fn peak(cmd: &mut Command, out: &std::path::Path) -> (u64, f64) {
    let time = require_peer(&["/usr/bin/time"], "time").expect("GNU time");
    let mut t = Command::new(time);
    t.arg("-f")
        .arg("%M %e")
        .arg("-o")
        .arg(out)
        .arg(cmd.get_program());
    t.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => t.env(k, v),
            None => t.env_remove(k),
        };
    }
    let o = t.output().expect("run under time");
    assert!(
        o.status.success(),
        "{:?} failed: {}\n{}",
        cmd.get_program(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let s = std::fs::read_to_string(out).unwrap();
    let mut w = s.split_whitespace();
    (
        w.next().unwrap().parse().unwrap(),
        w.next().unwrap().parse().unwrap(),
    )
}

fn main() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "-p", "upsvisor-embedded", "--profile", "firmware"])
        .status()
        .expect("cargo build");
    assert!(st.success(), "firmware build failed");
    let bin = target_dir().join("firmware/upsvisor-embedded");
    let size = std::fs::metadata(&bin).expect("firmware binary").len();

    let sim = vcsim::Sim::start(&[
        "-mode=vpx",
        "-clusters=2",
        "-cluster-hosts=10",
        "-standalone=0",
        "-vms=100",
        "-seed=3",
    ])
    .expect("vcsim");
    let truth = sim.truth();
    assert_eq!(truth.hosts.len(), HOSTS);
    let vms: usize = truth.hosts.iter().map(|h| h.vms.len()).sum();
    let d = TempDir::new("footprint");
    let ups = nut::start_nut(d.path()).expect("upsd");
    ups.wait_status("OL", Duration::from_secs(15));
    let pw = d.path().join("password");
    std::fs::write(&pw, "pass\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let names: Vec<&str> = truth.hosts.iter().map(|h| h.name.as_str()).collect();

    let mut run = Command::new(&bin);
    run.env_clear()
        .env("UPSVISOR_NUT", format!("127.0.0.1:{}", ups.port))
        .env("UPSVISOR_VSPHERE_URL", &sim.url)
        .env("UPSVISOR_VSPHERE_USER", "user")
        .env("UPSVISOR_VSPHERE_PASSWORD_FILE", &pw)
        .env("UPSVISOR_VSPHERE_THUMBPRINT", &sim.thumbprint)
        .env("UPSVISOR_HOSTS", names.join(","))
        .env("UPSVISOR_CYCLES", CYCLES)
        .env("UPSVISOR_PERIOD_S", "1");
    let (bare_rss, _) = peak(&mut run, &d.path().join("time-embedded-bare"));
    // As it should be deployed: with its journal (restart safety).
    let journal = d.path().join("upsvisor.journal");
    run.env("UPSVISOR_JOURNAL", &journal);
    let (rss, wall) = peak(&mut run, &d.path().join("time-embedded"));
    let journal_len = std::fs::metadata(&journal).expect("journal written").len();

    let upsc = require_peer(&["/usr/bin/upsc", "/bin/upsc"], "nut-client").expect("upsc");
    let mut floor = Command::new(upsc);
    floor.arg(format!("ups1@127.0.0.1:{}", ups.port));
    let (floor_rss, _) = peak(&mut floor, &d.path().join("time-upsc"));

    println!("firmware build of upsvisor-embedded (opt-level s, LTO, panic abort, stripped)");
    println!(
        "  size: {size} bytes ({:.2} MiB)",
        size as f64 / 1_048_576.0
    );
    let mib = rss as f64 / 1024.0;
    println!(
        "  peak RSS polling {HOSTS} hosts / {vms} VMs through one vCenter session, {CYCLES} cycles, reading upsd, with UPSVISOR_JOURNAL: {rss} KiB ({mib:.1} MiB), {wall:.1} s wall; journal {journal_len} bytes"
    );
    println!("  the same without a journal: {bare_rss} KiB");
    println!(
        "  floor: upsc reading the same UPS once: {floor_rss} KiB; ratio {:.1}x",
        rss as f64 / floor_rss as f64
    );
}
