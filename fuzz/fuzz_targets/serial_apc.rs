//! Fuzzes the APC smart reply parsers, alert splitting and line splitting.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upsvisor_serial::{LineReader, apc};

fuzz_target!(|data: &[u8]| {
    let (clean, alerts) = apc::split_alerts(data);
    let mut lines = LineReader::new(b'\n', apc::MAX_REPLY);
    lines.push(&clean);
    while let Ok(Some(line)) = lines.next_line() {
        if let Ok(flags) = apc::parse_flags(&line) {
            let mut r = apc::ApcReading::default();
            r.flags = flags;
            let _ = r.to_power_status();
        }
        let _ = apc::parse_decimal(&line);
        let _ = apc::parse_runtime(&line);
        let _ = apc::parse_grace_delay(&line);
        let _ = apc::command_ok(&line, &alerts);
    }
});
