//! # upsvisor
//!
//! Makes a UPS or PDU controller aware of the virtual machines on the
//! hypervisor hosts it feeds, and drives VM and host power from power
//! events. This facade re-exports [`upsvisor_core`] and, behind features,
//! the adapter crates:
//!
//! | feature | crate | what |
//! |---|---|---|
//! | `sim` | `upsvisor-sim` | simulated hosts and UPS |
//!
//! No network backend is on by default: embedders pick adapters explicitly.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use upsvisor_core::*;

/// Simulated hosts and UPS (feature `sim`).
#[cfg(feature = "sim")]
pub use upsvisor_sim as sim;
