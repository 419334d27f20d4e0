//! The MOB page codec: pure parsers for Managed Object Browser pages.
//!
//! A MOB page holds a "Properties" table with `NAME` / `TYPE` / `VALUE`
//! columns. A value is text (strings in double quotes), `Unset`, a link to
//! another managed object (`<a href="/mob/?moid=...">`), a list (`<ul>`) of
//! values, or a nested data object (an inner table with the same columns).
//! Method pages carry a form with the `vmware-session-nonce` hidden field;
//! invocation pages say `Method Invocation Result: ...`.
//!
//! Parsing is tolerant (unknown rows, extra markup and attributes are
//! ignored; missing rows are `None` to the caller) and bounded: pages larger
//! than [`MAX_PAGE_BYTES`] and nesting deeper than [`MAX_DEPTH`] are refused,
//! and no input makes these functions panic.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fmt;

/// The largest page parsed (bytes).
pub const MAX_PAGE_BYTES: usize = 8 << 20;
/// The deepest nesting of data objects and lists followed.
pub const MAX_DEPTH: usize = 16;
/// The most properties kept on one page (all levels together).
pub const MAX_PROPS: usize = 100_000;

/// Why a page could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PageError {
    /// Larger than [`MAX_PAGE_BYTES`].
    TooLarge(usize),
    /// Not UTF-8 text.
    NotText,
    /// The HTML could not be parsed at all.
    Markup(String),
    /// No table with `NAME` / `TYPE` / `VALUE` columns.
    NoProperties,
    /// No `vmware-session-nonce` form field.
    NoNonce,
    /// No `Method Invocation Result`.
    NoResult,
}

impl fmt::Display for PageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PageError::TooLarge(n) => write!(
                f,
                "page of {n} bytes exceeds the {MAX_PAGE_BYTES}-byte limit"
            ),
            PageError::NotText => f.write_str("page is not UTF-8 text"),
            PageError::Markup(e) => write!(f, "page is not HTML: {e}"),
            PageError::NoProperties => {
                f.write_str("no Properties table (NAME/TYPE/VALUE) on the page")
            }
            PageError::NoNonce => f.write_str("no vmware-session-nonce field on the method page"),
            PageError::NoResult => f.write_str("no Method Invocation Result on the page"),
        }
    }
}

impl std::error::Error for PageError {}

/// One property value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Value {
    /// `Unset`.
    Unset,
    /// Text (surrounding double quotes removed, entities decoded).
    Text(String),
    /// A link to a managed object: its moid.
    Link(String),
    /// A list of values.
    List(Vec<Value>),
    /// A nested data object.
    Object(Vec<Property>),
}

/// One row of a properties table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// `NAME` column.
    pub name: String,
    /// `TYPE` column.
    pub type_name: String,
    /// `VALUE` column.
    pub value: Value,
}

/// A parsed object page: its properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// The properties table.
    pub props: Vec<Property>,
}

impl Page {
    /// The value at a dotted path (`"config.numCpu"`), through nested objects.
    pub fn get(&self, path: &str) -> Option<&Value> {
        let mut props = &self.props;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let p = props.iter().find(|p| p.name == part)?;
            if parts.peek().is_none() {
                return Some(&p.value);
            }
            match &p.value {
                Value::Object(inner) => props = inner,
                _ => return None,
            }
        }
        None
    }

    /// Non-empty text at `path`.
    pub fn text(&self, path: &str) -> Option<&str> {
        match self.get(path)? {
            Value::Text(s) if !s.is_empty() => Some(s),
            _ => None,
        }
    }

    /// The moids linked at `path` (a list of links or one link).
    pub fn links(&self, path: &str) -> Vec<String> {
        match self.get(path) {
            Some(Value::Link(m)) => vec![m.clone()],
            Some(Value::List(items)) => items
                .iter()
                .filter_map(|v| match v {
                    Value::Link(m) => Some(m.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The outcome of a method invocation page.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invocation {
    /// The method returned (`void` or a value such as a task moid).
    Done(Option<String>),
    /// The method raised a fault: its type name and message.
    Fault {
        /// Fault type, e.g. `InvalidPowerState`.
        kind: String,
        /// The message shown.
        message: String,
    },
}

fn text_of(input: &[u8]) -> Result<&str, PageError> {
    if input.len() > MAX_PAGE_BYTES {
        return Err(PageError::TooLarge(input.len()));
    }
    std::str::from_utf8(input).map_err(|_| PageError::NotText)
}

fn dom(text: &str) -> Result<tl::VDom<'_>, PageError> {
    tl::parse(text, tl::ParserOptions::default()).map_err(|e| PageError::Markup(e.to_string()))
}

fn tag_name(tag: &tl::HTMLTag<'_>) -> String {
    tag.name().as_utf8_str().to_ascii_lowercase()
}

/// Direct element children of `tag`.
fn kids<'p>(tag: &tl::HTMLTag<'_>, parser: &'p tl::Parser<'p>) -> Vec<&'p tl::HTMLTag<'p>> {
    tag.children()
        .top()
        .iter()
        .filter_map(|h| h.get(parser)?.as_tag())
        .collect()
}

/// Decodes the common HTML entities (and numeric ones).
pub fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(rest.get(..i).unwrap_or_default());
        let tail = rest.get(i..).unwrap_or_default();
        let end = tail.find(';').filter(|&e| e <= 10);
        let Some(end) = end else {
            out.push('&');
            rest = tail.get(1..).unwrap_or_default();
            continue;
        };
        let ent = tail.get(1..end).unwrap_or_default();
        let ch = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some(' '),
            _ => ent
                .strip_prefix("#x")
                .or_else(|| ent.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| ent.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = tail.get(end + 1..).unwrap_or_default();
            }
            None => {
                out.push('&');
                rest = tail.get(1..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    out
}

fn clean_text(raw: &str) -> String {
    decode_entities(raw.trim()).trim().to_owned()
}

/// The moid named by a MOB link (`/mob/?moid=vm-42&...`).
fn moid_of(href: &str) -> Option<String> {
    let href = decode_entities(href);
    let q = href.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let v = kv.strip_prefix("moid=")?;
        Some(percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            if let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Walker<'p> {
    parser: &'p tl::Parser<'p>,
    props: usize,
}

impl<'p> Walker<'p> {
    /// The rows of a table (directly or under thead/tbody/tfoot).
    fn rows(&self, table: &tl::HTMLTag<'_>) -> Vec<&'p tl::HTMLTag<'p>> {
        let mut out = Vec::new();
        for k in kids(table, self.parser) {
            match tag_name(k).as_str() {
                "tr" => out.push(k),
                "tbody" | "thead" | "tfoot" => out.extend(
                    kids(k, self.parser)
                        .into_iter()
                        .filter(|r| tag_name(r) == "tr"),
                ),
                _ => {}
            }
        }
        out
    }

    /// Whether `table` has a NAME / TYPE / VALUE header.
    fn is_props_table(&self, table: &tl::HTMLTag<'_>) -> bool {
        self.rows(table).first().is_some_and(|r| {
            let heads: Vec<String> = kids(r, self.parser)
                .into_iter()
                .filter(|c| matches!(tag_name(c).as_str(), "th" | "td"))
                .map(|c| clean_text(&c.inner_text(self.parser)).to_ascii_uppercase())
                .collect();
            heads.len() >= 3
                && heads.first().is_some_and(|h| h == "NAME")
                && heads.get(1).is_some_and(|h| h == "TYPE")
                && heads.get(2).is_some_and(|h| h == "VALUE")
        })
    }

    fn table(&mut self, table: &tl::HTMLTag<'_>, depth: usize) -> Vec<Property> {
        let mut out = Vec::new();
        if depth > MAX_DEPTH {
            return out;
        }
        for row in self.rows(table) {
            let cells: Vec<_> = kids(row, self.parser)
                .into_iter()
                .filter(|c| tag_name(c) == "td")
                .collect();
            let (Some(n), Some(t), Some(v)) = (cells.first(), cells.get(1), cells.get(2)) else {
                continue;
            };
            if self.props >= MAX_PROPS {
                break;
            }
            self.props += 1;
            let name = clean_text(&n.inner_text(self.parser));
            if name.is_empty() {
                continue;
            }
            out.push(Property {
                name,
                type_name: clean_text(&t.inner_text(self.parser)),
                value: self.cell(v, depth + 1),
            });
        }
        out
    }

    /// List items; an unclosed `<li>` swallows its successors, so items
    /// nested in items are taken as siblings.
    fn items(&mut self, parent: &tl::HTMLTag<'_>, depth: usize, out: &mut Vec<Value>) {
        if depth > MAX_DEPTH {
            return;
        }
        for li in kids(parent, self.parser) {
            if tag_name(li) == "li" && out.len() < MAX_PROPS {
                out.push(self.cell(li, depth));
                self.items(li, depth + 1, out);
            }
        }
    }

    fn cell(&mut self, cell: &tl::HTMLTag<'_>, depth: usize) -> Value {
        if depth > MAX_DEPTH {
            return Value::Unset;
        }
        let children = kids(cell, self.parser);
        // A nested data object.
        if let Some(t) = children
            .iter()
            .find(|c| tag_name(c) == "table" && self.is_props_table(c))
        {
            return Value::Object(self.table(t, depth));
        }
        // A list.
        if let Some(ul) = children
            .iter()
            .find(|c| matches!(tag_name(c).as_str(), "ul" | "ol"))
        {
            let mut items = Vec::new();
            self.items(ul, depth + 1, &mut items);
            return Value::List(items);
        }
        // A link to another managed object.
        if let Some(a) = children.iter().find(|c| tag_name(c) == "a") {
            if let Some(m) = a
                .attributes()
                .get("href")
                .flatten()
                .and_then(|h| moid_of(&h.as_utf8_str()))
            {
                return Value::Link(m);
            }
        }
        let text = clean_text(&cell.inner_text(self.parser));
        if text == "Unset" {
            return Value::Unset;
        }
        let unq = text
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(&text);
        Value::Text(unq.to_owned())
    }
}

/// Parses an object (or data object) page into its properties.
pub fn parse_page(input: &[u8]) -> Result<Page, PageError> {
    let text = text_of(input)?;
    let dom = dom(text)?;
    let parser = dom.parser();
    let mut w = Walker { parser, props: 0 };
    // The first properties table that is not nested inside another one.
    let tables: Vec<&tl::HTMLTag<'_>> = dom
        .nodes()
        .iter()
        .filter_map(|n| n.as_tag())
        .filter(|t| tag_name(t) == "table")
        .collect();
    let first = tables.into_iter().find(|t| w.is_props_table(t));
    match first {
        Some(t) => Ok(Page {
            props: w.table(t, 0),
        }),
        None => Err(PageError::NoProperties),
    }
}

/// The `vmware-session-nonce` of a method page's form.
pub fn parse_nonce(input: &[u8]) -> Result<String, PageError> {
    let text = text_of(input)?;
    let dom = dom(text)?;
    dom.nodes()
        .iter()
        .filter_map(|n| n.as_tag())
        .filter(|t| tag_name(t) == "input")
        .find(|t| {
            t.attributes()
                .get("name")
                .flatten()
                .is_some_and(|n| n.as_utf8_str() == "vmware-session-nonce")
        })
        .and_then(|t| t.attributes().get("value").flatten())
        .map(|v| decode_entities(&v.as_utf8_str()))
        .filter(|v| !v.is_empty() && v.len() <= 256)
        .ok_or(PageError::NoNonce)
}

/// A fault named on an error page (`ManagedObjectNotFound`, ...), if any.
pub fn parse_fault(input: &[u8]) -> Option<String> {
    let text = text_of(input).ok()?;
    let dom = dom(text).ok()?;
    dom.nodes()
        .iter()
        .filter_map(|n| n.as_tag())
        .find(|t| {
            t.attributes()
                .class()
                .is_some_and(|c| c.as_utf8_str().split_whitespace().any(|c| c == "fault"))
        })
        .map(|t| clean_text(&t.inner_text(dom.parser())))
        .filter(|s| !s.is_empty())
}

/// Parses a method invocation result page.
pub fn parse_invocation(input: &[u8]) -> Result<Invocation, PageError> {
    const MARK: &str = "Method Invocation Result:";
    let text = text_of(input)?;
    let at = text.find(MARK).ok_or(PageError::NoResult)?;
    let after = text.get(at + MARK.len()..).unwrap_or_default();
    let kind_end = after.find('<').unwrap_or(after.len());
    let kind = clean_text(after.get(..kind_end).unwrap_or_default());
    if kind == "Fault" {
        let page = parse_page(input).unwrap_or_default();
        let (kind, message) = page
            .props
            .iter()
            .find(|p| p.name == "fault")
            .map(|p| {
                let msg = match &p.value {
                    Value::Text(s) => s.clone(),
                    _ => String::new(),
                };
                (p.type_name.clone(), msg)
            })
            .unwrap_or_else(|| ("Fault".to_owned(), String::new()));
        return Ok(Invocation::Fault { kind, message });
    }
    if kind == "void" {
        return Ok(Invocation::Done(None));
    }
    let dom = dom(text)?;
    let link = dom
        .nodes()
        .iter()
        .filter_map(|n| n.as_tag())
        .filter(|t| tag_name(t) == "a")
        .filter_map(|a| moid_of(&a.attributes().get("href").flatten()?.as_utf8_str()))
        .next_back();
    Ok(Invocation::Done(link))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]
    use super::*;

    const SUMMARY: &str = include_str!("testdata/summary.html");

    #[test]
    fn summary_page() {
        let p = parse_page(SUMMARY.as_bytes()).unwrap();
        assert_eq!(p.text("config.name"), Some("DC0_H0_VM0"));
        assert_eq!(p.text("config.numCpu"), Some("2"));
        assert_eq!(p.text("config.memorySizeMB"), Some("4096"));
        assert_eq!(p.text("guest.ipAddress"), Some("10.0.0.1"));
        assert_eq!(p.text("runtime.powerState"), Some("poweredOff"));
        assert_eq!(p.get("config.ftInfo"), Some(&Value::Unset));
        assert_eq!(p.links("runtime.host"), vec!["host-15".to_owned()]);
        assert_eq!(p.text("config.annotation"), None);
        assert_eq!(p.text("nope.deeper"), None);
    }

    #[test]
    fn links_lists_and_entities() {
        let html = r#"<table><tr><th>NAME</th><th>TYPE</th><th>VALUE</th></tr>
            <tr><td>childEntity</td><td>ManagedObjectReference[]</td><td><ul><li><a href="/mob/?moid=vm-1&amp;x=1">vm-1</a></li><li class="x"><a title="t" href="/mob/?moid=vm%2D2">vm-2</a></li></ul></td></tr>
            <tr><td>name</td><td>string</td><td>"a &amp; b &#x41;"</td></tr>
            <tr><td>odd</td><td>string</td></tr>
            </table>"#;
        let p = parse_page(html.as_bytes()).unwrap();
        assert_eq!(p.links("childEntity"), vec!["vm-1", "vm-2"]);
        assert_eq!(p.text("name"), Some("a & b A"));
        assert_eq!(p.get("odd"), None);
    }

    #[test]
    fn no_table_is_an_error() {
        assert_eq!(
            parse_page(b"<html>503 Service Unavailable</html>"),
            Err(PageError::NoProperties)
        );
        assert_eq!(
            parse_page(&vec![b' '; MAX_PAGE_BYTES + 1]),
            Err(PageError::TooLarge(MAX_PAGE_BYTES + 1))
        );
        assert_eq!(parse_page(&[0xff, 0xfe]), Err(PageError::NotText));
    }

    #[test]
    fn nonce_and_results() {
        let form = r#"<form method="POST"><input name="vmware-session-nonce" type="hidden" value="abc123"><input type="submit"></form>"#;
        assert_eq!(parse_nonce(form.as_bytes()).unwrap(), "abc123");
        assert_eq!(parse_nonce(b"<form></form>"), Err(PageError::NoNonce));
        let ok = r#"<p class="table-title">Method Invocation Result: ManagedObjectReference:Task</p><a href="/mob/?moid=task-62">task-62</a>"#;
        assert_eq!(
            parse_invocation(ok.as_bytes()).unwrap(),
            Invocation::Done(Some("task-62".into()))
        );
        let void = r#"<p>Method Invocation Result: void</p>"#;
        assert_eq!(
            parse_invocation(void.as_bytes()).unwrap(),
            Invocation::Done(None)
        );
        let fault = r#"<p class="table-title">Method Invocation Result: Fault</p><table><tr><th>NAME</th><th>TYPE</th><th>VALUE</th></tr><tr><td class="c2">fault</td><td class="c1">InvalidPowerState</td><td>"bad state"</td></tr></table>"#;
        assert_eq!(
            parse_invocation(fault.as_bytes()).unwrap(),
            Invocation::Fault {
                kind: "InvalidPowerState".into(),
                message: "bad state".into()
            }
        );
        assert_eq!(parse_invocation(b"<html/>"), Err(PageError::NoResult));
        assert_eq!(
            parse_fault(br#"<h1>Fault</h1><p class="fault">ManagedObjectNotFound</p>"#).as_deref(),
            Some("ManagedObjectNotFound")
        );
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let mut html = String::new();
        for _ in 0..200 {
            html.push_str("<table><tr><th>NAME</th><th>TYPE</th><th>VALUE</th></tr><tr><td>x</td><td>T</td><td>");
        }
        html.push_str("\"leaf\"");
        for _ in 0..200 {
            html.push_str("</td></tr></table>");
        }
        let p = parse_page(html.as_bytes()).unwrap();
        assert!(matches!(p.get("x"), Some(Value::Object(_))));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let _ = parse_page(&bytes);
            let _ = parse_nonce(&bytes);
            let _ = parse_invocation(&bytes);
            let _ = parse_fault(&bytes);
        }

        #[test]
        fn mangled_pages_never_panic(cut in 0usize..4000, junk in "[<>/a-z\" =&;#]{0,40}") {
            let mut s = SUMMARY.get(..cut.min(SUMMARY.len())).unwrap_or("").to_owned();
            s.push_str(&junk);
            let _ = parse_page(s.as_bytes());
            let _ = parse_invocation(s.as_bytes());
        }
    }
}
