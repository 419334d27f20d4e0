//! [`HostTransport`]: how the engine reads and drives one hypervisor host.

use std::fmt;
use std::future::Future;

use async_trait::async_trait;

use crate::error::Result;
use crate::model::{HostInfo, HostInventory, VmId, VmInfo};

/// A VM power operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
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
    /// Shut the host down even outside maintenance mode and with VMs still
    /// running; the hypervisor's own guest autostop runs first. vSphere:
    /// `ShutdownHost_Task` with `force = true`. Used only for this
    /// controller's own host, which cannot enter maintenance mode under
    /// the controller's running VM. A transport without a forced form
    /// answers `Unsupported`.
    ShutdownForce,
    /// Power a halted host on, out of band: Wake-on-LAN, IPMI `chassis
    /// power on`, Redfish `ComputerSystem.Reset` `On` (see the
    /// `upsvisor-bmc` crate). Returns once the request is accepted, not
    /// when the host answers; a host already on is success. A hypervisor
    /// transport cannot do this itself (its host is off) and answers
    /// `Unsupported`; the daemon routes it to the host's configured method.
    PowerOn,
}

impl HostOp {
    /// Every in-band operation (what a hypervisor's own API does);
    /// [`HostOp::PowerOn`] is out of band and not in it.
    pub const ALL: [HostOp; 5] = [
        HostOp::EnterMaintenance,
        HostOp::ExitMaintenance,
        HostOp::Shutdown,
        HostOp::Reboot,
        HostOp::ShutdownForce,
    ];
}

impl fmt::Display for HostOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostOp::EnterMaintenance => "enter_maintenance",
            HostOp::ExitMaintenance => "exit_maintenance",
            HostOp::Shutdown => "shutdown",
            HostOp::Reboot => "reboot",
            HostOp::ShutdownForce => "shutdown_force",
            HostOp::PowerOn => "power_on",
        })
    }
}

/// What a transport can do, so that the planner never promises more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Capabilities {
    /// [`HostTransport::inventory`] answers in one round trip rather than
    /// one request per VM. Informational (shown by `check`, used by
    /// simulators to choose their flow): the poller always calls
    /// `inventory`, whichever it is.
    pub bulk_inventory: bool,
    /// VM operations supported.
    pub vm_ops: Vec<VmOp>,
    /// Host operations supported.
    pub host_ops: Vec<HostOp>,
}

impl Capabilities {
    /// Everything: bulk inventory and every operation.
    pub fn all() -> Self {
        Capabilities {
            bulk_inventory: true,
            vm_ops: VmOp::ALL.to_vec(),
            host_ops: HostOp::ALL.to_vec(),
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
    ///
    /// [`crate::ErrorKind::NotFound`] must mean the platform positively said
    /// this VM does not exist (a fault code, an empty answer to a listing
    /// that worked), never a connection, daemon or parsing failure: the
    /// per-VM inventory flows leave such a VM out once a fresh
    /// [`HostTransport::list_vm_ids`] confirms it (see [`fetch_each_vm`]).
    async fn vm_info(&self, vm: &VmId) -> Result<VmInfo>;

    /// The host's info and all its VMs: what the poller calls, once per
    /// host per cycle, under the host's deadline. Transports with a bulk
    /// call override this to answer in one round trip (and set
    /// [`Capabilities::bulk_inventory`]); the default is the original
    /// MOB-style flow: host info, the id list, then each VM in turn, with
    /// no pause. A per-VM transport that must pace its requests overrides
    /// it with [`per_vm_inventory`] and its own pause.
    ///
    /// Inventories never silently lose VMs: a VM is left out only when the
    /// host positively says it no longer exists, that is its fetch fails
    /// with [`crate::ErrorKind::NotFound`] *and* a fresh id list (taken
    /// after all fetches) no longer holds it (see [`fetch_each_vm`]). Any
    /// other failure, a NotFound for a VM that is still listed, or a failed
    /// confirming list fails the whole call, so the poller keeps the host's
    /// last VMs, marked stale.
    async fn inventory(&self) -> Result<HostInventory> {
        per_vm_inventory(self, || async {}).await
    }

    /// Runs a VM power operation.
    async fn vm_power(&self, vm: &VmId, op: VmOp) -> Result<()>;

    /// Runs a host power operation.
    async fn host_power(&self, op: HostOp) -> Result<()>;
}

/// Confirms that VMs whose fetch answered [`crate::ErrorKind::NotFound`]
/// are really gone: lists the host's VM ids again (nothing to do when
/// `not_found` is empty). `Ok(())` when none of them is listed any more;
/// the list call's own error when it fails; a
/// [`Protocol`](crate::ErrorKind::Protocol) error naming the VM when one is
/// still listed (the host still has it, so leaving it out would make it
/// look vanished).
///
/// [`fetch_each_vm`] does this itself; this is for a flow that collects
/// its NotFound VMs some other way.
pub async fn confirm_gone<T: HostTransport + ?Sized>(
    t: &T,
    not_found: Vec<(VmId, crate::Error)>,
) -> Result<()> {
    if not_found.is_empty() {
        return Ok(());
    }
    let listed = t.list_vm_ids().await?;
    none_still_listed(&listed, not_found, None)
}

/// The per-VM inventory flow of a host without a bulk call: `host_info`,
/// `list_vm_ids`, then each VM's `vm_info` through [`fetch_each_vm`]
/// (with its NotFound rule), awaiting `pace()` between two requests
/// (`|| async {}` for no pause).
///
/// It is [`HostTransport::inventory`]'s default and the poller's paced
/// flow; a transport that overrides `inventory` for other reasons (a
/// pause of its own, a simulated host) calls it for its per-VM case.
/// Errors: the first failed request's, or [`fetch_each_vm`]'s.
pub async fn per_vm_inventory<T, Pace, PaceFut>(t: &T, mut pace: Pace) -> Result<HostInventory>
where
    T: HostTransport + ?Sized,
    Pace: FnMut() -> PaceFut,
    PaceFut: Future<Output = ()>,
{
    let info = t.host_info().await?;
    pace().await;
    let ids = t.list_vm_ids().await?;
    let vms = fetch_each_vm(
        ids,
        |id| async move { t.vm_info(&id).await },
        || t.list_vm_ids(),
        pace,
        None,
    )
    .await?;
    Ok(HostInventory::new(info, vms))
}

/// The per-VM inventory loop, the one copy every per-VM flow uses
/// ([`per_vm_inventory`], and adapters that list VMs by keys of their
/// platform's own): fetches each of `keys` in turn,
/// in order, one at a time, awaiting `pace()` before each fetch.
///
/// - `keys`: what the host listed (VM ids, or the platform's own keys such
///   as ESXi Vmids or libvirt UUIDs).
/// - `fetch(key)`: one VM's details.
/// - `relist()`: a fresh listing of the same keys, called (after one more
///   `pace()`) only when some fetch answered
///   [`NotFound`](crate::ErrorKind::NotFound).
/// - `pace()`: the pause between two requests to the host
///   (`|| async {}` for none).
/// - `host`: names the host in the error below (`None`: it is named
///   `the host of VM {key}`).
///
/// Returns every fetched value, in `keys` order. Inventories never silently
/// lose VMs: a key whose fetch answered NotFound is left out only when the
/// fresh listing no longer holds it. Errors: the first fetch error other
/// than NotFound (later keys are not fetched); the listing's own error; a
/// [`Protocol`](crate::ErrorKind::Protocol) error naming the key when a
/// NotFound key is still listed. Any error fails the whole inventory, so
/// the poller keeps the host's last VMs, marked stale.
///
/// No deadline of its own: the caller's (the poller's per-host deadline)
/// bounds the whole loop, and dropping the future stops it between
/// requests.
///
/// ```
/// use upsvisor_traits::{Error, ErrorKind, fetch_each_vm};
///
/// // "b" vanished between the list and its fetch, and the fresh list
/// // agrees: it is left out.
/// let vms = futures::executor::block_on(fetch_each_vm(
///     vec!["a", "b"],
///     |k| async move {
///         if k == "b" { Err(Error::not_found("VM b")) } else { Ok(k.to_uppercase()) }
///     },
///     || async { Ok(vec!["a"]) },
///     || async {},
///     Some("esx1"),
/// ));
/// assert_eq!(vms.unwrap(), ["A"]);
/// ```
pub async fn fetch_each_vm<K, V, Fetch, FetchFut, Relist, RelistFut, Pace, PaceFut>(
    keys: Vec<K>,
    mut fetch: Fetch,
    relist: Relist,
    mut pace: Pace,
    host: Option<&str>,
) -> Result<Vec<V>>
where
    K: Clone + PartialEq + fmt::Display,
    Fetch: FnMut(K) -> FetchFut,
    FetchFut: Future<Output = Result<V>>,
    Relist: FnOnce() -> RelistFut,
    RelistFut: Future<Output = Result<Vec<K>>>,
    Pace: FnMut() -> PaceFut,
    PaceFut: Future<Output = ()>,
{
    let mut vms = Vec::with_capacity(keys.len());
    let mut gone = Vec::new();
    for key in keys {
        pace().await;
        match fetch(key.clone()).await {
            Ok(v) => vms.push(v),
            Err(e) if e.kind() == crate::ErrorKind::NotFound => gone.push((key, e)),
            Err(e) => return Err(e),
        }
    }
    if !gone.is_empty() {
        pace().await;
        let listed = relist().await?;
        none_still_listed(&listed, gone, host)?;
    }
    Ok(vms)
}

/// `Ok` when none of the `not_found` keys is in `listed`.
fn none_still_listed<K: PartialEq + fmt::Display>(
    listed: &[K],
    not_found: Vec<(K, crate::Error)>,
    host: Option<&str>,
) -> Result<()> {
    for (key, e) in not_found {
        if listed.contains(&key) {
            return Err(crate::Error::protocol(
                host.map_or_else(|| format!("the host of VM {key}"), str::to_owned),
                format!(
                    "VM {key} is still listed, but reading it failed ({e}); \
                     the inventory is refused rather than returned without it"
                ),
            ));
        }
        #[cfg(feature = "tracing")]
        tracing::debug!(host = host.unwrap_or(""), vm = %key, "VM gone between the list and its fetch (confirmed)");
    }
    Ok(())
}
