//! Hash flooding: trace ids chosen to collide in the trace index.
//!
//! A canonical W3C trace id is its own 128-bit value, so a producer chooses
//! the key. Under the index's old hash (`mix(lo ^ mix(hi ^ SEED))` with a
//! fixed, public seed, and `mix` invertible) `TACET_BENCH_IDS` ids (default
//! 200,000) are crafted to share one 32-bit tag: one probe run, each lookup
//! walking every id before it. The same number of random ids is the
//! baseline; each id gets a start and an ack in one shard. With the
//! per-process key the crafted ids must run within 2x of the random ones.
//!
//! Run: `cargo bench -p tacet-bench --bench hash_flood`

use std::sync::Arc;
use std::time::{Duration, Instant};

use tacet_bench::env_or;
use tacet_core::event::{fingerprint_by_id, mix};
use tacet_core::outcome::OutcomeSink;
use tacet_core::{Catalog, Config, Event, OutcomeRecord, TraceKey};
use tacet_correlate::Shard;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The trace index's fixed seed before it was keyed per process.
const OLD_TABLE_SEED: u64 = 0xc2b2_ae3d_27d4_eb4f;

struct Discard;

impl OutcomeSink for Discard {
    fn emit(&mut self, _: &OutcomeRecord<'_>) {}
}

/// The inverse of `x ^ (x >> s)`.
fn unshift(y: u64, s: u32) -> u64 {
    let mut x = y;
    for _ in 0..(64 / s + 1) {
        x = y ^ (x >> s);
    }
    x
}

/// The inverse of an odd multiplier modulo 2^64 (Newton's iteration).
fn inverse(c: u64) -> u64 {
    let mut inv = c;
    for _ in 0..6 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(c.wrapping_mul(inv)));
    }
    inv
}

/// The inverse of [`mix`], splitmix64's finaliser.
fn unmix(h: u64) -> u64 {
    let x = unshift(h, 31);
    let x = x.wrapping_mul(inverse(0x94d0_49bb_1331_11eb));
    let x = unshift(x, 27);
    let x = x.wrapping_mul(inverse(0xbf58_476d_1ce4_e5b9));
    unshift(x, 30)
}

/// `n` keys whose old table hash is `(TAG << 32) | i`: one tag, one home bucket.
fn crafted(n: u64) -> Vec<TraceKey> {
    const TAG: u64 = 0x5eed_f100;
    (0..n)
        .map(|i| {
            let hi = 0x00f1_00d0_0000_0000;
            let lo = unmix((TAG << 32) | i) ^ mix(hi ^ OLD_TABLE_SEED);
            let key = TraceKey { hi, lo };
            debug_assert_eq!(mix(key.lo ^ mix(key.hi ^ OLD_TABLE_SEED)) >> 32, TAG);
            key
        })
        .collect()
}

fn random(n: u64) -> Vec<TraceKey> {
    (0..n)
        .map(|i| TraceKey {
            hi: mix(i ^ 0x1234_5678),
            lo: mix(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        })
        .collect()
}

/// Opens and acks one journey per key in one shard; the time it took.
fn run(catalog: &Arc<Catalog>, keys: &[TraceKey]) -> Duration {
    let start = catalog.lookup("transfer.requested").unwrap();
    let ack = catalog.lookup("transfer.accepted").unwrap();
    let mut shard = Shard::new(catalog.clone(), usize::MAX, Discard);
    let t0: i64 = 1_795_334_400_000;
    let began = Instant::now();
    for (i, &trace) in keys.iter().enumerate() {
        let mut event = Event {
            trace,
            trace_text: None,
            time: t0 + i as i64 / 10,
            name: start,
            ok: true,
            fingerprint: fingerprint_by_id(&(i as u64).to_le_bytes()),
            service: "mobile-bff",
            attrs: &[],
        };
        shard.apply(&event);
        event.name = ack;
        event.time += 300;
        event.fingerprint ^= 1;
        shard.apply(&event);
    }
    let took = began.elapsed();
    assert_eq!(shard.stats().open, keys.len() as u64, "every journey is open");
    took
}

fn main() {
    let n: u64 = env_or("TACET_BENCH_IDS", 200_000);
    let rounds: usize = env_or("TACET_BENCH_RUNS", 5);
    let catalog = Arc::new(Catalog::new(&Config::embedded_default()).unwrap());
    let (crafted, random) = (crafted(n), random(n));
    let old_tags: std::collections::BTreeSet<u64> = crafted
        .iter()
        .map(|k| mix(k.lo ^ mix(k.hi ^ OLD_TABLE_SEED)) >> 32)
        .collect();
    assert_eq!(old_tags.len(), 1, "the crafted ids share one tag under the old hash");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.push(run(&catalog, &random));
        b.push(run(&catalog, &crafted));
    }
    a.sort();
    b.sort();
    let (ra, rb) = (a[rounds / 2], b[rounds / 2]);
    let ratio = rb.as_secs_f64() / ra.as_secs_f64();
    println!("hash flooding ({n} ids, start + ack each, one shard, median of {rounds}):");
    println!("  random ids:  {:>8.1} ms", ra.as_secs_f64() * 1e3);
    println!(
        "  crafted ids: {:>8.1} ms  ({ratio:.2}x random)",
        rb.as_secs_f64() * 1e3
    );
    assert!(ratio < 2.0, "crafted ids must run within 2x of random ones");
}
