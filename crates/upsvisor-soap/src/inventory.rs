//! Inventory pages read straight off the wire.
//!
//! A `RetrievePropertiesEx` / `ContinueRetrievePropertiesEx` reply for a
//! datacenter is megabytes of XML (10.5 MB for 5,000 VMs). Building the
//! generic [`Element`](crate::xml::Element) tree for it and then reading
//! the tree cost more than receiving it: one heap node per element, freed
//! right after. [`parse_inventory_page`] instead walks quick-xml's event
//! stream once and keeps only what [`HostState`] and [`VmRecord`] need
//! (the [`HOST_PATHS`](crate::codec::HOST_PATHS) and
//! [`VM_PATHS`](crate::codec::VM_PATHS) values), with no tree and no copy
//! of text that is not kept.
//!
//! It gives the same answer as the tree path it replaces
//! ([`parse_inventory_page_via_tree`]: [`codec::expect`],
//! [`codec::parse_retrieve_result`], [`codec::host_state`],
//! [`codec::vm_record`]) for every input, errors included:
//!
//! - the same [`Limits`] (bytes before parsing; depth and element count as
//!   the stream goes) with the same [`XmlError`] kinds, and the same
//!   well-formedness checks (quick-xml's, with the same reader settings;
//!   every text is unescaped and every attribute read, as the tree path
//!   does);
//! - XML errors win over shape errors, as they do when the tree is built
//!   first: a shape problem is noted and the stream is still read to its
//!   end;
//! - faults ([`ReplyError::Fault`]) with the same kind and message;
//! - the same first-match rules as the tree readers (the first `Body`, its
//!   first child, the first `returnval`, `token` and `obj`; the first
//!   `propSet` of a path, the last `name`/`val` within one).
//!
//! That equivalence is what the unit tests, the simulator test
//! (`tests/stream_equivalence.rs`) and the `soap_inventory` fuzz target
//! check, by comparing both paths.
//!
//! Objects of other types than `HostSystem` and `VirtualMachine` are
//! skipped; `missingSet` entries are read past (a property the server could
//! not fetch is absent, as in the tree path, and reads as unknown).

use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

use crate::codec::{self, HostState, MoRef, PropView, ReplyError, VmRecord};
use crate::xml::{Limits, XmlError};

/// One inventory page: what the transport keeps of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InventoryPage {
    /// Token for the next page (`ContinueRetrievePropertiesEx`), if any.
    pub token: Option<String>,
    /// Every `HostSystem` object of the page, in document order.
    pub hosts: Vec<(MoRef, HostState)>,
    /// Every `VirtualMachine` object of the page, in document order.
    pub vms: Vec<VmRecord>,
}

/// The reference implementation: builds the tree, then reads it (what the
/// transport did before the streaming reader). Kept to check
/// [`parse_inventory_page`] against, in tests and fuzzing.
///
/// # Errors
/// As [`parse_inventory_page`].
pub fn parse_inventory_page_via_tree(
    doc: &[u8],
    limits: Limits,
    response: &str,
) -> Result<InventoryPage, ReplyError> {
    let el = codec::expect(doc, limits, response)?;
    let page = codec::parse_retrieve_result(el)?;
    let mut out = InventoryPage {
        token: page.token,
        ..InventoryPage::default()
    };
    for o in &page.objects {
        match o.obj.kind.as_str() {
            "HostSystem" => out.hosts.push((o.obj.clone(), codec::host_state(o))),
            "VirtualMachine" => out.vms.push(codec::vm_record(o)),
            _ => {}
        }
    }
    Ok(out)
}

/// The property paths kept: [`VM_PATHS`](crate::codec::VM_PATHS) and
/// [`HOST_PATHS`](crate::codec::HOST_PATHS).
const PATHS: [&str; 14] = [
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
    "summary.config.product",
    "runtime.connectionState",
    "runtime.inMaintenanceMode",
];

/// Children of a value read by name (`summary.config.product`'s fields).
const FIELDS: [&str; 4] = ["name", "version", "build", "osType"];

fn path_index(p: &str) -> Option<usize> {
    PATHS.iter().position(|q| *q == p)
}

/// What is kept of one `val`.
#[derive(Debug, Default)]
struct Val {
    /// Its own text (children's text excluded), entities resolved.
    text: String,
    /// Its `type` attribute (on a managed-object reference).
    ref_type: Option<String>,
    /// Own text of its first child named each of [`FIELDS`], if any.
    fields: [Option<String>; 4],
    /// Own text of each grandchild named `ipAddress` (`guest.net`'s NICs),
    /// as ranges of `ip_text`.
    ips: Vec<(usize, usize)>,
    ip_text: String,
}

impl Val {
    /// Empties it, keeping its buffers.
    fn clear(&mut self) {
        self.text.clear();
        self.ref_type = None;
        self.fields = Default::default();
        self.ips.clear();
        self.ip_text.clear();
    }
}

/// One `ObjectContent` being read.
#[derive(Debug, Default)]
struct Object {
    /// Whether a first `obj` child was seen, and what it names.
    obj_seen: bool,
    obj: Option<MoRef>,
    obj_text: String,
    obj_type: Option<String>,
    /// The first `propSet` of each of [`PATHS`], by index.
    set: [bool; PATHS.len()],
    vals: [Val; PATHS.len()],
    /// A `propSet` without `name` was seen.
    nameless: bool,
    /// The `propSet` being read: its name (last `name` wins) and value
    /// (last `val` wins).
    name: Option<String>,
    cur: Val,
}

impl Object {
    fn clear(&mut self) {
        self.obj_seen = false;
        self.obj = None;
        self.obj_text.clear();
        self.obj_type = None;
        self.set = [false; PATHS.len()];
        self.nameless = false;
        self.name = None;
        self.cur.clear();
    }

    fn slot(&self, path: &str) -> Option<&Val> {
        let i = path_index(path)?;
        self.set
            .get(i)
            .copied()
            .unwrap_or(false)
            .then(|| self.vals.get(i))?
    }
}

impl PropView for Object {
    fn text(&self, path: &str) -> Option<&str> {
        self.slot(path)
            .map(|v| v.text.trim())
            .filter(|t| !t.is_empty())
    }

    fn child_text(&self, path: &str, child: &str) -> Option<&str> {
        let i = FIELDS.iter().position(|f| *f == child)?;
        self.slot(path)?.fields.get(i)?.as_deref().map(str::trim)
    }

    fn each_nic_ip(&self, path: &str, f: &mut dyn FnMut(&str)) {
        if let Some(v) = self.slot(path) {
            for &(a, b) in &v.ips {
                if let Some(s) = v.ip_text.get(a..b) {
                    f(s);
                }
            }
        }
    }

    fn moref(&self, path: &str) -> Option<MoRef> {
        let v = self.slot(path)?;
        let value = v.text.trim();
        (!value.is_empty()).then(|| MoRef::new(v.ref_type.clone().unwrap_or_default(), value))
    }
}

/// What an open element is to the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Envelope,
    Body,
    Fault,
    FaultString,
    Detail,
    Response,
    ReturnVal,
    Token,
    Objects,
    Obj,
    PropSet,
    PropName,
    Val,
    /// A child of a `val`, maybe its first one named `FIELDS[i]`.
    ValChild(Option<u8>),
    NicIp,
    /// Read past: well-formedness and limits only.
    Skip,
}

/// Everything the stream has said so far.
#[derive(Debug, Default)]
struct Reading {
    /// The root is not an `Envelope`: its name.
    not_envelope: Option<String>,
    body_seen: bool,
    /// The first child of `Body` was seen: `Fault`, the response, or
    /// another element (its name).
    first_seen: bool,
    wrong_response: Option<String>,
    fault: bool,
    fault_string: Option<String>,
    detail_seen: bool,
    detail_first: Option<String>,
    returnval_seen: bool,
    token_seen: bool,
    token: String,
    /// The first object that does not read, as the tree path words it.
    object_error: Option<&'static str>,
    object: Object,
    page: InventoryPage,
}

fn local(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b':') {
        Some(i) => name.get(i + 1..).unwrap_or_default(),
        None => name,
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Reads every attribute (as the tree does, for the same errors) and
/// returns the `type` and `*:type` values.
fn attributes(e: &BytesStart<'_>) -> Result<(Option<String>, Option<String>), XmlError> {
    let mut ref_type = None;
    let mut xsi_type = None;
    for a in e.attributes() {
        let a = a.map_err(|err| XmlError::Malformed(err.to_string()))?;
        let key = a.key.as_ref();
        if key == b"type" || key.ends_with(b":type") {
            let v = a
                .unescape_value()
                .map_err(|err| XmlError::Malformed(err.to_string()))?
                .into_owned();
            if key == b"type" {
                ref_type = Some(v);
            } else {
                xsi_type = Some(v);
            }
        }
    }
    Ok((ref_type, xsi_type))
}

impl Reading {
    /// An element opens under `parent`; returns its role.
    fn open(
        &mut self,
        parent: Option<Role>,
        e: &BytesStart<'_>,
        response: &str,
    ) -> Result<Role, XmlError> {
        let name = e.name();
        let n = local(name.as_ref());
        let (ref_type, xsi_type) = attributes(e)?;
        let role = match parent {
            None => {
                if n == b"Envelope" {
                    Role::Envelope
                } else {
                    self.not_envelope = Some(lossy(n));
                    Role::Skip
                }
            }
            Some(Role::Envelope) if n == b"Body" && !self.body_seen => {
                self.body_seen = true;
                Role::Body
            }
            Some(Role::Body) if !self.first_seen => {
                self.first_seen = true;
                if n == b"Fault" {
                    self.fault = true;
                    Role::Fault
                } else if n == response.as_bytes() {
                    Role::Response
                } else {
                    self.wrong_response = Some(lossy(n));
                    Role::Skip
                }
            }
            Some(Role::Fault) if n == b"faultstring" && self.fault_string.is_none() => {
                self.fault_string = Some(String::new());
                Role::FaultString
            }
            Some(Role::Fault) if n == b"detail" && !self.detail_seen => {
                self.detail_seen = true;
                Role::Detail
            }
            Some(Role::Detail) => {
                if self.detail_first.is_none() {
                    self.detail_first = Some(codec::fault_kind_of(&lossy(n), xsi_type.as_deref()));
                }
                Role::Skip
            }
            Some(Role::Response) if n == b"returnval" && !self.returnval_seen => {
                self.returnval_seen = true;
                Role::ReturnVal
            }
            Some(Role::ReturnVal) if n == b"token" && !self.token_seen => {
                self.token_seen = true;
                Role::Token
            }
            Some(Role::ReturnVal) if n == b"objects" => {
                self.object.clear();
                Role::Objects
            }
            Some(Role::Objects) if n == b"obj" && !self.object.obj_seen => {
                self.object.obj_seen = true;
                self.object.obj_type = ref_type;
                Role::Obj
            }
            Some(Role::Objects) if n == b"propSet" => {
                self.object.name = None;
                self.object.cur.clear();
                Role::PropSet
            }
            Some(Role::PropSet) if n == b"name" => {
                let mut s = self.object.name.take().unwrap_or_default();
                s.clear();
                self.object.name = Some(s);
                Role::PropName
            }
            Some(Role::PropSet) if n == b"val" => {
                self.object.cur.clear();
                self.object.cur.ref_type = ref_type;
                Role::Val
            }
            Some(Role::Val) => {
                let cur = &mut self.object.cur;
                let field = FIELDS
                    .iter()
                    .position(|f| f.as_bytes() == n)
                    .filter(|&i| cur.fields.get(i).is_some_and(Option::is_none));
                if let Some(slot) = field.and_then(|i| cur.fields.get_mut(i)) {
                    *slot = Some(String::new());
                }
                Role::ValChild(field.and_then(|i| u8::try_from(i).ok()))
            }
            Some(Role::ValChild(_)) if n == b"ipAddress" => {
                let cur = &mut self.object.cur;
                let at = cur.ip_text.len();
                cur.ips.push((at, at));
                Role::NicIp
            }
            _ => Role::Skip,
        };
        Ok(role)
    }

    /// Text (entities resolved) directly inside an element of this role.
    fn text(&mut self, role: Role, s: &str) {
        let o = &mut self.object;
        match role {
            Role::FaultString => {
                if let Some(t) = self.fault_string.as_mut() {
                    t.push_str(s);
                }
            }
            Role::Token => self.token.push_str(s),
            Role::Obj => o.obj_text.push_str(s),
            Role::PropName => {
                if let Some(t) = o.name.as_mut() {
                    t.push_str(s);
                }
            }
            Role::Val => o.cur.text.push_str(s),
            Role::ValChild(Some(i)) => {
                if let Some(Some(t)) = o.cur.fields.get_mut(usize::from(i)) {
                    t.push_str(s);
                }
            }
            Role::NicIp => {
                o.cur.ip_text.push_str(s);
                let end = o.cur.ip_text.len();
                if let Some(last) = o.cur.ips.last_mut() {
                    last.1 = end;
                }
            }
            _ => {}
        }
    }

    /// An element of this role closes.
    fn close(&mut self, role: Role) {
        let o = &mut self.object;
        match role {
            Role::Obj => {
                let value = o.obj_text.trim();
                if !value.is_empty() {
                    o.obj = Some(MoRef::new(o.obj_type.take().unwrap_or_default(), value));
                }
            }
            Role::PropSet => match o.name.as_deref().map(str::trim) {
                None => o.nameless = true,
                Some(path) => {
                    if let Some(i) = path_index(path) {
                        if let (Some(set), Some(slot)) = (o.set.get_mut(i), o.vals.get_mut(i)) {
                            if !*set {
                                *set = true;
                                std::mem::swap(slot, &mut o.cur);
                            }
                        }
                    }
                }
            },
            Role::Objects => {
                if self.object_error.is_some() {
                    return;
                }
                let Some(obj) = &o.obj else {
                    self.object_error = Some("object content without obj");
                    return;
                };
                if o.nameless {
                    self.object_error = Some("propSet without name");
                    return;
                }
                match obj.kind.as_str() {
                    "HostSystem" => {
                        let state = codec::host_state_of(&*o);
                        self.page.hosts.push((obj.clone(), state));
                    }
                    "VirtualMachine" => self.page.vms.push(codec::vm_record_of(obj, &*o)),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// The answer once the stream has ended well-formed.
    fn finish(self, response: &str) -> Result<InventoryPage, ReplyError> {
        let shape = |s: String| Err(ReplyError::Shape(s));
        if let Some(n) = self.not_envelope {
            return shape(format!("expected a SOAP Envelope, got <{n}>"));
        }
        if !self.body_seen {
            return shape("SOAP envelope without a Body".into());
        }
        if !self.first_seen {
            return shape("empty SOAP Body".into());
        }
        if self.fault {
            return Err(ReplyError::Fault(codec::Fault {
                kind: self.detail_first.unwrap_or_else(|| "ServerFault".into()),
                message: self.fault_string.unwrap_or_default().trim().to_owned(),
            }));
        }
        if let Some(n) = self.wrong_response {
            return shape(format!("expected <{response}>, got <{n}>"));
        }
        if let Some(e) = self.object_error {
            return shape(e.into());
        }
        let mut page = self.page;
        let token = self.token.trim();
        page.token = (!token.is_empty()).then(|| token.to_owned());
        Ok(page)
    }
}

/// Reads one `RetrievePropertiesEx` / `ContinueRetrievePropertiesEx`
/// reply (`response` names the expected response element) into the
/// hosts and VMs it lists, without building a tree.
///
/// # Errors
/// [`ReplyError::Xml`] for a reply over `limits` or not well-formed
/// (truncated, unbalanced, bad entity or UTF-8), [`ReplyError::Fault`] for
/// a SOAP fault, [`ReplyError::Shape`] for well-formed XML that is not the
/// expected reply: exactly as [`parse_inventory_page_via_tree`].
pub fn parse_inventory_page(
    doc: &[u8],
    limits: Limits,
    response: &str,
) -> Result<InventoryPage, ReplyError> {
    read(doc, limits, response)
        .map_err(ReplyError::Xml)?
        .finish(response)
}

fn read(doc: &[u8], limits: Limits, response: &str) -> Result<Reading, XmlError> {
    if doc.len() > limits.max_bytes {
        return Err(XmlError::TooLarge(limits.max_bytes));
    }
    let mut reader = Reader::from_reader(doc);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Role> = Vec::with_capacity(16);
    let mut r = Reading::default();
    let mut root_done = false;
    let mut count = 0usize;
    loop {
        let ev = reader.read_event().map_err(|e| {
            XmlError::Malformed(format!("at byte {}: {e}", reader.buffer_position()))
        })?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if root_done {
                    return Err(XmlError::Malformed("content after the root element".into()));
                }
                count += 1;
                if count > limits.max_elements {
                    return Err(XmlError::TooManyElements(limits.max_elements));
                }
                if stack.len() >= limits.max_depth {
                    return Err(XmlError::TooDeep(limits.max_depth));
                }
                let role = r.open(stack.last().copied(), e, response)?;
                if matches!(ev, Event::Empty(_)) {
                    r.close(role);
                    root_done = stack.is_empty();
                } else {
                    stack.push(role);
                }
            }
            Event::End(_) => {
                let role = stack
                    .pop()
                    .ok_or_else(|| XmlError::Malformed("unbalanced end tag".into()))?;
                r.close(role);
                root_done = stack.is_empty();
            }
            Event::Text(t) => {
                if let Some(&role) = stack.last() {
                    let s = t
                        .unescape()
                        .map_err(|e| XmlError::Malformed(e.to_string()))?;
                    r.text(role, &s);
                } else if !t.iter().all(u8::is_ascii_whitespace) {
                    return Err(XmlError::Malformed("text outside the root element".into()));
                }
            }
            Event::CData(t) => {
                if let Some(&role) = stack.last() {
                    r.text(role, &String::from_utf8_lossy(&t));
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed(
            "document ends inside an element (truncated?)".into(),
        ));
    }
    if !root_done {
        return Err(XmlError::Empty);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use upsvisor_traits::{PowerState, ToolsState};

    const ESX_INVENTORY: &[u8] = include_bytes!("testdata/esx_inventory.xml");
    const WANT: &str = "RetrievePropertiesExResponse";

    fn env(body: &str) -> Vec<u8> {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"#
        )
        .into_bytes()
    }

    fn page(objects: &str) -> Vec<u8> {
        env(&format!(
            r#"<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval>{objects}</returnval></RetrievePropertiesExResponse>"#
        ))
    }

    /// Both paths, which must agree; returns the streamed answer.
    fn both(doc: &[u8], limits: Limits, want: &str) -> Result<InventoryPage, ReplyError> {
        let streamed = parse_inventory_page(doc, limits, want);
        let tree = parse_inventory_page_via_tree(doc, limits, want);
        assert_eq!(streamed, tree, "{}", String::from_utf8_lossy(doc));
        streamed
    }

    #[test]
    fn recorded_reply_reads_the_same_as_through_the_tree() {
        let p = both(ESX_INVENTORY, Limits::default(), WANT).unwrap();
        assert_eq!((p.vms.len(), p.hosts.len(), p.token), (2, 1, None));
        let v = &p.vms[0];
        assert_eq!(v.moref, MoRef::new("VirtualMachine", "vm-9"));
        assert_eq!(v.host, Some(MoRef::new("HostSystem", "ha-host")));
        assert_eq!(v.info.ips.len(), 2);
        assert_eq!(
            (v.info.power, v.info.tools),
            (PowerState::PoweredOn, ToolsState::Running)
        );
        assert_eq!(p.hosts[0].1.info.build.as_deref(), Some("5969303"));
    }

    #[test]
    fn odd_but_valid_shapes_read_the_same() {
        let vm = |props: &str| {
            format!(r#"<objects><obj type="VirtualMachine">vm-1</obj>{props}</objects>"#)
        };
        let prop = |name: &str, val: &str| format!("<propSet><name>{name}</name>{val}</propSet>");
        let cases: Vec<Vec<u8>> = vec![
            // Entities, CDATA, prefixes and xsi:type on values.
            page(&vm(&prop("name", r#"<val xsi:type="xsd:string">a &amp; b &lt;c&gt; &#x41;</val>"#))),
            page(&vm(&prop("name", "<val><![CDATA[x <y> & z]]></val>"))),
            env(r#"<v:RetrievePropertiesExResponse xmlns:v="urn:vim25"><v:returnval><v:objects><v:obj type="VirtualMachine">vm-2</v:obj><v:propSet><v:name>runtime.powerState</v:name><v:val xsi:type="v:VirtualMachinePowerState">poweredOff</v:val></v:propSet></v:objects></v:returnval></v:RetrievePropertiesExResponse>"#),
            // Name after value; duplicate paths (the first wins); several
            // names and values in one propSet (the last wins).
            page(&vm(&format!(
                "{}{}{}",
                "<propSet><val>late</val><name>name</name></propSet>",
                prop("name", "<val>second</val>"),
                "<propSet><name>x</name><name>config.guestFullName</name><val>a</val><val>b</val></propSet>"
            ))),
            // A value-less propSet shadows a later one.
            page(&vm(&format!("{}{}", "<propSet><name>runtime.powerState</name></propSet>", prop("runtime.powerState", "<val>poweredOn</val>")))),
            // Empty elements, whitespace, comments, a PI.
            page(&vm(&format!("{}<!-- c --><?pi x?>{}", prop("name", "<val/>"), prop(" runtime.host ", r#"<val type="HostSystem"> host-7 </val>"#)))),
            // guest.net: NIC addresses, not ipConfig's nested ones.
            page(&vm(&prop("guest.net", "<val><GuestNicInfo><ipAddress>10.0.0.1</ipAddress><ipAddress>fe80::1%eth0</ipAddress><ipConfig><ipAddress><ipAddress>10.9.9.9</ipAddress></ipAddress></ipConfig></GuestNicInfo><GuestNicInfo><ipAddress>10.0.0.3<ipAddress>10.0.0.4</ipAddress></ipAddress><ipAddress> 10.0.0.2 </ipAddress><ipAddress>10.0.0.1</ipAddress></GuestNicInfo></val>"))),
            // Product fields: first child of each name, empty ones unknown.
            page(r#"<objects><obj type="HostSystem">host-1</obj><propSet><name>summary.config.product</name><val><name> ESXi </name><name>other</name><version></version><version>7</version><osType>vmnix</osType></val></propSet><propSet><name>runtime.inMaintenanceMode</name><val>true</val></propSet></objects>"#),
            // missingSet, other object types, obj after the properties,
            // a token, a Header before the Body.
            page(&format!(
                "{}{}{}<token> t-1 </token>",
                r#"<objects><obj type="VirtualMachine">vm-3</obj><missingSet><path>guest.net</path><fault><fault xsi:type="NoPermission"/></fault></missingSet></objects>"#,
                r#"<objects><obj type="Folder">group-v1</obj></objects>"#,
                r#"<objects><propSet><name>name</name><val>n</val></propSet><obj type="VirtualMachine">vm-4</obj><obj type="VirtualMachine">vm-5</obj></objects>"#,
            )),
            br#"<Envelope><Header><x/></Header><Body><RetrievePropertiesExResponse><returnval><token></token></returnval><returnval><token>ignored</token></returnval></RetrievePropertiesExResponse><Other/></Body><Body/></Envelope>"#.to_vec(),
            page("<objects><obj>vm-6</obj></objects>"),
            env("<RetrievePropertiesExResponse/>"),
        ];
        for doc in &cases {
            both(doc, Limits::default(), WANT).unwrap();
        }
        let p = both(&cases[0], Limits::default(), WANT).unwrap();
        assert_eq!(p.vms[0].info.name, "a & b <c> A");
        let p = both(&cases[3], Limits::default(), WANT).unwrap();
        assert_eq!(p.vms[0].info.name, "late");
        assert_eq!(p.vms[0].info.guest_os.as_deref(), Some("b"));
        let p = both(&cases[4], Limits::default(), WANT).unwrap();
        assert_eq!(p.vms[0].info.power, PowerState::Unknown);
        let p = both(&cases[6], Limits::default(), WANT).unwrap();
        assert_eq!(p.vms[0].info.ips.len(), 3);
        let p = both(&cases[8], Limits::default(), WANT).unwrap();
        assert_eq!(p.token.as_deref(), Some("t-1"));
        assert_eq!(p.vms.len(), 2);
        assert_eq!(p.vms[1].moref.value, "vm-4");
    }

    #[test]
    fn faults_and_bad_shapes_are_the_same_errors() {
        let fault = env(
            r#"<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring> The session is not authenticated. </faultstring><detail><NotAuthenticatedFault xmlns="urn:vim25" xsi:type="NotAuthenticated"/></detail></soapenv:Fault>"#,
        );
        let Err(ReplyError::Fault(f)) = both(&fault, Limits::default(), WANT) else {
            panic!("not a fault")
        };
        assert_eq!(f.kind, "NotAuthenticated");
        assert_eq!(f.message, "The session is not authenticated.");
        let errors: Vec<Vec<u8>> = vec![
            env(
                r#"<soapenv:Fault><faultstring>x</faultstring><detail><RestrictedVersionFault/></detail></soapenv:Fault>"#,
            ),
            env("<soapenv:Fault/>"),
            b"<html>oops</html>".to_vec(),
            b"<Envelope/>".to_vec(),
            env(""),
            env("<LoginResponse/>"),
            page(r#"<objects><propSet><name>name</name><val>x</val></propSet></objects>"#),
            page(r#"<objects><obj type="VirtualMachine"> </obj></objects>"#),
            page(
                r#"<objects><obj type="VirtualMachine">vm-1</obj><propSet><val>x</val></propSet></objects>"#,
            ),
            page(
                r#"<objects><obj type="Folder">f</obj><propSet><val>x</val></propSet></objects><objects/>"#,
            ),
            b"".to_vec(),
            b"  ".to_vec(),
            b"<a><b>x</b>".to_vec(),
            b"<a></b>".to_vec(),
            b"<a/><b/>".to_vec(),
            b"<a/>text".to_vec(),
            b"<a>&bogus;</a>".to_vec(),
            b"<a x='1' x='2'/>".to_vec(),
            b"<a type='&bad;'/>".to_vec(),
            b"<a>\xff\xfe</a>".to_vec(),
            b"<html>oops</html><b>".to_vec(),
        ];
        for doc in &errors {
            assert!(
                both(doc, Limits::default(), WANT).is_err(),
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert_eq!(
            both(deep.as_bytes(), Limits::default(), WANT),
            Err(ReplyError::Xml(XmlError::TooDeep(48)))
        );
        let small = Limits {
            max_bytes: 100,
            ..Limits::default()
        };
        assert_eq!(
            both(ESX_INVENTORY, small, WANT),
            Err(ReplyError::Xml(XmlError::TooLarge(100)))
        );
        let few = Limits {
            max_elements: 20,
            ..Limits::default()
        };
        assert_eq!(
            both(ESX_INVENTORY, few, WANT),
            Err(ReplyError::Xml(XmlError::TooManyElements(20)))
        );
        assert!(matches!(
            both(
                ESX_INVENTORY,
                Limits::default(),
                "ContinueRetrievePropertiesExResponse"
            ),
            Err(ReplyError::Shape(_))
        ));
    }

    #[test]
    fn every_truncation_of_a_recorded_reply_is_the_same_error() {
        for n in 0..ESX_INVENTORY.len() {
            let r = both(&ESX_INVENTORY[..n], Limits::default(), WANT);
            if n < ESX_INVENTORY.len() - 30 {
                assert!(r.is_err(), "truncated at {n} parsed");
            }
        }
    }

    /// Pieces of vim25 replies, joined at random: mostly well-formed,
    /// oddly nested documents that reach every branch of the reader.
    const PIECES: &[&str] = &[
        "<objects>",
        "</objects>",
        "<obj type=\"VirtualMachine\">",
        "<obj type=\"HostSystem\">",
        "</obj>",
        "vm-1",
        "host-1",
        "<propSet>",
        "</propSet>",
        "<name>",
        "</name>",
        "name",
        "runtime.host",
        "guest.net",
        "summary.config.product",
        "runtime.powerState",
        "poweredOn",
        "config.instanceUuid",
        "<val>",
        "<val type=\"HostSystem\">",
        "<val xsi:type=\"ArrayOfGuestNicInfo\">",
        "</val>",
        "<GuestNicInfo>",
        "</GuestNicInfo>",
        "<ipAddress>",
        "</ipAddress>",
        "10.0.0.1",
        "<version>",
        "</version>",
        "6.5",
        "<token>",
        "</token>",
        "<missingSet>",
        "</missingSet>",
        "<returnval>",
        "</returnval>",
        " ",
        "&amp;",
        "<![CDATA[c]]>",
        "<e/>",
        "<!-- c -->",
    ];

    const TAGS: &[(&str, &str)] = &[
        ("<objects>", "</objects>"),
        ("<obj type=\"VirtualMachine\">", "</obj>"),
        ("<obj type=\"HostSystem\">", "</obj>"),
        ("<obj>", "</obj>"),
        ("<propSet>", "</propSet>"),
        ("<name>", "</name>"),
        ("<val>", "</val>"),
        ("<val type=\"HostSystem\">", "</val>"),
        ("<v:val xsi:type=\"ArrayOfGuestNicInfo\">", "</v:val>"),
        ("<GuestNicInfo>", "</GuestNicInfo>"),
        ("<ipAddress>", "</ipAddress>"),
        ("<version>", "</version>"),
        ("<token>", "</token>"),
        ("<missingSet>", "</missingSet>"),
        ("<returnval>", "</returnval>"),
    ];
    const TEXTS: &[&str] = &[
        "",
        " ",
        "vm-1",
        "host-1",
        "name",
        "runtime.host",
        "guest.net",
        "guest.ipAddress",
        "summary.config.product",
        "runtime.powerState",
        "poweredOn",
        "config.instanceUuid",
        "config.hardware.numCPU",
        "4",
        "10.0.0.1",
        "::1",
        "6.5",
        "a &amp; b",
        "<![CDATA[c]]>",
        "<e/>",
    ];

    /// Balanced documents built from vim25's element names.
    fn tree() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        proptest::sample::select(TEXTS)
            .prop_map(str::to_owned)
            .prop_recursive(6, 96, 6, |inner| {
                (
                    proptest::sample::select(TAGS),
                    proptest::collection::vec(inner, 0..6),
                )
                    .prop_map(|((open, close), kids)| format!("{open}{}{close}", kids.concat()))
            })
    }

    proptest::proptest! {
        #[test]
        fn balanced_replies_read_the_same(items in proptest::collection::vec(tree(), 0..6)) {
            let doc = env(&format!(
                "<RetrievePropertiesExResponse xmlns:v=\"urn:vim25\"><returnval>{}</returnval></RetrievePropertiesExResponse>",
                items.concat()
            ));
            let _ = both(&doc, Limits::default(), WANT);
            let _ = both(&doc, Limits { max_depth: 9, max_elements: 40, ..Limits::default() }, WANT);
        }

        #[test]
        fn arbitrary_bytes_read_the_same(doc in proptest::collection::vec(proptest::num::u8::ANY, 0..1024)) {
            let _ = both(&doc, Limits::default(), WANT);
        }

        #[test]
        fn mutated_recorded_replies_read_the_same(
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
            let _ = both(&doc, Limits::default(), WANT);
        }

        #[test]
        fn assembled_replies_read_the_same(
            picks in proptest::collection::vec(0usize..PIECES.len(), 0..60),
            depth in 3usize..12,
        ) {
            let inner: String = picks.iter().map(|&i| PIECES[i]).collect();
            let doc = env(&format!("<RetrievePropertiesExResponse><returnval>{inner}</returnval></RetrievePropertiesExResponse>"));
            let limits = Limits { max_depth: depth, ..Limits::default() };
            let _ = both(&doc, limits, WANT);
            let _ = both(&doc, Limits::default(), WANT);
        }
    }
}
