//! The sans-IO vim25 codec: request envelopes and reply parsers.
//!
//! Everything here is pure: builders return the XML to POST, parsers take
//! the bytes that came back. The I/O shell (`SoapTransport`) only
//! moves bytes and cookies.

use std::net::IpAddr;

use upsvisor_traits::{HostInfo, PowerState, ToolsState, VmId, VmInfo};

use crate::xml::{self, Element, Limits, XmlError, escape};

/// A managed-object reference (`<obj type="VirtualMachine">vm-42</obj>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MoRef {
    /// Managed-object type, e.g. `VirtualMachine`.
    pub kind: String,
    /// Its id, e.g. `vm-42`.
    pub value: String,
}

impl MoRef {
    /// A reference.
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        MoRef {
            kind: kind.into(),
            value: value.into(),
        }
    }

    fn from_element(e: &Element) -> Option<MoRef> {
        let value = e.text.trim();
        if value.is_empty() {
            return None;
        }
        Some(MoRef::new(e.ref_type.clone().unwrap_or_default(), value))
    }

    fn xml(&self, tag: &str) -> String {
        format!(
            r#"<{tag} type="{}">{}</{tag}>"#,
            escape(&self.kind),
            escape(&self.value)
        )
    }
}

// ---------------------------------------------------------------- requests

/// Wraps a method element in a SOAP envelope.
pub fn envelope(body: &str) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" "#,
            r#"xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#,
            r#"<soapenv:Body>{}</soapenv:Body></soapenv:Envelope>"#
        ),
        body
    )
}

fn method(name: &str, this: &MoRef, args: &str) -> String {
    envelope(&format!(
        r#"<{name} xmlns="urn:vim25">{}{args}</{name}>"#,
        this.xml("_this")
    ))
}

/// `RetrieveServiceContent` on the `ServiceInstance`.
pub fn retrieve_service_content() -> String {
    method(
        "RetrieveServiceContent",
        &MoRef::new("ServiceInstance", "ServiceInstance"),
        "",
    )
}

/// `Login`. The password goes into the body only; never log this string.
pub fn login(session_manager: &MoRef, user: &str, password: &str) -> String {
    method(
        "Login",
        session_manager,
        &format!(
            "<userName>{}</userName><password>{}</password>",
            escape(user),
            escape(password)
        ),
    )
}

/// `Logout`.
pub fn logout(session_manager: &MoRef) -> String {
    method("Logout", session_manager, "")
}

/// `CreateContainerView` of `kinds` under `container`, recursive.
pub fn create_container_view(view_manager: &MoRef, container: &MoRef, kinds: &[&str]) -> String {
    let types: String = kinds
        .iter()
        .map(|k| format!("<type>{}</type>", escape(k)))
        .collect();
    method(
        "CreateContainerView",
        view_manager,
        &format!(
            "{}{types}<recursive>true</recursive>",
            container.xml("container")
        ),
    )
}

/// `DestroyView`.
pub fn destroy_view(view: &MoRef) -> String {
    method("DestroyView", view, "")
}

/// Which properties of which objects to fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertyQuery {
    /// `(type, paths)` pairs.
    pub props: Vec<(String, Vec<String>)>,
    /// Objects fetched directly.
    pub objects: Vec<MoRef>,
    /// Container views whose contents are fetched (the view itself is skipped).
    pub views: Vec<MoRef>,
}

impl PropertyQuery {
    /// Adds properties of a type.
    pub fn props(mut self, kind: &str, paths: &[&str]) -> Self {
        self.props.push((
            kind.to_owned(),
            paths.iter().map(|p| (*p).to_owned()).collect(),
        ));
        self
    }

    /// Adds an object.
    pub fn object(mut self, obj: MoRef) -> Self {
        self.objects.push(obj);
        self
    }

    /// Adds a container view.
    pub fn view(mut self, view: MoRef) -> Self {
        self.views.push(view);
        self
    }

    fn spec(&self) -> String {
        self.spec_as("specSet")
    }

    fn spec_as(&self, tag: &str) -> String {
        let mut s = format!("<{tag}>");
        for (kind, paths) in &self.props {
            s.push_str(&format!(
                "<propSet><type>{}</type><all>false</all>",
                escape(kind)
            ));
            for p in paths {
                s.push_str(&format!("<pathSet>{}</pathSet>", escape(p)));
            }
            s.push_str("</propSet>");
        }
        for v in &self.views {
            s.push_str(&format!(
                concat!(
                    r#"<objectSet>{}<skip>true</skip><selectSet xsi:type="TraversalSpec">"#,
                    "<name>view</name><type>ContainerView</type><path>view</path><skip>false</skip>",
                    "</selectSet></objectSet>"
                ),
                v.xml("obj")
            ));
        }
        for o in &self.objects {
            s.push_str(&format!(
                "<objectSet>{}<skip>false</skip></objectSet>",
                o.xml("obj")
            ));
        }
        s.push_str(&format!("</{tag}>"));
        s
    }
}

/// `RetrievePropertiesEx` with a page size.
pub fn retrieve_properties_ex(collector: &MoRef, q: &PropertyQuery, max_objects: u32) -> String {
    method(
        "RetrievePropertiesEx",
        collector,
        &format!(
            "{}<options><maxObjects>{max_objects}</maxObjects></options>",
            q.spec()
        ),
    )
}

/// `ContinueRetrievePropertiesEx` for the next page.
pub fn continue_retrieve_properties_ex(collector: &MoRef, token: &str) -> String {
    method(
        "ContinueRetrievePropertiesEx",
        collector,
        &format!("<token>{}</token>", escape(token)),
    )
}

/// `CreatePropertyCollector`: a private collector for the change feed, so
/// that a long `WaitForUpdatesEx` never holds up inventory calls.
pub fn create_property_collector(collector: &MoRef) -> String {
    method("CreatePropertyCollector", collector, "")
}

/// `CreateFilter` on a (private) collector, full updates.
pub fn create_filter(collector: &MoRef, q: &PropertyQuery) -> String {
    method(
        "CreateFilter",
        collector,
        &format!(
            "{}<partialUpdates>false</partialUpdates>",
            q.spec_as("spec")
        ),
    )
}

/// `WaitForUpdatesEx` from `version` (empty: the initial full set), waiting
/// at most `max_wait_seconds`.
pub fn wait_for_updates_ex(collector: &MoRef, version: &str, max_wait_seconds: u64) -> String {
    method(
        "WaitForUpdatesEx",
        collector,
        &format!(
            "<version>{}</version><options><maxWaitSeconds>{max_wait_seconds}</maxWaitSeconds></options>",
            escape(version)
        ),
    )
}

/// A method with no arguments but `_this` (ShutdownGuest, PowerOffVM_Task, ...).
pub fn call(name: &str, this: &MoRef) -> String {
    method(name, this, "")
}

/// A host power method; `force` where the method takes it
/// (ShutdownHost_Task, RebootHost_Task), a zero timeout for maintenance mode.
pub fn host_call(name: &str, host: &MoRef, force: bool) -> String {
    let args = match name {
        "ShutdownHost_Task" | "RebootHost_Task" => format!("<force>{force}</force>"),
        "EnterMaintenanceMode_Task" | "ExitMaintenanceMode_Task" => "<timeout>0</timeout>".into(),
        _ => String::new(),
    };
    method(name, host, &args)
}

// ---------------------------------------------------------------- replies

/// A SOAP fault: the vim25 fault type and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// vim25 fault type, e.g. `NotAuthenticated`, `ToolsUnavailable`
    /// (`ServerFault` when the detail names none).
    pub kind: String,
    /// `faultstring` (or the localized message of a task error).
    pub message: String,
}

/// Why a reply could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// The server answered with a fault.
    Fault(Fault),
    /// Not XML, too large, too deep, truncated.
    Xml(XmlError),
    /// Well-formed XML that is not the expected vim25 reply.
    Shape(String),
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyError::Fault(x) => write!(f, "{}: {}", x.kind, x.message),
            ReplyError::Xml(e) => e.fmt(f),
            ReplyError::Shape(s) => f.write_str(s),
        }
    }
}

fn shape(s: impl Into<String>) -> ReplyError {
    ReplyError::Shape(s.into())
}

fn fault_kind(detail_child: &Element) -> String {
    fault_kind_of(&detail_child.name, detail_child.xsi_type.as_deref())
}

/// The fault type named by a fault element: its `xsi:type` (prefix
/// dropped), else its name without the `Fault` suffix.
pub(crate) fn fault_kind_of(name: &str, xsi_type: Option<&str>) -> String {
    if let Some(t) = xsi_type {
        return t.rsplit(':').next().unwrap_or(t).to_owned();
    }
    name.strip_suffix("Fault")
        .filter(|s| !s.is_empty())
        .unwrap_or(name)
        .to_owned()
}

/// Parses an envelope and returns the method response element (the first
/// child of `Body`), or the fault.
pub fn parse_envelope(doc: &[u8], limits: Limits) -> Result<Element, ReplyError> {
    let root = xml::parse(doc, limits).map_err(ReplyError::Xml)?;
    if root.name != "Envelope" {
        return Err(shape(format!(
            "expected a SOAP Envelope, got <{}>",
            root.name
        )));
    }
    // Moved out, not cloned: a large inventory reply is megabytes of tree.
    let body = root
        .children
        .into_iter()
        .find(|c| c.name == "Body")
        .ok_or_else(|| shape("SOAP envelope without a Body"))?;
    let first = body
        .children
        .into_iter()
        .next()
        .ok_or_else(|| shape("empty SOAP Body"))?;
    if first.name == "Fault" {
        let message = first
            .child_text("faultstring")
            .unwrap_or_default()
            .to_owned();
        let kind = first
            .child("detail")
            .and_then(|d| d.children.first())
            .map(fault_kind)
            .unwrap_or_else(|| "ServerFault".to_owned());
        return Err(ReplyError::Fault(Fault { kind, message }));
    }
    Ok(first)
}

fn returnval(resp: &Element) -> Result<&Element, ReplyError> {
    resp.child("returnval")
        .ok_or_else(|| shape(format!("<{}> without returnval", resp.name)))
}

/// What `RetrieveServiceContent` says (only what the adapter uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceContent {
    /// The inventory root folder.
    pub root_folder: MoRef,
    /// The property collector.
    pub property_collector: MoRef,
    /// The view manager.
    pub view_manager: MoRef,
    /// The session manager.
    pub session_manager: MoRef,
    /// `about.apiType`: `HostAgent` (ESXi) or `VirtualCenter`.
    pub api_type: String,
    /// `about.apiVersion`, e.g. `6.5`.
    pub api_version: String,
    /// `about.fullName`.
    pub full_name: String,
}

/// Parses a `RetrieveServiceContent` reply.
pub fn parse_service_content(resp: &Element) -> Result<ServiceContent, ReplyError> {
    let rv = returnval(resp)?;
    let mor = |name: &str| {
        rv.child(name)
            .and_then(MoRef::from_element)
            .ok_or_else(|| shape(format!("service content without {name}")))
    };
    let about = rv.child("about");
    let about_text = |n: &str| {
        about
            .and_then(|a| a.child_text(n))
            .unwrap_or_default()
            .to_owned()
    };
    Ok(ServiceContent {
        root_folder: mor("rootFolder")?,
        property_collector: mor("propertyCollector")?,
        view_manager: mor("viewManager")?,
        session_manager: mor("sessionManager")?,
        api_type: about_text("apiType"),
        api_version: about_text("apiVersion"),
        full_name: about_text("fullName"),
    })
}

/// Parses a reply whose `returnval` is a managed-object reference
/// (`CreateContainerView`, `*_Task`).
pub fn parse_moref(resp: &Element) -> Result<MoRef, ReplyError> {
    returnval(resp)
        .ok()
        .and_then(MoRef::from_element)
        .ok_or_else(|| {
            shape(format!(
                "<{}> without a managed-object reference",
                resp.name
            ))
        })
}

/// One object of a property-collector answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectContent {
    /// The object.
    pub obj: MoRef,
    /// `(path, value element)` pairs.
    pub props: Vec<(String, Element)>,
    /// Paths the server could not fetch, with the fault type.
    pub missing: Vec<(String, String)>,
}

impl ObjectContent {
    /// The value of a property.
    pub fn prop(&self, path: &str) -> Option<&Element> {
        self.props.iter().find(|(p, _)| p == path).map(|(_, v)| v)
    }

    fn text(&self, path: &str) -> Option<&str> {
        PropView::text(self, path)
    }
}

/// The reads [`host_state`] and [`vm_record`] make of an object's
/// properties, over either a parsed tree ([`ObjectContent`]) or the
/// streaming reader's kept values (`crate::inventory`), so that both
/// derive records by the same code. A path names the first `propSet` of
/// that path.
pub(crate) trait PropView {
    /// The value's own text, trimmed; `None` when absent or blank.
    fn text(&self, path: &str) -> Option<&str>;
    /// The trimmed own text of the value's first child named `child`.
    fn child_text(&self, path: &str, child: &str) -> Option<&str>;
    /// The own text of every grandchild named `ipAddress` of the value
    /// (`guest.net`: each NIC's addresses), in document order.
    fn each_nic_ip(&self, path: &str, f: &mut dyn FnMut(&str));
    /// The value as a managed-object reference.
    fn moref(&self, path: &str) -> Option<MoRef>;
}

impl PropView for ObjectContent {
    fn text(&self, path: &str) -> Option<&str> {
        self.prop(path)
            .map(|v| v.text.trim())
            .filter(|t| !t.is_empty())
    }

    fn child_text(&self, path: &str, child: &str) -> Option<&str> {
        self.prop(path)?.child_text(child)
    }

    fn each_nic_ip(&self, path: &str, f: &mut dyn FnMut(&str)) {
        if let Some(net) = self.prop(path) {
            for nic in &net.children {
                for ip in nic.children_named("ipAddress") {
                    f(&ip.text);
                }
            }
        }
    }

    fn moref(&self, path: &str) -> Option<MoRef> {
        self.prop(path).and_then(MoRef::from_element)
    }
}

/// One page of a `RetrievePropertiesEx` / `ContinueRetrievePropertiesEx` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetrieveResult {
    /// Token for the next page, if any.
    pub token: Option<String>,
    /// Objects on this page.
    pub objects: Vec<ObjectContent>,
}

/// Parses one page. An absent `returnval` is an empty result. Takes the
/// reply by value so that property values are moved, not copied.
pub fn parse_retrieve_result(resp: Element) -> Result<RetrieveResult, ReplyError> {
    let Some(rv) = resp.children.into_iter().find(|c| c.name == "returnval") else {
        return Ok(RetrieveResult::default());
    };
    let token = rv
        .child_text("token")
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let mut objects = Vec::new();
    for o in rv.children.into_iter().filter(|c| c.name == "objects") {
        let obj = o
            .child("obj")
            .and_then(MoRef::from_element)
            .ok_or_else(|| shape("object content without obj"))?;
        let mut props = Vec::new();
        let mut missing = Vec::new();
        for p in o.children {
            match p.name.as_str() {
                "propSet" => {
                    let mut name = None;
                    let mut val = Element::default();
                    for c in p.children {
                        match c.name.as_str() {
                            "name" => name = Some(c.text.trim().to_owned()),
                            "val" => val = c,
                            _ => {}
                        }
                    }
                    props.push((name.ok_or_else(|| shape("propSet without name"))?, val));
                }
                "missingSet" => {
                    let path = p.child_text("path").unwrap_or_default().to_owned();
                    let kind = p
                        .child("fault")
                        .and_then(|f| f.child("fault"))
                        .map(fault_kind)
                        .unwrap_or_default();
                    missing.push((path, kind));
                }
                _ => {}
            }
        }
        objects.push(ObjectContent {
            obj,
            props,
            missing,
        });
    }
    Ok(RetrieveResult { token, objects })
}

// ---------------------------------------------------------------- inventory

/// Host properties fetched with every inventory.
pub const HOST_PATHS: &[&str] = &[
    "name",
    "summary.config.product",
    "runtime.connectionState",
    "runtime.powerState",
    "runtime.inMaintenanceMode",
];

/// VM properties fetched with every inventory.
pub const VM_PATHS: &[&str] = &[
    "name",
    "config.instanceUuid",
    "config.uuid",
    "guest.ipAddress",
    "guest.net",
    "runtime.powerState",
    "runtime.host",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.guestFullName",
    "guest.toolsRunningStatus",
];

/// What the host's own properties say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostState {
    /// Product, version, build, OS type, name.
    pub info: HostInfo,
    /// `runtime.connectionState` (`connected`, `notResponding`, `disconnected`).
    pub connection_state: Option<String>,
    /// `runtime.powerState`.
    pub power_state: Option<String>,
    /// `runtime.inMaintenanceMode`.
    pub in_maintenance: bool,
}

/// Reads a host's [`HOST_PATHS`].
pub fn host_state(o: &ObjectContent) -> HostState {
    host_state_of(o)
}

pub(crate) fn host_state_of(o: &impl PropView) -> HostState {
    let mut info = HostInfo::default();
    info.hostname = o.text("name").map(str::to_owned);
    let t = |n: &str| {
        o.child_text("summary.config.product", n)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    info.product = t("name");
    info.version = t("version");
    info.build = t("build");
    info.os = t("osType");
    HostState {
        info,
        connection_state: o.text("runtime.connectionState").map(str::to_owned),
        power_state: o.text("runtime.powerState").map(str::to_owned),
        in_maintenance: o.text("runtime.inMaintenanceMode") == Some("true"),
    }
}

/// A VM as read from [`VM_PATHS`], with the host it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRecord {
    /// Its managed-object reference (what power calls need).
    pub moref: MoRef,
    /// `runtime.host`.
    pub host: Option<MoRef>,
    /// The model's view of it.
    pub info: VmInfo,
}

fn power_state(s: Option<&str>) -> PowerState {
    match s {
        Some("poweredOn") => PowerState::PoweredOn,
        Some("poweredOff") => PowerState::PoweredOff,
        Some("suspended") => PowerState::Suspended,
        _ => PowerState::Unknown,
    }
}

fn tools_state(s: Option<&str>) -> ToolsState {
    match s {
        Some("guestToolsRunning") | Some("guestToolsExecutingScripts") => ToolsState::Running,
        Some("guestToolsNotRunning") => ToolsState::NotRunning,
        _ => ToolsState::Unknown,
    }
}

fn push_ip(ips: &mut Vec<IpAddr>, s: &str) {
    // Guests report link-local and zone-suffixed addresses too; keep what parses.
    if let Ok(ip) = s.trim().parse::<IpAddr>() {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
}

/// Whether an id is empty or a placeholder (blank, all-zero UUID,
/// `<unset>`, `null`), so not a VM's identity.
fn is_placeholder_id(id: &str) -> bool {
    let t = id.trim();
    t.is_empty()
        || t.eq_ignore_ascii_case("<unset>")
        || t.eq_ignore_ascii_case("null")
        || (t.bytes().all(|b| b == b'0' || b == b'-') && t.contains('0'))
}

/// Reads a VM's [`VM_PATHS`]. The id is the instance UUID, else the moref:
/// an empty or placeholder instance UUID (`""` on older ESX, all zeros)
/// falls back to the moref, never to a key several VMs would share.
pub fn vm_record(o: &ObjectContent) -> VmRecord {
    vm_record_of(&o.obj, o)
}

pub(crate) fn vm_record_of(obj: &MoRef, o: &impl PropView) -> VmRecord {
    let uuid = o
        .text("config.instanceUuid")
        .filter(|s| !is_placeholder_id(s))
        .map(str::to_owned);
    // A moref names a VM within one server's inventory only (a standalone
    // host's, or one vCenter's): keyed with its host, never shared.
    let host_local = uuid.is_none();
    let id = uuid.unwrap_or_else(|| obj.value.clone());
    let name = o.text("name").unwrap_or(&obj.value).to_owned();
    let mut info = VmInfo::new(
        VmId::new(id),
        name,
        power_state(o.text("runtime.powerState")),
    )
    .host_local(host_local);
    // The BIOS (SMBIOS) UUID the guest reads (vSphere VirtualMachineConfigInfo.uuid).
    info.bios_uuid = o
        .text("config.uuid")
        .filter(|s| !is_placeholder_id(s))
        .map(str::to_owned);
    if let Some(ip) = o.text("guest.ipAddress") {
        push_ip(&mut info.ips, ip);
    }
    o.each_nic_ip("guest.net", &mut |ip| push_ip(&mut info.ips, ip));
    info.vcpus = o
        .text("config.hardware.numCPU")
        .and_then(|s| s.parse().ok());
    info.memory_mib = o
        .text("config.hardware.memoryMB")
        .and_then(|s| s.parse().ok());
    info.guest_os = o.text("config.guestFullName").map(str::to_owned);
    info.tools = tools_state(o.text("guest.toolsRunningStatus"));
    VmRecord {
        moref: obj.clone(),
        host: o.moref("runtime.host"),
        info,
    }
}

/// What a `WaitForUpdatesEx` answer says: `None` when the wait ended with
/// no change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateSet {
    /// The version to wait from next.
    pub version: String,
    /// Objects that entered, changed or left, with the change kind
    /// (`enter`, `modify`, `leave`).
    pub changed: Vec<(MoRef, String)>,
}

/// Parses a `WaitForUpdatesEx` reply.
pub fn parse_update_set(resp: &Element) -> Result<Option<UpdateSet>, ReplyError> {
    let Some(rv) = resp.child("returnval") else {
        return Ok(None);
    };
    let version = rv
        .child_text("version")
        .ok_or_else(|| shape("update set without version"))?
        .to_owned();
    let mut changed = Vec::new();
    for fs in rv.children_named("filterSet") {
        for os in fs.children_named("objectSet") {
            if let Some(obj) = os.child("obj").and_then(MoRef::from_element) {
                changed.push((obj, os.child_text("kind").unwrap_or_default().to_owned()));
            }
        }
    }
    Ok(Some(UpdateSet { version, changed }))
}

/// A task's state (`info.state`, `info.error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    /// queued or running.
    Pending,
    /// Finished.
    Success,
    /// Failed with this fault.
    Error(Fault),
}

/// Reads `info.state` and `info.error` of a task object.
pub fn task_state(o: &ObjectContent) -> Result<TaskState, ReplyError> {
    match o.text("info.state") {
        Some("success") => Ok(TaskState::Success),
        Some("queued") | Some("running") => Ok(TaskState::Pending),
        Some("error") => {
            let err = o.prop("info.error");
            let kind = err
                .and_then(|e| e.child("fault"))
                .map(fault_kind)
                .unwrap_or_else(|| "TaskError".into());
            let message = err
                .and_then(|e| e.child_text("localizedMessage"))
                .unwrap_or_default()
                .to_owned();
            Ok(TaskState::Error(Fault { kind, message }))
        }
        other => Err(shape(format!(
            "task {} in unknown state {other:?}",
            o.obj.value
        ))),
    }
}

/// Parses any reply into its response element and checks its name.
pub fn expect(doc: &[u8], limits: Limits, response: &str) -> Result<Element, ReplyError> {
    let el = parse_envelope(doc, limits)?;
    if el.name != response {
        return Err(shape(format!("expected <{response}>, got <{}>", el.name)));
    }
    Ok(el)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(body: &str) -> Vec<u8> {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"#
        )
        .into_bytes()
    }

    #[test]
    fn fault_types_come_from_detail() {
        let doc = env(
            r#"<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>The session is not authenticated.</faultstring><detail><NotAuthenticatedFault xmlns="urn:vim25" xsi:type="NotAuthenticated"><object type="Folder">group-d1</object></NotAuthenticatedFault></detail></soapenv:Fault>"#,
        );
        let err = parse_envelope(&doc, Limits::default()).unwrap_err();
        assert_eq!(
            err,
            ReplyError::Fault(Fault {
                kind: "NotAuthenticated".into(),
                message: "The session is not authenticated.".into()
            })
        );
        let doc = env(
            r#"<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>x</faultstring><detail><RestrictedVersionFault xmlns="urn:vim25"/></detail></soapenv:Fault>"#,
        );
        let Err(ReplyError::Fault(f)) = parse_envelope(&doc, Limits::default()) else {
            panic!()
        };
        assert_eq!(f.kind, "RestrictedVersion");
    }

    /// A real RetrievePropertiesEx reply of govmomi's simulator (0.24.2,
    /// ESX model, through harness/vcsim), recorded with curl.
    const ESX_INVENTORY: &[u8] = include_bytes!("testdata/esx_inventory.xml");

    #[test]
    fn recorded_inventory_parses_into_vm_info() {
        let el = expect(
            ESX_INVENTORY,
            Limits::default(),
            "RetrievePropertiesExResponse",
        )
        .unwrap();
        let page = parse_retrieve_result(el).unwrap();
        assert_eq!(page.token, None);
        assert_eq!(page.objects.len(), 3);
        let r = vm_record(&page.objects[0]);
        assert_eq!(r.moref, MoRef::new("VirtualMachine", "vm-9"));
        assert_eq!(r.host, Some(MoRef::new("HostSystem", "ha-host")));
        let v = r.info;
        assert_eq!(v.id.as_str(), "50000001-d2ac-4f48-87a4-7cc6f3875d04");
        assert_eq!(v.name, "ha-host_VM0");
        assert_eq!(v.power, PowerState::PoweredOn);
        assert_eq!(
            v.ips,
            vec![
                "10.0.0.2".parse::<IpAddr>().unwrap(),
                "fd00::2".parse().unwrap()
            ]
        );
        assert_eq!((v.vcpus, v.memory_mib), (Some(8), Some(2048)));
        assert_eq!(v.guest_os.as_deref(), Some("otherGuest"));
        assert_eq!(v.tools, ToolsState::Running);
        let off = vm_record(&page.objects[1]).info;
        assert_eq!(
            (off.power, off.tools),
            (PowerState::PoweredOff, ToolsState::NotRunning)
        );
        let h = host_state(&page.objects[2]);
        assert_eq!(h.info.product.as_deref(), Some("VMware ESXi"));
        assert_eq!(h.info.version.as_deref(), Some("6.5.0"));
        assert_eq!(h.info.build.as_deref(), Some("5969303"));
        assert_eq!(h.info.os.as_deref(), Some("vmnix-x86"));
        assert_eq!(h.info.hostname.as_deref(), Some("localhost.localdomain"));
    }

    #[test]
    fn empty_or_placeholder_instance_uuid_falls_back_to_the_moref() {
        let recorded = std::str::from_utf8(ESX_INVENTORY).unwrap();
        let real = "50000001-d2ac-4f48-87a4-7cc6f3875d04";
        assert!(recorded.contains(real));
        for placeholder in ["", "   ", "00000000-0000-0000-0000-000000000000"] {
            let doc = recorded.replace(real, placeholder);
            let el = expect(
                doc.as_bytes(),
                Limits::default(),
                "RetrievePropertiesExResponse",
            )
            .unwrap();
            let page = parse_retrieve_result(el).unwrap();
            let r = vm_record(&page.objects[0]);
            assert_eq!(r.info.id.as_str(), "vm-9", "{placeholder:?}");
            assert!(r.info.host_local, "a moref is unique in one inventory only");
        }
    }

    #[test]
    fn every_truncation_of_a_recorded_reply_is_an_error() {
        for n in (0..ESX_INVENTORY.len() - 1).step_by(3) {
            let cut = &ESX_INVENTORY[..n];
            let r = parse_envelope(cut, Limits::default()).and_then(parse_retrieve_result);
            // A cut inside trailing whitespace may still parse; anything shorter must not.
            if n < ESX_INVENTORY.len() - 30 {
                assert!(r.is_err(), "truncated at {n} parsed");
            }
        }
    }

    #[test]
    fn requests_escape_and_name_this() {
        let sm = MoRef::new("SessionManager", "ha-sessionmgr");
        let x = login(&sm, "root", "p<&>\"");
        assert!(
            x.contains(r#"<_this type="SessionManager">ha-sessionmgr</_this>"#),
            "{x}"
        );
        assert!(
            x.contains("<password>p&lt;&amp;&gt;&quot;</password>"),
            "{x}"
        );
        let q = PropertyQuery::default()
            .props("VirtualMachine", &["name"])
            .view(MoRef::new("ContainerView", "session[1]v"))
            .object(MoRef::new("HostSystem", "ha-host"));
        let x = retrieve_properties_ex(
            &MoRef::new("PropertyCollector", "ha-property-collector"),
            &q,
            100,
        );
        assert!(xml::parse(x.as_bytes(), Limits::default()).is_ok());
        assert!(x.contains("<maxObjects>100</maxObjects>"));
        assert!(
            host_call("ShutdownHost_Task", &MoRef::new("HostSystem", "h"), true)
                .contains("<force>true</force>")
        );
    }

    #[test]
    fn task_errors_carry_the_fault() {
        let doc = env(
            r#"<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="Task">task-9</obj><propSet><name>info.error</name><val xsi:type="LocalizedMethodFault"><fault xsi:type="InvalidPowerState"><requestedState>poweredOff</requestedState><existingState>poweredOff</existingState></fault><localizedMessage>*types.InvalidPowerState</localizedMessage></val></propSet><propSet><name>info.state</name><val xsi:type="TaskInfoState">error</val></propSet></objects></returnval></RetrievePropertiesExResponse>"#,
        );
        let el = parse_envelope(&doc, Limits::default()).unwrap();
        let page = parse_retrieve_result(el).unwrap();
        let TaskState::Error(f) = task_state(&page.objects[0]).unwrap() else {
            panic!()
        };
        assert_eq!(f.kind, "InvalidPowerState");
    }

    #[test]
    fn wrong_shapes_are_errors() {
        assert!(matches!(
            parse_envelope(b"<html>oops</html>", Limits::default()),
            Err(ReplyError::Shape(_))
        ));
        assert!(matches!(
            parse_envelope(&env(""), Limits::default()),
            Err(ReplyError::Shape(_))
        ));
        let el = parse_envelope(&env("<LoginResponse/>"), Limits::default()).unwrap();
        assert!(parse_service_content(&el).is_err());
        assert!(parse_moref(&el).is_err());
    }

    /// The whole reply pipeline, as the transport runs it on untrusted bytes.
    fn pipeline(doc: &[u8]) {
        let Ok(el) = parse_envelope(doc, Limits::default()) else {
            return;
        };
        let _ = parse_service_content(&el);
        let _ = parse_moref(&el);
        let _ = parse_update_set(&el);
        if let Ok(page) = parse_retrieve_result(el) {
            for o in &page.objects {
                let _ = vm_record(o);
                let _ = host_state(o);
                let _ = task_state(o);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(doc in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            pipeline(&doc);
        }

        #[test]
        fn mutated_recorded_replies_never_panic(
            edits in proptest::collection::vec((0usize..5444, proptest::num::u8::ANY), 1..8),
            cut in 0usize..6000,
        ) {
            let mut doc = ESX_INVENTORY.to_vec();
            for (at, b) in edits {
                if let Some(x) = doc.get_mut(at) {
                    *x = b;
                }
            }
            doc.truncate(cut);
            pipeline(&doc);
        }
    }
}
