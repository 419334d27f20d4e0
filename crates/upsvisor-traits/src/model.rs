//! The data model: host list, power management data and the VM table.
//!
//! With the `serde` feature everything here serialises to stable JSON
//! (snake_case field and variant names, absent optional values left out).
//! The JSON of `VmTable` is what goes to a management terminal.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        #[cfg_attr(feature = "serde", serde(transparent))]
        // Shared text: a clone (every table, event and index holds ids) is
        // a reference count, not an allocation. Serialises as a string.
        pub struct $name(Arc<str>);

        impl $name {
            /// Wraps an id.
            pub fn new(id: impl Into<String>) -> Self {
                $name(Arc::from(id.into()))
            }
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(Arc::from(s))
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(Arc::from(s))
            }
        }
    };
}

id_type!(
    /// A hypervisor host, as named in the host list.
    HostId
);
id_type!(
    /// A VM, stable across migrations: the instance UUID where the platform
    /// has one, else its managed-object id or the platform's own id. An id
    /// the platform guarantees on one host only is keyed with its host (see
    /// [`VmInfo::host_local`] and [`VmId::scoped`]).
    VmId
);

impl VmId {
    /// The key of a host-local platform id: `<local>@<host>`.
    pub fn scoped(host: &HostId, local: &str) -> VmId {
        VmId::from(format!("{local}@{host}"))
    }

    /// The platform's own id inside a key made by [`VmId::scoped`] for
    /// `host`; `None` if this key was not scoped to `host`.
    pub fn local_on(&self, host: &HostId) -> Option<&str> {
        self.0
            .strip_suffix(host.as_str())
            .and_then(|s| s.strip_suffix('@'))
    }
}
id_type!(
    /// An outlet (or outlet group) of a power device.
    OutletId
);
id_type!(
    /// A power device (UPS, PDU).
    DeviceId
);

/// What a host says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct HostInfo {
    /// Product name, e.g. "VMware ESXi", "libvirt", "Proxmox VE".
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub product: Option<String>,
    /// Product version.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub version: Option<String>,
    /// Build number.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub build: Option<String>,
    /// Operating system (type or full name).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub os: Option<String>,
    /// The host's own name for itself.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub hostname: Option<String>,
}

impl HostInfo {
    /// Host info with a product and version.
    pub fn new(product: impl Into<String>, version: impl Into<String>) -> Self {
        HostInfo {
            product: Some(product.into()),
            version: Some(version.into()),
            ..HostInfo::default()
        }
    }
}

/// A VM's power state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum PowerState {
    /// Running.
    PoweredOn,
    /// Off.
    PoweredOff,
    /// Suspended (memory saved, not running).
    Suspended,
    /// The host did not say.
    #[default]
    Unknown,
}

impl PowerState {
    /// Whether the VM may be drawing power and holding dirty state.
    /// `Unknown` counts as on: the safe assumption before cutting power.
    pub fn is_on(self) -> bool {
        matches!(self, PowerState::PoweredOn | PowerState::Unknown)
    }
}

/// State of the guest agent (VMware Tools, qemu-guest-agent, Hyper-V
/// integration services).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ToolsState {
    /// Running: guest shutdown can be requested.
    Running,
    /// Installed but not running.
    NotRunning,
    /// Not installed.
    NotInstalled,
    /// The host did not say.
    #[default]
    Unknown,
}

/// What a host says about one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct VmInfo {
    /// Stable id.
    pub id: VmId,
    /// Display name.
    pub name: String,
    /// IP addresses reported by the guest.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub ips: Vec<IpAddr>,
    /// Power state.
    pub power: PowerState,
    /// Virtual CPUs.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub vcpus: Option<u32>,
    /// Configured memory in MiB.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub memory_mib: Option<u64>,
    /// Guest OS (full name where known).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub guest_os: Option<String>,
    /// Guest tools state.
    #[cfg_attr(feature = "serde", serde(default))]
    pub tools: ToolsState,
    /// Tags or labels the platform reports (used by VM groups).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub tags: Vec<String>,
    /// The platform's id is unique on its host only: a Proxmox VMID (every
    /// new node numbers from 100; pvesh(1) and the Proxmox VE admin guide,
    /// "Virtual Machines": VMIDs are unique within one cluster, and a
    /// standalone node is a cluster of one), an ESXi Vmid or managed-object
    /// id when the VM has no instance UUID. A transport sets it; the merge
    /// then keys the VM by [`VmId::scoped`] (`<id>@<host>`) so that two
    /// hosts' `qemu/100` are two VMs, and the engine hands the platform its
    /// own id back ([`VmInfo::platform_id`]). Such a VM does not keep one
    /// identity across a migration (the platform gives none).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "std::ops::Not::not")
    )]
    pub host_local: bool,
    /// The SMBIOS system UUID the guest sees (Linux:
    /// `/sys/class/dmi/id/product_uuid`), where the platform reports it:
    /// vSphere `config.uuid`, libvirt's domain UUID (also the SMBIOS UUID
    /// unless `<sysinfo>` overrides it; libvirt "Domain XML format"),
    /// Proxmox `smbios1: uuid=`. Lets a controller running in a VM find its
    /// own (see `upsvisor_core::MachineIdentity`). Text as reported.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub bios_uuid: Option<String>,
}

impl VmInfo {
    /// A VM with an id, a name and a power state; everything else unknown.
    pub fn new(id: impl Into<VmId>, name: impl Into<String>, power: PowerState) -> Self {
        VmInfo {
            id: id.into(),
            name: name.into(),
            ips: Vec::new(),
            power,
            vcpus: None,
            memory_mib: None,
            guest_os: None,
            tools: ToolsState::Unknown,
            tags: Vec::new(),
            host_local: false,
            bios_uuid: None,
        }
    }

    /// Marks the id as unique on its host only (see [`VmInfo::host_local`]).
    pub fn host_local(mut self, yes: bool) -> Self {
        self.host_local = yes;
        self
    }

    /// The id to hand to `host`'s transport: the platform's own id for a
    /// host-local one keyed by [`VmId::scoped`], else the id itself.
    pub fn platform_id(&self, host: &HostId) -> VmId {
        match self.id.local_on(host) {
            Some(local) if self.host_local => VmId::from(local),
            _ => self.id.clone(),
        }
    }
}

/// What one host answered in one poll.
///
/// The VM records are shared ([`Arc`]): the engine's table keeps the same
/// records, so a VM costs a pointer copy from an answer into the table and
/// from one cycle's table into the next, and a transport that keeps its own
/// records (a cache, a simulator) can hand them out without copying them.
/// With `serde` a record serialises exactly as a plain [`VmInfo`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct HostInventory {
    /// The host's own description.
    pub info: HostInfo,
    /// Its VMs. Change one in place with [`Arc::make_mut`] (copies it only
    /// if it is shared).
    pub vms: Vec<Arc<VmInfo>>,
}

impl HostInventory {
    /// An inventory answer from plain records (each moved into an
    /// [`Arc`]).
    pub fn new(info: HostInfo, vms: Vec<VmInfo>) -> Self {
        HostInventory {
            info,
            vms: vms.into_iter().map(Arc::new).collect(),
        }
    }

    /// An inventory answer from records the transport keeps and shares
    /// (no copy).
    pub fn shared(info: HostInfo, vms: Vec<Arc<VmInfo>>) -> Self {
        HostInventory { info, vms }
    }
}
