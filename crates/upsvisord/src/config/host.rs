//! `[[host]]`: the one description of a host (a hypervisor, or a plain
//! server over `ssh-server`), and its transport.

use std::fmt;

use serde::Deserialize;
use upsvisor_core::{HostEntry, TransportKind};

/// One hypervisor host: a `[[host]]` of the config file, and a host
/// registered through the API ([`crate::registry::RegisteredHost`] holds
/// one, with its credentials inline). Parsed once, with a typed
/// [`Transport`]; [`HostSection::validate`] holds the checks both paths run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HostSection {
    /// Id.
    pub id: String,
    /// How the host is reached (`transport = "ssh-libvirt"`; names in
    /// [`TRANSPORTS`]).
    pub transport: Transport,
    /// `host[:port]`.
    pub address: String,
    /// Credentials entry (a name in the credentials file; a registered
    /// host's own credentials are kept beside it, not here).
    #[serde(default)]
    pub credentials: Option<String>,
    /// SSH host key pin (`SHA256:...`).
    #[serde(default)]
    pub host_key: Option<String>,
    /// Accept any SSH host key (insecure; for labs only).
    #[serde(default)]
    pub dangerous_accept_any_host_key: bool,
    /// libvirt connection URI for `ssh-libvirt`.
    #[serde(default)]
    pub libvirt_uri: Option<String>,
    /// `soap`/`mob`: SHA-256 thumbprint of the endpoint's TLS certificate
    /// (`AB:CD:...`), for self-signed ESXi certificates.
    #[serde(default)]
    pub tls_thumbprint: Option<String>,
    /// `soap`/`mob`: skip TLS verification (insecure; for labs only).
    #[serde(default)]
    pub dangerous_accept_invalid_certs: bool,
    /// `soap`/`mob`: allow an `http://` address, so the credentials and
    /// session cookie travel in clear (insecure; for labs only).
    #[serde(default)]
    pub dangerous_allow_plain_http: bool,
    /// `soap`/`mob` through vCenter: which host (`soap`: its name in
    /// vCenter; `mob`: its managed-object id, e.g. `host-21`). Unset: the
    /// endpoint is the ESXi host itself.
    #[serde(default)]
    pub vsphere_host: Option<String>,
    /// Feeds that must stay healthy.
    #[serde(default = "one")]
    pub min_supplies: u32,
    /// How the host is powered on after an outage (Wake-on-LAN, IPMI,
    /// Redfish); see [`crate::poweron`].
    #[serde(default)]
    pub power_on: Option<crate::poweron::PowerOnSection>,
    /// `ssh-server`: the command the machine is shut down with, as an
    /// argument list (`["sudo", "/sbin/poweroff"]`). Default
    /// `["shutdown", "-h", "now"]`.
    #[serde(default)]
    pub shutdown_command: Option<Vec<String>>,
    /// Hosts this one shuts down after (storage after the hypervisors
    /// that use it): ids of other `[[host]]`s. See
    /// `upsvisor_core::HostEntry::after` for the rule.
    #[serde(default)]
    pub after: Vec<String>,
}

/// A vSphere (`soap`/`mob`) address: `http://` only with
/// `dangerous_allow_plain_http`; any other scheme but `https://` refused.
pub fn check_plain_http(h: &HostSection) -> Result<(), String> {
    if !h.transport.is_vsphere() {
        if h.dangerous_allow_plain_http {
            return Err("only for transport = \"soap\" or \"mob\"".into());
        }
        return Ok(());
    }
    let a = h.address.to_ascii_lowercase();
    if a.starts_with("http://") {
        if !h.dangerous_allow_plain_http {
            return Err(format!(
                "address `{}` is plain http://: the vSphere user's password and session would travel in clear; use https:// (or host:port), or set dangerous_allow_plain_http = true for a lab",
                crate::webhook::redact_url(&h.address)
            ));
        }
    } else if a.contains("://") && !a.starts_with("https://") {
        return Err(format!(
            "address `{}`: only https:// (or host:port) is supported",
            crate::webhook::redact_url(&h.address)
        ));
    }
    Ok(())
}

/// How a host is reached: `host.transport` in the config (and in a
/// registration), parsed once from its name ([`TRANSPORTS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// SSH with a dialect.
    Ssh(upsvisor_ssh::Dialect),
    /// vSphere Web Services (vim25 SOAP), [`upsvisor_soap`].
    Soap,
    /// vSphere Managed Object Browser, [`upsvisor_mob`].
    Mob,
    /// Simulated.
    Sim,
}

impl Transport {
    /// Parses a transport name (one of [`TRANSPORTS`]).
    pub fn parse(s: &str) -> Option<Transport> {
        NAMES.iter().find(|(n, _)| *n == s).map(|(_, t)| *t)
    }

    /// The core's transport kind.
    pub fn kind(self) -> TransportKind {
        use upsvisor_ssh::Dialect;
        match self {
            Transport::Ssh(Dialect::Esxi) => TransportKind::SshEsxi,
            Transport::Ssh(Dialect::Libvirt) => TransportKind::SshLibvirt,
            Transport::Ssh(Dialect::Proxmox) => TransportKind::SshProxmox,
            Transport::Ssh(Dialect::HyperV) => TransportKind::SshHyperv,
            Transport::Ssh(Dialect::Server) => TransportKind::SshServer,
            Transport::Ssh(_) => TransportKind::Other("ssh".into()),
            Transport::Soap => TransportKind::Soap,
            Transport::Mob => TransportKind::Mob,
            Transport::Sim => TransportKind::Sim,
        }
    }

    /// Its name, as the config spells it (`Display` writes the same).
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, t)| *t == self)
            .map_or("ssh", |(n, _)| n)
    }

    /// vSphere (`soap` or `mob`): an HTTPS endpoint, ESXi or vCenter.
    pub fn is_vsphere(self) -> bool {
        matches!(self, Transport::Soap | Transport::Mob)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Transport {
    type Err = String;

    /// Errors: `unknown transport `telnet` (one of: ...)`.
    fn from_str(s: &str) -> Result<Self, String> {
        Transport::parse(s).ok_or_else(|| format!("unknown transport `{s}` (one of: {TRANSPORTS})"))
    }
}

impl<'de> Deserialize<'de> for Transport {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Transport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Each transport and its name in the config.
const NAMES: [(&str, Transport); 8] = [
    ("ssh-esxi", Transport::Ssh(upsvisor_ssh::Dialect::Esxi)),
    (
        "ssh-libvirt",
        Transport::Ssh(upsvisor_ssh::Dialect::Libvirt),
    ),
    (
        "ssh-proxmox",
        Transport::Ssh(upsvisor_ssh::Dialect::Proxmox),
    ),
    ("ssh-hyperv", Transport::Ssh(upsvisor_ssh::Dialect::HyperV)),
    ("ssh-server", Transport::Ssh(upsvisor_ssh::Dialect::Server)),
    ("soap", Transport::Soap),
    ("mob", Transport::Mob),
    ("sim", Transport::Sim),
];

/// Names accepted for `host.transport`.
pub const TRANSPORTS: &str =
    "ssh-esxi, ssh-libvirt, ssh-proxmox, ssh-hyperv, ssh-server, soap, mob, sim";

impl HostSection {
    /// A host with only what every host needs, every other setting at
    /// its default (for a registration; set the rest on the fields).
    pub fn new(id: impl Into<String>, transport: Transport, address: impl Into<String>) -> Self {
        HostSection {
            id: id.into(),
            transport,
            address: address.into(),
            credentials: None,
            host_key: None,
            dangerous_accept_any_host_key: false,
            libvirt_uri: None,
            tls_thumbprint: None,
            dangerous_accept_invalid_certs: false,
            dangerous_allow_plain_http: false,
            vsphere_host: None,
            min_supplies: 1,
            power_on: None,
            shutdown_command: None,
            after: Vec::new(),
        }
    }

    /// The checks of one host's settings, for the config (where `key` is
    /// `host[2]`) and for a registration. Errors: `(key.field, message)`.
    /// Id uniqueness is the caller's (it knows the other hosts).
    pub fn validate(&self, key: &str) -> Result<(), (String, String)> {
        let at = |field: &str| format!("{key}.{field}");
        if self.id.is_empty() {
            return Err((at("id"), "host id `` is empty or used twice".into()));
        }
        if self.address.is_empty() {
            return Err((at("address"), "must not be empty".into()));
        }
        check_plain_http(self).map_err(|m| (at("dangerous_allow_plain_http"), m))?;
        if self.min_supplies == 0 {
            return Err((at("min_supplies"), "must be at least 1".into()));
        }
        if let Some(p) = &self.power_on {
            crate::poweron::validate(&at("power_on"), p)?;
        }
        // A pin that does not parse is caught here, with its line, not
        // first when the transport is built.
        if let Some(k) = &self.host_key {
            if !matches!(self.transport, Transport::Ssh(_)) {
                return Err((
                    at("host_key"),
                    "only for SSH transports (vSphere hosts pin their TLS certificate with tls_thumbprint)".into(),
                ));
            }
            upsvisor_ssh::HostKeyPin::parse(k).map_err(|e| (at("host_key"), e.to_string()))?;
        }
        if let Some(cmd) = &self.shutdown_command {
            if self.transport != Transport::Ssh(upsvisor_ssh::Dialect::Server) {
                return Err((
                    at("shutdown_command"),
                    "only for transport = \"ssh-server\" (hypervisors use their platform's own shutdown)".into(),
                ));
            }
            if cmd.iter().any(|a| a.is_empty()) && !cmd.first().is_none_or(|p| p.trim().is_empty())
            {
                return Err((
                    at("shutdown_command"),
                    "has an empty argument (each list item is one argument)".into(),
                ));
            }
            if cmd.first().is_none_or(|p| p.trim().is_empty()) {
                return Err((
                    at("shutdown_command"),
                    "must name a program, e.g. [\"sudo\", \"/sbin/poweroff\"]".into(),
                ));
            }
        }
        if let Some(dup) = self
            .after
            .iter()
            .enumerate()
            .find(|(i, a)| self.after.iter().take(*i).any(|b| b == *a))
        {
            return Err((at("after"), format!("names `{}` twice", dup.1)));
        }
        if self.after.contains(&self.id) {
            return Err((
                at("after"),
                format!("`{}` cannot shut down after itself", self.id),
            ));
        }
        Ok(())
    }

    /// The engine's inventory entry for this host.
    pub fn entry(&self) -> HostEntry {
        let mut e = HostEntry::new(
            self.id.as_str(),
            self.address.clone(),
            self.transport.kind(),
        )
        .with_min_supplies(self.min_supplies)
        .with_power_on(self.power_on.is_some())
        .with_after(self.after.iter().map(String::as_str));
        if let Some(c) = &self.credentials {
            e = e.with_credentials(c.clone());
        }
        e
    }
}

fn one() -> u32 {
    1
}
