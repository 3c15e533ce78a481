//! A pre-norm transformer block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`.
//!
//! Field names follow timm's ViT (`norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`,
//! `mlp.fc2`) so exported weights map one to one.

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};

use super::init;
use crate::kernels::{KernelPath, attention, ops};

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
        let [b, n, d] = x.dims();
        let (h, hd) = (self.heads, d / self.heads);
        let mut qkv = self
            .qkv
            .forward(x)
            .chunk(3, 2)
            .into_iter()
            .map(|t| t.reshape([b, n, h, hd]).swap_dims(1, 2)); // [B, H, N, hd]
        let (q, k, v) = (
            qkv.next().expect("q"),
            qkv.next().expect("k"),
            qkv.next().expect("v"),
        );
        let scale = (hd as f32).powf(-0.5);
        let out = match self.kernels {
            KernelPath::Wgsl if attention::supports(hd) => ops::flash_attention(q, k, v, scale),
            // Scores [B, H, N, N]; also the WGSL path's fallback for head dims it does not take.
            _ => attention::reference(q, k, v, scale),
        };
        let out = out.swap_dims(1, 2).reshape([b, n, d]); // [B, N, D]
        self.proj.forward(out)
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
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.fc2.forward(gelu(self.fc1.forward(x)))
    }
}

/// One pre-norm transformer block.
#[derive(Module, Debug)]
pub struct Block {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
}

impl Block {
    pub fn new(dim: usize, heads: usize, mlp_ratio: usize, eps: f64, device: &Device) -> Self {
        Block {
            norm1: init::layer_norm(dim, eps, device),
            attn: Attention::new(dim, heads, device),
            norm2: init::layer_norm(dim, eps, device),
            mlp: Mlp::new(dim, dim * mlp_ratio, device),
        }
    }

    /// # Shapes
    /// `[B, N, D]` → `[B, N, D]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.clone() + self.attn.forward(self.norm1.forward(x));
        x.clone() + self.mlp.forward(self.norm2.forward(x))
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
