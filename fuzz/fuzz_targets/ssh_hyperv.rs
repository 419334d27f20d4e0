#![no_main]
//! Get-VM | ConvertTo-Json and host JSON parsers.
use libfuzzer_sys::fuzz_target;
use upsvisor_ssh::codec::hyperv;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = hyperv::parse_vms(&text);
    let _ = hyperv::parse_host(&text);
});
