//! Sans-IO codecs: for each dialect, the command lines to send and pure
//! parsers for what the tools print. No I/O here; every parser takes text,
//! never panics, and refuses input over [`MAX_INPUT`] bytes.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

use std::fmt;

use upsvisor_core::Error;

pub mod esxi;
pub mod hyperv;
pub mod libvirt;
pub mod proxmox;

/// Largest text any parser accepts (16 MiB).
pub const MAX_INPUT: usize = 16 << 20;

/// Why a tool's output did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

impl ParseError {
    /// Maps into the core error for `target`.
    pub fn into_error(self, target: &str) -> Error {
        Error::protocol(target, self.0)
    }
}

pub(crate) fn check_size(text: &str) -> Result<(), ParseError> {
    if text.len() > MAX_INPUT {
        Err(ParseError(format!(
            "output of {} bytes exceeds the parser limit of {MAX_INPUT}",
            text.len()
        )))
    } else {
        Ok(())
    }
}

/// `key: value` lines (virsh dominfo, esxcli ... get, qm config) in order.
/// The key ends at the first colon, ASCII `:` or the full-width `：`
/// (U+FF1A) that CJK translations use. Lines without a colon are skipped.
/// Keys and values are trimmed.
pub fn colon_pairs(text: &str) -> Result<Vec<(&str, &str)>, ParseError> {
    check_size(text)?;
    Ok(text
        .lines()
        .filter_map(split_colon)
        .map(|(k, v)| (k.trim(), v.trim()))
        .filter(|(k, _)| !k.is_empty())
        .collect())
}

fn split_colon(line: &str) -> Option<(&str, &str)> {
    let (at, c) = line
        .char_indices()
        .find(|(_, c)| *c == ':' || *c == '\u{ff1a}')?;
    Some((line.get(..at)?, line.get(at + c.len_utf8()..)?))
}

/// Whether an id the platform reported is empty or a placeholder (blank,
/// all-zero UUID, `<unset>`, `null`): such an id is not a VM's identity
/// and must never become a key several VMs would share.
pub fn is_placeholder_id(id: &str) -> bool {
    let t = id.trim();
    t.is_empty()
        || t.eq_ignore_ascii_case("<unset>")
        || t.eq_ignore_ascii_case("null")
        || t.eq_ignore_ascii_case("unset")
        || (t
            .bytes()
            .all(|b| b == b'0' || b == b'-' || b == b'{' || b == b'}')
            && t.contains('0'))
}

/// Shortens and cleans a tool's error text for an error message.
pub(crate) fn snippet(text: &str) -> String {
    let t: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    if t.is_empty() {
        "(no output)".into()
    } else {
        t
    }
}

/// Classifies a failed command by its output: the engine acts on the kind.
pub fn classify_failure(target: &str, what: &str, status: Option<u32>, text: &str) -> Error {
    let lower = text.to_ascii_lowercase();
    let msg = format!(
        "{what} failed (exit {}): {}",
        status.map_or_else(|| "none".to_owned(), |s| s.to_string()),
        snippet(text)
    );
    let any = |ws: &[&str]| ws.iter().any(|w| lower.contains(w));
    if status == Some(127) || any(&["command not found", "is not recognized as"]) {
        Error::unsupported(format!("{msg} (is the tool installed and on PATH?)"))
    } else if any(&[
        "permission denied",
        "nopermission",
        "not authorized",
        "access is denied",
        "access denied",
        "authentication failed",
        "you do not have the required permission",
    ]) {
        Error::auth(target, msg)
    } else if any(&[
        "not found",
        "no such",
        "does not exist",
        "unable to find",
        "failed to get domain",
        "unable to find a virtual machine",
        "notfound",
    ]) {
        Error::not_found(msg)
    } else if any(&[
        "guest agent is not running",
        "qemu guest agent",
        "toolsunavailable",
        "tools are not running",
        "integration services",
    ]) {
        Error::tools_unavailable(msg)
    } else if any(&[
        "invalidpowerstate",
        "not in maintenance mode",
        "invalid state",
        "not running",
        "is not valid",
        "already",
        "cannot be performed",
        "invalidstate",
    ]) {
        Error::invalid_state(msg)
    } else {
        Error::protocol(target, msg)
    }
}

/// Runs every parser on `text` (for fuzzing and no-panic tests).
#[doc(hidden)]
pub fn parse_all(text: &str) {
    let _ = esxi::parse_getallvms(text);
    let _ = esxi::parse_summary(text, "1");
    let _ = esxi::parse_guest_ips(text);
    let _ = esxi::parse_power_getstate(text);
    let _ = esxi::parse_version(text);
    let _ = libvirt::parse_list(text);
    let _ = libvirt::parse_dominfo(text);
    let _ = libvirt::parse_domifaddr(text);
    let _ = libvirt::parse_version(text);
    let _ = proxmox::parse_qm_list(text);
    let _ = proxmox::parse_pct_list(text);
    let _ = proxmox::parse_status(text);
    let mut vm = upsvisor_core::VmInfo::new("qemu/100", "", upsvisor_core::PowerState::Unknown);
    let _ = proxmox::apply_config(&mut vm, text);
    let _ = proxmox::parse_guest_interfaces(text);
    let _ = proxmox::parse_pveversion(text);
    let _ = hyperv::parse_vms(text);
    let _ = hyperv::parse_host(text);
    let _ = classify_failure("h", "x", Some(1), text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use upsvisor_core::ErrorKind;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            parse_all(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn structured_noise_never_panics(s in "([(){}\\[\\],=:'\" \n\t/.a-z0-9-]|vmx|Vmid Name File|\\.vmx |\\[ds\\] |running|status: ){0,200}") {
            parse_all(&s);
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let mut s = String::from("(vim.vm.Summary) {\n");
        for _ in 0..10_000 {
            s.push_str("   a = (x) {\n");
        }
        assert!(esxi::flatten(&s).is_err());
        assert!(check_size(&"x".repeat(MAX_INPUT + 1)).is_err());
        let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(hyperv::parse_vms(&deep_json).is_err());
    }

    #[test]
    fn failures_get_the_right_kind() {
        let k = |s: Option<u32>, t: &str| classify_failure("h", "x", s, t).kind();
        assert_eq!(k(Some(127), "sh: qm: not found"), ErrorKind::Unsupported);
        assert_eq!(
            k(Some(1), "error: failed to get domain 'x'"),
            ErrorKind::NotFound
        );
        assert_eq!(
            k(
                Some(1),
                "error: Requested operation is not valid: domain is not running"
            ),
            ErrorKind::InvalidState
        );
        assert_eq!(
            k(Some(255), "QEMU guest agent is not running"),
            ErrorKind::ToolsUnavailable
        );
        assert_eq!(
            k(
                Some(1),
                "(vim.fault.NoPermission) Permission to perform this operation was denied."
            ),
            ErrorKind::Auth
        );
        assert_eq!(k(Some(3), "segfault"), ErrorKind::Protocol);
        let e = classify_failure("h", "x", Some(1), &"y".repeat(10_000));
        assert!(e.to_string().len() < 500);
    }
}
