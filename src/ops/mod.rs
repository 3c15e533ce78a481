//! The model's operations, one function each, on whichever implementation the run resolved.
//!
//! Every operation the hot path of a step runs is here: [`Ops::linear`], [`Ops::layer_norm`],
//! [`Ops::attention`], [`Ops::gelu`], [`Ops::patch_gather`], [`Ops::per_patch_loss`]. Each is
//! one `match` on [`Kernels`]: the reference arm is the plain burn maths, written inline, and
//! the other arms call sapling's kernels (`kernels::wgsl`, `kernels::cpu`). The
//! model calls these and nothing else for its heavy work, so a new kernel (or a new precision)
//! is one arm here plus the kernel's own file and its parity test against the reference arm.
//!
//! The implementation is resolved once per run ([`Kernels::resolve`]: `auto` is gone by then)
//! and handed to the model as one [`Ops`] value.

/// Images to patch sequences and back.
mod patch;

pub use patch::{patchify, unpatchify};

use burn::nn::{LayerNorm, Linear};
use burn::tensor::activation::softmax;
use burn::tensor::{DType, Device, Int, Tensor};

use crate::config::KernelChoice;
use crate::error::{Result, SaplingError};
#[cfg(not(target_family = "wasm"))]
use crate::kernels::cpu;
use crate::kernels::wgsl;

/// Elements per slice of a full sum on wgpu (see [`Ops::squared_sum`]): well below the 2¹⁸
/// past which burn's single reduction went wrong.
pub const FULL_SUM_SLICE: usize = 1 << 16;

/// `t.sum()`, summed slice by slice on wgpu where the tensor is longer than a slice.
fn sliced_sum(t: Tensor<1>) -> Tensor<1> {
    let n = t.dims()[0];
    if n <= FULL_SUM_SLICE || crate::kernels::is_flex(&t.device()) {
        return t.sum();
    }
    (0..n)
        .step_by(FULL_SUM_SLICE)
        .map(|at| t.clone().narrow(0, at, FULL_SUM_SLICE.min(n - at)).sum())
        .reduce(|acc, s| acc + s)
        .expect("a non-empty tensor")
}

/// Variance floor of norm-pix, as MAE's `(var + 1.e-6) ** .5`.
pub const NORM_PIX_EPS: f64 = 1e-6;

/// The implementation a run's operations resolved to (a [`KernelChoice`] without `auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernels {
    /// burn's own ops, on any device.
    Reference,
    /// sapling's WGSL kernels for the patch gather, the per-patch loss and attention (wgpu).
    Wgsl,
    /// sapling's Rust kernels for linear, layer norm, attention and GELU (Flex).
    Cpu,
}

impl Kernels {
    /// What `choice` means on `device`: `auto` is `cpu` on Flex and `wgsl` on wgpu. The
    /// WGSL kernels need a wgpu device and the CPU kernels Flex; asking for either elsewhere is
    /// refused naming the config field.
    pub fn resolve(choice: KernelChoice, device: &Device) -> Result<Kernels> {
        let on_flex = crate::kernels::is_flex(device);
        let kernels = match choice {
            KernelChoice::Auto if on_flex => Kernels::Cpu,
            KernelChoice::Reference => Kernels::Reference,
            KernelChoice::Auto | KernelChoice::Wgsl => Kernels::Wgsl,
            KernelChoice::Cpu => Kernels::Cpu,
        };
        kernels.check(device)
    }

    /// `self`, if it runs on `device`; refused naming the config field otherwise.
    pub fn check(self, device: &Device) -> Result<Kernels> {
        let on_flex = crate::kernels::is_flex(device);
        match self {
            Kernels::Wgsl if on_flex => Err(SaplingError::config(
                "train.kernels",
                "the WGSL kernels run on wgpu devices only and this run is on the CPU (Flex): \
                 use --device wgpu, or --kernels auto",
            )),
            Kernels::Cpu if !on_flex => Err(SaplingError::config(
                "train.kernels",
                "the CPU kernels run on burn's Flex backend only and this run is on a wgpu \
                 device: use --device cpu, or --kernels auto",
            )),
            other => Ok(other),
        }
    }

    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kernels::Reference => "reference",
            Kernels::Wgsl => "wgsl",
            Kernels::Cpu => "cpu",
        }
    }
}

impl std::fmt::Display for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The arithmetic of a run's matmuls and activations (a `PrecisionChoice` without `auto`).
///
/// In [`Precision::F16`], as PyTorch's autocast: linear layers and attention take and give
/// f16 (their saved activations are half the size), the residual stream, layer norm, softmax,
/// the loss and every parameter and gradient stay f32. Casts are differentiable, so gradients
/// reach the f32 master weights in f32.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F16,
}

impl Precision {
    /// The element type matmuls and activations compute in.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
        }
    }

    /// Bytes of one activation element.
    pub fn bytes(self) -> u64 {
        match self {
            Precision::F32 => 4,
            Precision::F16 => 2,
        }
    }

    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The operations of one run, resolved for its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ops {
    pub kernels: Kernels,
    /// What linear layers and attention compute in.
    pub precision: Precision,
    /// The largest tensor an operation may write, in bytes: a GPU's storage-binding limit.
    /// Layers whose activations would exceed it compute them in pieces (see
    /// [`Ops::pieces`]); `None` never splits.
    pub max_tensor: Option<u64>,
    /// The WGSL attention's forward kernel shaped for a GPU (several invocations per query row,
    /// the query tile in workgroup memory) instead of one query row per invocation, which a
    /// software rasteriser runs faster. Both are tested against the reference arm.
    pub tiled_attention: bool,
}

impl Ops {
    /// burn's own ops everywhere.
    pub const REFERENCE: Ops = Ops::new(Kernels::Reference);

    /// The operations of `kernels`, never splitting a layer.
    pub const fn new(kernels: Kernels) -> Ops {
        Ops {
            kernels,
            precision: Precision::F32,
            max_tensor: None,
            tiled_attention: false,
        }
    }

    /// One arm of a comparison: the operations of `kernels` where `kernel`, else the reference
    /// (benchmarks and parity tests time or check one against the other).
    pub const fn arm(kernels: Kernels, kernel: bool) -> Ops {
        Ops::new(if kernel { kernels } else { Kernels::Reference })
    }

    /// These operations with the tiled WGSL attention forward on or off.
    pub const fn with_tiled_attention(self, tiled_attention: bool) -> Ops {
        Ops {
            tiled_attention,
            ..self
        }
    }

    /// The operations `choice` asks for on `device` (see [`Kernels::resolve`]).
    pub fn resolve(choice: KernelChoice, device: &Device) -> Result<Ops> {
        Ok(Ops::new(Kernels::resolve(choice, device)?))
    }

    /// How many pieces a tensor of `bytes` must be computed in so that none exceeds
    /// [`Ops::max_tensor`] (1 when it fits, or when nothing limits it).
    pub fn pieces(self, bytes: u64) -> usize {
        self.max_tensor
            .map_or(1, |limit| bytes.div_ceil(limit.max(1)).max(1) as usize)
    }

    /// These operations computing in `precision`.
    pub const fn with_precision(self, precision: Precision) -> Ops {
        Ops { precision, ..self }
    }

    /// `x·W + b` over the last dimension, in the run's precision (see [`Ops::widen`]).
    pub fn linear<const D: usize>(self, layer: &Linear, x: Tensor<D>) -> Tensor<D> {
        let (weight, bias) = (layer.weight.val(), layer.bias.as_ref().map(|b| b.val()));
        self.linear_with(x, weight, bias)
    }

    /// [`Ops::linear`] with the weight `[in, out]` and bias `[out]` given.
    pub fn linear_with<const D: usize>(
        self,
        x: Tensor<D>,
        weight: Tensor<2>,
        bias: Option<Tensor<1>>,
    ) -> Tensor<D> {
        match (self.kernels, bias) {
            #[cfg(not(target_family = "wasm"))]
            (Kernels::Cpu, Some(bias)) => cpu::linear(x, weight, bias),
            (_, bias) => {
                let (x, weight) = (self.narrow(x), self.narrow(weight));
                burn::tensor::module::linear(x, weight, bias.map(|b| self.narrow(b)))
            }
        }
    }

    /// `x` in the precision matmuls compute in (itself in f32).
    pub fn narrow<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        x.cast(self.precision.dtype())
    }

    /// `x` in f32, for the residual stream and the loss (itself when it is f32 already).
    pub fn widen<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        x.cast(DType::F32)
    }

    /// Layer norm over the last dimension with ε `eps` (burn's `LayerNorm` keeps its own private).
    pub fn layer_norm<const D: usize>(self, norm: &LayerNorm, x: Tensor<D>, eps: f64) -> Tensor<D> {
        let (gamma, beta) = (norm.gamma.val(), norm.beta.as_ref().map(|b| b.val()));
        match (self.kernels, beta) {
            #[cfg(not(target_family = "wasm"))]
            (Kernels::Cpu, Some(beta)) => cpu::layer_norm(x, gamma, beta, eps),
            (_, beta) => burn::tensor::module::layer_norm(x, gamma, beta, eps),
        }
    }

    /// `Σ x²` over every element of `tensors` (flattened), `[1]`: the squared global norm of a
    /// step's gradients. The reference sums each tensor and adds the sums in order (three
    /// launches per tensor on a GPU); the WGSL arm sums seven f32 tensors per launch; the CPU arm
    /// sums fixed blocks of each tensor on every core, without a squared copy.
    ///
    /// On wgpu, burn 0.22's full `sum()` of a tensor of more than 2¹⁸ elements loses most of
    /// them (measured on lavapipe: 65 669 for the 300 001 squares of normal noise), so there
    /// the reference sums slices of [`FULL_SUM_SLICE`] elements and adds those; on Flex it is
    /// one `sum()` per tensor, as it always was.
    pub fn squared_sum(self, tensors: Vec<Tensor<1>>) -> Tensor<1> {
        let all_f32 = tensors.iter().all(|t| t.dtype() == DType::F32);
        match self.kernels {
            Kernels::Wgsl if all_f32 && !tensors.is_empty() => wgsl::squared_sum(tensors),
            #[cfg(not(target_family = "wasm"))]
            Kernels::Cpu if all_f32 && !tensors.is_empty() => cpu::squared_sum(tensors),
            _ => tensors
                .into_iter()
                .map(|t| sliced_sum(t.square()))
                .reduce(|acc, sq| acc + sq)
                .expect("a sum of squares of at least one tensor"),
        }
    }

    /// Multi-head softmax attention of q, k and v `[B, N, D]` given apart (the packed `qkv`
    /// would exceed [`Ops::max_tensor`]), scaled by `head_dim^-½`.
    ///
    /// # Shapes
    /// `q`, `k`, `v`: `[B, N, D]` → `[B, N, D]`
    pub fn attention_unpacked(self, [q, k, v]: [Tensor<3>; 3], heads: usize) -> Tensor<3> {
        let [b, n, d] = q.dims();
        let hd = d / heads;
        let scale = (hd as f32).powf(-0.5);
        let heads_of = |t: Tensor<3>| t.reshape([b, n, heads, hd]).swap_dims(1, 2);
        let [q, k, v] = [q, k, v].map(heads_of);
        match self.kernels {
            Kernels::Wgsl if wgsl::supports(hd) => {
                merge_heads(wgsl::flash_attention(q, k, v, scale, self.tiled_attention))
            }
            _ => merge_heads(self.softmax_attention(q, k, v, scale)),
        }
    }

    /// `softmax(q·kᵀ·scale)·v` through the `[B, H, N, N]` scores. Scaling q before the product
    /// touches N·hd values instead of N·N. In f16 the scores' product is f16, the softmax and
    /// the value product f32, so the one score-sized tensor kept for backward is the f32
    /// softmax output (as in f32), not also an f16 copy of it.
    fn softmax_attention(self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, scale: f32) -> Tensor<4> {
        let scores = q.mul_scalar(scale).matmul(k.swap_dims(2, 3));
        let probs = softmax(self.widen(scores), 3);
        self.narrow(probs.matmul(self.widen(v)))
    }

    /// Multi-head softmax attention of packed `qkv` (q, k, v side by side, heads contiguous in
    /// each, as timm's fused projection), scaled by `head_dim^-½`.
    ///
    /// # Shapes
    /// `qkv`: `[B, N, 3·D]` → `[B, N, D]`
    pub fn attention(self, qkv: Tensor<3>, heads: usize) -> Tensor<3> {
        let hd = qkv.dims()[2] / 3 / heads;
        let scale = (hd as f32).powf(-0.5);
        match self.kernels {
            #[cfg(not(target_family = "wasm"))]
            Kernels::Cpu => cpu::attention(qkv, heads, scale),
            Kernels::Wgsl if wgsl::supports(hd) => {
                let [q, k, v] = split_heads(qkv, heads);
                merge_heads(wgsl::flash_attention(q, k, v, scale, self.tiled_attention))
            }
            // Scores [B, H, N, N]; also the WGSL path's fallback for head dims it does not take.
            _ => {
                let [q, k, v] = split_heads(qkv, heads);
                merge_heads(self.softmax_attention(q, k, v, scale))
            }
        }
    }

    /// Exact (erf) GELU, as `nn.GELU()`.
    pub fn gelu<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self.kernels {
            #[cfg(not(target_family = "wasm"))]
            Kernels::Cpu => cpu::gelu(x),
            _ => burn::tensor::activation::gelu(x),
        }
    }

    /// The patches of `imgs` at flat rows `b·L + l` (MAE's patch order, see [`patchify`]).
    ///
    /// # Shapes
    /// `imgs`: `[B, C, H, W]`, `rows`: `[R]` → `[R, p·p·C]`
    pub fn patch_gather(self, imgs: Tensor<4>, rows: Tensor<1, Int>, patch: usize) -> Tensor<2> {
        match self.kernels {
            // Only the gathered rows are written, never the whole patch tensor.
            Kernels::Wgsl => wgsl::patch_gather(imgs, rows, patch),
            #[cfg(not(target_family = "wasm"))]
            Kernels::Cpu if imgs.dtype() == DType::F32 => cpu::patch_gather(imgs, rows, patch),
            _ => {
                let patches = patchify(imgs, patch);
                let [b, l, p] = patches.dims();
                patches.reshape([b * l, p]).select(0, rows)
            }
        }
    }

    /// Each patch's mean squared error against the patches of `imgs`, normalised per patch
    /// when `norm_pix` ([`norm_pix_target`]); differentiable w.r.t. `pred`.
    ///
    /// # Shapes
    /// `pred`: `[B, L, p·p·C]`, `imgs`: `[B, C, H, W]` → `[B, L]`
    pub fn per_patch_loss(
        self,
        pred: Tensor<3>,
        imgs: Tensor<4>,
        patch: usize,
        norm_pix: bool,
    ) -> Tensor<2> {
        match self.kernels {
            // Targets are read straight from the image; no [B, L, P] intermediates are kept.
            Kernels::Wgsl => wgsl::norm_pix_loss(pred, imgs, patch, norm_pix),
            #[cfg(not(target_family = "wasm"))]
            Kernels::Cpu if pred.dtype() == DType::F32 && imgs.dtype() == DType::F32 => {
                cpu::patch_loss(pred, imgs, patch, norm_pix)
            }
            _ => {
                let [b, l, _] = pred.dims();
                let target = patchify(imgs, patch);
                let target = if norm_pix {
                    norm_pix_target(target)
                } else {
                    target
                };
                (pred - target).square().mean_dim(2).reshape([b, l])
            }
        }
    }
}

/// Normalises every patch of `[B, L, P]` by its own mean and unbiased variance.
pub fn norm_pix_target(target: Tensor<3>) -> Tensor<3> {
    let (var, mean) = target.clone().var_mean(2); // [B, L, 1] each
    (target - mean) / var.add_scalar(NORM_PIX_EPS).sqrt()
}

/// `qkv` `[B, N, 3·D]` split into q, k, v, each `[B, H, N, hd]`.
pub fn split_heads(qkv: Tensor<3>, heads: usize) -> [Tensor<4>; 3] {
    let [b, n, d3] = qkv.dims();
    let hd = d3 / 3 / heads;
    let mut parts = qkv
        .chunk(3, 2)
        .into_iter()
        .map(|t| t.reshape([b, n, heads, hd]).swap_dims(1, 2));
    [(); 3].map(|_| parts.next().expect("three chunks"))
}

/// `[B, H, N, hd]` → `[B, N, H·hd]`.
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, n, hd] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * hd])
}
