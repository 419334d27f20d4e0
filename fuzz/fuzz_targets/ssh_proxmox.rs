#![no_main]
//! qm / pct / pveversion / pvesh /cluster/status output parsers.
use libfuzzer_sys::fuzz_target;
use upsvisor_core::{PowerState, VmInfo};
use upsvisor_ssh::codec::proxmox;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = proxmox::parse_qm_list(&text);
    let _ = proxmox::parse_pct_list(&text);
    let _ = proxmox::parse_status(&text);
    let mut vm = VmInfo::new("qemu/100", "", PowerState::Unknown);
    let _ = proxmox::apply_config(&mut vm, &text);
    let _ = proxmox::parse_guest_interfaces(&text);
    let _ = proxmox::parse_pveversion(&text);
    if let Ok(m) = proxmox::parse_cluster_status(&text) {
        let _ = m.scope();
    }
});
