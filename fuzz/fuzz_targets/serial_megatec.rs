//! Fuzzes the Megatec/Q1 reply parsers and the line splitter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upsvisor_serial::{LineReader, megatec};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = megatec::parse_status(data) {
        let _ = s.to_power_status();
    }
    let _ = megatec::parse_rating(data);
    let _ = megatec::parse_info(data);
    let _ = megatec::command_reply(b"C\r", Some(data));
    let mut lines = LineReader::new(b'\r', megatec::MAX_REPLY);
    lines.push(data);
    while let Ok(Some(line)) = lines.next_line() {
        let _ = megatec::parse_status(&line);
    }
});
