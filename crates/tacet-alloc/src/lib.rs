//! tacet's global allocator: mimalloc, except that a block of [`LARGE`]
//! bytes or more gets an anonymous mapping of its own, advised into
//! transparent huge pages, and grows with `mremap` instead of a copy.
//!
//! Why: a fresh engine's state (the open-journey slab, the trace index, the
//! outcome columns, the alert feed) is a few large blocks that grow by
//! doubling, and touching their memory for the first time was about a ninth
//! of the correlator threads' time in `tacet run` — one page fault per 4 KiB
//! page, ~1.5 µs each on these machines. A huge page is one fault per
//! 2 MiB. mimalloc's own huge-page option is off (`no_thp`, see the
//! workspace's Cargo.toml): it advises whole arenas, so small blocks of many
//! size classes spread over them made every first touch zero 2 MiB that was
//! mostly never used. Here only blocks of 2 MiB and more are advised, and
//! they are used from end to end. Measured (docs/PERFORMANCE.md, 2026-12-05
//! late): the correlator threads' page faults in a Kafka benchmark run 82K
//! to 62K, replay ~3 % faster, 1.8 % more memory per open journey (a
//! block's last huge page is resident whole).
//!
//! Large mappings are off until a program asks for them with
//! [`use_large_mappings`], before its first large block: `tacet run` and
//! `tacet replay` do (through [`for_the_engine`]), `tacet sql` does not (DataFusion allocates and frees
//! large buffers per query, which mimalloc reuses; a mapping of their own
//! would be faulted in afresh each time). `TACET_HUGE_PAGES=0` keeps them
//! off everywhere: for a host where the kernel's compaction for huge pages
//! (`/sys/kernel/mm/transparent_hugepage/defrag`) stalls. Where transparent
//! huge pages are off in the kernel (`never`), the advice fails and the
//! mappings are ordinary pages.
//!
//! The same programs keep memory freed to mimalloc for [`PURGE_DELAY_MS`]
//! before it goes back to the kernel ([`delay_purging`]), not mimalloc's
//! 1 s: a correlator frees and takes again the same megabytes every file,
//! checkpoint and alert tick, and memory idle for a second between two of
//! them was returned and then faulted in afresh.

use std::alloc::{GlobalAlloc, Layout};
use std::ptr;
use std::sync::atomic::{AtomicU8, Ordering};

use mimalloc::MiMalloc;

/// Blocks from this size up get a mapping of their own: one huge page.
///
/// Not lower: blocks below it come and go (Parquet encoding, checkpoints)
/// and mimalloc reuses their memory, where a mapping of their own is
/// returned to the kernel when freed and faulted in afresh next time. With
/// 256 KiB the correlator threads of `tacet run` took more page faults than
/// with mimalloc alone (98K against 82K per benchmark run; 62K at 2 MiB).
pub const LARGE: usize = 2 << 20;

/// The page size mappings are aligned to; a block that needs more alignment
/// stays with mimalloc.
const PAGE: usize = 4096;

/// mimalloc for small blocks, huge-page mappings for large ones.
pub struct TacetAlloc;

/// Whether large blocks get mappings of their own: undecided until the
/// first large block or [`use_large_mappings`], then fixed for the life of
/// the process, so that a block is always freed the way it was allocated.
static MODE: AtomicU8 = AtomicU8::new(UNDECIDED);
const UNDECIDED: u8 = 0;
const MAPPED: u8 = 1;
const MIMALLOC: u8 = 2;

/// Gives blocks of [`LARGE`] bytes and more huge-page mappings of their own
/// from now on, unless `TACET_HUGE_PAGES=0` is set. Returns whether they
/// do: `false` also when a large block was allocated before this call (the
/// choice is made once; mimalloc keeps them then).
pub fn use_large_mappings() -> bool {
    let wanted = if std::env::var_os("TACET_HUGE_PAGES").is_some_and(|v| v == "0") {
        MIMALLOC
    } else {
        MAPPED
    };
    let _ = MODE.compare_exchange(UNDECIDED, wanted, Ordering::Relaxed, Ordering::Relaxed);
    MODE.load(Ordering::Relaxed) == MAPPED
}

/// How long memory freed to mimalloc stays with it, for reuse, before it is
/// returned to the kernel, once [`delay_purging`] ran: longer than a
/// checkpoint interval, so that what one checkpoint frees the next one
/// reuses warm. mimalloc's own default is 1 s.
///
/// Measured (docs/PERFORMANCE.md, "2026-12-05, last"; correlate bench,
/// 400,000 journeys, five interleaved rounds of 3 runs): correlator CPU
/// 876 → 853 ns per record, of which system time 58 → 29.
pub const PURGE_DELAY_MS: libc::c_long = 10_000;

/// mimalloc's option number for the purge delay (`mi_option_purge_delay`
/// in `mimalloc.h`, the same in its v2 and v3; libmimalloc-sys has no
/// constant for it).
const MI_OPTION_PURGE_DELAY: libc::c_int = 15;

unsafe extern "C" {
    fn mi_option_set(option: libc::c_int, value: libc::c_long);
    fn mi_option_get(option: libc::c_int) -> libc::c_long;
}

/// Makes mimalloc keep freed memory for [`PURGE_DELAY_MS`] before it is
/// returned to the kernel, unless `MIMALLOC_PURGE_DELAY` is set (mimalloc
/// has read that one itself). Returns the delay in force, in milliseconds
/// (-1: never returned).
pub fn delay_purging() -> libc::c_long {
    // SAFETY: mimalloc's options are plain values it reads atomically;
    // setting one at any time is allowed.
    unsafe {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        }
        mi_option_get(MI_OPTION_PURGE_DELAY)
    }
}

/// How `tacet run` and `tacet replay` allocate, and the benchmarks that
/// stand for them: [`use_large_mappings`] and [`delay_purging`]. Call it
/// first thing, before any large block.
pub fn for_the_engine() {
    use_large_mappings();
    delay_purging();
}

/// Whether large blocks are mapped; the first large block decides
/// "mimalloc" when nothing was decided before it.
#[inline]
fn mapping_large_blocks() -> bool {
    match MODE.load(Ordering::Relaxed) {
        MAPPED => true,
        MIMALLOC => false,
        _ => {
            let _ = MODE.compare_exchange(UNDECIDED, MIMALLOC, Ordering::Relaxed, Ordering::Relaxed);
            MODE.load(Ordering::Relaxed) == MAPPED
        }
    }
}

/// Whether a block of `size` bytes aligned to `align` is mapped on its own.
#[inline]
fn is_large(size: usize, align: usize) -> bool {
    size >= LARGE && align <= PAGE && mapping_large_blocks()
}

/// A large block's mapping: whole huge pages, so that the kernel places it
/// on a 2 MiB boundary and every part of it can be a huge page. (Tail pages
/// never touched cost address space, not memory.)
#[inline]
fn mapped_len(size: usize) -> usize {
    size.div_ceil(LARGE).saturating_mul(LARGE)
}

/// A fresh mapping of `len` bytes (zeroed by the kernel), or null.
unsafe fn map(len: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's
    // choosing touches no existing memory.
    unsafe {
        let p = libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return ptr::null_mut();
        }
        advise(p, len);
        p.cast()
    }
}

/// Asks for huge pages; only advice, so a failure (THP off) is ignored.
unsafe fn advise(p: *mut libc::c_void, len: usize) {
    // SAFETY: `p..p + len` is a mapping of ours.
    unsafe {
        libc::madvise(p, len, libc::MADV_HUGEPAGE);
    }
}

// SAFETY: every block comes either from mimalloc (and goes back to it) or
// from a mapping of its own; which one follows from its layout alone, and
// `GlobalAlloc` callers pass the layout the block was allocated (or last
// reallocated) with, so alloc, dealloc and realloc always agree.
unsafe impl GlobalAlloc for TacetAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size(), layout.align()) {
            // SAFETY: see `map`.
            unsafe { map(mapped_len(layout.size())) }
        } else {
            // SAFETY: forwarded as given.
            unsafe { MiMalloc.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // A fresh mapping reads as zeroes: a large block is not touched
        // until it is written. SAFETY: forwarded as given.
        unsafe {
            if is_large(layout.size(), layout.align()) {
                self.alloc(layout)
            } else {
                MiMalloc.alloc_zeroed(layout)
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if is_large(layout.size(), layout.align()) {
            // SAFETY: `block` is the start of a mapping of this length (the
            // layout is the one it was allocated with).
            unsafe {
                libc::munmap(block.cast(), mapped_len(layout.size()));
            }
        } else {
            // SAFETY: forwarded as given.
            unsafe { MiMalloc.dealloc(block, layout) }
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let was_large = is_large(layout.size(), layout.align());
        let now_large = is_large(new_size, layout.align());
        match (was_large, now_large) {
            // SAFETY: forwarded as given.
            (false, false) => unsafe { MiMalloc.realloc(block, layout, new_size) },
            (true, true) => {
                let (old_len, new_len) = (mapped_len(layout.size()), mapped_len(new_size));
                if old_len == new_len {
                    return block;
                }
                // The kernel moves the page tables, not the bytes: growing a
                // large vector copies nothing.
                // SAFETY: `block..block + old_len` is a mapping of ours;
                // MAYMOVE lets the kernel place the result anywhere free.
                unsafe {
                    // The huge-page advice is the mapping's and moves with it
                    // (a test checks): no second `madvise`.
                    let p = libc::mremap(block.cast(), old_len, new_len, libc::MREMAP_MAYMOVE);
                    if p == libc::MAP_FAILED {
                        return ptr::null_mut();
                    }
                    p.cast()
                }
            }
            // Across the threshold: a new block of the other kind and a copy.
            _ => {
                // SAFETY: `new_size` is non-zero (the caller's contract) and
                // the alignment is the block's, already valid.
                let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
                // SAFETY: a valid layout; the copy stays within both blocks;
                // the old block is freed with its own layout.
                unsafe {
                    let new_block = self.alloc(new_layout);
                    if !new_block.is_null() {
                        ptr::copy_nonoverlapping(block, new_block, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                    new_block
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One block under test: its layout and the byte it is filled with.
    struct Block {
        ptr: *mut u8,
        layout: Layout,
        fill: u8,
    }

    fn bytes(block: &Block) -> &[u8] {
        // SAFETY: `ptr` is a live block of `layout.size()` bytes, all written.
        unsafe { std::slice::from_raw_parts(block.ptr, block.layout.size()) }
    }

    /// Sizes on both sides of the threshold, and on it.
    fn size() -> impl Strategy<Value = usize> {
        prop_oneof![
            1usize..4096,
            Just(LARGE - 1),
            Just(LARGE),
            LARGE..3 * LARGE,
            Just(4 * LARGE),
        ]
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc(usize, bool),
        Realloc(usize, usize),
        Free(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (size(), any::<bool>()).prop_map(|(s, z)| Op::Alloc(s, z)),
            (any::<usize>(), size()).prop_map(|(i, s)| Op::Realloc(i, s)),
            any::<usize>().prop_map(Op::Free),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Against the model "a block keeps its bytes": every block reads
        /// back what was written, through growth, shrinking and crossings
        /// of the threshold either way; zeroed blocks read as zeroes.
        #[test]
        fn blocks_keep_their_bytes(ops in proptest::collection::vec(op(), 1..24)) {
            // Large blocks in mappings of their own (unless the environment
            // turns them off, when this checks the plain path).
            let mapped = use_large_mappings();
            prop_assert_eq!(mapped, std::env::var_os("TACET_HUGE_PAGES").is_none_or(|v| v != "0"));
            let mut live: Vec<Block> = Vec::new();
            let mut next_fill = 1u8;
            for op in ops {
                match op {
                    Op::Alloc(size, zeroed) => {
                        let layout = Layout::from_size_align(size, 8).unwrap();
                        // SAFETY: a non-zero size.
                        let ptr = unsafe {
                            if zeroed { TacetAlloc.alloc_zeroed(layout) } else { TacetAlloc.alloc(layout) }
                        };
                        prop_assert!(!ptr.is_null());
                        let block = Block { ptr, layout, fill: 0 };
                        if zeroed {
                            prop_assert!(bytes(&block).iter().all(|&b| b == 0));
                        }
                        // SAFETY: the block is `size` bytes long.
                        unsafe { ptr::write_bytes(ptr, next_fill, size) };
                        live.push(Block { fill: next_fill, ..block });
                        next_fill = next_fill.wrapping_add(1).max(1);
                    }
                    Op::Realloc(i, new_size) if !live.is_empty() => {
                        let n = live.len();
                        let block = &mut live[i % n];
                        // SAFETY: a live block with its layout, a non-zero size.
                        let ptr = unsafe { TacetAlloc.realloc(block.ptr, block.layout, new_size) };
                        prop_assert!(!ptr.is_null());
                        let kept = block.layout.size().min(new_size);
                        block.ptr = ptr;
                        block.layout = Layout::from_size_align(new_size, 8).unwrap();
                        prop_assert!(bytes(block)[..kept].iter().all(|&b| b == block.fill));
                        // SAFETY: the block is `new_size` bytes long.
                        unsafe { ptr::write_bytes(ptr, block.fill, new_size) };
                    }
                    Op::Free(i) if !live.is_empty() => {
                        let n = live.len();
                        let block = live.swap_remove(i % n);
                        prop_assert!(bytes(&block).iter().all(|&b| b == block.fill));
                        // SAFETY: a live block with its layout.
                        unsafe { TacetAlloc.dealloc(block.ptr, block.layout) };
                    }
                    Op::Realloc(..) | Op::Free(_) => {}
                }
            }
            for block in live {
                prop_assert!(bytes(&block).iter().all(|&b| b == block.fill));
                // SAFETY: a live block with its layout.
                unsafe { TacetAlloc.dealloc(block.ptr, block.layout) };
            }
        }
    }

    /// The `VmFlags` of the mapping that holds `address`, from
    /// /proc/self/smaps.
    fn vm_flags(address: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((start, end)) = range.split_once('-')
                && let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16))
            {
                inside = (start..end).contains(&address);
            } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.to_owned();
            }
        }
        panic!("no mapping holds {address:#x}");
    }

    /// A large block is a mapping advised into huge pages (`hg`), and keeps
    /// the advice when `mremap` grows or moves it.
    #[test]
    fn large_blocks_are_huge_page_mappings_through_growth() {
        if !use_large_mappings() || !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            return; // turned off here: nothing is mapped
        }
        let layout = Layout::from_size_align(LARGE, 8).unwrap();
        // SAFETY: a non-zero size; the block is written within its length
        // and freed with its last layout.
        unsafe {
            let block = TacetAlloc.alloc(layout);
            assert_eq!(block as usize % LARGE, 0, "placed on a huge-page boundary");
            assert!(vm_flags(block as usize).split_whitespace().any(|f| f == "hg"));
            let grown = TacetAlloc.realloc(block, layout, 5 * LARGE);
            ptr::write_bytes(grown, 1, 5 * LARGE);
            for offset in [0, 4 * LARGE] {
                assert!(vm_flags(grown as usize + offset).split_whitespace().any(|f| f == "hg"));
            }
            TacetAlloc.dealloc(grown, Layout::from_size_align(5 * LARGE, 8).unwrap());
        }
    }

    /// Option 15 is mimalloc's purge delay: its default is that option's
    /// 1,000 ms (v3) until `delay_purging` sets it. (The only test here that
    /// sets it.)
    #[test]
    fn delay_purging_sets_mimallocs_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // mimalloc took the user's value
        }
        // SAFETY: reading an option.
        assert_eq!(unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }, 1000);
        assert_eq!(delay_purging(), PURGE_DELAY_MS);
    }

    #[test]
    fn large_blocks_get_mappings_of_whole_huge_pages() {
        assert_eq!(mapped_len(LARGE), LARGE);
        assert_eq!(mapped_len(LARGE + 1), 2 * LARGE);
        assert!(!is_large(LARGE - 1, 8));
        assert_eq!(is_large(LARGE, 8), use_large_mappings());
        // Alignment past a page stays with mimalloc.
        assert!(!is_large(LARGE, 2 * PAGE));
    }
}
