//! What the table says about hosts and VMs, as the sequencer reads it.

#[allow(unused_imports)]
use super::*;

/// Whether `host` has been seen down since `since`: it stopped answering
/// at or after that moment and has stayed silent for at least `dwell` (one
/// poll period): one missed poll of a host busy halting its VMs is not
/// "down".
pub(super) fn seen_down(table: &VmTable, host: &HostId, since: Instant, dwell: Duration) -> bool {
    matches!(table.host(host).map(|r| &r.freshness),
        Some(Freshness::Stale { since: s, .. }) if *s >= since && table.taken_at >= *s + dwell)
}

/// Whether the table's list for `host` is evidence now: the host answered
/// the latest poll. A stale row keeps the VMs last seen (silence never
/// deletes), but says nothing about VMs that started or arrived since.
pub(super) fn knows_vms_now(table: &VmTable, host: &HostId) -> bool {
    table.host(host).is_some_and(|r| r.is_fresh())
}

/// A VM's host and info through a prebuilt index (borrowed: a step walks
/// every VM of the episode, and cloning each record made it quadratic).
pub(super) fn locate<'t>(
    table: &'t VmTable,
    index: &BTreeMap<&VmId, &'t HostId>,
    vm: &VmId,
) -> Option<(&'t HostId, &'t crate::model::VmInfo)> {
    let h = *index.get(vm)?;
    table.hosts.get(h)?.vms.get(vm).map(|v| (h, &**v))
}
