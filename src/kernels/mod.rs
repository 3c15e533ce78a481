//! Hand-written kernels for the hot paths: WGSL for wgpu devices ([`wgsl`]) and Rust for burn's
//! Flex CPU backend ([`cpu`]).
//!
//! Each is an operation of a burn backend extension with a hand-written backward, so it
//! composes with burn tensors and autodiff. Nothing here decides when a kernel runs: the ops
//! layer (`ops`) has one function per operation whose reference arm is plain burn maths
//! and whose other arms call these, and the parity tests (`tests/suite/kernels.rs`,
//! `tests/suite/cpu_kernels.rs`) hold every kernel against that reference.
//!
//! | operation | WGSL (wgpu) | CPU (Flex) |
//! |---|---|---|
//! | patch gather | `patch_gather.wgsl` ([`wgsl::patch_gather`]) | [`cpu::patch_gather`] (rows straight from the images) |
//! | per-patch (norm-pix) loss | `norm_pix_loss.wgsl`, `norm_pix_loss_backward.wgsl` ([`wgsl::norm_pix_loss`]) | [`cpu::patch_loss`] (statistics in cache, recomputed for the backward) |
//! | attention | `attention.wgsl`, `attention_backward_dq.wgsl`, `attention_backward_dkdv.wgsl` ([`wgsl::flash_attention`]) | [`cpu::attention`] (from packed qkv, per batch and head) |
//! | linear | — | [`cpu::linear`] (one GEMM over all rows) |
//! | layer norm | — | [`cpu::layer_norm`] (one pass per row) |
//! | GELU | — | [`cpu::gelu`] (vectorised erf, every core) |
//! | AdamW | — | [`cpu::adamw`] (one in-place pass per tensor, the clip factor folded in) |
//! | gradient norm (`Σ x²`) | `squared_sums.wgsl` ([`wgsl::squared_sum`]) | [`cpu::squared_sum`] (fixed blocks on every core) |

/// Rust kernels for burn's Flex CPU backend, forward and backward (natively only: a page
/// trains on WebGPU, so the browser build leaves Flex and gemm out).
#[cfg(not(target_family = "wasm"))]
pub mod cpu;
/// Kernels on host slices that need no backend: AdamW's update, task sizes, a transpose.
pub mod host;
/// WGSL kernels for wgpu devices (Vulkan, Metal, DX12, the browser), forward and backward.
pub mod wgsl;

use burn::tensor::Device;

/// Whether `device` is burn's Flex CPU backend (never in a browser build, which has no Flex).
pub fn is_flex(device: &Device) -> bool {
    #[cfg(not(target_family = "wasm"))]
    {
        *device == Device::flex()
    }
    #[cfg(target_family = "wasm")]
    {
        let _ = device;
        false
    }
}
