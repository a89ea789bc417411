//! Any bytes as a correlator snapshot (what `tacet run` restores after a
//! restart): refused with an error or restored, never a panic; a restored
//! shard takes events and writes a snapshot that restores again.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tacet_core::outcome::{OutcomeRecord, OutcomeSink};
use tacet_core::{Catalog, Config};
use tacet_correlate::Shard;

struct Discard;

impl OutcomeSink for Discard {
    fn emit(&mut self, _record: &OutcomeRecord<'_>) {}
}

fn catalog() -> Arc<Catalog> {
    static CATALOG: OnceLock<Arc<Catalog>> = OnceLock::new();
    CATALOG
        .get_or_init(|| Arc::new(Catalog::new(&Config::embedded_default()).expect("valid")))
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut shard) = Shard::restore(catalog(), 1000, Discard, data) else {
        return;
    };
    shard.advance(shard.watermark().saturating_add(3_600_000));
    let mut again = Vec::new();
    shard.write_snapshot(&mut again);
    Shard::restore(catalog(), 1000, Discard, &again).expect("a written snapshot restores");
});
