//! The daemon's configuration file: versioned TOML, parsed strictly.
//!
//! Every error names the file, the line and column (the TOML parser's, or
//! for a check after parsing, the line of the key it names), the key path
//! (`host[2].transport`) and, under a `[[host]]` or `[[device]]`, that
//! entry's id, so the message says where to fix it. Secrets never live in
//! this file: hosts and devices name an entry of a separate credentials
//! file (or point at `*_file` paths), and every file holding a secret must
//! not be readable by group or others.
//!
//! One module a concern: `[[host]]` and its [`Transport`] (also the type
//! of hosts registered through the API, [`crate::registry`]), `[[device]]`,
//! `[api]`/`[webhook]`, the engine sections, the credentials file, and the
//! trust checks of files read ([`check_secret_file`], which the TLS and
//! registry modules use too). This module imports neither of those two:
//! [`Config::api_tls`] lives in [`crate::tls`], [`Config::registry_path`]
//! in [`crate::registry`].
//!
//! ```
//! let cfg = upsvisord::config::Config::parse_str(
//!     "example.toml",
//!     r#"
//! version = 1
//! [[device]]
//! id = "ups1"
//! kind = "sim"
//! [[device.outlet]]
//! id = "main"
//! hosts = ["esx01"]
//! [[host]]
//! id = "esx01"
//! transport = "sim"
//! address = "esx01.lab"
//! "#,
//! )
//! .unwrap();
//! assert_eq!(cfg.hosts.len(), 1);
//! ```

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod api;
mod credentials;
mod device;
mod engine;
mod error;
mod files;
mod host;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use api::{ApiSection, WebhookSection, check_webhook_url};
pub use credentials::{CredentialEntry, CredentialsSection, Resolved, Vault};
pub use device::{DeviceKind, DeviceSection, OutletSection};
pub use engine::{GroupSection, PolicySection, PollerSection, SequencerSection};
pub use error::ConfigError;
pub use files::{check_owner_and_mode, check_secret_file, read_secret_file};
pub use host::{HostSection, TRANSPORTS, Transport, check_plain_http};

use error::parse_toml;

/// The only config version this daemon reads.
pub const VERSION: u32 = 1;
/// The shortest API bearer token accepted, bytes.
pub const MIN_TOKEN_BYTES: usize = 16;
/// The default HTTP listen address (loopback only).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8470";

/// The whole configuration, as read from the file (before credentials).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Must be [`VERSION`].
    pub version: u32,
    /// Whether the daemon acts. A config without `armed = true` is
    /// disarmed: it polls, reads power, plans and notifies, but sends no
    /// power command (an outage is audited with what an armed controller
    /// would do; operators' power commands are refused). `status`, `check`,
    /// the page and `/metrics` say so. See `SequencerConfig::armed`.
    #[serde(default)]
    pub armed: bool,
    /// HTTP API settings.
    #[serde(default)]
    pub api: ApiSection,
    /// Where the credentials come from.
    #[serde(default)]
    pub credentials: CredentialsSection,
    /// Where the sequencer journal lives (a restarted daemon resumes from it).
    #[serde(default)]
    pub journal: Option<PathBuf>,
    /// Poll timing.
    #[serde(default)]
    pub poller: PollerSection,
    /// Triggers.
    #[serde(default)]
    pub policy: PolicySection,
    /// Shutdown and restore settings.
    #[serde(default)]
    pub sequencer: SequencerSection,
    /// VM groups, in any order (their `order` sorts them).
    #[serde(default, rename = "group")]
    pub groups: Vec<GroupSection>,
    /// Power devices with their outlets.
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceSection>,
    /// Hypervisor hosts.
    #[serde(default, rename = "host")]
    pub hosts: Vec<HostSection>,
    /// Optional push of the table and events to a management terminal.
    #[serde(default)]
    pub webhook: Option<WebhookSection>,
    /// Serve the devices' readings to NUT clients (upsd protocol,
    /// read-only), with FSD when the plan commits to shutting down.
    #[serde(default)]
    pub nut_server: Option<crate::nut_server::NutServerSection>,
    /// Append-only JSON-lines audit log (every command and API write).
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// The daemon's state directory: hosts registered through the API are
    /// kept in `registered-hosts.json` there (mode 0600) and come back after
    /// a restart. Without it, registrations live in memory only.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// How much lasting history `state_dir` keeps ([`crate::history`]).
    #[serde(default)]
    pub history: crate::history::HistorySection,
    /// Notification targets ([`crate::notify`]).
    #[serde(default, rename = "notify")]
    pub notify: Vec<crate::notify::NotifySection>,
    /// Commands run at named points of an outage ([`crate::hooks`]).
    #[serde(default, rename = "hook")]
    pub hooks: Vec<crate::hooks::HookSection>,
    /// Where this config came from (set by the loader).
    #[serde(skip)]
    pub source: String,
}

impl Config {
    /// Reads and validates the file at `path` (credentials are not read yet:
    /// see [`Config::load_vault`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        check_owner_and_mode(path).map_err(|message| ConfigError {
            file: file.clone(),
            line_col: None,
            key: None,
            message,
        })?;
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line_col: None,
            key: None,
            message: format!("cannot read the config file: {e}"),
        })?;
        Self::parse_str(&file, &text)
    }

    /// What is valid but probably not what was meant: `(item, message)`
    /// rows that `check` shows as `WARN` and `run` logs at start.
    /// - `after` while `[sequencer] shutdown_hosts = false`: no host is
    ///   shut down, so the order orders nothing.
    /// - `after` naming a host no outlet of the same device feeds: an
    ///   episode takes down the hosts of one supply, so the order applies
    ///   only when outages of both supplies coincide.
    pub fn warnings(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let devices_of = |h: &str| -> Vec<&str> {
            self.devices
                .iter()
                .filter(|d| d.outlets.iter().any(|o| o.hosts.iter().any(|x| x == h)))
                .map(|d| d.id.as_str())
                .collect()
        };
        for h in self.hosts.iter().filter(|h| !h.after.is_empty()) {
            let item = format!("order {}", h.id);
            if !self.sequencer.shutdown_hosts {
                out.push((
                    item.clone(),
                    format!(
                        "WARNING: after = [{}] has no effect: [sequencer] shutdown_hosts = false shuts no host down",
                        h.after.join(", ")
                    ),
                ));
                continue;
            }
            let mine = devices_of(&h.id);
            for p in &h.after {
                let theirs = devices_of(p);
                if !mine.is_empty()
                    && !theirs.is_empty()
                    && !theirs.iter().any(|d| mine.contains(d))
                {
                    out.push((
                        item.clone(),
                        format!(
                            "WARNING: after `{p}`, which another supply feeds ({} vs {}): the order applies only when both lose power together",
                            theirs.join(", "),
                            mine.join(", ")
                        ),
                    ));
                }
            }
        }
        out
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn parse_str(file: &str, text: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = parse_toml(file, text).map_err(|e| e.locate(text))?;
        cfg.source = file.to_string();
        cfg.validate().map_err(|e| e.locate(text))?;
        // Paths in device sections are relative to this file, like the rest.
        let resolved: Vec<Option<PathBuf>> = cfg
            .devices
            .iter()
            .map(|d| d.nut_ca_file.as_ref().map(|p| cfg.resolve(p)))
            .collect();
        for (d, p) in cfg.devices.iter_mut().zip(resolved) {
            d.nut_ca_file = p;
        }
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let f = self.source.as_str();
        if self.version != VERSION {
            return Err(ConfigError::at(
                f,
                "version",
                format!(
                    "unsupported config version {} (this daemon reads version {VERSION})",
                    self.version
                ),
            ));
        }
        self.api
            .validate()
            .map_err(|(k, m)| ConfigError::at(f, k, m))?;
        if let Some(w) = &self.webhook {
            w.validate()
                .map_err(|(k, m)| ConfigError::at(f, format!("webhook.{k}"), m))?;
        }
        self.history
            .validate()
            .map_err(|(k, m)| ConfigError::at(f, format!("history.{k}"), m))?;
        crate::notify::validate(&self.notify).map_err(|(k, m)| ConfigError::at(f, k, m))?;
        if self.poller.period_s == 0
            || self.poller.on_battery_period_s == 0
            || self.poller.status_interval_s == 0
        {
            return Err(ConfigError::at(f, "poller", "periods must be at least 1 s"));
        }
        let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, h) in self.hosts.iter().enumerate() {
            let key = format!("host[{i}]");
            h.validate(&key)
                .map_err(|(k, m)| ConfigError::at(f, k, m))?;
            if let Some(first) = ids.insert(h.id.as_str(), i) {
                return Err(ConfigError::at(
                    f,
                    format!("{key}.id"),
                    format!("host id `{}` is used twice (first by host[{first}])", h.id),
                ));
            }
        }
        for (i, h) in self.hosts.iter().enumerate() {
            for (j, a) in h.after.iter().enumerate() {
                if !ids.contains_key(a.as_str()) {
                    return Err(ConfigError::at(
                        f,
                        format!("host[{i}].after[{j}]"),
                        format!("no [[host]] has id `{a}`"),
                    ));
                }
            }
        }
        // A cycle in `after` (the core's check), reported at the `after`
        // of the first host on it. Its other checks are made here, with
        // this file's keys.
        let cycle = match self.inventory().validate() {
            Err(upsvisor_core::Error::Config { path, detail }) if path == "hosts.after" => {
                Some(detail)
            }
            _ => None,
        };
        if let Some(detail) = cycle {
            let first = detail
                .rsplit_once(": ")
                .and_then(|(_, path)| path.split(" -> ").next())
                .and_then(|id| self.hosts.iter().position(|h| h.id == id));
            let key = first.map_or_else(|| "host".to_owned(), |i| format!("host[{i}].after"));
            return Err(ConfigError::at(f, key, detail));
        }
        let mut dev_ids = std::collections::BTreeSet::new();
        for (i, d) in self.devices.iter().enumerate() {
            let key = format!("device[{i}]");
            if d.id.is_empty() || !dev_ids.insert(d.id.as_str()) {
                return Err(ConfigError::at(
                    f,
                    format!("{key}.id"),
                    format!("device id `{}` is empty or used twice", d.id),
                ));
            }
            d.validate()
                .map_err(|(field, m)| ConfigError::at(f, format!("{key}.{field}"), m))?;
            for (j, o) in d.outlets.iter().enumerate() {
                for (k, h) in o.hosts.iter().enumerate() {
                    if !ids.contains_key(h.as_str()) {
                        return Err(ConfigError::at(
                            f,
                            format!("{key}.outlet[{j}].hosts[{k}]"),
                            format!("no [[host]] with id `{h}`"),
                        ));
                    }
                }
            }
        }
        if !matches!(
            self.sequencer.final_action.as_str(),
            "none" | "shutdown_return" | "shutdown_stay_off" | "outlets_off"
        ) {
            return Err(ConfigError::at(
                f,
                "sequencer.final_action",
                "one of: none, shutdown_return, shutdown_stay_off, outlets_off",
            ));
        }
        for (i, g) in self.groups.iter().enumerate() {
            if g.matches.is_empty() {
                return Err(ConfigError::at(
                    f,
                    format!("group[{i}].match"),
                    "give at least one VM name glob",
                ));
            }
        }
        crate::hooks::validate(self).map_err(|(k, m)| ConfigError::at(f, k, m))?;
        if let Some(n) = &self.nut_server {
            n.validate(&dev_ids)
                .map_err(|(k, m)| ConfigError::at(f, format!("nut_server.{k}"), m))?;
        }
        self.inventory()
            .validate()
            .map_err(|e| ConfigError::at(f, "host/device", e.to_string()))?;
        Ok(())
    }

    /// The directory lasting history is kept in (`state_dir`), if set.
    pub fn history_dir(&self) -> Option<PathBuf> {
        self.state_dir.as_ref().map(|d| self.resolve(d))
    }

    /// A path in the config, relative to the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            return p.to_path_buf();
        }
        Path::new(&self.source)
            .parent()
            .map_or_else(|| p.to_path_buf(), |d| d.join(p))
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests;
