//! [`SshTransport`]: the [`HostTransport`] over SSH, one dialect per platform.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use upsvisor_traits::{
    Capabilities, Error, ErrorKind, HostInfo, HostInventory, HostOp, HostTransport, PowerState,
    Result, ToolsState, VmId, VmInfo, VmOp,
};

use crate::cmd::{self, PveGuest, powershell, sh_line};
use crate::codec::{self, esxi, hyperv, libvirt, proxmox, server};
use crate::config::{Dialect, SshConfig};
use crate::session::{Output, Session, on_runtime};

/// A hypervisor host reached over SSH.
///
/// Holds one SSH connection, opened on first use, shared by concurrent
/// calls (one channel per command) and reopened after it drops. Cheap to
/// clone: clones share the connection.
///
/// Runs on an internal tokio runtime thread (russh needs tokio), so its
/// futures can be awaited from any executor, including
/// `futures::executor::block_on`.
///
/// ```
/// use upsvisor_traits::{HostTransport, VmOp};
/// use upsvisor_ssh::{Dialect, SshConfig, SshTransport};
/// let t = SshTransport::new(
///     SshConfig::new("127.0.0.1", "root", Dialect::Libvirt)
///         .with_password("secret")
///         .with_host_key("SHA256:KUxN7PpRKgAhJC7lb/i5o/LOcu9mHAMCd1b2Fnxp4zU")
///         .unwrap(),
/// )
/// .unwrap();
/// assert!(t.capabilities().supports_vm(VmOp::ShutdownGuest));
/// // A VM id with shell metacharacters is refused before any connection:
/// let err = futures::executor::block_on(t.vm_power(&"x; reboot".into(), VmOp::PowerOff)).unwrap_err();
/// assert_eq!(err.kind(), upsvisor_traits::ErrorKind::NotFound);
/// assert_eq!(t.connection_count(), 0);
/// ```
#[derive(Clone)]
pub struct SshTransport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SshTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshTransport")
            .field("target", &self.inner.target)
            .field("dialect", &self.inner.cfg.dialect)
            .finish()
    }
}

struct Inner {
    cfg: Arc<SshConfig>,
    target: String,
    session: Session,
    /// ESXi: VM id (instance UUID) → Vmid, refreshed by every listing.
    esxi_ids: Mutex<HashMap<String, String>>,
    /// Proxmox: the node's cluster scope, as last read.
    pve: Mutex<PveScope>,
}

/// A Proxmox node's cluster scope ([`proxmox::PveMembership::scope`]).
///
/// Read with the first inventory and again every
/// [`PVE_MEMBERSHIP_REFRESH`]; a read that fails keeps what was known
/// (keys do not flip with one failed `pvesh`: a VM whose key changed
/// mid-outage would no longer be the one restore stopped). Never known
/// means host-local keys, the safe default: they can only split one VM's
/// history at a migration, never merge two VMs.
#[derive(Debug, Default)]
struct PveScope {
    /// `Some(None)`: standalone; `Some(Some(scope))`: a cluster.
    known: Option<Option<String>>,
    read_at: Option<std::time::Instant>,
}

/// How often a Proxmox node's cluster membership is read again.
const PVE_MEMBERSHIP_REFRESH: std::time::Duration = std::time::Duration::from_secs(600);
/// How soon a membership that was never read is tried again.
const PVE_MEMBERSHIP_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

impl SshTransport {
    /// Builds a transport; checks the configuration and decodes the private
    /// key, but does not connect yet.
    pub fn new(cfg: SshConfig) -> Result<SshTransport> {
        let cfg = Arc::new(cfg);
        let session = Session::new(cfg.clone())?;
        Ok(SshTransport {
            inner: Arc::new(Inner {
                target: cfg.target(),
                cfg,
                session,
                esxi_ids: Mutex::new(HashMap::new()),
                pve: Mutex::new(PveScope::default()),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SshConfig {
        &self.inner.cfg
    }

    /// How many SSH connections this transport has opened (1 while the
    /// first one lives; more after drops).
    pub fn connection_count(&self) -> u64 {
        self.inner.session.connects()
    }

    /// The channel limit in force on the connection: the configured
    /// [`SshConfig::with_max_channels`], or lower once the server refused a
    /// channel (its session limit); and how many refusals were seen.
    pub fn channel_limit(&self) -> (usize, u64) {
        self.inner.session.channel_limit()
    }

    /// Closes the SSH connection; the next call opens a new one.
    pub async fn disconnect(&self) {
        let inner = self.inner.clone();
        let _ = on_runtime(async move {
            inner.session.disconnect().await;
            Ok(())
        })
        .await;
    }

    /// Runs the program `argv` (each argument quoted for a POSIX shell;
    /// nothing is interpreted by the remote shell) on the host over this
    /// transport's connection and its host-key check, with `env` set
    /// (through `env NAME=value ...`, as sshd's `AcceptEnv` usually refuses
    /// the protocol's own variables), within `timeout`. It runs under a
    /// small `/bin/sh` watchdog: still running a second before `timeout`,
    /// its session's process group is sent `TERM` (what it started goes
    /// too), and the channel is closed. `Ok` only for exit status 0. For
    /// operators' hooks; refused on Hyper-V hosts (no POSIX shell).
    ///
    /// # Errors
    /// `Unsupported` on Hyper-V or for an empty `argv` or a variable name
    /// that is not `[A-Za-z_][A-Za-z0-9_]*`; `Timeout`; `Protocol` with the
    /// exit status or signal for a command that failed; connection errors
    /// as for every call.
    pub async fn run_command(
        &self,
        argv: &[String],
        env: &[(String, String)],
        timeout: std::time::Duration,
    ) -> Result<()> {
        if self.inner.cfg.dialect == Dialect::HyperV {
            return Err(Error::unsupported(format!(
                "a command on {} (ssh-hyperv: no POSIX shell)",
                self.inner.target
            )));
        }
        let Some(prog) = argv.first() else {
            return Err(Error::unsupported("an empty command"));
        };
        let valid = |n: &str| {
            n.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        if let Some((bad, _)) = env.iter().find(|(n, _)| !valid(n)) {
            return Err(Error::unsupported(format!(
                "environment variable name {bad:?}"
            )));
        }
        // The watchdog: sshd starts each session in a process group of
        // its own, led (once the login shell and `env` have exec'd) by
        // this `sh`; at the deadline the whole group is ended, whatever
        // the server does with a closed channel or a `signal` request.
        // (Its one-second steps leave at most a 1 s `sleep` behind when
        // the command ends first.)
        let secs = timeout.as_secs().saturating_sub(1).max(1);
        let watchdog = format!(
            "\"$@\" & p=$!; ( i=0; while [ $i -lt {secs} ]; do sleep 1; i=$((i+1)); done; \
             kill -TERM -$$ 2>/dev/null || kill -TERM $p 2>/dev/null ) & w=$!; \
             wait $p; s=$?; kill $w 2>/dev/null; exit $s"
        );
        let mut words: Vec<String> = env.iter().map(|(n, v)| format!("{n}={v}")).collect();
        words.extend([
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            watchdog,
            "upsvisor-command".to_owned(),
        ]);
        words.extend(argv.iter().cloned());
        let what = format!("command {prog}");
        self.call(move |inner| async move {
            let line = format!("env LC_ALL=C LANG=C LANGUAGE=C {}", sh_line(&words));
            tracing::debug!(host = %inner.target, what, "ssh exec");
            let t0 = std::time::Instant::now();
            let out = inner.session.exec_for(&line, &what, timeout, true).await?;
            if out.success() {
                return Ok(());
            }
            // Ended by its watchdog: it ran out its time.
            if out.signal.as_deref() == Some("TERM")
                && t0.elapsed() >= std::time::Duration::from_secs(secs)
            {
                return Err(Error::timeout(
                    format!("{what} on {} (still running: stopped)", inner.target),
                    timeout,
                ));
            }
            Err(match (&out.signal, out.status) {
                (Some(sig), _) => {
                    Error::protocol(&inner.target, format!("{what} was killed by signal {sig}"))
                }
                (None, Some(st)) => {
                    Error::protocol(&inner.target, format!("{what}: exit status {st}"))
                }
                (None, None) => Error::protocol(&inner.target, format!("{what}: no exit status")),
            })
        })
        .await
    }

    async fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        on_runtime(f(self.inner.clone())).await
    }
}

impl Inner {
    /// Runs `line`. On POSIX hosts (every dialect but Hyper-V) it runs
    /// under `env LC_ALL=C LANG=C LANGUAGE=C`: Debian and Ubuntu sshd
    /// sessions load the system locale, and gettext would otherwise
    /// translate virsh's field names and errors (any login shell runs
    /// `env`, unlike `VAR=x cmd`, which csh and fish lack).
    async fn run(&self, line: &str, what: &str) -> Result<Output> {
        tracing::debug!(host = %self.target, what, "ssh exec");
        if self.cfg.dialect == Dialect::HyperV {
            self.session.exec(line, what).await
        } else {
            let line = format!("env LC_ALL=C LANG=C LANGUAGE=C {line}");
            self.session.exec(&line, what).await
        }
    }

    /// Runs and requires exit status 0; failures are classified (see
    /// [`codec::classify_failure`]).
    async fn run_ok(&self, line: &str, what: &str) -> Result<String> {
        let out = self.run(line, what).await?;
        if out.success() {
            return Ok(out.stdout);
        }
        Err(self.failure(what, &out))
    }

    /// The error for a command that did not exit 0.
    fn failure(&self, what: &str, out: &Output) -> Error {
        if let Some(sig) = &out.signal {
            return Error::protocol(&self.target, format!("{what} was killed by signal {sig}"));
        }
        let text = format!("{}\n{}", out.stderr, out.stdout);
        codec::classify_failure(self.cfg.dialect, &self.target, what, out.status, &text)
    }

    fn parsed<T>(&self, r: std::result::Result<T, codec::ParseError>) -> Result<T> {
        r.map_err(|e| e.into_error(&self.target))
    }

    fn virsh(&self, args: &[&str]) -> String {
        libvirt::virsh(self.cfg.libvirt_uri.as_deref(), args)
    }

    // ---- host info ----

    async fn host_info(&self) -> Result<HostInfo> {
        match self.cfg.dialect {
            Dialect::Esxi => {
                let o = self
                    .run_ok(esxi::VERSION, "esxcli system version get")
                    .await?;
                self.parsed(esxi::parse_version(&o))
            }
            Dialect::Libvirt => {
                let o = self
                    .run_ok(&self.virsh(&["version"]), "virsh version")
                    .await?;
                self.parsed(libvirt::parse_version(&o))
            }
            Dialect::Proxmox => {
                let o = self.run_ok(proxmox::PVEVERSION, "pveversion").await?;
                self.parsed(proxmox::parse_pveversion(&o))
            }
            Dialect::HyperV => {
                let o = self
                    .run_ok(
                        &powershell(&hyperv::host_script()),
                        "Get-CimInstance Win32_OperatingSystem",
                    )
                    .await?;
                self.parsed(hyperv::parse_host(&o))
            }
            Dialect::Server => {
                let o = self.run_ok(server::UNAME, "uname").await?;
                self.parsed(server::parse_uname(&o))
            }
        }
    }

    // ---- listing ----

    async fn all_vms(&self) -> Result<Vec<VmInfo>> {
        match self.cfg.dialect {
            Dialect::Esxi => {
                let o = self
                    .run_ok(esxi::GETALLVMS, "vim-cmd vmsvc/getallvms")
                    .await?;
                let rows = self.parsed(esxi::parse_getallvms(&o))?;
                // A VM unregistered between the list and its fetch is left
                // out once a fresh list agrees.
                let found = self
                    .each_vm(
                        rows.into_iter().map(|r| r.vmid).collect(),
                        |vmid| async move { self.esxi_vm(&vmid).await.map(|vm| (vmid, vm)) },
                    )
                    .await?;
                let mut vms = Vec::with_capacity(found.len());
                let mut map = HashMap::new();
                for (vmid, vm) in found {
                    map.insert(vm.id.as_str().to_owned(), vmid);
                    vms.push(vm);
                }
                if let Ok(mut m) = self.esxi_ids.lock() {
                    *m = map;
                }
                Ok(vms)
            }
            Dialect::Libvirt => {
                let o = self
                    .run_ok(
                        &self.virsh(&["list", "--all", "--uuid", "--name"]),
                        "virsh list --all",
                    )
                    .await?;
                let doms = self.parsed(libvirt::parse_list(&o))?;
                self.each_vm(doms.into_iter().map(|d| d.uuid).collect(), |u| async move {
                    self.libvirt_vm(&u).await
                })
                .await
            }
            Dialect::Proxmox => {
                let scope = self.pve_scope().await;
                let q = self.run_ok(proxmox::QM_LIST, "qm list").await?;
                let mut rows = self.parsed(proxmox::parse_qm_list(&q))?;
                let c = self.run_ok(proxmox::PCT_LIST, "pct list").await?;
                rows.extend(self.parsed(proxmox::parse_pct_list(&c))?);
                let keys = rows
                    .iter()
                    .map(|r| r.guest.vm_id_in(scope.as_deref()).as_str().to_owned())
                    .collect();
                // Fetched in list order, so each key meets its own row (and
                // its status, which saves a `status` call per guest).
                let mut rows = rows.into_iter();
                self.each_vm(keys, |key| {
                    let row = rows.next();
                    async move {
                        match row {
                            Some(r) => self.pve_vm(r.guest, Some(&r.status)).await,
                            None => self.pve_vm(self.pve_guest(&key)?, None).await,
                        }
                    }
                })
                .await
            }
            Dialect::HyperV => {
                let o = self
                    .run_ok(&powershell(&hyperv::list_script()), "Get-VM")
                    .await?;
                self.parsed(hyperv::parse_vms(&o))
            }
            // Not a hypervisor: nothing runs on it that we manage.
            Dialect::Server => Ok(Vec::new()),
        }
    }

    /// The keys (ESXi Vmids, libvirt UUIDs, Proxmox `qemu/<vmid>` and
    /// `lxc/<vmid>`) of the VMs the host lists right now.
    async fn listed_keys(&self) -> Result<Vec<String>> {
        Ok(match self.cfg.dialect {
            Dialect::Esxi => {
                let o = self
                    .run_ok(esxi::GETALLVMS, "vim-cmd vmsvc/getallvms")
                    .await?;
                self.parsed(esxi::parse_getallvms(&o))?
                    .into_iter()
                    .map(|r| r.vmid)
                    .collect()
            }
            Dialect::Libvirt => {
                let o = self
                    .run_ok(
                        &self.virsh(&["list", "--all", "--uuid", "--name"]),
                        "virsh list --all",
                    )
                    .await?;
                self.parsed(libvirt::parse_list(&o))?
                    .into_iter()
                    .map(|d| d.uuid)
                    .collect()
            }
            Dialect::Proxmox => {
                let q = self.run_ok(proxmox::QM_LIST, "qm list").await?;
                let mut rows = self.parsed(proxmox::parse_qm_list(&q))?;
                let c = self.run_ok(proxmox::PCT_LIST, "pct list").await?;
                rows.extend(self.parsed(proxmox::parse_pct_list(&c))?);
                let scope = self.pve_scope().await;
                rows.into_iter()
                    .map(|r| r.guest.vm_id_in(scope.as_deref()).as_str().to_owned())
                    .collect()
            }
            Dialect::HyperV => {
                let o = self
                    .run_ok(&powershell(&hyperv::list_script()), "Get-VM")
                    .await?;
                self.parsed(hyperv::parse_vms(&o))?
                    .into_iter()
                    .map(|v| v.id.as_str().to_owned())
                    .collect()
            }
            Dialect::Server => Vec::new(),
        })
    }

    /// The per-VM flow over the listed `keys` (ESXi Vmids, libvirt UUIDs,
    /// Proxmox `qemu/<vmid>` and `lxc/<vmid>`), through
    /// [`upsvisor_traits::fetch_each_vm`]. Inventories never silently lose
    /// VMs: a VM whose per-VM step said NotFound is left out only when a
    /// fresh listing (exit status 0, parsed) no longer holds it. A VM still
    /// listed fails the inventory, and so does a listing that fails, so the
    /// engine keeps the host's last VMs, marked stale.
    async fn each_vm<V, F, Fut>(&self, keys: Vec<String>, fetch: F) -> Result<Vec<V>>
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Result<V>>,
    {
        upsvisor_traits::fetch_each_vm(
            keys,
            fetch,
            || self.listed_keys(),
            || async {},
            Some(&self.target),
        )
        .await
    }

    async fn vm_info(&self, vm: &VmId) -> Result<VmInfo> {
        match self.cfg.dialect {
            Dialect::Esxi => {
                let vmid = self.esxi_resolve(vm).await?;
                self.esxi_vm(&vmid).await
            }
            Dialect::Libvirt => {
                let u = cmd::uuid(vm.as_str())?.to_ascii_lowercase();
                self.libvirt_vm(&u).await
            }
            Dialect::Proxmox => self.pve_vm(self.pve_guest(vm.as_str())?, None).await,
            Dialect::HyperV => {
                let g = cmd::uuid(vm.as_str())?;
                let o = self
                    .run_ok(&powershell(&hyperv::vm_script(g)), "Get-VM -Id")
                    .await?;
                self.parsed(hyperv::parse_vms(&o))?
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::not_found(format!("VM {vm} on {}", self.target)))
            }
            Dialect::Server => Err(Error::not_found(format!(
                "VM {vm} on {} (a plain server runs no VMs)",
                self.target
            ))),
        }
    }

    // ---- per dialect details ----

    async fn esxi_vm(&self, vmid: &str) -> Result<VmInfo> {
        let vmid = cmd::esxi_vmid(vmid)?;
        let o = self
            .run_ok(
                &esxi::vmsvc("get.summary", vmid),
                "vim-cmd vmsvc/get.summary",
            )
            .await?;
        let mut vm = self.parsed(esxi::parse_summary(&o, vmid))?.vm;
        if vm.tools == ToolsState::Running && vm.power == PowerState::PoweredOn {
            // All addresses, not only the primary one; best effort.
            if let Ok(g) = self
                .run_ok(&esxi::vmsvc("get.guest", vmid), "vim-cmd vmsvc/get.guest")
                .await
            {
                if let Ok(ips) = esxi::parse_guest_ips(&g) {
                    for ip in ips {
                        if !vm.ips.contains(&ip) {
                            vm.ips.push(ip);
                        }
                    }
                }
            }
        }
        if let Ok(mut m) = self.esxi_ids.lock() {
            m.insert(vm.id.as_str().to_owned(), vmid.to_owned());
        }
        Ok(vm)
    }

    /// ESXi: the Vmid for a VM id (instance UUID, or a bare Vmid).
    async fn esxi_resolve(&self, vm: &VmId) -> Result<String> {
        let id = vm.as_str();
        if let Ok(v) = cmd::esxi_vmid(id) {
            return Ok(v.to_owned());
        }
        let key = cmd::uuid(id)
            .map_err(|_| {
                Error::not_found(format!(
                    "VM id {id:?} is neither an ESXi Vmid nor a UUID; refused without running anything"
                ))
            })?
            .to_owned();
        let cached = self.esxi_ids.lock().ok().and_then(|m| m.get(&key).cloned());
        if let Some(v) = cached {
            return Ok(v);
        }
        self.all_vms().await?;
        self.esxi_ids
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
            .ok_or_else(|| Error::not_found(format!("VM {id} on {}", self.target)))
    }

    async fn libvirt_vm(&self, uuid: &str) -> Result<VmInfo> {
        let o = self
            .run_ok(&self.virsh(&["dominfo", uuid]), "virsh dominfo")
            .await?;
        let mut vm = self.parsed(libvirt::parse_dominfo(&o))?;
        if vm.power == PowerState::PoweredOn {
            // Needs a DHCP lease (default source); best effort.
            if let Ok(a) = self
                .run_ok(&self.virsh(&["domifaddr", uuid]), "virsh domifaddr")
                .await
            {
                vm.ips = libvirt::parse_domifaddr(&a).unwrap_or_default();
            }
        }
        Ok(vm)
    }

    /// The node's cluster scope for keys: read again when due (see
    /// [`PveScope`]); `None` for a standalone node or one whose membership
    /// was never read.
    async fn pve_scope(&self) -> Option<String> {
        let due = {
            let st = self.pve.lock().unwrap_or_else(|e| e.into_inner());
            let every = if st.known.is_some() {
                PVE_MEMBERSHIP_REFRESH
            } else {
                PVE_MEMBERSHIP_RETRY
            };
            st.read_at.is_none_or(|t| t.elapsed() >= every)
        };
        if due {
            let read = match self
                .run_ok(proxmox::CLUSTER_STATUS, "pvesh get /cluster/status")
                .await
            {
                Ok(o) => self.parsed(proxmox::parse_cluster_status(&o)),
                Err(e) => Err(e),
            };
            let mut st = self.pve.lock().unwrap_or_else(|e| e.into_inner());
            st.read_at = Some(std::time::Instant::now());
            match read {
                Ok(m) => {
                    let scope = m.scope();
                    if st.known.as_ref().is_some_and(|k| *k != scope) {
                        tracing::warn!(host = %self.target, "Proxmox cluster membership changed: its guests' keys change once");
                    }
                    st.known = Some(scope);
                }
                Err(e) if st.known.is_none() => {
                    tracing::warn!(host = %self.target, error = %e, "Proxmox cluster membership unknown: guests are keyed with this host until it can be read");
                }
                Err(_) => {}
            }
        }
        self.pve_known_scope().flatten()
    }

    /// The scope as last read, without reading.
    fn pve_known_scope(&self) -> Option<Option<String>> {
        self.pve
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .known
            .clone()
    }

    /// A guest from one of our keys. A key scoped to another cluster than
    /// this node's (as last read) names no guest here: its VMID would be
    /// another VM's.
    fn pve_guest(&self, key: &str) -> Result<PveGuest> {
        let (scope, g) = PveGuest::parse_scoped(key)?;
        if let (Some(want), Some(Some(ours))) = (scope, self.pve_known_scope()) {
            if want != ours {
                return Err(Error::not_found(format!(
                    "{key} at {}: this node is in cluster scope {ours}",
                    self.target
                )));
            }
        }
        Ok(g)
    }

    async fn pve_vm(&self, g: PveGuest, status: Option<&str>) -> Result<VmInfo> {
        let power = match status {
            Some(s) => proxmox::power_state(s),
            None => {
                let o = self
                    .run_ok(&proxmox::guest_cmd(g, "status", &[]), "status")
                    .await?;
                self.parsed(proxmox::parse_status(&o))?
            }
        };
        // A VMID is unique within one Proxmox cluster only (a standalone
        // node is a cluster of one, and every node numbers from 100): keyed
        // with the cluster when the node's membership is known, else with
        // the host.
        let scope = self.pve_known_scope();
        let mut vm = match &scope {
            Some(Some(s)) => VmInfo::new(g.vm_id_in(Some(s)), "", power),
            _ => VmInfo::new(g.vm_id(), "", power).host_local(true),
        };
        let c = self
            .run_ok(&proxmox::guest_cmd(g, "config", &[]), "config")
            .await?;
        self.parsed(proxmox::apply_config(&mut vm, &c))?;
        if let PveGuest::Qemu(n) = g {
            if power == PowerState::PoweredOn && vm.tools != ToolsState::NotInstalled {
                match self
                    .run_ok(
                        &proxmox::qm_guest_interfaces(n),
                        "qm guest cmd network-get-interfaces",
                    )
                    .await
                {
                    Ok(o) => {
                        vm.tools = ToolsState::Running;
                        vm.ips = proxmox::parse_guest_interfaces(&o).unwrap_or_default();
                    }
                    Err(e) if e.kind() == ErrorKind::ToolsUnavailable => {
                        vm.tools = ToolsState::NotRunning
                    }
                    Err(e) if e.kind() == ErrorKind::Timeout => return Err(e),
                    Err(_) => {}
                }
            }
        }
        Ok(vm)
    }

    // ---- power ----

    /// The command for `op` on `vm`, after validating the id; `None` when
    /// the dialect cannot do it.
    async fn vm_power_line(&self, vm: &VmId, op: VmOp) -> Result<String> {
        let unsupported =
            || Error::unsupported(format!("{op} on {} ({})", self.target, self.cfg.dialect));
        Ok(match self.cfg.dialect {
            Dialect::Esxi => {
                let vmid = self.esxi_resolve(vm).await?;
                let verb = match op {
                    VmOp::ShutdownGuest => "power.shutdown",
                    VmOp::RebootGuest => "power.reboot",
                    VmOp::PowerOff => "power.off",
                    VmOp::PowerOn => "power.on",
                    VmOp::Reset => "power.reset",
                    VmOp::Suspend => "power.suspend",
                    _ => return Err(unsupported()),
                };
                esxi::vmsvc(verb, &vmid)
            }
            Dialect::Libvirt => {
                let u = cmd::uuid(vm.as_str())?.to_ascii_lowercase();
                let verb = match op {
                    VmOp::ShutdownGuest => "shutdown",
                    VmOp::RebootGuest => "reboot",
                    VmOp::PowerOff => "destroy",
                    VmOp::PowerOn => "start",
                    VmOp::Reset => "reset",
                    VmOp::Suspend => "managedsave",
                    _ => return Err(unsupported()),
                };
                self.virsh(&[verb, &u])
            }
            Dialect::Proxmox => {
                let g = self.pve_guest(vm.as_str())?;
                let wait = self.cfg.guest_shutdown_wait.as_secs().max(1).to_string();
                match (op, g) {
                    (VmOp::ShutdownGuest, _) => {
                        proxmox::guest_cmd(g, "shutdown", &["--timeout", &wait])
                    }
                    (VmOp::RebootGuest, _) => proxmox::guest_cmd(g, "reboot", &[]),
                    (VmOp::PowerOff, _) => proxmox::guest_cmd(g, "stop", &[]),
                    (VmOp::PowerOn, _) => proxmox::guest_cmd(g, "start", &[]),
                    (VmOp::Reset, PveGuest::Qemu(_)) => proxmox::guest_cmd(g, "reset", &[]),
                    (VmOp::Suspend, PveGuest::Qemu(_)) => {
                        proxmox::guest_cmd(g, "suspend", &["--todisk", "1"])
                    }
                    _ => return Err(unsupported()),
                }
            }
            Dialect::HyperV => {
                let g = cmd::uuid(vm.as_str())?;
                let cmdlet = match op {
                    VmOp::ShutdownGuest => "Stop-VM -Force",
                    VmOp::PowerOff => "Stop-VM -TurnOff -Force",
                    VmOp::PowerOn => "Start-VM",
                    VmOp::Reset => "Restart-VM -Force",
                    VmOp::Suspend => "Save-VM",
                    _ => return Err(unsupported()),
                };
                powershell(&hyperv::power_script(g, cmdlet))
            }
            Dialect::Server => return Err(unsupported()),
        })
    }

    /// The VM's power state, by the cheapest query the dialect has.
    async fn current_power(&self, vm: &VmId) -> Result<PowerState> {
        match self.cfg.dialect {
            Dialect::Esxi => {
                let vmid = self.esxi_resolve(vm).await?;
                let o = self
                    .run_ok(
                        &esxi::vmsvc("power.getstate", &vmid),
                        "vim-cmd vmsvc/power.getstate",
                    )
                    .await?;
                self.parsed(esxi::parse_power_getstate(&o))
            }
            Dialect::Proxmox => {
                let g = self.pve_guest(vm.as_str())?;
                let o = self
                    .run_ok(&proxmox::guest_cmd(g, "status", &[]), "status")
                    .await?;
                self.parsed(proxmox::parse_status(&o))
            }
            _ => Ok(self.vm_info(vm).await?.power),
        }
    }

    async fn vm_power(&self, vm: &VmId, op: VmOp) -> Result<()> {
        let line = self.vm_power_line(vm, op).await?;
        let now = self.current_power(vm).await?;
        let done = match op {
            VmOp::PowerOn => now == PowerState::PoweredOn,
            VmOp::ShutdownGuest | VmOp::PowerOff => now == PowerState::PoweredOff,
            VmOp::Suspend => matches!(now, PowerState::Suspended | PowerState::PoweredOff),
            _ => false,
        };
        if done {
            return Ok(());
        }
        if matches!(op, VmOp::Reset | VmOp::RebootGuest)
            && matches!(now, PowerState::PoweredOff | PowerState::Suspended)
        {
            return Err(Error::invalid_state(format!(
                "{op} on {vm}: the VM is not running"
            )));
        }
        let what = format!("{op} {vm}");
        let out = self.run(&line, &what).await?;
        // qm/pct shutdown --timeout: the request was delivered and the
        // guest is still shutting down (qemu-server's fixed text).
        let still_stopping = self.cfg.dialect == Dialect::Proxmox
            && op == VmOp::ShutdownGuest
            && out.stderr.contains("got timeout");
        if out.success() || still_stopping {
            return Ok(());
        }
        Err(self.failure(&what, &out))
    }

    async fn host_power(&self, op: HostOp) -> Result<()> {
        let unsupported =
            || Error::unsupported(format!("{op} on {} ({})", self.target, self.cfg.dialect));
        let line = match (self.cfg.dialect, op) {
            (Dialect::Esxi, HostOp::EnterMaintenance) => {
                sh_line(&["vim-cmd", "hostsvc/maintenance_mode_enter"])
            }
            (Dialect::Esxi, HostOp::ExitMaintenance) => {
                sh_line(&["vim-cmd", "hostsvc/maintenance_mode_exit"])
            }
            (Dialect::Esxi, HostOp::Shutdown) => sh_line(&[
                "esxcli",
                "system",
                "shutdown",
                "poweroff",
                "--reason=upsvisor power event",
            ]),
            (Dialect::Esxi, HostOp::Reboot) => sh_line(&[
                "esxcli",
                "system",
                "shutdown",
                "reboot",
                "--reason=upsvisor power event",
            ]),
            // `systemctl poweroff` stops running guests through
            // libvirt-guests / pve-guests first, in or out of any mode.
            (Dialect::Libvirt | Dialect::Proxmox, HostOp::Shutdown | HostOp::ShutdownForce) => {
                sh_line(&["systemctl", "poweroff"])
            }
            (Dialect::Libvirt | Dialect::Proxmox, HostOp::Reboot) => {
                sh_line(&["systemctl", "reboot"])
            }
            (Dialect::HyperV, HostOp::Shutdown | HostOp::ShutdownForce) => {
                powershell(&hyperv::wrap("Stop-Computer -Force"))
            }
            (Dialect::HyperV, HostOp::Reboot) => {
                powershell(&hyperv::wrap("Restart-Computer -Force"))
            }
            (Dialect::Server, HostOp::Shutdown | HostOp::ShutdownForce) => {
                sh_line(&self.cfg.shutdown_command)
            }
            _ => return Err(unsupported()),
        };
        let what = format!("{op} host");
        let out = self.run(&line, &what).await?;
        let going_down = matches!(
            op,
            HostOp::Shutdown | HostOp::ShutdownForce | HostOp::Reboot
        );
        // A host going down may drop the session before reporting a status.
        if out.success() || (going_down && out.status.is_none() && out.signal.is_none()) {
            if going_down {
                self.session.disconnect().await;
            }
            return Ok(());
        }
        Err(self.failure(&what, &out))
    }
}

#[async_trait]
impl HostTransport for SshTransport {
    fn capabilities(&self) -> Capabilities {
        capabilities(self.inner.cfg.dialect)
    }

    async fn host_info(&self) -> Result<HostInfo> {
        self.call(|i| async move { i.host_info().await }).await
    }

    async fn list_vm_ids(&self) -> Result<Vec<VmId>> {
        self.call(|i| async move { Ok(i.all_vms().await?.into_iter().map(|v| v.id).collect()) })
            .await
    }

    async fn vm_info(&self, vm: &VmId) -> Result<VmInfo> {
        let vm = vm.clone();
        self.call(|i| async move { i.vm_info(&vm).await }).await
    }

    async fn inventory(&self) -> Result<HostInventory> {
        self.call(|i| async move {
            let info = i.host_info().await?;
            let vms = i.all_vms().await?;
            Ok(HostInventory::new(info, vms))
        })
        .await
    }

    async fn vm_power(&self, vm: &VmId, op: VmOp) -> Result<()> {
        let vm = vm.clone();
        self.call(|i| async move { i.vm_power(&vm, op).await })
            .await
    }

    async fn host_power(&self, op: HostOp) -> Result<()> {
        self.call(|i| async move { i.host_power(op).await }).await
    }
}

/// What each dialect can do.
pub fn capabilities(d: Dialect) -> Capabilities {
    use HostOp as H;
    use VmOp as V;
    match d {
        Dialect::Esxi => Capabilities::all().with_bulk_inventory(false),
        Dialect::Libvirt | Dialect::Proxmox => Capabilities::all()
            .with_bulk_inventory(false)
            .with_host_ops([H::Shutdown, H::Reboot]),
        Dialect::HyperV => Capabilities::all()
            .with_bulk_inventory(true)
            .with_vm_ops([
                V::ShutdownGuest,
                V::PowerOff,
                V::PowerOn,
                V::Reset,
                V::Suspend,
            ])
            .with_host_ops([H::Shutdown, H::Reboot]),
        // One call answers (uname), nothing to do for VMs, and only the
        // configured shutdown.
        Dialect::Server => Capabilities::read_only(true).with_host_ops([H::Shutdown]),
    }
}
