//! Where a poll cycle's time goes at 10, 100 and 1,000 hosts × 20 VMs
//! (issue 17, item 3): the same cycle measured three ways in one run.
//!
//! - *full*: the poller against simulated hosts with 20 ms of real latency
//!   per request, concurrent, bulk inventory (what `benches/polling.rs`
//!   calls `concurrent_bulk`);
//! - *engine alone*: the same poller against a zero-latency transport that
//!   hands back a prebuilt copy of each host's inventory, so the cycle is
//!   only the poller's own work (futures, merge into the table);
//! - *simulator alone*: every simulated host's `inventory()` called at once
//!   with no latency and no poller, so the cycle is only the simulator's
//!   request cost;
//! - *prebuilt alone*: every prebuilt transport's `inventory()` at once, no
//!   poller: the fake transport's own copying, which *engine alone*
//!   includes (a deep copy of every record while `HostInventory` held
//!   plain `VmInfo`s, pointer copies since it shares them). *Engine alone*
//!   minus this is the poller and merge.
//!
//! Run: `cargo bench --bench engine_cycle` (`-- --quick`: 10 and 100 hosts,
//! fewer runs; `scripts/bench-peers` calls it). Prints one line per case,
//! `engine_cycle hosts=N case=C median_ms=M min_ms=L max_ms=H
//! cpu_median_ms=U runs=R` (U: the median on-CPU time of the thread that
//! runs the cycle, Linux only, `-` elsewhere), then a table. Times are wall clock on `futures::executor::block_on` (no
//! async runtime), as the daemon's one-shot commands poll.

#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use upsvisor::sim::{Estate, EstateSpec, SimHostConfig};
use upsvisor::{
    Capabilities, Clock, HostId, HostInfo, HostInventory, HostOp, HostTransport, Poller,
    PollerConfig, SystemClock, VmId, VmInfo, VmOp,
};

const LATENCY: Duration = Duration::from_millis(20);
const VMS_PER_HOST: usize = 20;

/// Answers every inventory at once with a copy of one prebuilt answer.
struct Prebuilt(HostInventory);

#[async_trait]
impl HostTransport for Prebuilt {
    fn capabilities(&self) -> Capabilities {
        Capabilities::read_only(true)
    }
    async fn host_info(&self) -> upsvisor::Result<HostInfo> {
        Ok(self.0.info.clone())
    }
    async fn list_vm_ids(&self) -> upsvisor::Result<Vec<VmId>> {
        Ok(self.0.vms.iter().map(|v| v.id.clone()).collect())
    }
    async fn vm_info(&self, vm: &VmId) -> upsvisor::Result<VmInfo> {
        self.0
            .vms
            .iter()
            .find(|v| &v.id == vm)
            .map(|v| VmInfo::clone(v))
            .ok_or_else(|| upsvisor::Error::not_found(format!("{vm}")))
    }
    async fn inventory(&self) -> upsvisor::Result<HostInventory> {
        Ok(self.0.clone())
    }
    async fn vm_power(&self, _: &VmId, _: VmOp) -> upsvisor::Result<()> {
        Err(upsvisor::Error::unsupported(
            "read-only benchmark transport",
        ))
    }
    async fn host_power(&self, _: HostOp) -> upsvisor::Result<()> {
        Err(upsvisor::Error::unsupported(
            "read-only benchmark transport",
        ))
    }
}

fn estate(hosts: usize, latency: Duration) -> Estate {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let spec = EstateSpec::new(hosts, VMS_PER_HOST).host(
        SimHostConfig::default()
            .latency(latency)
            .bulk_inventory(true),
    );
    Estate::generate(clock, &spec)
}

fn poller(transports: Vec<(HostId, Arc<dyn HostTransport>)>) -> Poller {
    let n = transports.len();
    let mut p = Poller::new(
        Arc::new(SystemClock::new()),
        PollerConfig::default()
            .max_concurrency(n)
            .host_deadline(Duration::from_secs(600))
            .clone(),
    );
    for (h, t) in transports {
        p.add_host(h, t);
    }
    p
}

struct Figure {
    median: Duration,
    min: Duration,
    max: Duration,
    /// Median of the runs' on-CPU time of this thread, where known.
    cpu: Option<Duration>,
    runs: usize,
}

/// This thread's time on a CPU so far: the first field of Linux's
/// `/proc/thread-self/schedstat` (nanoseconds; proc(5)). `None` elsewhere.
/// Unlike wall time it does not grow while other processes hold the CPUs,
/// so it gives the cycle's own cost on a loaded machine (the poller runs
/// on this thread under `block_on`; the clock's timer thread is not
/// counted). The kernel updates it at scheduler ticks and switches, so it
/// is good to a few milliseconds: read it for the 1,000-host cases only
/// (smaller cycles often read 0).
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// One untimed run, then `runs` timed ones.
fn measure(runs: usize, mut f: impl FnMut()) -> Figure {
    f();
    let mut t = Vec::with_capacity(runs);
    let mut cpu = Vec::with_capacity(runs);
    for _ in 0..runs {
        let c = thread_cpu();
        let s = Instant::now();
        f();
        t.push(s.elapsed());
        if let (Some(a), Some(b)) = (c, thread_cpu()) {
            cpu.push(b.saturating_sub(a));
        }
    }
    t.sort();
    cpu.sort();
    Figure {
        median: t[t.len() / 2],
        min: t[0],
        max: t[t.len() - 1],
        cpu: cpu.get(cpu.len() / 2).copied(),
        runs,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes: &[usize] = if quick { &[10, 100] } else { &[10, 100, 1000] };
    let mut rows = Vec::new();
    for &hosts in sizes {
        let runs = match (quick, hosts) {
            (true, _) => 3,
            (false, 1000) => 10,
            _ => 20,
        };
        let vms = hosts * VMS_PER_HOST;

        let slow = estate(hosts, LATENCY);
        let mut full = poller(
            slow.host_ids()
                .into_iter()
                .map(|h| {
                    let t: Arc<dyn HostTransport> = Arc::new(slow.transport(&h));
                    (h, t)
                })
                .collect(),
        );
        let full_f = measure(runs, || {
            let u = futures::executor::block_on(full.poll_once());
            assert_eq!(u.table.vm_count(), vms);
        });

        let fast = estate(hosts, Duration::ZERO);
        let sims: Vec<_> = fast
            .host_ids()
            .into_iter()
            .map(|h| fast.transport(&h))
            .collect();
        let sim_f = measure(runs, || {
            let all = futures::executor::block_on(futures::future::join_all(
                sims.iter().map(|t| t.inventory()),
            ));
            let n: usize = all.into_iter().map(|r| r.expect("sim").vms.len()).sum();
            assert_eq!(n, vms);
        });

        let prebuilt: Vec<(HostId, Arc<dyn HostTransport>)> = fast
            .host_ids()
            .into_iter()
            .zip(&sims)
            .map(|(h, t)| {
                let inv = futures::executor::block_on(t.inventory()).expect("sim");
                let t: Arc<dyn HostTransport> = Arc::new(Prebuilt(inv));
                (h, t)
            })
            .collect();
        let copies: Vec<Arc<dyn HostTransport>> = prebuilt.iter().map(|(_, t)| t.clone()).collect();
        let copy_f = measure(runs, || {
            let all = futures::executor::block_on(futures::future::join_all(
                copies.iter().map(|t| t.inventory()),
            ));
            let n: usize = all
                .into_iter()
                .map(|r| r.expect("prebuilt").vms.len())
                .sum();
            assert_eq!(n, vms);
        });
        let mut engine = poller(prebuilt);
        let engine_f = measure(runs, || {
            let u = futures::executor::block_on(engine.poll_once());
            assert_eq!(u.table.vm_count(), vms);
        });

        for (case, f) in [
            ("full_20ms", &full_f),
            ("engine_alone", &engine_f),
            ("simulator_alone", &sim_f),
            ("prebuilt_alone", &copy_f),
        ] {
            println!(
                "engine_cycle hosts={hosts} case={case} median_ms={:.2} min_ms={:.2} max_ms={:.2} cpu_median_ms={} runs={}",
                ms(f.median),
                ms(f.min),
                ms(f.max),
                f.cpu.map_or("-".to_owned(), |c| format!("{:.2}", ms(c))),
                f.runs
            );
        }
        rows.push((
            hosts,
            full_f.median,
            engine_f.median,
            sim_f.median,
            copy_f.median,
        ));
    }
    println!();
    println!(
        "| hosts (× 20 VMs) | full cycle, 20 ms latency | engine alone | simulator alone | prebuilt alone |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for (hosts, full, engine, sim, copy) in &rows {
        println!(
            "| {hosts} | {:.1} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            ms(*full),
            ms(*engine),
            ms(*sim),
            ms(*copy)
        );
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        println!(
            "\nfull cycle {} hosts ÷ {} hosts: {:.2}×",
            last.0,
            first.0,
            last.1.as_secs_f64() / first.1.as_secs_f64()
        );
    }
}
