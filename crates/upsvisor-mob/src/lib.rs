//! vSphere Managed Object Browser transport for upsvisor: the original
//! design's own method of reading a host.
//!
//! [`MobTransport`] reads `https://<host>/mob` over HTTPS with basic auth:
//! `/mob` for the product, version and OS; `/mob/?moid=ha-folder-vm` (or, for
//! a host behind vCenter, the host's `vm` list) for the VM ids; then
//! `/mob/?moid=<vm>&doPath=summary` for each VM in turn: name, primary IP,
//! power state, vCPUs, memory, guest OS, tools state and instance UUID. It
//! reports no bulk inventory, so the core poller paces between requests;
//! [`MobConfig::pacing`] paces a direct [`inventory`] call. Power operations
//! go through the MOB's method pages with the `vmware-session-nonce` the
//! form carries.
//!
//! The page codec ([`page`]) is pure, bounded and never panics. HTML is
//! parsed with [`tl`](https://crates.io/crates/tl): small, dependency-free,
//! tolerant of sloppy markup and linear in time; a full HTML5 tree builder
//! (html5ever behind `scraper`) would add a large dependency tree for pages
//! that are simple generated tables.
//!
//! TLS policy as in `upsvisor-soap`: web roots by default; self-signed ESXi
//! certificates by pinned SHA-256 thumbprint ([`MobConfig::pin_thumbprint`]);
//! no verification only through [`MobConfig::dangerous_accept_invalid_certs`].
//! The MOB is disabled by default since ESXi 6.0: an HTTP 503 or 404 on a
//! MOB page is [`ErrorKind::Unsupported`](upsvisor_core::ErrorKind) with
//! [`ENABLE_HINT`].
//!
//! Backend: ureq only (blocking, on the adapter's own threads, exposed as
//! futures). There is no reqwest backend yet.
//!
//! Limits of the method: the summary page carries only the guest's primary
//! IP address (SOAP's `guest.net` lists every address), and each VM costs
//! one request: use the SOAP transport where it is available.
//!
//! [`inventory`]: upsvisor_core::HostTransport::inventory
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod http;
pub mod page;
mod tls;
mod transport;

pub use config::{MobConfig, Thumbprint};
pub use transport::{ENABLE_HINT, MobTransport, vm_from_summary};
