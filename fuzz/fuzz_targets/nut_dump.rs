//! Fuzzes the `upsc` dump parser and the NUT variables → status mapping.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upsvisor_nut::{parse_upsc_dump, status_from_vars};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(vars) = parse_upsc_dump(&text) {
        let _ = status_from_vars(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
});
