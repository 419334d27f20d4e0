//! Notifications: tell people when mains fails, a shutdown starts, a host
//! is lost, or a delivery failed.
//!
//! `[[notify]]` targets, each with a severity filter (`min_severity`:
//! `info` < `warning` < `critical`, default `warning`):
//!
//! - `kind = "webhook"`: an HTTPS POST of JSON in one of four shapes
//!   (`format`): `generic` (upsvisor's own, below), `slack` (Slack's
//!   incoming-webhook `{"text": ...}`, also read by Mattermost and Rocket.Chat),
//!   `teams` (a Microsoft Teams message with an Adaptive Card attachment,
//!   as Teams workflows and incoming webhooks take it) and `ntfy` (ntfy's
//!   JSON publishing: the URL's last path segment is the topic, the
//!   message goes to the server's root with `topic`, `title`, `message`,
//!   `priority` 3/4/5 and `tags`);
//! - `kind = "email"`: SMTP (lettre) with STARTTLS (`tls = "starttls"`,
//!   port 587, the default) or implicit TLS (`tls = "implicit"`, 465), the
//!   user and password from the credentials file;
//! - `kind = "command"`: a local program (`command = [path, args..]`, no
//!   shell) run with NUT's `NOTIFYCMD` environment, `NOTIFYTYPE` and
//!   `UPSNAME`, plus `UPSVISOR_SEVERITY`, `UPSVISOR_TITLE`,
//!   `UPSVISOR_MESSAGE`, `UPSVISOR_AT`, `UPSVISOR_HOST` and
//!   `UPSVISOR_EVENT` (the event as JSON); the message is its last
//!   argument, as NUT passes it. Exit status 0 is success.
//!
//! TLS is verified (public roots, or `ca_file`); `http://` needs
//! `dangerous_allow_plain_http = true`, SMTP without TLS
//! `dangerous_plain_smtp = true`. A webhook URL often is a secret itself
//! (Slack and Teams put the token in the path): `url_credentials` names a
//! credentials entry whose `password` is the URL. Logs, errors and `Debug`
//! show a target by its `name` and `scheme://host:port` only.
//!
//! Delivery never blocks the engine: a dispatcher thread reads the event
//! stream and hands each target's messages to that target's own thread
//! through a bounded queue (`queue`, default 64; a full queue drops the
//! message, which is reported). Each message is tried `1 + retries` times
//! (default 3 retries), each attempt within `timeout_s` (default 10), with
//! 1, 2, 4 ... 30 s between attempts. A message that could not be
//! delivered is itself an event: an audit line `notify_failed` (history,
//! audit log, event stream), which the *other* targets are told about as
//! `NOTIFY_FAILED`; failing to deliver that one is only logged, so two dead
//! targets cannot feed each other.
//!
//! Event names (`NOTIFYTYPE`) follow NUT's where the meaning is NUT's
//! (`ONBATT`, `ONLINE`, `LOWBATT`, `FSD`, `COMMBAD`, `COMMOK`); upsvisor's
//! own are `TRIGGER`, `EPISODE_START`, `EPISODE_END`, `FORCED` (a host
//! shutdown, a power cut, or a step past a blocking hook), `COMMAND_FAILED`,
//! `HOOK_FAILED`, `HOST_UNREACHABLE`, `HOST_RECOVERED`, `CRITICAL`,
//! `NOTE`, `NOTIFY_FAILED` and `TEST`.
//!
//! The `generic` body:
//! `{"source": "upsvisor", "notifytype", "severity", "ups", "host",
//! "title", "message", "at", "event"}`.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::SmtpTransport;
use lettre::transport::smtp::authentication::Credentials as SmtpCredentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use upsvisor_core::Secret;

use crate::config::{Config, ConfigError, Vault};
use crate::runtime::Shared;

/// How serious an event is. Ordered: `Info` < `Warning` < `Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Severity {
    /// Worth a line: back on line, a host answers again, an episode ended.
    Info,
    /// Someone should look: on battery, a host lost, a command failed.
    Warning,
    /// Act now: low battery, FSD, a shutdown started or forced.
    Critical,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        })
    }
}

/// `[[notify]] kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum NotifyKind {
    /// HTTPS POST of JSON.
    Webhook,
    /// SMTP.
    Email,
    /// A local program.
    Command,
}

/// `[[notify]] format` of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Format {
    /// upsvisor's own JSON.
    #[default]
    Generic,
    /// Slack-compatible `{"text": ...}`.
    Slack,
    /// Microsoft Teams (Adaptive Card).
    Teams,
    /// ntfy JSON publishing.
    Ntfy,
}

/// `[[notify]] tls` of an e-mail target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SmtpTls {
    /// STARTTLS, required (RFC 3207); default port 587.
    #[default]
    Starttls,
    /// TLS from the first byte (RFC 8314); default port 465.
    Implicit,
}

/// One `[[notify]]` target as written in the config.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NotifySection {
    /// A unique name (logs, `notify --test`, `notify_failed` events).
    pub name: String,
    /// `webhook`, `email` or `command`.
    pub kind: NotifyKind,
    /// The least severity sent (default `warning`).
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    /// Seconds per delivery attempt (default 10, 1 to 300).
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// Attempts after the first (default 3, at most 10).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Messages waiting for this target at most (default 64).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Webhook: the URL (`https://`).
    #[serde(default)]
    pub url: Option<String>,
    /// Webhook: a credentials entry whose `password` is the URL (for URLs
    /// that carry a token, as Slack's and Teams' do).
    #[serde(default)]
    pub url_credentials: Option<String>,
    /// Webhook: the body's shape.
    #[serde(default)]
    pub format: Format,
    /// Webhook: a credentials entry whose `password` is sent as a bearer
    /// token. E-mail: see `credentials`.
    #[serde(default)]
    pub token: Option<String>,
    /// Webhook, e-mail: CA certificate(s), PEM, instead of the public
    /// roots; relative to the config file.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Webhook: allow `http://` (the message and any token in clear).
    #[serde(default)]
    pub dangerous_allow_plain_http: bool,
    /// E-mail: `host` or `host:port` of the SMTP server.
    #[serde(default)]
    pub server: Option<String>,
    /// E-mail: `starttls` (default) or `implicit`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// E-mail: the sender, `upsvisor <ups@example.org>`.
    #[serde(default)]
    pub from: Option<String>,
    /// E-mail: the recipients.
    #[serde(default)]
    pub to: Vec<String>,
    /// E-mail: a credentials entry (`username`, `password`) for SMTP AUTH.
    #[serde(default)]
    pub credentials: Option<String>,
    /// E-mail: no TLS at all (the message, and any password, in clear).
    #[serde(default)]
    pub dangerous_plain_smtp: bool,
    /// Command: the program (absolute path) and its first arguments.
    #[serde(default)]
    pub command: Vec<String>,
}

impl std::fmt::Debug for NotifySection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifySection")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("min_severity", &self.min_severity)
            .field("url", &self.url.as_deref().map(shown_url))
            .field("url_credentials", &self.url_credentials)
            .field("format", &self.format)
            .field("server", &self.server)
            .field("to", &self.to)
            .field("command", &self.command)
            .finish_non_exhaustive()
    }
}

fn default_min_severity() -> Severity {
    Severity::Warning
}
fn default_timeout_s() -> u64 {
    10
}
fn default_retries() -> u32 {
    3
}
fn default_queue() -> usize {
    64
}

impl NotifySection {
    /// The credentials entries this target names.
    pub fn credential_names(&self) -> impl Iterator<Item = &str> {
        [&self.url_credentials, &self.token, &self.credentials]
            .into_iter()
            .filter_map(|n| n.as_deref())
    }
}

/// `scheme://host[:port]` of a URL: all a log line may show of it (paths
/// and queries of chat webhooks hold tokens; userinfo is dropped).
pub fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".into();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}")
}

/// Checks every `[[notify]]`: `(key, message)` on error, the key as
/// `notify[i].field`.
pub fn validate(all: &[NotifySection]) -> Result<(), (String, String)> {
    let mut names = std::collections::BTreeSet::new();
    for (i, n) in all.iter().enumerate() {
        let at = |field: &str, m: String| (format!("notify[{i}].{field}"), m);
        if n.name.is_empty() || !names.insert(n.name.as_str()) {
            return Err(at("name", format!("`{}` is empty or used twice", n.name)));
        }
        if !(1..=300).contains(&n.timeout_s) {
            return Err(at("timeout_s", "must be 1 to 300".into()));
        }
        if n.retries > 10 {
            return Err(at("retries", "must be at most 10".into()));
        }
        if !(1..=10_000).contains(&n.queue) {
            return Err(at("queue", "must be 1 to 10000".into()));
        }
        let only = |field: &str, set: bool, kind: &str| -> Result<(), (String, String)> {
            if set {
                Err(at(field, format!("only for kind = \"{kind}\"")))
            } else {
                Ok(())
            }
        };
        let is_webhook = n.kind == NotifyKind::Webhook;
        let is_email = n.kind == NotifyKind::Email;
        for (field, set) in [
            ("url", n.url.is_some()),
            ("url_credentials", n.url_credentials.is_some()),
            ("format", n.format != Format::Generic),
            ("token", n.token.is_some()),
            ("dangerous_allow_plain_http", n.dangerous_allow_plain_http),
        ] {
            if !is_webhook {
                only(field, set, "webhook")?;
            }
        }
        for (field, set) in [
            ("server", n.server.is_some()),
            ("tls", n.tls != SmtpTls::Starttls),
            ("from", n.from.is_some()),
            ("to", !n.to.is_empty()),
            ("credentials", n.credentials.is_some()),
            ("dangerous_plain_smtp", n.dangerous_plain_smtp),
        ] {
            if !is_email {
                only(field, set, "email")?;
            }
        }
        if n.kind != NotifyKind::Command {
            only("command", !n.command.is_empty(), "command")?;
        }
        if n.kind == NotifyKind::Command && n.ca_file.is_some() {
            return Err(at("ca_file", "only for webhook and email".into()));
        }
        match n.kind {
            NotifyKind::Webhook => match (&n.url, &n.url_credentials) {
                (Some(_), Some(_)) => {
                    return Err(at(
                        "url",
                        "set either `url` or `url_credentials`, not both".into(),
                    ));
                }
                (None, None) => {
                    return Err(at(
                        "url",
                        "required (or `url_credentials`: a credentials entry whose password is the URL)"
                            .into(),
                    ));
                }
                (Some(u), None) => {
                    check_url(u, n).map_err(|m| at("url", m))?;
                }
                (None, Some(_)) => {}
            },
            NotifyKind::Email => {
                let server = n.server.as_deref().unwrap_or("");
                split_server(server, n.tls, n.dangerous_plain_smtp).map_err(|m| at("server", m))?;
                let from = n.from.as_deref().unwrap_or("");
                from.parse::<Mailbox>().map_err(|e| {
                    at(
                        "from",
                        format!("`{from}` is not an address ({e}); example: \"upsvisor <ups@example.org>\""),
                    )
                })?;
                if n.to.is_empty() {
                    return Err(at("to", "give at least one recipient".into()));
                }
                for (k, t) in n.to.iter().enumerate() {
                    t.parse::<Mailbox>()
                        .map_err(|e| at(&format!("to[{k}]"), format!("`{t}`: {e}")))?;
                }
                if n.dangerous_plain_smtp && n.ca_file.is_some() {
                    return Err(at(
                        "ca_file",
                        "set, but dangerous_plain_smtp turns TLS off".into(),
                    ));
                }
            }
            NotifyKind::Command => {
                let Some(prog) = n.command.first() else {
                    return Err(at(
                        "command",
                        "give the program and its arguments: [\"/usr/local/bin/page-oncall\", \"--ups\"]".into(),
                    ));
                };
                if !std::path::Path::new(prog).is_absolute() {
                    return Err(at(
                        "command",
                        format!(
                            "`{prog}`: give an absolute path (the daemon runs with no useful PATH)"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A webhook URL: https, or http with the dangerous flag; ntfy needs a
/// topic. The message never quotes more than [`shown_url`].
fn check_url(url: &str, n: &NotifySection) -> Result<(), String> {
    let shown = shown_url(url);
    if url.starts_with("http://") {
        if !n.dangerous_allow_plain_http {
            return Err(format!(
                "`{shown}...` is plain http://: the message and any token travel in clear; use https:// (ca_file for a private CA), or set dangerous_allow_plain_http = true"
            ));
        }
        if n.ca_file.is_some() {
            return Err("ca_file is only for an https:// url".into());
        }
    } else if !url.starts_with("https://") {
        return Err(format!("`{shown}` must start with https://"));
    }
    if crate::webhook::has_userinfo(url) {
        return Err(format!(
            "`{shown}`: no user:password@ in the URL; use `token` (a credentials entry)"
        ));
    }
    if n.format == Format::Ntfy && ntfy_split(url).is_none() {
        return Err(format!(
            "`{shown}/...`: an ntfy URL names the topic as its last path segment (https://ntfy.sh/mytopic)"
        ));
    }
    Ok(())
}

/// ntfy: (the server's root to POST to, the topic).
fn ntfy_split(url: &str) -> Option<(String, String)> {
    let (base, topic) = url.trim_end_matches('/').rsplit_once('/')?;
    if topic.is_empty() || base.ends_with('/') || !base.contains("://") {
        return None;
    }
    Some((format!("{base}/"), topic.to_string()))
}

/// `host[:port]` with the default port for the TLS mode.
fn split_server(s: &str, tls: SmtpTls, plain: bool) -> Result<(String, u16), String> {
    let default = match (plain, tls) {
        (true, _) => 25,
        (false, SmtpTls::Starttls) => 587,
        (false, SmtpTls::Implicit) => 465,
    };
    if s.is_empty() || s.contains("://") || s.contains('/') {
        return Err(format!(
            "`{s}`: give the SMTP server as host or host:port (smtp.example.org:587)"
        ));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.contains(':') => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .map(|p| (h.to_string(), p))
            .ok_or_else(|| format!("`{s}`: the port is not a number from 1 to 65535")),
        _ => Ok((s.trim_matches(['[', ']']).to_string(), default)),
    }
}

/// One message for the targets.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Notification {
    /// `ONBATT`, `TRIGGER`, ... (see the module docs).
    pub notifytype: String,
    /// How serious.
    pub severity: Severity,
    /// The power device, when the event is a device's.
    pub ups: Option<String>,
    /// The host, when the event is a host's.
    pub host: Option<String>,
    /// One line.
    pub title: String,
    /// The details.
    pub message: String,
    /// When (UTC, RFC 3339).
    pub at: String,
    /// The event it comes from, as published.
    pub event: Value,
    /// A `notify_failed` about this target: not sent back to it.
    #[serde(skip)]
    pub about_target: Option<String>,
}

impl Notification {
    fn new(notifytype: &str, severity: Severity, title: String, ev: &Value) -> Notification {
        Notification {
            notifytype: notifytype.into(),
            severity,
            ups: None,
            host: None,
            message: title.clone(),
            title,
            at: ev
                .get("at")
                .and_then(Value::as_str)
                .map_or_else(crate::history::at_now, str::to_string),
            event: ev.clone(),
            about_target: None,
        }
    }

    /// The message `notify --test` sends.
    pub fn test() -> Notification {
        let mut n = Notification::new(
            "TEST",
            Severity::Info,
            "upsvisor test notification".into(),
            &json!({"type": "test"}),
        );
        n.message =
            "This is a test message from `upsvisord notify --test`: this target works.".into();
        n
    }
}

/// Turns the event stream into notifications. Power verdicts are
/// published on change; the classifier keeps each device's last one to
/// say what changed.
#[derive(Debug, Default)]
pub struct Classifier {
    prev: BTreeMap<String, Value>,
}

fn flag(v: Option<&Value>, ptr: &str) -> bool {
    v.and_then(|v| v.pointer(ptr))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn lost_contact(v: Option<&Value>) -> bool {
    v.and_then(|v| v.get("alerts"))
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .any(|x| x.get("alert").and_then(Value::as_str) == Some("lost_contact"))
        })
}

fn reading(v: &Value) -> String {
    let charge = v
        .pointer("/last/charge_pct")
        .and_then(Value::as_f64)
        .map_or("?".into(), |c| format!("{c:.0}%"));
    let runtime = v
        .pointer("/last/runtime_s")
        .and_then(Value::as_u64)
        .map_or("?".into(), |r| format!("{r} s"));
    format!("charge {charge}, runtime {runtime}")
}

fn text_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

fn trig(v: Option<&Value>) -> Option<&Value> {
    v.and_then(|v| v.get("trigger")).filter(|t| !t.is_null())
}

impl Classifier {
    /// The notifications `ev` (one line of the event stream) gives.
    pub fn classify(&mut self, ev: &Value) -> Vec<Notification> {
        let kind = ev.get("type").and_then(Value::as_str).unwrap_or("");
        let mut out = Vec::new();
        match kind {
            "power" => {
                let dev = text_of(ev.get("device"));
                let Some(now) = ev.get("verdict") else {
                    return out;
                };
                let prev = self.prev.insert(dev.clone(), now.clone());
                let prev = prev.as_ref();
                let mut push = |t: &str, sev: Severity, what: String| {
                    let mut n = Notification::new(t, sev, format!("{t} {dev}: {what}"), ev);
                    n.ups = Some(dev.clone());
                    n.message = format!("UPS {dev}: {what} ({}).", reading(now));
                    out.push(n);
                };
                let (was, is) = (flag(prev, "/on_battery"), flag(Some(now), "/on_battery"));
                if is && !was {
                    push("ONBATT", Severity::Warning, "on battery".into());
                } else if was && !is {
                    push("ONLINE", Severity::Info, "back on line power".into());
                }
                if flag(Some(now), "/last/low_battery") && !flag(prev, "/last/low_battery") {
                    push("LOWBATT", Severity::Critical, "low battery".into());
                }
                if flag(Some(now), "/last/fsd") && !flag(prev, "/last/fsd") {
                    push("FSD", Severity::Critical, "forced shutdown (FSD)".into());
                }
                if let (Some(t), None) = (trig(Some(now)), trig(prev)) {
                    push(
                        "TRIGGER",
                        Severity::Critical,
                        format!("shutdown trigger fired: {}", text_of(t.get("trigger"))),
                    );
                }
                match (lost_contact(prev), lost_contact(Some(now))) {
                    (false, true) => push("COMMBAD", Severity::Warning, "no contact".into()),
                    (true, false) => push("COMMOK", Severity::Info, "contact again".into()),
                    _ => {}
                }
            }
            "audit" => {
                let what = ev.get("what");
                let a = what
                    .and_then(|w| w.get("audit"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let w = |k: &str| text_of(what.and_then(|w| w.get(k)));
                let episode = ev.get("episode").and_then(Value::as_u64).unwrap_or(0);
                let mut n = match a {
                    "episode_started" => {
                        let full = what
                            .and_then(|w| w.get("full"))
                            .and_then(Value::as_bool)
                            .unwrap_or(true);
                        let scope = what
                            .and_then(|w| w.get("scope"))
                            .and_then(Value::as_array)
                            .map_or(0, Vec::len);
                        let (sev, how) = if full {
                            (Severity::Critical, "shutdown")
                        } else {
                            (Severity::Warning, "load shedding")
                        };
                        let mut n = Notification::new(
                            "EPISODE_START",
                            sev,
                            format!("EPISODE_START #{episode}: {how} of {scope} hosts"),
                            ev,
                        );
                        n.message = format!(
                            "Episode {episode} started ({how}, {scope} hosts in scope): {}",
                            w("reason")
                        );
                        n
                    }
                    "episode_ended" => Notification::new(
                        "EPISODE_END",
                        Severity::Info,
                        format!("EPISODE_END #{episode}: {}", w("outcome")),
                        ev,
                    ),
                    "forced_host_shutdown" | "forced_power_cut" => {
                        let mut n = Notification::new(
                            "FORCED",
                            Severity::Critical,
                            format!(
                                "FORCED {} on {}: {}",
                                a.replace('_', " "),
                                w("host"),
                                w("reason")
                            ),
                            ev,
                        );
                        n.host = Some(w("host"));
                        n
                    }
                    "forced_past_hook" => Notification::new(
                        "FORCED",
                        Severity::Critical,
                        format!("FORCED past hook {}: {}", w("hook"), w("reason")),
                        ev,
                    ),
                    "hook_finished"
                        if what
                            .and_then(|w| w.get("error"))
                            .is_some_and(|e| !e.is_null()) =>
                    {
                        Notification::new(
                            "HOOK_FAILED",
                            Severity::Warning,
                            format!("HOOK_FAILED {}: {}", w("hook"), w("error")),
                            ev,
                        )
                    }
                    "completed"
                        if what
                            .and_then(|w| w.get("error"))
                            .is_some_and(|e| !e.is_null()) =>
                    {
                        let cmd = what.and_then(|w| w.get("cmd"));
                        let target = text_of(cmd.and_then(|c| {
                            c.get("vm_name")
                                .or_else(|| c.get("host"))
                                .or_else(|| c.get("device"))
                        }));
                        let mut n = Notification::new(
                            "COMMAND_FAILED",
                            Severity::Warning,
                            format!("COMMAND_FAILED {target}: {}", w("error")),
                            ev,
                        );
                        n.message = format!("Command {} failed: {}", text_of(cmd), w("error"));
                        n
                    }
                    "note" => Notification::new(
                        "NOTE",
                        Severity::Info,
                        format!("NOTE: {}", w("text")),
                        ev,
                    ),
                    "notify_failed" => {
                        let mut n = Notification::new(
                            "NOTIFY_FAILED",
                            Severity::Warning,
                            format!(
                                "NOTIFY_FAILED {}: {} not delivered",
                                w("target"),
                                w("notifytype")
                            ),
                            ev,
                        );
                        n.message = format!(
                            "Notification target `{}` could not deliver {} after {} attempts: {}",
                            w("target"),
                            w("notifytype"),
                            w("attempts"),
                            w("error")
                        );
                        n.about_target = Some(w("target"));
                        n
                    }
                    _ => return out,
                };
                if n.host.is_none() {
                    n.host = what
                        .and_then(|w| w.get("host"))
                        .and_then(Value::as_str)
                        .map(str::to_string);
                }
                out.push(n);
            }
            "critical" => {
                let mut n = Notification::new(
                    "CRITICAL",
                    Severity::Critical,
                    format!("CRITICAL: {}", text_of(ev.get("what"))),
                    ev,
                );
                n.message = text_of(ev.get("what"));
                out.push(n);
            }
            "change" => {
                let e = ev.get("event");
                let host = text_of(e.and_then(|e| e.get("host")));
                let (t, sev, what) = match e.and_then(|e| e.get("event")).and_then(Value::as_str) {
                    Some("host_unreachable") => (
                        "HOST_UNREACHABLE",
                        Severity::Warning,
                        format!(
                            "does not answer: {}",
                            text_of(e.and_then(|e| e.get("error")))
                        ),
                    ),
                    Some("host_recovered") => {
                        ("HOST_RECOVERED", Severity::Info, "answers again".into())
                    }
                    _ => return out,
                };
                let mut n = Notification::new(t, sev, format!("{t} {host}: {what}"), ev);
                n.host = Some(host);
                out.push(n);
            }
            _ => {}
        }
        out
    }
}

/// Where a target delivers.
enum Sink {
    Webhook {
        /// The full URL (may hold a token).
        url: Secret,
        format: Format,
        token: Option<Secret>,
        agent: ureq::Agent,
    },
    Email {
        mailer: SmtpTransport,
        from: Mailbox,
        to: Vec<Mailbox>,
    },
    Command {
        argv: Vec<String>,
    },
}

/// A built target: where, what severity, how hard to try.
pub struct Target {
    name: String,
    min: Severity,
    timeout: Duration,
    retries: u32,
    queue: usize,
    /// What logs may show: `webhook https://hooks.example:443 (slack)`.
    shown: String,
    sink: Sink,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("min_severity", &self.min)
            .field("to", &self.shown)
            .finish_non_exhaustive()
    }
}

fn cfg_err(cfg: &Config, key: String, message: String) -> ConfigError {
    ConfigError {
        file: cfg.source.clone(),
        line_col: None,
        key: Some(key),
        message,
    }
}

/// Builds every `[[notify]]` target of `cfg` with its secrets from
/// `vault`. Errors: a CA file that cannot be read or holds no
/// certificate, a credentials entry that is missing.
pub fn targets(cfg: &Config, vault: &Vault) -> Result<Vec<Target>, ConfigError> {
    let mut out = Vec::new();
    for (i, n) in cfg.notify.iter().enumerate() {
        let key = |f: &str| format!("notify[{i}].{f}");
        let secret = |field: &str, name: &Option<String>| -> Result<Option<Secret>, ConfigError> {
            match name {
                None => Ok(None),
                Some(e) => vault
                    .get(e)
                    .map(|r| Some(r.creds.password.clone()))
                    .ok_or_else(|| {
                        cfg_err(
                            cfg,
                            key(field),
                            format!("credentials entry `{e}` is missing"),
                        )
                    }),
            }
        };
        let ca = match &n.ca_file {
            Some(p) => {
                let p = cfg.resolve(p);
                Some(std::fs::read(&p).map_err(|e| {
                    cfg_err(
                        cfg,
                        key("ca_file"),
                        format!("cannot read {}: {e}", p.display()),
                    )
                })?)
            }
            None => None,
        };
        let timeout = Duration::from_secs(n.timeout_s);
        let (sink, shown) = match n.kind {
            NotifyKind::Webhook => {
                let url = match (&n.url, secret("url_credentials", &n.url_credentials)?) {
                    (Some(u), _) => Secret::new(u.clone()),
                    (None, Some(u)) => {
                        check_url(u.expose(), n).map_err(|m| {
                            cfg_err(
                                cfg,
                                key("url_credentials"),
                                format!("the URL in the credentials entry: {m}"),
                            )
                        })?;
                        u
                    }
                    (None, None) => return Err(cfg_err(cfg, key("url"), "required".into())),
                };
                let agent =
                    agent(ca.as_deref(), timeout).map_err(|m| cfg_err(cfg, key("ca_file"), m))?;
                let shown =
                    format!("webhook {} ({:?})", shown_url(url.expose()), n.format).to_lowercase();
                (
                    Sink::Webhook {
                        url,
                        format: n.format,
                        token: secret("token", &n.token)?,
                        agent,
                    },
                    shown,
                )
            }
            NotifyKind::Email => {
                let (host, port) = split_server(
                    n.server.as_deref().unwrap_or(""),
                    n.tls,
                    n.dangerous_plain_smtp,
                )
                .map_err(|m| cfg_err(cfg, key("server"), m))?;
                let tls = if n.dangerous_plain_smtp {
                    Tls::None
                } else {
                    let mut b = TlsParameters::builder(host.clone());
                    if let Some(pem) = &ca {
                        let c = Certificate::from_pem(pem).map_err(|e| {
                            cfg_err(cfg, key("ca_file"), format!("not a PEM certificate: {e}"))
                        })?;
                        b = b.add_root_certificate(c);
                    }
                    let p = b
                        .build_rustls()
                        .map_err(|e| cfg_err(cfg, key("ca_file"), format!("TLS setup: {e}")))?;
                    match n.tls {
                        SmtpTls::Starttls => Tls::Required(p),
                        SmtpTls::Implicit => Tls::Wrapper(p),
                    }
                };
                let mut b = SmtpTransport::builder_dangerous(host.as_str())
                    .port(port)
                    .tls(tls)
                    .timeout(Some(timeout));
                if let Some(c) = &n.credentials {
                    let r = vault.get(c).ok_or_else(|| {
                        cfg_err(
                            cfg,
                            key("credentials"),
                            format!("credentials entry `{c}` is missing"),
                        )
                    })?;
                    b = b.credentials(SmtpCredentials::new(
                        r.creds.username.clone(),
                        r.creds.password.expose().to_string(),
                    ));
                }
                let parse = |s: &str, f: &str| {
                    s.parse::<Mailbox>()
                        .map_err(|e| cfg_err(cfg, key(f), format!("`{s}`: {e}")))
                };
                let from = parse(n.from.as_deref().unwrap_or(""), "from")?;
                let to =
                    n.to.iter()
                        .map(|t| parse(t, "to"))
                        .collect::<Result<Vec<_>, _>>()?;
                let how = match (n.dangerous_plain_smtp, n.tls) {
                    (true, _) => "plain",
                    (false, SmtpTls::Starttls) => "starttls",
                    (false, SmtpTls::Implicit) => "tls",
                };
                let shown = format!("email smtp://{host}:{port} ({how}) to {}", n.to.join(", "));
                (
                    Sink::Email {
                        mailer: b.build(),
                        from,
                        to,
                    },
                    shown,
                )
            }
            NotifyKind::Command => (
                Sink::Command {
                    argv: n.command.clone(),
                },
                format!("command {}", n.command.first().map_or("", String::as_str)),
            ),
        };
        out.push(Target {
            name: n.name.clone(),
            min: n.min_severity,
            timeout,
            retries: n.retries,
            queue: n.queue,
            shown,
            sink,
        });
    }
    Ok(out)
}

/// A ureq agent with rustls: the public roots, or only the CA
/// certificates in `ca_pem`.
fn agent(ca_pem: Option<&[u8]>, timeout: Duration) -> Result<ureq::Agent, String> {
    let mut b = ureq::AgentBuilder::new().timeout(timeout).redirects(0);
    if let Some(pem) = ca_pem {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(pem) {
            let c = c.map_err(|e| format!("not PEM ({e})"))?;
            roots.add(c).map_err(|e| e.to_string())?;
        }
        if roots.is_empty() {
            return Err("no CERTIFICATE block in it".into());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        b = b.tls_config(Arc::new(cfg));
    }
    Ok(b.build())
}

/// The JSON body of a webhook in `format`.
pub fn body(format: Format, n: &Notification, ntfy_topic: &str) -> Value {
    match format {
        Format::Generic => json!({
            "source": "upsvisor",
            "notifytype": n.notifytype,
            "severity": n.severity,
            "ups": n.ups,
            "host": n.host,
            "title": n.title,
            "message": n.message,
            "at": n.at,
            "event": n.event,
        }),
        Format::Slack => json!({
            "text": format!("*[{}] {}*\n{}\n_{}_", n.severity.to_string().to_uppercase(), n.title, n.message, n.at),
        }),
        Format::Teams => json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {
                            "type": "TextBlock",
                            "size": "Medium",
                            "weight": "Bolder",
                            "wrap": true,
                            "color": match n.severity {
                                Severity::Critical => "Attention",
                                Severity::Warning => "Warning",
                                Severity::Info => "Default",
                            },
                            "text": n.title,
                        },
                        {"type": "TextBlock", "wrap": true, "text": n.message},
                        {"type": "TextBlock", "isSubtle": true, "size": "Small", "text": format!("upsvisor · {} · {}", n.notifytype, n.at)},
                    ],
                },
            }],
        }),
        Format::Ntfy => json!({
            "topic": ntfy_topic,
            "title": n.title,
            "message": n.message,
            "priority": match n.severity {
                Severity::Critical => 5,
                Severity::Warning => 4,
                Severity::Info => 3,
            },
            "tags": [n.severity.to_string(), n.notifytype.to_lowercase()],
        }),
    }
}

impl Target {
    /// The target's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it is, without secrets: `email smtp://host:587 (starttls) to ...`.
    pub fn describe(&self) -> String {
        format!(
            "{}; {} and above; {} retries",
            self.shown, self.min, self.retries
        )
    }

    /// Whether `n` is for this target.
    pub fn wants(&self, n: &Notification) -> bool {
        n.severity >= self.min && n.about_target.as_deref() != Some(self.name.as_str())
    }

    /// One delivery attempt, within the target's timeout. Errors name the
    /// target as [`Target::describe`] shows it, never a secret.
    pub fn deliver(&self, n: &Notification) -> Result<(), String> {
        match &self.sink {
            Sink::Webhook {
                url,
                format,
                token,
                agent,
            } => {
                let (post_to, topic) = match format {
                    Format::Ntfy => ntfy_split(url.expose())
                        .unwrap_or_else(|| (url.expose().to_string(), String::new())),
                    _ => (url.expose().to_string(), String::new()),
                };
                let mut req = agent.post(&post_to).set("Content-Type", "application/json");
                if let Some(t) = token {
                    req = req.set("Authorization", &format!("Bearer {}", t.expose()));
                }
                match req.send_string(&body(*format, n, &topic).to_string()) {
                    Ok(_) => Ok(()),
                    Err(ureq::Error::Status(code, r)) => Err(format!(
                        "{}: HTTP {code} {}",
                        shown_url(url.expose()),
                        r.status_text()
                    )),
                    Err(ureq::Error::Transport(t)) => {
                        // The transport error's Display quotes the URL; build it without.
                        let mut m = format!("{}: {}", shown_url(url.expose()), t.kind());
                        if let Some(msg) = t.message() {
                            m.push_str(&format!(": {msg}"));
                        }
                        if let Some(src) = std::error::Error::source(&t) {
                            m.push_str(&format!(": {src}"));
                        }
                        Err(m.replace(url.expose(), &shown_url(url.expose())))
                    }
                }
            }
            Sink::Email { mailer, from, to } => {
                let mut b = lettre::Message::builder()
                    .from(from.clone())
                    .subject(format!("[upsvisor] {}", n.title))
                    .header(ContentType::TEXT_PLAIN);
                for t in to {
                    b = b.to(t.clone());
                }
                let text = format!(
                    "{}\n\nType: {}\nSeverity: {}\nUPS: {}\nHost: {}\nAt: {}\n\nEvent:\n{}\n",
                    n.message,
                    n.notifytype,
                    n.severity,
                    n.ups.as_deref().unwrap_or("-"),
                    n.host.as_deref().unwrap_or("-"),
                    n.at,
                    serde_json::to_string_pretty(&n.event).unwrap_or_default()
                );
                let m = b.body(text).map_err(|e| format!("e-mail: {e}"))?;
                use lettre::Transport as _;
                mailer
                    .send(&m)
                    .map(|_| ())
                    .map_err(|e| format!("{}: {e}", self.shown))
            }
            Sink::Command { argv } => run_command(argv, n, self.timeout),
        }
    }
}

fn run_command(argv: &[String], n: &Notification, timeout: Duration) -> Result<(), String> {
    let Some((prog, args)) = argv.split_first() else {
        return Err("command: empty".into());
    };
    let mut child = std::process::Command::new(prog)
        .args(args)
        .arg(&n.message)
        .env("NOTIFYTYPE", &n.notifytype)
        .env("UPSNAME", n.ups.as_deref().unwrap_or(""))
        .env("UPSVISOR_SEVERITY", n.severity.to_string())
        .env("UPSVISOR_TITLE", &n.title)
        .env("UPSVISOR_MESSAGE", &n.message)
        .env("UPSVISOR_AT", &n.at)
        .env("UPSVISOR_HOST", n.host.as_deref().unwrap_or(""))
        .env("UPSVISOR_EVENT", n.event.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("{prog}: cannot start: {e}"))?;
    let t0 = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(format!("{prog}: {st}")),
            Ok(None) if t0.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{prog}: still running after {} s: killed",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("{prog}: {e}")),
        }
    }
}

/// The pause before attempt `k` (1-based retry number): 1, 2, 4 ... 30 s.
pub fn backoff(k: u32) -> Duration {
    Duration::from_secs((1u64 << k.saturating_sub(1).min(5)).min(30))
}

/// Starts the dispatcher and one thread per target; they live as long as
/// the process. Errors: a thread could not start.
pub fn start(shared: Arc<Shared>, targets: Vec<Target>) -> Result<(), String> {
    if targets.is_empty() {
        return Ok(());
    }
    let mut queues: Vec<(Arc<Target>, SyncSender<Notification>)> = Vec::new();
    for t in targets {
        let t = Arc::new(t);
        let (tx, rx) = std::sync::mpsc::sync_channel(t.queue);
        let (sh, tt) = (shared.clone(), t.clone());
        std::thread::Builder::new()
            .name(format!("upsvisor-notify-{}", t.name))
            .spawn(move || worker(&sh, &tt, &rx))
            .map_err(|e| e.to_string())?;
        tracing::info!(target = %t.name, to = %t.describe(), "notification target ready");
        queues.push((t, tx));
    }
    let mut rx = shared.subscribe();
    let sh = shared;
    std::thread::Builder::new()
        .name("upsvisor-notify".into())
        .spawn(move || {
            let mut c = Classifier::default();
            loop {
                let v = match rx.blocking_recv() {
                    Ok(v) => v,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "notify: fell behind the event stream; {n} events not classified"
                        );
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                for n in c.classify(&v) {
                    for (t, tx) in &queues {
                        if !t.wants(&n) {
                            continue;
                        }
                        match tx.try_send(n.clone()) {
                            Ok(()) => {}
                            Err(TrySendError::Full(n)) => {
                                failed(
                                    &sh,
                                    t,
                                    &n,
                                    0,
                                    &format!("queue full ({} waiting): dropped", t.queue),
                                );
                            }
                            Err(TrySendError::Disconnected(_)) => {}
                        }
                    }
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// A message given up on: an event, unless it was itself about a failure.
fn failed(shared: &Shared, t: &Target, n: &Notification, attempts: u32, error: &str) {
    tracing::warn!(target = %t.name, notifytype = %n.notifytype, attempts, %error, "notification not delivered");
    if n.notifytype == "NOTIFY_FAILED" {
        return;
    }
    shared.record(json!({
        "type": "audit",
        "at_ms": shared.snapshot().now_ms,
        "episode": 0,
        "what": {
            "audit": "notify_failed",
            "target": t.name,
            "notifytype": n.notifytype,
            "attempts": attempts,
            "error": error,
        },
    }));
}

fn worker(shared: &Shared, t: &Target, rx: &Receiver<Notification>) {
    while let Ok(n) = rx.recv() {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match t.deliver(&n) {
                Ok(()) => {
                    tracing::info!(target = %t.name, notifytype = %n.notifytype, attempt, "notification delivered");
                    break;
                }
                Err(e) if attempt > t.retries => {
                    failed(shared, t, &n, attempt, &e);
                    break;
                }
                Err(e) => {
                    tracing::info!(target = %t.name, attempt, error = %e, "notification attempt failed; retrying");
                    std::thread::sleep(backoff(attempt));
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn power(dev: &str, on_battery: bool, lb: bool, trigger: Value, alerts: Value) -> Value {
        json!({"type": "power", "at": "2026-11-29T10:00:00.000Z", "device": dev, "verdict": {
            "on_battery": on_battery, "trigger": trigger, "mains_stable": !on_battery, "alerts": alerts,
            "last": {"source": if on_battery {"battery"} else {"line"}, "low_battery": lb, "fsd": false, "charge_pct": 80.0, "runtime_s": 1200},
        }})
    }

    fn types(ns: &[Notification]) -> Vec<(&str, Severity)> {
        ns.iter()
            .map(|n| (n.notifytype.as_str(), n.severity))
            .collect()
    }

    #[test]
    fn power_changes_become_nut_named_notifications() {
        let mut c = Classifier::default();
        assert!(
            c.classify(&power("ups1", false, false, Value::Null, json!([])))
                .is_empty()
        );
        let n = c.classify(&power("ups1", true, false, Value::Null, json!([])));
        assert_eq!(types(&n), [("ONBATT", Severity::Warning)]);
        assert_eq!(n[0].ups.as_deref(), Some("ups1"));
        assert!(
            n[0].message.contains("charge 80%, runtime 1200 s"),
            "{}",
            n[0].message
        );
        // Another device's change does not disturb ups1's state.
        assert_eq!(
            types(&c.classify(&power("ups2", true, false, Value::Null, json!([])))),
            [("ONBATT", Severity::Warning)]
        );
        let n = c.classify(&power(
            "ups1",
            true,
            true,
            json!({"trigger": "low_battery"}),
            json!([]),
        ));
        assert_eq!(
            types(&n),
            [
                ("LOWBATT", Severity::Critical),
                ("TRIGGER", Severity::Critical)
            ]
        );
        assert!(n[1].title.contains("low_battery"), "{}", n[1].title);
        // The same verdict again says nothing new.
        assert!(
            c.classify(&power(
                "ups1",
                true,
                true,
                json!({"trigger": "low_battery"}),
                json!([])
            ))
            .is_empty()
        );
        let n = c.classify(&power(
            "ups1",
            false,
            false,
            Value::Null,
            json!([{"alert": "lost_contact", "silent_s": 30}]),
        ));
        assert_eq!(
            types(&n),
            [("ONLINE", Severity::Info), ("COMMBAD", Severity::Warning)]
        );
        let n = c.classify(&power("ups1", false, false, Value::Null, json!([])));
        assert_eq!(types(&n), [("COMMOK", Severity::Info)]);
    }

    #[test]
    fn audit_change_and_critical_lines_are_classified() {
        let mut c = Classifier::default();
        let ev = json!({"type": "audit", "episode": 3, "what": {"audit": "episode_started", "reason": "on battery for 300 s", "scope": ["a", "b"], "full": true}});
        let n = c.classify(&ev);
        assert_eq!(types(&n), [("EPISODE_START", Severity::Critical)]);
        assert!(n[0].message.contains("on battery for 300 s"));
        let ev = json!({"type": "audit", "episode": 3, "what": {"audit": "forced_power_cut", "host": "esx01", "reason": "still answers"}});
        let n = c.classify(&ev);
        assert_eq!(
            (n[0].notifytype.as_str(), n[0].host.as_deref()),
            ("FORCED", Some("esx01"))
        );
        let ok = json!({"type": "audit", "what": {"audit": "completed", "id": 1, "cmd": {}, "error": null}});
        assert!(c.classify(&ok).is_empty());
        let bad = json!({"type": "audit", "what": {"audit": "completed", "id": 1, "cmd": {"host": "esx01"}, "error": "timeout"}});
        assert_eq!(
            types(&c.classify(&bad)),
            [("COMMAND_FAILED", Severity::Warning)]
        );
        let issued = json!({"type": "audit", "what": {"audit": "issued", "id": 1}});
        assert!(c.classify(&issued).is_empty());
        let hook_ok = json!({"type": "audit", "what": {"audit": "hook_finished", "id": 2, "hook": "flush", "error": null}});
        assert!(c.classify(&hook_ok).is_empty());
        let hook_bad = json!({"type": "audit", "what": {"audit": "hook_finished", "id": 2, "hook": "flush", "error": "exit status: 1"}});
        assert_eq!(
            types(&c.classify(&hook_bad)),
            [("HOOK_FAILED", Severity::Warning)]
        );
        let past = json!({"type": "audit", "what": {"audit": "forced_past_hook", "hook": "flush", "reason": "forced deadline reached"}});
        assert_eq!(types(&c.classify(&past)), [("FORCED", Severity::Critical)]);
        let ch = json!({"type": "change", "event": {"event": "host_unreachable", "host": "esx02", "kind": "timeout", "error": "no answer"}});
        let n = c.classify(&ch);
        assert_eq!(types(&n), [("HOST_UNREACHABLE", Severity::Warning)]);
        assert_eq!(n[0].host.as_deref(), Some("esx02"));
        let vm = json!({"type": "change", "event": {"event": "vm_power_changed"}});
        assert!(c.classify(&vm).is_empty());
        assert!(c.classify(&json!({"type": "table", "cycle": 4})).is_empty());
        let crit = json!({"type": "critical", "what": "journal set aside"});
        assert_eq!(
            types(&c.classify(&crit)),
            [("CRITICAL", Severity::Critical)]
        );
        // Garbage is nothing, not a panic.
        for g in [
            json!(null),
            json!([1, 2]),
            json!({"type": "power"}),
            json!({"type": "audit", "what": 7}),
        ] {
            assert!(c.classify(&g).is_empty());
        }
    }

    #[test]
    fn a_failed_delivery_is_not_sent_back_to_its_target() {
        let mut c = Classifier::default();
        let ev = json!({"type": "audit", "what": {"audit": "notify_failed", "target": "mail", "notifytype": "ONBATT", "attempts": 4, "error": "refused"}});
        let n = c.classify(&ev).pop().unwrap();
        assert_eq!(n.notifytype, "NOTIFY_FAILED");
        let t = |name: &str| Target {
            name: name.into(),
            min: Severity::Info,
            timeout: Duration::from_secs(1),
            retries: 0,
            queue: 1,
            shown: String::new(),
            sink: Sink::Command {
                argv: vec!["/bin/true".into()],
            },
        };
        assert!(!t("mail").wants(&n));
        assert!(t("chat").wants(&n));
        let mut hi = t("pager");
        hi.min = Severity::Critical;
        assert!(!hi.wants(&n));
    }

    #[test]
    fn templates_have_each_services_shape() {
        let mut n = Notification::test();
        n.severity = Severity::Critical;
        let g = body(Format::Generic, &n, "");
        assert_eq!(
            (g["source"].as_str(), g["severity"].as_str()),
            (Some("upsvisor"), Some("critical"))
        );
        assert!(
            body(Format::Slack, &n, "")["text"]
                .as_str()
                .unwrap()
                .contains("[CRITICAL]")
        );
        let t = body(Format::Teams, &n, "");
        assert_eq!(t["attachments"][0]["content"]["type"], "AdaptiveCard");
        let f = body(Format::Ntfy, &n, "ups-alerts");
        assert_eq!(
            (f["topic"].as_str(), f["priority"].as_u64()),
            (Some("ups-alerts"), Some(5))
        );
        assert_eq!(
            ntfy_split("https://ntfy.example/sub/ups-alerts"),
            Some(("https://ntfy.example/sub/".into(), "ups-alerts".into()))
        );
        assert_eq!(ntfy_split("https://ntfy.example/"), None);
    }

    #[test]
    fn urls_and_servers_are_checked_and_never_shown_whole() {
        let sec = |extra: &str| -> Result<(), (String, String)> {
            let text = format!("name = \"a\"\n{extra}");
            let s: NotifySection = toml::from_str(&text).unwrap();
            validate(&[s])
        };
        assert!(sec("kind = \"webhook\"\nurl = \"https://hooks.example/T0/B0/s3cret\"").is_ok());
        let e = sec("kind = \"webhook\"\nurl = \"http://hooks.example/T0/B0/s3cret\"").unwrap_err();
        assert!(
            e.1.contains("dangerous_allow_plain_http") && !e.1.contains("s3cret"),
            "{e:?}"
        );
        assert!(
            sec("kind = \"webhook\"\nurl = \"http://h/x\"\ndangerous_allow_plain_http = true")
                .is_ok()
        );
        let e = sec("kind = \"webhook\"\nurl = \"https://u:pw@h/x\"").unwrap_err();
        assert!(!e.1.contains("pw"), "{e:?}");
        assert!(sec("kind = \"webhook\"\nformat = \"ntfy\"\nurl = \"https://ntfy.sh/\"").is_err());
        let e = sec("kind = \"webhook\"\nurl = \"https://h/x\"\nserver = \"smtp\"").unwrap_err();
        assert_eq!(e.0, "notify[0].server");
        assert!(sec("kind = \"email\"\nserver = \"smtp.example:587\"\nfrom = \"ups@example.org\"\nto = [\"ops@example.org\"]").is_ok());
        assert!(sec("kind = \"email\"\nserver = \"smtp.example:0\"\nfrom = \"ups@example.org\"\nto = [\"ops@example.org\"]").is_err());
        let e = sec("kind = \"email\"\nserver = \"smtp.example\"\nfrom = \"not an address\"\nto = [\"ops@example.org\"]").unwrap_err();
        assert_eq!(e.0, "notify[0].from");
        assert!(sec("kind = \"email\"\nserver = \"s\"\nfrom = \"a@b.c\"").is_err());
        assert!(sec("kind = \"command\"\ncommand = [\"notify.sh\"]").is_err());
        assert!(sec("kind = \"command\"\ncommand = [\"/usr/local/bin/notify.sh\"]").is_ok());
        assert_eq!(
            split_server("mx", SmtpTls::Implicit, false).unwrap(),
            ("mx".into(), 465)
        );
        assert_eq!(
            split_server("mx", SmtpTls::Starttls, true).unwrap(),
            ("mx".into(), 25)
        );
        assert_eq!(
            shown_url("https://u:p@hooks.slack.com/services/T/B/x?y=1"),
            "https://hooks.slack.com"
        );
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(9), Duration::from_secs(30));
    }
}
