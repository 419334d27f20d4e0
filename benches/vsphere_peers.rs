//! The in-process side of `scripts/bench-peers` (issue 17, item 5): run
//! against a vSphere simulator (harness/vcsim) that the script started, so
//! every peer in the table meets the same server in the same run.
//!
//! ```text
//! vsphere_peers inventory TRUTH URL THUMBPRINT RUNS
//! vsphere_peers mob       TRUTH URL THUMBPRINT RUNS
//! vsphere_peers mob-esx   TRUTH URL THUMBPRINT RUNS
//! vsphere_peers shutdown  TRUTH URL THUMBPRINT HOST[,HOST...]
//! ```
//!
//! `TRUTH` is the simulator's `/truth` document (JSON) saved to a file;
//! `URL` its `https://127.0.0.1:P/sdk`; `THUMBPRINT` its certificate's
//! SHA-256 (`AB:CD:..`); account `user`/`pass`. Each mode prints
//! `vsphere_peers KEY=VALUE ...` lines (times in milliseconds: the median
//! of `RUNS` timed runs after one untimed one):
//!
//! - `inventory`: every host of the vCenter as a `SoapTransport`, all
//!   [`SoapTransport::share`]d over one session, polled at once (the
//!   library's inventory of the whole vCenter, in-process).
//! - `mob`: one host of the vCenter, its inventory through MOB pages (per
//!   VM) against SOAP (bulk `RetrievePropertiesEx`), then every host at
//!   once the same two ways; `mob-esx`: the same for an ESXi host reached
//!   directly (a simulator in `-mode=esx`).
//! - `shutdown`: the engine (poller, policy and sequencer with their
//!   shipped defaults: 32 commands in flight, 4 per host; the poller's 16
//!   hosts at once as `upsvisord` ships it) over the listed hosts, fed by a
//!   UPS that reads on battery; no host shutdown, no UPS command. Times the
//!   episode from its start to the moment every running VM's
//!   `ShutdownGuest` had been answered (`all_answered_ms`: the simulator's
//!   guests are off when it answers) and to the sequencer's own end of the
//!   stopping phase, once a poll has shown every VM off (`episode_ms`),
//!   with when the first command went out
//!   (`UPSVISOR_PEERS_AUDIT=FILE` writes the episode's audit as JSON lines).

#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::executor::block_on;
use futures::future::join_all;
use serde_json::Value;
use upsvisor::mob::{MobConfig, MobTransport};
use upsvisor::soap::{HostSelector, SoapConfig, SoapTransport};
use upsvisor::{
    Audit, Clock, Credentials, DeviceCapabilities, DeviceCommand, DeviceId, Engine, EngineEvent,
    FinalAction, HostEntry, HostId, HostTransport, Inventory, Outlet, PolicyConfig, PollerConfig,
    PowerDevice, PowerStatus, SequencerConfig, StatusToken, SystemClock, TransportKind,
};

struct Host {
    moref: String,
    name: String,
    vms: usize,
    running: usize,
}

fn truth(path: &str) -> Vec<Host> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: Value = serde_json::from_str(&text).expect("truth JSON");
    v["hosts"]
        .as_array()
        .expect("truth.hosts")
        .iter()
        .map(|h| Host {
            moref: h["ref"].as_str().expect("host ref").to_owned(),
            name: h["name"].as_str().expect("host name").to_owned(),
            vms: h["vms"].as_array().map_or(0, Vec::len),
            running: h["vms"].as_array().map_or(0, |v| {
                v.iter().filter(|v| v["power_state"] == "poweredOn").count()
            }),
        })
        .collect()
}

fn soap(url: &str, thumbprint: &str, host: HostSelector) -> SoapTransport {
    let cfg = SoapConfig::new(url, Credentials::new("user", "pass"))
        .host(host)
        .timeout(Duration::from_secs(300))
        .task_timeout(Duration::from_secs(60))
        .pin_thumbprint(thumbprint)
        .expect("thumbprint");
    SoapTransport::new(cfg).expect("soap transport")
}

fn mob(url: &str, thumbprint: &str, host: &str) -> MobTransport {
    let base = url.trim_end_matches("/sdk");
    let cfg = MobConfig::new(base, Credentials::new("user", "pass"))
        .host(host)
        .timeout(Duration::from_secs(300))
        .pin_thumbprint(thumbprint)
        .expect("thumbprint");
    MobTransport::new(cfg).expect("mob transport")
}

/// Median, min and max of `runs` timed runs after one untimed one, in ms.
fn measure(runs: usize, f: impl FnMut()) -> (f64, f64, f64) {
    measure_after(1, runs, f)
}

/// Median, min and max of `runs` timed runs after `warmup` untimed ones, in ms.
fn measure_after(warmup: usize, runs: usize, mut f: impl FnMut()) -> (f64, f64, f64) {
    for _ in 0..warmup {
        f();
    }
    let mut t: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let s = std::time::Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2], t[0], t[t.len() - 1])
}

fn print(fields: &[(&str, String)]) {
    let line: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("vsphere_peers {}", line.join(" "));
}

fn inventory_all<T: HostTransport>(ts: &[T]) -> usize {
    block_on(join_all(ts.iter().map(|t| t.inventory())))
        .into_iter()
        .map(|r| r.expect("inventory").vms.len())
        .sum()
}

fn inventory(hosts: &[Host], url: &str, tp: &str, runs: usize) {
    let want: usize = hosts.iter().map(|h| h.vms).sum();
    let first = soap(url, tp, HostSelector::Name(hosts[0].name.clone()));
    let all: Vec<SoapTransport> = hosts
        .iter()
        .map(|h| first.share(HostSelector::Name(h.name.clone())))
        .collect();
    let (med, min, max) = measure(runs, || assert_eq!(inventory_all(&all), want));
    print(&[
        ("case", "library_inventory".into()),
        ("hosts", hosts.len().to_string()),
        ("vms", want.to_string()),
        ("median_ms", format!("{med:.1}")),
        ("min_ms", format!("{min:.1}")),
        ("max_ms", format!("{max:.1}")),
        ("runs", runs.to_string()),
    ]);
}

/// An ESXi host reached directly (the simulator in `-mode=esx`): its own
/// MOB pages against its own SOAP endpoint.
fn mob_vs_soap_esx(hosts: &[Host], url: &str, tp: &str, runs: usize) {
    let vms = hosts[0].vms;
    let base = url.trim_end_matches("/sdk");
    let m = MobTransport::new(
        MobConfig::new(base, Credentials::new("user", "pass"))
            .timeout(Duration::from_secs(300))
            .pin_thumbprint(tp)
            .expect("thumbprint"),
    )
    .expect("mob transport");
    let s = soap(url, tp, HostSelector::Only);
    let (mob_ms, ..) = measure(runs, || {
        assert_eq!(block_on(m.inventory()).expect("mob").vms.len(), vms)
    });
    let (soap_ms, ..) = measure(runs, || {
        assert_eq!(block_on(s.inventory()).expect("soap").vms.len(), vms)
    });
    print(&[
        ("case", "mob_vs_soap_esxi_host".into()),
        ("vms", vms.to_string()),
        ("mob_ms", format!("{mob_ms:.1}")),
        ("soap_ms", format!("{soap_ms:.1}")),
        ("runs", runs.to_string()),
    ]);
}

/// Through the vCenter: one of its hosts, then all of them at once.
fn mob_vs_soap(hosts: &[Host], url: &str, tp: &str, runs: usize) {
    let one = &hosts[0];
    let m = mob(url, tp, &one.moref);
    let s = soap(url, tp, HostSelector::MoRef(one.moref.clone()));
    let (mob_one, ..) = measure(runs, || {
        assert_eq!(block_on(m.inventory()).expect("mob").vms.len(), one.vms)
    });
    let (soap_one, ..) = measure(runs, || {
        assert_eq!(block_on(s.inventory()).expect("soap").vms.len(), one.vms)
    });
    print(&[
        ("case", "mob_vs_soap_one_vcenter_host".into()),
        ("vms", one.vms.to_string()),
        ("mob_ms", format!("{mob_one:.1}")),
        ("soap_ms", format!("{soap_one:.1}")),
        ("runs", runs.to_string()),
    ]);

    let want: usize = hosts.iter().map(|h| h.vms).sum();
    let mobs: Vec<MobTransport> = hosts.iter().map(|h| mob(url, tp, &h.moref)).collect();
    let first = soap(url, tp, HostSelector::MoRef(hosts[0].moref.clone()));
    let soaps: Vec<SoapTransport> = hosts
        .iter()
        .map(|h| first.share(HostSelector::MoRef(h.moref.clone())))
        .collect();
    // The MOB side costs one page per VM: one timed run, no warm-up (the
    // one-host case above already warmed the server's MOB pages).
    let mob_runs = 1;
    let (mob_all, ..) = measure_after(0, mob_runs, || assert_eq!(inventory_all(&mobs), want));
    let (soap_all, ..) = measure(runs, || assert_eq!(inventory_all(&soaps), want));
    print(&[
        ("case", "mob_vs_soap_all_hosts".into()),
        ("hosts", hosts.len().to_string()),
        ("vms", want.to_string()),
        ("mob_ms", format!("{mob_all:.1}")),
        ("soap_ms", format!("{soap_all:.1}")),
        ("mob_runs", mob_runs.to_string()),
        ("soap_runs", runs.to_string()),
    ]);
}

/// A UPS that reads on battery from the start, with an hour of runtime.
struct OnBattery;

#[async_trait]
impl PowerDevice for OnBattery {
    async fn status(&self) -> upsvisor::Result<PowerStatus> {
        let mut s = PowerStatus::from_tokens(StatusToken::parse_list("OB DISCHRG"));
        s.runtime_s = Some(3600);
        s.charge_pct = Some(90.0);
        Ok(s)
    }
    async fn capabilities(&self) -> upsvisor::Result<DeviceCapabilities> {
        Ok(DeviceCapabilities::default())
    }
    async fn command(&self, _: DeviceCommand) -> upsvisor::Result<()> {
        Ok(())
    }
}

fn shutdown(hosts: &[Host], url: &str, tp: &str, names: &str) {
    let chosen: Vec<&Host> = names
        .split(',')
        .map(|n| {
            hosts
                .iter()
                .find(|h| h.name == n)
                .unwrap_or_else(|| panic!("{n}: no such host in the truth"))
        })
        .collect();
    let want: usize = chosen.iter().map(|h| h.running).sum();
    let ids: Vec<HostId> = chosen.iter().map(|h| HostId::from(&*h.name)).collect();
    let address = url.trim_start_matches("https://").trim_end_matches("/sdk");
    let inventory = Inventory::new(
        ids.iter()
            .map(|id| HostEntry::new(id.clone(), address, TransportKind::Soap))
            .collect(),
        vec![Outlet::new("ups", "main", ids.clone())],
    );
    let clock = Arc::new(SystemClock::new());
    let mut seq = SequencerConfig::default();
    seq.final_action(FinalAction::None);
    seq.shutdown_hosts(false);
    let mut policy = PolicyConfig::default();
    policy
        .on_battery_for(Some(Duration::ZERO))
        .debounce(Duration::ZERO);
    // upsvisord's shipped poller: 16 hosts at once.
    let mut poller = PollerConfig::default();
    poller.max_concurrency(16);
    let mut engine = Engine::new(
        clock.clone() as Arc<dyn Clock>,
        inventory,
        poller,
        policy,
        seq,
    )
    .expect("valid inventory");
    let first = soap(url, tp, HostSelector::Name(chosen[0].name.clone()));
    for (id, h) in ids.iter().zip(&chosen) {
        engine
            .add_host(
                id,
                Arc::new(first.share(HostSelector::Name(h.name.clone()))),
            )
            .expect("known host");
    }
    engine.add_device(DeviceId::from("ups"), Arc::new(OnBattery));
    let mut events = engine.subscribe(1 << 20);
    // Episode-relative times (ms) of the first command issued and of the
    // last command answered.
    let (mut first_issued, mut last_completed) = (None::<u64>, None::<u64>);
    let (mut answered, mut failed) = (0usize, 0usize);
    // When every running VM's ShutdownGuest had been answered,
    // episode-relative ms. The guests stop later (the harness's
    // -guest-shutdown-ms, as vSphere's call "returns immediately"), or at
    // once when that is 0.
    let mut all_answered = None::<u64>;
    let mut episode_at = None::<upsvisor::Instant>;

    // UPSVISOR_PEERS_AUDIT=FILE: every audit line of the episode, as JSON.
    let mut audit_log = std::env::var_os("UPSVISOR_PEERS_AUDIT")
        .map(|p| std::io::BufWriter::new(std::fs::File::create(p).expect("audit log file")));
    let start = std::time::Instant::now();
    let mut phases: BTreeMap<String, u64> = BTreeMap::new();
    let limit = Duration::from_secs(900);
    let done = loop {
        block_on(engine.run_until(clock.now() + Duration::from_millis(20)));
        while let Some(ev) = events.try_next() {
            let EngineEvent::Audit(a) = &*ev else {
                continue;
            };
            if let Some(f) = audit_log.as_mut() {
                use std::io::Write;
                let line = serde_json::to_string(a).expect("audit JSON");
                writeln!(f, "{line}").expect("audit log");
            }
            let t0 = *episode_at.get_or_insert(a.at);
            let rel = a.at.saturating_since(t0).as_millis() as u64;
            match &a.what {
                Audit::Issued { .. } => {
                    first_issued.get_or_insert(rel);
                }
                Audit::Completed { error, .. } => {
                    last_completed = Some(rel);
                    if error.is_some() {
                        failed += 1;
                    } else {
                        answered += 1;
                    }
                }
                Audit::Phase { phase } => {
                    phases.entry(phase.clone()).or_insert(rel);
                }
                _ => {}
            }
        }
        if answered >= want && all_answered.is_none() {
            all_answered = last_completed;
        }
        // Done when the sequencer itself has seen every VM off and left
        // the stopping phase (`stopped` counts VMs it sent a command to).
        if let Some(st) = engine.sequencer().status() {
            if st.phase.starts_with("down") {
                break answered >= want;
            }
        }
        if start.elapsed() > limit {
            break false;
        }
    };
    // From the episode's first audit line (its start) to the slice in which
    // the sequencer had seen every VM off (20 ms slices).
    let episode = episode_at.map_or(0.0, |t0| {
        clock.now().saturating_since(t0).as_secs_f64() * 1e3
    });
    let total = start.elapsed().as_secs_f64() * 1e3;
    let stopped = engine.sequencer().status().map_or(0, |s| s.stopped);
    print(&[
        ("case", "engine_shutdown".into()),
        ("hosts", chosen.len().to_string()),
        ("vms", want.to_string()),
        ("stopped", stopped.to_string()),
        ("answered", answered.to_string()),
        (
            "all_answered_ms",
            all_answered.map_or("none".into(), |t| t.to_string()),
        ),
        ("complete", done.to_string()),
        ("episode_ms", format!("{episode:.0}")),
        (
            "first_issued_ms",
            first_issued.map_or("none".into(), |t| t.to_string()),
        ),
        (
            "last_answered_ms",
            last_completed.map_or("none".into(), |t| t.to_string()),
        ),
        ("failed_commands", failed.to_string()),
        ("from_start_ms", format!("{total:.0}")),
    ]);
    for (phase, at) in phases {
        eprintln!("vsphere_peers: phase {phase:?} from {at} ms");
    }
    if !done {
        std::process::exit(1);
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let usage = "usage: vsphere_peers inventory|mob|mob-esx TRUTH URL THUMBPRINT RUNS | shutdown TRUTH URL THUMBPRINT HOST[,HOST...]";
    if args.len() != 5 {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    let hosts = truth(&args[1]);
    assert!(!hosts.is_empty(), "the truth lists no host");
    let (url, tp) = (&args[2], &args[3]);
    let runs = || args[4].parse::<usize>().expect("RUNS");
    match args[0].as_str() {
        "inventory" => inventory(&hosts, url, tp, runs()),
        "mob" => mob_vs_soap(&hosts, url, tp, runs()),
        "mob-esx" => mob_vs_soap_esx(&hosts, url, tp, runs()),
        "shutdown" => shutdown(&hosts, url, tp, &args[4]),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
