//! Cycle wall time of the poller against simulated hosts with real latency
//! (20 ms per request, real clock), concurrent vs one host at a time.
//!
//! Run: `cargo bench --bench polling`. Figures go to docs/BENCHMARKS.md as
//! ratios measured in the same run.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use upsvisor::sim::{Estate, EstateSpec, SimHostConfig};
use upsvisor::{Clock, Poller, PollerConfig, SystemClock};

const LATENCY: Duration = Duration::from_millis(20);
const VMS_PER_HOST: usize = 20;

fn poller(hosts: usize, bulk: bool, concurrency: usize) -> Poller {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let spec = EstateSpec::new(hosts, VMS_PER_HOST).host(
        SimHostConfig::default()
            .latency(LATENCY)
            .bulk_inventory(bulk),
    );
    let estate = Estate::generate(clock.clone(), &spec);
    let mut p = Poller::new(
        clock,
        PollerConfig::default()
            .max_concurrency(concurrency)
            .host_deadline(Duration::from_secs(600))
            .clone(),
    );
    for h in estate.host_ids() {
        p.add_host(h.clone(), Arc::new(estate.transport(&h)));
    }
    p
}

fn cycle(p: &mut Poller, expect_vms: usize) {
    let u = futures::executor::block_on(p.poll_once());
    assert_eq!(u.table.vm_count(), expect_vms);
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("poll_cycle");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    for hosts in [10usize, 100, 1000] {
        let vms = hosts * VMS_PER_HOST;
        let mut p = poller(hosts, true, hosts);
        g.bench_with_input(
            BenchmarkId::new("concurrent_bulk", hosts),
            &hosts,
            |b, _| b.iter(|| cycle(&mut p, vms)),
        );
        let mut p = poller(hosts, false, hosts);
        g.bench_with_input(
            BenchmarkId::new("concurrent_per_vm", hosts),
            &hosts,
            |b, _| b.iter(|| cycle(&mut p, vms)),
        );
        // One host at a time: 1,000 hosts would take 20 s per cycle; it is
        // measured for 10 and 100 only.
        if hosts <= 100 {
            let mut p = poller(hosts, true, 1);
            g.bench_with_input(
                BenchmarkId::new("sequential_bulk", hosts),
                &hosts,
                |b, _| b.iter(|| cycle(&mut p, vms)),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
