//! The I/O shell: blocking ureq requests, each on its own short-lived
//! thread, handed back as futures (no async runtime needed).

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::BoxFuture;
use upsvisor_core::Error;

use crate::config::MobConfig;
use crate::tls::{self, Refusal};

/// One HTTP exchange's outcome.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// `vmware_soap_session=...` from `Set-Cookie`, if sent.
    pub cookie: Option<String>,
}

const COOKIE: &str = "vmware_soap_session";

fn session_cookie<'a>(set_cookies: impl IntoIterator<Item = &'a str>) -> Option<String> {
    set_cookies.into_iter().find_map(|c| {
        let pair = c.split(';').next()?.trim();
        pair.strip_prefix(COOKIE)?.strip_prefix('=')?;
        Some(pair.to_owned())
    })
}

/// Standard base64 (for the basic-auth header).
pub(crate) fn base64(input: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The ureq backend for one host.
pub(crate) struct Http {
    agent: ureq::Agent,
    base: String,
    target: String,
    auth: String,
    max_reply: usize,
    timeout: Duration,
    refusal: Refusal,
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

impl Http {
    pub(crate) fn new(cfg: &MobConfig, target: String) -> Result<Self, Error> {
        let refusal = Refusal::default();
        let agent = ureq::AgentBuilder::new()
            .tls_config(tls::client_config(cfg, refusal.clone())?)
            .timeout_connect(cfg.timeout)
            .timeout(cfg.timeout)
            .redirects(0)
            .max_idle_connections_per_host(2)
            .build();
        let userpass = format!(
            "{}:{}",
            cfg.credentials.username,
            cfg.credentials.password.expose()
        );
        Ok(Http {
            agent,
            base: cfg.url.clone(),
            target,
            auth: format!("Basic {}", base64(userpass.as_bytes())),
            max_reply: cfg.max_page_bytes,
            timeout: cfg.timeout,
            refusal,
        })
    }

    /// GET `path_query` (or POST `form` to it), on a thread of its own.
    pub(crate) fn request(
        self: &Arc<Self>,
        path_query: String,
        form: Option<String>,
        cookie: Option<String>,
    ) -> BoxFuture<'static, Result<Reply, Error>> {
        let me = Arc::clone(self);
        let (tx, rx) = oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("upsvisor-mob".into())
            .spawn(move || {
                let _ = tx.send(me.run(&path_query, form.as_deref(), cookie.as_deref()));
            });
        let target = self.target.clone();
        Box::pin(async move {
            if let Err(e) = spawned {
                return Err(Error::unreachable(
                    target,
                    format!("cannot start an I/O thread: {e}"),
                ));
            }
            rx.await.unwrap_or_else(|_| {
                Err(Error::unreachable(
                    target,
                    "the I/O thread ended without an answer",
                ))
            })
        })
    }

    /// A pause on a thread of its own (no timer runtime needed).
    pub(crate) fn sleep(d: Duration) -> BoxFuture<'static, ()> {
        let (tx, rx) = oneshot::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("upsvisor-mob-sleep".into())
            .spawn(move || {
                std::thread::sleep(d);
                let _ = tx.send(());
            });
        Box::pin(async move {
            if spawned.is_ok() {
                let _ = rx.await;
            }
        })
    }

    fn run(
        &self,
        path_query: &str,
        form: Option<&str>,
        cookie: Option<&str>,
    ) -> Result<Reply, Error> {
        if let Ok(mut r) = self.refusal.lock() {
            *r = None;
        }
        let url = format!("{}{}", self.base, path_query);
        let mut req = match form {
            Some(_) => self
                .agent
                .post(&url)
                .set("Content-Type", "application/x-www-form-urlencoded"),
            None => self.agent.get(&url),
        }
        .set("Authorization", &self.auth);
        if let Some(c) = cookie {
            req = req.set("Cookie", c);
        }
        let sent = match form {
            Some(f) => req.send_string(f),
            None => req.call(),
        };
        let resp = match sent {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => return Err(self.transport_error(t)),
        };
        let status = resp.status();
        let cookie = session_cookie(resp.all("set-cookie"));
        let mut buf = Vec::new();
        let limit = self.max_reply as u64 + 1;
        if let Err(e) = resp.into_reader().take(limit).read_to_end(&mut buf) {
            return Err(if is_timeout(&e) {
                Error::timeout(
                    format!("reading a MOB page of {}", self.target),
                    self.timeout,
                )
            } else {
                Error::protocol(
                    &self.target,
                    format!("page cut short ({e}); {} bytes read", buf.len()),
                )
            });
        }
        if buf.len() > self.max_reply {
            return Err(Error::protocol(
                &self.target,
                format!("MOB page larger than the {}-byte limit", self.max_reply),
            ));
        }
        Ok(Reply {
            status,
            body: buf,
            cookie,
        })
    }

    fn transport_error(&self, t: ureq::Transport) -> Error {
        if let Some(msg) = self.refusal.lock().ok().and_then(|mut r| r.take()) {
            return Error::auth(&self.target, msg);
        }
        let io_timeout = std::error::Error::source(&t)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(is_timeout);
        let text = t.to_string();
        match t.kind() {
            _ if io_timeout || text.contains("timed out") => {
                Error::timeout(format!("MOB request to {}", self.target), self.timeout)
            }
            ureq::ErrorKind::BadStatus
            | ureq::ErrorKind::BadHeader
            | ureq::ErrorKind::TooManyRedirects => {
                Error::protocol(&self.target, format!("not an HTTP reply: {text}"))
            }
            ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme => {
                Error::config("mob.url", text)
            }
            _ => Error::unreachable(&self.target, text),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"user:pass"), "dXNlcjpwYXNz");
    }
}
