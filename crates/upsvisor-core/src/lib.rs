//! # upsvisor-core
//!
//! The runtime-free heart of upsvisor: the traits a vendor implements
//! ([`HostTransport`], [`PowerDevice`], [`Clock`]), the data model (the host
//! list, power management data and the VM table), and the engine that polls
//! hosts in parallel, merges their answers into the table and publishes
//! changes.
//!
//! No I/O and no async runtime: everything here runs under any executor,
//! including `futures::executor::block_on` on a small board. Time comes only
//! from a [`Clock`]; [`SimClock`] makes long scenarios instant and
//! deterministic.
//!
//! ```
//! use std::sync::Arc;
//! use upsvisor_core::{Clock, SimClock, Poller, PollerConfig};
//!
//! let clock = SimClock::new();
//! let mut poller = Poller::new(Arc::new(clock.clone()), PollerConfig::default());
//! // poller.add_host(id, Arc::new(transport)) for each host, then:
//! let update = clock.block_on(poller.poll_once());
//! assert_eq!(update.table.cycle, 1);
//! assert_eq!(update.table.vm_count(), 0);
//! ```
//!
//! The modules are private: the re-export list below is the whole public
//! surface, so internals can move without breaking anyone.
//!
//! # Restart safety needs the `journal` feature
//!
//! **With default features nothing survives a restart.** The episode in
//! progress (which VMs and hosts this controller shut down, and so which
//! to start again when mains returns; which commands were already sent;
//! the outage timers) lives in memory only, and a controller that
//! restarts mid-outage starts from the current power state, having
//! forgotten whom to wake. Turn on the `journal` feature and attach a
//! journal (`Engine::with_journal(Box::new(FileJournal::new(path)))`) in
//! any build that protects real equipment. The default leaves it off only
//! so that the crate a firmware links stays at 12 crates
//! (`tests/dependency_budget.rs`); `upsvisord` and the `upsvisor` facade
//! turn it on.
//!
//! # Features
//!
//! All off by default; the default tree is 12 crates, 22 with all three.
//!
//! - `journal`: `Engine::with_journal`, the `Journal` trait and its
//!   `FileJournal` and `MemJournal` stores (the state is JSON, through
//!   serde_json), and `VmTable::to_json`. Implies `serde`.
//! - `serde`: `Serialize` and `Deserialize` on the model, events, plan and
//!   config types, and on the trait crate's (its `serde` feature).
//! - `tracing`: the engine's log lines, per its logging contract (see
//!   [`Engine`]), through `tracing`; and the trait crate's. Without it no
//!   log line is compiled in: failures still reach subscribers as events
//!   ([`EngineEvent::DeviceError`], [`EngineEvent::Audit`],
//!   [`EngineEvent::Journal`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bus;
mod clock;
mod engine;
mod hook;
#[cfg(feature = "journal")]
mod journal;
mod logging;
mod merge;
mod model;
mod policy;
mod poller;
mod sequencer;

pub use upsvisor_traits::{
    Capabilities, Credentials, DeviceCapabilities, DeviceCommand, Error, ErrorKind, HostOp,
    HostTransport, OutletStatus, PowerDevice, PowerSource, PowerStatus, Result, Secret,
    StatusToken, StatusWarning, VmOp, confirm_gone, fetch_each_vm, per_vm_inventory,
    spawn_blocking,
};

/// The trait crate, for paths written against it (`upsvisor_core::traits::X`
/// is `upsvisor_traits::X`).
pub use upsvisor_traits as traits;

pub use bus::{Bus, Subscription, Update};
pub use clock::{
    BootTime, Clock, Elapsed, Instant, SimClock, Stalled, SystemClock, TimeAnchor, TimeBasis,
    with_deadline,
};
pub use engine::{Canceled, Engine, EngineConfig, EngineEvent, JournalReport, ManualResult};
pub use hook::{HookCall, HookRunner};
#[cfg(feature = "journal")]
pub use journal::{FileJournal, Journal, MemJournal};
pub use merge::{Event, HostOutcome, merge};
pub use model::{
    DeviceId, Freshness, HostEntry, HostId, HostInfo, HostInventory, HostRecord, Inventory, Outlet,
    OutletId, PowerState, SupplyKind, SupplySettings, ToolsState, TransportKind, VmId, VmInfo,
    VmTable,
};
pub use policy::{
    Alert, LostContactOnBattery, Policy, PolicyConfig, Trigger, Verdict, hosts_at_risk,
};
pub use poller::{Poller, PollerConfig};
pub use sequencer::config::{
    CommitPoint, FinalAction, Hook, HookPoint, MachineIdentity, Matcher, SequencerConfig, VmAction,
    VmGroup,
};
pub use sequencer::plan::{Plan, PlanItem, PlanStage};
pub use sequencer::{Audit, AuditEntry, Command, EpisodeStatus, Issued, PowerView, Sequencer};
