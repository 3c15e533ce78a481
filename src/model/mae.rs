//! The masked autoencoder: encoder over visible patches, light decoder with mask tokens.

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::block::{Block, block_params};
use super::loss::masked_mean;
use super::masking::MaskPlan;
use super::{init, pos_embed};
use crate::config::ModelConfig;
use crate::ops::Ops;

/// MAE with a ViT encoder and decoder.
///
/// Parameter names follow MAE's `models_mae.py` (and so timm's ViT for the encoder).
#[derive(Module, Debug)]
pub struct MaskedAutoencoder {
    /// Linear on flattened `p·p·C` patches, equivalent to MAE's stride-`p` convolution.
    pub patch_embed: Linear,
    /// `[1, 1, D]`.
    pub cls_token: Param<Tensor<3>>,
    pub blocks: Vec<Block>,
    pub norm: LayerNorm,
    pub decoder_embed: Linear,
    /// `[1, 1, Dd]`.
    pub mask_token: Param<Tensor<3>>,
    pub decoder_blocks: Vec<Block>,
    pub decoder_norm: LayerNorm,
    pub decoder_pred: Linear,
    /// Fixed `[1 + L, D]` sin-cos table (cls row zero); a constant, not trained or saved.
    pub pos_embed: Tensor<2>,
    /// Fixed `[1 + L, Dd]` sin-cos table for the decoder.
    pub decoder_pos_embed: Tensor<2>,
    #[module(skip)]
    pub config: ModelConfig,
    /// The operations every layer runs on (burn's, or sapling's kernels), resolved for the
    /// model's device once and passed down to the blocks.
    #[module(skip)]
    ops: Ops,
}

/// What one forward pass returns.
#[derive(Debug, Clone)]
pub struct MaeOutput {
    /// Scalar loss, `[1]`.
    pub loss: Tensor<1>,
    /// Predicted patches in the original patch order, `[B, L, p·p·C]` (norm-pix space when on).
    pub pred: Tensor<3>,
}

impl MaskedAutoencoder {
    /// Builds the model with MAE's initialisation; weights materialise on first use.
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        let (d, dd, l) = (config.dim, config.decoder_dim, config.num_patches());
        let table = |dim| {
            Tensor::<2>::from_data(
                TensorData::new(pos_embed::sincos_2d(dim, config.grid(), true), [1 + l, dim]),
                device,
            )
        };
        let blocks = |dim, depth, heads| {
            (0..depth)
                .map(|_| Block::new(dim, heads, config.mlp_ratio, config.layer_norm_eps, device))
                .collect()
        };
        MaskedAutoencoder {
            patch_embed: init::linear(config.patch_dim(), d, device),
            cls_token: init::token(d, device),
            blocks: blocks(d, config.depth, config.heads),
            norm: init::layer_norm(d, config.layer_norm_eps, device),
            decoder_embed: init::linear(d, dd, device),
            mask_token: init::token(dd, device),
            decoder_blocks: blocks(dd, config.decoder_depth, config.decoder_heads),
            decoder_norm: init::layer_norm(dd, config.layer_norm_eps, device),
            decoder_pred: init::linear(dd, config.patch_dim(), device),
            pos_embed: table(d),
            decoder_pos_embed: table(dd),
            config: config.clone(),
            ops: Ops::REFERENCE,
        }
    }

    /// The same model running its operations on `ops` (resolved for its device, see
    /// [`Ops::resolve`]).
    pub fn with_ops(mut self, ops: Ops) -> Self {
        self.ops = ops;
        self
    }

    /// The operations this model runs on.
    pub fn ops(&self) -> Ops {
        self.ops
    }

    /// Masks, encodes, decodes and scores one batch.
    ///
    /// # Shapes
    /// `imgs`: `[B, C, H, W]`, normalised → loss `[1]`, pred `[B, L, p·p·C]`
    pub fn forward(&self, imgs: Tensor<4>, plan: &MaskPlan) -> MaeOutput {
        let device = imgs.device();
        let [b, _, _, _] = imgs.dims();
        let (l, k) = (plan.num_patches, plan.num_visible);
        let rows = |ids: Vec<i64>| {
            let n = ids.len();
            Tensor::<1, Int>::from_data(TensorData::new(ids, [n]), &device)
        };
        let keep_rows = plan.keep_rows();
        let keep_pos: Vec<i64> = keep_rows.iter().map(|r| r % l as i64).collect();
        let mask = Tensor::<2>::from_data(TensorData::new(plan.mask.clone(), [b, l]), &device);
        let (p, norm_pix) = (self.config.patch_size, self.config.norm_pix);
        let latent = self.encode(imgs.clone(), rows(keep_rows), rows(keep_pos), k);
        let pred = self.forward_decoder(latent, rows(plan.restore_rows()), l);
        let per_patch = self.ops.per_patch_loss(pred.clone(), imgs, p, norm_pix); // [B, L]
        let loss = masked_mean(per_patch, mask);
        MaeOutput { loss, pred }
    }

    /// Embeds the kept patches only, adds their position embeddings, prepends cls, runs the
    /// encoder blocks and the final norm.
    ///
    /// # Shapes
    /// `imgs`: `[B, C, H, W]`; `keep_rows`: `[B·K]` (flat rows `b·L + l`); `keep_pos`: `[B·K]`
    /// (patch index of each row) → `[B, 1 + K, D]`
    pub fn encode(
        &self,
        imgs: Tensor<4>,
        keep_rows: Tensor<1, Int>,
        keep_pos: Tensor<1, Int>,
        k: usize,
    ) -> Tensor<3> {
        let [b, _, _, _] = imgs.dims();
        let (d, l, ops) = (self.config.dim, self.config.num_patches(), self.ops);
        // Gathering before the embedding multiplies only the K kept patches.
        let visible = ops.patch_gather(imgs, keep_rows, self.config.patch_size); // [B·K, P]
        let pos = self.pos_embed.clone().narrow(0, 1, l).select(0, keep_pos); // [B·K, D]
        let x = (ops.linear(&self.patch_embed, visible) + pos).reshape([b, k, d]); // [B, K, D]
        let cls = (self.cls_token.val() + self.pos_embed.clone().narrow(0, 0, 1).unsqueeze())
            .expand([b, 1, d]); // [B, 1, D]
        let x = Tensor::cat(vec![cls, x], 1); // [B, 1 + K, D]
        let x = self.blocks.iter().fold(x, |x, block| block.forward(x, ops));
        ops.layer_norm(&self.norm, x, self.config.layer_norm_eps)
    }

    /// Appends mask tokens, un-shuffles to patch order, runs the decoder, predicts pixels.
    ///
    /// # Shapes
    /// `latent`: `[B, 1 + K, D]`; `restore_rows`: `[B·L]` → `[B, L, P]`
    pub fn forward_decoder(
        &self,
        latent: Tensor<3>,
        restore_rows: Tensor<1, Int>,
        l: usize,
    ) -> Tensor<3> {
        let [b, n, _] = latent.dims();
        let k = n - 1;
        let dd = self.config.decoder_dim;
        let ops = self.ops;
        let x = ops.linear(&self.decoder_embed, latent); // [B, 1 + K, Dd]
        let cls = x.clone().narrow(1, 0, 1); // [B, 1, Dd]
        let mask_tokens = self.mask_token.val().expand([b, l - k, dd]); // [B, L - K, Dd]
        let shuffled = Tensor::cat(vec![x.narrow(1, 1, k), mask_tokens], 1); // [B, L, Dd]
        let restored = shuffled
            .reshape([b * l, dd])
            .select(0, restore_rows)
            .reshape([b, l, dd]); // [B, L, Dd], patch order
        let x = Tensor::cat(vec![cls, restored], 1) + self.decoder_pos_embed.clone().unsqueeze();
        let x = self
            .decoder_blocks
            .iter()
            .fold(x, |x, block| block.forward(x, ops));
        let x = ops.layer_norm(&self.decoder_norm, x, self.config.layer_norm_eps);
        let x = ops.linear(&self.decoder_pred, x); // [B, 1 + L, P]
        x.narrow(1, 1, l)
    }
}

/// Parameter counts of a configuration, worked out from its shapes alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCount {
    /// Trained parameters (what the optimizer updates).
    pub learnable: usize,
    /// Fixed position-embedding tables; Sapiens' reported sizes include them.
    pub fixed: usize,
}

impl ParamCount {
    /// Learnable plus fixed, the figure papers report.
    pub fn total(&self) -> usize {
        self.learnable + self.fixed
    }
}

/// Counts parameters analytically, without building the model.
pub fn analytic_params(c: &ModelConfig) -> ParamCount {
    let (d, dd, p, l) = (c.dim, c.decoder_dim, c.patch_dim(), c.num_patches());
    let encoder = (p * d + d) + d + c.depth * block_params(d, c.mlp_ratio) + 2 * d;
    let decoder = (d * dd + dd)
        + dd
        + c.decoder_depth * block_params(dd, c.mlp_ratio)
        + 2 * dd
        + (dd * p + p);
    ParamCount {
        learnable: encoder + decoder,
        fixed: (1 + l) * (d + dd),
    }
}
