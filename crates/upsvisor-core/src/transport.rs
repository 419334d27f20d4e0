//! [`HostTransport`]: how the engine reads and drives one hypervisor host.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::{HostInfo, HostInventory, VmId, VmInfo};

/// A VM power operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum VmOp {
    /// Ask the guest OS to shut down (needs guest tools). Returns once the
    /// request is accepted; the VM powers off later.
    ShutdownGuest,
    /// Ask the guest OS to reboot (needs guest tools).
    RebootGuest,
    /// Cut the VM's power.
    PowerOff,
    /// Power the VM on.
    PowerOn,
    /// Hard reset.
    Reset,
    /// Suspend to disk.
    Suspend,
}

impl VmOp {
    /// Every operation.
    pub const ALL: [VmOp; 6] = [
        VmOp::ShutdownGuest,
        VmOp::RebootGuest,
        VmOp::PowerOff,
        VmOp::PowerOn,
        VmOp::Reset,
        VmOp::Suspend,
    ];

    /// Whether this turns a running VM off (or towards off).
    pub fn stops(self) -> bool {
        matches!(self, VmOp::ShutdownGuest | VmOp::PowerOff | VmOp::Suspend)
    }
}

impl fmt::Display for VmOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmOp::ShutdownGuest => "shutdown_guest",
            VmOp::RebootGuest => "reboot_guest",
            VmOp::PowerOff => "power_off",
            VmOp::PowerOn => "power_on",
            VmOp::Reset => "reset",
            VmOp::Suspend => "suspend",
        })
    }
}

/// A host power operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HostOp {
    /// Enter maintenance mode.
    EnterMaintenance,
    /// Exit maintenance mode.
    ExitMaintenance,
    /// Shut the host down.
    Shutdown,
    /// Reboot the host.
    Reboot,
}

impl HostOp {
    /// Every operation.
    pub const ALL: [HostOp; 4] = [
        HostOp::EnterMaintenance,
        HostOp::ExitMaintenance,
        HostOp::Shutdown,
        HostOp::Reboot,
    ];
}

impl fmt::Display for HostOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostOp::EnterMaintenance => "enter_maintenance",
            HostOp::ExitMaintenance => "exit_maintenance",
            HostOp::Shutdown => "shutdown",
            HostOp::Reboot => "reboot",
        })
    }
}

/// What a transport can do, so that the planner never promises more.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Capabilities {
    /// [`HostTransport::inventory`] answers in one round trip; without it the
    /// poller lists ids, then asks for each VM, pacing between requests.
    pub bulk_inventory: bool,
    /// VM operations supported.
    pub vm_ops: Vec<VmOp>,
    /// Host operations supported.
    pub host_ops: Vec<HostOp>,
    /// The transport can push changes between polls.
    pub change_feed: bool,
}

impl Capabilities {
    /// Everything: bulk inventory and every operation.
    pub fn all() -> Self {
        Capabilities {
            bulk_inventory: true,
            vm_ops: VmOp::ALL.to_vec(),
            host_ops: HostOp::ALL.to_vec(),
            change_feed: false,
        }
    }

    /// Read only: nothing can be switched.
    pub fn read_only(bulk_inventory: bool) -> Self {
        Capabilities {
            bulk_inventory,
            ..Capabilities::default()
        }
    }

    /// Sets `bulk_inventory`.
    pub fn with_bulk_inventory(mut self, yes: bool) -> Self {
        self.bulk_inventory = yes;
        self
    }

    /// Sets the VM operations.
    pub fn with_vm_ops(mut self, ops: impl IntoIterator<Item = VmOp>) -> Self {
        self.vm_ops = ops.into_iter().collect();
        self
    }

    /// Sets the host operations.
    pub fn with_host_ops(mut self, ops: impl IntoIterator<Item = HostOp>) -> Self {
        self.host_ops = ops.into_iter().collect();
        self
    }

    /// Whether `op` is supported on VMs.
    pub fn supports_vm(&self, op: VmOp) -> bool {
        self.vm_ops.contains(&op)
    }

    /// Whether `op` is supported on the host.
    pub fn supports_host(&self, op: HostOp) -> bool {
        self.host_ops.contains(&op)
    }
}

/// One hypervisor host, reached one way (SOAP, MOB, SSH, ...).
///
/// Implementations must be cancel-safe: the engine drops a call's future
/// when its deadline passes. They must never panic on what a peer sends.
///
/// Power calls are idempotent where the platform allows: powering off a VM
/// that is already off is `Ok(())`, not an error.
#[async_trait]
pub trait HostTransport: Send + Sync {
    /// What this transport can do.
    fn capabilities(&self) -> Capabilities;

    /// The host's product, version and OS.
    async fn host_info(&self) -> Result<HostInfo>;

    /// Ids of every VM registered on the host.
    async fn list_vm_ids(&self) -> Result<Vec<VmId>>;

    /// One VM's information.
    async fn vm_info(&self, vm: &VmId) -> Result<VmInfo>;

    /// The host's info and all its VMs. Transports with a bulk call override
    /// this to answer in one round trip (and set
    /// [`Capabilities::bulk_inventory`]); the default is the original
    /// MOB-style flow: host info, the id list, then each VM in turn. A VM that
    /// disappears between the list and its fetch ([`crate::ErrorKind::NotFound`])
    /// is left out; any other failure fails the whole call, so that a partial
    /// answer never makes VMs look vanished.
    async fn inventory(&self) -> Result<HostInventory> {
        let info = self.host_info().await?;
        let ids = self.list_vm_ids().await?;
        let mut vms = Vec::with_capacity(ids.len());
        for id in &ids {
            match self.vm_info(id).await {
                Ok(v) => vms.push(v),
                Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(HostInventory::new(info, vms))
    }

    /// Runs a VM power operation.
    async fn vm_power(&self, vm: &VmId, op: VmOp) -> Result<()>;

    /// Runs a host power operation.
    async fn host_power(&self, op: HostOp) -> Result<()>;
}
