//! A pre-norm transformer block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`.
//!
//! Field names follow timm's ViT (`norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`,
//! `mlp.fc2`) so exported weights map one to one. Every heavy operation goes through the run's
//! [`Ops`], passed down from the model.

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{Device, Tensor};

use super::init;
use crate::ops::Ops;

/// Multi-head self-attention with a fused qkv projection.
#[derive(Module, Debug)]
pub struct Attention {
    pub qkv: Linear,
    pub proj: Linear,
    #[module(skip)]
    heads: usize,
}

impl Attention {
    pub fn new(dim: usize, heads: usize, device: &Device) -> Self {
        Attention {
            qkv: init::linear(dim, 3 * dim, device),
            proj: init::linear(dim, dim, device),
            heads,
        }
    }

    /// # Shapes
    /// `x`: `[B, N, D]` → `[B, N, D]`
    pub fn forward(&self, x: Tensor<3>, ops: Ops) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let out = if ops.pieces((b * n * 3 * d) as u64 * ops.precision.bytes()) > 1 {
            // The packed [B, N, 3·D] would not fit one binding: q, k and v apart.
            let part = |i: usize| {
                let w = self.qkv.weight.val().narrow(1, i * d, d);
                let bias = self.qkv.bias.as_ref().map(|b| b.val().narrow(0, i * d, d));
                ops.linear_with(x.clone(), w, bias)
            };
            ops.attention_unpacked([0, 1, 2].map(part), self.heads)
        } else {
            ops.attention(ops.linear(&self.qkv, x), self.heads) // qkv: [B, N, 3·D]
        };
        ops.linear(&self.proj, out)
    }
}

/// Two-layer MLP with exact (erf) GELU, as `nn.GELU()`.
#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

impl Mlp {
    pub fn new(dim: usize, hidden: usize, device: &Device) -> Self {
        Mlp {
            fc1: init::linear(dim, hidden, device),
            fc2: init::linear(hidden, dim, device),
        }
    }

    /// # Shapes
    /// `[B, N, D]` → `[B, N, D]`
    pub fn forward(&self, x: Tensor<3>, ops: Ops) -> Tensor<3> {
        let [b, n, _] = x.dims();
        let hidden = self.fc1.weight.val().dims()[1];
        let pieces = ops
            .pieces((b * n * hidden) as u64 * ops.precision.bytes())
            .min(n);
        let mlp = |x| ops.linear(&self.fc2, ops.gelu(ops.linear(&self.fc1, x)));
        if pieces == 1 {
            return mlp(x);
        }
        // The [B, N, hidden] activations would not fit one binding: token pieces, each kept
        // apart for backward.
        let parts = x.chunk(pieces, 1).into_iter().map(mlp).collect();
        Tensor::cat(parts, 1)
    }
}

/// One pre-norm transformer block.
#[derive(Module, Debug)]
pub struct Block {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    /// The norms' ε (burn's `LayerNorm` keeps its own private; the ops take it explicitly).
    #[module(skip)]
    eps: f64,
}

impl Block {
    pub fn new(dim: usize, heads: usize, mlp_ratio: usize, eps: f64, device: &Device) -> Self {
        Block {
            norm1: init::layer_norm(dim, eps, device),
            attn: Attention::new(dim, heads, device),
            norm2: init::layer_norm(dim, eps, device),
            mlp: Mlp::new(dim, dim * mlp_ratio, device),
            eps,
        }
    }

    /// # Shapes
    /// `[B, N, D]` → `[B, N, D]`
    pub fn forward(&self, x: Tensor<3>, ops: Ops) -> Tensor<3> {
        // The residual stream stays f32 whatever the branches compute in.
        let attn = self
            .attn
            .forward(ops.layer_norm(&self.norm1, x.clone(), self.eps), ops);
        let x = x + ops.widen(attn);
        let mlp = self
            .mlp
            .forward(ops.layer_norm(&self.norm2, x.clone(), self.eps), ops);
        x + ops.widen(mlp)
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
