//! The open traces' index: trace hash → slab slot, by open addressing with
//! linear probing over one flat array of 8-byte buckets.
//!
//! It replaced a hashbrown table, which keeps control bytes and entries
//! apart (a lookup was two dependent cache misses before the slab entry's
//! own) and keeps its layout private, so the next event's bucket could not
//! be loaded early. Here a bucket's address follows from the hash alone:
//! the correlator prefetches it two events ahead and the slab entry one
//! ahead (see [`crate::Shard::prefetch_index`]).
//!
//! A bucket holds the hash's high 32 bits (the tag) and the slot plus one;
//! zero is empty. The tag also picks the home bucket, so a bucket knows its
//! home without its key, which deletion by backward shift needs. Two keys
//! share a tag one time in four billion, so a lookup almost never reads a
//! slab entry that is not the one it wants.

/// Below this load the index doubles; linear probing stays within a cache
/// line or two.
const MAX_LOAD_NUM: usize = 3;
const MAX_LOAD_DEN: usize = 4;
const MIN_BUCKETS: usize = 16;

#[derive(Default)]
pub(crate) struct TraceIndex {
    /// `tag << 32 | (slot + 1)`, or 0. Empty until the first insert; then a
    /// power of two long.
    buckets: Vec<u64>,
    len: usize,
}

#[inline]
fn tag(hash: u64) -> u32 {
    (hash >> 32) as u32
}

#[inline]
fn pack(tag: u32, slot: u32) -> u64 {
    u64::from(tag) << 32 | (u64::from(slot) + 1)
}

impl TraceIndex {
    #[inline]
    fn home(&self, tag: u32) -> usize {
        tag as usize & (self.buckets.len() - 1)
    }

    /// Bytes allocated, for memory reports.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<u64>()
    }

    /// The first slot with `hash`'s tag that `is_key` accepts.
    #[inline]
    pub(crate) fn find(&self, hash: u64, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.buckets.is_empty() {
            return None;
        }
        let tag = tag(hash);
        let mask = self.buckets.len() - 1;
        let mut i = self.home(tag);
        loop {
            let bucket = self.buckets[i];
            if bucket == 0 {
                return None;
            }
            if (bucket >> 32) as u32 == tag {
                // Never 0 here: an occupied bucket holds slot + 1.
                let slot = (bucket as u32).wrapping_sub(1);
                if is_key(slot) {
                    return Some(slot);
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `slot` under `hash`; the caller knows its key is not in yet.
    pub(crate) fn insert(&mut self, hash: u64, slot: u32) {
        if (self.len + 1) * MAX_LOAD_DEN > self.buckets.len() * MAX_LOAD_NUM {
            self.grow();
        }
        self.place(pack(tag(hash), slot));
        self.len += 1;
    }

    /// Removes `slot`, indexed under `hash`. Returns whether it was there.
    pub(crate) fn remove(&mut self, hash: u64, slot: u32) -> bool {
        if self.buckets.is_empty() {
            return false;
        }
        let wanted = pack(tag(hash), slot);
        let mask = self.buckets.len() - 1;
        let mut hole = self.home(tag(hash));
        loop {
            match self.buckets[hole] {
                0 => return false,
                b if b == wanted => break,
                _ => hole = (hole + 1) & mask,
            }
        }
        // Backward shift: pull later members of the run into the hole when
        // their home is not after it, so no lookup ever stops early at it.
        let mut next = hole;
        loop {
            next = (next + 1) & mask;
            let bucket = self.buckets[next];
            if bucket == 0 {
                break;
            }
            let home = self.home((bucket >> 32) as u32);
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.buckets[hole] = bucket;
                hole = next;
            }
        }
        self.buckets[hole] = 0;
        self.len -= 1;
        true
    }

    /// Starts loading the bucket where a lookup of `hash` begins. Only a hint.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        if !self.buckets.is_empty() {
            tacet_core::hint::prefetch_line(std::ptr::from_ref(&self.buckets[self.home(tag(hash))]).cast());
        }
    }

    fn place(&mut self, bucket: u64) {
        let mask = self.buckets.len() - 1;
        let mut i = self.home((bucket >> 32) as u32);
        while self.buckets[i] != 0 {
            i = (i + 1) & mask;
        }
        self.buckets[i] = bucket;
    }

    fn grow(&mut self) {
        let size = (self.buckets.len() * 2).max(MIN_BUCKETS);
        let old = std::mem::replace(&mut self.buckets, vec![0; size]);
        for bucket in old.into_iter().filter(|&b| b != 0) {
            self.place(bucket);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16),
        Remove(u16),
    }

    /// A hash that collides on purpose: few distinct tags, so runs are long,
    /// wrap around the end of the array, and share tags.
    fn weak_hash(key: u16) -> u64 {
        u64::from(key % 13) << 32 | u64::from(key)
    }

    proptest! {
        /// The index against a HashMap, through inserts, removals (with
        /// their backward shifts) and growth.
        #[test]
        fn agrees_with_a_hash_map(ops in prop::collection::vec(
            prop_oneof![
                3 => (0u16..200).prop_map(Op::Insert),
                2 => (0u16..200).prop_map(Op::Remove),
            ],
            0..400,
        )) {
            let mut index = TraceIndex::default();
            // The slab: slot → key, and the model: key → slot.
            let mut keys: Vec<u16> = Vec::new();
            let mut model: HashMap<u16, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k) if !model.contains_key(&k) => {
                        let slot = keys.len() as u32;
                        keys.push(k);
                        index.insert(weak_hash(k), slot);
                        model.insert(k, slot);
                    }
                    Op::Insert(_) => {}
                    Op::Remove(k) => {
                        let removed = match model.remove(&k) {
                            Some(slot) => index.remove(weak_hash(k), slot),
                            None => !index.remove(weak_hash(k), u32::MAX - 1),
                        };
                        prop_assert!(removed);
                    }
                }
                // Every key, present or not, finds what the model has.
                for k in 0u16..200 {
                    let found = index.find(weak_hash(k), |s| keys[s as usize] == k);
                    prop_assert_eq!(found, model.get(&k).copied(), "key {}", k);
                }
                prop_assert_eq!(index.len, model.len());
            }
        }
    }
}
