//! Hand-written WGSL for the hot paths, each beside the plain-Burn reference it is tested against.
//!
//! [`KernelPath`] picks the path for a run (`train.kernels`). The WGSL kernels run on any wgpu
//! device (Vulkan, Metal, DX12, the browser); on Flex only the reference exists. Every kernel is
//! one file in `shaders/`, launched from one Rust file here:
//!
//! | shader | launcher | reference |
//! |---|---|---|
//! | `norm_pix_loss.wgsl`, `norm_pix_loss_backward.wgsl` | [`norm_pix`] | [`norm_pix::reference`]: patchify, `var_mean`, squared error |
//! | `patch_gather.wgsl` | [`patch_gather`] | [`patch_gather::reference`]: patchify, then `select` |
//! | `attention.wgsl`, `attention_backward_dq.wgsl`, `attention_backward_dkdv.wgsl` | [`attention`] | [`attention::reference`]: softmax(q·kᵀ)·v |

/// Memory-efficient (online-softmax) attention, forward and backward.
pub mod attention;
/// The autodiff side of the custom ops: hand-written backward passes.
mod autodiff;
/// Masked norm-pix loss straight from the image, forward and backward.
pub mod norm_pix;
/// The backend extension trait every kernel is an operation of.
pub mod ops;
/// Patchify and gather the visible patches in one pass.
pub mod patch_gather;
/// Templated WGSL sources and their launch.
mod source;

use serde::{Deserialize, Serialize};

pub use ops::SaplingKernels;

/// Which implementation of the hot paths a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelPath {
    /// burn's generic kernels composed as in the model code: the reference.
    #[default]
    Reference,
    /// sapling's WGSL kernels (wgpu devices only).
    Wgsl,
}

impl KernelPath {
    /// The lowercase name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Reference => "reference",
            KernelPath::Wgsl => "wgsl",
        }
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
            "reference" => Ok(KernelPath::Reference),
            "wgsl" => Ok(KernelPath::Wgsl),
            other => Err(format!(
                "unknown kernel path `{other}`: use `reference` or `wgsl`"
            )),
        }
    }
}
