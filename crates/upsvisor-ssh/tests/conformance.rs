//! Conformance: every SSH parser on every real capture in
//! `../shared/data/real-outputs/{esxi,libvirt,proxmox,hyperv}` (see its
//! README), compared with each case's `.meta` `expect`. The test output
//! names each case's file (`cargo test -- --nocapture`).
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use upsvisor_core::{HostInfo, PowerState};
use upsvisor_ssh::codec::{esxi, hyperv, libvirt, proxmox};
use upsvisor_testkit::corpus::{Case, run_conformance};

fn power(p: PowerState) -> Value {
    json!(format!("{p:?}"))
}

fn host(h: &HostInfo) -> Value {
    json!({
        "product": h.product, "version": h.version, "build": h.build,
        "os": h.os, "hostname": h.hostname,
    })
}

fn ips(v: &[std::net::IpAddr]) -> Value {
    json!(v.iter().map(ToString::to_string).collect::<Vec<_>>())
}

fn read(case: &Case) -> Option<Result<Value, String>> {
    let t = case.text.as_str();
    let e = |e: upsvisor_ssh::codec::ParseError| e.to_string();
    Some(match case.parser() {
        "esxi.getallvms" => esxi::parse_getallvms(t).map_err(e).map(|rows| {
            json!({"rows": rows.iter().map(|r| json!({
                "vmid": r.vmid, "name": r.name, "file": r.file,
                "guest_id": r.guest_id, "version": r.version,
            })).collect::<Vec<_>>()})
        }),
        "esxi.getstate" => esxi::parse_power_getstate(t)
            .map_err(e)
            .map(|p| json!({"power": power(p)})),
        "esxi.guest_ips" => esxi::parse_guest_ips(t)
            .map_err(e)
            .map(|v| json!({"ips": ips(&v)})),
        "esxi.version" => esxi::parse_version(t).map_err(e).map(|h| host(&h)),
        "libvirt.list" => libvirt::parse_list(t).map_err(e).map(|d| {
            json!({"domains": d.iter().map(|d| json!({"uuid": d.uuid, "name": d.name})).collect::<Vec<_>>()})
        }),
        "libvirt.dominfo" => libvirt::parse_dominfo(t).map_err(e).map(|vm| {
            json!({
                "id": vm.id.as_str(), "name": vm.name, "power": power(vm.power),
                "vcpus": vm.vcpus, "memory_mib": vm.memory_mib,
            })
        }),
        "libvirt.domifaddr" => libvirt::parse_domifaddr(t)
            .map_err(e)
            .map(|v| json!({"ips": ips(&v)})),
        "proxmox.qm_list" | "proxmox.pct_list" => {
            let r = if case.parser() == "proxmox.qm_list" {
                proxmox::parse_qm_list(t)
            } else {
                proxmox::parse_pct_list(t)
            };
            r.map_err(e).map(|rows| {
                json!({"rows": rows.iter().map(|r| json!({
                    "id": r.guest.vm_id().as_str(), "name": r.name, "status": r.status,
                    "power": power(proxmox::power_state(&r.status)), "mem_mb": r.mem_mb,
                })).collect::<Vec<_>>()})
            })
        }
        "proxmox.pveversion" => proxmox::parse_pveversion(t).map_err(e).map(|h| host(&h)),
        "proxmox.guest_interfaces" => proxmox::parse_guest_interfaces(t)
            .map_err(e)
            .map(|v| json!({"ips": ips(&v)})),
        "hyperv.host" => hyperv::parse_host(t).map_err(e).map(|h| host(&h)),
        "hyperv.vms" => hyperv::parse_vms(t).map_err(e).map(|vms| {
            json!({"vms": vms.iter().map(|vm| json!({
                "id": vm.id.as_str(), "name": vm.name, "power": power(vm.power),
            })).collect::<Vec<_>>()})
        }),
        _ => return None,
    })
}

#[test]
fn esxi_real_outputs() {
    run_conformance("esxi", read);
}

#[test]
fn libvirt_real_outputs() {
    run_conformance("libvirt", read);
}

#[test]
fn proxmox_real_outputs() {
    run_conformance("proxmox", read);
}

#[test]
fn hyperv_real_outputs() {
    run_conformance("hyperv", read);
}
