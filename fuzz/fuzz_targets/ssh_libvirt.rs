#![no_main]
//! virsh output parsers.
use libfuzzer_sys::fuzz_target;
use upsvisor_ssh::codec::libvirt;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = libvirt::parse_list(&text);
    let _ = libvirt::parse_dominfo(&text);
    let _ = libvirt::parse_domifaddr(&text);
    let _ = libvirt::parse_version(&text);
});
