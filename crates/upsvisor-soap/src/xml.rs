//! A bounded XML tree built from quick-xml's event stream.
//!
//! Most SOAP replies are small trees; building one with hard limits
//! (bytes, depth, element count) is simpler to get right than a
//! hand-written state machine per reply type, and the limits keep hostile
//! input cheap. The one large reply, a datacenter's inventory, is read
//! without a tree by [`crate::inventory`], under the same [`Limits`] and
//! with the same [`XmlError`]s.

use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

/// Limits applied while parsing a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest document accepted, in bytes.
    pub max_bytes: usize,
    /// Deepest element nesting accepted.
    pub max_depth: usize,
    /// Most elements accepted in one document.
    pub max_elements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 64 << 20,
            max_depth: 48,
            max_elements: 4_000_000,
        }
    }
}

/// One element: local name (namespace prefix dropped), the two attributes
/// vim25 uses (`type` on managed-object references, `xsi:type` on
/// polymorphic values), its text and its children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// Local name.
    pub name: String,
    /// The `type` attribute (managed-object reference type).
    pub ref_type: Option<String>,
    /// The `xsi:type` attribute (polymorphic data type).
    pub xsi_type: Option<String>,
    /// Concatenated text content (entities resolved).
    pub text: String,
    /// Child elements in document order.
    pub children: Vec<Element>,
}

impl Element {
    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child with this local name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The trimmed text of the first child with this name.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }
}

/// Why a document was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmlError {
    /// Larger than [`Limits::max_bytes`].
    TooLarge(usize),
    /// Nested deeper than [`Limits::max_depth`].
    TooDeep(usize),
    /// More elements than [`Limits::max_elements`].
    TooManyElements(usize),
    /// Not well-formed (or ends early).
    Malformed(String),
    /// No root element.
    Empty,
}

impl std::fmt::Display for XmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XmlError::TooLarge(n) => write!(f, "reply larger than the {n}-byte limit"),
            XmlError::TooDeep(n) => write!(f, "XML nested deeper than {n} levels"),
            XmlError::TooManyElements(n) => write!(f, "XML has more than {n} elements"),
            XmlError::Malformed(m) => write!(f, "malformed XML: {m}"),
            XmlError::Empty => f.write_str("empty reply (no XML element)"),
        }
    }
}

fn local(name: &[u8]) -> String {
    let l = match name.iter().rposition(|&b| b == b':') {
        Some(i) => name.get(i + 1..).unwrap_or_default(),
        None => name,
    };
    String::from_utf8_lossy(l).into_owned()
}

fn start(e: &BytesStart<'_>) -> Result<Element, XmlError> {
    let mut el = Element {
        name: local(e.name().as_ref()),
        ..Element::default()
    };
    for a in e.attributes() {
        let a = a.map_err(|err| XmlError::Malformed(err.to_string()))?;
        let key = a.key.as_ref();
        let value = || -> Result<String, XmlError> {
            a.unescape_value()
                .map(|v| v.into_owned())
                .map_err(|err| XmlError::Malformed(err.to_string()))
        };
        if key == b"type" {
            el.ref_type = Some(value()?);
        } else if key.ends_with(b":type") {
            el.xsi_type = Some(value()?);
        }
    }
    Ok(el)
}

/// Parses `doc` into its root element, within `limits`.
pub fn parse(doc: &[u8], limits: Limits) -> Result<Element, XmlError> {
    if doc.len() > limits.max_bytes {
        return Err(XmlError::TooLarge(limits.max_bytes));
    }
    let mut reader = Reader::from_reader(doc);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    let mut buf = Vec::new();
    loop {
        let ev = reader.read_event_into(&mut buf).map_err(|e| {
            XmlError::Malformed(format!("at byte {}: {e}", reader.buffer_position()))
        })?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(ev, Event::Empty(_));
                if root.is_some() {
                    return Err(XmlError::Malformed("content after the root element".into()));
                }
                count += 1;
                if count > limits.max_elements {
                    return Err(XmlError::TooManyElements(limits.max_elements));
                }
                if stack.len() >= limits.max_depth {
                    return Err(XmlError::TooDeep(limits.max_depth));
                }
                let el = start(e)?;
                if empty {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None => root = Some(el),
                    }
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| XmlError::Malformed("unbalanced end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                if let Some(cur) = stack.last_mut() {
                    let s = t
                        .unescape()
                        .map_err(|e| XmlError::Malformed(e.to_string()))?;
                    cur.text.push_str(&s);
                } else if !t.iter().all(u8::is_ascii_whitespace) {
                    return Err(XmlError::Malformed("text outside the root element".into()));
                }
            }
            Event::CData(t) => {
                if let Some(cur) = stack.last_mut() {
                    cur.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed(
            "document ends inside an element (truncated?)".into(),
        ));
    }
    root.ok_or(XmlError::Empty)
}

/// Escapes text for an XML element or attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_attrs_and_text() {
        let doc = br#"<?xml version="1.0"?><a:Envelope xmlns:a="x" xmlns:xsi="y"><a:Body><r xsi:type="T"><obj type="VirtualMachine">vm-1</obj><s>a &amp; b</s><e/></r></a:Body></a:Envelope>"#;
        let root = parse(doc, Limits::default()).unwrap();
        assert_eq!(root.name, "Envelope");
        let r = &root.child("Body").unwrap().children[0];
        assert_eq!(r.xsi_type.as_deref(), Some("T"));
        let obj = r.child("obj").unwrap();
        assert_eq!(obj.ref_type.as_deref(), Some("VirtualMachine"));
        assert_eq!(obj.text, "vm-1");
        assert_eq!(r.child_text("s"), Some("a & b"));
        assert!(r.child("e").is_some());
    }

    #[test]
    fn limits_and_truncation() {
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert_eq!(
            parse(deep.as_bytes(), Limits::default()),
            Err(XmlError::TooDeep(48))
        );
        let l = Limits {
            max_bytes: 10,
            ..Limits::default()
        };
        assert_eq!(parse(b"<a>0123456789</a>", l), Err(XmlError::TooLarge(10)));
        assert!(matches!(
            parse(b"<a><b>x</b>", Limits::default()),
            Err(XmlError::Malformed(_))
        ));
        assert_eq!(parse(b"  ", Limits::default()), Err(XmlError::Empty));
        assert!(matches!(
            parse(b"<a></b>", Limits::default()),
            Err(XmlError::Malformed(_))
        ));
        let l = Limits {
            max_elements: 3,
            ..Limits::default()
        };
        assert_eq!(
            parse(b"<a><b/><b/><b/></a>", l),
            Err(XmlError::TooManyElements(3))
        );
    }
}
