//! A pre-norm transformer block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`.
//!
//! Field names follow timm's ViT (`norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`,
//! `mlp.fc2`) so exported weights map one to one.

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{Device, Tensor};

use super::init;
use crate::kernels::{KernelPath, attention, cpu_ops, gelu, ops, qkv_attention};

/// `layer.forward(x)`, by sapling's CPU kernel when `kernels` is `cpu` (same function).
pub(crate) fn linear<const D: usize>(
    layer: &Linear,
    x: Tensor<D>,
    kernels: KernelPath,
) -> Tensor<D> {
    match (kernels, &layer.bias) {
        (KernelPath::Cpu, Some(bias)) => cpu_ops::linear(x, layer.weight.val(), bias.val()),
        _ => layer.forward(x),
    }
}

/// `layer.forward(x)` (layer norm with ε `eps`), by sapling's CPU kernel when `kernels` is
/// `cpu` (same function).
pub(crate) fn norm<const D: usize>(
    layer: &LayerNorm,
    x: Tensor<D>,
    eps: f64,
    kernels: KernelPath,
) -> Tensor<D> {
    match (kernels, &layer.beta) {
        (KernelPath::Cpu, Some(beta)) => cpu_ops::layer_norm(x, layer.gamma.val(), beta.val(), eps),
        _ => layer.forward(x),
    }
}

/// Multi-head self-attention with a fused qkv projection.
#[derive(Module, Debug)]
pub struct Attention {
    pub qkv: Linear,
    pub proj: Linear,
    #[module(skip)]
    heads: usize,
    /// Reference (scores materialised) or the WGSL flash kernel; set by the model.
    #[module(skip)]
    pub(crate) kernels: KernelPath,
}

impl Attention {
    pub fn new(dim: usize, heads: usize, device: &Device) -> Self {
        Attention {
            qkv: init::linear(dim, 3 * dim, device),
            proj: init::linear(dim, dim, device),
            heads,
            kernels: KernelPath::Reference,
        }
    }

    /// # Shapes
    /// `x`: `[B, N, D]` → `[B, N, D]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [_, _, d] = x.dims();
        let (h, hd) = (self.heads, d / self.heads);
        let scale = (hd as f32).powf(-0.5);
        let qkv = linear(&self.qkv, x, self.kernels); // [B, N, 3·D]
        let out = match self.kernels {
            KernelPath::Cpu => cpu_ops::attention(qkv, h, scale),
            KernelPath::Wgsl if attention::supports(hd) => {
                let [q, k, v] = qkv_attention::split_heads(qkv, h);
                qkv_attention::merge_heads(ops::flash_attention(q, k, v, scale))
            }
            // Scores [B, H, N, N]; also the WGSL path's fallback for head dims it does not take.
            _ => qkv_attention::reference(qkv, h, scale),
        }; // [B, N, D]
        linear(&self.proj, out, self.kernels)
    }
}

/// Two-layer MLP with exact (erf) GELU, as `nn.GELU()`.
#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
    /// burn's linear and GELU, or sapling's CPU kernels (same functions); set by the model.
    #[module(skip)]
    pub(crate) kernels: KernelPath,
}

impl Mlp {
    pub fn new(dim: usize, hidden: usize, device: &Device) -> Self {
        Mlp {
            fc1: init::linear(dim, hidden, device),
            fc2: init::linear(hidden, dim, device),
            kernels: KernelPath::Reference,
        }
    }

    /// # Shapes
    /// `[B, N, D]` → `[B, N, D]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = linear(&self.fc1, x, self.kernels);
        let h = match self.kernels {
            KernelPath::Cpu => cpu_ops::gelu(h),
            _ => gelu::reference(h),
        };
        linear(&self.fc2, h, self.kernels)
    }
}

/// One pre-norm transformer block.
#[derive(Module, Debug)]
pub struct Block {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    /// The norms' ε (burn's `LayerNorm` keeps its own private), for the CPU kernel.
    #[module(skip)]
    eps: f64,
    /// The norms' path; attention and MLP hold their own. Set by the model.
    #[module(skip)]
    pub(crate) kernels: KernelPath,
}

impl Block {
    pub fn new(dim: usize, heads: usize, mlp_ratio: usize, eps: f64, device: &Device) -> Self {
        Block {
            norm1: init::layer_norm(dim, eps, device),
            attn: Attention::new(dim, heads, device),
            norm2: init::layer_norm(dim, eps, device),
            mlp: Mlp::new(dim, dim * mlp_ratio, device),
            eps,
            kernels: KernelPath::Reference,
        }
    }

    /// # Shapes
    /// `[B, N, D]` → `[B, N, D]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let (eps, k) = (self.eps, self.kernels);
        let x = x.clone() + self.attn.forward(norm(&self.norm1, x, eps, k));
        x.clone() + self.mlp.forward(norm(&self.norm2, x, eps, k))
    }
}

/// Parameters of one block, for the analytic count: qkv, proj, fc1, fc2 and two norms.
pub fn block_params(dim: usize, mlp_ratio: usize) -> usize {
    let hidden = dim * mlp_ratio;
    (dim * 3 * dim + 3 * dim)
        + (dim * dim + dim)
        + (dim * hidden + hidden)
        + (hidden * dim + dim)
        + 4 * dim
}
