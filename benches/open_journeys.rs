//! Resident memory per open journey.
//!
//! Opens `TACET_BENCH_OPEN` journeys (default 5,000,000) in one shard, each
//! with its start event and its ack carrying the reference attributes (amount,
//! currency, customer, channel, region), all inside one deadline so none is
//! decided, then reports the growth of the process's resident memory divided
//! by the number of open journeys.
//!
//! Run: `cargo bench -p tacet-bench --bench open_journeys`

use std::sync::Arc;

use tacet_bench::{env_or, rss_bytes};
use tacet_core::event::fingerprint_by_id;
use tacet_core::outcome::OutcomeSink;
use tacet_core::{AttrCow, Catalog, Config, Event, OutcomeRecord, TraceKey};
use tacet_correlate::Shard;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Discard(u64);

impl OutcomeSink for Discard {
    fn emit(&mut self, _: &OutcomeRecord<'_>) {
        self.0 += 1;
    }
}

fn main() {
    let open: u64 = env_or("TACET_BENCH_OPEN", 5_000_000);
    let config = Config::embedded_default();
    let catalog = Arc::new(Catalog::new(&config).unwrap());
    let start = catalog.lookup("transfer.requested").unwrap();
    let ack = catalog.lookup("transfer.accepted").unwrap();
    let slots: Vec<_> = catalog.attribute_pointers().iter().map(|p| p.to_string()).collect();
    let slot = |p: &str| slots.iter().position(|s| s == p).unwrap() as u16;
    let (amount, currency, customer, channel, region) = (
        slot("/amount"),
        slot("/currency"),
        slot("/customer_id"),
        slot("/channel"),
        slot("/region"),
    );

    let before = rss_bytes();
    let mut shard = Shard::new(catalog.clone(), usize::MAX, Discard(0));
    let t0: i64 = 1_795_334_400_000;
    let mut customer_id = String::new();
    for i in 0..open {
        // 5M journeys inside 50 s of event time: every deadline (2 min) is ahead.
        let time = t0 + (i * 50_000 / open) as i64;
        let trace = TraceKey {
            hi: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            lo: i ^ 0x5555_5555,
        };
        customer_id.clear();
        customer_id.push_str("c-");
        customer_id.push_str(&(10_000 + i % 90_000).to_string());
        let attrs = [
            (amount, AttrCow::Num(250.0 + (i % 1000) as f64)),
            (currency, AttrCow::Str("EUR".into())),
            (customer, AttrCow::Str(customer_id.as_str().into())),
            (channel, AttrCow::Str("mobile".into())),
            (region, AttrCow::Str("eu-west".into())),
        ];
        let mut event = Event {
            trace,
            trace_text: None,
            time,
            name: start,
            ok: true,
            fingerprint: fingerprint_by_id(&i.to_le_bytes()),
            service: "mobile-bff",
            attrs: &attrs,
        };
        shard.apply(&event);
        event.name = ack;
        event.time += 300;
        event.fingerprint ^= 1;
        event.service = "payments-api";
        event.attrs = &[];
        shard.apply(&event);
        if i % 10_000 == 0 {
            shard.advance(time - 30_000);
        }
    }
    let after = rss_bytes();
    let stats = shard.stats();
    assert_eq!(stats.open, open, "every journey is still open");
    assert_eq!(shard.sink_mut().0, 0, "none decided");
    let per = (after - before) as f64 / open as f64;
    println!(
        "open-journey memory ({} open journeys, start + ack with 5 attributes each, one shard)",
        stats.open
    );
    println!(
        "  resident memory growth: {:.1} MiB",
        (after - before) as f64 / (1 << 20) as f64
    );
    println!("  per open journey:       {per:.1} bytes");
    println!(
        "  engine's own estimate:  {:.1} bytes",
        shard.approx_state_bytes() as f64 / open as f64
    );
}
