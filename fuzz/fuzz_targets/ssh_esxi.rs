#![no_main]
//! vim-cmd / esxcli output parsers.
use libfuzzer_sys::fuzz_target;
use upsvisor_ssh::codec::esxi;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = esxi::parse_getallvms(&text);
    let _ = esxi::parse_summary(&text, "1");
    let _ = esxi::parse_guest_ips(&text);
    let _ = esxi::parse_power_getstate(&text);
    let _ = esxi::parse_version(&text);
});
