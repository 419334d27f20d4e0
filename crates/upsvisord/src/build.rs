//! From config (or the demo) to transports, devices and an engine.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use upsvisor_core::{
    Capabilities, Clock, DeviceId, Engine, EngineConfig, HostId, HostInfo, HostInventory, HostOp,
    HostTransport, Instant, Inventory, PolicyConfig, PollerConfig, PowerDevice, PowerState, Result,
    SequencerConfig, SimClock, SystemClock, VmId, VmInfo, VmOp,
};
use upsvisor_sim::{Estate, Guest, SimHostConfig, SimUps, UpsConfig, UpsScript};

use crate::config::{Config, DeviceKind, DeviceSection, HostSection, Transport, Vault};

/// The clock the engine runs on.
#[derive(Debug, Clone)]
pub enum EngineClock {
    /// Wall-clock time (a real config).
    System(SystemClock),
    /// Simulated time (the demo and drills).
    Sim(SimClock),
}

impl EngineClock {
    /// As a shared trait object.
    pub fn arc(&self) -> Arc<dyn Clock> {
        match self {
            EngineClock::System(c) => Arc::new(c.clone()),
            EngineClock::Sim(c) => Arc::new(c.clone()),
        }
    }

    /// Now.
    pub fn now(&self) -> Instant {
        match self {
            EngineClock::System(c) => c.now(),
            EngineClock::Sim(c) => c.now(),
        }
    }

    /// Runs a future to completion on this clock.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match self {
            EngineClock::System(_) => futures::executor::block_on(f),
            EngineClock::Sim(c) => c.block_on(f),
        }
    }
}

/// Wall-clock duration of each host's last inventory call (for `/metrics`).
pub type PollTimes = Arc<Mutex<BTreeMap<HostId, f64>>>;

/// A transport wrapper that records how long inventory calls take.
pub struct Timed {
    host: HostId,
    inner: Arc<dyn HostTransport>,
    times: PollTimes,
}

#[async_trait]
impl HostTransport for Timed {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn host_info(&self) -> Result<HostInfo> {
        self.inner.host_info().await
    }
    async fn list_vm_ids(&self) -> Result<Vec<VmId>> {
        self.inner.list_vm_ids().await
    }
    async fn vm_info(&self, vm: &VmId) -> Result<VmInfo> {
        self.inner.vm_info(vm).await
    }
    async fn inventory(&self) -> Result<HostInventory> {
        let t = std::time::Instant::now();
        let r = self.inner.inventory().await;
        if let Ok(mut m) = self.times.lock() {
            m.insert(self.host.clone(), t.elapsed().as_secs_f64());
        }
        r
    }
    async fn vm_power(&self, vm: &VmId, op: VmOp) -> Result<()> {
        self.inner.vm_power(vm, op).await
    }
    async fn host_power(&self, op: HostOp) -> Result<()> {
        self.inner.host_power(op).await
    }
}

/// Everything the engine thread needs, built.
pub struct Parts {
    /// The clock.
    pub clock: EngineClock,
    /// Inventory.
    pub inventory: Inventory,
    /// Host transports.
    pub hosts: BTreeMap<HostId, Arc<dyn HostTransport>>,
    /// Power devices.
    pub devices: BTreeMap<DeviceId, Arc<dyn PowerDevice>>,
    /// Settings.
    pub poller: PollerConfig,
    /// Settings.
    pub policy: PolicyConfig,
    /// Settings.
    pub sequencer: SequencerConfig,
    /// Journal path.
    pub journal: Option<std::path::PathBuf>,
    /// The simulated estate, when there is one.
    pub estate: Option<Estate>,
    /// Wall-clock poll durations.
    pub poll_times: PollTimes,
    /// How often power devices are read.
    pub status_interval: Duration,
    /// Each host's out-of-band power-on method, described (no secrets),
    /// for the plan: restore powers these hosts on after an outage.
    pub power_on: BTreeMap<HostId, String>,
    /// SOAP hosts reached through vCenter (`vsphere_host` set), with how
    /// many hosts share their session; other hosts are absent.
    pub via: BTreeMap<HostId, Via>,
    /// What runs the `[[hook]]`s ([`crate::hooks`]); `None` without hooks.
    pub hooks: Option<Arc<dyn upsvisor_core::HookRunner>>,
}

/// A SOAP host reached through vCenter, for `check`, `/api/hosts` and the
/// page: `{"vcenter": "vc.lab", "shared_by": 3}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Via {
    /// The vCenter's `address` as configured.
    pub vcenter: String,
    /// How many configured hosts use this host's session (and join its
    /// fetch when polled together), this one included; 1 = its own.
    pub shared_by: usize,
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.shared_by {
            1 => write!(f, "via vCenter {} (own session)", self.vcenter),
            n => write!(
                f,
                "via vCenter {} (session shared by {n} hosts)",
                self.vcenter
            ),
        }
    }
}

/// What makes SOAP hosts one vCenter session: every setting of a
/// `[[host]]` that goes into its `SoapConfig` except which host it speaks
/// for (`vsphere_host`). Hosts with equal keys share one login and, polled
/// together, one fetch ([`upsvisor_soap::SoapTransport::share`]); a host
/// differing in any of these gets its own session.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionKey {
    url: String,
    credentials: Option<String>,
    /// Canonical form (`AB:CD:...`) when it parses, else as written.
    thumbprint: Option<String>,
    dangerous_accept_invalid_certs: bool,
    dangerous_allow_plain_http: bool,
}

impl SessionKey {
    /// The key of a `transport = "soap"` host; `None` for other transports.
    pub fn of(h: &HostSection) -> Option<SessionKey> {
        if h.transport != Transport::Soap {
            return None;
        }
        Some(SessionKey {
            url: vsphere_url(h.address.trim(), "/sdk"),
            credentials: h.credentials.clone(),
            thumbprint: h.tls_thumbprint.as_ref().map(|t| {
                upsvisor_soap::Thumbprint::parse(t).map_or_else(|_| t.clone(), |p| p.to_string())
            }),
            dangerous_accept_invalid_certs: h.dangerous_accept_invalid_certs,
            dangerous_allow_plain_http: h.dangerous_allow_plain_http,
        })
    }
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("hosts", &self.hosts.keys().collect::<Vec<_>>())
            .field("devices", &self.devices.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Parts {
    /// Builds an engine from the parts (transports shared, so this can be
    /// called again after a host registration).
    pub fn engine(&self) -> Result<Engine> {
        let mut e = Engine::new(
            self.clock.arc(),
            self.inventory.clone(),
            self.poller.clone(),
            self.policy.clone(),
            self.sequencer.clone(),
        )?
        .with_config({
            let mut c = EngineConfig::default();
            c.status_interval(self.status_interval);
            c
        });
        match &self.hooks {
            Some(r) => e = e.with_hook_runner(r.clone()),
            None if !self.sequencer.hooks().is_empty() => {
                return Err(upsvisor_core::Error::config(
                    "hook",
                    "hooks are configured but nothing runs them (no hook runner)",
                ));
            }
            None => {}
        }
        if let Some(j) = &self.journal {
            e = e.with_journal(Box::new(upsvisor_core::FileJournal::new(j.clone())))?;
        }
        for (id, t) in &self.hosts {
            e.add_host(id, self.timed(id, t.clone()))?;
        }
        for (id, d) in &self.devices {
            e.add_device(id.clone(), d.clone());
        }
        Ok(e)
    }

    fn timed(&self, id: &HostId, t: Arc<dyn HostTransport>) -> Arc<dyn HostTransport> {
        Arc::new(Timed {
            host: id.clone(),
            inner: t,
            times: self.poll_times.clone(),
        })
    }
}

fn split_host_port(addr: &str, default_port: u16) -> (String, u16) {
    if let Some((h, p)) = addr.rsplit_once(':') {
        if let Ok(p) = p.parse() {
            if !h.contains(':') || h.starts_with('[') {
                return (h.trim_matches(['[', ']']).to_string(), p);
            }
        }
    }
    (addr.to_string(), default_port)
}

/// Builds one host transport; errors name the config place to fix.
pub fn host_transport(
    key: &str,
    h: &HostSection,
    vault: &Vault,
    estate: Option<&Estate>,
) -> std::result::Result<Arc<dyn HostTransport>, String> {
    match h.transport {
        t @ (Transport::Soap | Transport::Mob) => {
            vsphere_transport(key, h, vault, t == Transport::Soap)
        }
        Transport::Sim => {
            let estate = estate.ok_or_else(|| format!("{key}: no simulated estate"))?;
            let id = HostId::from(h.id.as_str());
            Ok(Arc::new(estate.transport(&id)))
        }
        Transport::Ssh(dialect) => Ok(Arc::new(ssh_transport(key, h, vault, dialect)?)),
    }
}

/// Builds one SSH host's transport (shared, by cloning, with its hooks).
pub fn ssh_transport(
    key: &str,
    h: &HostSection,
    vault: &Vault,
    dialect: upsvisor_ssh::Dialect,
) -> std::result::Result<upsvisor_ssh::SshTransport, String> {
    {
        {
            let name = h.credentials.as_deref().ok_or_else(|| {
                format!("{key}.credentials: an SSH host needs a credentials entry")
            })?;
            let r = vault.get(name).ok_or_else(|| {
                format!("{key}.credentials: `{name}` is not in the credentials file")
            })?;
            let (host, port) = split_host_port(&h.address, 22);
            let mut c = upsvisor_ssh::SshConfig::new(host, r.creds.username.clone(), dialect)
                .with_port(port);
            if !r.creds.password.is_empty() {
                c = c.with_password(r.creds.password.clone());
            }
            if let Some(k) = &r.private_key {
                c = c.with_private_key(k.clone(), None);
            }
            match (&h.host_key, h.dangerous_accept_any_host_key) {
                (Some(pin), _) => {
                    c = c
                        .with_host_key(pin)
                        .map_err(|e| format!("{key}.host_key: {e}"))?;
                }
                (None, true) => c = c.dangerous_accept_any_host_key(true),
                (None, false) => {
                    return Err(format!(
                        "{key}.host_key: pin the SSH host key (`ssh-keyscan {} | ssh-keygen -lf -` gives SHA256:...), or set dangerous_accept_any_host_key = true for a lab",
                        h.address
                    ));
                }
            }
            if let Some(u) = &h.libvirt_uri {
                c = c.with_libvirt_uri(u.clone());
            }
            if let Some(cmd) = &h.shutdown_command {
                c = c
                    .with_shutdown_command(cmd.iter().cloned())
                    .map_err(|e| format!("{key}.shutdown_command: {e}"))?;
            }
            upsvisor_ssh::SshTransport::new(c).map_err(|e| format!("{key}: {e}"))
        }
    }
}

/// The transport of a host registered through the API (or reloaded from
/// the registry): `h` with `creds` as its credentials entry.
pub fn registered_transport(
    key: &str,
    h: &HostSection,
    creds: Option<upsvisor_core::Credentials>,
    estate: Option<&Estate>,
) -> std::result::Result<Arc<dyn HostTransport>, String> {
    if h.transport == Transport::Sim {
        // A registered simulated host: two VMs in the estate.
        if let Some(e) = estate {
            let id = HostId::from(h.id.as_str());
            e.add_host(id.clone(), SimHostConfig::default());
            for n in 0..2 {
                e.add_vm(
                    &id,
                    VmInfo::new(
                        format!("{}-reg-{n}", h.id),
                        format!("{}-vm{n}", h.id),
                        PowerState::PoweredOn,
                    ),
                    Guest::Cooperative(Duration::from_secs(10)),
                );
            }
        }
    }
    let mut vault = Vault::default();
    let mut h = h.clone();
    if let Some(c) = creds {
        vault.insert("registration", crate::config::Resolved::new(c));
        h.credentials = Some("registration".into());
    }
    host_transport(key, &h, &vault, estate)
}

/// Adds hosts registered through the API in an earlier run (no connection
/// check: a host that is down now shows as unreachable). Errors name the
/// registry file and the host.
pub fn add_registered(
    parts: &mut Parts,
    hosts: &[crate::registry::RegisteredHost],
    file: &std::path::Path,
) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    for r in hosts {
        let id = HostId::from(r.host.id.as_str());
        let what = format!("registered host {}", r.host.id);
        if parts.inventory.host(&id).is_some() {
            errors.push((
                what,
                format!(
                    "{}: host id `{}` is also declared in the config; remove one (DELETE /api/hosts/{} or edit the file)",
                    file.display(),
                    r.host.id,
                    r.host.id
                ),
            ));
            continue;
        }
        match registered_transport(
            &format!("{} host {}", file.display(), r.host.id),
            &r.host,
            r.credentials.clone(),
            parts.estate.as_ref(),
        ) {
            Ok(t) => {
                parts.inventory.hosts.push(r.host.entry());
                parts.hosts.insert(id, t);
            }
            Err(e) => errors.push((what, e)),
        }
    }
    errors
}

/// `https://address/sdk` unless `address` is already a URL.
fn vsphere_url(address: &str, path: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("https://{address}{path}")
    }
}

/// Which host of the endpoint a SOAP host speaks for.
fn selector(h: &HostSection) -> upsvisor_soap::HostSelector {
    match &h.vsphere_host {
        Some(name) => upsvisor_soap::HostSelector::Name(name.clone()),
        None => upsvisor_soap::HostSelector::Only,
    }
}

/// A SOAP host: the first of its [`SessionKey`] builds the transport (and
/// checks the settings), the others share its session with their own
/// selector. Errors name the config place to fix.
fn soap_transport(
    key: &str,
    h: &HostSection,
    vault: &Vault,
    sessions: &mut BTreeMap<SessionKey, upsvisor_soap::SoapTransport>,
    poller: &crate::config::PollerSection,
) -> std::result::Result<Arc<dyn HostTransport>, String> {
    let Some(skey) = SessionKey::of(h) else {
        return host_transport(key, h, vault, None);
    };
    if let Some(first) = sessions.get(&skey) {
        return Ok(Arc::new(first.share(selector(h))));
    }
    vsphere_soap(key, h, vault, fetch_reuse(poller)).map(|t| {
        let t = Arc::new(t);
        sessions.insert(skey, t.share(selector(h)));
        t as Arc<dyn HostTransport>
    })
}

/// The account of a vSphere host, after the checks both transports share.
fn vsphere_account<'v>(
    key: &str,
    h: &HostSection,
    vault: &'v Vault,
) -> std::result::Result<&'v crate::config::Resolved, String> {
    let name = h
        .credentials
        .as_deref()
        .ok_or_else(|| format!("{key}.credentials: a vSphere host needs a credentials entry"))?;
    let r = vault
        .get(name)
        .ok_or_else(|| format!("{key}.credentials: `{name}` is not in the credentials file"))?;
    crate::config::check_plain_http(h)
        .map_err(|m| format!("{key}.dangerous_allow_plain_http: {m}"))?;
    if h.tls_thumbprint.is_none() && !h.dangerous_accept_invalid_certs {
        // Public CAs still work; say what to do for the usual self-signed case.
        tracing::info!(host = %h.id, "no tls_thumbprint: the certificate must chain to a public CA");
    }
    Ok(r)
}

/// How long one vCenter fetch serves the other hosts of its session
/// ([`upsvisor_soap::SoapConfig::fetch_reuse`]): the crate's 3 s, or a
/// quarter of the shorter poll period when that is less, so a fetch never
/// serves into the next cycle.
fn fetch_reuse(poller: &crate::config::PollerSection) -> Duration {
    let shortest = poller.period_s.min(poller.on_battery_period_s).max(1);
    Duration::from_secs(3).min(Duration::from_secs(shortest) / 4)
}

/// A vSphere host over SOAP with a session of its own.
fn vsphere_soap(
    key: &str,
    h: &HostSection,
    vault: &Vault,
    reuse: Duration,
) -> std::result::Result<upsvisor_soap::SoapTransport, String> {
    let r = vsphere_account(key, h, vault)?;
    let mut c = upsvisor_soap::SoapConfig::new(vsphere_url(&h.address, "/sdk"), r.creds.clone())
        .fetch_reuse(reuse)
        .dangerous_accept_invalid_certs(h.dangerous_accept_invalid_certs)
        .dangerous_allow_plain_http(h.dangerous_allow_plain_http)
        .host(selector(h));
    if let Some(tp) = &h.tls_thumbprint {
        c = c
            .pin_thumbprint(tp)
            .map_err(|e| format!("{key}.tls_thumbprint: {e}"))?;
    }
    upsvisor_soap::SoapTransport::new(c).map_err(|e| format!("{key}: {e}"))
}

/// A vSphere host over SOAP or the MOB; errors name the config place to fix.
fn vsphere_transport(
    key: &str,
    h: &HostSection,
    vault: &Vault,
    soap: bool,
) -> std::result::Result<Arc<dyn HostTransport>, String> {
    if soap {
        return vsphere_soap(key, h, vault, fetch_reuse(&Default::default()))
            .map(|t| Arc::new(t) as Arc<dyn HostTransport>);
    }
    let r = vsphere_account(key, h, vault)?;
    let mut c = upsvisor_mob::MobConfig::new(vsphere_url(&h.address, ""), r.creds.clone())
        .dangerous_accept_invalid_certs(h.dangerous_accept_invalid_certs)
        .dangerous_allow_plain_http(h.dangerous_allow_plain_http);
    if let Some(tp) = &h.tls_thumbprint {
        c = c
            .pin_thumbprint(tp)
            .map_err(|e| format!("{key}.tls_thumbprint: {e}"))?;
    }
    if let Some(moid) = &h.vsphere_host {
        c = c.host(moid.clone());
    }
    let t = upsvisor_mob::MobTransport::new(c).map_err(|e| format!("{key}: {e}"))?;
    Ok(Arc::new(t))
}

/// Builds one power device; errors name the config place to fix.
pub fn power_device(
    key: &str,
    d: &DeviceSection,
    vault: &Vault,
    estate: Option<&Estate>,
) -> std::result::Result<Arc<dyn PowerDevice>, String> {
    let creds =
        match d.credentials.as_deref() {
            Some(n) => Some(vault.get(n).ok_or_else(|| {
                format!("{key}.credentials: `{n}` is not in the credentials file")
            })?),
            None => None,
        };
    let addr = d.address.clone().unwrap_or_default();
    match d.kind {
        DeviceKind::Nut => {
            let (host, port) = split_host_port(&addr, upsvisor_nut::DEFAULT_PORT);
            let mut c = upsvisor_nut::NutConfig::new(d.ups.clone().unwrap_or_default())
                .host(host)
                .port(port);
            if let Some(r) = creds {
                c = c.credentials(r.creds.clone());
            }
            // A upsmon secondary by default when there is an account.
            c = c.login(d.nut_login.unwrap_or(creds.is_some()));
            if d.nut_starttls {
                let ca = d.nut_ca_file.as_ref().ok_or_else(|| {
                    format!("{key}.nut_ca_file: required with nut_starttls = true")
                })?;
                let pem = std::fs::read(ca)
                    .map_err(|e| format!("{key}.nut_ca_file: cannot read {}: {e}", ca.display()))?;
                let mut tls = upsvisor_nut::NutTls::with_ca_pem(pem);
                if let Some(n) = &d.nut_tls_server_name {
                    tls = tls.server_name(n.clone());
                }
                c = c.starttls(tls);
            }
            Ok(Arc::new(
                upsvisor_nut::NutDevice::new(c).map_err(|e| format!("{key}: {e}"))?,
            ))
        }
        DeviceKind::Snmp => {
            let (host, port) = split_host_port(&addr, 161);
            let sec = match d.snmp_version.as_deref() {
                Some("3") => {
                    let r = creds.ok_or_else(|| {
                        format!("{key}.credentials: SNMPv3 needs a credentials entry")
                    })?;
                    let auth = match d.snmp_auth.as_deref() {
                        Some("sha") => upsvisor_snmp::AuthProtocol::Sha1,
                        Some("sha256") => upsvisor_snmp::AuthProtocol::Sha256,
                        _ => return Err(format!("{key}.snmp_auth: one of sha, sha256")),
                    };
                    let auth_password = r.auth_password.clone().ok_or_else(|| {
                        format!("{key}.credentials: the entry has no auth_password")
                    })?;
                    let user = if d.snmp_priv.as_deref() == Some("none") {
                        upsvisor_snmp::UsmUser::auth_no_priv(
                            r.creds.username.clone(),
                            auth,
                            auth_password,
                        )
                    } else {
                        let p = r.priv_password.clone().ok_or_else(|| {
                            format!("{key}.credentials: the entry has no priv_password")
                        })?;
                        upsvisor_snmp::UsmUser::auth_priv(
                            r.creds.username.clone(),
                            auth,
                            auth_password,
                            p,
                        )
                    };
                    user.validate()
                        .map_err(|e| format!("{key}.credentials: {e}"))?;
                    upsvisor_snmp::Security::v3(user)
                }
                v => {
                    let community = creds
                        .map(|r| r.creds.password.clone())
                        .unwrap_or_else(|| "public".into());
                    if v == Some("1") {
                        upsvisor_snmp::Security::v1(community)
                    } else {
                        upsvisor_snmp::Security::v2c(community)
                    }
                }
            };
            let c = upsvisor_snmp::SnmpConfig::new(format!("{host}:{port}")).with_security(sec);
            Ok(Arc::new(
                upsvisor_snmp::SnmpDevice::new(c).map_err(|e| format!("{key}: {e}"))?,
            ))
        }
        DeviceKind::Serial => {
            let c = if d.protocol.as_deref() == Some("apc_smart") {
                upsvisor_serial::SerialConfig::apc_smart(addr)
            } else {
                upsvisor_serial::SerialConfig::megatec(addr)
            };
            Ok(Arc::new(
                upsvisor_serial::SerialUps::new(c).map_err(|e| format!("{key}: {e}"))?,
            ))
        }
        DeviceKind::Sim => {
            let estate = estate.ok_or_else(|| format!("{key}: no simulated estate"))?;
            let hosts = d
                .outlets
                .iter()
                .flat_map(|o| o.hosts.iter().map(|h| HostId::from(h.as_str())))
                .collect();
            Ok(Arc::new(SimUps::install(
                estate,
                UpsConfig::feeding(d.id.as_str(), hosts, Duration::from_secs(40 * 60)),
                UpsScript::new(),
            )))
        }
    }
}

/// Which built SOAP hosts go through vCenter (`vsphere_host` set) and how
/// many hosts share each one's session ([`SessionKey`]).
pub fn vcenter_sessions<'h>(hosts: impl Iterator<Item = &'h HostSection>) -> BTreeMap<HostId, Via> {
    let keyed: Vec<(&HostSection, SessionKey)> = hosts
        .filter_map(|h| SessionKey::of(h).map(|k| (h, k)))
        .collect();
    let mut count: BTreeMap<&SessionKey, usize> = BTreeMap::new();
    for (_, k) in &keyed {
        *count.entry(k).or_default() += 1;
    }
    keyed
        .iter()
        .filter(|(h, _)| h.vsphere_host.is_some())
        .map(|(h, k)| {
            (
                HostId::from(h.id.as_str()),
                Via {
                    vcenter: h.address.clone(),
                    shared_by: count.get(k).copied().unwrap_or(1),
                },
            )
        })
        .collect()
}

/// Builds the parts for a real config. Failures are collected per item
/// (the message names the config key), so `check` can report them all.
pub fn from_config(cfg: &Config, vault: &Vault) -> (Parts, Vec<(String, String)>) {
    let clock = EngineClock::System(SystemClock::new());
    let sim_hosts: Vec<&HostSection> = cfg
        .hosts
        .iter()
        .filter(|h| h.transport == Transport::Sim)
        .collect();
    let estate = (!sim_hosts.is_empty() || cfg.devices.iter().any(|d| d.kind == DeviceKind::Sim))
        .then(|| {
            let e = Estate::new(clock.arc());
            for (i, h) in sim_hosts.iter().enumerate() {
                let id = HostId::from(h.id.as_str());
                // Quick simulated hosts: a config-mode sim is for trying
                // the daemon out and for end-to-end tests.
                let mut hc = SimHostConfig::default();
                hc.boot_time = Duration::from_secs(3);
                hc.shutdown_time = Duration::from_secs(2);
                e.add_host(id.clone(), hc);
                for n in 0..4 {
                    let mut v = VmInfo::new(
                        format!("sim-{i:02}-{n:02}"),
                        format!("{}-vm{n}", h.id),
                        PowerState::PoweredOn,
                    );
                    v.vcpus = Some(2);
                    v.memory_mib = Some(4096);
                    e.add_vm(&id, v, Guest::Cooperative(Duration::from_secs(2)));
                }
            }
            e
        });
    let mut errors = Vec::new();
    let mut hosts = BTreeMap::new();
    let mut power_on = BTreeMap::new();
    let mut sessions = BTreeMap::new();
    let mut ssh = BTreeMap::new();
    for (i, h) in cfg.hosts.iter().enumerate() {
        let key = format!("host[{i}]");
        let with_method = |t: Arc<dyn HostTransport>| match &h.power_on {
            None => Ok(t),
            Some(p) => {
                crate::poweron::build(&h.id, &format!("{key}.power_on"), p, vault).map(|m| {
                    power_on.insert(HostId::from(h.id.as_str()), m.describe());
                    Arc::new(crate::poweron::WithPowerOn::new(t, m)) as Arc<dyn HostTransport>
                })
            }
        };
        let built = if SessionKey::of(h).is_some() {
            soap_transport(&key, h, vault, &mut sessions, &cfg.poller)
        } else if let Transport::Ssh(dialect) = h.transport {
            // One SSH connection per host: its hooks share it.
            ssh_transport(&key, h, vault, dialect).map(|t| {
                ssh.insert(HostId::from(h.id.as_str()), t.clone());
                Arc::new(t) as Arc<dyn HostTransport>
            })
        } else {
            host_transport(&key, h, vault, estate.as_ref())
        };
        match built.and_then(with_method) {
            Ok(t) => {
                hosts.insert(HostId::from(h.id.as_str()), t);
            }
            Err(e) => errors.push((format!("host {}", h.id), e)),
        }
    }
    let via = vcenter_sessions(
        cfg.hosts
            .iter()
            .filter(|h| hosts.contains_key(&HostId::from(h.id.as_str()))),
    );
    let mut devices = BTreeMap::new();
    for (i, d) in cfg.devices.iter().enumerate() {
        match power_device(&format!("device[{i}]"), d, vault, estate.as_ref()) {
            Ok(t) => {
                devices.insert(DeviceId::from(d.id.as_str()), t);
            }
            Err(e) => errors.push((format!("device {}", d.id), e)),
        }
    }
    let hooks = if cfg.hooks.is_empty() {
        None
    } else {
        let (runner, errs) = crate::hooks::Runner::new(cfg, &ssh);
        errors.extend(errs);
        Some(Arc::new(runner) as Arc<dyn upsvisor_core::HookRunner>)
    };
    let parts = Parts {
        hooks,
        clock,
        inventory: cfg.inventory(),
        hosts,
        devices,
        poller: cfg.poller_config(),
        policy: cfg.policy_config(),
        sequencer: cfg.sequencer_config(),
        journal: cfg.journal.as_ref().map(|j| cfg.resolve(j)),
        estate,
        poll_times: PollTimes::default(),
        status_interval: Duration::from_secs(cfg.poller.status_interval_s),
        power_on,
        via,
    };
    (parts, errors)
}

/// Demo settings (the demo estate lives in [`upsvisor_sim::demo`]).
pub use upsvisor_sim::demo::DemoSpec;

/// The simulated estate of `examples/outage.rs` ([`upsvisor_sim::demo`]):
/// hosts with VMs (some stubborn, some without tools, some off), a vCenter
/// appliance, one UPS feeding every host, and a scripted outage.
pub fn demo(spec: DemoSpec) -> (Parts, SimUps) {
    let sim = SimClock::new();
    let clock = EngineClock::Sim(sim.clone());
    let d = upsvisor_sim::demo::Demo::build(clock.arc(), &spec);
    let hosts = d
        .inventory
        .hosts
        .iter()
        .map(|h| {
            (
                h.id.clone(),
                Arc::new(d.estate.transport(&h.id)) as Arc<dyn HostTransport>,
            )
        })
        .collect();
    let mut devices: BTreeMap<DeviceId, Arc<dyn PowerDevice>> = BTreeMap::new();
    devices.insert(DeviceId::from("ups1"), Arc::new(d.ups.clone()));
    let parts = Parts {
        clock,
        inventory: d.inventory,
        hosts,
        devices,
        poller: d.poller,
        policy: d.policy,
        sequencer: d.sequencer,
        journal: None,
        estate: Some(d.estate),
        poll_times: PollTimes::default(),
        status_interval: d.status_interval,
        power_on: BTreeMap::new(),
        via: BTreeMap::new(),
        hooks: None,
    };
    (parts, d.ups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_split() {
        assert_eq!(
            split_host_port("10.0.0.1:2222", 22),
            ("10.0.0.1".into(), 2222)
        );
        assert_eq!(split_host_port("esx01", 22), ("esx01".into(), 22));
        assert_eq!(split_host_port("[::1]:3493", 1), ("::1".into(), 3493));
        assert_eq!(split_host_port("::1", 7), ("::1".into(), 7));
    }

    #[test]
    fn soap_is_a_clear_config_error() {
        let cfg = Config::parse_str(
            "t.toml",
            "version = 1\n[[host]]\nid = \"vc\"\ntransport = \"soap\"\naddress = \"vc.lab\"\n",
        )
        .unwrap();
        let (parts, errors) = from_config(&cfg, &Vault::default());
        assert!(parts.hosts.is_empty());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].1.contains("host[0].credentials"), "{errors:?}");
        assert!(
            errors[0].1.contains("needs a credentials entry"),
            "{errors:?}"
        );
        // A malformed thumbprint names its key.
        let mut vault = Vault::default();
        vault.insert(
            "vc",
            crate::config::Resolved::new(upsvisor_core::Credentials::new("root", "pw")),
        );
        let cfg = Config::parse_str(
            "t.toml",
            "version = 1\n[[host]]\nid = \"vc\"\ntransport = \"mob\"\naddress = \"vc.lab\"\ncredentials = \"vc\"\ntls_thumbprint = \"zz\"\n",
        )
        .unwrap();
        let (_, errors) = from_config(&cfg, &vault);
        assert!(errors[0].1.contains("host[0].tls_thumbprint"), "{errors:?}");
        // A well-formed SOAP host builds (it connects lazily).
        let cfg = Config::parse_str(
            "t.toml",
            "version = 1\n[[host]]\nid = \"vc\"\ntransport = \"soap\"\naddress = \"vc.lab\"\ncredentials = \"vc\"\ntls_thumbprint = \"AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89\"\nvsphere_host = \"esx01.lab\"\n",
        )
        .unwrap();
        let (parts, errors) = from_config(&cfg, &vault);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(parts.hosts.len(), 1);
    }

    /// A vCenter fetch serves the session's other hosts for 3 s, or a
    /// quarter of the shorter poll period when that is less.
    #[test]
    fn fetch_reuse_stays_well_under_the_poll_period() {
        let p = |period_s, on_battery_period_s| crate::config::PollerSection {
            period_s,
            on_battery_period_s,
            ..Default::default()
        };
        assert_eq!(fetch_reuse(&p(60, 15)), Duration::from_secs(3));
        assert_eq!(fetch_reuse(&p(60, 4)), Duration::from_secs(1));
        assert_eq!(fetch_reuse(&p(1, 1)), Duration::from_millis(250));
        assert_eq!(fetch_reuse(&p(0, 0)), Duration::from_millis(250));
    }

    /// Hosts of one vCenter share a session only when every connection
    /// setting is equal; `vsphere_host` alone may differ.
    #[test]
    fn soap_hosts_of_one_vcenter_share_a_session() {
        const TP: &str = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";
        let host = |id: &str, extra: &str| {
            format!(
                "[[host]]\nid = \"{id}\"\ntransport = \"soap\"\naddress = \"vc.lab\"\ncredentials = \"vc\"\ntls_thumbprint = \"{TP}\"\nvsphere_host = \"{id}.lab\"\n{extra}"
            )
        };
        let text = [
            "version = 1\n".to_string(),
            host("a", ""),
            host("b", ""),
            // The same pin written in lower case is the same setting.
            host("c", "").replace(TP, &TP.to_lowercase()),
            host("d", "").replace("credentials = \"vc\"", "credentials = \"vc2\""),
            host("e", "").replace("vc.lab\"", "vc2.lab\""),
            host("f", "dangerous_accept_invalid_certs = true\n"),
            host("g", "").replace(TP, &TP.replace("AB:CD:EF:01", "AB:CD:EF:02")),
            // An ESXi host reached directly: its own session, no "via".
            host("h", "")
                .replace("vc.lab", "esx-h.lab")
                .replace("vsphere_host = \"h.lab\"\n", ""),
            "[[host]]\nid = \"m\"\ntransport = \"mob\"\naddress = \"vc.lab\"\ncredentials = \"vc\"\n".into(),
        ]
        .concat();
        let cfg = Config::parse_str("t.toml", &text).unwrap();
        let mut vault = Vault::default();
        for n in ["vc", "vc2"] {
            vault.insert(
                n,
                crate::config::Resolved::new(upsvisor_core::Credentials::new("ups", "pw")),
            );
        }
        let keys: Vec<Option<SessionKey>> = cfg.hosts.iter().map(SessionKey::of).collect();
        assert_eq!(keys[0], keys[1]);
        assert_eq!(keys[0], keys[2]);
        for other in &keys[3..8] {
            assert!(other.is_some());
            assert_ne!(&keys[0], other, "{other:?}");
        }
        assert_eq!(keys[8], None, "a MOB host has no SOAP session");
        let (parts, errors) = from_config(&cfg, &vault);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(parts.hosts.len(), 9);
        let via = |id: &str| parts.via.get(&HostId::from(id)).cloned();
        let shared = Via {
            vcenter: "vc.lab".into(),
            shared_by: 3,
        };
        for id in ["a", "b", "c"] {
            assert_eq!(via(id), Some(shared.clone()), "{id}");
        }
        assert_eq!(via("d").map(|v| v.shared_by), Some(1));
        assert_eq!(via("e").map(|v| v.vcenter), Some("vc2.lab".into()));
        assert_eq!(via("h"), None);
        assert_eq!(via("m"), None);
        assert_eq!(
            shared.to_string(),
            "via vCenter vc.lab (session shared by 3 hosts)"
        );
    }

    #[test]
    fn nut_starttls_reads_its_ca_and_refuses_a_bad_one() {
        let dir = upsvisor_testkit::TempDir::new("nut-tls-cfg");
        let mut vault = Vault::default();
        vault.insert(
            "nut",
            crate::config::Resolved::new(upsvisor_core::Credentials::new("upsmon", "pw")),
        );
        let build = |ca: &str| {
            let text = format!(
                "version = 1\n[[device]]\nid = \"ups1\"\nkind = \"nut\"\naddress = \"127.0.0.1:3493\"\nups = \"u\"\ncredentials = \"nut\"\nnut_starttls = true\nnut_ca_file = \"{ca}\"\n"
            );
            let cfg =
                Config::parse_str(&dir.path().join("t.toml").display().to_string(), &text).unwrap();
            let (parts, errors) = from_config(&cfg, &vault);
            (parts.devices.len(), errors)
        };
        let (n, errors) = build("missing.pem");
        assert_eq!(n, 0);
        assert!(
            errors[0].1.contains("device[0].nut_ca_file: cannot read"),
            "{errors:?}"
        );
        std::fs::write(dir.path().join("junk.pem"), "not a certificate\n").unwrap();
        let (n, errors) = build("junk.pem");
        assert_eq!(n, 0);
        assert!(errors[0].1.contains("no certificate"), "{errors:?}");
        // A real CA certificate (made with openssl) is accepted; the device
        // connects lazily, so nothing needs to listen.
        let Some(openssl) = upsvisor_testkit::require_peer(&["openssl"], "openssl") else {
            return;
        };
        let ok = std::process::Command::new(openssl)
            .current_dir(dir.path())
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                "/CN=test-ca",
                "-days",
                "1",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ])
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "openssl req");
        let (n, errors) = build("ca.pem");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(n, 1);
    }

    #[test]
    fn ssh_without_pin_is_refused() {
        let cfg = Config::parse_str(
            "t.toml",
            "version = 1\n[[host]]\nid = \"k\"\ntransport = \"ssh-libvirt\"\naddress = \"127.0.0.1:22\"\n",
        )
        .unwrap();
        let (_, errors) = from_config(&cfg, &Vault::default());
        assert!(errors[0].1.contains("host[0].credentials"), "{errors:?}");
    }

    #[test]
    fn demo_builds_an_engine() {
        let (parts, _ups) = demo(DemoSpec::default().hosts(2).vms_per_host(3));
        let mut e = parts.engine().unwrap();
        let EngineClock::Sim(c) = &parts.clock else {
            panic!("demo runs on a SimClock")
        };
        c.block_on(e.run_until(Instant::from_millis(1000)));
        assert_eq!(e.table().hosts.len(), 2);
        assert!(e.table().vm_count() >= 6);
    }
}
