//! A shard's state as bytes, and back: open traces, their timers,
//! tombstones, silent failures awaiting correction, and the watermark.
//!
//! Used by Kafka checkpoints: a restored shard decides every journey exactly
//! as the original would have from that point on. The format is private to
//! this crate (little-endian, versioned); callers wrap it with their own
//! header and checksum. Restoring validates every id and length, so a
//! truncated or foreign snapshot is an error, never a panic.

use std::sync::Arc;

use tacet_core::outcome::OutcomeSink;
use tacet_core::{Catalog, TraceKey};

use crate::attrs::Blob;
use crate::shard::{OpenTrace, PENDING, Seen, Shard, SilentTomb};

const MAGIC: &[u8; 4] = b"TSH1";

/// Why a snapshot could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a shard snapshot (bad magic or version)")]
    Format,
    #[error("shard snapshot truncated")]
    Truncated,
    #[error("shard snapshot refers to {0} that the current config does not define")]
    Foreign(&'static str),
}

pub(crate) struct Enc<'a>(pub(crate) &'a mut Vec<u8>);

impl Enc<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("fewer than 4G items per shard"));
    }
    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.0.extend_from_slice(b);
    }
    fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.i64(v);
            }
            None => self.u8(0),
        }
    }
    fn key(&mut self, k: TraceKey) {
        self.u64(k.hi);
        self.u64(k.lo);
    }
    fn trace(&mut self, t: &OpenTrace) {
        self.key(t.key);
        self.u16(t.journey);
        self.u16(t.duplicates);
        self.i64(t.timer_at);
        self.bytes(t.blob.as_bytes().unwrap_or(&[]));
        self.len(t.events.len());
        for e in &t.events {
            self.u64(e.fingerprint);
            self.i64(e.time);
            self.u32(e.service);
            self.u16(e.name);
            self.u8(e.ok as u8);
        }
    }
}

pub(crate) struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.0.len() < n {
            return Err(SnapshotError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, SnapshotError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn i64(&mut self) -> Result<i64, SnapshotError> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    /// A count of items each at least `min_bytes` long, checked against what is left.
    fn len(&mut self, min_bytes: usize) -> Result<usize, SnapshotError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_bytes) > self.0.len() {
            return Err(SnapshotError::Truncated);
        }
        Ok(n)
    }
    fn bytes(&mut self) -> Result<&'a [u8], SnapshotError> {
        let n = self.len(1)?;
        self.take(n)
    }
    fn opt_i64(&mut self) -> Result<Option<i64>, SnapshotError> {
        Ok(match self.u8()? {
            0 => None,
            _ => Some(self.i64()?),
        })
    }
    fn key(&mut self) -> Result<TraceKey, SnapshotError> {
        Ok(TraceKey {
            hi: self.u64()?,
            lo: self.u64()?,
        })
    }
    fn trace(&mut self, catalog: &Catalog, services: usize) -> Result<OpenTrace, SnapshotError> {
        let key = self.key()?;
        let journey = self.u16()?;
        if journey != PENDING && journey as usize >= catalog.journeys().len() {
            return Err(SnapshotError::Foreign("a journey"));
        }
        let duplicates = self.u16()?;
        let timer_at = self.i64()?;
        let blob = Blob::from_bytes(self.bytes()?).ok_or(SnapshotError::Format)?;
        let n = self.len(23)?;
        let mut trace = OpenTrace {
            key,
            blob,
            timer_at,
            journey,
            duplicates,
            ..Default::default()
        };
        for _ in 0..n {
            let seen = Seen {
                fingerprint: self.u64()?,
                time: self.i64()?,
                service: self.u32()?,
                name: self.u16()?,
                ok: self.u8()? != 0,
            };
            if seen.service as usize >= services {
                return Err(SnapshotError::Format);
            }
            if seen.name as usize >= catalog.name_count() {
                return Err(SnapshotError::Foreign("an event name"));
            }
            trace.events.push(seen);
        }
        Ok(trace)
    }
}

impl<S: OutcomeSink> Shard<S> {
    /// Appends the shard's state to `out`. Counters are not included: they
    /// describe one process's work, not the journeys' state.
    pub fn write_snapshot(&self, out: &mut Vec<u8>) {
        let mut e = Enc(out);
        e.0.extend_from_slice(MAGIC);
        e.i64(self.watermark);
        e.len(self.services.names.len());
        for name in &self.services.names {
            e.bytes(name.as_bytes());
        }
        e.len(self.slab.len());
        for t in self.slab.iter() {
            e.trace(t);
        }
        e.len(self.tombs.len());
        for tomb in self.tombs.iter() {
            e.key(tomb.key);
            e.i64(tomb.expires);
        }
        e.len(self.silent.len());
        for s in self.silent.values() {
            e.trace(&s.trace);
            e.u16(s.journey);
            e.opt_i64(s.started_at);
            e.i64(s.acked_at);
            e.i64(s.deadline_at);
            e.u32(s.missing);
        }
    }

    /// A shard with the state `bytes` (from [`Shard::write_snapshot`]) holds,
    /// deciding by `catalog` (which must be the config the snapshot was taken
    /// under: ids are checked, meaning is not) and writing to `sink`.
    pub fn restore(catalog: Arc<Catalog>, max_open: usize, sink: S, bytes: &[u8]) -> Result<Self, SnapshotError> {
        let mut d = Dec(bytes);
        if d.take(4)? != MAGIC {
            return Err(SnapshotError::Format);
        }
        let mut shard = Shard::new(catalog.clone(), max_open, sink);
        shard.watermark = d.i64()?;
        let n = d.len(4)?;
        shard.services.names.clear();
        shard.services.ids.clear();
        shard.services.bytes = 0;
        for i in 0..n {
            let name = std::str::from_utf8(d.bytes()?).map_err(|_| SnapshotError::Format)?;
            shard.services.names.push(name.into());
            if i >= 2 {
                shard.services.bytes += name.len();
                shard.services.ids.insert(name.into(), i as u32);
            }
        }
        if n < 2 {
            return Err(SnapshotError::Format);
        }
        let services = n;
        let n = d.len(40)?;
        for _ in 0..n {
            let trace = d.trace(&catalog, services)?;
            shard.insert_open(trace);
        }
        let n = d.len(24)?;
        for _ in 0..n {
            let key = d.key()?;
            let expires = d.i64()?;
            shard.bury(key, expires);
        }
        let n = d.len(40)?;
        for _ in 0..n {
            let trace = d.trace(&catalog, services)?;
            let journey = d.u16()?;
            if journey as usize >= catalog.journeys().len() {
                return Err(SnapshotError::Foreign("a journey"));
            }
            let silent = SilentTomb {
                journey,
                started_at: d.opt_i64()?,
                acked_at: d.i64()?,
                deadline_at: d.i64()?,
                missing: d.u32()?,
                trace,
            };
            shard.keep_silent(silent);
        }
        if !d.0.is_empty() {
            return Err(SnapshotError::Format);
        }
        Ok(shard)
    }
}
