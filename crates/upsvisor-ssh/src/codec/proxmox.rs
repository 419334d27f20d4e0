//! Proxmox VE: `qm` (QEMU VMs), `pct` (LXC containers), `pveversion`.
//!
//! VM ids are `qemu/<vmid>` and `lxc/<vmid>`. A VMID is unique within one
//! cluster and survives migration between its nodes (Proxmox VE admin
//! guide, "Cluster Manager"); a standalone node is a cluster of one and
//! every node numbers from 100. The transport therefore keys guests of a
//! clustered node with the cluster ([`PveMembership::scope`]) and guests
//! of a standalone node, or of a node whose membership is unknown, with
//! the host.

use std::net::IpAddr;

use upsvisor_traits::{HostInfo, PowerState, ToolsState, VmInfo};

use super::{ParseError, check_size, colon_pairs};
use crate::cmd::PveGuest;

/// `qm list`
pub const QM_LIST: &str = "qm list";
/// `pct list`
pub const PCT_LIST: &str = "pct list";
/// `pveversion`
pub const PVEVERSION: &str = "pveversion";
/// The node's cluster membership: the Proxmox VE API's `GET
/// /cluster/status` through `pvesh` (Proxmox VE API viewer,
/// `/cluster/status`; `pvesh(1)`).
pub const CLUSTER_STATUS: &str = "pvesh get /cluster/status --output-format json";

/// Whether a Proxmox node belongs to a cluster, from [`CLUSTER_STATUS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PveMembership {
    /// No `cluster` entry: a standalone node (its VMIDs are its own).
    Standalone,
    /// A cluster: its name and the names of its nodes (every configured
    /// node, online or not: the API lists them with `online` 0 or 1),
    /// sorted.
    Cluster {
        /// `name` of the `cluster` entry (corosync's `totem.cluster_name`).
        name: String,
        /// `name` of each `node` entry, sorted, without duplicates.
        nodes: Vec<String>,
    },
}

impl PveMembership {
    /// The scope of this node's VMIDs: `None` for a standalone node, else
    /// `<cluster name>~<8 hex digits>`, the digits a 32-bit FNV-1a hash of
    /// the sorted node names (joined by newlines). The hash keeps two
    /// clusters that happen to share a name (two labs both called `pve`)
    /// from sharing keys, which would hide one of two running VMs with
    /// the same VMID; a node added to or removed from the cluster changes
    /// every key once (its VMs are seen to vanish and appear again).
    pub fn scope(&self) -> Option<String> {
        match self {
            PveMembership::Standalone => None,
            PveMembership::Cluster { name, nodes } => {
                let mut h: u32 = 0x811c_9dc5;
                for (i, n) in nodes.iter().enumerate() {
                    if i > 0 {
                        h = (h ^ u32::from(b'\n')).wrapping_mul(0x0100_0193);
                    }
                    for b in n.bytes() {
                        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
                    }
                }
                Some(format!("{name}~{h:08x}"))
            }
        }
    }
}

/// Parses [`CLUSTER_STATUS`]: a JSON array of entries whose `type` is
/// `cluster` (at most one: `name`, `nodes`, `quorate`, `version`) or
/// `node` (`name`, `nodeid`, `online`, `local`, `ip`, ...). Unknown
/// fields and entry types are ignored.
///
/// # Errors
/// Not a JSON array; no `node` entry at all (every node lists at least
/// itself); a `cluster` or `node` entry without a usable `name` (a name
/// must be 1–64 characters of letters, digits, `-`, `_` and `.`, as
/// Proxmox allows for cluster and node names); more than one `cluster`
/// entry; over the parser's size limit.
pub fn parse_cluster_status(text: &str) -> Result<PveMembership, ParseError> {
    check_size(text)?;
    let what = "pvesh get /cluster/status";
    let v: serde_json::Value = serde_json::from_str(text.trim()).map_err(|e| {
        ParseError(format!(
            "{what}: bad JSON ({e}): {:?}",
            super::snippet(text)
        ))
    })?;
    let arr = v
        .as_array()
        .ok_or_else(|| ParseError(format!("{what}: not an array")))?;
    let name_of = |e: &serde_json::Value, kind: &str| {
        let n = e.get("name").and_then(|n| n.as_str()).unwrap_or("");
        let ok = !n.is_empty()
            && n.len() <= 64
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(n.to_owned())
        } else {
            Err(ParseError(format!(
                "{what}: a {kind} entry without a usable name: {:?}",
                super::snippet(&e.to_string())
            )))
        }
    };
    let mut cluster = None;
    let mut nodes = Vec::new();
    for e in arr {
        match e.get("type").and_then(|t| t.as_str()) {
            Some("cluster") => {
                if cluster.is_some() {
                    return Err(ParseError(format!("{what}: two cluster entries")));
                }
                cluster = Some(name_of(e, "cluster")?);
            }
            Some("node") => nodes.push(name_of(e, "node")?),
            _ => {}
        }
    }
    if nodes.is_empty() {
        return Err(ParseError(format!(
            "{what}: no node entry: {:?}",
            super::snippet(text)
        )));
    }
    nodes.sort();
    nodes.dedup();
    Ok(match cluster {
        None => PveMembership::Standalone,
        Some(name) => PveMembership::Cluster { name, nodes },
    })
}

/// `qm|pct <verb> <vmid> [extra...]` for a validated guest.
pub fn guest_cmd(g: PveGuest, verb: &str, extra: &[&str]) -> String {
    let vmid = g.vmid().to_string();
    let mut argv = vec![g.tool(), verb, vmid.as_str()];
    argv.extend_from_slice(extra);
    crate::cmd::sh_line(&argv)
}

/// `qm guest cmd <vmid> network-get-interfaces`
pub fn qm_guest_interfaces(vmid: u32) -> String {
    format!("qm guest cmd {vmid} network-get-interfaces")
}

/// One row of `qm list` or `pct list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRow {
    /// The guest.
    pub guest: PveGuest,
    /// Name (VM name or container hostname); may be empty.
    pub name: String,
    /// `running`, `stopped`, ...
    pub status: String,
    /// Memory in MB (`qm list` only).
    pub mem_mb: Option<u64>,
}

/// Maps a Proxmox guest status.
pub fn power_state(status: &str) -> PowerState {
    match status {
        "running" => PowerState::PoweredOn,
        "stopped" => PowerState::PoweredOff,
        "paused" | "suspended" => PowerState::Suspended,
        _ => PowerState::Unknown,
    }
}

/// The lines after the first line that holds every word of `want` (the
/// header), or an error naming what came instead. Lines before the header
/// (warnings, blank lines) are skipped.
fn after_header<'a>(
    text: &'a str,
    want: &[&str],
) -> Result<impl Iterator<Item = &'a str> + 'a, ParseError> {
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    let found = lines.by_ref().any(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        want.iter().all(|x| w.contains(x))
    });
    if found {
        Ok(lines)
    } else {
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        Err(ParseError(format!(
            "no {} header in the list (first line {:?})",
            want.join(" "),
            super::snippet(first)
        )))
    }
}

/// Parses `qm list` (`VMID NAME STATUS MEM(MB) BOOTDISK(GB) PID`); an
/// empty list prints nothing at all.
///
/// NAME is the one column that may contain spaces: a VM created without a
/// name is listed as `VM <vmid>` (qemu-server's default), and names longer
/// than the column push the rest of the row right. So a row is read from
/// both ends: VMID is the first word, and STATUS, MEM(MB), BOOTDISK(GB) and
/// PID the last four; NAME is what lies between.
pub fn parse_qm_list(text: &str) -> Result<Vec<GuestRow>, ParseError> {
    check_size(text)?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for l in after_header(text, &["VMID", "NAME", "STATUS"])? {
        let t = l.trim();
        let w: Vec<&str> = t.split_whitespace().collect();
        if w.len() < 5 {
            continue;
        }
        let (Some(id), Some(status), Some(mem)) =
            (w.first(), w.get(w.len() - 4), w.get(w.len() - 3))
        else {
            continue;
        };
        let Ok(guest) = PveGuest::parse(&format!("qemu/{id}")) else {
            continue;
        };
        let name = w
            .get(1..w.len() - 4)
            .map(|n| n.join(" "))
            .unwrap_or_default();
        out.push(GuestRow {
            guest,
            name,
            status: (*status).to_owned(),
            mem_mb: mem.parse().ok(),
        });
    }
    Ok(out)
}

/// Parses `pct list` (`VMID Status Lock Name`). Lock is often blank and a
/// container's name is a hostname (no spaces), so VMID and Status are read
/// from the left and Name from the right.
pub fn parse_pct_list(text: &str) -> Result<Vec<GuestRow>, ParseError> {
    check_size(text)?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for l in after_header(text, &["VMID", "Status"])? {
        let w: Vec<&str> = l.split_whitespace().collect();
        let (Some(id), Some(status)) = (w.first(), w.get(1)) else {
            continue;
        };
        let Ok(guest) = PveGuest::parse(&format!("lxc/{id}")) else {
            continue;
        };
        let name = if w.len() >= 3 {
            w.last().copied().unwrap_or("")
        } else {
            ""
        };
        out.push(GuestRow {
            guest,
            name: name.to_owned(),
            status: (*status).to_owned(),
            mem_mb: None,
        });
    }
    Ok(out)
}

/// Parses `qm status <vmid>` / `pct status <vmid>` (`status: running`).
pub fn parse_status(text: &str) -> Result<PowerState, ParseError> {
    colon_pairs(text)?
        .iter()
        .find(|(k, _)| *k == "status")
        .map(|(_, v)| power_state(v))
        .ok_or_else(|| ParseError(format!("status: unexpected {:?}", super::snippet(text))))
}

/// Fills a VM from `qm config <vmid>` or `pct config <vmid>`.
pub fn apply_config(vm: &mut VmInfo, text: &str) -> Result<(), ParseError> {
    let pairs = colon_pairs(text)?;
    if pairs.is_empty() {
        return Err(ParseError(format!(
            "config: no settings in {:?}",
            super::snippet(text)
        )));
    }
    let find = |k: &str| pairs.iter().find(|(a, _)| *a == k).map(|(_, v)| *v);
    if let Some(n) = find("name").or_else(|| find("hostname")) {
        vm.name = n.to_owned();
    }
    let cores: Option<u32> = find("cores").and_then(|v| v.parse().ok());
    let sockets: u32 = find("sockets").and_then(|v| v.parse().ok()).unwrap_or(1);
    vm.vcpus = find("vcpus")
        .and_then(|v| v.parse().ok())
        .or(cores.map(|c| c.saturating_mul(sockets)));
    vm.memory_mib = find("memory").and_then(|v| v.parse().ok());
    vm.guest_os = find("ostype").map(ostype_name);
    if let Some(tags) = find("tags") {
        vm.tags = tags
            .split([';', ',', ' '])
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
    }
    // Containers with static addresses: net0: name=eth0,...,ip=10.0.0.5/24
    for (k, v) in &pairs {
        if k.starts_with("net") {
            for part in v.split(',') {
                if let Some(ip) = part
                    .strip_prefix("ip=")
                    .or_else(|| part.strip_prefix("ip6="))
                {
                    if let Ok(ip) = ip.split('/').next().unwrap_or("").parse::<IpAddr>() {
                        vm.ips.push(ip);
                    }
                }
            }
        }
    }
    if find("agent").is_some_and(|a| a.split(',').next() == Some("0") || a.contains("enabled=0")) {
        vm.tools = ToolsState::NotInstalled;
    }
    // The SMBIOS type 1 settings qm(1) passes to QEMU:
    // `smbios1: uuid=<uuid>[,serial=...]`; the guest reads that UUID.
    vm.bios_uuid = find("smbios1").and_then(|v| {
        v.split(',')
            .find_map(|p| p.trim().strip_prefix("uuid="))
            .filter(|u| crate::cmd::uuid(u).is_ok())
            .map(str::to_ascii_lowercase)
    });
    Ok(())
}

fn ostype_name(t: &str) -> String {
    match t {
        "l26" => "Linux 2.6+ kernel".into(),
        "l24" => "Linux 2.4 kernel".into(),
        "win11" => "Microsoft Windows 11/2022/2025".into(),
        "win10" => "Microsoft Windows 10/2016/2019".into(),
        "win8" => "Microsoft Windows 8.x/2012/2012r2".into(),
        "win7" => "Microsoft Windows 7/2008r2".into(),
        "solaris" => "Solaris".into(),
        other => other.to_owned(),
    }
}

/// Parses `qm guest cmd <vmid> network-get-interfaces` (the QEMU guest
/// agent's JSON): every address except loopback.
pub fn parse_guest_interfaces(text: &str) -> Result<Vec<IpAddr>, ParseError> {
    check_size(text)?;
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .map_err(|e| ParseError(format!("network-get-interfaces: bad JSON: {e}")))?;
    let arr = v
        .as_array()
        .ok_or_else(|| ParseError("network-get-interfaces: not an array".into()))?;
    let mut ips = Vec::new();
    for iface in arr {
        let Some(addrs) = iface.get("ip-addresses").and_then(|a| a.as_array()) else {
            continue;
        };
        for a in addrs {
            if let Some(ip) = a
                .get("ip-address")
                .and_then(|s| s.as_str())
                .and_then(|s| s.parse::<IpAddr>().ok())
            {
                if !ip.is_loopback() && !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
    }
    Ok(ips)
}

/// Parses `pveversion` (`pve-manager/8.1.3/b46aac3b42da5d15 (running kernel: 6.5.11-4-pve)`).
pub fn parse_pveversion(text: &str) -> Result<HostInfo, ParseError> {
    check_size(text)?;
    let line = text
        .lines()
        .find(|l| l.starts_with("pve-manager/"))
        .ok_or_else(|| ParseError(format!("pveversion: unexpected {:?}", super::snippet(text))))?;
    let mut parts = line.split('/');
    let _ = parts.next();
    let version = parts.next().unwrap_or("").to_owned();
    let build = parts
        .next()
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_owned);
    let mut info = HostInfo::new("Proxmox VE", version);
    info.build = build;
    info.os = line
        .split_once("(running kernel: ")
        .map(|(_, k)| format!("Linux {}", k.trim_end_matches(')')));
    Ok(info)
}

/// The kind of a failed qm/pct call, from the fixed texts of Proxmox's
/// Perl tools (they are not localised): a missing guest config is
/// `Configuration file '...' does not exist`; `ipcc_send_rec` means the
/// cluster filesystem (pmxcfs) is not answering.
pub fn failure_kind(text: &str) -> Option<upsvisor_traits::ErrorKind> {
    use upsvisor_traits::ErrorKind as K;
    let lines = || text.lines().map(str::trim);
    if lines().any(|l| l.starts_with("ipcc_send_rec") || l.contains("cfs-lock")) {
        Some(K::Unreachable)
    } else if lines()
        .any(|l| l.starts_with("Configuration file '") && l.ends_with("' does not exist"))
    {
        Some(K::NotFound)
    } else if lines().any(|l| l.contains("guest agent is not running")) {
        Some(K::ToolsUnavailable)
    } else if lines()
        .any(|l| l.starts_with("Permission check failed") || l.starts_with("only root can"))
    {
        Some(K::Auth)
    } else if lines().any(|l| l.starts_with("VM ") && l.ends_with(" not running")) {
        Some(K::InvalidState)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_status() {
        // The shape of GET /cluster/status (a three-node cluster, one node
        // offline) and of a standalone node.
        let c = r#"[{"id":"cluster","name":"corp-pve","nodes":3,"quorate":1,"type":"cluster","version":5},
            {"id":"node/pve02","ip":"10.0.0.2","level":"","local":0,"name":"pve02","nodeid":2,"online":1,"type":"node"},
            {"id":"node/pve01","ip":"10.0.0.1","level":"c","local":1,"name":"pve01","nodeid":1,"online":1,"type":"node"},
            {"id":"node/pve03","name":"pve03","nodeid":3,"online":0,"type":"node"}]"#;
        let m = parse_cluster_status(c).unwrap();
        assert_eq!(
            m,
            PveMembership::Cluster {
                name: "corp-pve".into(),
                nodes: vec!["pve01".into(), "pve02".into(), "pve03".into()]
            }
        );
        let scope = m.scope().unwrap();
        assert!(scope.starts_with("corp-pve~") && scope.len() == "corp-pve~".len() + 8);
        // The same cluster name with other nodes is another scope.
        let other = PveMembership::Cluster {
            name: "corp-pve".into(),
            nodes: vec!["lab1".into(), "lab2".into()],
        };
        assert_ne!(other.scope(), m.scope());
        // FNV-1a of "a": the published test vector 0xe40c292c.
        let a = PveMembership::Cluster {
            name: "x".into(),
            nodes: vec!["a".into()],
        };
        assert_eq!(a.scope().unwrap(), "x~e40c292c");

        let s = r#"[{"id":"node/pve","ip":"192.168.1.10","level":"","local":1,"name":"pve","nodeid":0,"online":1,"type":"node"}]"#;
        assert_eq!(parse_cluster_status(s).unwrap(), PveMembership::Standalone);
        assert_eq!(PveMembership::Standalone.scope(), None);

        for bad in [
            "",
            "[]",
            "{}",
            "ipcc_send_rec[1] failed: Connection refused",
            r#"[{"type":"cluster","name":"c"}]"#,
            r#"[{"type":"cluster"},{"type":"node","name":"n"}]"#,
            r#"[{"type":"cluster","name":"a b"},{"type":"node","name":"n"}]"#,
            r#"[{"type":"node","name":"n/../x"}]"#,
            r#"[{"type":"cluster","name":"c"},{"type":"cluster","name":"d"},{"type":"node","name":"n"}]"#,
        ] {
            assert!(parse_cluster_status(bad).is_err(), "{bad:?}");
        }
    }

    const QM_LIST_OUT: &str = "      VMID NAME                 STATUS     MEM(MB)    BOOTDISK(GB) PID       \n       100 web1                 running    2048              32.00 12345     \n       101 db1                  stopped    4096              64.00 0         \n";
    const PCT_LIST_OUT: &str = "VMID       Status     Lock         Name                \n200        running                 ct1                 \n201        stopped    backup       ct2                 \n";

    #[test]
    fn lists() {
        let q = parse_qm_list(QM_LIST_OUT).unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].guest, PveGuest::Qemu(100));
        assert_eq!(q[0].name, "web1");
        assert_eq!(q[1].status, "stopped");
        assert_eq!(q[1].mem_mb, Some(4096));
        let c = parse_pct_list(PCT_LIST_OUT).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].guest, PveGuest::Lxc(200));
        assert_eq!(c[0].name, "ct1");
        assert_eq!(c[1].name, "ct2");
        assert!(parse_qm_list("").unwrap().is_empty());
        assert!(parse_qm_list("ipcc_send_rec[1] failed: Connection refused\n").is_err());
    }

    #[test]
    fn lists_read_names_with_spaces_and_skip_noise() {
        let q = parse_qm_list("warning: cluster not ready - no quorum?\r\n      VMID NAME                 STATUS     MEM(MB)    BOOTDISK(GB) PID\r\n       100 vm1                  running    2048              22.20 80720\r\n\r\n      9000 VM 9000              stopped    2048              22.20 0\r\n      9001 a-very-long-name-beyond-twenty paused 512 0.00 0\r\n").unwrap();
        assert_eq!(q.len(), 3, "{q:?}");
        assert_eq!(q[1].name, "VM 9000");
        assert_eq!(q[1].status, "stopped");
        assert_eq!(q[1].mem_mb, Some(2048));
        assert_eq!(q[2].status, "paused");
        assert!(parse_qm_list("ipcc_send_rec[1] failed: Connection refused\n").is_err());
        let c = parse_pct_list("\nVMID       Status     Lock         Name\n100        stopped    backup       ct1\n101        running                 ct2\n").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].name, "ct1");
        assert_eq!(c[1].status, "running");
    }

    proptest::proptest! {
        /// Whatever the name (words with single spaces, up to past the
        /// 20-character column), each row reads back as it was printed
        /// by qm's `%10s %-20s %-10s %-10s %12s %-10s`.
        #[test]
        fn qm_list_rows_read_back(
            rows in proptest::collection::vec(
                (100u32..999_999, "[A-Za-z0-9._-]{1,12}( [A-Za-z0-9._-]{1,12}){0,2}",
                 proptest::sample::select(vec!["running", "stopped", "paused"]), 0u64..100_000),
                0..8,
            ),
            preamble in proptest::option::of("warning: [a-z ]{0,30}"),
        ) {
            let mut text = preamble.map(|p| format!("{p}\n")).unwrap_or_default();
            text.push_str("      VMID NAME                 STATUS     MEM(MB)    BOOTDISK(GB) PID       \n");
            for (id, name, status, mem) in &rows {
                text.push_str(&format!("{id:>10} {name:<20} {status:<10} {mem:<10} {:>12} {:<10}\r\n", "32.00", 0));
            }
            let got = parse_qm_list(&text).unwrap();
            proptest::prop_assert_eq!(got.len(), rows.len());
            for (g, (id, name, status, mem)) in got.iter().zip(&rows) {
                proptest::prop_assert_eq!(g.guest, PveGuest::Qemu(*id));
                proptest::prop_assert_eq!(&g.name, name);
                proptest::prop_assert_eq!(&g.status, status);
                proptest::prop_assert_eq!(g.mem_mb, Some(*mem));
            }
        }
    }

    #[test]
    fn config_status_agent() {
        let mut vm = VmInfo::new("qemu/100", "", PowerState::PoweredOn);
        apply_config(
            &mut vm,
            "agent: 1\nboot: order=scsi0;net0\ncores: 2\nmemory: 2048\nname: web1\nnet0: virtio=BC:24:11:2E:7A:01,bridge=vmbr0\nostype: l26\nsockets: 2\ntags: prod;web\n",
        )
        .unwrap();
        assert_eq!(vm.name, "web1");
        assert_eq!(vm.vcpus, Some(4));
        assert_eq!(vm.memory_mib, Some(2048));
        assert_eq!(vm.guest_os.as_deref(), Some("Linux 2.6+ kernel"));
        assert_eq!(vm.tags, vec!["prod", "web"]);
        assert_eq!(vm.bios_uuid, None);
        // qm(1) `smbios1: uuid=...` is the UUID the guest reads from DMI.
        apply_config(
            &mut vm,
            "name: web1\nsmbios1: uuid=7B1E2F3A-4C5D-4E6F-8A9B-0C1D2E3F4A5B,serial=x\n",
        )
        .unwrap();
        assert_eq!(
            vm.bios_uuid.as_deref(),
            Some("7b1e2f3a-4c5d-4e6f-8a9b-0c1d2e3f4a5b")
        );
        apply_config(&mut vm, "name: web1\nsmbios1: serial=only\n").unwrap();
        assert_eq!(vm.bios_uuid, None);
        let mut ct = VmInfo::new("lxc/200", "", PowerState::PoweredOn);
        apply_config(&mut ct, "arch: amd64\ncores: 1\nhostname: ct1\nmemory: 512\nnet0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=10.0.0.5/24,type=veth\nostype: debian\n").unwrap();
        assert_eq!(ct.name, "ct1");
        assert_eq!(ct.ips, vec!["10.0.0.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            parse_status("status: running\n").unwrap(),
            PowerState::PoweredOn
        );
        assert!(
            parse_status("Configuration file 'nodes/pve/qemu-server/999.conf' does not exist\n")
                .is_err()
        );
        let ips = parse_guest_interfaces(r#"[{"name":"lo","ip-addresses":[{"ip-address-type":"ipv4","ip-address":"127.0.0.1","prefix":8}],"hardware-address":"00:00:00:00:00:00"},{"name":"eth0","ip-addresses":[{"ip-address-type":"ipv4","ip-address":"10.0.0.21","prefix":24},{"ip-address-type":"ipv6","ip-address":"fe80::be24:11ff:fe2e:7a01","prefix":64}],"hardware-address":"bc:24:11:2e:7a:01","statistics":{"rx-bytes":1}}]"#).unwrap();
        assert_eq!(ips.len(), 2);
        assert!(parse_guest_interfaces("QEMU guest agent is not running").is_err());
    }

    #[test]
    fn pveversion() {
        let v =
            parse_pveversion("pve-manager/8.1.3/b46aac3b42da5d15 (running kernel: 6.5.11-4-pve)\n")
                .unwrap();
        assert_eq!(v.product.as_deref(), Some("Proxmox VE"));
        assert_eq!(v.version.as_deref(), Some("8.1.3"));
        assert_eq!(v.build.as_deref(), Some("b46aac3b42da5d15"));
        assert_eq!(v.os.as_deref(), Some("Linux 6.5.11-4-pve"));
        assert!(parse_pveversion("bash: pveversion: command not found").is_err());
    }

    #[test]
    fn builders() {
        assert_eq!(
            guest_cmd(PveGuest::Lxc(200), "shutdown", &["--timeout", "5"]),
            "pct shutdown 200 --timeout 5"
        );
        assert_eq!(
            qm_guest_interfaces(100),
            "qm guest cmd 100 network-get-interfaces"
        );
    }
}
