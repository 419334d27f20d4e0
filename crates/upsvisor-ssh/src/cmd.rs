//! Command lines built only from constants and validated ids.
//!
//! Every remote command is an argv of fixed program names, fixed options
//! and ids that passed a strict validator; each argument is then quoted for
//! a POSIX shell anyway (defence in depth). Nothing a host or a caller sends
//! is ever pasted into a command line unchecked. PowerShell scripts go
//! through `-EncodedCommand` (base64 of UTF-16LE), so neither `cmd.exe` nor
//! PowerShell parses any of their text on the way in.

use upsvisor_traits::{Error, VmId};

/// Quotes one argument for a POSIX shell (`sh`, `bash`, busybox `ash`).
///
/// Arguments made only of characters no shell treats specially are left
/// bare, everything else is single-quoted with embedded quotes escaped.
///
/// ```
/// use upsvisor_ssh::cmd::sh_quote;
/// assert_eq!(sh_quote("vmsvc/getallvms"), "vmsvc/getallvms");
/// assert_eq!(sh_quote("a b"), "'a b'");
/// assert_eq!(sh_quote("it's"), r"'it'\''s'");
/// assert_eq!(sh_quote(""), "''");
/// ```
pub fn sh_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b));
    if plain {
        return arg.to_owned();
    }
    let mut s = String::with_capacity(arg.len() + 2);
    s.push('\'');
    for c in arg.chars() {
        if c == '\'' {
            s.push_str("'\\''");
        } else {
            s.push(c);
        }
    }
    s.push('\'');
    s
}

/// Joins an argv into one shell line, quoting each argument.
///
/// ```
/// use upsvisor_ssh::cmd::sh_line;
/// assert_eq!(sh_line(&["qm", "shutdown", "100", "--timeout", "30"]), "qm shutdown 100 --timeout 30");
/// ```
pub fn sh_line<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| sh_quote(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why an id was refused.
fn refuse(vm: &str, expected: &str) -> Error {
    Error::not_found(format!(
        "VM id {vm:?} is not a valid {expected}; refused without running anything"
    ))
}

/// An ESXi `vim-cmd` Vmid: 1 to 10 ASCII digits.
///
/// ```
/// use upsvisor_ssh::cmd::esxi_vmid;
/// assert!(esxi_vmid("42").is_ok());
/// assert!(esxi_vmid("42; reboot").is_err());
/// ```
pub fn esxi_vmid(s: &str) -> Result<&str, Error> {
    if !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s)
    } else {
        Err(refuse(s, "ESXi Vmid (digits)"))
    }
}

/// A UUID in its canonical 8-4-4-4-12 hex form (libvirt domains, Hyper-V VM
/// ids, ESXi instance UUIDs). Braces around it are accepted and removed.
///
/// ```
/// use upsvisor_ssh::cmd::uuid;
/// assert!(uuid("6695eb01-f6a4-8304-79aa-97f2502e193f").is_ok());
/// assert!(uuid("6695eb01-f6a4-8304-79aa-97f2502e193f'").is_err());
/// ```
pub fn uuid(s: &str) -> Result<&str, Error> {
    let t = s
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(s);
    let ok = t.len() == 36
        && t.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    if ok { Ok(t) } else { Err(refuse(s, "UUID")) }
}

/// A Proxmox guest: `qemu/<vmid>` or `lxc/<vmid>` with a numeric VMID
/// (100 to 999999999).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PveGuest {
    /// A QEMU/KVM virtual machine (`qm`).
    Qemu(u32),
    /// An LXC container (`pct`).
    Lxc(u32),
}

impl PveGuest {
    /// Parses and validates a Proxmox [`VmId`].
    ///
    /// ```
    /// use upsvisor_ssh::cmd::PveGuest;
    /// assert_eq!(PveGuest::parse("qemu/100").unwrap(), PveGuest::Qemu(100));
    /// assert_eq!(PveGuest::parse("lxc/200").unwrap(), PveGuest::Lxc(200));
    /// assert!(PveGuest::parse("qemu/100;ls").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<PveGuest, Error> {
        Self::parse_scoped(s).map(|(_, g)| g)
    }

    /// Parses a Proxmox [`VmId`] with its optional cluster scope
    /// (`pve:<scope>/qemu/<vmid>`, see [`PveGuest::vm_id_in`]).
    ///
    /// ```
    /// use upsvisor_ssh::cmd::PveGuest;
    /// assert_eq!(
    ///     PveGuest::parse_scoped("pve:corp~0a1b2c3d/lxc/200").unwrap(),
    ///     (Some("corp~0a1b2c3d"), PveGuest::Lxc(200))
    /// );
    /// assert_eq!(PveGuest::parse_scoped("qemu/100").unwrap(), (None, PveGuest::Qemu(100)));
    /// assert!(PveGuest::parse_scoped("pve:/qemu/100").is_err());
    /// assert!(PveGuest::parse_scoped("pve:a;b/qemu/100").is_err());
    /// ```
    pub fn parse_scoped(s: &str) -> Result<(Option<&str>, PveGuest), Error> {
        let bad = || {
            refuse(
                s,
                "Proxmox guest id ([pve:<cluster>/]qemu/<vmid> or lxc/<vmid>)",
            )
        };
        let (scope, rest) = match s.strip_prefix("pve:") {
            Some(r) => {
                let (scope, rest) = r.split_once('/').ok_or_else(bad)?;
                let ok = !scope.is_empty()
                    && scope.len() <= 80
                    && scope.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
                    });
                if !ok {
                    return Err(bad());
                }
                (Some(scope), rest)
            }
            None => (None, s),
        };
        let (kind, num) = rest.split_once('/').ok_or_else(bad)?;
        if num.is_empty() || num.len() > 9 || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u32 = num.parse().map_err(|_| bad())?;
        if n < 100 {
            return Err(bad());
        }
        match kind {
            "qemu" => Ok((scope, PveGuest::Qemu(n))),
            "lxc" => Ok((scope, PveGuest::Lxc(n))),
            _ => Err(bad()),
        }
    }

    /// The [`VmId`] for this guest: `qemu/<vmid>` or `lxc/<vmid>`.
    pub fn vm_id(self) -> VmId {
        self.vm_id_in(None)
    }

    /// The [`VmId`] for this guest in cluster `scope`
    /// ([`crate::codec::proxmox::PveMembership::scope`]):
    /// `pve:<scope>/qemu/<vmid>`, unique in every estate and the same on
    /// every node of the cluster, so a migration keeps it; without a
    /// scope, [`PveGuest::vm_id`].
    pub fn vm_id_in(self, scope: Option<&str>) -> VmId {
        let local = match self {
            PveGuest::Qemu(n) => format!("qemu/{n}"),
            PveGuest::Lxc(n) => format!("lxc/{n}"),
        };
        match scope {
            Some(s) => VmId::new(format!("pve:{s}/{local}")),
            None => VmId::new(local),
        }
    }

    /// The command-line tool for this guest type.
    pub fn tool(self) -> &'static str {
        match self {
            PveGuest::Qemu(_) => "qm",
            PveGuest::Lxc(_) => "pct",
        }
    }

    /// The numeric VMID.
    pub fn vmid(self) -> u32 {
        match self {
            PveGuest::Qemu(n) | PveGuest::Lxc(n) => n,
        }
    }
}

/// Builds `powershell.exe -NoProfile -NonInteractive -EncodedCommand <b64>`
/// for `script`. The base64 alphabet is safe in `cmd.exe` and PowerShell
/// alike, so the script's own text is never parsed by the login shell.
///
/// ```
/// use upsvisor_ssh::cmd::powershell;
/// let line = powershell("Get-VM");
/// assert_eq!(line, "powershell.exe -NoProfile -NonInteractive -EncodedCommand RwBlAHQALQBWAE0A");
/// ```
pub fn powershell(script: &str) -> String {
    use base64::Engine as _;
    let utf16: Vec<u8> = script.encode_utf16().flat_map(u16::to_le_bytes).collect();
    format!(
        "powershell.exe -NoProfile -NonInteractive -EncodedCommand {}",
        base64::engine::general_purpose::STANDARD.encode(utf16)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encoded_commands_are_padded_base64_of_utf16le() {
        let enc = |s: &str| {
            powershell(s)
                .strip_prefix("powershell.exe -NoProfile -NonInteractive -EncodedCommand ")
                .map(str::to_owned)
        };
        // 2, 4 and 6 bytes of UTF-16LE: one, two and no padding characters
        // (what `[Convert]::ToBase64String([Text.Encoding]::Unicode.GetBytes(s))` gives).
        assert_eq!(enc("a").as_deref(), Some("YQA="));
        assert_eq!(enc("ab").as_deref(), Some("YQBiAA=="));
        assert_eq!(enc("abc").as_deref(), Some("YQBiAGMA"));
        assert_eq!(enc("é$").as_deref(), Some("6QAkAA=="));
    }

    #[test]
    fn metacharacters_are_refused() {
        for bad in [
            "1;reboot", "$(id)", "`id`", "1 2", "1|x", "1&", "1\n2", "", "-1", "１",
        ] {
            assert!(esxi_vmid(bad).is_err(), "{bad:?}");
            assert!(uuid(bad).is_err(), "{bad:?}");
            assert!(PveGuest::parse(bad).is_err(), "{bad:?}");
        }
        assert!(PveGuest::parse("qemu/99").is_err());
        assert!(PveGuest::parse("kvm/100").is_err());
        assert!(PveGuest::parse("qemu/-100").is_err());
        assert_eq!(
            uuid("{6695EB01-F6A4-8304-79AA-97F2502E193F}").unwrap(),
            "6695EB01-F6A4-8304-79AA-97F2502E193F"
        );
    }

    /// What `sh -c 'printf %s\\n <line>'` gives back for a quoted argument.
    fn through_sh(arg: &str) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s' {}", sh_quote(arg)))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn quoting_survives_a_real_shell() {
        for s in [
            "a b",
            "it's",
            "$(touch /nonexistent)",
            "`x`",
            "a;b|c&d",
            "\"q\"",
            "*",
            "~",
        ] {
            assert_eq!(through_sh(s), s);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_printable_string_round_trips_through_sh(s in "[ -~]{0,24}") {
            prop_assert_eq!(through_sh(&s), s);
        }

        /// Every key the transport makes parses back to its guest and
        /// scope; any other text is refused or parsed, never a panic.
        #[test]
        fn proxmox_keys_round_trip(
            scope in proptest::option::of("[A-Za-z0-9._-]{1,40}~[0-9a-f]{8}"),
            vmid in 100u32..1_000_000_000,
            lxc in any::<bool>(),
            junk in "[ -~]{0,40}",
        ) {
            let g = if lxc { PveGuest::Lxc(vmid) } else { PveGuest::Qemu(vmid) };
            let key = g.vm_id_in(scope.as_deref());
            prop_assert_eq!(
                PveGuest::parse_scoped(key.as_str()).unwrap(),
                (scope.as_deref(), g)
            );
            let _ = PveGuest::parse_scoped(&junk);
            let _ = PveGuest::parse_scoped(&format!("pve:{junk}"));
        }
    }
}
