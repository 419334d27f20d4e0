//! The data model: the host list, power management data and the VM table.
//! The types a transport returns (ids, [`VmInfo`], [`HostInventory`]) are
//! in `upsvisor-traits` and re-exported here.
//!
//! With the `serde` feature everything here serialises to stable JSON
//! (snake_case field and variant names, absent optional values left out).
//! The JSON of [`VmTable`] is what goes to a management terminal.

use std::collections::BTreeMap;
use std::sync::Arc;

pub use upsvisor_traits::{
    DeviceId, HostId, HostInfo, HostInventory, OutletId, PowerState, ToolsState, VmId, VmInfo,
};

use crate::clock::Instant;
use crate::{Error, ErrorKind};

/// How the engine talks to a host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum TransportKind {
    /// vSphere Web Services (vim25 SOAP), ESXi or through vCenter.
    Soap,
    /// vSphere Managed Object Browser pages over HTTPS.
    Mob,
    /// SSH to ESXi (`vim-cmd`, `esxcli`).
    SshEsxi,
    /// SSH to a libvirt/KVM host (`virsh`).
    SshLibvirt,
    /// SSH to a Proxmox VE node (`qm`, `pct`).
    SshProxmox,
    /// SSH to a Hyper-V host (PowerShell).
    SshHyperv,
    /// SSH to a machine that is not a hypervisor (a NAS, a backup server,
    /// a physical Linux box): no VMs, a configured shutdown command.
    SshServer,
    /// A simulated host.
    Sim,
    /// A transport an embedder brings, by name.
    Other(String),
}

/// One entry of the host list the power supply holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct HostEntry {
    /// The host's id.
    pub id: HostId,
    /// Address (name or IP, optionally with port) the transport connects to.
    pub address: String,
    /// Transport used to reach it.
    pub transport: TransportKind,
    /// Name of the credentials entry to use; the secret itself never lives
    /// in the model.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub credentials: Option<String>,
    /// How many of the host's feeds must be healthy for it to be safe
    /// (NUT's MINSUPPLIES). Defaults to 1.
    #[cfg_attr(feature = "serde", serde(default = "one"))]
    pub min_supplies: u32,
    /// The host can be powered on out of band ([`crate::HostOp::PowerOn`]:
    /// Wake-on-LAN, IPMI, Redfish): restore then powers it on when this
    /// episode shut it down or cut its power and it does not answer.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "std::ops::Not::not")
    )]
    pub power_on: bool,
    /// Hosts this one shuts down after: storage after the hypervisors
    /// that use it. Its shutdown waits until each of them is seen down,
    /// gave up, or is past its expected halt time
    /// ([`crate::SequencerConfig::host_down_wait`]) since its own
    /// shutdown was sent, so a hung one costs only its own wait. A forced
    /// decision (the battery only covers this host's shutdown) goes ahead
    /// regardless. Hosts outside the episode, and this controller's own
    /// host (always last), are not waited for. No cycles
    /// ([`Inventory::validate`]).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub after: Vec<HostId>,
}

#[cfg(feature = "serde")]
fn one() -> u32 {
    1
}

impl HostEntry {
    /// A host entry with no credentials reference and `min_supplies = 1`.
    pub fn new(
        id: impl Into<HostId>,
        address: impl Into<String>,
        transport: TransportKind,
    ) -> Self {
        HostEntry {
            id: id.into(),
            address: address.into(),
            transport,
            credentials: None,
            min_supplies: 1,
            power_on: false,
            after: Vec::new(),
        }
    }

    /// Sets the hosts this one shuts down after (see [`HostEntry::after`]).
    pub fn with_after(mut self, hosts: impl IntoIterator<Item = impl Into<HostId>>) -> Self {
        self.after = hosts.into_iter().map(Into::into).collect();
        self
    }

    /// Says whether the host can be powered on out of band (see
    /// [`HostEntry::power_on`]).
    pub fn with_power_on(mut self, yes: bool) -> Self {
        self.power_on = yes;
        self
    }

    /// Sets the credentials reference.
    pub fn with_credentials(mut self, name: impl Into<String>) -> Self {
        self.credentials = Some(name.into());
        self
    }

    /// Sets how many feeds must be healthy.
    pub fn with_min_supplies(mut self, n: u32) -> Self {
        self.min_supplies = n;
        self
    }
}

/// A kind of power supply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum SupplyKind {
    /// Uninterruptible power supply.
    #[default]
    Ups,
    /// Power distribution unit.
    Pdu,
    /// Anything else (ATS, generator-backed feed, ...).
    Other,
}

/// Supply settings of an outlet: the power management data of the design.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct SupplySettings {
    /// What feeds the outlet.
    pub kind: SupplyKind,
    /// Nominal input voltage (V).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub input_voltage: Option<f32>,
    /// Nominal output voltage (V).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub output_voltage: Option<f32>,
    /// Nominal frequency (Hz).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub frequency: Option<f32>,
}

/// An outlet and the hosts it feeds.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Outlet {
    /// Outlet id on its device (NUT outlet number, PDU outlet index, or
    /// `main` for the UPS output as a whole).
    pub id: OutletId,
    /// The device it belongs to.
    pub device: DeviceId,
    /// Hosts it feeds.
    pub hosts: Vec<HostId>,
    /// Supply settings.
    #[cfg_attr(feature = "serde", serde(default))]
    pub supply: SupplySettings,
}

impl Outlet {
    /// An outlet of `device` feeding `hosts`.
    pub fn new(
        device: impl Into<DeviceId>,
        id: impl Into<OutletId>,
        hosts: impl IntoIterator<Item = HostId>,
    ) -> Self {
        Outlet {
            id: id.into(),
            device: device.into(),
            hosts: hosts.into_iter().collect(),
            supply: SupplySettings::default(),
        }
    }
}

/// The host list and the power management data.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Inventory {
    /// The hosts the power supply feeds.
    pub hosts: Vec<HostEntry>,
    /// Outlets, each with the hosts it feeds.
    #[cfg_attr(feature = "serde", serde(default))]
    pub outlets: Vec<Outlet>,
}

impl Inventory {
    /// An inventory from hosts and outlets; call [`Inventory::validate`].
    pub fn new(hosts: Vec<HostEntry>, outlets: Vec<Outlet>) -> Self {
        Inventory { hosts, outlets }
    }

    /// A cycle in the hosts' `after` lists, as the hosts along it (the
    /// first repeated at the end), if there is one.
    fn after_cycle(&self) -> Option<Vec<HostId>> {
        // Depth-first search; 1 = on the current path, 2 = done.
        fn visit<'a>(
            inv: &'a Inventory,
            h: &'a HostId,
            mark: &mut BTreeMap<&'a HostId, u8>,
            path: &mut Vec<&'a HostId>,
        ) -> Option<Vec<HostId>> {
            match mark.get(h) {
                Some(2) => return None,
                Some(_) => {
                    let from = path.iter().position(|p| *p == h).unwrap_or(0);
                    let mut c: Vec<HostId> = path[from..].iter().map(|p| (*p).clone()).collect();
                    c.push(h.clone());
                    return Some(c);
                }
                None => {}
            }
            mark.insert(h, 1);
            path.push(h);
            for a in inv.host(h).map(|e| e.after.as_slice()).unwrap_or_default() {
                if let Some(c) = visit(inv, a, mark, path) {
                    return Some(c);
                }
            }
            path.pop();
            mark.insert(h, 2);
            None
        }
        let mut mark = BTreeMap::new();
        for h in &self.hosts {
            if let Some(c) = visit(self, &h.id, &mut mark, &mut Vec::new()) {
                return Some(c);
            }
        }
        None
    }

    /// Checks ids are unique, every outlet and every `after` list names
    /// known hosts, and the `after` lists have no cycle.
    ///
    /// # Errors
    /// A [`crate::ErrorKind::Config`] error naming the first bad key
    /// (`hosts[i].after[j]`, `hosts.after` for a cycle, with its hosts).
    pub fn validate(&self) -> Result<(), Error> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, h) in self.hosts.iter().enumerate() {
            if h.id.as_str().is_empty() {
                return Err(Error::config(format!("hosts[{i}].id"), "empty host id"));
            }
            if !seen.insert(&h.id) {
                return Err(Error::config(
                    format!("hosts[{i}].id"),
                    format!("duplicate host id {:?}", h.id.as_str()),
                ));
            }
            if h.min_supplies == 0 {
                return Err(Error::config(
                    format!("hosts[{i}].min_supplies"),
                    "must be at least 1",
                ));
            }
        }
        for (i, h) in self.hosts.iter().enumerate() {
            for (j, a) in h.after.iter().enumerate() {
                if a == &h.id {
                    return Err(Error::config(
                        format!("hosts[{i}].after[{j}]"),
                        format!("{} cannot shut down after itself", h.id),
                    ));
                }
                if !seen.contains(a) {
                    return Err(Error::config(
                        format!("hosts[{i}].after[{j}]"),
                        format!("unknown host {:?}", a.as_str()),
                    ));
                }
            }
        }
        if let Some(cycle) = self.after_cycle() {
            return Err(Error::config(
                "hosts.after",
                format!(
                    "the shutdown order has a cycle: {}",
                    cycle
                        .iter()
                        .map(HostId::as_str)
                        .collect::<Vec<_>>()
                        .join(" -> ")
                ),
            ));
        }
        let mut outlets = std::collections::BTreeSet::new();
        for (i, o) in self.outlets.iter().enumerate() {
            if !outlets.insert((&o.device, &o.id)) {
                return Err(Error::config(
                    format!("outlets[{i}]"),
                    format!("duplicate outlet {}/{}", o.device, o.id),
                ));
            }
            for (j, h) in o.hosts.iter().enumerate() {
                if !seen.contains(h) {
                    return Err(Error::config(
                        format!("outlets[{i}].hosts[{j}]"),
                        format!("unknown host {:?}", h.as_str()),
                    ));
                }
            }
        }
        for (i, h) in self.hosts.iter().enumerate() {
            let feeds = self.feeds_of(&h.id).count();
            if feeds > 0 && (h.min_supplies as usize) > feeds {
                return Err(Error::config(
                    format!("hosts[{i}].min_supplies"),
                    format!(
                        "{} needs {} supplies but only {feeds} outlet(s) feed it",
                        h.id, h.min_supplies
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The outlets that feed `host`.
    pub fn feeds_of<'a>(&'a self, host: &'a HostId) -> impl Iterator<Item = &'a Outlet> + 'a {
        self.outlets.iter().filter(move |o| o.hosts.contains(host))
    }

    /// The host entry with this id.
    pub fn host(&self, id: &HostId) -> Option<&HostEntry> {
        self.hosts.iter().find(|h| &h.id == id)
    }
}

/// Whether a host's row in the table is current.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "state"))]
pub enum Freshness {
    /// Never answered yet.
    Unknown,
    /// Answered in the latest cycle.
    Fresh,
    /// Did not answer in the latest cycle; its VMs are the last ones seen.
    Stale {
        /// When it first failed in this run of failures.
        since: Instant,
        /// Kind of the latest failure.
        kind: ErrorKind,
        /// The latest failure's message.
        error: String,
    },
}

/// One host's row in the VM table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct HostRecord {
    /// What the host said about itself the last time it answered.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub info: Option<HostInfo>,
    /// Whether the row is current.
    pub freshness: Freshness,
    /// When the host last answered.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub last_seen: Option<Instant>,
    /// Its VMs, as last seen, by id. Shared, at two levels: the records
    /// with the answer they came from and with the tables before and after
    /// this one (a VM unchanged between cycles is one record), and the
    /// whole map with the previous table's row when the host's VMs did not
    /// change (same records, as a transport that keeps its records hands
    /// them out) or the host did not answer. Read it as a map (`vms.get`,
    /// `vms.values()`); change it with [`Arc::make_mut`] (copies it first
    /// if it is shared). Serialises as a plain map of [`VmInfo`].
    pub vms: Arc<BTreeMap<VmId, Arc<VmInfo>>>,
}

impl HostRecord {
    /// A row for a host never heard from.
    pub fn unknown() -> Self {
        HostRecord {
            info: None,
            freshness: Freshness::Unknown,
            last_seen: None,
            vms: Arc::default(),
        }
    }

    /// Whether the host answered in the latest cycle.
    pub fn is_fresh(&self) -> bool {
        self.freshness == Freshness::Fresh
    }

    /// VMs that are (or may be) on.
    pub fn vms_on(&self) -> impl Iterator<Item = &VmInfo> {
        self.vms.values().map(|v| &**v).filter(|v| v.power.is_on())
    }
}

/// The VM management data: host → VMs → info, rebuilt every cycle.
///
/// Invariant: a VM id appears under at most one host (see
/// [`crate::merge()`] for how a VM reported by two hosts in one cycle is
/// resolved).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct VmTable {
    /// Cycle number that produced this table (0 before the first).
    pub cycle: u64,
    /// When the cycle finished.
    pub taken_at: Instant,
    /// Rows by host.
    pub hosts: BTreeMap<HostId, HostRecord>,
}

impl VmTable {
    /// An empty table listing `hosts` as never seen.
    pub fn with_hosts<'a>(hosts: impl IntoIterator<Item = &'a HostId>) -> Self {
        VmTable {
            cycle: 0,
            taken_at: Instant::ZERO,
            hosts: hosts
                .into_iter()
                .map(|h| (h.clone(), HostRecord::unknown()))
                .collect(),
        }
    }

    /// Where a VM is, and what is known of it.
    pub fn locate(&self, vm: &VmId) -> Option<(&HostId, &VmInfo)> {
        self.hosts
            .iter()
            .find_map(|(h, r)| r.vms.get(vm).map(|v| (h, &**v)))
    }

    /// Where every VM is: build once when locating many VMs
    /// ([`VmTable::locate`] walks the hosts).
    pub fn index(&self) -> BTreeMap<&VmId, &HostId> {
        self.hosts
            .iter()
            .flat_map(|(h, r)| r.vms.keys().map(move |id| (id, h)))
            .collect()
    }

    /// Every VM with its host.
    pub fn vms(&self) -> impl Iterator<Item = (&HostId, &VmInfo)> {
        self.hosts
            .iter()
            .flat_map(|(h, r)| r.vms.values().map(move |v| (h, &**v)))
    }

    /// Number of VMs in the table.
    pub fn vm_count(&self) -> usize {
        self.hosts.values().map(|r| r.vms.len()).sum()
    }

    /// The row of one host.
    pub fn host(&self, id: &HostId) -> Option<&HostRecord> {
        self.hosts.get(id)
    }

    /// The table as pretty JSON, as sent to a management terminal.
    ///
    /// Only with the `journal` feature (which brings serde_json); with
    /// `serde` alone, serialise the table with an encoder of your choice.
    #[cfg(feature = "journal")]
    pub fn to_json(&self) -> String {
        // Serialising plain maps, strings and numbers cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "serde")]
    #[test]
    fn table_json_is_stable() {
        let mut t = VmTable::with_hosts([&HostId::from("esx1")]);
        let mut vm = VmInfo::new("4201-aa", "web1", PowerState::PoweredOn);
        vm.ips.push("10.0.0.5".parse().unwrap());
        vm.vcpus = Some(2);
        vm.memory_mib = Some(4096);
        vm.tools = ToolsState::Running;
        let r = t.hosts.get_mut(&HostId::from("esx1")).unwrap();
        Arc::make_mut(&mut r.vms).insert(vm.id.clone(), Arc::new(vm));
        r.freshness = Freshness::Fresh;
        r.last_seen = Some(Instant::from_millis(1500));
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "cycle": 0,
                "taken_at": 0,
                "hosts": {"esx1": {
                    "freshness": {"state": "fresh"},
                    "last_seen": 1500,
                    "vms": {"4201-aa": {
                        "id": "4201-aa", "name": "web1", "ips": ["10.0.0.5"],
                        "power": "powered_on", "vcpus": 2, "memory_mib": 4096,
                        "tools": "running"
                    }}
                }}
            })
        );
        let back: VmTable = serde_json::from_value(json).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn inventory_validation_names_the_place() {
        let hosts = vec![
            HostEntry::new("a", "10.0.0.1", TransportKind::Soap),
            HostEntry::new("a", "10.0.0.2", TransportKind::Soap),
        ];
        let err = Inventory::new(hosts, vec![]).validate().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("hosts[1].id"), "{err}");

        let hosts = vec![HostEntry::new("a", "10.0.0.1", TransportKind::Soap).with_min_supplies(2)];
        let outlets = vec![Outlet::new("ups1", "1", [HostId::from("a")])];
        let err = Inventory::new(hosts.clone(), outlets)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("hosts[0].min_supplies"), "{err}");

        let outlets = vec![Outlet::new("ups1", "1", [HostId::from("b")])];
        let err = Inventory::new(hosts, outlets).validate().unwrap_err();
        assert!(err.to_string().contains("outlets[0].hosts[0]"), "{err}");
    }
}
