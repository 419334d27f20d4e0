//! Fuzzes the MOB page parsers: arbitrary bytes must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(page) = upsvisor_mob::page::parse_page(data) {
        let _ = page.get("config.name");
        let _ = page.links("childEntity");
        let _ = upsvisor_mob::vm_from_summary("vm-1", &page);
    }
    let _ = upsvisor_mob::page::parse_nonce(data);
    let _ = upsvisor_mob::page::parse_invocation(data);
    let _ = upsvisor_mob::page::parse_fault(data);
});
