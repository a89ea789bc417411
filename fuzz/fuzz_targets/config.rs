//! Any text as a config: an error that names the file, or a config whose
//! catalog compiles or is refused; never a panic (durations, pointers,
//! names and limits are all input).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tacet_core::{Catalog, Config};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml(text, Path::new("fuzz.toml")) {
        Ok(config) => {
            if Catalog::new(&config).is_ok() {
                let _ = config.orphan_timeout();
                let _ = config.replay_mapping(None);
                let _ = config.kafka_plan();
            }
        }
        Err(e) => assert!(e.to_string().contains("fuzz.toml")),
    }
});
