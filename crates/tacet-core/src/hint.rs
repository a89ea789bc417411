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
    const LINE: usize = 64;
    let start: *const u8 = items.as_ptr().cast();
    let len = std::mem::size_of_val(items);
    let mut offset = 0;
    while offset < len {
        prefetch_line(start.wrapping_add(offset));
        offset += LINE;
    }
}
