//! A chunked slab: stable `u32` slots, no doubling copy of the whole state
//! when it grows (a `Vec` would briefly need twice the memory of millions of
//! journeys, and keep up to half of it unused afterwards).

/// Slots per chunk. 16,384 of the 128-byte open-journey entries are 2 MiB:
/// large enough that growing the slab is rare, small enough that a quiet
/// shard holds little.
const CHUNK: usize = 16 * 1024;

pub(crate) trait Vacant: Default {
    fn is_vacant(&self) -> bool;
}

pub(crate) struct Slab<T> {
    chunks: Vec<Vec<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T: Vacant> Slab<T> {
    pub(crate) fn new() -> Self {
        Self {
            chunks: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    /// A vacant slot, to be filled by the caller (it keeps the entry's own
    /// generation counter, which is why slots are not reset here).
    pub(crate) fn alloc(&mut self) -> u32 {
        self.len += 1;
        if let Some(slot) = self.free.pop() {
            return slot;
        }
        match self.chunks.last() {
            // The first chunk grows by doubling: a shard with few journeys
            // (one per partition, many of them quiet) would otherwise hold
            // a whole 2 MiB chunk from its first journey on.
            None => self.chunks.push(Vec::new()),
            // Past the first, a slab is large: each chunk is made whole,
            // one allocation, no doubling copies.
            Some(c) if c.len() == CHUNK => self.chunks.push(Vec::with_capacity(CHUNK)),
            Some(_) => {}
        }
        // Every chunk but the last is full.
        let total = (self.chunks.len() - 1) * CHUNK + self.chunks.last().map_or(0, Vec::len);
        self.chunks.last_mut().expect("chunk exists").push(T::default());
        total as u32
    }

    pub(crate) fn release(&mut self, slot: u32) {
        debug_assert!(self.get(slot).is_vacant());
        self.len -= 1;
        self.free.push(slot);
    }

    #[inline]
    pub(crate) fn get(&self, slot: u32) -> &T {
        let s = slot as usize;
        &self.chunks[s / CHUNK][s % CHUNK]
    }

    /// `get`, for a slot number that may not be one of this slab's.
    #[inline]
    pub(crate) fn try_get(&self, slot: u32) -> Option<&T> {
        let s = slot as usize;
        self.chunks.get(s / CHUNK)?.get(s % CHUNK)
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, slot: u32) -> &mut T {
        let s = slot as usize;
        &mut self.chunks[s / CHUNK][s % CHUNK]
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten().filter(|t| !t.is_vacant())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry that remembers the slot it was given (0 = vacant).
    #[derive(Default)]
    struct Tagged(u32);

    impl Vacant for Tagged {
        fn is_vacant(&self) -> bool {
            self.0 == 0
        }
    }

    /// Against the model "a vector of slots and a free list": fresh slots
    /// are numbered in order across chunk boundaries, freed ones come back
    /// last-freed first, and each slot reads back what was written to it.
    /// A small slab reserves no whole chunk.
    #[test]
    fn slots_are_numbered_in_order_across_chunks_and_reused() {
        let mut slab = Slab::<Tagged>::new();
        for _ in 0..10 {
            slab.alloc();
        }
        // A small slab holds room for about what it has, not a chunk.
        assert!(slab.chunks[0].capacity() < 64);
        slab = Slab::new();
        let n = 2 * CHUNK as u32 + 5;
        for expected in 0..n {
            let slot = slab.alloc();
            assert_eq!(slot, expected);
            slab.get_mut(slot).0 = slot + 1;
        }
        assert_eq!(slab.len(), n as usize);
        for slot in [7, CHUNK as u32, n - 1] {
            assert_eq!(slab.get(slot).0, slot + 1);
            slab.get_mut(slot).0 = 0;
            slab.release(slot);
        }
        assert_eq!(slab.len(), n as usize - 3);
        assert_eq!(slab.iter().count(), n as usize - 3);
        assert_eq!([slab.alloc(), slab.alloc(), slab.alloc()], [n - 1, CHUNK as u32, 7]);
        // With the free list empty, numbering goes on where it stopped.
        assert_eq!(slab.alloc(), n);
        assert!(slab.try_get(n).is_some());
        assert!(slab.try_get(n + 1).is_none());
        assert!(slab.try_get(u32::MAX).is_none());
    }
}
