//! The I/O shell: one russh connection per host, reused, rebuilt after a
//! drop; commands run under a deadline and an output cap.
//!
//! russh needs tokio. So that the engine can run under any executor (or
//! `futures::executor::block_on`), every call is spawned onto one internal
//! single-threaded tokio runtime shared by all SSH transports in the
//! process (thread `upsvisor-ssh`), and the caller awaits a plain join
//! handle. Dropping the caller's future aborts the spawned work.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::PrivateKeyWithHashAlg;
use russh::keys::ssh_key::{HashAlg, PublicKey};
use russh::{ChannelMsg, Sig};
use tokio::runtime::Handle as RtHandle;
use upsvisor_traits::Error;

use crate::config::{Auth, SshConfig};

/// What one remote command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit status, if the server reported one.
    pub status: Option<u32>,
    /// Signal that ended the command, if any.
    pub signal: Option<String>,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

impl Output {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

fn runtime() -> Result<RtHandle, Error> {
    static RT: OnceLock<Result<RtHandle, String>> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("upsvisor-ssh".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .map_err(|e| e.to_string())?;
        Ok(handle)
    })
    .clone()
    .map_err(|e| Error::unsupported(format!("cannot start the SSH runtime thread: {e}")))
}

/// Aborts the spawned task when the caller's future is dropped.
struct Spawned<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Spawned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for Spawned<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// Runs `fut` on the internal runtime; awaitable from any executor.
pub(crate) async fn on_runtime<T: Send + 'static>(
    fut: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    let rt = runtime()?;
    match Spawned(rt.spawn(fut)).await {
        Ok(r) => r,
        Err(e) => Err(Error::protocol(
            "ssh runtime",
            format!("internal task failed: {e}"),
        )),
    }
}

/// What the host-key check concluded; read after a failed handshake to say
/// why.
#[derive(Debug, Clone, Default)]
struct Verdict(Arc<Mutex<Option<String>>>);

impl Verdict {
    fn set(&self, s: String) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(s);
        }
    }
    fn take(&self) -> Option<String> {
        self.0.lock().ok().and_then(|mut g| g.take())
    }
}

struct Client {
    cfg: Arc<SshConfig>,
    verdict: Verdict,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key: &PublicKey = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key,
            russh::keys::PublicKeyOrCertificate::Certificate(_) => {
                self.verdict.set(
                    "the server presented a host certificate; pin a plain host key instead".into(),
                );
                return Ok(false);
            }
        };
        let fp = key.fingerprint(HashAlg::Sha256);
        if self.cfg.pins.iter().any(|p| p.matches(key)) {
            return Ok(true);
        }
        if self.cfg.pins.is_empty() {
            if self.cfg.dangerous_any_host_key {
                tracing::warn!(host = %self.cfg.target(), fingerprint = %fp,
                    "accepting an unpinned SSH host key (dangerous_accept_any_host_key)");
                return Ok(true);
            }
            self.verdict.set(format!(
                "unknown host key {fp} ({}): no key is pinned; verify it out of band and pin it",
                key.algorithm()
            ));
        } else {
            let pinned: Vec<String> = self.cfg.pins.iter().map(|p| p.fingerprint()).collect();
            self.verdict.set(format!(
                "host key changed: the server presented {fp} ({}), pinned {}; refusing (possible impersonation)",
                key.algorithm(),
                pinned.join(", ")
            ));
        }
        Ok(false)
    }
}

/// One SSH connection and whether a call gave up on it.
pub(crate) struct ConnEntry {
    handle: Handle<Client>,
    /// Set when a call on this connection timed out or was cancelled: it
    /// may be half-open (a lost NAT or firewall state swallows traffic
    /// without FIN or RST), so no further call takes it.
    poisoned: AtomicBool,
}

impl ConnEntry {
    fn usable(&self) -> bool {
        !self.handle.is_closed() && !self.poisoned.load(Ordering::Relaxed)
    }
}

type Conn = Arc<ConnEntry>;

/// The per-connection channel limit: configured (`max_channels`), then
/// lowered to what the server showed it allows when it refuses a channel
/// (`SSH_MSG_CHANNEL_OPEN_FAILURE`, administratively prohibited or
/// resource shortage: OpenSSH's `MaxSessions`). Calls over the limit wait
/// in line.
struct Limiter {
    state: Mutex<LimState>,
    freed: tokio::sync::Notify,
}

#[derive(Debug, Clone, Copy)]
struct LimState {
    limit: usize,
    /// Calls holding a slot (opening, running or reading).
    in_use: usize,
    /// Of those, calls whose channel is open.
    open: usize,
    /// The most channels ever open at once: the server allowed that many.
    max_open: usize,
    /// Channel refusals seen.
    refusals: u64,
}

impl Limiter {
    fn new(limit: usize) -> Limiter {
        Limiter {
            state: Mutex::new(LimState {
                limit,
                in_use: 0,
                open: 0,
                max_open: 0,
                refusals: 0,
            }),
            freed: tokio::sync::Notify::new(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut LimState) -> T) -> T {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Waits for a slot (the caller's deadline bounds the wait).
    async fn acquire(&self) -> Slot<'_> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let got = self.with(|s| {
                if s.in_use < s.limit {
                    s.in_use += 1;
                    true
                } else {
                    false
                }
            });
            if got {
                return Slot {
                    lim: self,
                    open: false,
                };
            }
            freed.await;
        }
    }

    /// The server refused a channel while `open` of ours were open. Its
    /// limit is at least the most it ever allowed at once (a server still
    /// counts sessions it is closing, so `open` alone can undershoot) and
    /// at most what was open now, whichever is higher, and at least 1.
    /// Returns the new limit and whether it went down.
    fn refused(&self) -> (usize, bool) {
        self.with(|s| {
            s.refusals += 1;
            let was = s.limit;
            s.limit = s.open.max(s.max_open).max(1).min(s.limit);
            (s.limit, s.limit < was)
        })
    }
}

/// A place in the [`Limiter`]; freed on drop.
struct Slot<'a> {
    lim: &'a Limiter,
    open: bool,
}

impl Slot<'_> {
    fn opened(&mut self) {
        if !self.open {
            self.open = true;
            self.lim.with(|s| {
                s.open += 1;
                s.max_open = s.max_open.max(s.open);
            });
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let open = self.open;
        self.lim.with(|s| {
            s.in_use = s.in_use.saturating_sub(1);
            if open {
                s.open = s.open.saturating_sub(1);
            }
        });
        self.lim.freed.notify_waiters();
    }
}

/// What one call is doing, kept outside its future so that a timeout or a
/// cancellation can say where it was and poison the connection it used.
#[derive(Default)]
struct Progress {
    phase: &'static str,
    conn: Option<Conn>,
    refused: u32,
    done: bool,
}

/// Poisons the call's connection unless the call finished (timeout or
/// cancellation by the caller dropping the future alike).
struct PoisonUnlessDone<'a>(&'a Mutex<Progress>);

impl Drop for PoisonUnlessDone<'_> {
    fn drop(&mut self) {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !g.done {
            if let Some(c) = &g.conn {
                c.poisoned.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// One SSH connection to one host, opened on first use and reopened after
/// it drops or after a call on it timed out.
pub(crate) struct Session {
    cfg: Arc<SshConfig>,
    key: Option<Arc<russh::keys::PrivateKey>>,
    conn: tokio::sync::Mutex<Option<Conn>>,
    connects: std::sync::atomic::AtomicU64,
    channels: Limiter,
}

impl Session {
    pub(crate) fn new(cfg: Arc<SshConfig>) -> Result<Session, Error> {
        cfg.validate()?;
        let key = match &cfg.auth {
            Auth::Key { pem, passphrase } => Some(Arc::new(
                russh::keys::decode_secret_key(
                    pem.expose(),
                    passphrase.as_ref().map(|p| p.expose()),
                )
                .map_err(|_| {
                    Error::config(
                        "private_key",
                        "cannot decode the private key (wrong format or passphrase)",
                    )
                })?,
            )),
            _ => None,
        };
        Ok(Session {
            channels: Limiter::new(cfg.max_channels),
            cfg,
            key,
            conn: tokio::sync::Mutex::new(None),
            connects: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// How many SSH connections were opened so far.
    pub(crate) fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// The per-connection channel limit in force (configured, or lower
    /// once the server refused a channel), and how many refusals were seen.
    pub(crate) fn channel_limit(&self) -> (usize, u64) {
        self.channels.with(|s| (s.limit, s.refusals))
    }

    /// Closes the connection (a later call reconnects).
    pub(crate) async fn disconnect(&self) {
        if let Some(c) = self.conn.lock().await.take() {
            let _ = c
                .handle
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        }
    }

    /// The shared connection, or a new one; connecting is bounded by the
    /// connect timeout and by the call's `deadline`.
    async fn connection(&self, deadline: tokio::time::Instant) -> Result<Conn, Error> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            if c.usable() {
                return Ok(c.clone());
            }
            tracing::debug!(host = %self.cfg.target(), poisoned = c.poisoned.load(Ordering::Relaxed),
                "SSH connection dropped or given up on; opening a new one");
        }
        *slot = None;
        let t = self.cfg.connect_timeout;
        let until = deadline.min(tokio::time::Instant::now() + t);
        let handle = tokio::time::timeout_at(until, self.connect())
            .await
            .map_err(|_| Error::timeout(format!("SSH connect to {}", self.cfg.target()), t))??;
        self.connects.fetch_add(1, Ordering::Relaxed);
        let c = Arc::new(ConnEntry {
            handle,
            poisoned: AtomicBool::new(false),
        });
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn connect(&self) -> Result<Handle<Client>, Error> {
        let target = self.cfg.target();
        let stream = tokio::net::TcpStream::connect((self.cfg.host.as_str(), self.cfg.port))
            .await
            .map_err(|e| Error::unreachable(&target, e))?;
        let _ = stream.set_nodelay(true);
        let config = client::Config {
            keepalive_interval: Some(self.cfg.keepalive_interval),
            keepalive_max: self.cfg.keepalive_max,
            inactivity_timeout: None,
            ..client::Config::default()
        };
        let verdict = Verdict::default();
        let handler = Client {
            cfg: self.cfg.clone(),
            verdict: verdict.clone(),
        };
        let mut h = client::connect_stream(Arc::new(config), stream, handler)
            .await
            .map_err(|e| match verdict.take() {
                Some(why) => Error::auth(&target, why),
                None => map_russh(&target, e),
            })?;
        let user = self.cfg.user.clone();
        let res = match (&self.cfg.auth, &self.key) {
            (Auth::Password(pw), _) => {
                let r = h
                    .authenticate_password(user.clone(), pw.expose())
                    .await
                    .map_err(|e| map_russh(&target, e))?;
                match r {
                    client::AuthResult::Failure {
                        remaining_methods, ..
                    } if remaining_methods.contains(&russh::MethodKind::KeyboardInteractive) => {
                        // ESXi (and other PAM setups) take passwords only
                        // through keyboard-interactive.
                        keyboard_interactive(&mut h, &user, pw)
                            .await
                            .map_err(|e| map_russh(&target, e))?
                    }
                    other => other,
                }
            }
            (Auth::Key { .. }, Some(key)) => {
                let hash = h
                    .best_supported_rsa_hash()
                    .await
                    .map_err(|e| map_russh(&target, e))?
                    .flatten();
                h.authenticate_publickey(
                    user.clone(),
                    PrivateKeyWithHashAlg::new(key.clone(), hash),
                )
                .await
                .map_err(|e| map_russh(&target, e))?
            }
            _ => return Err(Error::config("auth", "no credentials")),
        };
        if !res.success() {
            let how = match &self.cfg.auth {
                Auth::Password(_) => "password".to_owned(),
                _ => match &self.key {
                    Some(k) => {
                        format!("public key {}", k.public_key().fingerprint(HashAlg::Sha256))
                    }
                    None => "key".to_owned(),
                },
            };
            return Err(Error::auth(
                &target,
                format!("the server refused the {how} for user {user:?}"),
            ));
        }
        Ok(h)
    }

    /// Runs one command line under one deadline (the command timeout) that
    /// covers everything: waiting for a channel slot, taking or opening the
    /// connection, opening the channel, running and reading. Past it the
    /// call is a [`Timeout`](upsvisor_traits::ErrorKind::Timeout) naming the
    /// phase, and the connection it used is discarded (it may be
    /// half-open); the next call opens a fresh one. A caller dropping the
    /// call (its own deadline) discards the connection the same way.
    ///
    /// A session channel the server refuses (`SSH_MSG_CHANNEL_OPEN_FAILURE`
    /// with administratively prohibited, connect failed (OpenSSH over
    /// `MaxSessions`) or resource shortage: a session limit) lowers the channel limit to the
    /// number open at that moment, and the call waits its turn again and
    /// retries within its deadline. Opening a channel is otherwise retried
    /// once, on a fresh connection, when the connection turns out dead: a
    /// command that was sent is never sent twice.
    pub(crate) async fn exec(&self, line: &str, what: &str) -> Result<Output, Error> {
        self.exec_for(line, what, self.cfg.command_timeout, false)
            .await
    }

    /// [`Session::exec`] within `t` instead of the configured command
    /// timeout. With `stop`, a command still running shortly before `t` is
    /// signalled (`TERM`, RFC 4254 6.9) and its channel closed. Best
    /// effort only: OpenSSH refuses the signal without privilege
    /// separation for the session, and a closed channel does not end a
    /// command that neither reads nor writes (see
    /// `SshTransport::run_command` for the watchdog that does).
    pub(crate) async fn exec_for(
        &self,
        line: &str,
        what: &str,
        t: Duration,
        stop: bool,
    ) -> Result<Output, Error> {
        let target = self.cfg.target();
        let deadline = tokio::time::Instant::now() + t;
        let progress = Mutex::new(Progress::default());
        let _poison = PoisonUnlessDone(&progress);
        let run_until = stop.then(|| deadline - (t / 10).min(Duration::from_millis(500)));
        let r = tokio::time::timeout_at(
            deadline,
            self.exec_within(line, what, deadline, run_until, &progress),
        )
        .await;
        let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
        match r {
            Ok(r) => {
                p.done = true;
                r
            }
            Err(_) => {
                let refused = if p.refused > 0 {
                    let (limit, _) = self.channel_limit();
                    format!(
                        "; the server refused {} channel(s), channel limit now {limit}",
                        p.refused
                    )
                } else {
                    String::new()
                };
                Err(Error::timeout(
                    format!("{what} on {target} (while {}{refused})", p.phase),
                    t,
                ))
            }
        }
    }

    async fn exec_within(
        &self,
        line: &str,
        what: &str,
        deadline: tokio::time::Instant,
        run_until: Option<tokio::time::Instant>,
        progress: &Mutex<Progress>,
    ) -> Result<Output, Error> {
        let target = self.cfg.target();
        let set = |phase: &'static str, conn: Option<&Conn>| {
            let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
            p.phase = phase;
            if let Some(c) = conn {
                p.conn = Some(c.clone());
            }
        };
        let mut attempt = 0;
        let mut refusals = 0u32;
        let (mut channel, _slot) = loop {
            set("waiting for a free channel", None);
            let mut slot = self.channels.acquire().await;
            set("connecting", None);
            let conn = self.connection(deadline).await?;
            set("opening a channel", Some(&conn));
            match conn.handle.channel_open_session().await {
                Ok(ch) => {
                    slot.opened();
                    break (ch, slot);
                }
                // OpenSSH refuses a session over `MaxSessions` with
                // "connect failed" ("open failed"); other servers say
                // administratively prohibited or resource shortage.
                Err(russh::Error::ChannelOpenFailure(
                    f @ (russh::ChannelOpenFailure::AdministrativelyProhibited
                    | russh::ChannelOpenFailure::ConnectFailed
                    | russh::ChannelOpenFailure::ResourceShortage),
                )) => {
                    // The server's session limit: learn it, queue, retry.
                    let (limit, lowered) = self.channels.refused();
                    refusals += 1;
                    progress.lock().unwrap_or_else(|e| e.into_inner()).refused = refusals;
                    if lowered {
                        tracing::warn!(host = %target, what, reason = ?f, channel_limit = limit,
                            "the server refused a channel (session limit, e.g. MaxSessions); \
                             lowered the channel limit and queued the call");
                    } else {
                        tracing::debug!(host = %target, what, reason = ?f, channel_limit = limit,
                            "the server refused a channel while closing others; queued the call");
                    }
                    drop(slot);
                    // Let the server finish closing the sessions it counts.
                    let pause = Duration::from_millis(20 * u64::from(refusals.min(10)));
                    tokio::time::sleep(pause).await;
                }
                Err(russh::Error::ChannelOpenFailure(f)) => {
                    return Err(Error::protocol(
                        &target,
                        format!("the server refused a session channel: {f:?}"),
                    ));
                }
                Err(e) => {
                    tracing::debug!(host = %target, error = %e, "channel open failed");
                    let mut s = self.conn.lock().await;
                    if s.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                        *s = None;
                    }
                    drop(s);
                    attempt += 1;
                    if attempt >= 2 {
                        return Err(map_russh(&target, e));
                    }
                }
            }
        };
        set("running the command", None);
        let limit = self.cfg.max_output;
        let run = async {
            channel
                .exec(true, line.as_bytes())
                .await
                .map_err(|e| map_russh(&target, e))?;
            let mut out = Output::default();
            let (mut so, mut se) = (Vec::new(), Vec::new());
            while let Some(msg) = channel.wait().await {
                match msg {
                    ChannelMsg::Data { data } => {
                        if so.len() + se.len() + data.len() > limit {
                            return Err(Error::protocol(
                                &target,
                                format!("{what}: output exceeds the {limit}-byte limit"),
                            ));
                        }
                        so.extend_from_slice(&data);
                    }
                    ChannelMsg::ExtendedData { data, .. } => {
                        if so.len() + se.len() + data.len() > limit {
                            return Err(Error::protocol(
                                &target,
                                format!("{what}: output exceeds the {limit}-byte limit"),
                            ));
                        }
                        se.extend_from_slice(&data);
                    }
                    ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        out.signal = Some(format!("{signal_name:?}"))
                    }
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            // RFC 4254 6.10: a server reports how a command ended
            // (exit-status or exit-signal) before closing its channel. A
            // channel that ends without either (sshd killed, connection
            // lost mid-command) leaves the outcome unknown: that is the
            // host being unreachable (transient, so callers look again),
            // never a protocol fault that would be taken as final.
            if out.status.is_none() && out.signal.is_none() {
                return Err(Error::unreachable(
                    &target,
                    format!(
                        "{what}: the connection closed before the command reported how it ended (outcome unknown)"
                    ),
                ));
            }
            out.stdout = String::from_utf8_lossy(&so).into_owned();
            out.stderr = String::from_utf8_lossy(&se).into_owned();
            Ok(out)
        };
        let result = match run_until {
            Some(at) => tokio::time::timeout_at(at, run).await.unwrap_or_else(|_| {
                Err(Error::timeout(
                    format!("{what} on {target} (still running: stopped)"),
                    at.saturating_duration_since(tokio::time::Instant::now()),
                ))
            }),
            None => run.await,
        };
        if result.is_err() {
            // Best effort: stop the remote command, then drop the channel.
            let _ = channel.signal(Sig::TERM).await;
            let _ = channel.close().await;
        }
        result
    }
}

/// Answers keyboard-interactive prompts with the password: each round's
/// hidden prompts (at most one per round, at most four rounds) get the
/// password, echoed ones an empty answer. Anything else fails the login.
async fn keyboard_interactive(
    h: &mut Handle<Client>,
    user: &str,
    pw: &upsvisor_traits::Secret,
) -> Result<client::AuthResult, russh::Error> {
    use client::KeyboardInteractiveAuthResponse as R;
    let mut r = h
        .authenticate_keyboard_interactive_start(user.to_owned(), None::<String>)
        .await?;
    for _ in 0..4 {
        match r {
            R::Success => return Ok(client::AuthResult::Success),
            R::Failure {
                remaining_methods,
                partial_success,
            } => {
                return Ok(client::AuthResult::Failure {
                    remaining_methods,
                    partial_success,
                });
            }
            R::InfoRequest { prompts, .. } => {
                if prompts.iter().filter(|p| !p.echo).count() > 1 {
                    break;
                }
                let answers = prompts
                    .iter()
                    .map(|p| {
                        if p.echo {
                            String::new()
                        } else {
                            pw.expose().to_owned()
                        }
                    })
                    .collect();
                r = h.authenticate_keyboard_interactive_respond(answers).await?;
            }
        }
    }
    Ok(client::AuthResult::Failure {
        remaining_methods: russh::MethodSet::empty(),
        partial_success: false,
    })
}

fn map_russh(target: &str, e: russh::Error) -> Error {
    use russh::Error as E;
    match e {
        E::IO(io) => Error::unreachable(target, io),
        E::ConnectionTimeout | E::KeepaliveTimeout | E::InactivityTimeout => {
            Error::unreachable(target, e)
        }
        E::Disconnect | E::HUP | E::SendError | E::RecvError => Error::unreachable(target, e),
        E::NoCommonAlgo { .. } | E::UnknownAlgo | E::Kex | E::KexInit | E::Version => {
            Error::protocol(target, format!("SSH handshake failed: {e}"))
        }
        E::UnknownKey | E::WrongServerSig => Error::auth(target, format!("host key refused: {e}")),
        E::NoAuthMethod | E::NotAuthenticated | E::UnsupportedAuthMethod => Error::auth(target, e),
        E::ChannelOpenFailure(f) => {
            Error::protocol(target, format!("the server refused a channel: {f:?}"))
        }
        other => Error::protocol(target, other),
    }
}
