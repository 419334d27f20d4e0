//! Fuzzes the daemon's config parser (TOML → strict schema → validation)
//! and the credentials-file parser path through `Config::parse_str`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upsvisord::config::Config;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(cfg) = Config::parse_str("fuzz.toml", &text) {
        let _ = cfg.inventory();
        let _ = cfg.sequencer_config();
        let _ = cfg.policy_config();
        let _ = cfg.poller_config();
    }
});
