//! Cache hints for the hot paths: ask the CPU to start loading memory that
//! will be read soon, so that its miss overlaps other work. Hints only:
//! nothing a program computes depends on them.

/// Starts loading the cache line holding `at` (any address; a prefetch
/// never faults).
#[inline]
pub fn prefetch_line(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: prefetching never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// Starts loading every cache line of `items`.
#[inline]
pub fn prefetch_slice<T>(items: &[T]) {
    let start: *const u8 = items.as_ptr().cast();
    let (first, count) = lines(start as usize, std::mem::size_of_val(items));
    let mut line = start.wrapping_sub(start as usize - first);
    for _ in 0..count {
        prefetch_line(line);
        line = line.wrapping_add(LINE);
    }
}

const LINE: usize = 64;

/// The first 64-byte line of `start..start+len` and how many lines it
/// spans: a slice that starts late in a line touches one line more than
/// `len / 64` rounded up.
#[inline]
fn lines(start: usize, len: usize) -> (usize, usize) {
    let first = start & !(LINE - 1);
    let count = if len == 0 {
        0
    } else {
        (start + len - 1 - first) / LINE + 1
    };
    (first, count)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::lines;

    proptest! {
        /// The prefetched lines are exactly the lines the slice's bytes are in.
        #[test]
        fn every_line_of_a_slice_is_prefetched_once(start in 0usize..4096, len in 0usize..600) {
            let (first, count) = lines(start, len);
            let prefetched: Vec<usize> = (0..count).map(|i| first / 64 + i).collect();
            let mut touched: Vec<usize> = (start..start + len).map(|b| b / 64).collect();
            touched.dedup();
            prop_assert_eq!(prefetched, touched);
        }
    }
}
