//! # upsvisor-soap
//!
//! A [`HostTransport`](upsvisor_traits::HostTransport) over the vSphere Web
//! Services API (vim25 SOAP), for an ESXi host reached directly or for one
//! host seen through vCenter.
//!
//! - [`codec`] is sans-IO: request envelopes and reply parsers, bounded in
//!   size and depth, fuzzed, never panicking.
//! - [`inventory`] reads the large inventory replies as a stream straight
//!   into host states and VM records, with the same limits and errors and
//!   no XML tree.
//! - `SoapTransport` is the thin I/O shell, with one of two backends:
//!   - feature `ureq` (`SoapTransport::new`): blocking requests on the
//!     adapter's own threads, handed to the engine as futures, so no async
//!     runtime is needed;
//!   - feature `reqwest` (`SoapTransport::new_reqwest`): async requests
//!     on the caller's **tokio** runtime (calls made outside one fail with
//!     a configuration error).
//!
//! One transport speaks for one host: an ESXi host directly
//! ([`HostSelector::Only`]) or a host seen through vCenter
//! ([`HostSelector::Name`]). Through vCenter, make one transport per host
//! with `SoapTransport::share`: they use one session, and inventories that
//! run at the same time (as the poller runs them) join one
//! `RetrievePropertiesEx` for the whole datacenter, so each VM appears under
//! exactly one host, placed by its `runtime.host`.
//!
//! Besides the `HostTransport` calls: `wait_for_change` is a change feed
//! (`WaitForUpdatesEx` on a private collector) that reports migrations and
//! power changes within a second, `keepalive` keeps an idle session alive,
//! `close` logs out.
//!
//! HTTPS and TLS come from `upsvisor-vihttp`, shared with the MOB
//! transport: rustls with the *ring* provider. Verification is on by default;
//! a self-signed ESXi certificate is accepted only through a pinned SHA-256
//! thumbprint ([`SoapConfig::pin_thumbprint`]);
//! [`SoapConfig::dangerous_accept_invalid_certs`] turns verification off.
//!
//! Faults map to [`upsvisor_traits::ErrorKind`]: `ToolsUnavailable` →
//! `ToolsUnavailable` (the sequencer falls back to power off);
//! `InvalidPowerState` on a call whose target state already holds → `Ok`;
//! `NotAuthenticated` → one transparent new login; `InvalidLogin` → `Auth`;
//! `RestrictedVersion` (free ESXi's read-only API) → `Unsupported`, naming
//! the SSH transport as the way out.
//!
//! Logging (`tracing`): `info` for session opened/expired and host power
//! accepted; `debug` for resolved hosts and idempotent no-ops; `warn` for
//! failed power calls. Bodies, cookies and passwords are never logged.
//!
//! ```
//! use upsvisor_soap::codec::{self, MoRef};
//! let xml = codec::call("PowerOffVM_Task", &MoRef::new("VirtualMachine", "vm-42"));
//! assert!(xml.contains(r#"<_this type="VirtualMachine">vm-42</_this>"#));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod codec;
mod config;
#[cfg(any(feature = "ureq", feature = "reqwest"))]
mod http;
pub mod inventory;
#[cfg(any(feature = "ureq", feature = "reqwest"))]
mod transport;
pub mod xml;

pub use config::{HostSelector, SoapConfig, Thumbprint};
#[cfg(any(feature = "ureq", feature = "reqwest"))]
pub use transport::SoapTransport;
