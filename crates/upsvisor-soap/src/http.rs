//! The I/O shell: POST one envelope, get status, body and session cookie.

use std::time::Duration;

use futures::future::BoxFuture;
use upsvisor_core::Error;

/// One HTTP exchange's outcome.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// `vmware_soap_session=...` from `Set-Cookie`, if sent.
    pub cookie: Option<String>,
}

/// An HTTP backend. Futures are `'static` so that a dropped call (deadline
/// passed) leaves nothing borrowed behind.
pub(crate) trait Backend: Send + Sync {
    fn post(
        &self,
        body: String,
        cookie: Option<String>,
        action: String,
    ) -> BoxFuture<'static, Result<Reply, Error>>;
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
}

pub(crate) const COOKIE: &str = "vmware_soap_session";

/// The session cookie (`name=value`) among `Set-Cookie` values.
pub(crate) fn session_cookie<'a>(set_cookies: impl IntoIterator<Item = &'a str>) -> Option<String> {
    set_cookies.into_iter().find_map(|c| {
        let pair = c.split(';').next()?.trim();
        pair.strip_prefix(COOKIE)?.strip_prefix('=')?;
        Some(pair.to_owned())
    })
}

#[cfg(feature = "ureq")]
pub(crate) mod ureq_backend {
    use std::io::Read;
    use std::sync::Arc;
    use std::time::Duration;

    use futures::FutureExt;
    use futures::channel::oneshot;
    use futures::future::BoxFuture;
    use upsvisor_core::Error;

    use super::{Backend, Reply, session_cookie};
    use crate::config::SoapConfig;
    use crate::tls::{self, Refusal};

    /// Blocking ureq requests, each on its own short-lived thread, handed
    /// back through a oneshot channel: no async runtime needed.
    pub(crate) struct UreqBackend {
        agent: ureq::Agent,
        url: String,
        target: String,
        max_reply: usize,
        timeout: Duration,
        refusal: Refusal,
    }

    impl UreqBackend {
        pub(crate) fn new(cfg: &SoapConfig, url: String, target: String) -> Result<Self, Error> {
            let refusal = Refusal::default();
            let agent = ureq::AgentBuilder::new()
                .tls_config(tls::client_config(cfg, refusal.clone())?)
                .timeout_connect(cfg.timeout)
                .timeout(cfg.timeout)
                .redirects(0)
                .max_idle_connections_per_host(4)
                .build();
            Ok(UreqBackend {
                agent,
                url,
                target,
                max_reply: cfg.max_reply_bytes,
                timeout: cfg.timeout,
                refusal,
            })
        }
    }

    fn is_timeout(e: &std::io::Error) -> bool {
        matches!(
            e.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        )
    }

    struct Job {
        agent: ureq::Agent,
        url: String,
        target: String,
        max_reply: usize,
        timeout: Duration,
        refusal: Refusal,
    }

    impl Job {
        fn run(self, body: String, cookie: Option<String>, action: String) -> Result<Reply, Error> {
            if let Ok(mut r) = self.refusal.lock() {
                *r = None;
            }
            let mut req = self
                .agent
                .post(&self.url)
                .set("Content-Type", "text/xml; charset=utf-8")
                .set("SOAPAction", &action);
            if let Some(c) = &cookie {
                req = req.set("Cookie", c);
            }
            let resp = match req.send_string(&body) {
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
                        format!("reading the reply of {}", self.target),
                        self.timeout,
                    )
                } else {
                    Error::protocol(
                        &self.target,
                        format!("reply cut short ({e}); {} bytes read", buf.len()),
                    )
                });
            }
            if buf.len() > self.max_reply {
                return Err(Error::protocol(
                    &self.target,
                    format!("reply larger than the {}-byte limit", self.max_reply),
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
                    Error::timeout(format!("SOAP request to {}", self.target), self.timeout)
                }
                ureq::ErrorKind::BadStatus
                | ureq::ErrorKind::BadHeader
                | ureq::ErrorKind::TooManyRedirects => {
                    Error::protocol(&self.target, format!("not an HTTP reply: {text}"))
                }
                ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme => {
                    Error::config("soap.url", text)
                }
                _ => Error::unreachable(&self.target, text),
            }
        }
    }

    impl Backend for UreqBackend {
        fn post(
            &self,
            body: String,
            cookie: Option<String>,
            action: String,
        ) -> BoxFuture<'static, Result<Reply, Error>> {
            let job = Job {
                agent: self.agent.clone(),
                url: self.url.clone(),
                target: self.target.clone(),
                max_reply: self.max_reply,
                timeout: self.timeout,
                refusal: Arc::clone(&self.refusal),
            };
            let target = self.target.clone();
            let (tx, rx) = oneshot::channel();
            let spawned = std::thread::Builder::new()
                .name("upsvisor-soap".into())
                .spawn(move || {
                    let _ = tx.send(job.run(body, cookie, action));
                });
            async move {
                if let Err(e) = spawned {
                    return Err(Error::unreachable(
                        target,
                        format!("cannot start an I/O thread: {e}"),
                    ));
                }
                rx.await.unwrap_or_else(|_| {
                    Err(Error::unreachable(
                        target,
                        "I/O thread ended without an answer",
                    ))
                })
            }
            .boxed()
        }

        fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
            let (tx, rx) = oneshot::channel::<()>();
            let spawned = std::thread::Builder::new()
                .name("upsvisor-soap-sleep".into())
                .spawn(move || {
                    std::thread::sleep(d);
                    let _ = tx.send(());
                });
            async move {
                if spawned.is_ok() {
                    let _ = rx.await;
                }
            }
            .boxed()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_session_cookie() {
        let c = session_cookie([
            "a=b; Path=/",
            "vmware_soap_session=\"52a1\"; Path=/; HttpOnly",
        ]);
        assert_eq!(c.as_deref(), Some("vmware_soap_session=\"52a1\""));
        assert_eq!(session_cookie(["vmware_soap_sessionx=1"]), None);
        assert_eq!(session_cookie([]), None);
    }
}

#[cfg(feature = "reqwest")]
pub(crate) mod reqwest_backend {
    use std::time::Duration;

    use futures::FutureExt;
    use futures::future::BoxFuture;
    use upsvisor_core::Error;

    use super::{Backend, Reply, session_cookie};
    use crate::config::SoapConfig;
    use crate::tls::{self, Refusal};

    /// Async reqwest on the caller's tokio runtime.
    pub(crate) struct ReqwestBackend {
        client: reqwest::Client,
        url: String,
        target: String,
        max_reply: usize,
        timeout: Duration,
        refusal: Refusal,
    }

    impl ReqwestBackend {
        pub(crate) fn new(cfg: &SoapConfig, url: String, target: String) -> Result<Self, Error> {
            let refusal = Refusal::default();
            let tls = tls::client_config(cfg, refusal.clone())?;
            let client = reqwest::Client::builder()
                .use_preconfigured_tls((*tls).clone())
                .timeout(cfg.timeout)
                .connect_timeout(cfg.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .map_err(|e| Error::config("soap", format!("cannot build the HTTP client: {e}")))?;
            Ok(ReqwestBackend {
                client,
                url,
                target,
                max_reply: cfg.max_reply_bytes,
                timeout: cfg.timeout,
                refusal,
            })
        }
    }

    fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                return Some(io.kind());
            }
            cur = err.source();
        }
        None
    }

    fn map_error(e: reqwest::Error, target: &str, timeout: Duration, refusal: &Refusal) -> Error {
        if let Some(msg) = refusal.lock().ok().and_then(|mut r| r.take()) {
            return Error::auth(target, msg);
        }
        let mut text = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            text.push_str(": ");
            text.push_str(&s.to_string());
            src = s.source();
        }
        if e.is_timeout() {
            return Error::timeout(format!("SOAP request to {target}"), timeout);
        }
        if e.is_connect() {
            return Error::unreachable(target, text);
        }
        match io_kind(&e) {
            Some(
                std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof,
            ) => Error::unreachable(target, text),
            _ if text.contains("connection closed") => Error::unreachable(target, text),
            _ => Error::protocol(target, format!("not a usable HTTP reply: {text}")),
        }
    }

    impl Backend for ReqwestBackend {
        fn post(
            &self,
            body: String,
            cookie: Option<String>,
            action: String,
        ) -> BoxFuture<'static, Result<Reply, Error>> {
            let client = self.client.clone();
            let url = self.url.clone();
            let target = self.target.clone();
            let max = self.max_reply;
            let timeout = self.timeout;
            let refusal = self.refusal.clone();
            async move {
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(Error::config(
                        "soap",
                        "the reqwest backend runs on a tokio runtime; call it from one, or use the ureq backend",
                    ));
                }
                if let Ok(mut r) = refusal.lock() {
                    *r = None;
                }
                let mut req = client
                    .post(&url)
                    .header("Content-Type", "text/xml; charset=utf-8")
                    .header("SOAPAction", action)
                    .body(body);
                if let Some(c) = cookie {
                    req = req.header("Cookie", c);
                }
                let mut resp = req.send().await.map_err(|e| map_error(e, &target, timeout, &refusal))?;
                let status = resp.status().as_u16();
                let cookie = session_cookie(resp.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()));
                let too_large = || Error::protocol(&target, format!("reply larger than the {max}-byte limit"));
                if resp.content_length().is_some_and(|n| n > max as u64) {
                    return Err(too_large());
                }
                let mut buf = Vec::new();
                loop {
                    match resp.chunk().await {
                        Ok(Some(c)) => {
                            if buf.len() + c.len() > max {
                                return Err(too_large());
                            }
                            buf.extend_from_slice(&c);
                        }
                        Ok(None) => break,
                        Err(e) if e.is_timeout() => {
                            return Err(Error::timeout(format!("reading the reply of {target}"), timeout));
                        }
                        Err(e) => {
                            return Err(Error::protocol(
                                &target,
                                format!("reply cut short ({e}); {} bytes read", buf.len()),
                            ));
                        }
                    }
                }
                Ok(Reply {
                    status,
                    body: buf,
                    cookie,
                })
            }
            .boxed()
        }

        fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
            tokio::time::sleep(d).boxed()
        }
    }
}
