//! A firmware-sized upsvisor: the engine with one NUT UPS and the hosts of
//! one vCenter (or one ESXi host) over SOAP on blocking HTTP (ureq), driven
//! by `futures::executor::block_on` and [`SystemClock`]. No async runtime:
//! the SOAP and NUT adapters do their blocking I/O on their own threads
//! and hand results back as futures.
//!
//! It is what a vendor's main loop looks like, configured from the
//! environment so that it needs no config parser:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `UPSVISOR_NUT` | upsd address, `host:port` | `127.0.0.1:3493` |
//! | `UPSVISOR_UPS` | the UPS's name on upsd | `ups1` |
//! | `UPSVISOR_NUT_USER`, `UPSVISOR_NUT_PASSWORD_FILE` | a upsd.users account with `upsmon secondary` (LOGIN, so a primary upsmon waits for it; and the UPS command) | none: status only |
//! | `UPSVISOR_VSPHERE_URL` | vCenter or ESXi, `https://host[:port]` | required |
//! | `UPSVISOR_VSPHERE_USER` | account | required |
//! | `UPSVISOR_VSPHERE_PASSWORD_FILE` | file holding its password (never the environment) | required |
//! | `UPSVISOR_VSPHERE_THUMBPRINT` | SHA-256 of the server certificate, `AB:CD:..` | none: the system roots must trust it |
//! | `UPSVISOR_HOSTS` | the hosts it feeds, comma-separated, as vCenter names them | required |
//! | `UPSVISOR_CYCLES` | stop after this many poll cycles (0: run for ever) | `0` |
//! | `UPSVISOR_PERIOD_S` | poll period on mains, seconds | `30` |
//! | `UPSVISOR_ARMED` | `1`/`true`/`yes` lets it send power commands; `0`/`false`/`no` or unset: disarmed | disarmed |
//! | `UPSVISOR_JOURNAL` | file keeping the episode across restarts (which episode runs, whom it shut down, whom to wake); its directory must exist and be writable | none: a warning at start |
//!
//! Disarmed (the default) it polls and reads the UPS, but never sends a
//! power command. Armed, it runs the engine's defaults: an episode starts
//! on low battery (`LB`), forced shutdown (`FSD`) or under 300 s of runtime
//! left; every running VM gets a guest shutdown (120 s, then power-off),
//! each host is shut down once empty, then the UPS gets
//! `shutdown.return` (NUT `INSTCMD`, which needs the NUT account above: without
//! it the command is refused and audited, and the UPS runs until its own
//! low-battery cut); when mains is back and stable, hosts that answer get
//! their VMs started again. A vendor builds its own `SequencerConfig`
//! (groups, timeouts, final action) the same way.
//!
//! With `UPSVISOR_JOURNAL` set, the engine journals its episode and power
//! state after every change (upsvisor-core's `FileJournal`: written beside
//! the file, fsynced, renamed over it; mode 0600) and a restarted process
//! (watchdog, crash, firmware update) resumes the episode: the VMs it shut
//! down are started again when mains is back, the outage timers carry on.
//! Without it a restart during an outage starts over: VMs it had shut down
//! look off by choice and stay off. An existing journal must belong to this
//! user or root (else refused); group or other permission bits are taken
//! away (to 0600, with a warning), as upsvisord does. A journal the engine
//! cannot read is set aside (kept as `<file>.corrupt-<unix seconds>`) and
//! reported on stderr; protection goes on from the current power state.
//!
//! Each poll cycle prints one line (hosts, VMs, the UPS reading); each
//! audit line of the sequencer (episode started, command issued and
//! completed, notes) prints as `audit ` and its JSON, and the journal's
//! findings as `journal: ...` (critical ones on stderr). Exit
//! status: 0 after `UPSVISOR_CYCLES` cycles; 2 on bad settings (named by
//! variable); 1 if it cannot start. `--help` prints this table.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::executor::block_on;
use upsvisor_core::{
    Clock, Credentials, DeviceId, Engine, EngineEvent, FileJournal, HostEntry, HostId, Inventory,
    JournalReport, Outlet, PolicyConfig, PollerConfig, PowerState, SequencerConfig, SystemClock,
    TransportKind,
};
use upsvisor_nut::{NutConfig, NutDevice};
use upsvisor_soap::{HostSelector, SoapConfig, SoapTransport};

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn required(name: &str) -> Result<String, String> {
    var(name).ok_or_else(|| format!("{name} is not set (run with --help for the settings)"))
}

fn number(name: &str, default: u64) -> Result<u64, String> {
    var(name).map_or(Ok(default), |v| {
        v.parse()
            .map_err(|_| format!("{name}={v:?} is not a whole number"))
    })
}

/// A secret from a file only its owner may read (as upsvisord requires).
fn secret_file(name: &str) -> Result<String, String> {
    let path = required(name)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .map_err(|e| format!("{name} {path}: {e}"))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{name} {path}: readable by others (mode {:o}); chmod 600 it",
                mode & 0o777
            ));
        }
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{name} {path}: {e}"))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// The journal named by `name`, checked before anything runs: not a
/// directory, in an existing directory this process can create files in
/// (probed with the temporary name the journal's writes use), and, if it
/// exists, a regular file it can read, owned by this user or root. Group
/// or other permission bits are taken away (to 0600) with a warning, as
/// upsvisord's `tighten` does for its state files.
fn journal_file(name: &str) -> Result<Option<PathBuf>, String> {
    let Some(raw) = var(name) else {
        return Ok(None);
    };
    let path = PathBuf::from(&raw);
    let bad = |what: String| format!("{name} {raw}: {what}");
    if path.is_dir() {
        return Err(bad(
            "is a directory; name a file in it (e.g. upsvisor.journal)".into(),
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(bad(format!(
            "directory {} does not exist (create it; the journal is written there)",
            dir.display()
        )));
    }
    // The journal's save writes `<file>.tmp` and renames it over the file:
    // probe exactly that, now, rather than find out during an outage.
    let mut tmp = path.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let probe = o
        .open(&tmp)
        .and_then(|f| f.metadata())
        .map_err(|e| bad(format!("cannot write in {}: {e}", dir.display())))?;
    let _ = std::fs::remove_file(&tmp);
    let Ok(meta) = std::fs::metadata(&path) else {
        return Ok(Some(path));
    };
    if !meta.is_file() {
        return Err(bad("is not a regular file".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        // The probe was created by this process: its owner is this user.
        let me = probe.uid();
        if meta.uid() != me && meta.uid() != 0 {
            return Err(bad(format!(
                "owned by uid {}, not by this user (uid {me}) or root: refused; fix: chown {me} {raw}",
                meta.uid()
            )));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| bad(format!("mode {mode:03o} could not be set to 600: {e}")))?;
            eprintln!(
                "upsvisor-embedded: warning: {name} {raw}: mode {mode:03o} tightened to 600 (it names hosts and VMs)"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = probe;
    std::fs::File::open(&path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    Ok(Some(path))
}

const HELP: &str =
    "upsvisor-embedded: the upsvisor engine with one NUT UPS and the hosts of one vCenter.
Settings (environment):
  UPSVISOR_NUT                 upsd address host:port (default 127.0.0.1:3493)
  UPSVISOR_UPS                 the UPS's name on upsd (default ups1)
  UPSVISOR_NUT_USER            upsd.users account (optional; with _PASSWORD_FILE)
  UPSVISOR_NUT_PASSWORD_FILE   file holding its password (mode 600)
  UPSVISOR_VSPHERE_URL         https://vcenter[:port] (required)
  UPSVISOR_VSPHERE_USER        vSphere account (required)
  UPSVISOR_VSPHERE_PASSWORD_FILE  file holding its password, mode 600 (required)
  UPSVISOR_VSPHERE_THUMBPRINT  SHA-256 of the server certificate (AB:CD:..)
  UPSVISOR_HOSTS               the hosts it feeds, comma-separated vCenter names (required)
  UPSVISOR_CYCLES              stop after this many poll cycles (0: run for ever)
  UPSVISOR_PERIOD_S            poll period on mains, seconds (default 30, at least 1)
  UPSVISOR_ARMED               1/true/yes: send power commands (default: disarmed)
  UPSVISOR_JOURNAL             file keeping the episode across restarts (default: none,
                               so a restart during an outage starts over)
Exit: 0 done, 2 bad settings, 1 cannot start.";

/// Everything the environment says, checked before anything connects.
struct Settings {
    nut_host: String,
    nut_port: u16,
    ups: String,
    nut_login: Option<Credentials>,
    soap: SoapConfig,
    hosts: Vec<String>,
    cycles: u64,
    period: Duration,
    armed: bool,
    journal: Option<PathBuf>,
}

fn settings() -> Result<Settings, String> {
    let nut = var("UPSVISOR_NUT").unwrap_or_else(|| "127.0.0.1:3493".into());
    let (nut_host, nut_port) = nut
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_owned(), p.parse().ok()?)))
        .ok_or_else(|| format!("UPSVISOR_NUT={nut:?} is not host:port"))?;
    let url = required("UPSVISOR_VSPHERE_URL")?;
    if !url.to_ascii_lowercase().starts_with("https://") {
        return Err(format!(
            "UPSVISOR_VSPHERE_URL={url:?} must start with https:// (the vSphere password travels over it)"
        ));
    }
    let hosts: Vec<String> = required("UPSVISOR_HOSTS")?
        .split(',')
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .collect();
    if hosts.is_empty() {
        return Err("UPSVISOR_HOSTS names no host".into());
    }
    if let Some(dup) = hosts
        .iter()
        .enumerate()
        .find(|(i, h)| hosts[..*i].contains(h))
    {
        return Err(format!("UPSVISOR_HOSTS names `{}` twice", dup.1));
    }
    let period = number("UPSVISOR_PERIOD_S", 30)?;
    if period == 0 {
        return Err("UPSVISOR_PERIOD_S must be at least 1".into());
    }
    let armed = match var("UPSVISOR_ARMED")
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("0" | "false" | "no") => false,
        Some("1" | "true" | "yes") => true,
        Some(other) => {
            return Err(format!(
                "UPSVISOR_ARMED={other:?}: say 1/true/yes or 0/false/no"
            ));
        }
    };
    let journal = journal_file("UPSVISOR_JOURNAL")?;
    let user = required("UPSVISOR_VSPHERE_USER")?;
    let credentials = Credentials::new(user, secret_file("UPSVISOR_VSPHERE_PASSWORD_FILE")?);
    let mut soap = SoapConfig::new(url, credentials);
    if let Some(t) = var("UPSVISOR_VSPHERE_THUMBPRINT") {
        soap = soap
            .pin_thumbprint(&t)
            .map_err(|e| format!("UPSVISOR_VSPHERE_THUMBPRINT: {e}"))?;
    }
    let nut_login = match var("UPSVISOR_NUT_USER") {
        Some(u) => Some(Credentials::new(
            u,
            secret_file("UPSVISOR_NUT_PASSWORD_FILE")?,
        )),
        None => None,
    };
    Ok(Settings {
        nut_host,
        nut_port,
        ups: var("UPSVISOR_UPS").unwrap_or_else(|| "ups1".into()),
        nut_login,
        soap,
        hosts,
        cycles: number("UPSVISOR_CYCLES", 0)?,
        period: Duration::from_secs(period),
        armed,
        journal,
    })
}

fn main() {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        println!("{HELP}");
        return;
    }
    let s = match settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("upsvisor-embedded: {e}");
            std::process::exit(2);
        }
    };
    if s.journal.is_none() {
        eprintln!(
            "upsvisor-embedded: WARNING: no UPSVISOR_JOURNAL: a restart during an outage (watchdog, crash, firmware update) starts over instead of resuming the episode, and the VMs it shut down stay off when mains returns"
        );
    }
    if let Err(e) = run(s) {
        eprintln!("upsvisor-embedded: {e}");
        std::process::exit(1);
    }
}

fn run(s: Settings) -> Result<(), String> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let ids: Vec<HostId> = s.hosts.iter().map(HostId::new).collect();
    let inventory = Inventory::new(
        ids.iter()
            .map(|h| HostEntry::new(h.clone(), s.soap.url(), TransportKind::Soap))
            .collect(),
        vec![Outlet::new("ups", "main", ids.clone())],
    );
    let mut poller = PollerConfig::default();
    poller
        .period(s.period)
        .on_battery_period(Duration::from_secs(10))
        .host_deadline(Duration::from_secs(30));
    let mut sequencer = SequencerConfig::default();
    sequencer.armed(s.armed);
    let mut engine = Engine::new(
        clock.clone(),
        inventory,
        poller,
        PolicyConfig::default(),
        sequencer,
    )
    .map_err(|e| e.to_string())?;
    if let Some(path) = &s.journal {
        // What it finds there (resumed, set aside) is an event, printed
        // with the first cycle's.
        engine = engine
            .with_journal(Box::new(FileJournal::new(path)))
            .map_err(|e| format!("UPSVISOR_JOURNAL: {e}"))?;
    }
    // One session for every host of the vCenter: each host's transport is
    // a view of the same login, and hosts polled together share one fetch.
    let session = SoapTransport::new(s.soap.clone())
        .map_err(|e| format!("UPSVISOR_VSPHERE_URL / _THUMBPRINT: {e}"))?;
    for (id, name) in ids.iter().zip(&s.hosts) {
        let t = session.share(HostSelector::Name(name.clone()));
        engine
            .add_host(id, Arc::new(t))
            .map_err(|e| e.to_string())?;
    }
    let mut nut = NutConfig::new(s.ups.clone())
        .host(s.nut_host.clone())
        .port(s.nut_port);
    if let Some(c) = &s.nut_login {
        // Counted by upsd as a upsmon secondary, as upsvisord is.
        nut = nut.credentials(c.clone()).login(true);
    }
    let ups = NutDevice::new(nut).map_err(|e| format!("UPSVISOR_NUT / UPSVISOR_UPS: {e}"))?;
    engine.add_device(DeviceId::from("ups"), Arc::new(ups));
    let mut events = engine.subscribe(1024);
    println!(
        "upsvisor-embedded: {} hosts via {}, UPS {}@{}:{}, {}, journal {}",
        ids.len(),
        s.soap.url(),
        s.ups,
        s.nut_host,
        s.nut_port,
        if s.armed { "ARMED" } else { "disarmed" },
        s.journal
            .as_deref()
            .map_or_else(|| "none".into(), |p| p.display().to_string())
    );

    let mut power = String::from("no reading yet");
    let mut cycles = 0;
    loop {
        let until = clock.now() + Duration::from_secs(1);
        block_on(engine.run_until(until));
        while let Some(ev) = events.try_next() {
            match &*ev {
                EngineEvent::Power { verdict, .. } => {
                    power = verdict.last.as_ref().map_or_else(
                        || "no reading".to_owned(),
                        |st| {
                            let tokens: Vec<String> =
                                st.tokens.iter().map(ToString::to_string).collect();
                            format!(
                                "{} charge {}%",
                                tokens.join(" "),
                                st.charge_pct.map_or("?".into(), |c| format!("{c:.0}"))
                            )
                        },
                    );
                }
                EngineEvent::Table(u) => {
                    cycles += 1;
                    let t = &u.table;
                    let on = t
                        .hosts
                        .values()
                        .flat_map(|r| r.vms.values())
                        .filter(|v| v.power == PowerState::PoweredOn)
                        .count();
                    let stale = t
                        .hosts
                        .values()
                        .filter(|r| !matches!(r.freshness, upsvisor_core::Freshness::Fresh))
                        .count();
                    println!(
                        "cycle {}: {} hosts ({} not fresh), {} VMs ({} on); UPS: {power}",
                        t.cycle,
                        t.hosts.len(),
                        stale,
                        t.vm_count(),
                        on
                    );
                }
                EngineEvent::Audit(a) => match serde_json::to_string(a) {
                    Ok(line) => println!("audit {line}"),
                    Err(e) => println!("audit (unprintable: {e}) {a:?}"),
                },
                EngineEvent::Journal { report, .. } => journal_report(report),
                _ => {}
            }
        }
        if s.cycles > 0 && cycles >= s.cycles {
            return Ok(());
        }
    }
}

/// Prints what the journal found or failed at: critical findings (an
/// episode may be lost, or a restart now would lose it) on stderr.
fn journal_report(r: &JournalReport) {
    match r {
        JournalReport::Resumed {
            episode,
            devices,
            stopped_ms,
            basis,
            warning,
        } => {
            println!(
                "journal: resumed {}, {devices} power device(s), stopped {:.1} s ({basis:?} clock)",
                if *episode {
                    "the episode in progress"
                } else {
                    "with no episode in progress"
                },
                *stopped_ms as f64 / 1000.0
            );
            if let Some(w) = warning {
                eprintln!("upsvisor-embedded: warning: journal: {w}");
            }
        }
        JournalReport::SetAside { error, kept_at } => eprintln!(
            "upsvisor-embedded: CRITICAL: journal unreadable ({error}); set aside{}; starting from the current power state (an episode in progress may be lost)",
            kept_at
                .as_deref()
                .map_or_else(String::new, |k| format!(" as {k}"))
        ),
        JournalReport::WriteFailed { error } => eprintln!(
            "upsvisor-embedded: CRITICAL: journal writes fail ({error}): a restart now would not resume the episode"
        ),
        JournalReport::WritesResumed => println!("journal: writes succeed again"),
        other => println!("journal: {other:?}"),
    }
}
