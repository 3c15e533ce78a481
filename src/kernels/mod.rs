//! Hand-written kernels for the hot paths (WGSL for wgpu, Rust for the CPU), each beside the
//! plain-Burn reference it is tested against.
//!
//! [`KernelPath`] picks the path for a run (`train.kernels`). The WGSL kernels run on any wgpu
//! device (Vulkan, Metal, DX12, the browser); the CPU kernels ([`cpu_ops`]) run on Flex. Every
//! WGSL kernel is one file in `shaders/`, launched from one Rust file here:
//!
//! | shader | launcher | reference |
//! |---|---|---|
//! | `norm_pix_loss.wgsl`, `norm_pix_loss_backward.wgsl` | [`norm_pix`] | [`norm_pix::reference`]: patchify, `var_mean`, squared error |
//! | `patch_gather.wgsl` | [`patch_gather`] | [`patch_gather::reference`]: patchify, then `select` |
//! | `attention.wgsl`, `attention_backward_dq.wgsl`, `attention_backward_dkdv.wgsl` | [`attention`] | [`attention::reference`]: softmax(q·kᵀ)·v |
//!
//! The CPU kernels are Rust, beside their reference in the same file:
//!
//! | kernel | reference |
//! |---|---|
//! | [`gelu::forward`], [`gelu::backward`] (erf GELU, vectorised, on every core) | [`gelu::reference`]: burn's `gelu` |
//! | [`layer_norm::forward`], [`layer_norm::backward`] (one pass per row) | [`layer_norm::reference`]: burn's `layer_norm` |
//! | [`qkv_attention::forward`], [`qkv_attention::backward`] (per batch and head, no copies) | [`qkv_attention::reference`]: split heads, softmax(q·kᵀ)·v, merge |
//! | [`adamw::update`] (one in-place pass per parameter) | [`adamw::reference`]: burn's `AdamW` |
//! | [`linear::forward`], [`linear::backward_input`], [`linear::backward_params`] (one GEMM each) | [`linear::reference`]: burn's `linear` |

/// One fused AdamW update per parameter tensor on the CPU.
pub mod adamw;
/// Memory-efficient (online-softmax) attention, forward and backward.
pub mod attention;
/// The autodiff side of the custom ops: hand-written backward passes.
mod autodiff;
/// The backend extension trait of the CPU (Flex) kernels.
pub mod cpu_ops;
/// Exact GELU on all CPU cores, forward and backward.
pub mod gelu;
/// Layer norm on the CPU, one pass per row, forward and backward.
pub mod layer_norm;
/// `x·W + b` as single 2-D products on the CPU, forward and backward.
pub mod linear;
/// Masked norm-pix loss straight from the image, forward and backward.
pub mod norm_pix;
/// The backend extension trait every kernel is an operation of.
pub mod ops;
/// Patchify and gather the visible patches in one pass.
pub mod patch_gather;
/// Multi-head attention from the packed qkv rows on the CPU, forward and backward.
pub mod qkv_attention;
/// Templated WGSL sources and their launch.
mod source;

use serde::{Deserialize, Serialize};

pub use ops::SaplingKernels;

/// Which implementation of the hot paths a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelPath {
    /// What was measured to pay off on the run's device: sapling's CPU kernels on Flex, burn's
    /// ops on wgpu (there burn fuses the element-wise ops itself, and the WGSL kernels saved
    /// memory but no time on the adapters measured so far).
    #[default]
    Auto,
    /// burn's generic ops composed as in the model code, on every device: the reference.
    Reference,
    /// sapling's WGSL kernels (wgpu devices only).
    Wgsl,
    /// sapling's Rust kernels for burn's Flex CPU backend (Flex only).
    Cpu,
}

impl KernelPath {
    /// The lowercase name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Auto => "auto",
            KernelPath::Reference => "reference",
            KernelPath::Wgsl => "wgsl",
            KernelPath::Cpu => "cpu",
        }
    }

    /// The concrete path on `device`: `auto` becomes `cpu` on Flex and `reference` elsewhere.
    pub fn resolve(self, device: &burn::tensor::Device) -> KernelPath {
        match self {
            KernelPath::Auto if *device == burn::tensor::Device::flex() => KernelPath::Cpu,
            KernelPath::Auto => KernelPath::Reference,
            other => other,
        }
    }

    /// Whether the WGSL kernels (flash attention, patch gather, fused loss) run.
    pub fn wgsl(self) -> bool {
        self == KernelPath::Wgsl
    }
}

impl std::fmt::Display for KernelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KernelPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(KernelPath::Auto),
            "reference" => Ok(KernelPath::Reference),
            "wgsl" => Ok(KernelPath::Wgsl),
            "cpu" => Ok(KernelPath::Cpu),
            other => Err(format!(
                "unknown kernel path `{other}`: use `auto`, `reference`, `wgsl` or `cpu`"
            )),
        }
    }
}
