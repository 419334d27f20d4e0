//! Hosts registered through the API, kept across restarts.
//!
//! With `state_dir` set in the config, every host registered through
//! `POST /api/hosts` (after its connection check) is written to
//! `<state_dir>/registered-hosts.json` and added again when the daemon
//! starts; `DELETE /api/hosts/{id}` removes it. The file holds the hosts'
//! credentials, so it is written with mode 0600 (atomically: a temp file
//! renamed over the old one) and refused at start when group or others can
//! read it. Secrets never reach a log line or an error message.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use upsvisor_core::{Credentials, Secret};

use crate::config::{HostSection, check_secret_file};

/// The file name inside `state_dir`.
pub const FILE_NAME: &str = "registered-hosts.json";

/// The file format version.
const VERSION: u32 = 1;

/// Largest file accepted (a registry is a few KiB).
const MAX_BYTES: u64 = 4 << 20;

/// One registered host: the host, as a `[[host]]` would declare it, and
/// its own credentials (kept only in the 0600 file; redacted in `Debug`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RegisteredHost {
    /// The host (`credentials` unset: its account is [`Self::credentials`]).
    pub host: HostSection,
    /// User and password, if the host needs them.
    pub credentials: Option<Credentials>,
}

/// Equal when what a registration gives is: every [`Registration`] field,
/// the password included (`HostSection` has no `PartialEq`).
impl PartialEq for RegisteredHost {
    fn eq(&self, other: &Self) -> bool {
        Registration::from(self) == Registration::from(other)
    }
}

impl Eq for RegisteredHost {}

impl RegisteredHost {
    /// From a registration: the host as a config entry would declare it,
    /// and its credentials.
    pub fn new(h: &HostSection, creds: Option<&Credentials>) -> Self {
        RegisteredHost {
            host: h.clone(),
            credentials: creds.cloned(),
        }
    }
}

/// A registration as `POST /api/hosts` receives it and as the registry
/// file keeps it (JSON, one object a host): a host's connection settings
/// and its credentials inline. Only the settings a registration can give;
/// [`Registration::check`] makes it a [`RegisteredHost`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Registration {
    /// Host id.
    pub id: String,
    /// Transport name, as in `[[host]] transport` (checked by
    /// [`Registration::check`], so a wrong one is named, not a JSON error).
    pub transport: String,
    /// Address.
    pub address: String,
    /// SSH host key pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host_key: Option<String>,
    /// Accept any SSH host key (lab only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    dangerous_accept_any_host_key: bool,
    /// libvirt URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    libvirt_uri: Option<String>,
    /// vSphere certificate thumbprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls_thumbprint: Option<String>,
    /// vSphere host name behind a vCenter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vsphere_host: Option<String>,
    /// vSphere over plain `http://` (lab only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    dangerous_allow_plain_http: bool,
    /// User name, if the host needs credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    /// Password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .field("transport", &self.transport)
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// The host with its credentials, checked as a `[[host]]` is
    /// ([`HostSection::validate`]). Errors: `(key, message)` with `key`
    /// like `host.transport`; never a secret.
    pub fn check(self) -> Result<RegisteredHost, (String, String)> {
        let transport = self
            .transport
            .parse()
            .map_err(|m| ("host.transport".to_string(), m))?;
        let mut host = HostSection::new(self.id, transport, self.address);
        host.host_key = self.host_key;
        host.dangerous_accept_any_host_key = self.dangerous_accept_any_host_key;
        host.libvirt_uri = self.libvirt_uri;
        host.tls_thumbprint = self.tls_thumbprint;
        host.vsphere_host = self.vsphere_host;
        host.dangerous_allow_plain_http = self.dangerous_allow_plain_http;
        host.validate("host")?;
        let credentials = self
            .username
            .map(|u| Credentials::new(u, Secret::new(self.password.unwrap_or_default())));
        Ok(RegisteredHost { host, credentials })
    }
}

impl From<&RegisteredHost> for Registration {
    fn from(r: &RegisteredHost) -> Self {
        let h = &r.host;
        Registration {
            id: h.id.clone(),
            transport: h.transport.to_string(),
            address: h.address.clone(),
            host_key: h.host_key.clone(),
            dangerous_accept_any_host_key: h.dangerous_accept_any_host_key,
            libvirt_uri: h.libvirt_uri.clone(),
            tls_thumbprint: h.tls_thumbprint.clone(),
            vsphere_host: h.vsphere_host.clone(),
            dangerous_allow_plain_http: h.dangerous_allow_plain_http,
            username: r.credentials.as_ref().map(|c| c.username.clone()),
            password: r
                .credentials
                .as_ref()
                .map(|c| c.password.expose().to_string())
                .filter(|p| !p.is_empty()),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    version: u32,
    hosts: Vec<Registration>,
}

/// The registry file `<state_dir>/registered-hosts.json`.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

impl crate::config::Config {
    /// The file API-registered hosts are kept in, when `state_dir` is set.
    pub fn registry_path(&self) -> Option<PathBuf> {
        self.state_dir.as_ref().map(|d| path_in(&self.resolve(d)))
    }
}

/// Reads the registry; a missing file is an empty registry. Errors name
/// the file and never hold a secret.
pub fn load(path: &Path) -> Result<Vec<RegisteredHost>, String> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    check_secret_file(path)?;
    let len = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len > MAX_BYTES {
        return Err(format!(
            "{}: {len} bytes is more than a registry holds (limit {MAX_BYTES}); move it aside",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // serde_json's messages quote at most a key or a type, not values.
    let f: FileFormat = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: line {} column {}: {} (fix or move the file aside; it is rewritten on the next registration)",
            path.display(),
            e.line(),
            e.column(),
            match e.classify() {
                // These name a key, never a value.
                serde_json::error::Category::Data
                    if ["unknown field", "missing field", "duplicate field"]
                        .iter()
                        .any(|p| e.to_string().starts_with(p)) =>
                {
                    let m = e.to_string();
                    m.split(" at line").next().unwrap_or("").to_string()
                }
                serde_json::error::Category::Data => "unexpected structure".to_string(),
                serde_json::error::Category::Syntax => "not valid JSON".to_string(),
                serde_json::error::Category::Eof => "truncated".to_string(),
                serde_json::error::Category::Io => "unreadable".to_string(),
            }
        )
    })?;
    if f.version != VERSION {
        return Err(format!(
            "{}: version {} (this daemon reads version {VERSION})",
            path.display(),
            f.version
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for h in &f.hosts {
        if h.id.is_empty() || !seen.insert(h.id.as_str()) {
            return Err(format!(
                "{}: host id `{}` is empty or used twice",
                path.display(),
                h.id
            ));
        }
    }
    f.hosts
        .into_iter()
        .map(|r| {
            let id = r.id.clone();
            r.check()
                .map_err(|(k, m)| format!("{}: registered host `{id}`: {k}: {m}", path.display()))
        })
        .collect()
}

/// [`load`] for the daemon's start: a file that cannot be parsed (or is
/// too large, or of another version) is renamed to
/// `<name>.corrupt-<unix seconds>` and kept for inspection, and the daemon
/// starts with no registered hosts; the second value says what happened,
/// for a critical log line. A file with a loose mode or a foreign owner is
/// still refused (`Err`): that is not corruption but a setup to fix.
pub fn load_or_set_aside(path: &Path) -> Result<(Vec<RegisteredHost>, Option<String>), String> {
    if !path.exists() {
        return Ok((Vec::new(), None));
    }
    check_secret_file(path)?;
    match load(path) {
        Ok(h) => Ok((h, None)),
        Err(e) => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let mut aside = path.as_os_str().to_owned();
            aside.push(format!(".corrupt-{secs}"));
            let aside = PathBuf::from(aside);
            std::fs::rename(path, &aside).map_err(|re| {
                format!(
                    "{e}; and it could not be moved aside to {}: {re}",
                    aside.display()
                )
            })?;
            Ok((
                Vec::new(),
                Some(format!(
                    "registered hosts not loaded: {e}; the file was moved aside to {} (kept for inspection); the daemon runs with the config's hosts only: register the hosts again",
                    aside.display()
                )),
            ))
        }
    }
}

/// Writes the registry atomically with mode 0600 (the directory is created
/// with mode 0700 if missing).
pub fn save(path: &Path, hosts: &[RegisteredHost]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.exists() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(dir)
            .map_err(|e| format!("state_dir {}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&FileFormat {
        version: VERSION,
        hosts: hosts.iter().map(Registration::from).collect(),
    })
    .map_err(|e| format!("{}: {e}", path.display()))?;
    let tmp = dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let write = || -> std::io::Result<()> {
        let mut f = o.open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", path.display())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::config::Transport;

    fn host(id: &str) -> RegisteredHost {
        let mut h = HostSection::new(id, Transport::Soap, "127.0.0.1:8989");
        h.tls_thumbprint = Some("AB:CD".into());
        RegisteredHost::new(&h, Some(&Credentials::new("root", "hunter2-secret")))
    }

    #[test]
    fn round_trip_0600_and_redacted() {
        let d = upsvisor_testkit::TempDir::new("registry");
        let p = path_in(&d.path().join("state"));
        assert!(load(&p).unwrap().is_empty(), "missing file: empty");
        save(&p, &[host("a"), host("b")]).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let dmode = std::fs::metadata(p.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(dmode & 0o777, 0o700);
        }
        let back = load(&p).unwrap();
        assert_eq!(back, vec![host("a"), host("b")]);
        assert_eq!(
            back[0].credentials.as_ref().unwrap().password.expose(),
            "hunter2-secret"
        );
        assert!(!format!("{back:?}").contains("hunter2"));
        save(&p, &[host("b")]).unwrap();
        assert_eq!(load(&p).unwrap().len(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn bad_files_are_refused_by_name_without_secrets() {
        use std::os::unix::fs::PermissionsExt;
        let d = upsvisor_testkit::TempDir::new("registry-bad");
        let p = d.path().join(FILE_NAME);
        save(&p, &[host("a")]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&p).unwrap_err();
        assert!(e.contains("chmod 600") && e.contains(FILE_NAME), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(
            &p,
            "{\"version\":1,\"hosts\":[{\"id\":\"a\",\"password\":\"hunter2-secret\"",
        )
        .unwrap();
        let e = load(&p).unwrap_err();
        assert!(e.contains(FILE_NAME) && e.contains("truncated"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        std::fs::write(&p, "{\"version\":1,\"hosts\":[{\"id\":\"a\",\"transport\":\"soap\",\"address\":\"x\",\"passwd\":\"hunter2-secret\"}]}").unwrap();
        let e = load(&p).unwrap_err();
        assert!(e.contains("unknown field `passwd`"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        std::fs::write(&p, "{\"version\":1,\"hosts\":[{\"id\":\"a\",\"transport\":\"soap\",\"address\":\"x\",\"password\":[\"hunter2-secret\"]}]}").unwrap();
        let e = load(&p).unwrap_err();
        assert!(e.contains("unexpected structure"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        std::fs::write(&p, "{\"version\":2,\"hosts\":[]}").unwrap();
        assert!(load(&p).unwrap_err().contains("version 2"));
    }

    /// A registration is checked as a `[[host]]` is, in the API and in
    /// the file; errors name the host and the key, never the password.
    #[test]
    fn registrations_are_checked_like_config_hosts() {
        let reg = |body: &str| serde_json::from_str::<Registration>(body).unwrap().check();
        let ok = reg(r#"{"id":"kvm9","address":"kvm9.lab","transport":"ssh-libvirt","host_key":"SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU","username":"root","password":"hunter2-secret"}"#).unwrap();
        assert_eq!(
            ok.host.transport,
            Transport::Ssh(upsvisor_ssh::Dialect::Libvirt)
        );
        assert_eq!(
            ok.host.host_key.as_deref(),
            Some("SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU")
        );
        assert_eq!(ok.credentials.as_ref().unwrap().username, "root");
        assert!(!format!("{ok:?}").contains("hunter2"));
        let (k, m) =
            reg(r#"{"id":"x","address":"x.lab","transport":"telnet","password":"hunter2-secret"}"#)
                .unwrap_err();
        assert_eq!(k, "host.transport");
        assert!(
            m.contains("unknown transport `telnet` (one of: ssh-esxi"),
            "{m}"
        );
        let (k, _) = reg(r#"{"id":"x","address":"","transport":"sim"}"#).unwrap_err();
        assert_eq!(k, "host.address");
        let (k, m) = reg(r#"{"id":"x","address":"x.lab","transport":"ssh-esxi","dangerous_allow_plain_http":true}"#).unwrap_err();
        assert_eq!(k, "host.dangerous_allow_plain_http", "{m}");
        let (_, m) =
            reg(r#"{"id":"vc","address":"http://u:hunter2-secret@vc.lab/sdk","transport":"soap"}"#)
                .unwrap_err();
        assert!(m.contains("plain http://") && !m.contains("hunter2"), "{m}");

        let d = upsvisor_testkit::TempDir::new("registry-check");
        let p = d.path().join(FILE_NAME);
        save(&p, &[host("a")]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("\"soap\"", "\"telnet\"")).unwrap();
        let e = load(&p).unwrap_err();
        assert!(
            e.contains(FILE_NAME)
                && e.contains("registered host `a`: host.transport: unknown transport `telnet`"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn corrupt_file_is_set_aside_loose_mode_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = upsvisor_testkit::TempDir::new("registry-aside");
        let p = d.path().join(FILE_NAME);
        assert!(load_or_set_aside(&p).unwrap().0.is_empty());
        std::fs::write(
            &p,
            "{\"version\":1,\"hosts\":[{\"id\":\"a\",\"password\":\"hunter2-secret\"",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (hosts, note) = load_or_set_aside(&p).unwrap();
        assert!(hosts.is_empty());
        let note = note.unwrap();
        assert!(
            note.contains("moved aside") && note.contains(".corrupt-"),
            "{note}"
        );
        assert!(!note.contains("hunter2"), "{note}");
        assert!(!p.exists());
        let kept: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("registered-hosts.json.corrupt-")
            })
            .collect();
        assert_eq!(kept.len(), 1);
        save(&p, &[host("a")]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_set_aside(&p).unwrap_err().contains("chmod 600"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let d = upsvisor_testkit::TempDir::new("registry-prop");
            let p = d.path().join(FILE_NAME);
            std::fs::write(&p, &bytes).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            let _ = load(&p);
        }
    }
}
