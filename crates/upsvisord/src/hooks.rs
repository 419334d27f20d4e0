//! `[[hook]]`: operators' commands at named points of an outage, and the
//! [`HookRunner`] that runs them (locally, or on a host over its SSH
//! transport).
//!
//! ```toml
//! [[hook]]
//! name = "flush-db"
//! point = "before_group"        # on_battery | trigger | before_group |
//! group = "db"                  #   before_host_shutdown | after_restore
//! command = ["/usr/local/sbin/flush-db", "--fast"]
//! deadline = "45s"              # humantime: 45s, 2m, 1m30s
//! blocking = true               # a failure holds the group (default false)
//!
//! [[hook]]
//! name = "unmount-nfs"
//! point = "before_host_shutdown"
//! host = "nas01"
//! on = "nas01"                  # run it on that host over its SSH transport
//! command = ["/usr/local/sbin/unexport-all"]
//! deadline = "30s"
//! ```
//!
//! When a hook starts, how long it is waited for and what a failure holds
//! is the core's (`upsvisor_core::Hook`): no result by the deadline is a
//! failure, and a blocking hook's hold ends at the forced deadline or when
//! the battery only covers what follows. Hooks run only while the daemon
//! is armed.
//!
//! A local command (`command = [path, args..]`, no shell) runs with an
//! environment built from scratch (nothing of the daemon's, so no secret
//! leaks into it): `PATH` (the daemon's), NUT's `NOTIFYTYPE` (`ONBATT`,
//! `TRIGGER`, `BEFORE_GROUP`, `BEFORE_HOST_SHUTDOWN`, `AFTER_RESTORE`) and
//! `UPSNAME` (the devices feeding the hook's hosts, comma-separated),
//! plus `UPSVISOR_HOOK`, `UPSVISOR_HOOK_POINT` (the point's config name),
//! `UPSVISOR_GROUP`, `UPSVISOR_HOST` (empty where the point has none),
//! `UPSVISOR_EPISODE` and `UPSVISOR_HOOK_DEADLINE_S`. Its standard input,
//! output and error are `/dev/null`; exit status 0 is success. At its
//! deadline its whole process group is killed (`SIGKILL`) and reaped.
//!
//! With `on = "<host id>"` the same argv and variables are sent over that
//! host's SSH connection (its host-key check and credentials), through
//! `env`; only for `ssh-*` hosts other than `ssh-hyperv`. A remote command
//! still running at its deadline is signalled (`TERM`) and its channel
//! closed.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;
use upsvisor_core::{Error, Hook, HookCall, HookPoint, HookRunner, HostId, Result};

use crate::config::{Config, Transport};

/// One `[[hook]]` of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HookSection {
    /// A unique name (audit lines, the plan, `UPSVISOR_HOOK`).
    pub name: String,
    /// `on_battery`, `trigger`, `before_group`, `before_host_shutdown` or
    /// `after_restore`.
    pub point: String,
    /// `before_group`: the `[[group]]` name (`default`: VMs no group
    /// matches).
    #[serde(default)]
    pub group: Option<String>,
    /// `before_host_shutdown`: the `[[host]]` id.
    #[serde(default)]
    pub host: Option<String>,
    /// The program and its arguments (no shell).
    pub command: Vec<String>,
    /// Run it on this `[[host]]` (an `ssh-*` one) over its SSH transport;
    /// unset: on this machine.
    #[serde(default)]
    pub on: Option<String>,
    /// How long its result is waited for (humantime: `30s`, `2m`), at
    /// least 1 s.
    pub deadline: String,
    /// Whether a failure holds its step (default false).
    #[serde(default)]
    pub blocking: bool,
}

const POINTS: &str =
    "one of: on_battery, trigger, before_group, before_host_shutdown, after_restore";

impl HookSection {
    /// The deadline, parsed.
    fn deadline(&self) -> std::result::Result<Duration, String> {
        humantime::parse_duration(self.deadline.trim())
            .map_err(|e| format!("`{}` is not a duration like 30s or 2m: {e}", self.deadline))
    }

    /// The core's hook (after [`validate`]).
    pub fn to_core(&self) -> Option<Hook> {
        let point = match self.point.as_str() {
            "on_battery" => HookPoint::OnBattery,
            "trigger" => HookPoint::Trigger,
            "before_group" => HookPoint::BeforeGroup {
                group: self.group.clone()?,
            },
            "before_host_shutdown" => HookPoint::BeforeHostShutdown {
                host: HostId::from(self.host.clone()?.as_str()),
            },
            "after_restore" => HookPoint::AfterRestore,
            _ => return None,
        };
        Some(Hook::new(self.name.clone(), point, self.deadline().ok()?).blocking(self.blocking))
    }

    /// Where it runs, for `check` and logs: `local` or `on <host> over ssh`.
    pub fn place(&self) -> String {
        match &self.on {
            Some(h) => format!("on {h} over ssh"),
            None => "local".into(),
        }
    }
}

/// Checks every `[[hook]]` against `cfg`'s groups and hosts; the error is
/// the key (`hook[2].group`) and what is wrong.
pub fn validate(cfg: &Config) -> std::result::Result<(), (String, String)> {
    let mut names = std::collections::BTreeSet::new();
    for (i, h) in cfg.hooks.iter().enumerate() {
        let at = |field: &str, m: String| (format!("hook[{i}].{field}"), m);
        if h.name.trim().is_empty() || !names.insert(h.name.as_str()) {
            return Err(at("name", format!("`{}` is empty or used twice", h.name)));
        }
        let (wants_group, wants_host) = match h.point.as_str() {
            "on_battery" | "trigger" | "after_restore" => (false, false),
            "before_group" => (true, false),
            "before_host_shutdown" => (false, true),
            other => return Err(at("point", format!("`{other}`: {POINTS}"))),
        };
        match (&h.group, wants_group) {
            (None, true) => {
                return Err(at(
                    "point",
                    "before_group needs `group = \"<group name>\"`".into(),
                ));
            }
            (Some(_), false) => {
                return Err(at("group", "only for point = \"before_group\"".into()));
            }
            (Some(g), true) if g != "default" && !cfg.groups.iter().any(|x| &x.name == g) => {
                return Err(at(
                    "group",
                    format!(
                        "no [[group]] is named `{g}` (`default` is the group of VMs no other group matches)"
                    ),
                ));
            }
            _ => {}
        }
        let known = |id: &str| cfg.hosts.iter().find(|x| x.id == id);
        match (&h.host, wants_host) {
            (None, true) => {
                return Err(at(
                    "point",
                    "before_host_shutdown needs `host = \"<host id>\"`".into(),
                ));
            }
            (Some(_), false) => {
                return Err(at(
                    "host",
                    "only for point = \"before_host_shutdown\"".into(),
                ));
            }
            (Some(id), true) if known(id).is_none() => {
                return Err(at("host", format!("no [[host]] has id `{id}`")));
            }
            _ => {}
        }
        match h.command.first() {
            None => return Err(at("command", "give the program and its arguments".into())),
            Some(p) if p.trim().is_empty() => {
                return Err(at("command", "the program is empty".into()));
            }
            // (A remote command runs after `env NAME=value`: a program
            // with `=` would be taken as one more variable.)
            Some(p) if p.contains('=') => {
                return Err(at("command", format!("program `{p}` contains `=`")));
            }
            Some(_) => {}
        }
        match h.deadline() {
            Err(e) => return Err(at("deadline", e)),
            Ok(d) if d < Duration::from_secs(1) => {
                return Err(at("deadline", "must be at least 1 s".into()));
            }
            Ok(_) => {}
        }
        if h.blocking && !wants_group && !wants_host && h.point != "trigger" {
            return Err(at(
                "blocking",
                format!(
                    "a {} hook holds nothing: only trigger, before_group and before_host_shutdown hooks can block",
                    h.point
                ),
            ));
        }
        // A failed blocking hook holds its step until the forced deadline
        // or the battery budget; without a forced deadline and with a UPS
        // that reports no runtime, nothing would end the hold.
        if h.blocking && cfg.sequencer.force_host_after_s == 0 {
            return Err(at(
                "blocking",
                "a blocking hook needs sequencer.force_host_after_s: a failure holds its step until that forced deadline (or the battery budget, when the UPS reports a runtime)".into(),
            ));
        }
        if let Some(id) = &h.on {
            match known(id).map(|x| x.transport) {
                None => return Err(at("on", format!("no [[host]] has id `{id}`"))),
                Some(Transport::Ssh(upsvisor_ssh::Dialect::HyperV)) => {
                    return Err(at(
                        "on",
                        format!("`{id}` is ssh-hyperv: hooks run over SSH on POSIX hosts only"),
                    ));
                }
                Some(Transport::Ssh(_)) => {}
                Some(t) => {
                    return Err(at(
                        "on",
                        format!(
                            "`{id}` is reached over {t}, not SSH: a hook runs on a host only over its ssh-* transport"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `check` of one hook: where and when it runs, and for a local one
/// whether its program is there and executable (it is not run). A remote
/// one's host is checked with the hosts.
pub fn check(h: &HookSection) -> (String, bool, String) {
    let what = format!("hook {}", h.name);
    let when = h.to_core().map_or_else(
        || h.point.clone(),
        |c| {
            format!(
                "{}, {}deadline {} s",
                c.point,
                if c.holds() { "blocking, " } else { "" },
                c.deadline.as_secs()
            )
        },
    );
    let prog = h.command.first().map(String::as_str).unwrap_or_default();
    if h.on.is_some() {
        return (what, true, format!("{when}; runs {prog} {}", h.place()));
    }
    match find_program(prog) {
        Ok(p) => (what, true, format!("{when}; runs {} here", p.display())),
        Err(e) => (what, false, format!("{when}; {e}")),
    }
}

/// `prog` as `execvp` would find it: a path with `/` as given, else the
/// first executable file of that name in `PATH`.
fn find_program(prog: &str) -> std::result::Result<std::path::PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if prog.contains('/') {
        let p = std::path::PathBuf::from(prog);
        return if executable(&p) {
            Ok(p)
        } else {
            Err(format!("{prog} is not an executable file"))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| executable(p))
        .ok_or_else(|| format!("{prog} is not found in PATH"))
}

/// One hook as the runner needs it.
#[derive(Clone)]
struct Def {
    command: Vec<String>,
    /// The remote host and its transport, for `on` (or why it has none).
    on: Option<std::result::Result<(String, upsvisor_ssh::SshTransport), String>>,
    /// The devices feeding the hook's hosts (`UPSNAME`).
    upsname: String,
}

/// Runs the configured hooks by name: locally, or over a host's SSH
/// transport (see the module docs). No secret is in its `Debug`.
#[derive(Clone)]
pub struct Runner {
    hooks: Arc<BTreeMap<String, Def>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("hooks", &self.hooks.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Runner {
    /// A runner for `cfg`'s hooks; `ssh` holds the SSH transports of the
    /// hosts (shared with the engine: one connection per host). A hook
    /// whose `on` host has no transport here (its own build failed) is
    /// listed in the errors (what, message) and fails when it runs.
    pub fn new(
        cfg: &Config,
        ssh: &BTreeMap<HostId, upsvisor_ssh::SshTransport>,
    ) -> (Runner, Vec<(String, String)>) {
        let mut hooks = BTreeMap::new();
        let mut errors = Vec::new();
        for (i, h) in cfg.hooks.iter().enumerate() {
            let on = match &h.on {
                None => None,
                Some(id) => match ssh.get(&HostId::from(id.as_str())) {
                    Some(t) => Some(Ok((id.clone(), t.clone()))),
                    None => {
                        let why = format!(
                            "hook[{i}].on: host `{id}` has no SSH transport (see its own error): this hook fails when it runs"
                        );
                        errors.push((format!("hook {}", h.name), why.clone()));
                        Some(Err(why))
                    }
                },
            };
            let hosts: Vec<&str> = match (&h.host, &h.group) {
                (Some(host), _) => vec![host.as_str()],
                _ => cfg.hosts.iter().map(|x| x.id.as_str()).collect(),
            };
            let mut devices: Vec<&str> = cfg
                .devices
                .iter()
                .filter(|d| {
                    d.outlets
                        .iter()
                        .any(|o| o.hosts.iter().any(|x| hosts.contains(&x.as_str())))
                })
                .map(|d| d.id.as_str())
                .collect();
            devices.dedup();
            hooks.insert(
                h.name.clone(),
                Def {
                    command: h.command.clone(),
                    on,
                    upsname: devices.join(","),
                },
            );
        }
        (
            Runner {
                hooks: Arc::new(hooks),
            },
            errors,
        )
    }
}

/// The environment a hook gets (besides `PATH`, for a local one).
fn environment(call: &HookCall, upsname: &str) -> Vec<(String, String)> {
    let (group, host) = match &call.point {
        HookPoint::BeforeGroup { group } => (group.clone(), String::new()),
        HookPoint::BeforeHostShutdown { host } => (String::new(), host.to_string()),
        _ => (String::new(), String::new()),
    };
    let notifytype = match &call.point {
        HookPoint::OnBattery => "ONBATT".to_owned(),
        p => p.name().to_ascii_uppercase(),
    };
    [
        ("NOTIFYTYPE", notifytype),
        ("UPSNAME", upsname.to_owned()),
        ("UPSVISOR_HOOK", call.name.clone()),
        ("UPSVISOR_HOOK_POINT", call.point.name().to_owned()),
        ("UPSVISOR_GROUP", group),
        ("UPSVISOR_HOST", host),
        ("UPSVISOR_EPISODE", call.episode.to_string()),
        (
            "UPSVISOR_HOOK_DEADLINE_S",
            call.deadline.as_secs().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

#[async_trait::async_trait]
impl HookRunner for Runner {
    async fn run(&self, call: &HookCall) -> Result<()> {
        let def = self.hooks.get(&call.name).cloned().ok_or_else(|| {
            Error::config(format!("hooks.{}", call.name), "no [[hook]] with this name")
        })?;
        let env = environment(call, &def.upsname);
        match def.on {
            Some(Ok((host, t))) => {
                tracing::info!(hook = %call.name, point = %call.point, %host, "hook starts over ssh");
                t.run_command(&def.command, &env, call.deadline).await
            }
            Some(Err(why)) => Err(Error::config(format!("hooks.{}", call.name), why)),
            None => {
                tracing::info!(hook = %call.name, point = %call.point, "hook starts");
                run_local(&call.name, &def.command, env, call.deadline).await
            }
        }
    }
}

/// Runs a local program in its own process group, on a thread of its own
/// (the engine's executor may be none: any executor can await this). At
/// `deadline`, or when the returned future is dropped (the engine's own
/// deadline), the whole group is killed and the process reaped.
pub async fn run_local(
    name: &str,
    argv: &[String],
    env: Vec<(String, String)>,
    deadline: Duration,
) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| Error::config(format!("hooks.{name}"), "empty command"))?;
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        )
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::not_found(format!("hook {name}: {prog}: cannot start: {e}")))?;
    let cancel = Arc::new(AtomicBool::new(false));
    let (tx, rx) = futures::channel::oneshot::channel::<Result<()>>();
    let what = format!("hook {name}: {prog}");
    let stop = cancel.clone();
    let started = std::time::Instant::now();
    let watcher = std::thread::Builder::new()
        .name(format!("upsvisor-hook-{name}"))
        .spawn(move || {
            let kill = |child: &mut std::process::Child| {
                let pgid = rustix::process::Pid::from_child(child);
                let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
                let _ = child.kill();
                let _ = child.wait();
            };
            let r = loop {
                match child.try_wait() {
                    Ok(Some(st)) if st.success() => break Ok(()),
                    Ok(Some(st)) => {
                        // Whatever it left running in its group goes too.
                        let pgid = rustix::process::Pid::from_child(&child);
                        let _ = rustix::process::kill_process_group(
                            pgid,
                            rustix::process::Signal::KILL,
                        );
                        break Err(Error::protocol(&what, st.to_string()));
                    }
                    Ok(None) if stop.load(Ordering::Relaxed) => {
                        kill(&mut child);
                        break Err(Error::timeout(what.clone(), deadline));
                    }
                    Ok(None) if started.elapsed() >= deadline => {
                        kill(&mut child);
                        break Err(Error::timeout(format!("{what} (killed)"), deadline));
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                    Err(e) => {
                        kill(&mut child);
                        break Err(Error::protocol(&what, e.to_string()));
                    }
                }
            };
            let _ = tx.send(r);
        });
    if let Err(e) = watcher {
        return Err(Error::unsupported(format!(
            "hook {name}: cannot start its watcher thread: {e}"
        )));
    }
    /// Kills the hook when the caller stops waiting.
    struct Cancel(Arc<AtomicBool>);
    impl Drop for Cancel {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _cancel = Cancel(cancel);
    rx.await.unwrap_or_else(|_| {
        Err(Error::protocol(
            format!("hook {name}"),
            "its watcher thread ended without a result",
        ))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn a_local_hook_succeeds_fails_and_is_killed_at_its_deadline() {
        let ok = futures::executor::block_on(run_local(
            "t",
            &sh("test \"$UPSVISOR_HOOK\" = t"),
            vec![("UPSVISOR_HOOK".into(), "t".into())],
            Duration::from_secs(5),
        ));
        assert!(ok.is_ok(), "{ok:?}");
        let failed = futures::executor::block_on(run_local(
            "t",
            &sh("exit 3"),
            vec![],
            Duration::from_secs(5),
        ))
        .unwrap_err();
        assert!(failed.to_string().contains("exit status: 3"), "{failed}");
        // A child that would outlive the script is killed with its group.
        let dir = std::env::temp_dir().join(format!("upsvisor-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("pid");
        let t0 = std::time::Instant::now();
        let slow = futures::executor::block_on(run_local(
            "t",
            &sh(&format!("sleep 30 & echo $! > {}; wait", pidfile.display())),
            vec![],
            Duration::from_secs(1),
        ))
        .unwrap_err();
        assert_eq!(slow.kind(), upsvisor_core::ErrorKind::Timeout, "{slow}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // Gone, not a zombie: reaped by its parent (the killed shell's
        // reaper, init) or never left.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
        assert!(
            stat.as_deref().map_or(true, |s| !s.contains(") S ")),
            "the group's sleep still runs: {stat:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        // The daemon's environment is not passed on.
        let clean = futures::executor::block_on(run_local(
            "t",
            &sh("test -z \"$HOME$USER\""),
            vec![],
            Duration::from_secs(5),
        ));
        assert!(clean.is_ok(), "{clean:?}");
    }
}
