//! The HTTP API, the SSE stream, `/metrics` and the web page.
//!
//! axum on a tokio runtime: the daemon is the one place a runtime is fine
//! (the core stays runtime-free and runs on its own thread); axum is small,
//! maintained by the tokio project, and gives SSE and JSON without glue.
//! Connections are accepted by [`crate::serve`], which bounds them.
//!
//! Security model: reads are open (bind to loopback by default). Writes
//! need `Authorization: Bearer <token>`; with no token configured the API
//! is read-only (403). The token travels only in a header, never a cookie,
//! so a cross-site page cannot make the browser send it; on top of that a
//! write carrying an `Origin` that is not this server's is refused (403).
//! A presented token is always checked first: the right one is never
//! locked out. Wrong tokens are rate-limited per client address (429 after
//! [`MAX_FAILURES`] in [`FAILURE_WINDOW`]). Authentication comes before
//! the body is read. Every write attempt, accepted or refused, is recorded
//! in the audit log (never with a secret, fields clipped to
//! [`AUDIT_FIELD_MAX`] bytes); refusals at most [`AUDIT_BURST`] at once
//! and [`AUDIT_REFILL_PER_S`] a second after that, the rest counted in an
//! `N refusals suppressed` line.
//!
//! Every request's `Host` must name this server (the listen address, a
//! loopback name when listening on loopback, or `[api] allowed_hosts`),
//! else 421: a page the operator visits cannot rebind its own name to the
//! daemon's address and read the API. Every response carries a
//! Content-Security-Policy without inline scripts, `frame-ancestors
//! 'none'`, `X-Content-Type-Options: nosniff` and `Referrer-Policy:
//! no-referrer`.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as WallInstant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, Request as HttpRequest, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;
use upsvisor_core::{Freshness, HostId, HostOp, Secret, VmId, VmOp};

use crate::registry::Registration;
use crate::runtime::{Failure, Request, Shared, TestTarget};
use crate::serve::{Counters, Limits};

/// Failed authentications allowed per client in [`FAILURE_WINDOW`].
pub const MAX_FAILURES: usize = 5;
/// The window for [`MAX_FAILURES`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Refusal audit lines written at once before the rate limit.
pub const AUDIT_BURST: f64 = 20.0;
/// Refusal audit lines a second once the burst is spent.
pub const AUDIT_REFILL_PER_S: f64 = 1.0;
/// Longest text field of an audit line, bytes (request content is clipped).
pub const AUDIT_FIELD_MAX: usize = 160;
/// The event-stream path (its requests are long-lived by design).
pub const EVENTS_PATH: &str = "/api/events";
/// Largest request body read, bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Client addresses remembered for the lockout.
const MAX_TRACKED_CLIENTS: usize = 4096;

/// The Content-Security-Policy of every response: scripts and styles only
/// from this server's files, no framing, no plugins.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const PAGE: &str = include_str!("page.html");
const APP_JS: &str = include_str!("page.js");
const APP_CSS: &str = include_str!("page.css");

/// The audit rate limit for refusals: a token bucket.
#[derive(Debug)]
struct AuditBucket {
    tokens: f64,
    at: WallInstant,
    suppressed: u64,
}

/// API state.
#[derive(Clone)]
pub struct Api {
    shared: Arc<Shared>,
    token: Option<Secret>,
    failures: Arc<Mutex<HashMap<IpAddr, VecDeque<WallInstant>>>>,
    limits: Limits,
    allowed_hosts: Arc<Vec<String>>,
    local: Option<SocketAddr>,
    event_streams: Arc<AtomicUsize>,
    bucket: Arc<Mutex<AuditBucket>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("limits", &self.limits)
            .field("allowed_hosts", &self.allowed_hosts)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// An API over `shared`; `token` enables writes. Default [`Limits`],
    /// no extra allowed host names.
    pub fn new(shared: Arc<Shared>, token: Option<Secret>) -> Self {
        Api {
            shared,
            token,
            failures: Arc::default(),
            limits: Limits::default(),
            allowed_hosts: Arc::default(),
            local: None,
            event_streams: Arc::default(),
            bucket: Arc::new(Mutex::new(AuditBucket {
                tokens: AUDIT_BURST,
                at: WallInstant::now(),
                suppressed: 0,
            })),
            counters: Arc::default(),
        }
    }

    /// Sets the connection, event-stream and timeout bounds.
    pub fn limits(&mut self, limits: Limits) -> &mut Self {
        self.limits = limits;
        self
    }

    /// Sets the extra names (`name` or `name:port`) a request's `Host`
    /// may carry, e.g. the DNS name of this machine or of a reverse proxy.
    pub fn allowed_hosts(&mut self, names: Vec<String>) -> &mut Self {
        self.allowed_hosts = Arc::new(
            names
                .into_iter()
                .map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase())
                .collect(),
        );
        self
    }

    /// The server's counters (connections open, refused, evicted).
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// The router. `local` is the address the server is bound to (the
    /// `Host` check compares with it).
    pub fn router(mut self, local: SocketAddr) -> Router {
        self.local = Some(local);
        let state = self.clone();
        Router::new()
            .route("/", get(page))
            .route("/static/app.js", get(app_js))
            .route("/static/app.css", get(app_css))
            .route("/api/vms", get(vms))
            .route("/api/hosts", get(hosts).post(register))
            .route("/api/power", get(power))
            .route("/api/status", get(status))
            .route("/api/plan", get(plan))
            .route("/api/history", get(history))
            .route(EVENTS_PATH, get(events))
            .route("/api/vms/{id}/power", post(vm_power))
            .route("/api/hosts/{id}/power", post(host_power))
            .route("/api/hosts/{id}", delete(unregister))
            .route("/api/episode/abort", post(abort_episode))
            .route("/api/test", post(start_test))
            .route("/api/reload", post(reload))
            .route("/metrics", get(metrics))
            // Before the layer, so unknown paths get the Host check and
            // the headers too.
            .fallback(not_found)
            .layer(axum::middleware::from_fn_with_state(state, guard))
            .with_state(self)
    }

    /// Serves HTTPS on `listener` with `tls` until `shutdown` resolves.
    pub async fn serve_tls(
        self,
        listener: tokio::net::TcpListener,
        tls: &crate::tls::ApiTls,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let acceptor = tls.acceptor();
        self.serve_inner(listener, Some(acceptor), shutdown).await
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.serve_inner(listener, None, shutdown).await
    }

    async fn serve_inner(
        self,
        listener: tokio::net::TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let local = listener.local_addr()?;
        let limits = self.limits.clone();
        let counters = self.counters.clone();
        // Write the "N refusals suppressed" line once a flood has passed.
        let flusher = self.clone();
        let flush = tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(10));
            loop {
                t.tick().await;
                flusher.flush_suppressed();
            }
        });
        let r = crate::serve::serve(
            listener,
            self.router(local),
            limits,
            tls,
            counters,
            shutdown,
        )
        .await;
        flush.abort();
        r
    }
}

fn err(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

/// `s` cut to at most `max` bytes on a character boundary, saying how much
/// was cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}…({} bytes cut)",
        s.get(..end).unwrap_or(""),
        s.len() - end
    )
}

/// Splits a `Host` header value into a lower-case name (IPv6 without
/// brackets) and its port.
fn split_host(h: &str) -> (String, Option<u16>) {
    let h = h.trim();
    if let Some(rest) = h.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return (String::new(), None);
        };
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return (ip.to_ascii_lowercase(), port);
    }
    match h.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (
            name.trim_end_matches('.').to_ascii_lowercase(),
            port.parse().ok().or(Some(0)),
        ),
        _ => (h.trim_end_matches('.').to_ascii_lowercase(), None),
    }
}

/// Whether a request's `Host` names this server (see the module docs).
pub fn host_allowed(host: &str, local: SocketAddr, allowed: &[String]) -> bool {
    let (name, port) = split_host(host);
    if name.is_empty() {
        return false;
    }
    let our_port = port.is_none_or(|p| p == local.port());
    if let Ok(ip) = name.parse::<IpAddr>() {
        // An address literal cannot be rebound: it must be one this socket
        // answers on.
        let ours = local.ip().is_unspecified()
            || ip == local.ip()
            || (local.ip().is_loopback() && ip.is_loopback());
        if ours && our_port {
            return true;
        }
    } else if name == "localhost" && local.ip().is_loopback() && our_port {
        return true;
    }
    allowed.iter().any(|a| {
        let (an, ap) = split_host(a);
        an == name && (ap.is_none() || ap == port)
    })
}

/// Before every route: the `Host` check; after: the security headers.
async fn guard(State(api): State<Api>, req: HttpRequest<Body>, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let mut resp = match (host, api.local) {
        (None, _) => err(StatusCode::BAD_REQUEST, "a Host header is required"),
        (Some(h), Some(local)) if !host_allowed(&h, local, &api.allowed_hosts) => err(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "Host `{}` is not a name of this server (a DNS-rebinding page?): use the listen address {local}, or add the name to [api] allowed_hosts",
                clip(&h, 64)
            ),
        ),
        _ => next.run(req).await,
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

impl Api {
    /// Gatekeeper for writes: origin, token, rate limit. Audits refusals.
    /// A presented token is compared first: the right one always passes.
    fn authorize(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        action: &str,
        target: &str,
    ) -> Result<(), Box<Response>> {
        let refuse = |status: StatusCode, why: &str| {
            self.audit_refusal(peer, action, target, &format!("refused: {why}"));
            err(status, why)
        };
        if let Some(origin) = headers.get(header::ORIGIN) {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            let ok = origin
                .to_str()
                .ok()
                .and_then(|o| o.split_once("://").map(|(_, rest)| rest == host))
                .unwrap_or(false);
            if !ok {
                return Err(Box::new(refuse(
                    StatusCode::FORBIDDEN,
                    "cross-origin write refused",
                )));
            }
        }
        let Some(token) = &self.token else {
            return Err(Box::new(refuse(
                StatusCode::FORBIDDEN,
                "the API is read-only: no token configured (set api.token or api.token_file)",
            )));
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "));
        // Constant time (`subtle`): the time taken says nothing about how
        // much of the token was right (a length mismatch returns at once).
        if given.is_some_and(|g| bool::from(g.trim().as_bytes().ct_eq(token.expose().as_bytes()))) {
            return Ok(());
        }
        self.shared.auth_failures.fetch_add(1, Ordering::Relaxed);
        let now = WallInstant::now();
        let ip = peer.ip();
        let locked = {
            let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            if f.len() >= MAX_TRACKED_CLIENTS && !f.contains_key(&ip) {
                f.retain(|_, q| {
                    q.back()
                        .is_some_and(|t| now.duration_since(*t) <= FAILURE_WINDOW)
                });
            }
            let q = f.entry(ip).or_default();
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) > FAILURE_WINDOW)
            {
                q.pop_front();
            }
            let locked = q.len() >= MAX_FAILURES;
            if !locked {
                q.push_back(now);
            }
            locked
        };
        if locked {
            let mut r = refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed authentications from this address; wait a minute (the right token is still accepted)",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            return Err(Box::new(r));
        }
        let mut r = refuse(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Err(Box::new(r))
    }

    /// Reads the body of an authorised request, bounded in size and time;
    /// refusals are audited.
    async fn read_body(
        &self,
        body: Body,
        peer: SocketAddr,
        action: &str,
        target: &str,
    ) -> Result<Bytes, Box<Response>> {
        let r = tokio::time::timeout(
            self.limits.body_timeout,
            axum::body::to_bytes(body, MAX_BODY_BYTES),
        )
        .await;
        let why = match r {
            Ok(Ok(b)) => return Ok(b),
            Ok(Err(_)) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body unreadable or larger than {MAX_BODY_BYTES} bytes"),
            ),
            Err(_) => (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "body not received within {} s",
                    self.limits.body_timeout.as_secs()
                ),
            ),
        };
        self.audit(peer, action, target, &format!("refused: {}", why.1));
        Err(Box::new(err(why.0, why.1)))
    }

    /// An audit line for a refusal, rate-limited (see the module docs).
    fn audit_refusal(&self, peer: SocketAddr, action: &str, target: &str, result: &str) {
        let now = WallInstant::now();
        let summary = {
            let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
            let dt = now.duration_since(b.at).as_secs_f64();
            b.tokens = (b.tokens + dt * AUDIT_REFILL_PER_S).min(AUDIT_BURST);
            b.at = now;
            if b.tokens < 1.0 {
                b.suppressed += 1;
                return;
            }
            b.tokens -= 1.0;
            std::mem::take(&mut b.suppressed)
        };
        if summary > 0 {
            self.suppressed_line(summary);
        }
        self.audit(peer, action, target, result);
    }

    /// Writes the count of refusals not audited since the last line.
    fn flush_suppressed(&self) {
        let n = {
            let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut b.suppressed)
        };
        if n > 0 {
            self.suppressed_line(n);
        }
    }

    fn suppressed_line(&self, n: u64) {
        tracing::warn!(
            suppressed = n,
            "api: refusals not audited one by one (rate limit)"
        );
        self.shared.record(json!({
            "type": "api",
            "at_ms": self.shared.snapshot().now_ms,
            "action": "refusals_suppressed",
            "target": "",
            "result": format!("{n} refusals suppressed (audit rate limit: {AUDIT_BURST} at once, {AUDIT_REFILL_PER_S} a second)"),
        }));
    }

    fn audit(&self, peer: SocketAddr, action: &str, target: &str, result: &str) {
        let now_ms = self.shared.snapshot().now_ms;
        let target = clip(target, AUDIT_FIELD_MAX);
        let result = clip(result, AUDIT_FIELD_MAX);
        tracing::info!(%peer, action, target, result, "api write");
        self.shared.record(json!({
            "type": "api",
            "at_ms": now_ms,
            "peer": peer.ip().to_string(),
            "action": clip(action, AUDIT_FIELD_MAX),
            "target": target,
            "result": result,
        }));
    }
}

async fn not_found() -> Response {
    err(StatusCode::NOT_FOUND, "no such path")
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn app_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
        .into_response()
}

async fn app_css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS).into_response()
}

async fn vms(State(api): State<Api>) -> Json<Value> {
    let s = api.shared.snapshot();
    let list: Vec<Value> = s
        .table
        .vms()
        .map(|(h, v)| {
            let mut o = serde_json::to_value(v).unwrap_or(Value::Null);
            if let Some(m) = o.as_object_mut() {
                m.insert("host".into(), json!(h));
            }
            o
        })
        .collect();
    Json(json!({"cycle": s.table.cycle, "taken_at_ms": s.table.taken_at.as_millis(), "vms": list}))
}

async fn hosts(State(api): State<Api>) -> Json<Value> {
    let s = api.shared.snapshot();
    let list: Vec<Value> = s
        .inventory
        .hosts
        .iter()
        .map(|h| {
            let rec = s.table.host(&h.id);
            let feeds: Vec<String> = s
                .inventory
                .feeds_of(&h.id)
                .map(|o| format!("{}/{}", o.device, o.id))
                .collect();
            json!({
                "id": h.id,
                "address": h.address,
                "transport": h.transport,
                "min_supplies": h.min_supplies,
                "feeds": feeds,
                "reachable": rec.map(|r| r.is_fresh()),
                "freshness": rec.map(|r| &r.freshness),
                "info": rec.and_then(|r| r.info.as_ref()),
                "vms": rec.map_or(0, |r| r.vms.len()),
                "vms_on": rec.map_or(0, |r| r.vms_on().count()),
                "poll_seconds": s.poll_seconds.get(&h.id),
                "via": s.via.get(&h.id),
            })
        })
        .collect();
    Json(json!({"hosts": list}))
}

async fn status(State(api): State<Api>) -> Json<Value> {
    let s = api.shared.snapshot();
    Json(json!({"text": crate::render::status(&s)}))
}

async fn power(State(api): State<Api>) -> Json<Value> {
    let s = api.shared.snapshot();
    Json(json!({"devices": s.verdicts, "episode": s.episode, "armed": s.armed}))
}

async fn plan(State(api): State<Api>) -> Json<Value> {
    let s = api.shared.snapshot();
    Json(json!({
        "plan": s.plan,
        "runtime_s": s.runtime_s,
        "fits": s.plan_fits,
        "episode": s.episode,
        "power_on": s.power_on,
        "text": crate::render::plan(&s),
    }))
}

/// `GET /api/history?since=&until=&after=&before=&limit=`: a page of
/// history, oldest first ([`crate::history`]); `since`/`until` take RFC
/// 3339, a duration ago (`2h`) or Unix seconds; `next`/`prev` are the
/// cursors for `after`/`before`.
async fn history(
    State(api): State<Api>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Response {
    let q = match crate::history::query_from_pairs(raw.as_deref().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return err(StatusCode::BAD_REQUEST, e),
    };
    let shared = api.shared.clone();
    match tokio::task::spawn_blocking(move || shared.history_page(&q)).await {
        Ok(Ok(page)) => Json(page).into_response(),
        Ok(Err(e)) => err(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Frees an event-stream slot when the stream ends.
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn events(State(api): State<Api>) -> Response {
    let max = api.limits.max_event_streams;
    let taken = api
        .event_streams
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < max).then_some(n + 1)
        });
    if taken.is_err() {
        let mut r = err(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many event-stream clients ({max}, [api] max_event_streams); close one or retry later"
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    let slot = StreamSlot(api.event_streams.clone());
    let rx = api.shared.subscribe();
    let hello = SseEvent::default()
        .event("hello")
        .data(json!({"cycle": api.shared.snapshot().table.cycle}).to_string());
    let first = futures::stream::once(async move { Ok(hello) });
    let rest = futures::stream::unfold((rx, slot), |(mut rx, slot)| async move {
        let ev = match rx.recv().await {
            Ok(v) => {
                let kind = v
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("event")
                    .to_string();
                SseEvent::default().event(kind).data(v.to_string())
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => SseEvent::default()
                .event("lagged")
                .data(json!({"missed": n}).to_string()),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(ev), (rx, slot)))
    });
    use futures::StreamExt;
    Sse::new(first.chain(rest))
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PowerBody {
    op: String,
}

fn parse_op<T: serde::de::DeserializeOwned>(op: &str) -> Option<T> {
    serde_json::from_value(Value::String(op.to_string())).ok()
}

async fn vm_power(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let cmd = PowerCommand {
        action: "vm_power",
        kind: "VM",
        ops: "\"shutdown_guest\"|\"power_off\"|\"power_on\"|\"reboot_guest\"|\"reset\"|\"suspend\"",
    };
    cmd.run(api, peer, id, &headers, body, |id, op: VmOp, reply| {
        Request::Vm {
            vm: VmId::from(id),
            op,
            reply,
        }
    })
    .await
}

async fn host_power(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let cmd = PowerCommand {
        action: "host_power",
        kind: "host",
        ops: "\"enter_maintenance\"|\"exit_maintenance\"|\"shutdown\"|\"reboot\"",
    };
    cmd.run(api, peer, id, &headers, body, |id, op: HostOp, reply| {
        Request::Host {
            host: HostId::from(id),
            op,
            reply,
        }
    })
    .await
}

/// Ops that start or restart something (VM or host). During the stopping
/// and down phases of an episode they undo its work; during restore the
/// others (stop, suspend, maintenance) do.
const STARTING_OPS: [&str; 5] = [
    "power_on",
    "reboot_guest",
    "reset",
    "exit_maintenance",
    "reboot",
];

/// Why `op` contradicts the running episode, if it does.
fn contradicts_episode(api: &Api, op: &str) -> Option<String> {
    let snap = api.shared.snapshot();
    let ep = snap.episode.as_ref()?;
    let restoring = ep.phase.starts_with("restoring");
    let starting = STARTING_OPS.contains(&op);
    if starting == restoring {
        return None;
    }
    Some(format!(
        "episode {} is running (phase: {}); `{op}` would {} it. Wait until it ends, or abort it (POST /api/episode/abort){}",
        ep.id,
        ep.phase,
        if restoring {
            "undo the restore of"
        } else {
            "undo the shutdown of"
        },
        if ep.committed {
            " (it is past its commit point)"
        } else {
            ""
        }
    ))
}

/// What differs between the VM and host power endpoints.
struct PowerCommand {
    /// Audit action name.
    action: &'static str,
    /// What the id names, for error messages.
    kind: &'static str,
    /// The accepted ops, for the error message.
    ops: &'static str,
}

impl PowerCommand {
    /// Authorise, read and parse `{"op": ...}`, check it against a running
    /// episode, audit, hand the request to the engine thread and report
    /// its answer.
    async fn run<Op: serde::de::DeserializeOwned + std::fmt::Display>(
        &self,
        api: Api,
        peer: SocketAddr,
        id: String,
        headers: &HeaderMap,
        body: Body,
        request: impl FnOnce(&str, Op, tokio::sync::oneshot::Sender<crate::runtime::Reply>) -> Request,
    ) -> Response {
        let action = self.action;
        if let Err(r) = api.authorize(headers, peer, action, &id) {
            return *r;
        }
        let bytes = match api.read_body(body, peer, action, &id).await {
            Ok(b) => b,
            Err(r) => return *r,
        };
        let Ok(body) = serde_json::from_slice::<PowerBody>(&bytes) else {
            api.audit(
                peer,
                action,
                &id,
                "refused: body must be JSON {\"op\": ...}",
            );
            return err(
                StatusCode::BAD_REQUEST,
                format!("body must be JSON {{\"op\": {}}}", self.ops),
            );
        };
        let Some(op) = parse_op::<Op>(&body.op) else {
            api.audit(peer, action, &id, "refused: unknown op");
            return err(
                StatusCode::BAD_REQUEST,
                format!("unknown {} op `{}`", self.kind, clip(&body.op, 64)),
            );
        };
        let what = format!("{id} {op}");
        if let Some(why) = contradicts_episode(&api, &op.to_string()) {
            api.audit(peer, action, &what, &format!("refused: {why}"));
            return err(StatusCode::CONFLICT, why);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        api.audit(peer, action, &what, "accepted");
        if let Err(e) = api.shared.request(request(&id, op, tx)) {
            return err(StatusCode::SERVICE_UNAVAILABLE, e);
        }
        finish(&api, peer, action, &what, rx).await
    }
}

async fn finish(
    api: &Api,
    peer: SocketAddr,
    action: &str,
    what: &str,
    rx: tokio::sync::oneshot::Receiver<crate::runtime::Reply>,
) -> Response {
    match rx.await {
        Ok(Ok(msg)) => {
            api.audit(peer, action, what, &format!("ok: {msg}"));
            (StatusCode::OK, Json(json!({"ok": true, "result": msg}))).into_response()
        }
        Ok(Err((kind, e))) => {
            api.audit(peer, action, what, &format!("failed: {e}"));
            let status = match kind {
                Failure::NotFound => StatusCode::NOT_FOUND,
                Failure::Conflict => StatusCode::CONFLICT,
                Failure::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::BAD_GATEWAY,
            };
            err(status, e)
        }
        Err(_) => err(StatusCode::SERVICE_UNAVAILABLE, "engine thread gone"),
    }
}

async fn register(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(r) = api.authorize(&headers, peer, "register_host", "") {
        return *r;
    }
    let bytes = match api.read_body(body, peer, "register_host", "").await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Ok(r) = serde_json::from_slice::<Registration>(&bytes) else {
        api.audit(peer, "register_host", "", "refused: bad body");
        return err(
            StatusCode::BAD_REQUEST,
            "body must be JSON {id, address, transport, username, password, host_key, tls_thumbprint}",
        );
    };
    // An address may carry a user and password (`https://user:pw@vc/sdk`).
    let target = format!(
        "{} {} {}",
        r.id,
        r.transport,
        crate::webhook::redact_url(&r.address)
    );
    let reg = match r.check() {
        Ok(reg) => reg,
        Err((key, m)) => {
            let e = format!("{key}: {m}");
            api.audit(peer, "register_host", &target, &format!("refused: {e}"));
            return err(StatusCode::UNPROCESSABLE_ENTITY, e);
        }
    };
    api.audit(
        peer,
        "register_host",
        &target,
        "accepted; checking connection",
    );
    let (tx, rx) = tokio::sync::oneshot::channel();
    if let Err(e) = api.shared.request(Request::Register {
        host: Box::new(reg.host),
        creds: reg.credentials,
        reply: tx,
    }) {
        return err(StatusCode::SERVICE_UNAVAILABLE, e);
    }
    finish(&api, peer, "register_host", &target, rx).await
}

/// `POST /api/reload` (no body): loads the config file again and applies
/// it; 422 with the error when it does not load (the running config
/// stays), 200 saying so when an episode defers it, 409 without a config
/// file (the demo). Same as SIGHUP.
async fn reload(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    const ACTION: &str = "reload";
    if let Err(r) = api.authorize(&headers, peer, ACTION, "config") {
        return *r;
    }
    api.audit(peer, ACTION, "config", "accepted");
    let (tx, rx) = tokio::sync::oneshot::channel();
    if let Err(e) = api.shared.request(Request::Reload { reply: tx }) {
        return err(StatusCode::SERVICE_UNAVAILABLE, e);
    }
    finish(&api, peer, ACTION, "config", rx).await
}

/// `POST /api/episode/abort` with an optional JSON body `{"reason": "..."}`:
/// ends the running episode on the operator's explicit request (nothing
/// more is sent for it; no new episode until power is no longer at risk;
/// see `upsvisor_core::Sequencer::abort`). 409 when no episode runs.
async fn abort_episode(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    const ACTION: &str = "abort_episode";
    if let Err(r) = api.authorize(&headers, peer, ACTION, "episode") {
        return *r;
    }
    let bytes = match api.read_body(body, peer, ACTION, "episode").await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    #[derive(serde::Deserialize)]
    struct AbortBody {
        #[serde(default)]
        reason: String,
    }
    let given = if bytes.iter().all(u8::is_ascii_whitespace) {
        String::new()
    } else {
        match serde_json::from_slice::<AbortBody>(&bytes) {
            Ok(b) => b.reason,
            Err(_) => {
                api.audit(peer, ACTION, "episode", "refused: bad body");
                return err(
                    StatusCode::BAD_REQUEST,
                    "body must be empty or JSON {\"reason\": \"...\"}".to_string(),
                );
            }
        }
    };
    let reason = match clip(given.trim(), 200) {
        r if r.is_empty() => format!("API request from {}", peer.ip()),
        r => format!("{r} (API request from {})", peer.ip()),
    };
    api.audit(peer, ACTION, "episode", "accepted");
    let (tx, rx) = tokio::sync::oneshot::channel();
    if let Err(e) = api.shared.request(Request::Abort { reason, reply: tx }) {
        return err(StatusCode::SERVICE_UNAVAILABLE, e);
    }
    finish(&api, peer, ACTION, "episode", rx).await
}

/// `POST /api/test` `{"group": "<name>"}` or `{"host": "<id>"}` (bearer
/// token): a live test of one VM group, an episode that stops the group's
/// VMs as an outage would and starts them again (`upsvisord test --group G
/// --live`), or of one host: its VMs stop, it shuts down, it is powered on
/// out of band and its VMs start again (`--host H`). 200 with the
/// episode's id once started; 409 when disarmed, during an episode,
/// unless mains is on line and stable, or for the controller's own host or
/// a host not answering; 422 for a group or host the configuration does
/// not have, a host without a power-on method, or with `shutdown_hosts`
/// off; 400 for a body that is not exactly one of the two.
async fn start_test(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    const ACTION: &str = "start_test";
    if let Err(r) = api.authorize(&headers, peer, ACTION, "group") {
        return *r;
    }
    let bytes = match api.read_body(body, peer, ACTION, "group").await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TestBody {
        group: Option<String>,
        host: Option<String>,
    }
    let target = match serde_json::from_slice::<TestBody>(&bytes) {
        Ok(TestBody {
            group: Some(g),
            host: None,
        }) if !g.trim().is_empty() => TestTarget::Group(clip(g.trim(), 200)),
        Ok(TestBody {
            group: None,
            host: Some(h),
        }) if !h.trim().is_empty() => TestTarget::Host(HostId::from(clip(h.trim(), 200))),
        _ => {
            api.audit(peer, ACTION, "test", "refused: bad body");
            return err(
                StatusCode::BAD_REQUEST,
                "body must be JSON {\"group\": \"<name>\"} or {\"host\": \"<id>\"}".to_string(),
            );
        }
    };
    let what = match &target {
        TestTarget::Group(g) => format!("group {g}"),
        TestTarget::Host(h) => format!("host {h}"),
    };
    api.audit(peer, ACTION, &what, "accepted");
    let (tx, rx) = tokio::sync::oneshot::channel();
    if let Err(e) = api.shared.request(Request::Test { target, reply: tx }) {
        return err(StatusCode::SERVICE_UNAVAILABLE, e);
    }
    finish(&api, peer, ACTION, &what, rx).await
}

async fn unregister(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = api.authorize(&headers, peer, "unregister_host", &id) {
        return *r;
    }
    api.audit(peer, "unregister_host", &id, "accepted");
    let (tx, rx) = tokio::sync::oneshot::channel();
    if let Err(e) = api.shared.request(Request::Unregister {
        host: HostId::from(id.as_str()),
        reply: tx,
    }) {
        return err(StatusCode::SERVICE_UNAVAILABLE, e);
    }
    finish(&api, peer, "unregister_host", &id, rx).await
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text exposition of the snapshot.
pub fn metrics_text(shared: &Shared) -> String {
    metrics_with(shared, None)
}

fn metrics_with(shared: &Shared, counters: Option<&Counters>) -> String {
    let s = shared.snapshot();
    let mut o = String::new();
    let mut gauge = |name: &str, help: &str, values: Vec<(String, f64)>| {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} gauge");
        for (labels, v) in values {
            if labels.is_empty() {
                let _ = writeln!(o, "{name} {v}");
            } else {
                let _ = writeln!(o, "{name}{{{labels}}} {v}");
            }
        }
    };
    gauge(
        "upsvisord_armed",
        "1 when the daemon acts on a power failure; 0 when disarmed (it sends no power command).",
        vec![(String::new(), if s.armed { 1.0 } else { 0.0 })],
    );
    let cycle = s.poll_seconds.values().copied().fold(0.0, f64::max);
    gauge(
        "upsvisord_poll_cycle_seconds",
        "Wall time of the last poll cycle (slowest host; hosts are polled in parallel).",
        vec![(String::new(), cycle)],
    );
    gauge(
        "upsvisord_poll_cycle",
        "Number of the last poll cycle.",
        vec![(String::new(), s.table.cycle as f64)],
    );
    let hl = |h: &HostId| format!("host=\"{}\"", label(h.as_str()));
    gauge(
        "upsvisord_host_poll_seconds",
        "Wall time of each host's last inventory call.",
        s.poll_seconds.iter().map(|(h, v)| (hl(h), *v)).collect(),
    );
    gauge(
        "upsvisord_host_reachable",
        "1 if the host answered the last poll.",
        s.table
            .hosts
            .iter()
            .map(|(h, r)| {
                (
                    hl(h),
                    f64::from(u8::from(matches!(r.freshness, Freshness::Fresh))),
                )
            })
            .collect(),
    );
    gauge(
        "upsvisord_host_vms_on",
        "VMs powered on per host.",
        s.table
            .hosts
            .iter()
            .map(|(h, r)| (hl(h), r.vms_on().count() as f64))
            .collect(),
    );
    let dl = |d: &upsvisor_core::DeviceId| format!("device=\"{}\"", label(d.as_str()));
    let per_dev = |f: &dyn Fn(&upsvisor_core::Verdict) -> Option<f64>| -> Vec<(String, f64)> {
        s.verdicts
            .iter()
            .filter_map(|(d, v)| f(v).map(|x| (dl(d), x)))
            .collect()
    };
    let b = |x: bool| f64::from(u8::from(x));
    gauge(
        "upsvisord_power_on_battery",
        "1 while the device runs on battery.",
        per_dev(&|v| Some(b(v.on_battery))),
    );
    gauge(
        "upsvisord_power_low_battery",
        "1 while the device reports low battery.",
        per_dev(&|v| v.last.as_ref().map(|l| b(l.low_battery))),
    );
    gauge(
        "upsvisord_power_charge_percent",
        "Battery charge.",
        per_dev(&|v| v.last.as_ref().and_then(|l| l.charge_pct).map(f64::from)),
    );
    gauge(
        "upsvisord_power_runtime_seconds",
        "Remaining battery runtime.",
        per_dev(&|v| v.last.as_ref().and_then(|l| l.runtime_s).map(f64::from)),
    );
    gauge(
        "upsvisord_power_triggered",
        "1 while a shutdown trigger holds.",
        per_dev(&|v| Some(b(v.trigger.is_some()))),
    );
    let ep = s.episode.as_ref();
    gauge(
        "upsvisord_episode_active",
        "1 while a shutdown/restore episode runs.",
        vec![(String::new(), b(ep.is_some()))],
    );
    gauge(
        "upsvisord_episode_committed",
        "1 once the episode passed its commit point.",
        vec![(String::new(), b(ep.is_some_and(|e| e.committed)))],
    );
    gauge(
        "upsvisord_episode_vms_stopped",
        "VMs stopped in the running episode.",
        vec![(String::new(), ep.map_or(0.0, |e| e.stopped as f64))],
    );
    gauge(
        "upsvisord_plan_estimate_seconds",
        "Estimated duration of a full shutdown now.",
        vec![(String::new(), s.plan.estimate.as_secs_f64())],
    );
    let _ = writeln!(
        o,
        "# HELP upsvisord_api_auth_failures_total Failed API authentications."
    );
    let _ = writeln!(o, "# TYPE upsvisord_api_auth_failures_total counter");
    let _ = writeln!(
        o,
        "upsvisord_api_auth_failures_total {}",
        shared.auth_failures.load(Ordering::Relaxed)
    );
    if let Some(c) = counters {
        for (name, help, v) in [
            (
                "upsvisord_api_connections_refused_total",
                "Connections answered 503: every slot busy.",
                c.refused.load(Ordering::Relaxed),
            ),
            (
                "upsvisord_api_connections_evicted_total",
                "Idle connections closed to make room at the cap.",
                c.evicted.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}");
            let _ = writeln!(o, "# TYPE {name} counter");
            let _ = writeln!(o, "{name} {v}");
        }
        let _ = writeln!(
            o,
            "# HELP upsvisord_api_connections_open API connections open now."
        );
        let _ = writeln!(o, "# TYPE upsvisord_api_connections_open gauge");
        let _ = writeln!(
            o,
            "upsvisord_api_connections_open {}",
            c.open.load(Ordering::Relaxed)
        );
    }
    o
}

async fn metrics(State(api): State<Api>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics_with(&api.shared, Some(&api.counters)),
    )
        .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn host_check_table() {
        let lo: SocketAddr = "127.0.0.1:8470".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8470".parse().unwrap();
        let v6: SocketAddr = "[::1]:8470".parse().unwrap();
        let names = vec!["ups-ctl.lab".to_string(), "proxy.lab:443".to_string()];
        for (host, local, ok) in [
            ("127.0.0.1:8470", lo, true),
            ("127.0.0.1", lo, true),
            ("localhost:8470", lo, true),
            ("LOCALHOST.:8470", lo, true),
            ("127.0.0.5:8470", lo, true),
            ("[::1]:8470", v6, true),
            ("[::1]:8470", lo, true),
            ("127.0.0.1:8471", lo, false),
            ("evil.example:8470", lo, false),
            ("evil.example", lo, false),
            ("localhost:8470", any, false),
            ("10.1.2.3:8470", any, true),
            ("10.1.2.3:8470", lo, false),
            ("ups-ctl.lab:8470", lo, true),
            ("ups-ctl.lab", any, true),
            ("proxy.lab:443", lo, true),
            ("proxy.lab:444", lo, false),
            ("proxy.lab", lo, false),
            ("", lo, false),
            ("[::1", lo, false),
        ] {
            assert_eq!(host_allowed(host, local, &names), ok, "{host} on {local}");
        }
    }

    #[test]
    fn clip_keeps_char_boundaries() {
        assert_eq!(clip("abc", 3), "abc");
        let c = clip(&"é".repeat(100), 5);
        assert!(c.starts_with("éé…") && c.contains("196 bytes cut"), "{c}");
    }
}
