//! The engine on its own thread, and the snapshot everyone else reads.
//!
//! The engine is runtime-free, so it runs on a plain thread in slices
//! (`run_until(now + slice)`); between slices the thread drains the
//! engine's events into a bounded history and a broadcast channel (the SSE
//! stream), refreshes the [`Snapshot`], and carries out requests from the
//! API (VM/host power, host registration) on the engine's own clock.
//!
//! In demo mode the clock is a `SimClock` advanced in step with the wall
//! clock (`speed` simulated seconds per wall second), so the simulated
//! estate's transports and UPS keep their deterministic timing while the
//! page shows a live outage.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use upsvisor_core::{
    Clock, Credentials, DeviceId, Engine, EngineEvent, EpisodeStatus, Event, HostId, HostOp,
    Inventory, Plan, Verdict, VmId, VmOp, VmTable, with_deadline,
};

use crate::build::{EngineClock, Parts};
use crate::config::HostSection;
use crate::registry::RegisteredHost;

/// The engine thread's record of API-registered hosts.
struct Registry {
    file: Option<PathBuf>,
    hosts: Vec<RegisteredHost>,
}

impl Registry {
    fn save(&self) -> Result<(), String> {
        match &self.file {
            Some(p) => crate::registry::save(p, &self.hosts),
            None => Ok(()),
        }
    }
}

/// How many history entries are kept.
pub const HISTORY: usize = 500;

/// What the API and CLI read.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Snapshot {
    /// `demo` or `config`.
    pub mode: &'static str,
    /// The engine clock, milliseconds.
    pub now_ms: u64,
    /// Poll cycles seen.
    pub cycles: u64,
    /// The VM table.
    pub table: Arc<VmTable>,
    /// Per device verdict (with its last reading).
    pub verdicts: BTreeMap<DeviceId, Verdict>,
    /// The dry-run plan if every fed host lost power now.
    pub plan: Plan,
    /// The lowest runtime any device reports.
    pub runtime_s: Option<u32>,
    /// Whether the plan fits that runtime.
    pub plan_fits: Option<bool>,
    /// The running episode, if any.
    pub episode: Option<EpisodeStatus>,
    /// Hosts and feeds.
    pub inventory: Inventory,
    /// Wall-clock seconds of each host's last inventory call.
    pub poll_seconds: BTreeMap<HostId, f64>,
    /// Each host's out-of-band power-on method, described; hosts without
    /// one are absent.
    pub power_on: BTreeMap<HostId, String>,
    /// SOAP hosts reached through vCenter and how many share their
    /// session; other hosts are absent.
    pub via: BTreeMap<HostId, crate::build::Via>,
    /// Whether the controller acts (`armed` in the config).
    pub armed: bool,
}

/// Why a request failed, for the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// No such VM or host (404).
    NotFound,
    /// Not now (an episode runs) or the id is taken (409).
    Conflict,
    /// The host or device refused or did not answer (502).
    Upstream,
    /// The request carries something invalid, e.g. a config that does not
    /// load (422).
    Invalid,
}

/// The engine thread's answer to a request.
pub type Reply = Result<String, (Failure, String)>;

/// A request from the API to the engine thread.
#[derive(Debug)]
#[non_exhaustive]
pub enum Request {
    /// A VM power command.
    Vm {
        /// VM.
        vm: VmId,
        /// Operation.
        op: VmOp,
        /// Answer.
        reply: tokio::sync::oneshot::Sender<Reply>,
    },
    /// A host power command.
    Host {
        /// Host.
        host: HostId,
        /// Operation.
        op: HostOp,
        /// Answer.
        reply: tokio::sync::oneshot::Sender<Reply>,
    },
    /// Start a live test of one VM group or one host (`upsvisord test
    /// --live`).
    Test {
        /// What to test.
        target: TestTarget,
        /// Answer.
        reply: tokio::sync::oneshot::Sender<Reply>,
    },
    /// Abort the running episode (an operator's explicit request).
    Abort {
        /// Why, for the audit.
        reason: String,
        /// Answer.
        reply: tokio::sync::oneshot::Sender<Reply>,
    },
    /// Remove a host that was registered through the API.
    Unregister {
        /// Host.
        host: HostId,
        /// Answer.
        reply: tokio::sync::oneshot::Sender<Reply>,
    },
    /// Load the config file again and apply it (SIGHUP, `upsvisord
    /// reload`, `POST /api/reload`): refused with the error if it does not
    /// load, deferred while an episode runs.
    Reload {
        /// Answer.
        reply: tokio::sync::oneshot::Sender<Reply>,
    },
    /// Register a host (connection check first).
    Register {
        /// The host as a config entry would declare it.
        host: Box<HostSection>,
        /// Its credentials.
        creds: Option<Credentials>,
        /// Answer.
        reply: tokio::sync::oneshot::Sender<Reply>,
    },
}

/// What an operator's live test covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestTarget {
    /// One VM group (`default`: the VMs no group matches).
    Group(String),
    /// One host: its VMs, its shutdown, its out-of-band power-on.
    Host(HostId),
}

/// State shared between the engine thread and the API.
pub struct Shared {
    snapshot: Mutex<Arc<Snapshot>>,
    history: Mutex<VecDeque<Arc<Value>>>,
    events: tokio::sync::broadcast::Sender<Arc<Value>>,
    requests: Mutex<std::sync::mpsc::Sender<Request>>,
    audit_file: Option<Mutex<std::fs::File>>,
    /// Lasting history in `state_dir` (`None`: memory only).
    store: Option<crate::history::Store>,
    /// The last `seq` given to a recorded event.
    seq: AtomicU64,
    /// The store's last write failed (warned once per failing streak).
    store_failing: AtomicBool,
    stop: AtomicBool,
    /// Failed API authentications (for `/metrics`).
    pub auth_failures: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Recent events and audit lines, oldest first.
    pub fn history(&self) -> Vec<Arc<Value>> {
        self.history
            .lock()
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A page of history: from the store in `state_dir` when there is
    /// one, else from the recent events in memory. Errors: a history file
    /// cannot be read.
    pub fn history_page(&self, q: &crate::history::Query) -> Result<crate::history::Page, String> {
        match &self.store {
            Some(s) => s.query(q),
            None => {
                let h = self.history();
                let mut p = crate::history::select(h.iter().map(|v| Some((**v).clone())), q);
                p.source = "memory";
                Ok(p)
            }
        }
    }

    /// Live events (tables, power, audit).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Value>> {
        self.events.subscribe()
    }

    /// Sends a request to the engine thread.
    pub fn request(&self, r: Request) -> Result<(), String> {
        self.requests
            .lock()
            .map_err(|_| "engine thread gone".to_string())?
            .send(r)
            .map_err(|_| "engine thread gone".to_string())
    }

    /// Records an event: history (memory, and the store in `state_dir`),
    /// SSE, and (for audit, API and critical lines) the audit file. Every
    /// line gets `at`, the wall-clock time in UTC (RFC 3339), beside the
    /// engine clock's `at_ms`, and `seq`, the history's paging cursor.
    pub fn record(&self, mut v: Value) {
        let audit = matches!(
            v.get("type").and_then(Value::as_str),
            Some("audit" | "api" | "critical")
        );
        if let Some(o) = v.as_object_mut() {
            o.entry("at")
                .or_insert_with(|| Value::String(crate::history::at_now()));
            o.insert(
                "seq".into(),
                Value::from(self.seq.fetch_add(1, Ordering::SeqCst) + 1),
            );
        }
        if let Some(store) = &self.store {
            match store.append(&v) {
                Ok(()) => {
                    if self.store_failing.swap(false, Ordering::SeqCst) {
                        tracing::info!("history: writing again");
                    }
                }
                Err(error) => {
                    if !self.store_failing.swap(true, Ordering::SeqCst) {
                        tracing::warn!(%error, "history: write failed; events stay in memory and on the event stream");
                    }
                }
            }
        }
        if audit {
            if let Some(f) = &self.audit_file {
                if let Ok(mut f) = f.lock() {
                    let _ = writeln!(f, "{v}");
                    let _ = f.flush();
                }
            }
        }
        let v = Arc::new(v);
        if let Ok(mut h) = self.history.lock() {
            if h.len() >= HISTORY {
                h.pop_front();
            }
            h.push_back(v.clone());
        }
        let _ = self.events.send(v);
    }

    /// Asks the engine thread to stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// How the engine thread runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Simulated seconds per wall second (demo only).
    pub speed: f64,
    /// Wall time per slice.
    pub slice: Duration,
    /// Append-only JSON-lines audit log.
    pub audit_log: Option<PathBuf>,
    /// Where API-registered hosts are kept (`None`: in memory only).
    pub registry_file: Option<PathBuf>,
    /// Hosts registered in an earlier run, already added to the parts.
    pub registered: Vec<RegisteredHost>,
    /// Keep history in this state directory (`None`: memory only).
    pub history: Option<(PathBuf, crate::history::HistorySection)>,
    /// Builds the parts again from the config file, for a reload (`None`:
    /// nothing to reload, e.g. the demo).
    pub reload: Option<Reloader>,
}

/// What a reload built from the config file.
#[non_exhaustive]
pub struct Reloaded {
    /// Hosts, devices, inventory, poller, policy and sequencer settings
    /// (with `armed`), from the file and the registry.
    pub parts: Parts,
    /// The registry's hosts, already in `parts`.
    pub registered: Vec<RegisteredHost>,
    /// Settings that changed in the file but apply only at a restart (the
    /// API's address, TLS and token; NUT server; notifications; journal,
    /// audit log, state directory).
    pub restart_only: Vec<String>,
}

impl Reloaded {
    /// New parts, and what in the file changed that only a restart applies.
    pub fn new(parts: Parts, registered: Vec<RegisteredHost>, restart_only: Vec<String>) -> Self {
        Reloaded {
            parts,
            registered,
            restart_only,
        }
    }
}

/// Loads and builds the config file again; `Err` names the file, line and
/// key (the running config stays).
#[derive(Clone)]
pub struct Reloader(pub Arc<dyn Fn() -> Result<Reloaded, String> + Send + Sync>);

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reloader")
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            speed: 10.0,
            slice: Duration::from_millis(200),
            audit_log: None,
            registry_file: None,
            registered: Vec::new(),
            history: None,
            reload: None,
        }
    }
}

/// A snapshot of `engine` (used by the thread and by one-shot commands).
pub fn snapshot(engine: &Engine, parts: &Parts, cycles: u64) -> Snapshot {
    let plan = engine.plan();
    let runtime_s = engine
        .verdicts()
        .values()
        .filter_map(|v| v.last.as_ref().and_then(|s| s.runtime_s))
        .min();
    Snapshot {
        mode: if matches!(parts.clock, EngineClock::Sim(_)) {
            "demo"
        } else {
            "config"
        },
        now_ms: parts.clock.now().as_millis(),
        cycles,
        table: engine.table().clone(),
        verdicts: engine.verdicts().clone(),
        plan_fits: runtime_s.map(|r| plan.fits(r)),
        plan,
        runtime_s,
        episode: engine.sequencer().status(),
        inventory: parts.inventory.clone(),
        // (Hosts removed by a reload or an unregistration drop out: a
        // removed slow host kept the "slowest host" gauge up.)
        poll_seconds: parts
            .poll_times
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(h, _)| parts.inventory.host(h).is_some())
                    .map(|(h, s)| (h.clone(), *s))
                    .collect()
            })
            .unwrap_or_default(),
        power_on: parts.power_on.clone(),
        via: parts.via.clone(),
        armed: engine.sequencer().config().is_armed(),
    }
}

/// Turns an engine event into JSON lines for history/SSE.
pub fn event_json(ev: &EngineEvent) -> Vec<Value> {
    match ev {
        EngineEvent::Table(u) => {
            let mut out = vec![json!({
                "type": "table",
                "at_ms": u.table.taken_at.as_millis(),
                "cycle": u.table.cycle,
                "vms": u.table.vm_count(),
            })];
            for e in &u.events {
                if !matches!(e, Event::VmPowerChanged { .. } | Event::VmAppeared { .. })
                    || u.table.cycle > 1
                {
                    out.push(json!({
                        "type": "change",
                        "at_ms": u.table.taken_at.as_millis(),
                        "event": e,
                    }));
                }
            }
            out
        }
        EngineEvent::Power {
            at,
            device,
            verdict,
        } => vec![json!({
            "type": "power",
            "at_ms": at.as_millis(),
            "device": device,
            "verdict": verdict,
        })],
        EngineEvent::Audit(a) => vec![json!({
            "type": "audit",
            "at_ms": a.at.as_millis(),
            "episode": a.episode,
            "what": a.what,
        })],
        EngineEvent::DeviceError { at, device, error } => vec![json!({
            "type": "device_error",
            "at_ms": at.as_millis(),
            "device": device,
            "error": error,
        })],
        EngineEvent::Manual { at, cmd, error } => vec![json!({
            "type": "audit",
            "at_ms": at.as_millis(),
            "episode": 0,
            "what": {"audit": "operator_command", "cmd": cmd, "error": error},
        })],
        // An unreadable journal set aside is critical (an episode may have
        // been lost); a resume is worth an audit line with its time basis.
        EngineEvent::Journal { at, report } => match report {
            upsvisor_core::JournalReport::SetAside { .. }
            | upsvisor_core::JournalReport::WriteFailed { .. } => vec![json!({
                "type": "critical",
                "at_ms": at.as_millis(),
                "what": {"journal": report},
            })],
            _ => vec![json!({
                "type": "audit",
                "at_ms": at.as_millis(),
                "episode": 0,
                "what": {"audit": "journal", "report": report},
            })],
        },
        other => vec![json!({"type": "other", "debug": format!("{other:?}")})],
    }
}

/// Opens `path` for appending, created with mode 0600. An existing file
/// that group or others may read or write is tightened to 0600, with a
/// warning (its lines may hold host names and client addresses); one owned
/// by another user (not root) is refused.
pub fn open_private_append(path: &std::path::Path, what: &str) -> Result<std::fs::File, String> {
    tighten(path, what)?;
    let mut o = std::fs::OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
        .map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// An existing state file (`what`: journal, audit log) with group or other
/// permission bits is set to 0600, with a warning; a foreign owner (not
/// this user, not root) is refused. A missing file is fine.
pub fn tighten(path: &std::path::Path, what: &str) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let Ok(meta) = std::fs::metadata(path) else {
            return Ok(());
        };
        crate::config::check_owner_and_mode(path).or_else(|e| {
            // World-writable is tightened below; a foreign owner is not.
            if meta.mode() & 0o002 != 0 && !e.contains("owned by") {
                Ok(())
            } else {
                Err(format!("{what}: {e}"))
            }
        })?;
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
                |e| {
                    format!(
                        "{what} {}: mode {mode:03o} could not be set to 600: {e}",
                        path.display()
                    )
                },
            )?;
            tracing::warn!(file = %path.display(), was = %format!("{mode:03o}"), "{what}: mode tightened to 600");
        }
    }
    #[cfg(not(unix))]
    let _ = (path, what);
    Ok(())
}

/// Starts the engine thread. Returns once the engine is built (or failed).
pub fn start(
    parts: Parts,
    opts: RunOptions,
) -> Result<(Arc<Shared>, std::thread::JoinHandle<()>), String> {
    let engine = parts.engine().map_err(|e| e.to_string())?;
    let audit_file = match &opts.audit_log {
        Some(p) => Some(Mutex::new(open_private_append(p, "audit log")?)),
        None => None,
    };
    let (store, last_seq) = match &opts.history {
        Some((dir, section)) => {
            let (s, last) = crate::history::Store::open(dir, section)?;
            (Some(s), last)
        }
        None => (None, 0),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let (events, _) = tokio::sync::broadcast::channel(1024);
    let shared = Arc::new(Shared {
        snapshot: Mutex::new(Arc::new(snapshot(&engine, &parts, 0))),
        history: Mutex::new(VecDeque::new()),
        events,
        requests: Mutex::new(tx),
        audit_file,
        store,
        seq: AtomicU64::new(last_seq),
        store_failing: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        auth_failures: AtomicU64::new(0),
    });
    let sh = shared.clone();
    let handle = std::thread::Builder::new()
        .name("upsvisor-engine".into())
        .spawn(move || engine_thread(engine, parts, opts, sh, rx))
        .map_err(|e| e.to_string())?;
    Ok((shared, handle))
}

fn engine_thread(
    mut engine: Engine,
    mut parts: Parts,
    opts: RunOptions,
    shared: Arc<Shared>,
    rx: std::sync::mpsc::Receiver<Request>,
) {
    let mut sub = engine.subscribe(1 << 14);
    let mut cycles = 0u64;
    let mut registry = Registry {
        file: opts.registry_file.clone(),
        hosts: opts.registered.clone(),
    };
    let sim_step = Duration::from_secs_f64(opts.slice.as_secs_f64() * opts.speed.max(0.0));
    let mut pending: Vec<Pending> = Vec::new();
    // A reload validated during an episode, applied once it has ended.
    let mut deferred: Option<Reloaded> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        let wall = std::time::Instant::now();
        while let Ok(req) = rx.try_recv() {
            let req = match req {
                Request::Reload { reply } => {
                    let r = reload(&mut engine, &mut parts, &mut registry, &mut deferred, &opts);
                    let what = match &r {
                        Ok(m) => format!("config reload: {m}"),
                        Err((_, e)) => format!("config reload refused: {e}"),
                    };
                    shared.record(json!({"type": "critical", "what": what}));
                    sub = engine.subscribe(1 << 14);
                    publish_parts(&shared, &parts);
                    let _ = reply.send(r);
                    continue;
                }
                req => req,
            };
            if let Some((new, reply, r)) =
                handle_request(&mut engine, &mut parts, &mut registry, &mut pending, req)
            {
                // The outage timers and any episode carry over: a
                // registration must not restart the on-battery clock.
                let mut new = new;
                new.adopt(&engine);
                engine = new;
                sub = engine.subscribe(1 << 14);
                publish_parts(&shared, &parts);
                let _ = reply.send(r);
            }
        }
        if deferred.is_some() && !engine.sequencer().busy() {
            if let Some(new) = deferred.take() {
                let what = match apply_reload(&mut engine, &mut parts, &mut registry, new) {
                    Ok(m) => format!("config reload (deferred until the episode ended): {m}"),
                    Err(e) => {
                        format!("config reload (deferred) failed, the running config stays: {e}")
                    }
                };
                shared.record(json!({"type": "critical", "what": what}));
                sub = engine.subscribe(1 << 14);
                publish_parts(&shared, &parts);
            }
        }
        let clock = parts.clock.clone();
        match &clock {
            EngineClock::Sim(c) => {
                let end = c.now() + sim_step;
                c.block_on(engine.run_until(end));
            }
            EngineClock::System(_) => {
                let end = clock.now() + opts.slice;
                futures::executor::block_on(engine.run_until(end));
            }
        }
        // Drain first, publish the snapshot, then the events: whoever
        // reacts to an event reads a snapshot at least as new as it.
        let mut batch = Vec::new();
        while let Some(ev) = sub.try_next() {
            if matches!(&*ev, EngineEvent::Table(_)) {
                cycles += 1;
            }
            batch.extend(event_json(&ev));
        }
        answer_finished(&mut pending);
        let snap = Arc::new(snapshot(&engine, &parts, cycles));
        if let Ok(mut s) = shared.snapshot.lock() {
            *s = snap;
        }
        for v in batch {
            shared.record(v);
        }
        if matches!(clock, EngineClock::Sim(_)) {
            if let Some(rest) = opts.slice.checked_sub(wall.elapsed()) {
                std::thread::sleep(rest);
            }
        }
    }
}

/// A rebuilt engine, and the answer to send once it is in place.
type Rebuilt = (Engine, tokio::sync::oneshot::Sender<Reply>, Reply);

/// An operator's command running inside the engine, with where its answer
/// goes and what to call it.
type Pending = (
    upsvisor_core::ManualResult,
    tokio::sync::oneshot::Sender<Reply>,
    String,
);

/// The engine's refusal to take a command as the API's failure: 404, 409
/// with the reason, or 502.
fn refused(what: &str, e: &upsvisor_core::Error) -> (Failure, String) {
    let f = match e.kind() {
        upsvisor_core::ErrorKind::NotFound => Failure::NotFound,
        upsvisor_core::ErrorKind::InvalidState => Failure::Conflict,
        // (A name the configuration does not have, e.g. a test's group.)
        upsvisor_core::ErrorKind::Config => Failure::Invalid,
        _ => Failure::Upstream,
    };
    (f, format!("{what}: {e}"))
}

/// Answers the operators' commands that have finished; keeps the rest.
fn answer_finished(pending: &mut Vec<Pending>) {
    let mut i = 0;
    while i < pending.len() {
        let what = pending[i].2.clone();
        let r = match pending[i].0.try_recv() {
            Ok(None) => {
                i += 1;
                continue;
            }
            Ok(Some(Ok(()))) => Ok(format!("{what}: done")),
            // The platform's answer (a refusal too) is upstream's: 502.
            Ok(Some(Err(e))) => Err((Failure::Upstream, format!("{what}: {e}"))),
            Err(_) => Err((
                Failure::Upstream,
                format!("{what}: the engine was rebuilt before it finished"),
            )),
        };
        let (_, reply, _) = pending.swap_remove(i);
        let _ = reply.send(r);
    }
}

/// Carries out one request; after a registration or removal, returns the
/// rebuilt engine with the answer still to send.
fn handle_request(
    engine: &mut Engine,
    parts: &mut Parts,
    registry: &mut Registry,
    pending: &mut Vec<Pending>,
    req: Request,
) -> Option<Rebuilt> {
    match req {
        // Operators' commands run inside the engine (its deadline, journal
        // and audit), never on this thread: polling and power reads go on.
        // The answer goes when they finish (`answer_finished`).
        Request::Vm { vm, op, reply } => {
            let what = engine
                .table()
                .locate(&vm)
                .map(|(h, v)| format!("{op} {} on {h}", v.name))
                .unwrap_or_else(|| format!("{op} {vm}"));
            match engine.submit_vm(&vm, op) {
                Ok(rx) => pending.push((rx, reply, what)),
                Err(e) => {
                    let _ = reply.send(Err(refused(&what, &e)));
                }
            }
            None
        }
        Request::Host { host, op, reply } => {
            let what = format!("{op} host {host}");
            match engine.submit_host(&host, op) {
                Ok(rx) => pending.push((rx, reply, what)),
                Err(e) => {
                    let _ = reply.send(Err(refused(&what, &e)));
                }
            }
            None
        }
        Request::Test { target, reply } => {
            let r = match &target {
                TestTarget::Group(group) => engine
                    .start_test(group)
                    .map(|id| {
                        format!(
                            "episode {id}: live test of group {group} started (its VMs stop as in an outage, then start again)"
                        )
                    })
                    .map_err(|e| refused(&format!("test of group {group}"), &e)),
                TestTarget::Host(host) => engine
                    .start_host_test(host)
                    .map(|id| {
                        format!(
                            "episode {id}: live test of host {host} started (its VMs stop, it shuts down, it is powered on out of band and its VMs start again)"
                        )
                    })
                    .map_err(|e| refused(&format!("test of host {host}"), &e)),
            };
            let _ = reply.send(r);
            None
        }
        Request::Abort { reason, reply } => {
            let r = engine
                .abort_episode(&reason)
                .map(|()| format!("episode aborted: {reason}"))
                .map_err(|e| refused("abort", &e));
            let _ = reply.send(r);
            None
        }
        Request::Register { host, creds, reply } => {
            let (r, new) = register(engine, parts, registry, &host, creds);
            defer(new, reply, r)
        }
        Request::Unregister { host, reply } => {
            let (r, new) = unregister(engine, parts, registry, &host);
            defer(new, reply, r)
        }
        Request::Reload { reply } => {
            // (Handled by the engine thread before it gets here.)
            let _ = reply.send(Err((Failure::Conflict, "reload not handled".into())));
            None
        }
    }
}

/// The hosts list (and `armed`) change before the caller hears back; the
/// table follows with the new engine's first poll.
fn publish_parts(shared: &Shared, parts: &Parts) {
    if let Ok(mut s) = shared.snapshot.lock() {
        let mut n = (**s).clone();
        n.inventory = parts.inventory.clone();
        n.poll_seconds
            .retain(|h, _| parts.inventory.host(h).is_some());
        n.power_on = parts.power_on.clone();
        n.via = parts.via.clone();
        n.armed = parts.sequencer.is_armed();
        *s = Arc::new(n);
    }
}

/// A reload: the file is loaded and built in full first (a file that does
/// not load leaves everything as it runs); during an episode it is held
/// and applied when the episode ends, since a changed group, outlet or
/// final action mid-episode would change what the episode does half-way.
fn reload(
    engine: &mut Engine,
    parts: &mut Parts,
    registry: &mut Registry,
    deferred: &mut Option<Reloaded>,
    opts: &RunOptions,
) -> Reply {
    let Some(build) = &opts.reload else {
        return Err((
            Failure::Conflict,
            "nothing to reload: this daemon runs without a config file".into(),
        ));
    };
    let new =
        (build.0)().map_err(|e| (Failure::Invalid, format!("{e}; the running config stays")))?;
    if let Some(s) = engine.sequencer().status() {
        let later = restart_note(&new.restart_only);
        *deferred = Some(new);
        return Ok(format!(
            "the new config loads; episode {} is in progress ({}), so it applies when the episode ends{later}",
            s.id, s.phase
        ));
    }
    apply_reload(engine, parts, registry, new).map_err(|e| (Failure::Upstream, e))
}

fn restart_note(restart_only: &[String]) -> String {
    if restart_only.is_empty() {
        String::new()
    } else {
        format!(
            "; changed but applied only at a restart: {}",
            restart_only.join(", ")
        )
    }
}

/// Puts `new` in force: a new engine on the same clock, taking over the
/// running one's outage timers, readings and episode (as a registration
/// does, see `Engine::adopt`).
fn apply_reload(
    engine: &mut Engine,
    parts: &mut Parts,
    registry: &mut Registry,
    new: Reloaded,
) -> Result<String, String> {
    let Reloaded {
        parts: mut p,
        registered,
        restart_only,
    } = new;
    p.clock = parts.clock.clone();
    p.poll_times = parts.poll_times.clone();
    let mut e = p
        .engine()
        .map_err(|e| format!("engine rebuild failed: {e}; the running config stays"))?;
    e.adopt(engine);
    let word = |a: bool| if a { "armed" } else { "DISARMED" };
    let armed = match (parts.sequencer.is_armed(), p.sequencer.is_armed()) {
        (a, b) if a == b => word(b).to_string(),
        (a, b) => format!("{} -> {}", word(a), word(b)),
    };
    let summary = format!(
        "applied: {} hosts, {} devices, {armed}{}",
        p.inventory.hosts.len(),
        p.devices.len(),
        restart_note(&restart_only)
    );
    *engine = e;
    *parts = p;
    registry.hosts = registered;
    Ok(summary)
}

/// With a new engine the answer waits until it is in place; without, it
/// goes now.
fn defer(
    new: Option<Engine>,
    reply: tokio::sync::oneshot::Sender<Reply>,
    r: Reply,
) -> Option<Rebuilt> {
    match new {
        Some(e) => Some((e, reply, r)),
        None => {
            let _ = reply.send(r);
            None
        }
    }
}

fn unregister(
    engine: &Engine,
    parts: &mut Parts,
    registry: &mut Registry,
    id: &HostId,
) -> (Reply, Option<Engine>) {
    let Some(pos) = registry.hosts.iter().position(|h| h.host.id == id.as_str()) else {
        let r = if parts.inventory.host(id).is_some() {
            Err((
                Failure::Conflict,
                format!(
                    "host {id} is declared in the config file, not registered through the API; remove it there"
                ),
            ))
        } else {
            Err((Failure::NotFound, format!("no host {id}")))
        };
        return (r, None);
    };
    if engine.sequencer().busy() {
        return (
            Err((
                Failure::Conflict,
                "an episode is running; remove hosts once it has ended".into(),
            )),
            None,
        );
    }
    let old_inv = parts.inventory.clone();
    let Some(old_t) = parts.hosts.remove(id) else {
        return (
            Err((Failure::NotFound, format!("host {id} has no transport"))),
            None,
        );
    };
    parts.inventory.hosts.retain(|h| &h.id != id);
    let removed = registry.hosts.remove(pos);
    let restore = |parts: &mut Parts, registry: &mut Registry, removed| {
        parts.inventory = old_inv.clone();
        parts.hosts.insert(id.clone(), old_t.clone());
        registry.hosts.insert(pos, removed);
    };
    if let Err(e) = registry.save() {
        restore(parts, registry, removed);
        return (Err((Failure::Upstream, format!("not removed: {e}"))), None);
    }
    match parts.engine() {
        Ok(e) => (Ok(format!("unregistered {id}")), Some(e)),
        Err(e) => {
            restore(parts, registry, removed);
            let _ = registry.save();
            (
                Err((Failure::Upstream, format!("engine rebuild failed: {e}"))),
                None,
            )
        }
    }
}

fn register(
    engine: &Engine,
    parts: &mut Parts,
    registry: &mut Registry,
    h: &HostSection,
    creds: Option<Credentials>,
) -> (Reply, Option<Engine>) {
    let id = HostId::from(h.id.as_str());
    if h.id.is_empty() || parts.inventory.host(&id).is_some() {
        return (
            Err((
                Failure::Conflict,
                format!("host id `{}` is empty or taken", h.id),
            )),
            None,
        );
    }
    if engine.sequencer().busy() {
        return (
            Err((
                Failure::Conflict,
                "an episode is running; register hosts once it has ended".into(),
            )),
            None,
        );
    }
    if h.transport != crate::config::Transport::Sim
        && matches!(parts.clock, crate::build::EngineClock::Sim(_))
    {
        return (
            Err((
                Failure::Conflict,
                format!(
                    "the demo runs on a simulated clock, so it can only add `sim` hosts; register a `{}` host on a daemon started with --config",
                    h.transport
                ),
            )),
            None,
        );
    }
    let t =
        match crate::build::registered_transport("host", h, creds.clone(), parts.estate.as_ref()) {
            Ok(t) => t,
            Err(e) => return (Err((Failure::Upstream, e)), None),
        };
    let clock = parts.clock.arc();
    let deadline = clock.now() + Duration::from_secs(15);
    let probe = t.clone();
    let info = match parts
        .clock
        .block_on(with_deadline(&*clock, deadline, async move {
            probe.host_info().await
        })) {
        Ok(Ok(i)) => i,
        Ok(Err(e)) => {
            return (
                Err((Failure::Upstream, format!("connection check failed: {e}"))),
                None,
            );
        }
        Err(_) => {
            return (
                Err((
                    Failure::Upstream,
                    "connection check: no answer within 15 s".into(),
                )),
                None,
            );
        }
    };
    let mut old_inv = parts.inventory.clone();
    parts.inventory.hosts.push(h.entry());
    parts.hosts.insert(id.clone(), t);
    let engine = match parts.engine() {
        Ok(e) => e,
        Err(e) => {
            std::mem::swap(&mut parts.inventory, &mut old_inv);
            parts.hosts.remove(&id);
            return (
                Err((Failure::Upstream, format!("engine rebuild failed: {e}"))),
                None,
            );
        }
    };
    registry.hosts.push(RegisteredHost::new(h, creds.as_ref()));
    let kept = match registry.save() {
        Ok(()) if registry.file.is_some() => "kept across restarts",
        Ok(()) => "in memory only (set state_dir in the config to keep it across restarts)",
        Err(e) => {
            registry.hosts.pop();
            std::mem::swap(&mut parts.inventory, &mut old_inv);
            parts.hosts.remove(&id);
            return (
                Err((Failure::Upstream, format!("not registered: {e}"))),
                None,
            );
        }
    };
    (
        Ok(format!(
            "registered {id}: {} {} answers; polled from the next cycle (not fed by any outlet, so not in the shutdown plan); {kept}",
            info.product.as_deref().unwrap_or("?"),
            info.version.as_deref().unwrap_or("")
        )),
        Some(engine),
    )
}
