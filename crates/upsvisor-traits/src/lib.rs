//! The three traits a vendor implements to put upsvisor on its hardware,
//! and nothing else: [`HostTransport`] (a hypervisor host), [`PowerDevice`]
//! (a UPS or PDU) and [`Clock`] (time and waiting), with the error type and
//! the model types they mention.
//!
//! The engine that drives them (poller, merge, policy, sequencer) is
//! `upsvisor-core`, which re-exports everything here at the same names. A
//! transport or device depends on this crate alone, so engine releases do
//! not move the code a vendor writes against it.
//!
//! # The call contract
//!
//! - **Async, no runtime.** Every call is an `async fn` taken through
//!   [`async_trait`](macro@async_trait): the engine holds `Arc<dyn HostTransport>`,
//!   `Arc<dyn PowerDevice>` and `Arc<dyn Clock>`, and Rust's native
//!   `async fn` in traits is not object safe (a hand-written boxing shim
//!   per trait is what `async_trait` generates anyway). Futures must be
//!   `Send`. Nothing here or in the engine assumes tokio: a blocking
//!   library is wrapped with [`spawn_blocking`].
//! - **Cancel-safe.** The engine drops a call's future when its deadline
//!   passes. A dropped call must leave the peer consistent; it may still
//!   have been delivered, and the engine assumes it may have been.
//! - **Power calls return on acceptance, not completion.**
//!   [`HostTransport::vm_power`] returns `Ok` once the platform accepted
//!   the operation (vSphere: the task was created; libvirt: `virsh
//!   shutdown` returned). The engine learns the outcome from later polls:
//!   a guest shutdown is done when an inventory shows the VM off, a host
//!   shutdown when the host stops answering. [`PowerDevice::command`] is
//!   the same: NUT's `INSTCMD` answer `OK` means queued. Operations that
//!   are already in the wanted state are `Ok` (powering off a VM that is
//!   off), never an error.
//! - **Unreachable means not delivered.** Return
//!   [`ErrorKind::Unreachable`] only when the request was certainly not
//!   delivered (refused, no route, DNS, a reset before it was written):
//!   the engine resends those. A failure after the request was written is
//!   [`ErrorKind::Timeout`]: it may have been delivered, and is not resent.
//! - **Never invent.** A failed read is an [`Error`], never a default
//!   value: an unreachable UPS is not on line, an unknown tools state is
//!   not "no tools", a VM that could not be read is not gone.
//!
//! # What each [`ErrorKind`] makes the engine do
//!
//! | kind | polls | VM commands | host and device commands |
//! |---|---|---|---|
//! | [`Unreachable`](ErrorKind::Unreachable) | the host's last VMs are kept, marked stale | retried with backoff | retried (never delivered, so resending is safe); restore waits for the host |
//! | [`Timeout`](ErrorKind::Timeout) | as unreachable | a guest shutdown is not resent (it may have been delivered): the guest gets the rest of its timeout, then a power-off; a power-off that times out fails; the host is marked troubled for the episode | a host shutdown is not resent: whether the host goes down is observed; a device command is not resent |
//! | [`Auth`](ErrorKind::Auth) | stale | fails at once (retrying hides the problem) | fails at once; a power-on method refusing is not sent again |
//! | [`NotFound`](ErrorKind::NotFound) | a VM is left out only when a fresh list confirms it ([`fetch_each_vm`]) | the VM moved (DRS, HA): the table is polled again and the command goes to its new host | fails |
//! | [`Unsupported`](ErrorKind::Unsupported) | stale | a guest shutdown falls back to power-off | fails; a power-on method is not sent again |
//! | [`InvalidState`](ErrorKind::InvalidState) | stale | already changing state: polled again, then retried | a host shutdown refused outside maintenance mode enters it, then shuts down again |
//! | [`Protocol`](ErrorKind::Protocol) | stale | fails | fails |
//! | [`ToolsUnavailable`](ErrorKind::ToolsUnavailable) | stale | a guest shutdown falls back to power-off at once | fails |
//! | [`Config`](ErrorKind::Config) | stale | fails | fails; a power-on method is not sent again |
//!
//! "Fails" means the step is marked failed in the audit and the sequence
//! goes on without it: a failed VM never holds its host's shutdown past
//! that host's deadline, and nothing destructive is inferred from a
//! failure.
//!
//! # A toy transport and device
//!
//! ```
//! use upsvisor_traits::{
//!     async_trait, Capabilities, DeviceCapabilities, DeviceCommand, Error, HostInfo, HostInventory,
//!     HostOp, HostTransport, PowerDevice, PowerState, PowerStatus, Result, StatusToken,
//!     VmId, VmInfo, VmOp,
//! };
//!
//! /// One host with one VM, answered from memory.
//! struct ToyHost;
//!
//! #[async_trait]
//! impl HostTransport for ToyHost {
//!     fn capabilities(&self) -> Capabilities {
//!         // Every operation, answered per VM (the default `inventory`).
//!         Capabilities::all().with_bulk_inventory(false)
//!     }
//!     async fn host_info(&self) -> Result<HostInfo> {
//!         Ok(HostInfo::new("toyvisor", "1.0"))
//!     }
//!     async fn list_vm_ids(&self) -> Result<Vec<VmId>> {
//!         Ok(vec![VmId::new("vm-1")])
//!     }
//!     async fn vm_info(&self, vm: &VmId) -> Result<VmInfo> {
//!         match vm.as_str() {
//!             "vm-1" => Ok(VmInfo::new("vm-1", "web", PowerState::PoweredOn)),
//!             other => Err(Error::not_found(format!("VM {other}"))),
//!         }
//!     }
//!     async fn vm_power(&self, _vm: &VmId, _op: VmOp) -> Result<()> {
//!         Ok(()) // accepted; a later poll shows the outcome
//!     }
//!     async fn host_power(&self, op: HostOp) -> Result<()> {
//!         match op {
//!             HostOp::PowerOn => Err(Error::unsupported("power-on: the host is off")),
//!             _ => Ok(()),
//!         }
//!     }
//! }
//!
//! /// A UPS that is always on battery.
//! struct ToyUps;
//!
//! #[async_trait]
//! impl PowerDevice for ToyUps {
//!     async fn status(&self) -> Result<PowerStatus> {
//!         Ok(PowerStatus::from_tokens(StatusToken::parse_list("OB DISCHRG")))
//!     }
//!     async fn capabilities(&self) -> Result<DeviceCapabilities> {
//!         Ok(DeviceCapabilities::default())
//!     }
//!     async fn command(&self, cmd: DeviceCommand) -> Result<()> {
//!         Err(Error::unsupported(format!("{cmd:?}")))
//!     }
//! }
//!
//! // The default `inventory` is the per-VM flow: host info, list, each VM.
//! let inv: HostInventory = futures::executor::block_on(ToyHost.inventory()).unwrap();
//! assert_eq!(inv.vms[0].name, "web");
//! let st = futures::executor::block_on(ToyUps.status()).unwrap();
//! assert!(st.on_battery());
//! ```
//!
//! # Features
//!
//! Both off by default: the default tree is this crate and `async-trait`
//! with its proc-macro stack, 6 crates (`tests/dependency_budget.rs`).
//!
//! - `serde`: `Serialize` and `Deserialize` on the model, power and error
//!   types (stable JSON: snake_case names, absent optional values left
//!   out). An adapter that serialises these types turns it on itself.
//! - `tracing`: a debug event when [`fetch_each_vm`] confirms a VM gone.

mod blocking;
mod channel;
mod clock;
mod error;
mod model;
mod power;
mod secret;
mod transport;

/// The attribute the traits are declared with; implement them under it.
pub use async_trait::async_trait;

pub use blocking::spawn_blocking;
pub use clock::{BootTime, Clock, Elapsed, Instant, TimeAnchor, TimeBasis, with_deadline};
pub use error::{Error, ErrorKind, Result};
pub use model::{
    DeviceId, HostId, HostInfo, HostInventory, OutletId, PowerState, ToolsState, VmId, VmInfo,
};
pub use power::{
    DeviceCapabilities, DeviceCommand, OutletStatus, PowerDevice, PowerSource, PowerStatus,
    StatusToken, StatusWarning,
};
pub use secret::{Credentials, Secret};
pub use transport::{
    Capabilities, HostOp, HostTransport, VmOp, confirm_gone, fetch_each_vm, per_vm_inventory,
};

/// Used by `upsvisor-core` only; not part of the stable surface.
#[doc(hidden)]
pub mod internal {
    pub use crate::channel::{Closed, Receiver, Sender, TrySendError, bounded};
    #[cfg(feature = "serde")]
    pub use crate::clock::rebased;
    pub use crate::clock::rfc3339_utc;
}
