//! One binary for every x86-64 CPU, with the wide loops where the CPU has them: a kernel's
//! inner loop is written once, generic over `const F: bool` (whether its multiply-adds may be
//! fused), and [`wide_or_plain!`] compiles it twice, for the baseline (SSE2, 4 lanes, no FMA)
//! and for AVX2 + FMA (8 lanes, fused multiply-adds), choosing at run time. Elsewhere there is
//! one copy: fused on aarch64 (NEON and FMA are baseline), unfused on wasm32 and 32-bit x86.
//! Loops whose sums run in [`super::lanes`] and that do not fuse give the same bits in both
//! copies; loops that fuse round differently (each copy is still deterministic).

/// Whether the plain build has FMA: always on aarch64, never on baseline x86-64.
pub(super) const FUSED_BASELINE: bool = cfg!(any(target_arch = "aarch64", target_feature = "fma"));

/// Whether this CPU takes the AVX2 + FMA copies (the check is cached by std). Elsewhere only
/// the tests ask.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) fn wide() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `fn name(args) = body;` declares `name`, which runs `body::<true>` compiled for AVX2 + FMA
/// where [`wide`] says so, else `body::<FUSED_BASELINE>` compiled for the baseline. `body` and
/// everything it calls (`lanes`, GELU's `madd` and `exp`) must be `#[inline(always)]`, so that
/// all of it is compiled for each copy's features. The declared function returns `()` and takes
/// no generics or named lifetimes (elided ones are fine).
macro_rules! wide_or_plain {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) = $body:ident;) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                /// # Safety
                /// The CPU must have AVX2 and FMA.
                #[target_feature(enable = "avx2,fma")]
                unsafe fn wide_copy($($arg: $ty),*) {
                    $body::<true>($($arg),*)
                }
                if $crate::kernels::cpu::simd::wide() {
                    // SAFETY: `wide` checked that the CPU has AVX2 and FMA.
                    return unsafe { wide_copy($($arg),*) };
                }
            }
            $body::<{ $crate::kernels::cpu::simd::FUSED_BASELINE }>($($arg),*)
        }
    };
}
pub(super) use wide_or_plain;
