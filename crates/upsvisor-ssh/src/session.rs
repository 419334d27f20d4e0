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
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::PrivateKeyWithHashAlg;
use russh::keys::ssh_key::{HashAlg, PublicKey};
use russh::{ChannelMsg, Sig};
use tokio::runtime::Handle as RtHandle;
use upsvisor_core::Error;

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

type Conn = Arc<Handle<Client>>;

/// One SSH connection to one host, opened on first use and reopened after
/// it drops.
pub(crate) struct Session {
    cfg: Arc<SshConfig>,
    key: Option<Arc<russh::keys::PrivateKey>>,
    conn: tokio::sync::Mutex<Option<Conn>>,
    connects: std::sync::atomic::AtomicU64,
    /// Open channels at once: OpenSSH allows 10 per connection by default
    /// (`MaxSessions`).
    channels: tokio::sync::Semaphore,
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
            channels: tokio::sync::Semaphore::new(cfg.max_channels),
            cfg,
            key,
            conn: tokio::sync::Mutex::new(None),
            connects: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// How many SSH connections were opened so far.
    pub(crate) fn connects(&self) -> u64 {
        self.connects.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes the connection (a later call reconnects).
    pub(crate) async fn disconnect(&self) {
        if let Some(c) = self.conn.lock().await.take() {
            let _ = c
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        }
    }

    async fn connection(&self) -> Result<Conn, Error> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
            tracing::debug!(host = %self.cfg.target(), "SSH connection dropped; reconnecting");
        }
        *slot = None;
        let t = self.cfg.connect_timeout;
        let c = tokio::time::timeout(t, self.connect())
            .await
            .map_err(|_| Error::timeout(format!("SSH connect to {}", self.cfg.target()), t))??;
        self.connects
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let c = Arc::new(c);
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
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 3,
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

    /// Runs one command line under the command deadline and output cap.
    ///
    /// Only opening the channel is retried (once, on a fresh connection):
    /// a command that was sent is never sent twice.
    pub(crate) async fn exec(&self, line: &str, what: &str) -> Result<Output, Error> {
        let target = self.cfg.target();
        let t = self.cfg.command_timeout;
        let _permit = tokio::time::timeout(t, self.channels.acquire())
            .await
            .map_err(|_| {
                Error::timeout(
                    format!("{what} on {target} (waiting for a free channel)"),
                    t,
                )
            })?
            .map_err(|_| Error::protocol(&target, "channel limiter closed"))?;
        let mut attempt = 0;
        let channel = loop {
            let conn = self.connection().await?;
            match conn.channel_open_session().await {
                Ok(ch) => break ch,
                // The server answered (e.g. too many sessions): the
                // connection is fine, the channel is not.
                Err(russh::Error::ChannelOpenFailure(f)) => {
                    return Err(Error::unreachable(
                        &target,
                        format!("the server refused a new channel: {f:?}"),
                    ));
                }
                Err(e) => {
                    tracing::debug!(host = %target, error = %e, "channel open failed");
                    let mut slot = self.conn.lock().await;
                    if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                        *slot = None;
                    }
                    drop(slot);
                    attempt += 1;
                    if attempt >= 2 {
                        return Err(map_russh(&target, e));
                    }
                }
            }
        };
        let mut channel = channel;
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
            out.stdout = String::from_utf8_lossy(&so).into_owned();
            out.stderr = String::from_utf8_lossy(&se).into_owned();
            Ok(out)
        };
        let result = match tokio::time::timeout(t, run).await {
            Ok(r) => r,
            Err(_) => Err(Error::timeout(format!("{what} on {target}"), t)),
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
    pw: &upsvisor_core::Secret,
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
            Error::unreachable(target, format!("channel open refused: {f:?}"))
        }
        other => Error::protocol(target, other),
    }
}
