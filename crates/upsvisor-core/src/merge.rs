//! Merging one cycle's answers into the VM table, and the events that
//! describe the difference.
//!
//! [`merge`] is a pure function of the previous table and this cycle's
//! outcomes, so it can be table-tested and property-tested. Its rules:
//!
//! 1. **Order does not matter.** Outcomes are keyed by host id before
//!    anything is decided.
//! 2. **Fresh data wins.** A host that answered owns the VMs it listed.
//! 3. **Silence never deletes.** A host that failed (error or deadline) keeps
//!    its previous VMs, marked stale; they are never reported as vanished
//!    because of that. Only when another host that *did* answer lists one of
//!    them does it move (reported as a migration).
//! 4. **A VM seen on two hosts in one cycle** (a migration caught
//!    mid-flight, or a VM registered twice) is kept under one host, chosen by,
//!    in order: the copy that is powered on; then the host it was on before
//!    (so the move is reported once, when the source lets go); then the
//!    smallest host id. A [`Event::VmSeenTwice`] names the host chosen and the
//!    ones ignored.
//! 5. **Vanished** means: its host answered, did not list it, and no other
//!    host that answered lists it.

use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::clock::Instant;
use crate::model::{
    Freshness, HostId, HostInventory, HostRecord, PowerState, VmId, VmInfo, VmTable,
};
use crate::{Error, ErrorKind};

/// What one host gave in one cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostOutcome {
    /// It answered.
    Answered(HostInventory),
    /// It failed or missed its deadline.
    Failed(Error),
}

/// A change between two tables.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "event"))]
#[non_exhaustive]
pub enum Event {
    /// A VM not in the previous table.
    VmAppeared {
        /// Where.
        host: HostId,
        /// Which.
        vm: VmId,
        /// Its name.
        name: String,
        /// Its power state.
        power: PowerState,
    },
    /// A VM that its host no longer lists, and no other host does either.
    VmVanished {
        /// Where it was.
        host: HostId,
        /// Which.
        vm: VmId,
        /// Its name.
        name: String,
    },
    /// A VM now listed by another host.
    VmMigrated {
        /// Which.
        vm: VmId,
        /// Its name.
        name: String,
        /// Previous host.
        from: HostId,
        /// New host.
        to: HostId,
    },
    /// A VM's power state changed.
    VmPowerChanged {
        /// Where it is now.
        host: HostId,
        /// Which.
        vm: VmId,
        /// Its name.
        name: String,
        /// Before.
        from: PowerState,
        /// Now.
        to: PowerState,
    },
    /// Two or more hosts listed the same VM in one cycle (rule 4).
    VmSeenTwice {
        /// Which.
        vm: VmId,
        /// The host kept.
        kept: HostId,
        /// The others.
        ignored: Vec<HostId>,
    },
    /// A host stopped answering (first failure after answering, or failure
    /// on first contact).
    HostUnreachable {
        /// Which.
        host: HostId,
        /// Kind of failure.
        kind: ErrorKind,
        /// The failure's message.
        error: String,
    },
    /// A host answered again after failing.
    HostRecovered {
        /// Which.
        host: HostId,
        /// When its failures began.
        down_since: Instant,
    },
}

impl Event {
    /// The VM this event is about, if any.
    pub fn vm(&self) -> Option<&VmId> {
        match self {
            Event::VmAppeared { vm, .. }
            | Event::VmVanished { vm, .. }
            | Event::VmMigrated { vm, .. }
            | Event::VmPowerChanged { vm, .. }
            | Event::VmSeenTwice { vm, .. } => Some(vm),
            Event::HostUnreachable { .. } | Event::HostRecovered { .. } => None,
        }
    }
}

/// Keys every host-local id with its host ([`VmId::scoped`]), so that two
/// hosts' `qemu/100` are two VMs in the table (issue 12, scenario 6).
fn scope_host_local_ids(host: &HostId, inv: &mut HostInventory) {
    for v in &mut inv.vms {
        if v.host_local {
            let id = VmId::scoped(host, v.id.as_str());
            Arc::make_mut(v).id = id;
        }
    }
}

/// Builds the next table from `prev` and this cycle's outcomes, taken at
/// `now`. Hosts in `prev` without an outcome are carried over unchanged
/// (except for VMs that an answering host now lists). If `outcomes` names a
/// host twice, the first answer wins over failures and over later answers.
///
/// Cost: O(V) hash lookups for the V VMs answered, and one ordered walk of
/// each host's row beside its previous row for the comparison with
/// `prev`. No VM record is copied: the table shares the answers' records
/// (`Arc<VmInfo>`), and a host that did not answer keeps its previous
/// records. An estate-wide index of `prev` (or of the new table) is built
/// only when a VM is not where it was before (it appeared, moved, or
/// vanished).
pub fn merge(
    prev: &VmTable,
    outcomes: impl IntoIterator<Item = (HostId, HostOutcome)>,
    now: Instant,
) -> (VmTable, Vec<Event>) {
    let mut by_host: BTreeMap<HostId, HostOutcome> = BTreeMap::new();
    for (h, mut o) in outcomes {
        if let HostOutcome::Answered(inv) = &mut o {
            scope_host_local_ids(&h, inv);
        }
        match by_host.get(&h) {
            Some(HostOutcome::Answered(_)) => {}
            Some(HostOutcome::Failed(_)) if matches!(o, HostOutcome::Failed(_)) => {}
            _ => {
                by_host.insert(h, o);
            }
        }
    }
    // The answering hosts, numbered in host order, and their answers.
    let answers: Vec<(&HostId, &HostInventory)> = by_host
        .iter()
        .filter_map(|(h, o)| match o {
            HostOutcome::Answered(inv) => Some((h, inv)),
            HostOutcome::Failed(_) => None,
        })
        .collect();
    let mut prev_index = LazyIndex::default();

    // Who owns each VM among hosts that answered: (answering host number,
    // position in its answer). A VM listed by one host only (the common
    // case) is decided at once; the others are collected and decided by
    // rule 4 below.
    let total: usize = answers.iter().map(|(_, inv)| inv.vms.len()).sum();
    let mut owner: HashMap<&VmId, (usize, usize)> = HashMap::with_capacity(total);
    let mut contested: BTreeMap<&VmId, Vec<(usize, usize)>> = BTreeMap::new();
    for (k, (_, inv)) in answers.iter().enumerate() {
        for (i, v) in inv.vms.iter().enumerate() {
            match owner.entry(&v.id) {
                Entry::Vacant(e) => {
                    e.insert((k, i));
                }
                // Same host listing a VM twice counts once: keep the first
                // copy.
                Entry::Occupied(e) if e.get().0 == k => {}
                Entry::Occupied(e) => {
                    let cs = contested.entry(&v.id).or_insert_with(|| vec![*e.get()]);
                    if !cs.iter().any(|(ck, _)| *ck == k) {
                        cs.push((k, i));
                    }
                }
            }
        }
    }

    let mut events = Vec::new();
    for (vm, cs) in &contested {
        let before = prev_index.get(prev).get(vm).map(|(h, _)| *h);
        let best = cs.iter().copied().min_by_key(|&(k, i)| {
            let (h, inv) = answers[k];
            (
                inv.vms[i].power != PowerState::PoweredOn,
                Some(h) != before,
                h,
            )
        });
        let Some(best) = best else { continue };
        events.push(Event::VmSeenTwice {
            vm: (*vm).clone(),
            kept: answers[best.0].0.clone(),
            ignored: cs
                .iter()
                .filter(|(k, _)| *k != best.0)
                .map(|(k, _)| answers[*k].0.clone())
                .collect(),
        });
        owner.insert(*vm, best);
    }

    // Which copies each answering host keeps.
    let mut keep: Vec<Vec<bool>> = answers
        .iter()
        .map(|(_, inv)| vec![false; inv.vms.len()])
        .collect();
    for (k, i) in owner.values() {
        keep[*k][*i] = true;
    }

    let mut next = VmTable {
        cycle: prev.cycle + 1,
        taken_at: now,
        hosts: BTreeMap::new(),
    };
    let all_hosts: BTreeSet<&HostId> = prev.hosts.keys().chain(by_host.keys()).collect();
    let mut host_events = Vec::new();
    for h in all_hosts {
        let old = prev.hosts.get(h);
        let rec = match by_host.get(h) {
            Some(HostOutcome::Answered(_)) => {
                if let Some(Freshness::Stale { since, .. }) = old.map(|r| &r.freshness) {
                    host_events.push(Event::HostRecovered {
                        host: h.clone(),
                        down_since: *since,
                    });
                }
                // Filled in below, when the answers are taken apart.
                HostRecord::unknown()
            }
            Some(HostOutcome::Failed(e)) => {
                let base = old.cloned().unwrap_or_else(HostRecord::unknown);
                let since = match &base.freshness {
                    Freshness::Stale { since, .. } => *since,
                    _ => {
                        host_events.push(Event::HostUnreachable {
                            host: h.clone(),
                            kind: e.kind(),
                            error: e.to_string(),
                        });
                        now
                    }
                };
                HostRecord {
                    freshness: Freshness::Stale {
                        since,
                        kind: e.kind(),
                        error: e.to_string(),
                    },
                    vms: keep_unclaimed(&base, &owner),
                    ..base
                }
            }
            None => {
                let base = old.cloned().unwrap_or_else(HostRecord::unknown);
                HostRecord {
                    vms: keep_unclaimed(&base, &owner),
                    ..base
                }
            }
        };
        next.hosts.insert(h.clone(), rec);
    }
    drop(owner);
    drop(contested);
    drop(answers);

    let mut keep = keep.into_iter();
    for (h, o) in by_host {
        let HostOutcome::Answered(inv) = o else {
            continue;
        };
        let keep = keep.next().unwrap_or_default();
        let vms = match prev.hosts.get(&h) {
            // The same records as before, in the same (id) order, all
            // kept: share the previous row.
            Some(old) if keep.iter().all(|k| *k) && same_records(&inv.vms, &old.vms) => {
                Arc::clone(&old.vms)
            }
            _ => Arc::new(
                inv.vms
                    .into_iter()
                    .zip(keep)
                    .filter(|(_, k)| *k)
                    .map(|(v, _)| (v.id.clone(), v))
                    .collect(),
            ),
        };
        next.hosts.insert(
            h,
            HostRecord {
                info: Some(inv.info),
                freshness: Freshness::Fresh,
                last_seen: Some(now),
                vms,
            },
        );
    }

    // Each host's row beside its previous row, both in id order: a VM in
    // both is compared in place; one only in the new row appeared or moved
    // here, one only in the old row vanished or moved away (the estate-wide
    // indexes, built on first need, tell which).
    let mut next_index = LazyIndex::default();
    let mut vanished: Vec<(&VmId, &HostId, &VmInfo)> = Vec::new();
    let no_vms = Arc::default();
    for (h, rec) in &next.hosts {
        let old = prev.hosts.get(h).map_or(&no_vms, |r| &r.vms);
        if Arc::ptr_eq(old, &rec.vms) {
            // The same row: nothing changed here.
            continue;
        }
        let mut new_it = rec.vms.iter().peekable();
        let mut old_it = old.iter().peekable();
        loop {
            let step = match (new_it.peek(), old_it.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((n, _)), Some((o, _))) => n.cmp(o),
            };
            match step {
                Ordering::Less => {
                    let Some((id, v)) = new_it.next() else { break };
                    let was = prev_index.get(prev).get(id).copied();
                    changes(&mut events, h, id, v, was);
                }
                Ordering::Equal => {
                    let (Some((id, v)), Some((_, pv))) = (new_it.next(), old_it.next()) else {
                        break;
                    };
                    changes(&mut events, h, id, v, Some((h, &**pv)));
                }
                Ordering::Greater => {
                    let Some((id, pv)) = old_it.next() else { break };
                    if !next_index.get(&next).contains_key(id) {
                        vanished.push((id, h, &**pv));
                    }
                }
            }
        }
    }
    // Vanished, in VM id order.
    vanished.sort_by(|a, b| a.0.cmp(b.0));
    for (id, ph, pv) in vanished {
        events.push(Event::VmVanished {
            host: ph.clone(),
            vm: id.clone(),
            name: pv.name.clone(),
        });
    }
    drop(next_index);
    host_events.extend(events);
    (next, host_events)
}

/// The events of one VM now on `h` as `v`, that was on `was` before (if
/// anywhere): appeared, or migrated and/or power changed.
fn changes(
    events: &mut Vec<Event>,
    h: &HostId,
    id: &VmId,
    v: &VmInfo,
    was: Option<(&HostId, &VmInfo)>,
) {
    match was {
        None => events.push(Event::VmAppeared {
            host: h.clone(),
            vm: id.clone(),
            name: v.name.clone(),
            power: v.power,
        }),
        Some((ph, pv)) => {
            if ph != h {
                events.push(Event::VmMigrated {
                    vm: id.clone(),
                    name: v.name.clone(),
                    from: ph.clone(),
                    to: h.clone(),
                });
            }
            if pv.power != v.power {
                events.push(Event::VmPowerChanged {
                    host: h.clone(),
                    vm: id.clone(),
                    name: v.name.clone(),
                    from: pv.power,
                    to: v.power,
                });
            }
        }
    }
}

/// Where each VM of a table is, built on first use.
#[derive(Default)]
struct LazyIndex<'a>(Option<HashMap<&'a VmId, (&'a HostId, &'a VmInfo)>>);

impl<'a> LazyIndex<'a> {
    fn get(&mut self, t: &'a VmTable) -> &HashMap<&'a VmId, (&'a HostId, &'a VmInfo)> {
        self.0.get_or_insert_with(|| {
            let mut m = HashMap::with_capacity(t.vm_count());
            // Later hosts win, as a map collected in host order would.
            for (h, r) in &t.hosts {
                for (id, v) in r.vms.iter() {
                    m.insert(id, (h, &**v));
                }
            }
            m
        })
    }
}

/// The VMs of a host that did not answer that no answering host claims:
/// its previous row itself (shared) when none is claimed.
fn keep_unclaimed(
    base: &HostRecord,
    owner: &HashMap<&VmId, (usize, usize)>,
) -> Arc<BTreeMap<VmId, Arc<VmInfo>>> {
    if !base.vms.keys().any(|id| owner.contains_key(id)) {
        return Arc::clone(&base.vms);
    }
    Arc::new(
        base.vms
            .iter()
            .filter(|(id, _)| !owner.contains_key(id))
            .map(|(id, v)| (id.clone(), v.clone()))
            .collect(),
    )
}

/// Whether an answer is exactly a previous row: the same records (the
/// same allocations, as a transport that keeps its records hands them
/// out), in the row's id order, none twice.
fn same_records(answer: &[Arc<VmInfo>], row: &BTreeMap<VmId, Arc<VmInfo>>) -> bool {
    answer.len() == row.len()
        && answer
            .iter()
            .zip(row.iter())
            .all(|(a, (id, r))| Arc::ptr_eq(a, r) && a.id == *id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HostInfo;
    use proptest::prelude::*;
    use std::time::Duration;

    fn vm(id: &str, power: PowerState) -> VmInfo {
        VmInfo::new(id, format!("name-{id}"), power)
    }

    fn answered(vms: Vec<VmInfo>) -> HostOutcome {
        HostOutcome::Answered(HostInventory::new(HostInfo::new("sim", "1"), vms))
    }

    fn failed() -> HostOutcome {
        HostOutcome::Failed(Error::timeout("inventory", Duration::from_secs(5)))
    }

    fn h(s: &str) -> HostId {
        HostId::from(s)
    }

    const ON: PowerState = PowerState::PoweredOn;
    const OFF: PowerState = PowerState::PoweredOff;

    #[test]
    fn appear_migrate_power_vanish() {
        let t0 = VmTable::with_hosts([&h("a"), &h("b")]);
        let (t1, ev) = merge(
            &t0,
            [
                (h("a"), answered(vec![vm("1", ON), vm("2", ON)])),
                (h("b"), answered(vec![])),
            ],
            Instant::from_millis(10),
        );
        assert_eq!(ev.len(), 2);
        assert!(ev.iter().all(|e| matches!(e, Event::VmAppeared { .. })));
        assert_eq!(t1.cycle, 1);

        let (t2, ev) = merge(
            &t1,
            [
                (h("a"), answered(vec![vm("2", OFF)])),
                (h("b"), answered(vec![vm("1", ON)])),
            ],
            Instant::from_millis(20),
        );
        assert_eq!(
            ev,
            vec![
                Event::VmPowerChanged {
                    host: h("a"),
                    vm: "2".into(),
                    name: "name-2".into(),
                    from: ON,
                    to: OFF
                },
                Event::VmMigrated {
                    vm: "1".into(),
                    name: "name-1".into(),
                    from: h("a"),
                    to: h("b")
                },
            ]
        );
        let (_, ev) = merge(
            &t2,
            [
                (h("a"), answered(vec![])),
                (h("b"), answered(vec![vm("1", ON)])),
            ],
            Instant::from_millis(30),
        );
        assert_eq!(
            ev,
            vec![Event::VmVanished {
                host: h("a"),
                vm: "2".into(),
                name: "name-2".into()
            }]
        );
    }

    #[test]
    fn silent_host_keeps_its_vms_stale_then_recovers() {
        let t0 = VmTable::with_hosts([&h("a")]);
        let (t1, _) = merge(
            &t0,
            [(h("a"), answered(vec![vm("1", ON)]))],
            Instant::from_millis(10),
        );
        let (t2, ev) = merge(&t1, [(h("a"), failed())], Instant::from_millis(20));
        assert!(matches!(
            ev.as_slice(),
            [Event::HostUnreachable {
                kind: ErrorKind::Timeout,
                ..
            }]
        ));
        let r = t2.host(&h("a")).unwrap();
        assert!(
            matches!(r.freshness, Freshness::Stale { since, .. } if since == Instant::from_millis(10 + 10))
        );
        assert_eq!(r.last_seen, Some(Instant::from_millis(10)));
        assert_eq!(r.vms.len(), 1);
        // A second failure is not a second event, and `since` holds.
        let (t3, ev) = merge(&t2, [(h("a"), failed())], Instant::from_millis(30));
        assert!(ev.is_empty());
        assert!(
            matches!(t3.host(&h("a")).unwrap().freshness, Freshness::Stale { since, .. } if since == Instant::from_millis(20))
        );
        let (_, ev) = merge(
            &t3,
            [(h("a"), answered(vec![vm("1", ON)]))],
            Instant::from_millis(40),
        );
        assert_eq!(
            ev,
            vec![Event::HostRecovered {
                host: h("a"),
                down_since: Instant::from_millis(20)
            }]
        );
    }

    #[test]
    fn host_local_ids_are_keyed_with_their_host_and_never_seen_twice() {
        let t0 = VmTable::with_hosts([&h("a"), &h("b")]);
        let local = |p| vm("qemu/100", p).host_local(true);
        let (t1, ev) = merge(
            &t0,
            [
                (h("a"), answered(vec![local(ON)])),
                (h("b"), answered(vec![local(OFF)])),
            ],
            Instant::ZERO,
        );
        assert!(
            !ev.iter().any(|e| matches!(e, Event::VmSeenTwice { .. })),
            "{ev:?}"
        );
        let (ka, kb) = (VmId::from("qemu/100@a"), VmId::from("qemu/100@b"));
        assert_eq!(
            t1.locate(&ka).map(|(h, v)| (h.clone(), v.power)),
            Some((h("a"), ON))
        );
        assert_eq!(
            t1.locate(&kb).map(|(h, v)| (h.clone(), v.power)),
            Some((h("b"), OFF))
        );
        let (_, info) = t1.locate(&kb).unwrap();
        assert_eq!(info.platform_id(&h("b")), VmId::from("qemu/100"));
        // A global id is left alone, and handed to the platform as is.
        let (t2, _) = merge(
            &t1,
            [(h("a"), answered(vec![vm("uuid-1", ON)]))],
            Instant::ZERO,
        );
        let (_, g) = t2.locate(&VmId::from("uuid-1")).unwrap();
        assert_eq!(g.platform_id(&h("a")), VmId::from("uuid-1"));
    }

    #[test]
    fn vm_leaving_a_silent_host_is_a_migration() {
        let t0 = VmTable::with_hosts([&h("a"), &h("b")]);
        let (t1, _) = merge(
            &t0,
            [
                (h("a"), answered(vec![vm("1", ON)])),
                (h("b"), answered(vec![])),
            ],
            Instant::ZERO,
        );
        let (t2, ev) = merge(
            &t1,
            [(h("a"), failed()), (h("b"), answered(vec![vm("1", ON)]))],
            Instant::from_millis(5),
        );
        assert!(ev.contains(&Event::VmMigrated {
            vm: "1".into(),
            name: "name-1".into(),
            from: h("a"),
            to: h("b")
        }));
        assert!(t2.host(&h("a")).unwrap().vms.is_empty());
    }

    #[test]
    fn seen_twice_prefers_running_copy_then_previous_host() {
        let t0 = VmTable::with_hosts([&h("a"), &h("b")]);
        let (t1, _) = merge(
            &t0,
            [
                (h("a"), answered(vec![vm("1", ON)])),
                (h("b"), answered(vec![])),
            ],
            Instant::ZERO,
        );
        // Mid-flight: destination registered it powered off, source still runs it.
        let (t2, ev) = merge(
            &t1,
            [
                (h("a"), answered(vec![vm("1", ON)])),
                (h("b"), answered(vec![vm("1", OFF)])),
            ],
            Instant::ZERO,
        );
        assert_eq!(
            ev,
            vec![Event::VmSeenTwice {
                vm: "1".into(),
                kept: h("a"),
                ignored: vec![h("b")]
            }]
        );
        // Both on: the previous host keeps it; no migration yet.
        let (t3, ev) = merge(
            &t2,
            [
                (h("a"), answered(vec![vm("1", ON)])),
                (h("b"), answered(vec![vm("1", ON)])),
            ],
            Instant::ZERO,
        );
        assert_eq!(
            ev,
            vec![Event::VmSeenTwice {
                vm: "1".into(),
                kept: h("a"),
                ignored: vec![h("b")]
            }]
        );
        // Switch-over: destination runs it, source lists it off.
        let (_, ev) = merge(
            &t3,
            [
                (h("a"), answered(vec![vm("1", OFF)])),
                (h("b"), answered(vec![vm("1", ON)])),
            ],
            Instant::ZERO,
        );
        assert_eq!(
            ev[1],
            Event::VmMigrated {
                vm: "1".into(),
                name: "name-1".into(),
                from: h("a"),
                to: h("b")
            }
        );
        assert_eq!(ev.len(), 2);
    }

    #[test]
    fn an_unchanged_row_is_shared_not_rebuilt() {
        let recs: Vec<Arc<VmInfo>> = vec![Arc::new(vm("1", ON)), Arc::new(vm("2", OFF))];
        let shared = |recs: &[Arc<VmInfo>]| {
            HostOutcome::Answered(HostInventory::shared(
                HostInfo::new("sim", "1"),
                recs.to_vec(),
            ))
        };
        let t0 = VmTable::with_hosts([&h("a"), &h("b")]);
        let (t1, _) = merge(
            &t0,
            [(h("a"), shared(&recs)), (h("b"), failed())],
            Instant::ZERO,
        );
        // The table holds the answer's records themselves.
        assert!(Arc::ptr_eq(
            &t1.hosts[&h("a")].vms[&VmId::from("1")],
            &recs[0]
        ));
        let (t2, ev) = merge(
            &t1,
            [(h("a"), shared(&recs)), (h("b"), failed())],
            Instant::from_millis(1),
        );
        assert!(ev.is_empty(), "{ev:?}");
        assert!(Arc::ptr_eq(&t1.hosts[&h("a")].vms, &t2.hosts[&h("a")].vms));
        assert!(Arc::ptr_eq(&t1.hosts[&h("b")].vms, &t2.hosts[&h("b")].vms));
        // One record changed (a new allocation): a new row, one event, the
        // other record still shared.
        let mut changed = recs.clone();
        Arc::make_mut(&mut changed[1]).power = ON;
        let (t3, ev) = merge(
            &t2,
            [(h("a"), shared(&changed)), (h("b"), failed())],
            Instant::from_millis(2),
        );
        assert!(!Arc::ptr_eq(&t2.hosts[&h("a")].vms, &t3.hosts[&h("a")].vms));
        assert!(Arc::ptr_eq(
            &t3.hosts[&h("a")].vms[&VmId::from("1")],
            &recs[0]
        ));
        assert_eq!(
            ev,
            vec![Event::VmPowerChanged {
                host: h("a"),
                vm: "2".into(),
                name: "name-2".into(),
                from: OFF,
                to: ON
            }]
        );
    }

    // ---- properties

    fn arb_round(hosts: usize, vms: usize) -> impl Strategy<Value = Vec<(HostId, HostOutcome)>> {
        // For each VM: which host lists it (or none), and (rarely) a second host.
        let per_vm = proptest::collection::vec(
            (
                0..=hosts,
                proptest::option::weighted(0.1, 0..hosts),
                any::<bool>(),
            ),
            vms,
        );
        let fails = proptest::collection::vec(proptest::bool::weighted(0.2), hosts);
        (per_vm, fails).prop_map(move |(per_vm, fails)| {
            let mut lists: Vec<Vec<VmInfo>> = vec![Vec::new(); hosts];
            for (i, (home, second, on)) in per_vm.into_iter().enumerate() {
                let p = if on { ON } else { OFF };
                if home < hosts {
                    lists[home].push(vm(&i.to_string(), p));
                    if let Some(s) = second {
                        if s != home {
                            lists[s].push(vm(&i.to_string(), ON));
                        }
                    }
                }
            }
            lists
                .into_iter()
                .zip(fails)
                .enumerate()
                .map(|(i, (l, f))| (h(&format!("h{i}")), if f { failed() } else { answered(l) }))
                .collect()
        })
    }

    fn arb_history() -> impl Strategy<Value = (Vec<Vec<(HostId, HostOutcome)>>, Vec<usize>)> {
        (1usize..6, 0usize..30).prop_flat_map(|(hosts, vms)| {
            (
                proptest::collection::vec(arb_round(hosts, vms), 1..6),
                Just((0..hosts).rev().collect::<Vec<_>>()),
            )
        })
    }

    fn run(history: &[Vec<(HostId, HostOutcome)>]) -> Vec<(VmTable, Vec<Event>)> {
        let mut t = VmTable::default();
        let mut out = Vec::new();
        for (i, round) in history.iter().enumerate() {
            let (n, ev) = merge(&t, round.clone(), Instant::from_millis(i as u64 * 1000));
            out.push((n.clone(), ev));
            t = n;
        }
        out
    }

    /// The merge as it was before it moved records and indexed by hash
    /// (one BTreeMap per step): the new one must give the same tables and
    /// the same events in the same order.
    fn reference_merge(
        prev: &VmTable,
        outcomes: impl IntoIterator<Item = (HostId, HostOutcome)>,
        now: Instant,
    ) -> (VmTable, Vec<Event>) {
        let mut by_host: BTreeMap<HostId, HostOutcome> = BTreeMap::new();
        for (h, mut o) in outcomes {
            if let HostOutcome::Answered(inv) = &mut o {
                scope_host_local_ids(&h, inv);
            }
            match by_host.get(&h) {
                Some(HostOutcome::Answered(_)) => {}
                Some(HostOutcome::Failed(_)) if matches!(o, HostOutcome::Failed(_)) => {}
                _ => {
                    by_host.insert(h, o);
                }
            }
        }

        let prev_loc: BTreeMap<&VmId, (&HostId, &Arc<VmInfo>)> = prev
            .hosts
            .iter()
            .flat_map(|(h, r)| r.vms.iter().map(move |(id, v)| (id, (h, v))))
            .collect();

        // Who claims each VM among hosts that answered.
        let mut claims: BTreeMap<&VmId, Vec<(&HostId, &Arc<VmInfo>)>> = BTreeMap::new();
        for (h, o) in &by_host {
            if let HostOutcome::Answered(inv) = o {
                for v in &inv.vms {
                    claims.entry(&v.id).or_default().push((h, v));
                }
            }
        }

        let mut events = Vec::new();
        let mut owner: BTreeMap<&VmId, (&HostId, &Arc<VmInfo>)> = BTreeMap::new();
        for (vm, cs) in &claims {
            // Same host listing a VM twice counts once: keep the first copy.
            let mut hosts_seen = BTreeSet::new();
            let cs: Vec<_> = cs
                .iter()
                .filter(|(h, _)| hosts_seen.insert(*h))
                .copied()
                .collect();
            let before = prev_loc.get(vm).map(|(h, _)| *h);
            let best = cs
                .iter()
                .copied()
                .min_by_key(|(h, v)| (v.power != PowerState::PoweredOn, Some(*h) != before, *h));
            let Some(best) = best else { continue };
            if cs.len() > 1 {
                events.push(Event::VmSeenTwice {
                    vm: (*vm).clone(),
                    kept: best.0.clone(),
                    ignored: cs
                        .iter()
                        .filter(|(h, _)| *h != best.0)
                        .map(|(h, _)| (*h).clone())
                        .collect(),
                });
            }
            owner.insert(vm, best);
        }

        // The VMs each answering host owns, grouped once (not per host).
        let mut owned: BTreeMap<&HostId, BTreeMap<VmId, Arc<VmInfo>>> = BTreeMap::new();
        for (id, (h, v)) in &owner {
            owned
                .entry(*h)
                .or_default()
                .insert((*id).clone(), (*v).clone());
        }

        let mut next = VmTable {
            cycle: prev.cycle + 1,
            taken_at: now,
            hosts: BTreeMap::new(),
        };
        let all_hosts: BTreeSet<&HostId> = prev.hosts.keys().chain(by_host.keys()).collect();
        let mut host_events = Vec::new();
        for h in all_hosts {
            let old = prev.hosts.get(h);
            let rec = match by_host.get(h) {
                Some(HostOutcome::Answered(inv)) => {
                    if let Some(Freshness::Stale { since, .. }) = old.map(|r| &r.freshness) {
                        host_events.push(Event::HostRecovered {
                            host: h.clone(),
                            down_since: *since,
                        });
                    }
                    HostRecord {
                        info: Some(inv.info.clone()),
                        freshness: Freshness::Fresh,
                        last_seen: Some(now),
                        vms: Arc::new(owned.remove(h).unwrap_or_default()),
                    }
                }
                Some(HostOutcome::Failed(e)) => {
                    let base = old.cloned().unwrap_or_else(HostRecord::unknown);
                    let since = match &base.freshness {
                        Freshness::Stale { since, .. } => *since,
                        _ => {
                            host_events.push(Event::HostUnreachable {
                                host: h.clone(),
                                kind: e.kind(),
                                error: e.to_string(),
                            });
                            now
                        }
                    };
                    HostRecord {
                        freshness: Freshness::Stale {
                            since,
                            kind: e.kind(),
                            error: e.to_string(),
                        },
                        vms: Arc::new(reference_keep_unclaimed(&base, &owner)),
                        ..base
                    }
                }
                None => {
                    let base = old.cloned().unwrap_or_else(HostRecord::unknown);
                    HostRecord {
                        vms: Arc::new(reference_keep_unclaimed(&base, &owner)),
                        ..base
                    }
                }
            };
            next.hosts.insert(h.clone(), rec);
        }

        for (h, rec) in &next.hosts {
            for (id, v) in rec.vms.iter() {
                match prev_loc.get(id) {
                    None => events.push(Event::VmAppeared {
                        host: h.clone(),
                        vm: id.clone(),
                        name: v.name.clone(),
                        power: v.power,
                    }),
                    Some((ph, pv)) => {
                        if *ph != h {
                            events.push(Event::VmMigrated {
                                vm: id.clone(),
                                name: v.name.clone(),
                                from: (*ph).clone(),
                                to: h.clone(),
                            });
                        }
                        if pv.power != v.power {
                            events.push(Event::VmPowerChanged {
                                host: h.clone(),
                                vm: id.clone(),
                                name: v.name.clone(),
                                from: pv.power,
                                to: v.power,
                            });
                        }
                    }
                }
            }
        }
        let present: BTreeSet<&VmId> = next.hosts.values().flat_map(|r| r.vms.keys()).collect();
        for (id, (ph, pv)) in &prev_loc {
            if !present.contains(id) {
                events.push(Event::VmVanished {
                    host: (*ph).clone(),
                    vm: (*id).clone(),
                    name: pv.name.clone(),
                });
            }
        }
        host_events.extend(events);
        (next, host_events)
    }

    fn reference_keep_unclaimed(
        base: &HostRecord,
        owner: &BTreeMap<&VmId, (&HostId, &Arc<VmInfo>)>,
    ) -> BTreeMap<VmId, Arc<VmInfo>> {
        base.vms
            .iter()
            .filter(|(id, _)| !owner.contains_key(id))
            .map(|(id, v)| (id.clone(), v.clone()))
            .collect()
    }

    /// `round` with each answered record replaced by the equal record of
    /// `t` (same id and contents), wherever `t` has one.
    fn shared_with(t: &VmTable, round: &[(HostId, HostOutcome)]) -> Vec<(HostId, HostOutcome)> {
        let mut round = round.to_vec();
        for (_, o) in &mut round {
            if let HostOutcome::Answered(inv) = o {
                for v in &mut inv.vms {
                    if let Some(same) = t
                        .hosts
                        .values()
                        .find_map(|r| r.vms.get(&v.id).filter(|r| **r == *v))
                    {
                        *v = Arc::clone(same);
                    }
                }
            }
        }
        round
    }

    /// Adds, to some rounds, a VM listed twice by the same host (the
    /// second copy with the other power state), and a host-local id.
    fn with_quirks(
        history: &[Vec<(HostId, HostOutcome)>],
        seed: u64,
    ) -> Vec<Vec<(HostId, HostOutcome)>> {
        history
            .iter()
            .enumerate()
            .map(|(n, round)| {
                let mut round = round.clone();
                if (seed >> (n % 64)) & 1 == 1 {
                    for (_, o) in &mut round {
                        if let HostOutcome::Answered(inv) = o {
                            if let Some(first) = inv.vms.first().cloned() {
                                let mut again = first;
                                let again_vm = Arc::make_mut(&mut again);
                                again_vm.power = if again_vm.power == ON { OFF } else { ON };
                                inv.vms.push(again);
                            }
                            let mut local = vm("qemu/100", ON);
                            local.host_local = true;
                            inv.vms.push(Arc::new(local));
                            break;
                        }
                    }
                }
                round
            })
            .collect()
    }

    proptest! {
        #[test]
        fn order_of_answers_does_not_matter((history, _) in arb_history(), seed in any::<u64>()) {
            let straight = run(&history);
            let shuffled: Vec<_> = history.iter().map(|r| {
                let mut r = r.clone();
                // A deterministic permutation from the seed.
                let n = r.len();
                for i in (1..n).rev() {
                    let j = (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % (i as u64 + 1)) as usize;
                    r.swap(i, j);
                }
                r
            }).collect();
            prop_assert_eq!(straight, run(&shuffled));
        }

        #[test]
        fn same_tables_and_events_as_the_reference_merge((history, _) in arb_history(), seed in any::<u64>()) {
            let history = with_quirks(&history, seed);
            let mut t = VmTable::default();
            for (i, round) in history.iter().enumerate() {
                let at = Instant::from_millis(i as u64 * 1000);
                // In odd seeds, answers hand back the table's own records
                // where they are equal (a transport that keeps its
                // records), so unchanged rows are shared.
                let round = if seed % 2 == 1 { shared_with(&t, round) } else { round.clone() };
                let (n, ev) = merge(&t, round.clone(), at);
                let (rn, rev) = reference_merge(&t, round.clone(), at);
                prop_assert_eq!(&n, &rn);
                prop_assert_eq!(&ev, &rev);
                t = n;
            }
        }

        #[test]
        fn table_invariants_hold((history, _) in arb_history()) {
            let mut t = VmTable::default();
            for (i, round) in history.iter().enumerate() {
                let (n, ev) = merge(&t, round.clone(), Instant::from_millis(i as u64));
                // Each VM under at most one host.
                let mut seen = BTreeSet::new();
                for (_, v) in n.vms() { prop_assert!(seen.insert(v.id.clone())); }
                // Silence never deletes; vanishes only from hosts that answered.
                let failed: BTreeSet<&HostId> = round.iter().filter(|(_, o)| matches!(o, HostOutcome::Failed(_))).map(|(h, _)| h).collect();
                for e in &ev {
                    if let Event::VmVanished { host, vm, .. } = e {
                        prop_assert!(!failed.contains(host), "vanish from silent host {host}");
                        prop_assert!(n.locate(vm).is_none());
                    }
                }
                for (h, r) in &t.hosts {
                    if failed.contains(h) {
                        for id in r.vms.keys() {
                            prop_assert!(n.locate(id).is_some(), "{id} lost with silent host {h}");
                        }
                    }
                }
                // A migration is reported once per move, and matches the tables.
                let mut migrated = BTreeSet::new();
                for e in &ev {
                    if let Event::VmMigrated { vm, from, to, .. } = e {
                        prop_assert!(migrated.insert(vm.clone()), "two migrations of {vm} in one cycle");
                        prop_assert_eq!(t.locate(vm).map(|x| x.0), Some(from));
                        prop_assert_eq!(n.locate(vm).map(|x| x.0), Some(to));
                    }
                }
                for (h, v) in n.vms() {
                    if let Some((ph, _)) = t.locate(&v.id) {
                        if ph != h {
                            prop_assert!(migrated.contains(&v.id), "{} moved without event", v.id);
                        }
                    }
                }
                t = n;
            }
        }
    }
}
