//! `[[host]] power_on = { method = "wol" | "ipmi" | "redfish", ... }`: how
//! a host is powered on after an outage, through `upsvisor-bmc`.
//!
//! Checked strictly with the rest of the config; `check` builds each
//! method and runs its harmless probe (IPMI chassis status, Redfish `GET`
//! of the system; Wake-on-LAN has none). Restore sends `HostOp::PowerOn`,
//! which [`WithPowerOn`] routes to the method (the whole cycle over real
//! BMCs: `tests/restore_e2e.rs`).
//!
//! | key | methods | meaning |
//! |---|---|---|
//! | `mac` | wol (required) | the NIC's MAC address |
//! | `broadcast` | wol | `IP` or `IP:port` (default `255.255.255.255:9`) |
//! | `source` | wol | local IP to send from |
//! | `address` | ipmi (required) | the BMC's IP or name |
//! | `port` | ipmi | UDP port (623) |
//! | `privilege` | ipmi | `user`, `operator` (default), `administrator` |
//! | `cipher_suite` | ipmi | RMCP+ cipher suite (17 or 3) |
//! | `url` | redfish (required) | `https://bmc[:port]` |
//! | `system_id` | redfish | the system's id or path (default: the BMC's only system) |
//! | `tls_thumbprint` | redfish | SHA-256 pin of the BMC's certificate |
//! | `dangerous_accept_invalid_certs` | redfish | no TLS verification (labs only) |
//! | `credentials` | ipmi, redfish (required) | entry of the credentials file (`username`, `password`) |
//! | `timeout_s` | ipmi, redfish | deadline of one call (1..=600; 20 ipmi, 30 redfish) |

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use upsvisor_bmc::{
    Ipmi, IpmiConfig, MacAddr, PowerOnMethod, Privilege, Redfish, RedfishConfig, Thumbprint,
    WakeOnLan, WolConfig,
};

use crate::config::Vault;
use upsvisor_core::{
    Capabilities, HostInfo, HostInventory, HostOp, HostTransport, VmId, VmInfo, VmOp,
};

/// `[[host]] power_on`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PowerOnSection {
    /// `wol`, `ipmi` or `redfish`.
    pub method: String,
    /// wol: MAC address.
    #[serde(default)]
    pub mac: Option<String>,
    /// wol: broadcast `IP[:port]`.
    #[serde(default)]
    pub broadcast: Option<String>,
    /// wol: local source IP.
    #[serde(default)]
    pub source: Option<String>,
    /// ipmi: BMC address.
    #[serde(default)]
    pub address: Option<String>,
    /// ipmi: UDP port.
    #[serde(default)]
    pub port: Option<u16>,
    /// ipmi: privilege level.
    #[serde(default)]
    pub privilege: Option<String>,
    /// ipmi: RMCP+ cipher suite.
    #[serde(default)]
    pub cipher_suite: Option<u8>,
    /// redfish: `https://` URL of the BMC.
    #[serde(default)]
    pub url: Option<String>,
    /// redfish: system id or path.
    #[serde(default)]
    pub system_id: Option<String>,
    /// redfish: SHA-256 certificate pin.
    #[serde(default)]
    pub tls_thumbprint: Option<String>,
    /// redfish: skip TLS verification (insecure; labs only).
    #[serde(default)]
    pub dangerous_accept_invalid_certs: bool,
    /// ipmi, redfish: credentials entry.
    #[serde(default)]
    pub credentials: Option<String>,
    /// ipmi, redfish: call deadline in seconds.
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

/// The power-on methods.
pub const METHODS: &str = "wol, ipmi, redfish";

/// Checks `s` (at config key `key`, e.g. `host[0].power_on`) without
/// credentials: `(field, message)` on error.
pub fn validate(key: &str, s: &PowerOnSection) -> Result<(), (String, String)> {
    let at = |f: &str| format!("{key}.{f}");
    let only = |f: &str, set: bool, methods: &[&str]| -> Result<(), (String, String)> {
        if set && !methods.contains(&s.method.as_str()) {
            return Err((
                at(f),
                format!(
                    "only for method = {}",
                    methods
                        .iter()
                        .map(|m| format!("\"{m}\""))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ));
        }
        Ok(())
    };
    let need = |f: &str, v: &Option<String>| -> Result<(), (String, String)> {
        match v.as_deref() {
            Some(x) if !x.trim().is_empty() => Ok(()),
            _ => Err((at(f), format!("required for method = \"{}\"", s.method))),
        }
    };
    if !matches!(s.method.as_str(), "wol" | "ipmi" | "redfish") {
        return Err((
            at("method"),
            format!("unknown power-on method `{}` (one of: {METHODS})", s.method),
        ));
    }
    only("mac", s.mac.is_some(), &["wol"])?;
    only("broadcast", s.broadcast.is_some(), &["wol"])?;
    only("source", s.source.is_some(), &["wol"])?;
    only("address", s.address.is_some(), &["ipmi"])?;
    only("port", s.port.is_some(), &["ipmi"])?;
    only("privilege", s.privilege.is_some(), &["ipmi"])?;
    only("cipher_suite", s.cipher_suite.is_some(), &["ipmi"])?;
    only("url", s.url.is_some(), &["redfish"])?;
    only("system_id", s.system_id.is_some(), &["redfish"])?;
    only("tls_thumbprint", s.tls_thumbprint.is_some(), &["redfish"])?;
    only(
        "dangerous_accept_invalid_certs",
        s.dangerous_accept_invalid_certs,
        &["redfish"],
    )?;
    only("credentials", s.credentials.is_some(), &["ipmi", "redfish"])?;
    only("timeout_s", s.timeout_s.is_some(), &["ipmi", "redfish"])?;
    let text = |e: upsvisor_core::Error| match e {
        upsvisor_core::Error::Config { detail, .. } => detail,
        other => other.to_string(),
    };
    if let Some(t) = s.timeout_s {
        if !(1..=600).contains(&t) {
            return Err((at("timeout_s"), "must be 1..=600".into()));
        }
    }
    match s.method.as_str() {
        "wol" => {
            need("mac", &s.mac)?;
            MacAddr::parse(s.mac.as_deref().unwrap_or_default())
                .map_err(|e| (at("mac"), text(e)))?;
            if let Some(b) = &s.broadcast {
                upsvisor_bmc::wol::parse_destination("broadcast", b)
                    .map_err(|e| (at("broadcast"), text(e)))?;
            }
            if let Some(src) = &s.source {
                src.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| (at("source"), format!("`{src}` is not an IP address")))?;
            }
        }
        "ipmi" => {
            need("address", &s.address)?;
            need("credentials", &s.credentials)?;
            if let Some(p) = &s.privilege {
                Privilege::parse(p).map_err(|e| (at("privilege"), text(e)))?;
            }
            if s.cipher_suite == Some(0) {
                return Err((
                    at("cipher_suite"),
                    "cipher suite 0 has no authentication; use 17 or 3".into(),
                ));
            }
        }
        _ => {
            need("url", &s.url)?;
            need("credentials", &s.credentials)?;
            upsvisor_bmc::redfish::parse_bmc_url(s.url.as_deref().unwrap_or_default())
                .map_err(|e| (at("url"), text(e)))?;
            if let Some(id) = &s.system_id {
                upsvisor_bmc::redfish::system_path(id).map_err(|e| (at("system_id"), text(e)))?;
            }
            if let Some(t) = &s.tls_thumbprint {
                Thumbprint::parse_for("tls_thumbprint", t)
                    .map_err(|e| (at("tls_thumbprint"), text(e)))?;
            }
        }
    }
    Ok(())
}

/// Builds host `host_id`'s method from `s` (validated) with the
/// credentials from `vault`; errors name `key` and the field.
pub fn build(
    host_id: &str,
    key: &str,
    s: &PowerOnSection,
    vault: &Vault,
) -> Result<Arc<dyn PowerOnMethod>, String> {
    validate(key, s).map_err(|(f, m)| format!("{f}: {m}"))?;
    let at = |f: &str| format!("{key}.{f}");
    let creds = || {
        let name = s.credentials.as_deref().unwrap_or_default();
        vault.get(name).map(|r| r.creds.clone()).ok_or_else(|| {
            format!(
                "{}: `{name}` is not in the credentials file",
                at("credentials")
            )
        })
    };
    let timeout = s.timeout_s.map(Duration::from_secs);
    let m: Arc<dyn PowerOnMethod> = match s.method.as_str() {
        "wol" => {
            let mac = MacAddr::parse(s.mac.as_deref().unwrap_or_default())
                .map_err(|e| format!("{}: {e}", at("mac")))?;
            let mut c = WolConfig::new(host_id, mac);
            if let Some(b) = &s.broadcast {
                c.destination(
                    upsvisor_bmc::wol::parse_destination(&at("broadcast"), b)
                        .map_err(|e| e.to_string())?,
                );
            }
            if let Some(src) = s.source.as_deref().and_then(|x| x.trim().parse().ok()) {
                c.source(src);
            }
            Arc::new(WakeOnLan::new(c).map_err(|e| format!("{key}: {e}"))?)
        }
        "ipmi" => {
            let mut c = IpmiConfig::new(
                host_id,
                s.address.clone().unwrap_or_default().trim(),
                creds()?,
            );
            if let Some(p) = s.port {
                c.port(p);
            }
            if let Some(p) = &s.privilege {
                c.privilege(Privilege::parse(p).map_err(|e| e.to_string())?);
            }
            if let Some(cs) = s.cipher_suite {
                c.cipher_suite(cs);
            }
            if let Some(t) = timeout {
                c.timeout(t);
            }
            Arc::new(Ipmi::new(c).map_err(|e| format!("{key}: {e}"))?)
        }
        _ => {
            let mut c = RedfishConfig::new(host_id, s.url.clone().unwrap_or_default(), creds()?);
            if let Some(id) = &s.system_id {
                c.system_id(id.trim());
            }
            if let Some(t) = &s.tls_thumbprint {
                c.pin_thumbprint(t).map_err(|e| e.to_string())?;
            }
            c.dangerous_accept_invalid_certs(s.dangerous_accept_invalid_certs);
            if let Some(t) = timeout {
                c.timeout(t);
            }
            Arc::new(Redfish::new(c).map_err(|e| format!("{key}: {e}"))?)
        }
    };
    Ok(m)
}

/// A host's transport with its out-of-band power-on: every call goes to
/// the hypervisor transport except [`HostOp::PowerOn`], which goes to the
/// BMC or Wake-on-LAN method (the hypervisor is off when it is needed).
/// Its capabilities add `PowerOn`.
pub struct WithPowerOn {
    inner: Arc<dyn HostTransport>,
    method: Arc<dyn PowerOnMethod>,
}

impl WithPowerOn {
    /// Wraps `inner` with `method`.
    pub fn new(inner: Arc<dyn HostTransport>, method: Arc<dyn PowerOnMethod>) -> Self {
        WithPowerOn { inner, method }
    }
}

#[async_trait::async_trait]
impl HostTransport for WithPowerOn {
    fn capabilities(&self) -> Capabilities {
        let mut c = self.inner.capabilities();
        if !c.host_ops.contains(&HostOp::PowerOn) {
            c.host_ops.push(HostOp::PowerOn);
        }
        c
    }
    async fn host_info(&self) -> upsvisor_core::Result<HostInfo> {
        self.inner.host_info().await
    }
    async fn list_vm_ids(&self) -> upsvisor_core::Result<Vec<VmId>> {
        self.inner.list_vm_ids().await
    }
    async fn vm_info(&self, vm: &VmId) -> upsvisor_core::Result<VmInfo> {
        self.inner.vm_info(vm).await
    }
    async fn inventory(&self) -> upsvisor_core::Result<HostInventory> {
        self.inner.inventory().await
    }
    async fn vm_power(&self, vm: &VmId, op: VmOp) -> upsvisor_core::Result<()> {
        self.inner.vm_power(vm, op).await
    }
    async fn host_power(&self, op: HostOp) -> upsvisor_core::Result<()> {
        match op {
            HostOp::PowerOn => self.method.power_on().await,
            op => self.inner.host_power(op).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Resolved;
    use upsvisor_core::Credentials;

    fn sec(toml_text: &str) -> PowerOnSection {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn validates_each_method_strictly() {
        let ok = [
            "method = \"wol\"\nmac = \"52:54:00:12:34:56\"\nbroadcast = \"192.168.1.255\"",
            "method = \"ipmi\"\naddress = \"10.0.0.9\"\ncredentials = \"bmc\"\nprivilege = \"admin\"\ncipher_suite = 17",
            "method = \"redfish\"\nurl = \"https://10.0.0.5\"\ncredentials = \"bmc\"\nsystem_id = \"1\"\ntimeout_s = 10",
        ];
        for t in ok {
            validate("host[0].power_on", &sec(t)).unwrap_or_else(|e| panic!("{t}: {e:?}"));
        }
        let bad = [
            ("method = \"ilo\"", "method", "unknown power-on method"),
            ("method = \"wol\"", "mac", "required"),
            (
                "method = \"wol\"\nmac = \"52:54:00:12:34\"",
                "mac",
                "not a MAC",
            ),
            (
                "method = \"wol\"\nmac = \"52:54:00:12:34:56\"\nbroadcast = \"lan.example\"",
                "broadcast",
                "names are not resolved",
            ),
            (
                "method = \"wol\"\nmac = \"52:54:00:12:34:56\"\ncredentials = \"x\"",
                "credentials",
                "only for method",
            ),
            (
                "method = \"ipmi\"\naddress = \"bmc\"",
                "credentials",
                "required",
            ),
            (
                "method = \"ipmi\"\naddress = \"bmc\"\ncredentials = \"c\"\nurl = \"https://x\"",
                "url",
                "only for method = \"redfish\"",
            ),
            (
                "method = \"redfish\"\nurl = \"http://10.0.0.5\"\ncredentials = \"c\"",
                "url",
                "https only",
            ),
            (
                "method = \"redfish\"\nurl = \"https://u:pw@10.0.0.5\"\ncredentials = \"c\"",
                "url",
                "credentials file",
            ),
            (
                "method = \"redfish\"\nurl = \"https://b\"\ncredentials = \"c\"\ntls_thumbprint = \"AB\"",
                "tls_thumbprint",
                "thumbprint",
            ),
            (
                "method = \"redfish\"\nurl = \"https://b\"\ncredentials = \"c\"\ntimeout_s = 0",
                "timeout_s",
                "1..=600",
            ),
        ];
        for (t, field, word) in bad {
            let (f, m) = validate("host[0].power_on", &sec(t)).unwrap_err();
            assert_eq!(f, format!("host[0].power_on.{field}"), "{t}");
            assert!(m.contains(word), "{t}: {m}");
            assert!(!m.contains("pw@"), "{m}");
        }
        assert!(toml::from_str::<PowerOnSection>("method = \"wol\"\nmacc = \"x\"").is_err());
    }

    #[test]
    fn builds_with_credentials_from_the_vault() {
        let mut vault = Vault::default();
        vault.insert("bmc", Resolved::new(Credentials::new("admin", "pw")));
        let m = build(
            "esx1",
            "host[0].power_on",
            &sec("method = \"ipmi\"\naddress = \"10.0.0.9\"\ncredentials = \"bmc\""),
            &vault,
        )
        .unwrap();
        assert_eq!(
            m.describe(),
            "IPMI lanplus 10.0.0.9:623 as admin (operator)"
        );
        let m = build(
            "nas1",
            "host[1].power_on",
            &sec("method = \"wol\"\nmac = \"52:54:00:12:34:56\"\nbroadcast = \"10.0.0.255:7\""),
            &vault,
        )
        .unwrap();
        assert_eq!(
            m.describe(),
            "Wake-on-LAN to 52:54:00:12:34:56 via 10.0.0.255:7"
        );
        assert!(!m.can_probe());
        let e = build(
            "esx2",
            "host[2].power_on",
            &sec("method = \"redfish\"\nurl = \"https://10.0.0.5\"\ncredentials = \"nope\""),
            &vault,
        )
        .err()
        .unwrap();
        assert!(
            e.contains("host[2].power_on.credentials") && e.contains("nope"),
            "{e}"
        );
    }
}
