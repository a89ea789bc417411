//! Any bytes through the decoder, as one record (`tacet run`) and as a chunk
//! of lines (replay), with the reference mapping and the nested one: never a
//! panic, and every line is an event, an unmatched event or a dead letter.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tacet_core::{Catalog, Config};
use tacet_ingest::{Chunk, DecodeStats, Decoder};

fn decoders() -> &'static [Decoder; 2] {
    static DECODERS: OnceLock<[Decoder; 2]> = OnceLock::new();
    DECODERS.get_or_init(|| {
        let reference = Config::embedded_default();
        let alt = Config::from_toml(
            include_str!("../../config/alt-shape.toml"),
            Path::new("alt-shape.toml"),
        )
        .expect("the alt-shape config is valid");
        [reference, alt].map(|config| {
            let catalog = Arc::new(Catalog::new(&config).expect("valid"));
            let (name, mapping) = config.replay_mapping(None).expect("one mapping");
            Decoder::from_config(catalog, &mapping, &name, &config.engine)
        })
    })
}

fuzz_target!(|data: &[u8]| {
    for decoder in decoders() {
        let header = |name: &str| (name == "traceparent").then_some(data);
        let _ = decoder.decode(data, &header);
        let chunk = Chunk {
            seq: 0,
            partition: 0,
            source: "fuzz".into(),
            first_line: 1,
            bytes: Arc::new(data.to_vec().into()),
            last: true,
        };
        let (mut stats, mut dead) = (DecodeStats::default(), Vec::new());
        let batches = decoder.decode_chunk(&chunk, 3, &mut stats, &mut dead);
        assert_eq!(batches.len(), 3);
        assert_eq!(stats.events + stats.unmatched + stats.error_total(), stats.records);
        assert_eq!(dead.len() as u64, stats.error_total());
    }
});
