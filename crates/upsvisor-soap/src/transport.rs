//! [`SoapTransport`]: the session, the inventory query and power calls.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tracing::{debug, info, warn};
use upsvisor_traits::{
    Capabilities, Error, ErrorKind, HostInfo, HostInventory, HostOp, HostTransport, Result, VmId,
    VmInfo, VmOp,
};

use crate::codec::{
    self, Fault, HostState, MoRef, ObjectContent, PropertyQuery, ReplyError, ServiceContent,
    TaskState, VmRecord,
};
use crate::config::{HostSelector, SoapConfig};
use crate::http::Backend;
use crate::inventory;
use crate::xml::{Element, Limits};

/// A failed call: a vim25 fault the caller may interpret, or a core error.
#[derive(Debug, Clone)]
enum CallError {
    Fault(Fault),
    Other(Error),
}

impl From<Error> for CallError {
    fn from(e: Error) -> Self {
        CallError::Other(e)
    }
}

type CallResult<T> = std::result::Result<T, CallError>;

/// One logged-in session.
#[derive(Debug)]
struct Session {
    generation: u64,
    cookie: String,
    sc: ServiceContent,
    action: String,
}

/// A host as resolved under a session: its reference, name and the
/// container (its datacenter, or its cluster: [`Listing::scopes`]) whose
/// view holds its VMs.
#[derive(Debug, Clone)]
struct Resolved {
    host: MoRef,
    name: String,
    scope: MoRef,
    /// Its datacenter (the change feed's scope).
    datacenter: MoRef,
}

impl Resolved {
    /// Whether the view is a cluster's: made for each fetch (see
    /// [`Inner::scoped_fetch`]) rather than kept for the session.
    fn by_cluster(&self) -> bool {
        self.scope != self.datacenter
    }
}

/// One host of a [`Listing`].
#[derive(Debug, Clone)]
struct Listed {
    host: MoRef,
    name: String,
    /// Its parent: the `ClusterComputeResource` or (standalone) the
    /// `ComputeResource` that holds it; the host itself if it has neither.
    cluster: MoRef,
    /// The `Datacenter` above it; the root folder if there is none.
    datacenter: MoRef,
}

/// Every host of the endpoint as one retrieval found it, and the view
/// scope of each host this session polls.
#[derive(Debug, Default)]
struct Listing {
    hosts: Vec<Listed>,
    scope: HashMap<MoRef, MoRef>,
}

/// Most cluster views one session fetches per cycle before it fetches the
/// datacenter instead: at most this many round trips per cycle.
const MAX_CLUSTER_SCOPES: usize = 16;

impl Listing {
    /// From `(host, name)` pairs and the `parent` of every host, compute
    /// resource and folder: walks each host up to its datacenter.
    fn new(hosts: Vec<(MoRef, String)>, parents: &HashMap<MoRef, MoRef>, root: &MoRef) -> Self {
        let hosts = hosts
            .into_iter()
            .map(|(host, name)| {
                let cluster = parents
                    .get(&host)
                    .filter(|p| p.kind.ends_with("ComputeResource"))
                    .cloned()
                    .unwrap_or_else(|| host.clone());
                let mut datacenter = root.clone();
                let mut cur = &host;
                // Folders nest; a cycle in a broken answer ends here.
                for _ in 0..64 {
                    match parents.get(cur) {
                        Some(p) if p.kind == "Datacenter" => {
                            datacenter = p.clone();
                            break;
                        }
                        Some(p) => cur = p,
                        None => break,
                    }
                }
                Listed {
                    host,
                    name,
                    cluster,
                    datacenter,
                }
            })
            .collect();
        Listing {
            hosts,
            scope: HashMap::new(),
        }
    }

    /// The host `sel` names: `None` when the listing does not hold it.
    fn find(&self, sel: &HostSelector, target: &str) -> Option<Result<&Listed>> {
        match sel {
            HostSelector::Name(want) => self.hosts.iter().find(|h| &h.name == want).map(Ok),
            HostSelector::MoRef(id) => self.hosts.iter().find(|h| &h.host.value == id).map(Ok),
            _ => match self.hosts.as_slice() {
                [] => None,
                [only] => Some(Ok(only)),
                many => Some(Err(Error::config(
                    "soap.host",
                    format!(
                        "{target} manages {} hosts; name the one this transport is for (HostSelector::Name)",
                        many.len()
                    ),
                ))),
            },
        }
    }

    fn resolved(&self, sel: &HostSelector, target: &str) -> Option<Result<Resolved>> {
        self.find(sel, target).map(|r| {
            r.map(|h| Resolved {
                host: h.host.clone(),
                name: h.name.clone(),
                datacenter: h.datacenter.clone(),
                scope: self
                    .scope
                    .get(&h.host)
                    .cloned()
                    .unwrap_or_else(|| h.datacenter.clone()),
            })
        })
    }

    fn missing(sel: &HostSelector, target: &str) -> Error {
        match sel {
            HostSelector::Name(n) => Error::not_found(format!("host named {n:?} at {target}")),
            HostSelector::MoRef(id) => Error::not_found(format!("host {id} at {target}")),
            _ => Error::not_found(format!("any host at {target}")),
        }
    }

    /// Sets the view scope of every host of `polled` (the hosts this
    /// session polls). Per datacenter: when the clusters (compute
    /// resources) of the polled hosts hold at most half of the
    /// datacenter's hosts, and are at most [`MAX_CLUSTER_SCOPES`], each
    /// polled host's view is its cluster; otherwise it is the datacenter.
    /// A fetch costs about its VMs, which go with hosts, so one lone host
    /// of a 100-host vCenter in 10-host clusters fetches a tenth of the
    /// VMs, and a session polling most of a datacenter still makes one
    /// fetch for all. A host with no compute resource above it always uses
    /// its datacenter (a view of a host holds its VMs but not the host).
    fn set_scopes<'a>(&mut self, polled: impl Iterator<Item = &'a HostSelector>, target: &str) {
        let mut wanted: Vec<&Listed> = polled
            .filter_map(|sel| self.find(sel, target).and_then(|r| r.ok()))
            .collect();
        wanted.sort_by(|a, b| a.host.value.cmp(&b.host.value));
        wanted.dedup_by(|a, b| a.host == b.host);
        let mut per_dc: HashMap<&MoRef, Vec<&Listed>> = HashMap::new();
        for h in wanted {
            per_dc.entry(&h.datacenter).or_default().push(h);
        }
        let mut scope = HashMap::new();
        for (dc, polled) in per_dc {
            let clusters: std::collections::HashSet<&MoRef> =
                polled.iter().map(|h| &h.cluster).collect();
            let in_dc = self.hosts.iter().filter(|h| &h.datacenter == dc).count();
            let covered = self
                .hosts
                .iter()
                .filter(|h| &h.datacenter == dc && clusters.contains(&h.cluster))
                .count();
            let by_cluster = covered * 2 <= in_dc
                && clusters.len() <= MAX_CLUSTER_SCOPES
                && polled.iter().all(|h| h.cluster != h.host);
            for h in polled {
                let s = if by_cluster { &h.cluster } else { dc };
                scope.insert(h.host.clone(), s.clone());
            }
        }
        self.scope = scope;
    }
}

/// One fetch of a whole datacenter: every host's state and every VM.
#[derive(Debug, Default)]
struct Snapshot {
    hosts: HashMap<MoRef, HostState>,
    /// Each host's VMs (`runtime.host`), shared with the answers: a host's
    /// inventory costs its own VMs' reference counts, not a scan and a
    /// copy of the whole scope's (100 hosts of a 5,000-VM datacenter).
    by_host: HashMap<MoRef, Vec<Arc<VmInfo>>>,
}

type SharedFetch = Shared<BoxFuture<'static, CallResult<Arc<Snapshot>>>>;

/// Which hosts a fetch has served: each host at most once, so a host that
/// asks again (its next poll) always gets a new fetch.
type Served = std::collections::HashSet<HostSelector>;

/// A fetch in flight: when it was sent, the hosts waiting for it.
struct Pending {
    sent: Instant,
    served: Served,
    fut: SharedFetch,
}

/// A fetch that succeeded: when its answer arrived, the hosts it served.
struct Kept {
    arrived: Instant,
    served: Served,
    snap: Arc<Snapshot>,
}

#[derive(Default)]
struct State {
    session: Option<Arc<Session>>,
    generation: u64,
    /// The hosts transports of this session speak for (how many of each):
    /// what [`Listing::set_scopes`] scopes views for.
    polled: HashMap<HostSelector, usize>,
    /// Per session: the last host listing, its container view, and how
    /// many listings were made (callers that waited for one take it).
    listing: Option<Listing>,
    listing_view: Option<MoRef>,
    listings: u64,
    /// Per session: resolved hosts and the container view of each scope.
    resolved: HashMap<HostSelector, Resolved>,
    views: HashMap<MoRef, MoRef>,
    /// Fetches in flight, per scope, that concurrent callers join.
    inflight: HashMap<MoRef, Pending>,
    /// The last successful fetch of each scope, served to other hosts
    /// within [`SoapConfig::fetch_reuse`] of its arrival.
    recent: HashMap<MoRef, Kept>,
    vm_refs: HashMap<VmId, MoRef>,
    /// Per session: the change feed of each scope (private collector, version).
    feeds: HashMap<MoRef, (MoRef, String)>,
    /// Logins tried so far, and the failure of the last one: callers that
    /// waited for a login that failed take its answer instead of sending
    /// the same account again (one vCenter, many sharing hosts).
    login_attempts: u64,
    login_error: Option<Error>,
    /// Scopes whose last fetch failed: a failure streak is logged once.
    failing: std::collections::HashSet<MoRef>,
}

struct Inner {
    cfg: SoapConfig,
    target: String,
    limits: Limits,
    backend: Box<dyn Backend>,
    state: Mutex<State>,
    login_lock: futures::lock::Mutex<()>,
    /// Held while listing hosts or creating a view: concurrent callers
    /// wait and take the one made.
    setup_lock: futures::lock::Mutex<()>,
}

/// A [`HostTransport`] over the vSphere Web Services API (vim25 SOAP): an
/// ESXi host directly, or one host seen through vCenter
/// ([`HostSelector::Name`]).
///
/// The session is opened on first use (RetrieveServiceContent, Login),
/// kept by its cookie and opened again once, transparently, when the
/// server answers `NotAuthenticated`.
///
/// The inventory is one `RetrievePropertiesEx` (plus
/// `ContinueRetrievePropertiesEx` pages) over a container view of the
/// host's datacenter (or of its cluster, see [`SoapTransport::share`]),
/// keeping the VMs whose `runtime.host` is this host: a VM migrated by
/// vCenter shows up under its new host at the next poll. Transports made
/// with [`SoapTransport::share`] use one session, are resolved from one
/// listing of the endpoint's hosts, and share one fetch per datacenter and
/// poll cycle ([`SoapConfig::fetch_reuse`]): a whole vCenter costs one
/// round trip per cycle, and every VM appears under exactly one host.
///
/// With the `ureq` feature each HTTP exchange runs on a short-lived
/// thread of its own and is handed back as a future: no async runtime is
/// needed, any executor (or `futures::executor::block_on`) drives it.
/// Dropping a call's future abandons its result; the exchange finishes on
/// its thread within [`SoapConfig::timeout`].
pub struct SoapTransport {
    inner: Arc<Inner>,
    host: HostSelector,
}

impl std::fmt::Debug for SoapTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoapTransport")
            .field("target", &self.inner.target)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

fn target_of(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

impl SoapTransport {
    /// A transport using the blocking `ureq` backend, for the host named by
    /// [`SoapConfig::host`]. Nothing is sent until the first call.
    #[cfg(feature = "ureq")]
    pub fn new(cfg: SoapConfig) -> Result<Self> {
        let url = cfg.sdk_url()?;
        if cfg.credentials.username.is_empty() {
            return Err(Error::config(
                "soap.credentials.username",
                "empty user name",
            ));
        }
        let target = target_of(&url);
        let backend = crate::http::ViBackend::ureq(&cfg, url, target.clone())?;
        Ok(Self::with_backend(cfg, target, Box::new(backend)))
    }

    /// A transport using the async `reqwest` backend. Its calls must run
    /// on a tokio runtime (outside one they fail with
    /// [`ErrorKind::Config`]). Nothing is sent until the first call.
    #[cfg(feature = "reqwest")]
    pub fn new_reqwest(cfg: SoapConfig) -> Result<Self> {
        let url = cfg.sdk_url()?;
        if cfg.credentials.username.is_empty() {
            return Err(Error::config(
                "soap.credentials.username",
                "empty user name",
            ));
        }
        let target = target_of(&url);
        let backend = crate::http::ViBackend::reqwest(&cfg, url, target.clone())?;
        Ok(Self::with_backend(cfg, target, Box::new(backend)))
    }

    fn with_backend(cfg: SoapConfig, target: String, backend: Box<dyn Backend>) -> Self {
        let limits = Limits {
            max_bytes: cfg.max_reply_bytes,
            max_depth: cfg.max_xml_depth,
            ..Limits::default()
        };
        let host = cfg.host.clone();
        SoapTransport {
            inner: Arc::new(Inner {
                cfg,
                target,
                limits,
                backend,
                state: Mutex::new(State::default()),
                login_lock: futures::lock::Mutex::new(()),
                setup_lock: futures::lock::Mutex::new(()),
            }),
            host,
        }
        .registered()
    }

    fn registered(self) -> Self {
        *self
            .inner
            .lock()
            .polled
            .entry(self.host.clone())
            .or_default() += 1;
        self
    }

    /// Another host of the same endpoint (vCenter), over the same session.
    /// Inventories of sharing transports that run at the same time join one
    /// fetch of their datacenter.
    ///
    /// All hosts of a session are resolved from one listing of the
    /// endpoint's hosts. Each host's inventory view is its datacenter, or
    /// its cluster when the session's hosts are few against their
    /// datacenter (their clusters hold at most half of its hosts, at most
    /// 16 clusters): a lone host of a large vCenter then fetches its
    /// cluster's VMs, not the datacenter's. A fetch serves each host once:
    /// those that ask while it runs, and those that ask within
    /// [`SoapConfig::fetch_reuse`] of its answer.
    pub fn share(&self, host: HostSelector) -> SoapTransport {
        {
            // A new host changes the scopes: list again at the next call.
            let mut st = self.inner.lock();
            if !st.polled.contains_key(&host) {
                st.listing = None;
                st.resolved.clear();
            }
        }
        SoapTransport {
            inner: Arc::clone(&self.inner),
            host,
        }
        .registered()
    }

    /// The managed object whose container view holds this host's
    /// inventory, as `(type, id)` (`("Datacenter", "datacenter-2")`,
    /// `("ClusterComputeResource", "domain-c7")`), once a call has
    /// resolved the host.
    pub fn inventory_scope(&self) -> Option<(String, String)> {
        self.inner
            .lock()
            .resolved
            .get(&self.host)
            .map(|r| (r.scope.kind.clone(), r.scope.value.clone()))
    }

    /// Logs out (if logged in). Later calls log in again.
    pub async fn close(&self) -> Result<()> {
        let session = {
            let mut st = self.inner.lock();
            st.forget_session_objects();
            st.session.take()
        };
        if let Some(s) = session {
            let body = codec::logout(&s.sc.session_manager);
            match self.inner.call(&s, body, "LogoutResponse").await {
                Ok(_) | Err(CallError::Fault(_)) => {}
                Err(CallError::Other(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// The change feed: waits up to `max_wait` (capped below
    /// [`SoapConfig::timeout`]) for any VM of this host's datacenter to
    /// enter, leave or change placement, power state, name or tools state,
    /// and says whether one did. A `true` means "poll now": the next
    /// [`HostTransport::inventory`] shows the change. The first call only
    /// sets the feed up (one full update) and returns `false` at once.
    ///
    /// Uses `WaitForUpdatesEx` on a private property collector of the
    /// session, so inventory and power calls are never held up by a wait.
    pub async fn wait_for_change(&self, max_wait: Duration) -> Result<bool> {
        self.inner
            .with_session("change feed", |s| {
                self.inner.wait_once(s, &self.host, max_wait)
            })
            .await
    }

    /// Keeps the session alive while idle (`CurrentTime`, the cheapest
    /// authenticated call): call it more often than the server's session
    /// idle timeout (30 minutes by default on ESXi and vCenter). An expired
    /// session is renewed here like anywhere else.
    pub async fn keepalive(&self) -> Result<()> {
        self.inner
            .with_session("keepalive", |s| async move {
                let si = MoRef::new("ServiceInstance", "ServiceInstance");
                self.inner
                    .call(&s, codec::call("CurrentTime", &si), "CurrentTimeResponse")
                    .await?;
                Ok(())
            })
            .await
    }

    /// The name of the host this transport speaks for (after the first call).
    pub fn host_name(&self) -> Option<String> {
        self.inner
            .lock()
            .resolved
            .get(&self.host)
            .map(|r| r.name.clone())
    }
}

impl Drop for SoapTransport {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        if let Some(n) = st.polled.get_mut(&self.host) {
            *n -= 1;
            if *n == 0 {
                st.polled.remove(&self.host);
            }
        }
    }
}

impl State {
    /// Drops what belongs to the session (server-side objects and what
    /// was read through it).
    fn forget_session_objects(&mut self) {
        self.listing = None;
        self.listing_view = None;
        self.resolved.clear();
        self.views.clear();
        self.inflight.clear();
        self.recent.clear();
        self.feeds.clear();
    }

    /// After a power call: nothing read before it is served again.
    fn forget_fetches(&mut self) {
        self.inflight.clear();
        self.recent.clear();
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another call panicked mid-update of
        // plain data; the data is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn exchange(
        &self,
        body: String,
        cookie: Option<String>,
        action: &str,
        want: &str,
    ) -> CallResult<(Element, Option<String>)> {
        let reply = self.backend.post(body, cookie, action.to_owned()).await?;
        if reply.status != 200 && reply.status != 500 {
            return Err(Error::protocol(
                &self.target,
                format!("HTTP {} instead of a SOAP reply", reply.status),
            )
            .into());
        }
        match codec::expect(&reply.body, self.limits, want) {
            Ok(el) => Ok((el, reply.cookie)),
            Err(ReplyError::Fault(f)) => Err(CallError::Fault(f)),
            Err(e) => Err(Error::protocol(
                &self.target,
                format!("{want}: {e} (HTTP {})", reply.status),
            )
            .into()),
        }
    }

    async fn call(&self, s: &Session, body: String, want: &str) -> CallResult<Element> {
        Ok(self
            .exchange(body, Some(s.cookie.clone()), &s.action, want)
            .await?
            .0)
    }

    fn fault_error(&self, what: &str, f: Fault) -> Error {
        let t = &self.target;
        match f.kind.as_str() {
            "InvalidLogin" => Error::auth(
                t,
                format!("login refused for user {:?}", self.cfg.credentials.username),
            ),
            "NotAuthenticated" => Error::auth(
                t,
                format!("{what}: session not accepted even after logging in again"),
            ),
            "NoPermission" => Error::auth(t, format!("{what}: permission denied: {}", f.message)),
            "RestrictedVersion" => Error::unsupported(format!(
                "{what} on {t}: the host has a read-only API licence (free ESXi: RestrictedVersion); \
                 the vSphere API cannot switch power there, use the SSH transport (upsvisor-ssh, vim-cmd) instead"
            )),
            "ManagedObjectNotFound" => Error::not_found(format!("{what} on {t}: {}", f.message)),
            "ToolsUnavailable" => Error::tools_unavailable(what.to_owned()),
            "InvalidPowerState" | "InvalidState" | "TaskInProgress" | "InvalidHostState"
            | "HostNotConnected" => {
                Error::invalid_state(format!("{what} on {t}: {}: {}", f.kind, f.message))
            }
            "NotSupported" | "MethodNotFound" | "MethodDisabled" => {
                Error::unsupported(format!("{what} on {t}: {}: {}", f.kind, f.message))
            }
            "HostNotReachable" | "HostCommunication" => {
                Error::unreachable(t, format!("{what}: {}: {}", f.kind, f.message))
            }
            _ => Error::protocol(t, format!("{what}: server fault {}: {}", f.kind, f.message)),
        }
    }

    async fn retrieve_all(&self, s: &Session, q: &PropertyQuery) -> CallResult<Vec<ObjectContent>> {
        let mut out = Vec::new();
        self.retrieve_pages(s, q, |doc, want| {
            let mut page =
                codec::expect(doc, self.limits, want).and_then(codec::parse_retrieve_result)?;
            out.append(&mut page.objects);
            Ok(page.token)
        })
        .await?;
        Ok(out)
    }

    /// `RetrievePropertiesEx` and every `ContinueRetrievePropertiesEx`
    /// page after it. `read` takes each reply's bytes and the response
    /// element it must hold, keeps what it needs and returns the next
    /// page's token.
    async fn retrieve_pages<F>(&self, s: &Session, q: &PropertyQuery, mut read: F) -> CallResult<()>
    where
        F: FnMut(&[u8], &str) -> Result<Option<String>, ReplyError> + Send,
    {
        let pc = &s.sc.property_collector;
        let mut body = codec::retrieve_properties_ex(pc, q, self.cfg.page_size);
        let mut want = "RetrievePropertiesExResponse";
        let mut pages = 0usize;
        loop {
            pages += 1;
            if pages > 100_000 {
                return Err(
                    Error::protocol(&self.target, "property collector never stops paging").into(),
                );
            }
            let reply = self
                .backend
                .post(body, Some(s.cookie.clone()), s.action.clone())
                .await?;
            if reply.status != 200 && reply.status != 500 {
                return Err(Error::protocol(
                    &self.target,
                    format!("HTTP {} instead of a SOAP reply", reply.status),
                )
                .into());
            }
            let token = match read(&reply.body, want) {
                Ok(token) => token,
                Err(ReplyError::Fault(f)) => return Err(CallError::Fault(f)),
                Err(e) => {
                    return Err(Error::protocol(
                        &self.target,
                        format!("{want}: {e} (HTTP {})", reply.status),
                    )
                    .into());
                }
            };
            // The reply's bytes go before the next page comes in.
            drop(reply);
            let Some(token) = token else { return Ok(()) };
            body = codec::continue_retrieve_properties_ex(pc, &token);
            want = "ContinueRetrievePropertiesExResponse";
        }
    }

    /// The current session, logging in if there is none.
    async fn session(&self) -> Result<Arc<Session>> {
        if let Some(s) = self.lock().session.clone() {
            return Ok(s);
        }
        let seen = self.lock().login_attempts;
        let _one_login = self.login_lock.lock().await;
        {
            let st = self.lock();
            if let Some(s) = st.session.clone() {
                return Ok(s);
            }
            if st.login_attempts != seen {
                if let Some(e) = &st.login_error {
                    return Err(e.clone());
                }
            }
        }
        let r = match self.login().await {
            Ok(s) => Ok(Arc::new(s)),
            Err(CallError::Fault(f)) => Err(self.fault_error("login", f)),
            Err(CallError::Other(e)) => Err(e),
        };
        let mut st = self.lock();
        st.login_attempts += 1;
        let s = match r {
            Ok(s) => s,
            Err(e) => {
                if st.login_error.is_none() {
                    warn!(target = %self.target, error = %e, "vSphere login failed; logged once until a login succeeds");
                }
                st.login_error = Some(e.clone());
                return Err(e);
            }
        };
        if st.login_error.take().is_some() {
            info!(target = %self.target, "vSphere login succeeds again");
        }
        st.session = Some(Arc::clone(&s));
        st.forget_session_objects();
        Ok(s)
    }

    fn invalidate(&self, generation: u64) {
        let mut st = self.lock();
        if st
            .session
            .as_ref()
            .is_some_and(|s| s.generation == generation)
        {
            st.session = None;
        }
    }

    async fn login(&self) -> CallResult<Session> {
        let (el, _) = self
            .exchange(
                codec::retrieve_service_content(),
                None,
                "urn:vim25/6.0",
                "RetrieveServiceContentResponse",
            )
            .await?;
        let sc = codec::parse_service_content(&el).map_err(|e| Error::protocol(&self.target, e))?;
        let action = if sc.api_version.is_empty() {
            "urn:vim25/6.0".to_owned()
        } else {
            format!("urn:vim25/{}", sc.api_version)
        };
        let creds = &self.cfg.credentials;
        let body = codec::login(
            &sc.session_manager,
            &creds.username,
            creds.password.expose(),
        );
        // No cookie: a server that still knows an old session refuses a
        // second Login on it.
        let (_, cookie) = self.exchange(body, None, &action, "LoginResponse").await?;
        let cookie = cookie.ok_or_else(|| {
            Error::protocol(&self.target, "Login answered without a session cookie")
        })?;
        let generation = {
            let mut st = self.lock();
            st.generation += 1;
            st.generation
        };
        info!(target = %self.target, api = %sc.full_name, "vSphere session opened");
        Ok(Session {
            generation,
            cookie,
            sc,
            action,
        })
    }

    /// Resolves `sel` under `s` from the session's host listing (one
    /// retrieval for every host of the endpoint, cached per session). A
    /// selector the listing does not know makes one new listing (a host
    /// added or renamed since); concurrent callers join it.
    async fn resolve(&self, s: &Session, sel: &HostSelector) -> CallResult<Resolved> {
        let seen = {
            let st = self.lock();
            if let Some(r) = st.resolved.get(sel) {
                return Ok(r.clone());
            }
            st.listings
        };
        let _one_listing = self.setup_lock.lock().await;
        {
            let mut st = self.lock();
            if let Some(r) = st.resolved.get(sel) {
                return Ok(r.clone());
            }
            // A listing was made while this caller waited: its answer holds.
            if st.listings != seen {
                if let Some(r) = st.listing.as_ref().map(|l| {
                    l.resolved(sel, &self.target)
                        .unwrap_or_else(|| Err(Listing::missing(sel, &self.target)))
                }) {
                    if let Ok(r) = &r {
                        st.resolved.insert(sel.clone(), r.clone());
                    }
                    return r.map_err(CallError::from);
                }
            }
        }
        let mut listing = self.list_hosts(s).await?;
        let mut st = self.lock();
        st.listings += 1;
        listing.set_scopes(st.polled.keys(), &self.target);
        let resolved: HashMap<HostSelector, Resolved> = st
            .polled
            .keys()
            .filter_map(|p| match listing.resolved(p, &self.target) {
                Some(Ok(r)) => Some((p.clone(), r)),
                _ => None,
            })
            .collect();
        debug!(target = %self.target, hosts = listing.hosts.len(), resolved = resolved.len(), "hosts listed");
        st.resolved = resolved;
        let r = listing
            .resolved(sel, &self.target)
            .unwrap_or_else(|| Err(Listing::missing(sel, &self.target)));
        if let Ok(r) = &r {
            st.resolved.insert(sel.clone(), r.clone());
        }
        st.listing = Some(listing);
        r.map_err(CallError::from)
    }

    /// Every host of the endpoint with its name, compute resource and
    /// datacenter: one `RetrievePropertiesEx` over a container view of
    /// hosts, compute resources and folders (`name`, `parent`), the parent
    /// chains walked here.
    async fn list_hosts(&self, s: &Session) -> CallResult<Listing> {
        let existing = self.lock().listing_view.clone();
        let view = match existing {
            Some(v) => v,
            None => {
                let el = self
                    .call(
                        s,
                        codec::create_container_view(
                            &s.sc.view_manager,
                            &s.sc.root_folder,
                            &["HostSystem", "ComputeResource", "Folder"],
                        ),
                        "CreateContainerViewResponse",
                    )
                    .await?;
                let v = codec::parse_moref(&el).map_err(|e| Error::protocol(&self.target, e))?;
                self.lock().listing_view = Some(v.clone());
                v
            }
        };
        let q = PropertyQuery::default()
            .props("HostSystem", &["name", "parent"])
            .props("ComputeResource", &["parent"])
            .props("ClusterComputeResource", &["parent"])
            .props("Folder", &["parent"])
            .view(view);
        let objs = self.retrieve_all(s, &q).await?;
        let mut parents = HashMap::new();
        let mut hosts = Vec::new();
        for o in &objs {
            if let Some(p) = o
                .prop("parent")
                .filter(|v| !v.text.trim().is_empty())
                .map(|v| MoRef::new(v.ref_type.clone().unwrap_or_default(), v.text.trim()))
            {
                parents.insert(o.obj.clone(), p);
            }
            if o.obj.kind == "HostSystem" {
                let name = o
                    .prop("name")
                    .map(|v| v.text.trim().to_owned())
                    .unwrap_or_default();
                hosts.push((o.obj.clone(), name));
            }
        }
        Ok(Listing::new(hosts, &parents, &s.sc.root_folder))
    }

    /// The container view (VMs and hosts) of `scope`, created once per session.
    async fn view(&self, s: &Session, scope: &MoRef) -> CallResult<MoRef> {
        if let Some(v) = self.lock().views.get(scope).cloned() {
            return Ok(v);
        }
        let _one_view = self.setup_lock.lock().await;
        if let Some(v) = self.lock().views.get(scope).cloned() {
            return Ok(v);
        }
        let body = codec::create_container_view(
            &s.sc.view_manager,
            scope,
            &["VirtualMachine", "HostSystem"],
        );
        let el = self.call(s, body, "CreateContainerViewResponse").await?;
        let v = codec::parse_moref(&el).map_err(|e| Error::protocol(&self.target, e))?;
        self.lock().views.insert(scope.clone(), v.clone());
        Ok(v)
    }

    /// Runs `f` under a session; on `NotAuthenticated` logs in again once.
    async fn with_session<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        F: Fn(Arc<Session>) -> Fut,
        Fut: Future<Output = CallResult<T>>,
    {
        let s = self.session().await?;
        let generation = s.generation;
        let first = f(s).await;
        let second = match first {
            Err(CallError::Fault(fault)) if fault.kind == "NotAuthenticated" => {
                info!(target = %self.target, "session expired; logging in again");
                self.invalidate(generation);
                let s = self.session().await?;
                f(s).await
            }
            other => other,
        };
        match second {
            Ok(v) => Ok(v),
            Err(CallError::Fault(fault)) => Err(self.fault_error(what, fault)),
            Err(CallError::Other(e)) => Err(e),
        }
    }

    /// Fetches every host and VM of a scope in one RetrievePropertiesEx,
    /// each page read straight into records (no XML tree).
    async fn fetch(self: Arc<Self>, s: Arc<Session>, view: MoRef) -> CallResult<Arc<Snapshot>> {
        let q = PropertyQuery::default()
            .props("HostSystem", codec::HOST_PATHS)
            .props("VirtualMachine", codec::VM_PATHS)
            .view(view);
        let mut snap = Snapshot::default();
        let mut vms: Vec<VmRecord> = Vec::new();
        self.retrieve_pages(&s, &q, |doc, want| {
            let page = inventory::parse_inventory_page(doc, self.limits, want)?;
            snap.hosts.extend(page.hosts);
            vms.extend(page.vms);
            Ok(page.token)
        })
        .await?;
        let mut st = self.lock();
        for r in vms {
            st.vm_refs.insert(r.info.id.clone(), r.moref);
            // (A VM with no `runtime.host` belongs to no host's answer.)
            if let Some(h) = r.host {
                snap.by_host.entry(h).or_default().push(Arc::new(r.info));
            }
        }
        Ok(Arc::new(snap))
    }

    /// The inventory data of `scope` for host `sel`: a fetch that has not
    /// served `sel` yet, joined if still in flight, or its result if it
    /// succeeded less than [`SoapConfig::fetch_reuse`] ago; else a new one.
    async fn snapshot(
        self: &Arc<Self>,
        s: Arc<Session>,
        sel: &HostSelector,
        scope: &MoRef,
        view: Option<MoRef>,
    ) -> CallResult<Arc<Snapshot>> {
        let window = self.cfg.fetch_reuse;
        let fut = {
            let mut st = self.lock();
            // Expired results are dropped here, not kept until replaced.
            st.recent.retain(|_, k| k.arrived.elapsed() < window);
            if let Some(k) = st.recent.get_mut(scope) {
                if k.served.insert(sel.clone()) {
                    return Ok(Arc::clone(&k.snap));
                }
            }
            // An abandoned fetch (every caller dropped it) is not joined
            // once older than one exchange's deadline.
            let joined = st
                .inflight
                .get_mut(scope)
                .filter(|p| p.sent.elapsed() < self.cfg.timeout)
                .filter(|p| !p.served.contains(sel))
                .map(|p| {
                    p.served.insert(sel.clone());
                    p.fut.clone()
                });
            match joined {
                Some(fut) => fut,
                None => {
                    let fut = match view {
                        Some(view) => Arc::clone(self).fetch(s, view).boxed(),
                        None => Arc::clone(self).scoped_fetch(s, scope.clone()).boxed(),
                    }
                    .shared();
                    let pending = Pending {
                        sent: Instant::now(),
                        served: Served::from([sel.clone()]),
                        fut: fut.clone(),
                    };
                    st.inflight.insert(scope.clone(), pending);
                    fut
                }
            }
        };
        let r = fut.clone().await;
        let mut st = self.lock();
        // The one caller that retires a fetch keeps its result (success
        // only) and logs its outcome, and only the first failure of a
        // streak: every host of a shared session fails with it, and the
        // log says so once.
        if st.inflight.get(scope).is_some_and(|p| p.fut.ptr_eq(&fut)) {
            if let (Some(p), Ok(snap)) = (st.inflight.remove(scope), &r) {
                if !window.is_zero() {
                    let kept = Kept {
                        arrived: Instant::now(),
                        served: p.served,
                        snap: Arc::clone(snap),
                    };
                    st.recent.insert(scope.clone(), kept);
                }
            }
            match &r {
                Err(e) if !st.failing.contains(scope) => {
                    let error = match e {
                        CallError::Fault(f) => format!("{}: {}", f.kind, f.message),
                        CallError::Other(e) => e.to_string(),
                    };
                    warn!(target = %self.target, scope = %scope.value, %error, "inventory fetch failed: every host of this session that joined it is stale; logged once until a fetch succeeds");
                    st.failing.insert(scope.clone());
                }
                Ok(_) if st.failing.remove(scope) => {
                    info!(target = %self.target, scope = %scope.value, "inventory fetch succeeds again");
                }
                _ => {}
            }
        }
        r
    }

    /// A fetch over a view of `scope` (a cluster) made for it and
    /// destroyed after: its membership is the server's at this fetch, so
    /// a VM migrated into the cluster is in it, whether or not a server
    /// keeps older views up to date.
    async fn scoped_fetch(
        self: Arc<Self>,
        s: Arc<Session>,
        scope: MoRef,
    ) -> CallResult<Arc<Snapshot>> {
        let body = codec::create_container_view(
            &s.sc.view_manager,
            &scope,
            &["VirtualMachine", "HostSystem"],
        );
        let el = self.call(&s, body, "CreateContainerViewResponse").await?;
        let view = codec::parse_moref(&el).map_err(|e| Error::protocol(&self.target, e))?;
        let r = Arc::clone(&self).fetch(Arc::clone(&s), view.clone()).await;
        let _ = self
            .call(&s, codec::destroy_view(&view), "DestroyViewResponse")
            .await;
        r
    }

    async fn inventory_once(
        self: &Arc<Self>,
        s: Arc<Session>,
        sel: &HostSelector,
    ) -> CallResult<HostInventory> {
        let r = self.resolve(&s, sel).await?;
        let view = match r.by_cluster() {
            true => None,
            false => Some(self.view(&s, &r.scope).await?),
        };
        let snap = self.snapshot(s, sel, &r.scope, view).await?;
        let Some(host) = snap.hosts.get(&r.host) else {
            // Removed, or moved out of its cluster or datacenter: list the
            // hosts again at the next call.
            let mut st = self.lock();
            st.resolved.remove(sel);
            st.listing = None;
            return Err(Error::not_found(format!("host {} at {}", r.name, self.target)).into());
        };
        if let Some(cs) = host
            .connection_state
            .as_deref()
            .filter(|c| *c != "connected")
        {
            return Err(Error::unreachable(
                r.name.clone(),
                format!(
                    "{} reports the host as {cs} (power state {})",
                    self.target,
                    host.power_state.as_deref().unwrap_or("unknown")
                ),
            )
            .into());
        }
        let vms = snap.by_host.get(&r.host).cloned().unwrap_or_default();
        Ok(HostInventory::shared(host.info.clone(), vms))
    }

    async fn inventory(self: &Arc<Self>, sel: &HostSelector) -> Result<HostInventory> {
        self.with_session("inventory", |s| self.inventory_once(s, sel))
            .await
    }

    async fn vm_ref(self: &Arc<Self>, sel: &HostSelector, vm: &VmId) -> Result<MoRef> {
        if let Some(r) = self.lock().vm_refs.get(vm).cloned() {
            return Ok(r);
        }
        self.inventory(sel).await?;
        self.lock()
            .vm_refs
            .get(vm)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("VM {vm} on {}", self.target)))
    }

    async fn wait_once(
        self: &Arc<Self>,
        s: Arc<Session>,
        sel: &HostSelector,
        max_wait: Duration,
    ) -> CallResult<bool> {
        let r = self.resolve(&s, sel).await?;
        let existing = self.lock().feeds.get(&r.datacenter).cloned();
        let (pc, version) = match existing {
            Some(f) => f,
            None => {
                let view = self.view(&s, &r.datacenter).await?;
                let el = self
                    .call(
                        &s,
                        codec::create_property_collector(&s.sc.property_collector),
                        "CreatePropertyCollectorResponse",
                    )
                    .await?;
                let pc = codec::parse_moref(&el).map_err(|e| Error::protocol(&self.target, e))?;
                let q = PropertyQuery::default()
                    .props(
                        "VirtualMachine",
                        &[
                            "name",
                            "runtime.host",
                            "runtime.powerState",
                            "guest.toolsRunningStatus",
                        ],
                    )
                    .view(view);
                self.call(&s, codec::create_filter(&pc, &q), "CreateFilterResponse")
                    .await?;
                let el = self
                    .call(
                        &s,
                        codec::wait_for_updates_ex(&pc, "", 0),
                        "WaitForUpdatesExResponse",
                    )
                    .await?;
                let version = codec::parse_update_set(&el)
                    .map_err(|e| Error::protocol(&self.target, e))?
                    .map(|u| u.version)
                    .unwrap_or_default();
                self.lock()
                    .feeds
                    .insert(r.datacenter.clone(), (pc, version));
                return Ok(false);
            }
        };
        // Whole seconds (the API's unit), leaving the HTTP deadline room; 0
        // checks once without waiting.
        let secs = max_wait
            .min(self.cfg.timeout.saturating_sub(Duration::from_secs(2)))
            .as_secs();
        let el = self
            .call(
                &s,
                codec::wait_for_updates_ex(&pc, &version, secs),
                "WaitForUpdatesExResponse",
            )
            .await?;
        match codec::parse_update_set(&el).map_err(|e| Error::protocol(&self.target, e))? {
            Some(u) => {
                debug!(target = %self.target, changes = u.changed.len(), "change feed");
                self.lock().feeds.insert(r.datacenter, (pc, u.version));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn wait_task(&self, s: &Session, task: &MoRef, what: &str) -> CallResult<()> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(20);
        loop {
            let q = PropertyQuery::default()
                .props("Task", &["info.state", "info.error"])
                .object(task.clone());
            let objs = self.retrieve_all(s, &q).await?;
            let o = objs.first().ok_or_else(|| {
                Error::protocol(
                    &self.target,
                    format!("task {} of {what} vanished", task.value),
                )
            })?;
            match codec::task_state(o).map_err(|e| Error::protocol(&self.target, e))? {
                TaskState::Success => return Ok(()),
                TaskState::Error(f) => return Err(CallError::Fault(f)),
                TaskState::Pending => {}
            }
            if start.elapsed() >= self.cfg.task_timeout {
                return Err(Error::timeout(
                    format!("{what} on {}", self.target),
                    self.cfg.task_timeout,
                )
                .into());
            }
            self.backend.sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    async fn vm_power_once(&self, s: Arc<Session>, vm: MoRef, op: VmOp) -> CallResult<()> {
        let (name, task) = match op {
            VmOp::ShutdownGuest => ("ShutdownGuest", false),
            VmOp::RebootGuest => ("RebootGuest", false),
            VmOp::PowerOff => ("PowerOffVM_Task", true),
            VmOp::PowerOn => ("PowerOnVM_Task", true),
            VmOp::Reset => ("ResetVM_Task", true),
            VmOp::Suspend => ("SuspendVM_Task", true),
            _ => return Err(Error::unsupported(format!("VM operation {op}")).into()),
        };
        let result = async {
            let el = self
                .call(&s, codec::call(name, &vm), &format!("{name}Response"))
                .await?;
            if task {
                let t = codec::parse_moref(&el).map_err(|e| Error::protocol(&self.target, e))?;
                self.wait_task(&s, &t, name).await?;
            }
            Ok(())
        }
        .await;
        match result {
            // Already where the call would take it: idempotent success.
            Err(CallError::Fault(f))
                if f.kind == "InvalidPowerState" && (op.stops() || op == VmOp::PowerOn) =>
            {
                debug!(target = %self.target, vm = %vm.value, %op, "already in that power state");
                Ok(())
            }
            other => other,
        }
    }

    async fn host_power_once(
        &self,
        s: Arc<Session>,
        sel: &HostSelector,
        op: HostOp,
    ) -> CallResult<()> {
        let name = match op {
            HostOp::EnterMaintenance => "EnterMaintenanceMode_Task",
            HostOp::ExitMaintenance => "ExitMaintenanceMode_Task",
            // The call is always made with force = true (see host_call).
            HostOp::Shutdown | HostOp::ShutdownForce => "ShutdownHost_Task",
            HostOp::Reboot => "RebootHost_Task",
            _ => return Err(Error::unsupported(format!("host operation {op}")).into()),
        };
        let host = self.resolve(&s, sel).await?.host;
        // force: the sequencer shuts a host down only once its VMs are off,
        // and a UPS on battery cannot wait for maintenance mode.
        let el = self
            .call(
                &s,
                codec::host_call(name, &host, true),
                &format!("{name}Response"),
            )
            .await?;
        let t = codec::parse_moref(&el).map_err(|e| Error::protocol(&self.target, e))?;
        match self.wait_task(&s, &t, name).await {
            Err(CallError::Other(e))
                if matches!(
                    op,
                    HostOp::Shutdown | HostOp::ShutdownForce | HostOp::Reboot
                ) && matches!(e.kind(), ErrorKind::Unreachable | ErrorKind::Timeout) =>
            {
                // The host accepted the task and went away: that is the point.
                info!(target = %self.target, %op, "host stopped answering after accepting {name}");
                Ok(())
            }
            Err(CallError::Fault(f))
                if f.kind == "InvalidState"
                    && matches!(op, HostOp::EnterMaintenance | HostOp::ExitMaintenance) =>
            {
                let want = op == HostOp::EnterMaintenance;
                let q = PropertyQuery::default()
                    .props("HostSystem", codec::HOST_PATHS)
                    .object(host.clone());
                let objs = self.retrieve_all(&s, &q).await?;
                match objs.first().map(codec::host_state) {
                    Some(h) if h.in_maintenance == want => Ok(()),
                    _ => Err(CallError::Fault(f)),
                }
            }
            other => other,
        }
    }
}

#[async_trait]
impl HostTransport for SoapTransport {
    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    async fn host_info(&self) -> Result<HostInfo> {
        Ok(self.inner.inventory(&self.host).await?.info)
    }

    async fn list_vm_ids(&self) -> Result<Vec<VmId>> {
        Ok(self
            .inner
            .inventory(&self.host)
            .await?
            .vms
            .into_iter()
            .map(|v| v.id.clone())
            .collect())
    }

    async fn vm_info(&self, vm: &VmId) -> Result<VmInfo> {
        self.inner
            .inventory(&self.host)
            .await?
            .vms
            .into_iter()
            .find(|v| &v.id == vm)
            .map(std::sync::Arc::unwrap_or_clone)
            .ok_or_else(|| Error::not_found(format!("VM {vm} on {}", self.inner.target)))
    }

    async fn inventory(&self) -> Result<HostInventory> {
        self.inner.inventory(&self.host).await
    }

    async fn vm_power(&self, vm: &VmId, op: VmOp) -> Result<()> {
        let moref = self.inner.vm_ref(&self.host, vm).await?;
        self.inner.lock().forget_fetches();
        let what = format!("{op} of VM {vm}");
        let r = self
            .inner
            .with_session(&what, |s| self.inner.vm_power_once(s, moref.clone(), op))
            .await;
        // Nor what a fetch sent during the call read.
        self.inner.lock().forget_fetches();
        if let Err(e) = &r {
            if e.kind() == ErrorKind::NotFound {
                // Stale id → moref mapping (VM re-registered): forget it.
                self.inner.lock().vm_refs.remove(vm);
            }
            warn!(target = %self.inner.target, vm = %vm, %op, error = %e, "VM power call failed");
        }
        r
    }

    async fn host_power(&self, op: HostOp) -> Result<()> {
        let what = format!("{op} of the host");
        self.inner.lock().forget_fetches();
        let r = self
            .inner
            .with_session(&what, |s| self.inner.host_power_once(s, &self.host, op))
            .await;
        self.inner.lock().forget_fetches();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Reply;
    use futures::FutureExt;
    use futures::executor::block_on;
    use futures::future::BoxFuture;
    use upsvisor_traits::Credentials;

    #[test]
    fn target_is_host_and_port() {
        assert_eq!(target_of("https://127.0.0.1:443/sdk"), "127.0.0.1:443");
        assert_eq!(target_of("https://esx1/sdk"), "esx1");
    }

    type Handler = dyn Fn(&str, &str, usize) -> Option<(u16, String)> + Send + Sync;

    /// A scripted ESXi: answers by method name; `over` overrides a method
    /// (its n-th call, counted from 0) with a status and body.
    struct Fake {
        over: Box<Handler>,
        log: Mutex<Vec<String>>,
    }

    fn env(body: &str) -> String {
        codec::envelope(body)
    }

    fn fault(kind: &str) -> (u16, String) {
        (
            500,
            env(&format!(
                r#"<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>{kind} happened</faultstring><detail><{kind}Fault xmlns="urn:vim25" xsi:type="{kind}"/></detail></soapenv:Fault>"#
            )),
        )
    }

    fn prop(name: &str, val: &str) -> String {
        format!("<propSet><name>{name}</name><val>{val}</val></propSet>")
    }

    fn vm_obj(n: usize) -> String {
        format!(
            r#"<objects><obj type="VirtualMachine">vm-{n}</obj>{}{}{}{}</objects>"#,
            prop("name", &format!("vm{n}")),
            prop("config.instanceUuid", &format!("uuid-{n}")),
            prop("runtime.powerState", "poweredOn"),
            r#"<propSet><name>runtime.host</name><val type="HostSystem">ha-host</val></propSet>"#
        )
    }

    fn default_reply(method: &str, body: &str) -> (u16, String) {
        let ok = |inner: &str| {
            (
                200,
                env(&format!(
                    r#"<{method}Response xmlns="urn:vim25">{inner}</{method}Response>"#
                )),
            )
        };
        match method {
            "RetrieveServiceContent" => ok(concat!(
                r#"<returnval><rootFolder type="Folder">ha-folder-root</rootFolder><propertyCollector type="PropertyCollector">ha-property-collector</propertyCollector>"#,
                r#"<viewManager type="ViewManager">ViewManager</viewManager><about><fullName>VMware ESXi 7.0</fullName><apiType>HostAgent</apiType><apiVersion>7.0</apiVersion></about>"#,
                r#"<sessionManager type="SessionManager">ha-sessionmgr</sessionManager></returnval>"#
            )),
            "Login" => ok("<returnval><key>k</key></returnval>"),
            "CreateContainerView" => {
                ok(r#"<returnval type="ContainerView">session[x]v</returnval>"#)
            }
            "PowerOffVM_Task" => ok(r#"<returnval type="Task">task-1</returnval>"#),
            "ContinueRetrievePropertiesEx" => {
                let tok: usize = body
                    .split("<token>")
                    .nth(1)
                    .and_then(|t| t.split('<').next())
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(99);
                let next = if tok < 3 {
                    format!("<token>{}</token>", tok + 1)
                } else {
                    String::new()
                };
                ok(&format!("<returnval>{next}{}</returnval>", vm_obj(tok)))
            }
            // The host listing: every host, compute resource and folder
            // with its parent.
            "RetrievePropertiesEx" if body.contains("<type>ComputeResource</type>") => ok(concat!(
                r#"<returnval><objects><obj type="HostSystem">ha-host</obj><propSet><name>name</name><val>esx1</val></propSet>"#,
                r#"<propSet><name>parent</name><val type="ComputeResource">ha-compute-res</val></propSet></objects>"#,
                r#"<objects><obj type="ComputeResource">ha-compute-res</obj><propSet><name>parent</name><val type="Folder">ha-folder-host</val></propSet></objects>"#,
                r#"<objects><obj type="Folder">ha-folder-host</obj><propSet><name>parent</name><val type="Datacenter">ha-datacenter</val></propSet></objects>"#,
                r#"</returnval>"#
            )),
            "RetrievePropertiesEx" if body.contains("info.state") => ok(&format!(
                r#"<returnval><objects><obj type="Task">task-1</obj>{}</objects></returnval>"#,
                prop("info.state", "success")
            )),
            "RetrievePropertiesEx" if body.contains("runtime.connectionState") => ok(&format!(
                r#"<returnval><token>1</token><objects><obj type="HostSystem">ha-host</obj>{}{}</objects>{}</returnval>"#,
                prop("name", "esx1"),
                prop("runtime.connectionState", "connected"),
                vm_obj(0)
            )),
            "RetrievePropertiesEx" => ok(&format!(
                r#"<returnval><objects><obj type="HostSystem">ha-host</obj>{}</objects></returnval>"#,
                prop("name", "esx1")
            )),
            _ => ok(""),
        }
    }

    impl Backend for Fake {
        fn post(
            &self,
            body: String,
            _cookie: Option<String>,
            _action: String,
        ) -> BoxFuture<'static, Result<Reply>> {
            let method = body
                .split("<soapenv:Body><")
                .nth(1)
                .and_then(|r| r.split([' ', '>']).next())
                .unwrap_or_default()
                .to_owned();
            let n = {
                let mut log = self.log.lock().unwrap();
                log.push(method.clone());
                log.iter().filter(|m| **m == method).count() - 1
            };
            let (status, text) =
                (self.over)(&method, &body, n).unwrap_or_else(|| default_reply(&method, &body));
            let cookie = (method == "Login").then(|| "vmware_soap_session=abc".to_owned());
            async move {
                Ok(Reply {
                    status,
                    body: text.into_bytes(),
                    cookie,
                })
            }
            .boxed()
        }

        fn sleep(&self, _d: Duration) -> BoxFuture<'static, ()> {
            async {}.boxed()
        }
    }

    fn fake(
        over: impl Fn(&str, &str, usize) -> Option<(u16, String)> + Send + Sync + 'static,
    ) -> (SoapTransport, Arc<Inner>) {
        let cfg = SoapConfig::new("https://esx1", Credentials::new("root", "pw"));
        let t = SoapTransport::with_backend(
            cfg,
            "esx1".into(),
            Box::new(Fake {
                over: Box::new(over),
                log: Mutex::new(Vec::new()),
            }),
        );
        let inner = Arc::clone(&t.inner);
        (t, inner)
    }

    #[test]
    fn pages_are_followed_and_filtered_by_host() {
        let (t, _) = fake(|_, _, _| None);
        let inv = block_on(t.inventory()).unwrap();
        let ids: Vec<&str> = inv.vms.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, ["uuid-0", "uuid-1", "uuid-2", "uuid-3"]);
        assert_eq!(inv.info.hostname.as_deref(), Some("esx1"));
        assert_eq!(t.host_name().as_deref(), Some("esx1"));
    }

    /// dc-1: clusters c0 and c1 of 4 hosts each, standalone s0 and s1
    /// (own compute resources); dc-2: one standalone host; `bare` has no
    /// compute resource above it.
    fn listing() -> Listing {
        fn mo(kind: &str, value: impl Into<String>) -> MoRef {
            MoRef::new(kind, value)
        }
        let mut parents = HashMap::new();
        let mut hosts = Vec::new();
        for c in 0..2 {
            parents.insert(
                mo("ClusterComputeResource", format!("c{c}")),
                mo("Folder", "hf1"),
            );
            for h in 0..4 {
                let host = mo("HostSystem", format!("h{c}{h}"));
                parents.insert(host.clone(), mo("ClusterComputeResource", format!("c{c}")));
                hosts.push((host, format!("esx-{c}{h}")));
            }
        }
        for (name, dc_folder) in [("s0", "hf1"), ("s1", "hf1"), ("s2", "hf2")] {
            let host = mo("HostSystem", name);
            parents.insert(host.clone(), mo("ComputeResource", format!("cr-{name}")));
            parents.insert(
                mo("ComputeResource", format!("cr-{name}")),
                mo("Folder", dc_folder),
            );
            hosts.push((host, name.to_owned()));
        }
        parents.insert(mo("HostSystem", "bare"), mo("Folder", "hf1"));
        hosts.push((mo("HostSystem", "bare"), "bare".to_owned()));
        parents.insert(mo("Folder", "hf1"), mo("Folder", "nested"));
        parents.insert(mo("Folder", "nested"), mo("Datacenter", "dc-1"));
        parents.insert(mo("Folder", "hf2"), mo("Datacenter", "dc-2"));
        Listing::new(hosts, &parents, &mo("Folder", "root"))
    }

    fn scopes_of(polled: &[&str]) -> Vec<String> {
        let mut l = listing();
        let sels: Vec<HostSelector> = polled
            .iter()
            .map(|n| HostSelector::Name((*n).to_owned()))
            .collect();
        l.set_scopes(sels.iter(), "vc");
        sels.iter()
            .map(|s| l.resolved(s, "vc").unwrap().unwrap().scope.value)
            .collect()
    }

    #[test]
    fn views_are_scoped_to_clusters_when_the_session_polls_few_hosts() {
        // dc-1 has 11 hosts. A lone host: its cluster (4 of 11).
        assert_eq!(scopes_of(&["esx-00"]), ["c0"]);
        // A standalone host: its own compute resource.
        assert_eq!(scopes_of(&["s0", "s1"]), ["cr-s0", "cr-s1"]);
        // Two hosts of one cluster: still that cluster, one view.
        assert_eq!(scopes_of(&["esx-00", "esx-03"]), ["c0", "c0"]);
        // Both clusters (8 of 11 hosts): the datacenter, one fetch for all.
        assert_eq!(scopes_of(&["esx-00", "esx-10"]), ["dc-1", "dc-1"]);
        // The only host of its datacenter (an ESXi host reached directly).
        assert_eq!(scopes_of(&["s2"]), ["dc-2"]);
        // No compute resource above it: a view of the host would not hold
        // the host itself, so its datacenter.
        assert_eq!(scopes_of(&["bare", "esx-00"]), ["dc-1", "dc-1"]);
        // Not polled by this session: its datacenter.
        let mut l = listing();
        l.set_scopes([HostSelector::Name("esx-00".into())].iter(), "vc");
        let r = l.resolved(&HostSelector::MoRef("h10".into()), "vc");
        assert_eq!(r.unwrap().unwrap().scope.value, "dc-1");
        // Selectors: unknown, and `Only` with many hosts.
        assert!(
            l.resolved(&HostSelector::Name("nope".into()), "vc")
                .is_none()
        );
        let e = l.resolved(&HostSelector::Only, "vc").unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    }

    #[test]
    fn faults_map_to_kinds() {
        let cases = [
            (
                "PowerOffVM_Task",
                "RestrictedVersion",
                ErrorKind::Unsupported,
            ),
            ("PowerOffVM_Task", "NoPermission", ErrorKind::Auth),
            (
                "PowerOffVM_Task",
                "ManagedObjectNotFound",
                ErrorKind::NotFound,
            ),
            ("PowerOffVM_Task", "SomethingNew", ErrorKind::Protocol),
        ];
        for (method, kind, want) in cases {
            let (t, _) = fake(move |m, _, _| (m == method).then(|| fault(kind)));
            let err = block_on(t.vm_power(&VmId::new("uuid-0"), VmOp::PowerOff)).unwrap_err();
            assert_eq!(err.kind(), want, "{kind}: {err}");
            if kind == "RestrictedVersion" {
                assert!(err.to_string().contains("SSH transport"), "{err}");
            }
        }
        // Already off: success.
        let (t, _) = fake(|m, _, _| (m == "PowerOffVM_Task").then(|| fault("InvalidPowerState")));
        block_on(t.vm_power(&VmId::new("uuid-0"), VmOp::PowerOff)).unwrap();
        // Reset of an off VM is a real refusal.
        let (t, _) = fake(|m, _, _| (m == "ResetVM_Task").then(|| fault("InvalidPowerState")));
        assert_eq!(
            block_on(t.vm_power(&VmId::new("uuid-0"), VmOp::Reset))
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidState
        );
        let (t, _) = fake(|m, _, _| (m == "ShutdownGuest").then(|| fault("ToolsUnavailable")));
        assert_eq!(
            block_on(t.vm_power(&VmId::new("uuid-0"), VmOp::ShutdownGuest))
                .unwrap_err()
                .kind(),
            ErrorKind::ToolsUnavailable
        );
        let (t, _) = fake(|m, _, _| (m == "Login").then(|| fault("InvalidLogin")));
        let err = block_on(t.inventory()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Auth);
        assert!(!err.to_string().contains("pw"), "{err}");
    }

    #[test]
    fn not_authenticated_logs_in_once_then_gives_up() {
        // Expired once: the second try (after a new login) succeeds.
        let (t, _) = fake(|m, b, n| {
            (m == "RetrievePropertiesEx" && b.contains("runtime.connectionState") && n == 0)
                .then(|| fault("NotAuthenticated"))
        });
        block_on(t.inventory()).unwrap();
        // Refused every time: an Auth error, not a loop.
        let (t, _) = fake(|m, b, _| {
            (m == "RetrievePropertiesEx" && b.contains("runtime.connectionState"))
                .then(|| fault("NotAuthenticated"))
        });
        let err = block_on(t.inventory()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    }

    #[test]
    fn odd_http_answers_are_protocol_errors() {
        let (t, _) = fake(|m, _, _| {
            (m == "RetrieveServiceContent").then(|| (404, "<html>nope</html>".to_owned()))
        });
        let err = block_on(t.inventory()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol);
        assert!(err.to_string().contains("HTTP 404"), "{err}");
        let (t, _) =
            fake(|m, _, _| (m == "RetrieveServiceContent").then(|| (200, "<html>".to_owned())));
        assert_eq!(
            block_on(t.inventory()).unwrap_err().kind(),
            ErrorKind::Protocol
        );
        let (t, _) =
            fake(|m, _, _| (m == "RetrievePropertiesEx").then(|| (500, env("<Nonsense/>"))));
        assert_eq!(
            block_on(t.inventory()).unwrap_err().kind(),
            ErrorKind::Protocol
        );
        // A host that vCenter cannot reach is unreachable, not empty.
        let (t, _) = fake(|m, b, _| {
            (m == "RetrievePropertiesEx" && b.contains("runtime.connectionState")).then(|| {
                (200, env(&format!(
                    r#"<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="HostSystem">ha-host</obj>{}</objects></returnval></RetrievePropertiesExResponse>"#,
                    prop("runtime.connectionState", "notResponding")
                )))
            })
        });
        assert_eq!(
            block_on(t.inventory()).unwrap_err().kind(),
            ErrorKind::Unreachable
        );
    }

    #[test]
    fn pending_tasks_are_polled_until_done() {
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let p = Arc::clone(&polls);
        let (t, _) = fake(move |m, b, _| {
            let is_poll = m == "RetrievePropertiesEx" && b.contains("info.state");
            let n = if is_poll {
                p.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            } else {
                99
            };
            (is_poll && n < 3).then(|| {
                (200, env(&format!(
                    r#"<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="Task">task-1</obj>{}</objects></returnval></RetrievePropertiesExResponse>"#,
                    prop("info.state", "running")
                )))
            })
        });
        block_on(t.vm_power(&VmId::new("uuid-2"), VmOp::PowerOff)).unwrap();
        assert_eq!(polls.load(std::sync::atomic::Ordering::SeqCst), 4);
        assert_eq!(
            block_on(t.vm_power(&VmId::new("nope"), VmOp::PowerOff))
                .unwrap_err()
                .kind(),
            ErrorKind::NotFound
        );
    }
}
