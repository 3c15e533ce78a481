//! The allocator the `sapling` binary installs (mimalloc), and what the batch planner asks of it.
//!
//! Why: a training step frees and re-allocates the same activation sizes every step. glibc's
//! allocator handed the large ones back to the kernel, so each step faulted them in and zeroed
//! them again (≈ 20 % of the calling thread on Flex, more on vit-b). mimalloc keeps freed memory
//! for reuse; [`keep_freed_memory`] stretches its purge delay past the longest step, and
//! [`release_free_memory`] purges on demand so a trial step's peak measurement starts clean.
//! Without the `mimalloc` feature (a cross check from another platform) the system's allocator
//! stays, and only glibc's free memory can be released.

#[cfg(feature = "mimalloc")]
pub use mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its header's enum; the Rust bindings do not name it).
#[cfg(feature = "mimalloc")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory is purged after this long unused (mimalloc multiplies it by 10 for its arenas,
/// so ~100 s): longer than any step, short enough to give memory back after a run's peak.
/// Not "never" (-1): then mimalloc schedules no purge at all and [`release_free_memory`] could
/// not purge either.
#[cfg(feature = "mimalloc")]
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// Call once at start-up in a binary whose global allocator is [`MiMalloc`].
#[cfg(feature = "mimalloc")]
pub fn keep_freed_memory() {
    // SAFETY: sets a plain integer option, read when mimalloc next schedules a purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

/// Hands freed memory back to the system, whichever allocator holds it (mimalloc's arenas, or
/// glibc's heap), so that the next stretch of work is measured from a clean resident size.
pub fn release_free_memory() {
    // SAFETY: mi_collect only frees memory mimalloc holds unused; a no-op if it holds none.
    #[cfg(feature = "mimalloc")]
    unsafe {
        libmimalloc_sys::mi_collect(true)
    };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim only releases free memory; it is thread-safe.
        unsafe {
            malloc_trim(0);
        }
    }
}
