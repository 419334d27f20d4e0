//! Fuzzes the upsd reply path: line splitting with a length limit, line
//! parsing, and LIST framing with an item limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upsvisor_nut::{LineBuffer, ListKind, ListReader, parse_line};

fuzz_target!(|data: &[u8]| {
    let mut buf = LineBuffer::new(512);
    let mut list = ListReader::new(ListKind::Var, Some("ups1"), 64);
    // Feed in two chunks to exercise partial lines.
    let mid = data.len() / 2;
    for chunk in [&data[..mid], &data[mid..]] {
        buf.push(chunk);
        loop {
            match buf.next_line() {
                Ok(Some(line)) => {
                    if let Ok(reply) = parse_line(&line) {
                        let _ = list.feed(reply);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
