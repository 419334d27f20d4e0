//! The `upsvisord` binary: daemon and CLI.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use futures::StreamExt;
use serde_json::{Value, json};
use upsvisor_core::{Clock, Engine, Instant, PowerState, Secret, with_deadline};
use upsvisord::build::{self, DemoSpec, EngineClock, Parts};
use upsvisord::config::{self, Config, ConfigError};
use upsvisord::render;
use upsvisord::runtime::{self, RunOptions};

/// upsvisord: make your UPS aware of the VMs on the hosts it feeds.
#[derive(Parser, Debug)]
#[command(name = "upsvisord", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// The config file (TOML, `version = 1`).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    /// A running daemon to ask (status, plan, events) when no --config is given.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8470")]
    url: String,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Preflight: reach every device and host; does the plan fit the runtime?
    Check,
    /// Run the daemon (engine + HTTP API + web page).
    Run {
        /// Run on the simulated estate (no config needed).
        #[arg(long)]
        demo: bool,
        /// Listen address (overrides the config; `127.0.0.1:0` picks a port).
        #[arg(long)]
        listen: Option<String>,
        /// Bearer token file for writes (overrides the config; mode 0600).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Demo: simulated seconds per wall second.
        #[arg(long, default_value_t = 10.0)]
        speed: f64,
        /// Append-only JSON-lines audit log (overrides the config).
        #[arg(long)]
        audit_log: Option<PathBuf>,
        /// POST the table and events here after every poll (https://, or
        /// http:// without credentials).
        #[arg(long)]
        webhook: Option<String>,
    },
    /// The VM table, grouped by feed and host.
    Status,
    /// What an outage right now would do, in order, with estimates.
    Plan,
    /// Without --config: a whole outage on the simulated estate. With one:
    /// walk the plan without acting.
    Drill {
        /// Print every VM command (simulated drill).
        #[arg(long)]
        all: bool,
    },
    /// Follow the event and audit stream of a running daemon; with
    /// --config, read the lasting history in its state_dir instead.
    Events {
        /// Print the history and exit instead of following.
        #[arg(long)]
        once: bool,
        /// History from this time: RFC 3339 (2026-11-29T23:00:00Z), a
        /// duration ago (90m, 2h, 1day), or Unix seconds.
        #[arg(long)]
        since: Option<String>,
        /// History before this time (same forms as --since).
        #[arg(long)]
        until: Option<String>,
    },
    /// Ask a running daemon (--url, or the [api] address of --config) to
    /// load its config file again and apply it (same as SIGHUP;
    /// `systemctl reload upsvisord`). A file that does not load is refused
    /// with the error and the running config stays; during an episode it
    /// applies when the episode ends. Exit 0 applied or deferred, 1
    /// refused, 2 daemon not reached.
    Reload {
        /// The API's bearer token file (mode 0600).
        #[arg(long)]
        token_file: PathBuf,
    },
    /// Live test of one VM group, or one host, on a running daemon (--url,
    /// or the [api] address of --config): a group's VMs stop as in an
    /// outage, then start again; a host's VMs stop, it shuts down, is
    /// powered on out of band and its VMs start again; audited like any
    /// episode (`POST /api/test`). Refused when
    /// the daemon is disarmed, during an episode, or unless mains is on
    /// line. Exit 0 started, 1 refused, 2 without --live or not reached.
    Test {
        /// The VM group (`default`: the VMs no group matches).
        #[arg(long, required_unless_present = "host", conflicts_with = "host")]
        group: Option<String>,
        /// Or one host: its VMs stop, it shuts down, it is powered on out
        /// of band (its `power_on` method) and its VMs start again.
        #[arg(long)]
        host: Option<String>,
        /// Really do it: real power commands are sent.
        #[arg(long)]
        live: bool,
        /// The API's bearer token file (mode 0600).
        #[arg(long)]
        token_file: PathBuf,
    },
    /// Notification targets ([[notify]]).
    Notify {
        /// Send a test message to every target now, and say which worked.
        #[arg(long, required = true)]
        test: bool,
    },
    /// Write shell completions and the man page, generated from this CLI
    /// (packaging: scripts/build-deb).
    #[command(hide = true)]
    GenerateAssets {
        /// The directory to write man/ and completions/ into.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Logs go to stderr. Level: `UPSVISORD_LOG` (error, warn, info, debug,
/// trace); default `info` for `run`, `warn` otherwise. Secrets never reach
/// a log line: they live in `Secret`, whose Debug and Display are redacted.
fn init_logging(cmd: &Cmd) {
    let default = if matches!(cmd, Cmd::Run { .. }) {
        tracing::Level::INFO
    } else {
        tracing::Level::WARN
    };
    let level = std::env::var("UPSVISORD_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(default);
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.cmd);
    let r = match &cli.cmd {
        Cmd::Check => check(&cli),
        Cmd::Run {
            demo,
            listen,
            token_file,
            speed,
            audit_log,
            webhook,
        } => run(
            &cli,
            RunArgs {
                demo: *demo,
                listen: listen.clone(),
                token_file: token_file.clone(),
                speed: *speed,
                audit_log: audit_log.clone(),
                webhook: webhook.clone(),
            },
        ),
        Cmd::Status => status(&cli),
        Cmd::Plan => plan(&cli),
        Cmd::Drill { all } => drill(&cli, *all),
        Cmd::Events { once, since, until } => events(&cli, *once, since, until),
        Cmd::Notify { .. } => notify_test(&cli),
        Cmd::Reload { token_file } => reload(&cli, token_file),
        Cmd::Test {
            group,
            host,
            live,
            token_file,
        } => test_live(&cli, group.as_deref(), host.as_deref(), *live, token_file),
        Cmd::GenerateAssets { out } => generate_assets(out),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("upsvisord: {e}");
            ExitCode::from(2)
        }
    }
}

type Res = Result<ExitCode, String>;

/// `println!` that does not panic when stdout is closed (`| head`).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `print!` that does not panic when stdout is closed.
macro_rules! outn {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}

fn load(path: &Path) -> Result<(Config, config::Vault), String> {
    let cfg = Config::load(path).map_err(|e: ConfigError| e.to_string())?;
    let vault = cfg.load_vault().map_err(|e| e.to_string())?;
    Ok((cfg, vault))
}

fn print_json(v: &Value) {
    print_json_of(v);
}

/// Writes `v` as pretty JSON straight to stdout, without building a
/// `Value` tree or a string of the whole answer first (a 5,000-VM status
/// is megabytes of each).
fn print_json_of<T: serde::Serialize + ?Sized>(v: &T) {
    use std::io::Write as _;
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    if serde_json::to_writer_pretty(&mut w, v).is_ok() {
        let _ = writeln!(w);
    }
    let _ = w.flush();
}

/// Parts, the engine after one turn, and per-item build errors.
type OneShot = (Parts, Engine, Vec<(String, String)>);

/// What the config builds, plus the hosts registered through the API in an
/// earlier run (from `state_dir`), so every command sees the estate `run`
/// would poll.
struct Built {
    parts: Parts,
    /// Critical notes for the log and the event stream (a registry set aside).
    notes: Vec<String>,
    /// Per-item build errors (what, message).
    errors: Vec<(String, String)>,
    registered: Vec<upsvisord::registry::RegisteredHost>,
    registry_file: Option<PathBuf>,
}

/// `daemon`: a registry file that cannot be parsed is set aside and the
/// daemon starts without it (`run`); the one-shot commands only report it.
fn build_all(cfg: &Config, vault: &config::Vault, daemon: bool) -> Result<Built, String> {
    let (mut parts, mut errors) = build::from_config(cfg, vault);
    let mut registered = Vec::new();
    let mut notes = Vec::new();
    let registry_file = cfg.registry_path();
    if let Some(file) = &registry_file {
        registered = if daemon {
            let (hosts, note) = upsvisord::registry::load_or_set_aside(file)
                .map_err(|e| format!("state_dir: {e}"))?;
            notes.extend(note);
            hosts
        } else {
            upsvisord::registry::load(file).map_err(|e| format!("state_dir: {e}"))?
        };
        errors.extend(build::add_registered(&mut parts, &registered, file));
    }
    Ok(Built {
        parts,
        notes,
        errors,
        registered,
        registry_file,
    })
}

/// Builds from config (and the registry) and runs one power read and one
/// poll.
fn one_shot(cfg: &Config, vault: &config::Vault) -> Result<OneShot, String> {
    let Built { parts, errors, .. } = build_all(cfg, vault, false)?;
    let mut engine = parts.engine().map_err(|e| e.to_string())?;
    // Until the first power read and poll have happened: `run_until` does
    // nothing once its end has passed, and on a loaded machine a
    // millisecond can pass before it starts (then `status` showed poll #0
    // with no VMs, and `check` no runtime).
    for _ in 0..1000 {
        let end = parts.clock.now() + Duration::from_millis(1);
        parts.clock.block_on(engine.run_until(end));
        if engine.table().cycle > 0 {
            break;
        }
    }
    Ok((parts, engine, errors))
}

fn check(cli: &Cli) -> Res {
    let path = cli.config.as_ref().ok_or("check needs --config PATH")?;
    let mut items: Vec<(String, bool, String)> = Vec::new();
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            items.push(("config".into(), false, e.to_string()));
            return report(cli, &items);
        }
    };
    items.push((
        "config".into(),
        true,
        format!("{} parsed (version {})", path.display(), cfg.version),
    ));
    items.push(if cfg.armed {
        (
            "armed".into(),
            true,
            "armed: a power failure starts a shutdown".into(),
        )
    } else {
        if !cli.json {
            outn!("{}\n", render::DISARMED);
        }
        ("armed".into(), true, render::DISARMED.into())
    });
    for (item, message) in cfg.warnings() {
        items.push((item, true, message));
    }
    let vault = match cfg.load_vault() {
        Ok(v) => {
            let what = match &cfg.credentials.file {
                Some(f) => format!("{} readable, mode ok", cfg.resolve(f).display()),
                None => "no credentials file (none referenced)".into(),
            };
            items.push(("credentials".into(), true, what));
            v
        }
        Err(e) => {
            items.push(("credentials".into(), false, e.to_string()));
            return report(cli, &items);
        }
    };
    if let Err(e) = cfg.api_token(&vault) {
        items.push(("api token".into(), false, e.to_string()));
    }
    match cfg.api_tls() {
        Ok(Some(_)) => items.push((
            "api tls".into(),
            true,
            "certificate and key load; the API serves https".into(),
        )),
        Ok(None) => {}
        Err(e) => items.push(("api tls".into(), false, e.to_string())),
    }
    {
        let peers = cfg.hosts.len() + cfg.devices.len();
        let (l, lowered) = upsvisord::serve::fit_to_fd_limit(cfg.api.limits(), peers);
        items.push((
            "api limits".into(),
            true,
            lowered.unwrap_or_else(|| {
                format!(
                    "at most {} connections, {} event streams; request head within {} s, body within {} s",
                    l.max_connections,
                    l.max_event_streams,
                    l.header_timeout.as_secs(),
                    l.body_timeout.as_secs()
                )
            }),
        ));
    }
    match upsvisord::notify::targets(&cfg, &vault) {
        Ok(ts) => {
            for t in ts {
                items.push((format!("notify {}", t.name()), true, t.describe()));
            }
        }
        Err(e) => items.push(("notify".into(), false, e.to_string())),
    }
    if let Some(n) = &cfg.nut_server {
        items.push(("nut server".into(), true, n.describe()));
    }
    let built = match build_all(&cfg, &vault, false) {
        Ok(b) => b,
        Err(e) => {
            items.push(("registered hosts".into(), false, e));
            return report(cli, &items);
        }
    };
    let Built {
        parts,
        errors,
        registered,
        registry_file,
        ..
    } = built;
    for (what, e) in errors {
        items.push((what, false, format!("{}: {e}", cfg.source)));
    }
    let clock = parts.clock.arc();
    for (i, d) in cfg.devices.iter().enumerate() {
        let Some(dev) = parts
            .devices
            .get(&upsvisor_core::DeviceId::from(d.id.as_str()))
        else {
            continue;
        };
        let dev = dev.clone();
        let deadline = clock.now() + Duration::from_secs(10);
        let r = parts
            .clock
            .block_on(with_deadline(&*clock, deadline, async move {
                dev.status().await
            }));
        items.push(match r {
            Ok(Ok(s)) if s.tokens.iter().any(|t| t.to_string() == "WAIT") => (
                format!("device {}", d.id),
                false,
                format!(
                    "{}: device[{i}] ({}): the server has no data from the UPS driver yet (WAIT): is the driver running? retry in a few seconds",
                    cfg.source,
                    d.address.as_deref().unwrap_or("")
                ),
            ),
            Ok(Ok(s)) => (
                format!("device {}", d.id),
                true,
                format!(
                    "{} charge {} runtime {}",
                    s.tokens
                        .iter()
                        .map(|t| t.to_string())
                        .collect::<Vec<_>>()
                        .join(" "),
                    s.charge_pct.map_or("?".into(), |c| format!("{c:.0}%")),
                    s.runtime_s.map_or("?".into(), |r| format!("{r} s"))
                ),
            ),
            Ok(Err(e)) => {
                // Refused credentials: say which entry of which file to fix.
                let fix = match (e.kind(), d.credentials.as_deref()) {
                    (upsvisor_core::ErrorKind::Auth, Some(name)) => {
                        let file = cfg
                            .credentials
                            .file
                            .as_ref()
                            .map(|f| cfg.resolve(f).display().to_string())
                            .unwrap_or_default();
                        let what = if d.snmp_version.as_deref() == Some("3") {
                            format!(
                                "username, auth_password and priv_password of `{name}` in {file}, and device[{i}].snmp_auth/snmp_priv (as the agent's user was created)"
                            )
                        } else {
                            format!("entry `{name}` in {file}")
                        };
                        format!("; check the {what}")
                    }
                    _ => String::new(),
                };
                (
                    format!("device {}", d.id),
                    false,
                    format!("{}: device[{i}]: {e}{fix}", cfg.source),
                )
            }
            Err(_) => (
                format!("device {}", d.id),
                false,
                format!(
                    "{}: device[{i}] ({}): no answer within 10 s",
                    cfg.source,
                    d.address.as_deref().unwrap_or("")
                ),
            ),
        });
    }
    // Config hosts are named by their place in the config; registered ones
    // by the registry file.
    let host_places = cfg
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            (
                h.id.clone(),
                h.address.clone(),
                h.transport,
                format!("{}: host[{i}]", cfg.source),
            )
        })
        .chain(registered.iter().map(|reg| &reg.host).map(|r| {
            (
                r.id.clone(),
                r.address.clone(),
                r.transport,
                format!(
                    "{}: registered host {} (DELETE /api/hosts/{} to remove)",
                    registry_file
                        .as_deref()
                        .map(|f| f.display().to_string())
                        .unwrap_or_default(),
                    r.id,
                    r.id
                ),
            )
        }))
        .collect::<Vec<_>>();
    // Every host at once (bounded), so unreachable hosts cost one deadline,
    // not one each; progress on a terminal's stderr as they answer.
    let n = host_places.len();
    let progress = std::io::stderr().is_terminal() && !cli.json;
    let checks = host_places.iter().enumerate().filter_map(|(k, (id, ..))| {
        let t = parts
            .hosts
            .get(&upsvisor_core::HostId::from(id.as_str()))?
            .clone();
        let clock = clock.clone();
        Some(async move {
            let deadline = clock.now() + Duration::from_secs(15);
            let r = with_deadline(&*clock, deadline, async move {
                let caps = t.capabilities();
                t.inventory().await.map(|inv| (inv, caps))
            })
            .await;
            (k, r)
        })
    });
    let mut results = parts.clock.block_on(async {
        let mut done = Vec::with_capacity(n);
        let mut s = futures::stream::iter(checks).buffer_unordered(16);
        while let Some((k, r)) = s.next().await {
            if progress {
                let ok = matches!(r, Ok(Ok(_)));
                eprintln!(
                    "  [{}/{n}] host {}: {}",
                    done.len() + 1,
                    host_places[k].0,
                    if ok { "answered" } else { "FAILED" }
                );
            }
            done.push((k, r));
        }
        done
    });
    results.sort_by_key(|(k, _)| *k);
    let via_text = |id: &str| {
        parts
            .via
            .get(&upsvisor_core::HostId::from(id))
            .map_or_else(String::new, |v| format!(" {v}"))
    };
    for (k, r) in results {
        let (id, address, transport, place) = &host_places[k];
        items.push(match r {
            Ok(Ok((inv, caps))) => (
                format!("host {id}"),
                true,
                format!(
                    "{} {}{}: {} VMs ({} on); can: {}",
                    inv.info.product.as_deref().unwrap_or("?"),
                    inv.info.version.as_deref().unwrap_or(""),
                    via_text(id),
                    inv.vms.len(),
                    inv.vms
                        .iter()
                        .filter(|v| v.power == PowerState::PoweredOn)
                        .count(),
                    caps.vm_ops
                        .iter()
                        .map(|o| o.to_string())
                        .chain(caps.host_ops.iter().map(|o| format!("host {o}")))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Ok(Err(e)) => (
                format!("host {id}"),
                false,
                format!(
                    "{place} ({address} via {transport}): {e}{}",
                    via_text(id).replacen(' ', "; ", 1)
                ),
            ),
            Err(_) => (
                format!("host {id}"),
                false,
                format!("{place} ({address}): no answer within 15 s"),
            ),
        });
    }
    check_power_on(&cfg, &vault, &mut items);
    for h in &cfg.hooks {
        items.push(upsvisord::hooks::check(h));
    }
    // The plan against the runtime, from one real poll.
    let mut engine = parts.engine().map_err(|e| e.to_string())?;
    let end = parts.clock.now() + Duration::from_millis(1);
    parts.clock.block_on(engine.run_until(end));
    let plan = engine.plan();
    let runtime = engine
        .verdicts()
        .values()
        .filter_map(|v| v.last.as_ref().and_then(|s| s.runtime_s))
        .min();
    items.push(match runtime {
        Some(r) if plan.fits(r) => ("plan".into(), true, format!("estimate {} s + margin {} s fits runtime {r} s", plan.estimate.as_secs(), plan.margin.as_secs())),
        Some(r) => ("plan".into(), false, format!("estimate {} s + margin {} s does NOT fit runtime {r} s: shed VMs earlier ([[group]] shed_on_battery), shorten timeouts, or trigger earlier ([policy])", plan.estimate.as_secs(), plan.margin.as_secs())),
        None => ("plan".into(), false, format!("estimate {} s; no device reported a runtime, so the fit cannot be checked", plan.estimate.as_secs())),
    });
    report(cli, &items)
}

/// `check` of each `[[host]] power_on`: built with its credentials, then
/// probed where the method allows (IPMI chassis status, Redfish `GET` of
/// the system), all at once, each under its own deadline (real time, on
/// the method's own threads, whatever clock the engine uses).
fn check_power_on(cfg: &Config, vault: &config::Vault, items: &mut Vec<(String, bool, String)>) {
    let mut probes = Vec::new();
    for (i, h) in cfg.hosts.iter().enumerate() {
        let Some(p) = &h.power_on else { continue };
        let key = format!("host[{i}].power_on");
        let item = format!("power-on {}", h.id);
        match upsvisord::poweron::build(&h.id, &key, p, vault) {
            Err(e) => items.push((item, false, format!("{}: {e}", cfg.source))),
            Ok(m) if !m.can_probe() => items.push((
                item,
                true,
                format!("{} (no probe: the method has no answer)", m.describe()),
            )),
            Ok(m) => probes.push((item, key, m)),
        }
    }
    let results = futures::executor::block_on(futures::future::join_all(probes.into_iter().map(
        |(item, key, m)| async move {
            let r = m.probe().await;
            (item, key, m.describe(), r)
        },
    )));
    for (item, key, describe, r) in results {
        items.push(match r {
            Ok(p) => (item, true, format!("{describe}: power {p}")),
            Err(e) => (item, false, format!("{}: {key}: {e}", cfg.source)),
        });
    }
}

fn report(cli: &Cli, items: &[(String, bool, String)]) -> Res {
    let ok = items.iter().all(|i| i.1);
    if cli.json {
        print_json(&json!({
            "ok": ok,
            // Said only from a config that loaded: the "armed" row is
            // there then (null when nothing loaded, never a guess).
            "armed": items
                .iter()
                .find(|(w, _, _)| w == "armed")
                .map(|(_, _, m)| !m.starts_with("DISARMED")),
            "items": items.iter().map(|(w, o, m)| json!({"item": w, "ok": o, "message": m})).collect::<Vec<_>>(),
        }));
    } else {
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|(w, o, m)| {
                vec![
                    if !*o {
                        "FAIL".into()
                    } else if m.starts_with("DISARMED") || m.starts_with("WARNING: ") {
                        // Valid, and worth seeing: nothing will be sent, or
                        // a setting does less than it seems to.
                        "WARN".into()
                    } else {
                        "OK".into()
                    },
                    w.clone(),
                    m.clone(),
                ]
            })
            .collect();
        outn!("{}", render::table(&["", "item", "detail"], &rows, &[]));
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn reload(cli: &Cli, token_file: &Path) -> Res {
    post_to_daemon(cli, token_file, "/api/reload", None)
}

/// `upsvisord test --group G --live`: asks the running daemon for a live
/// test of one VM group (`POST /api/test`). Without `--live` nothing is
/// sent: the command says what it would do and how to rehearse it.
fn test_live(
    cli: &Cli,
    group: Option<&str>,
    host: Option<&str>,
    live: bool,
    token_file: &Path,
) -> Res {
    let (what, body) = match (group, host) {
        (Some(g), _) => (
            format!(
                "group {g} stops its VMs as an outage would (hooks, timeouts, power-off after a guest that does not stop) and starts them again"
            ),
            json!({ "group": g }),
        ),
        (None, Some(h)) => (
            format!(
                "host {h} stops its VMs as an outage would, shuts the host down, powers it on out of band and starts its VMs again"
            ),
            json!({ "host": h }),
        ),
        (None, None) => return Err("say --group G or --host H".into()),
    };
    if !live {
        out!(
            "a live test of {what}; nothing else is touched, and a real outage meanwhile turns it into that outage's shutdown. It sends real power commands: add --live to run it. `upsvisord drill --config ...` walks the whole plan without acting."
        );
        return Ok(ExitCode::from(2));
    }
    post_to_daemon(cli, token_file, "/api/test", Some(body))
}

/// POSTs to the running daemon (the `[api]` address of --config, else
/// --url) with the bearer token; prints the result or the refusal. Exit
/// 0 done, 1 refused, 2 not reached (the error).
fn post_to_daemon(cli: &Cli, token_file: &Path, path: &str, body: Option<Value>) -> Res {
    let token = read_token(token_file)?;
    // With --config, the daemon is where that file's [api] listens.
    let base = match &cli.config {
        Some(p) => {
            let cfg = Config::load(p).map_err(|e| e.to_string())?;
            let tls = cfg.api_tls().map_err(|e| e.to_string())?.is_some();
            format!(
                "{}://{}",
                if tls { "https" } else { "http" },
                cfg.api.listen
            )
        }
        None => cli.url.trim_end_matches('/').to_string(),
    };
    let url = format!("{base}{path}");
    let req = ureq::post(&url)
        .timeout(Duration::from_secs(30))
        .set("Authorization", &format!("Bearer {}", token.expose()));
    let r = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let (ok, v) = match r {
        Ok(resp) => (
            true,
            resp.into_json::<Value>()
                .map_err(|e| format!("{url}: {e}"))?,
        ),
        Err(ureq::Error::Status(_, resp)) => (
            false,
            resp.into_json::<Value>()
                .map_err(|e| format!("{url}: {e}"))?,
        ),
        Err(e) => return Err(e.to_string()),
    };
    if cli.json {
        print_json(&v);
    } else if ok {
        out!("{}", v.get("result").and_then(Value::as_str).unwrap_or(""));
    } else {
        out!(
            "refused: {}",
            v.get("error").and_then(Value::as_str).unwrap_or("")
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn get(url: &str) -> Result<Value, String> {
    ureq::get(url)
        .timeout(Duration::from_secs(10))
        .call()
        .map_err(|e| match e {
            // ureq's message already names the URL.
            ureq::Error::Transport(_) => {
                format!("{e} (is `upsvisord run` up and listening there? or pass --config)")
            }
            ureq::Error::Status(..) => e.to_string(),
        })?
        .into_json()
        .map_err(|e| format!("{url}: {e}"))
}

fn status(cli: &Cli) -> Res {
    let snap = match &cli.config {
        Some(p) => {
            let (cfg, vault) = load(p)?;
            let (parts, engine, errors) = one_shot(&cfg, &vault)?;
            for (w, e) in &errors {
                eprintln!("warning: {w}: {e}");
            }
            snapshot_from(&parts, &engine)
        }
        None => {
            let base = cli.url.trim_end_matches('/');
            if cli.json {
                let vms = get(&format!("{base}/api/vms"))?;
                let hosts = get(&format!("{base}/api/hosts"))?;
                let power = get(&format!("{base}/api/power"))?;
                print_json(&json!({"vms": vms, "hosts": hosts, "power": power}));
                return Ok(ExitCode::SUCCESS);
            }
            let v = get(&format!("{base}/api/status"))?;
            outn!("{}", v.get("text").and_then(Value::as_str).unwrap_or(""));
            return Ok(ExitCode::SUCCESS);
        }
    };
    if cli.json {
        print_json_of(&snap);
    } else {
        outn!("{}", render::status(&snap));
    }
    Ok(ExitCode::SUCCESS)
}

fn snapshot_from(parts: &Parts, engine: &Engine) -> runtime::Snapshot {
    // Reuse the runtime's snapshot shape without starting its thread.
    runtime::snapshot(engine, parts, engine.table().cycle)
}

fn plan(cli: &Cli) -> Res {
    let s = match &cli.config {
        Some(p) => {
            let (cfg, vault) = load(p)?;
            let (parts, engine, errors) = one_shot(&cfg, &vault)?;
            for (w, e) in &errors {
                eprintln!("warning: {w}: {e}");
            }
            snapshot_from(&parts, &engine)
        }
        None => {
            let v = get(&format!("{}/api/plan", cli.url.trim_end_matches('/')))?;
            if cli.json {
                print_json(&v);
                return Ok(ExitCode::SUCCESS);
            }
            outn!("{}", v.get("text").and_then(Value::as_str).unwrap_or(""));
            return Ok(ExitCode::SUCCESS);
        }
    };
    if cli.json {
        print_json(
            &json!({"plan": s.plan, "runtime_s": s.runtime_s, "fits": s.plan_fits, "power_on": s.power_on, "armed": s.armed}),
        );
    } else {
        outn!("{}", render::plan(&s));
    }
    Ok(ExitCode::SUCCESS)
}

fn drill(cli: &Cli, all: bool) -> Res {
    if let Some(p) = &cli.config {
        // Dry run: one real poll, then the plan walked step by step.
        let (cfg, vault) = load(p)?;
        let (parts, engine, errors) = one_shot(&cfg, &vault)?;
        for (w, e) in &errors {
            eprintln!("warning: {w}: {e}");
        }
        let s = snapshot_from(&parts, &engine);
        if cli.json {
            print_json(
                &json!({"dry_run": true, "plan": s.plan, "runtime_s": s.runtime_s, "fits": s.plan_fits}),
            );
            return Ok(ExitCode::SUCCESS);
        }
        out!("DRY RUN: nothing is sent to any host or device.\n");
        let mut at = Duration::ZERO;
        for st in &s.plan.stages {
            at += st.estimate;
            out!(
                "by {:>6}  {} ({} items){}",
                format!("{}s", at.as_secs()),
                st.name,
                st.items.len(),
                s.runtime_s
                    .map(|r| if at.as_secs() > u64::from(r) {
                        "  <-- past the current runtime"
                    } else {
                        ""
                    })
                    .unwrap_or("")
            );
            for it in &st.items {
                let target = match (&it.vm, &it.host) {
                    (Some((_, name)), Some(h)) => format!("{name} (on {h})"),
                    (Some((_, name)), None) => name.clone(),
                    (None, Some(h)) => h.to_string(),
                    (None, None) => String::new(),
                };
                if target.is_empty() {
                    out!("          {}", it.action);
                } else {
                    out!("          would {}: {target}", it.action);
                }
            }
        }
        outn!("\n{}", render::plan(&s));
        return Ok(ExitCode::SUCCESS);
    }
    let wall = std::time::Instant::now();
    let (parts, _ups) = build::demo(DemoSpec::default());
    let EngineClock::Sim(clock) = parts.clock.clone() else {
        return Err("demo has a simulated clock".into());
    };
    let mut engine = parts.engine().map_err(|e| e.to_string())?;
    let mut sub = engine.subscribe(1 << 16);
    let estate = parts.estate.clone().ok_or("demo estate")?;
    if !cli.json {
        out!(
            "upsvisord drill: {} hosts, {} VMs, UPS ups1, mains lost at T+00:05:00, back at T+00:45:00 (simulated clock)\n",
            parts.hosts.len(),
            estate.truth().len()
        );
    }
    let end = Instant::from_millis(75 * 60 * 1000);
    let mut t = Instant::ZERO;
    let mut vm_cmds = 0usize;
    let mut first_table = true;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    while t < end {
        t = t + Duration::from_secs(5);
        clock.block_on(engine.run_until(t));
        while let Some(ev) = sub.try_next() {
            for v in runtime::event_json(&ev) {
                let is_vm_cmd = v.pointer("/what/cmd/kind").and_then(Value::as_str) == Some("vm");
                if is_vm_cmd && v.pointer("/what/audit").and_then(Value::as_str) == Some("issued") {
                    vm_cmds += 1;
                }
                if cli.json {
                    let _ = writeln!(out, "{v}");
                    continue;
                }
                let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
                let show = match kind {
                    "table" => std::mem::take(&mut first_table),
                    "change" => {
                        v.pointer("/event/event").and_then(Value::as_str)
                            != Some("vm_power_changed")
                    }
                    "audit" => {
                        !is_vm_cmd || all || v.pointer("/what/error").is_some_and(|e| !e.is_null())
                    }
                    _ => true,
                };
                if show {
                    if let Some(l) = render::event_line(&v) {
                        let _ = writeln!(out, "{l}");
                    }
                }
            }
        }
    }
    let truth = estate.truth();
    let on = truth
        .values()
        .filter(|(_, v)| v.power == PowerState::PoweredOn)
        .count();
    let unclean = estate.unclean_power_losses();
    if cli.json {
        let _ = writeln!(
            out,
            "{}",
            json!({"type": "summary", "vm_commands": vm_cmds, "vms": truth.len(), "running_after": on, "unclean_power_losses": unclean.len(), "wall_ms": wall.elapsed().as_millis() as u64})
        );
    } else {
        let _ = writeln!(
            out,
            "\n{vm_cmds} VM commands; after the drill {on} of {} VMs running; VMs that lost power while running: {}; simulated {} in {:?} of wall time",
            truth.len(),
            unclean.len(),
            clock.now(),
            wall.elapsed()
        );
    }
    Ok(if unclean.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn events(cli: &Cli, once: bool, since: &Option<String>, until: &Option<String>) -> Res {
    use upsvisord::history;
    let now = history::now_ms();
    let time = |what: &str, s: &Option<String>| {
        s.as_deref()
            .map(|s| history::parse_time(s, now).map_err(|e| format!("--{what}: {e}")))
            .transpose()
    };
    let mut q = history::Query::default();
    q.since_ms = time("since", since)?;
    q.until_ms = time("until", until)?;
    if let Some(p) = &cli.config {
        // The lasting history in state_dir, read directly: no daemon needed.
        let cfg = Config::load(p).map_err(|e| e.to_string())?;
        let dir = cfg.history_dir().ok_or(
            "events --config: the config sets no state_dir, so there is no lasting history",
        )?;
        let (store, _) = history::Store::open(&dir, &cfg.history)?;
        loop {
            let page = store.query(&q)?;
            for v in &page.events {
                emit(cli, v);
            }
            if page.skipped > 0 {
                eprintln!(
                    "upsvisord: {} unreadable history lines skipped",
                    page.skipped
                );
            }
            match page.next {
                Some(n) if q.since_ms.is_some() || q.after.is_some() => q.after = Some(n),
                _ => return Ok(ExitCode::SUCCESS),
            }
        }
    }
    let base = cli.url.trim_end_matches('/');
    let mut params = Vec::new();
    if let Some(s) = q.since_ms {
        params.push(format!("since={}", s / 1000));
    }
    if let Some(u) = q.until_ms {
        params.push(format!("until={}", u.div_ceil(1000)));
    }
    let mut after: Option<u64> = None;
    loop {
        let mut p = params.clone();
        if let Some(a) = after {
            p.push(format!("after={a}"));
        }
        let h = get(&format!("{base}/api/history?{}", p.join("&")))?;
        let empty = vec![];
        for v in h.get("events").and_then(Value::as_array).unwrap_or(&empty) {
            emit(cli, v);
        }
        match h.get("next").and_then(Value::as_u64) {
            Some(n) if q.since_ms.is_some() => after = Some(n),
            _ => break,
        }
    }
    if once || until.is_some() {
        return Ok(ExitCode::SUCCESS);
    }
    let url = format!("{base}/api/events");
    let resp = ureq::get(&url).call().map_err(|e| format!("{url}: {e}"))?;
    let reader = std::io::BufReader::new(resp.into_reader());
    for line in reader.lines() {
        let line = line.map_err(|e| format!("{url}: {e}"))?;
        if let Some(data) = line.strip_prefix("data: ") {
            if let Ok(v) = serde_json::from_str::<Value>(data) {
                emit(cli, &v);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn emit(cli: &Cli, v: &Value) {
    if cli.json {
        out!("{v}");
    } else if let Some(l) = render::event_line(v) {
        out!("{l}");
    }
}

/// `notify --test`: one attempt per target, reported like `check`.
fn notify_test(cli: &Cli) -> Res {
    let path = cli
        .config
        .as_ref()
        .ok_or("notify --test needs --config PATH")?;
    let (cfg, vault) = load(path)?;
    let targets = upsvisord::notify::targets(&cfg, &vault).map_err(|e| e.to_string())?;
    if targets.is_empty() {
        return Err(format!("{}: no [[notify]] targets", cfg.source));
    }
    let n = upsvisord::notify::Notification::test();
    let items: Vec<(String, bool, String)> = targets
        .iter()
        .map(|t| {
            let (ok, m) = match t.deliver(&n) {
                Ok(()) => (true, format!("sent: {}", t.describe())),
                Err(e) => (false, e),
            };
            (format!("notify {}", t.name()), ok, m)
        })
        .collect();
    report(cli, &items)
}

/// Completions for bash, zsh and fish, and the man page, from the clap
/// definition.
fn generate_assets(out: &Path) -> Res {
    use clap::CommandFactory;
    let io = |e: std::io::Error| format!("{}: {e}", out.display());
    let comp = out.join("completions");
    let man = out.join("man");
    std::fs::create_dir_all(&comp).map_err(io)?;
    std::fs::create_dir_all(&man).map_err(io)?;
    let mut cmd = Cli::command();
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cmd, "upsvisord", &comp).map_err(io)?;
    }
    // upsvisord(1), and upsvisord-<command>(1) for each command it lists.
    let top = Cli::command();
    let mut pages = vec![("upsvisord".to_string(), top.clone())];
    for sub in top.get_subcommands().filter(|c| !c.is_hide_set()) {
        // clap names are 'static; this one-shot command can spare a few bytes.
        let name: &'static str =
            Box::leak(format!("upsvisord-{}", sub.get_name()).into_boxed_str());
        pages.push((name.to_string(), sub.clone().name(name)));
    }
    for (name, cmd) in pages {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut page).map_err(io)?;
        std::fs::write(man.join(format!("{name}.1")), page).map_err(io)?;
    }
    Ok(ExitCode::SUCCESS)
}

struct RunArgs {
    demo: bool,
    listen: Option<String>,
    token_file: Option<PathBuf>,
    speed: f64,
    audit_log: Option<PathBuf>,
    webhook: Option<String>,
}

fn run(cli: &Cli, a: RunArgs) -> Res {
    let RunArgs {
        demo,
        listen,
        token_file,
        speed,
        audit_log,
        webhook,
    } = a;
    // Every file the daemon creates (journal, audit log, registry) is the
    // service user's alone.
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    if let Some(w) = &webhook {
        config::check_webhook_url(w, false, false).map_err(|(_, m)| format!("--webhook: {m}"))?;
    }
    let mut registry_file = None;
    let mut registered = Vec::new();
    let mut notes = Vec::new();
    let mut tls = None;
    let mut limits = upsvisord::serve::Limits::default();
    let mut allowed_hosts = Vec::new();
    let mut history = None;
    let mut notify_targets = Vec::new();
    let mut nut_server = None;
    let mut reloader = None;
    let (parts, token, listen, audit_log, hook) = if demo {
        if cli.config.is_some() {
            return Err("--demo runs without --config".into());
        }
        let (parts, _ups) = build::demo(DemoSpec::default());
        (
            parts,
            None,
            listen.unwrap_or_else(|| config::DEFAULT_LISTEN.into()),
            audit_log,
            webhook.map(|u| upsvisord::webhook::Webhook::new(u, None)),
        )
    } else {
        let path = cli
            .config
            .as_ref()
            .ok_or("run needs --config PATH, or --demo")?;
        let (cfg, vault) = load(path)?;
        reloader = Some(reloader_for(path)?);
        let built = build_all(&cfg, &vault, true)?;
        let (parts, errors) = (built.parts, built.errors);
        if let Some(file) = &built.registry_file {
            if !built.registered.is_empty() {
                tracing::info!(
                    hosts = built.registered.len(),
                    file = %file.display(),
                    "registered hosts reloaded"
                );
            }
        }
        registered = built.registered;
        registry_file = built.registry_file;
        notes = built.notes;
        if !errors.is_empty() {
            for (w, e) in &errors {
                eprintln!("upsvisord: {w}: {e}");
            }
            return Ok(ExitCode::from(2));
        }
        let token = cfg.api_token(&vault).map_err(|e| e.to_string())?;
        tls = cfg.api_tls().map_err(|e| e.to_string())?;
        history = cfg.history_dir().map(|d| (d, cfg.history.clone()));
        notify_targets = upsvisord::notify::targets(&cfg, &vault).map_err(|e| e.to_string())?;
        limits = cfg.api.limits();
        allowed_hosts = cfg.api.allowed_hosts.clone();
        nut_server = cfg.nut_server.clone().map(|n| (n, vault.clone()));
        for (item, message) in cfg.warnings() {
            tracing::warn!("{item}: {}", message.trim_start_matches("WARNING: "));
        }
        match &cfg.journal {
            None => tracing::warn!(
                "no journal configured: a daemon restarted during an outage starts over instead of resuming the episode (set `journal` in the config)"
            ),
            Some(j) => runtime::tighten(&cfg.resolve(j), "journal")?,
        }
        let audit = audit_log.or_else(|| cfg.audit_log.as_ref().map(|p| cfg.resolve(p)));
        let hook = match (webhook, &cfg.webhook) {
            (Some(u), _) => Some(upsvisord::webhook::Webhook::new(u, None)),
            (None, Some(w)) => {
                let mut h = upsvisord::webhook::Webhook::new(
                    w.url.clone(),
                    w.token
                        .as_deref()
                        .and_then(|n| vault.get(n))
                        .map(|r| r.creds.password.clone()),
                );
                if let Some(ca) = &w.ca_file {
                    let ca = cfg.resolve(ca);
                    let pem = std::fs::read(&ca).map_err(|e| {
                        format!(
                            "{}: webhook.ca_file: cannot read {}: {e}",
                            cfg.source,
                            ca.display()
                        )
                    })?;
                    h.ca_pem(pem);
                }
                Some(h)
            }
            (None, None) => None,
        };
        (
            parts,
            token,
            listen.unwrap_or_else(|| cfg.api.listen.clone()),
            audit,
            hook,
        )
    };
    let token = match token_file {
        Some(p) => Some(read_token(&p)?),
        None => token,
    };
    let peers = parts.hosts.len() + parts.devices.len();
    let (limits, lowered) = upsvisord::serve::fit_to_fd_limit(limits, peers);
    if let Some(w) = &lowered {
        tracing::warn!("{w}");
    }
    if let Some(p) = &audit_log {
        runtime::tighten(p, "audit log")?;
    }
    let (shared, engine_thread) = runtime::start(
        parts,
        RunOptions {
            speed,
            audit_log,
            registry_file,
            registered,
            history,
            reload: reloader,
            ..RunOptions::default()
        },
    )?;
    upsvisord::notify::start(shared.clone(), notify_targets)?;
    for n in &notes {
        tracing::error!("CRITICAL: {n}");
        shared.record(json!({"type": "critical", "what": n}));
    }
    if let Some(h) = hook {
        upsvisord::webhook::start(shared.clone(), h)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let sh = shared.clone();
    let read_only = token.is_none();
    let nut_stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let nut_task = match nut_server {
        Some((section, vault)) => {
            let listener = rt
                .block_on(tokio::net::TcpListener::bind(&section.listen))
                .map_err(|e| format!("nut_server.listen {}: {e}", section.listen))?;
            tracing::info!(
                listen = %section.listen,
                ups = section.ups.len(),
                users = section.users.len(),
                "NUT server listening (read-only, plain text)"
            );
            let (sh, stop) = (shared.clone(), nut_stop.clone());
            Some(rt.spawn(async move {
                upsvisord::nut_server::serve(listener, section, &vault, sh, async move {
                    stop.notified().await
                })
                .await
            }))
        }
        None => None,
    };
    let armed = shared.snapshot().armed;
    let r = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| format!("api.listen {listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        out!(
            "upsvisord listening on {}://{addr}/ ({}; at most {} connections, {} event streams)",
            if tls.is_some() { "https" } else { "http" },
            if read_only {
                "read-only: no token"
            } else {
                "writes need the bearer token"
            },
            limits.max_connections,
            limits.max_event_streams
        );
        let _ = std::io::stdout().flush();
        if !armed {
            tracing::warn!("{}", render::DISARMED);
            out!("{}", render::DISARMED);
        }
        upsvisord::service::ready(&format!(
            "listening on {addr}{}",
            if armed { "" } else { "; DISARMED" }
        ));
        if let Some(p) = upsvisord::service::start_watchdog(sh.clone()) {
            tracing::info!(period_ms = p.as_millis() as u64, "systemd watchdog on");
        }
        // SIGHUP reloads the config (its default action would end the
        // daemon: a stray `kill -HUP` must not leave the estate unwatched).
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            if let Ok(mut hup) = signal(SignalKind::hangup()) {
                let sh = sh.clone();
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        if sh.request(runtime::Request::Reload { reply: tx }).is_err() {
                            break;
                        }
                        match rx.await {
                            Ok(Ok(m)) if m.contains("DISARMED") => {
                                tracing::warn!("SIGHUP: config reload: {m}");
                            }
                            Ok(Ok(m)) => tracing::info!("SIGHUP: config reload: {m}"),
                            Ok(Err((_, e))) => {
                                tracing::error!("SIGHUP: config reload refused: {e}")
                            }
                            Err(_) => break,
                        }
                    }
                });
            }
        }
        let mut api = upsvisord::api::Api::new(sh, token);
        api.limits(limits).allowed_hosts(allowed_hosts);
        let shutdown = async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => {}
                            _ = term.recv() => {}
                        }
                    }
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
        };
        match &tls {
            Some(t) => api.serve_tls(listener, t, shutdown).await,
            None => api.serve(listener, shutdown).await,
        }
        .map_err(|e| e.to_string())
    });
    upsvisord::service::stopping();
    nut_stop.notify_one();
    if let Some(t) = nut_task {
        let _ = rt.block_on(t);
    }
    shared.stop();
    let _ = engine_thread.join();
    r.map(|()| ExitCode::SUCCESS)
}

/// Settings a reload cannot apply to a running daemon: the API listener
/// and its TLS and token, the NUT server, notification targets and the
/// files opened at start.
const RESTART_ONLY: &[&str] = &[
    "api",
    "nut_server",
    "notify",
    "webhook",
    "journal",
    "audit_log",
    "state_dir",
    "history",
];

/// The top-level tables of the file, for comparing what a reload changed.
fn raw_table(path: &Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.parse::<toml::Table>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// How the running daemon loads `path` again (SIGHUP, `reload`): in full,
/// as at start (config, credentials, every host and device built, the
/// registry), so a file that does not load changes nothing.
fn reloader_for(path: &Path) -> Result<runtime::Reloader, String> {
    let path = path.to_path_buf();
    let first = raw_table(&path)?;
    Ok(runtime::Reloader(std::sync::Arc::new(move || {
        let (cfg, vault) = load(&path)?;
        // Checked as at start, though the running API keeps the token it
        // read then (a restart applies a new one).
        cfg.api_token(&vault).map_err(|e| e.to_string())?;
        let built = build_all(&cfg, &vault, false)?;
        if !built.errors.is_empty() {
            return Err(built
                .errors
                .iter()
                .map(|(w, e)| format!("{w}: {e}"))
                .collect::<Vec<_>>()
                .join("; "));
        }
        let now = raw_table(&path)?;
        let restart_only = RESTART_ONLY
            .iter()
            .filter(|k| first.get(**k) != now.get(**k))
            .map(|k| (*k).to_string())
            .collect();
        Ok(runtime::Reloaded::new(
            built.parts,
            built.registered,
            restart_only,
        ))
    })))
}

fn read_token(p: &Path) -> Result<Secret, String> {
    let s = config::read_secret_file(p)?;
    if s.expose().len() < config::MIN_TOKEN_BYTES {
        return Err(format!(
            "{}: the token is {} bytes; it must be at least {} (e.g. head -c 32 /dev/urandom | base64)",
            p.display(),
            s.expose().len(),
            config::MIN_TOKEN_BYTES
        ));
    }
    Ok(s)
}
