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
                TensorData::new(
                    pos_embed::sincos_2d_in(config.pos_embed, dim, config.grid(), true),
                    [1 + l, dim],
                ),
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
        self.forward_batch(&MaskedBatch::new(imgs, plan))
    }

    /// [`MaskedAutoencoder::forward`] of a batch already on the device: every stage in turn,
    /// then the loss.
    pub fn forward_batch(&self, batch: &MaskedBatch) -> MaeOutput {
        let x = self
            .stages()
            .into_iter()
            .fold(None, |x, stage| Some(self.stage(stage, x, batch)));
        self.head(x.expect("the embedding stage"), batch)
    }

    /// The forward pass up to the loss as a chain of stages, each one tensor in and one out:
    /// where activation checkpointing may cut it.
    pub fn stages(&self) -> Vec<Stage> {
        let encoder = (0..self.blocks.len()).map(Stage::Encoder);
        let decoder = (0..self.decoder_blocks.len()).map(Stage::Decoder);
        std::iter::once(Stage::Embed)
            .chain(encoder)
            .chain(std::iter::once(Stage::Bridge))
            .chain(decoder)
            .collect()
    }

    /// Runs `stage` on `x`, the previous stage's output (`Embed` reads the images instead).
    ///
    /// # Shapes
    /// `Embed` → `[B, 1 + K, D]`; `Encoder(i)`: `[B, 1 + K, D]` → same; `Bridge`:
    /// `[B, 1 + K, D]` → `[B, 1 + L, Dd]`; `Decoder(i)`: `[B, 1 + L, Dd]` → same
    pub fn stage(&self, stage: Stage, x: Option<Tensor<3>>, batch: &MaskedBatch) -> Tensor<3> {
        let ops = self.ops;
        let input = || x.expect("a stage after the embedding takes the previous one's output");
        match stage {
            Stage::Embed => self.embed(batch),
            Stage::Encoder(i) => self.blocks[i].forward(input(), ops),
            Stage::Bridge => {
                let latent = ops.layer_norm(&self.norm, input(), self.config.layer_norm_eps);
                self.decoder_input(latent, batch.restore_rows.clone(), batch.num_patches)
            }
            Stage::Decoder(i) => self.decoder_blocks[i].forward(input(), ops),
        }
    }

    /// The prediction and the masked loss from the last decoder block's output.
    ///
    /// # Shapes
    /// `x`: `[B, 1 + L, Dd]` → loss `[1]`, pred `[B, L, P]`
    pub fn head(&self, x: Tensor<3>, batch: &MaskedBatch) -> MaeOutput {
        let pred = self.predict(x, batch.num_patches);
        let (p, norm_pix) = (self.config.patch_size, self.config.norm_pix);
        let per_patch = self
            .ops
            .per_patch_loss(pred.clone(), batch.imgs.clone(), p, norm_pix); // [B, L]
        let loss = masked_mean(per_patch, batch.mask.clone());
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
        let x = self.embed_rows(imgs, keep_rows, keep_pos, k);
        let x = self
            .blocks
            .iter()
            .fold(x, |x, block| block.forward(x, self.ops));
        self.ops
            .layer_norm(&self.norm, x, self.config.layer_norm_eps)
    }

    /// Appends mask tokens, un-shuffles to patch order, runs the decoder, predicts pixels.
    ///
    /// # Shapes
    /// `latent`: `[B, 1 + K, D]` (normed, as [`MaskedAutoencoder::encode`] gives it);
    /// `restore_rows`: `[B·L]` → `[B, L, P]`
    pub fn forward_decoder(
        &self,
        latent: Tensor<3>,
        restore_rows: Tensor<1, Int>,
        l: usize,
    ) -> Tensor<3> {
        let x = self.decoder_input(latent, restore_rows, l);
        let x = self
            .decoder_blocks
            .iter()
            .fold(x, |x, block| block.forward(x, self.ops));
        self.predict(x, l)
    }

    fn embed(&self, batch: &MaskedBatch) -> Tensor<3> {
        let (rows, pos) = (batch.keep_rows.clone(), batch.keep_pos.clone());
        self.embed_rows(batch.imgs.clone(), rows, pos, batch.num_visible)
    }

    /// The kept patches embedded with their positions, cls prepended: `[B, 1 + K, D]`.
    fn embed_rows(
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
        let embedded = ops.widen(ops.linear(&self.patch_embed, visible));
        let x = (embedded + pos).reshape([b, k, d]); // [B, K, D]
        let cls = (self.cls_token.val() + self.pos_embed.clone().narrow(0, 0, 1).unsqueeze())
            .expand([b, 1, d]); // [B, 1, D]
        Tensor::cat(vec![cls, x], 1) // [B, 1 + K, D]
    }

    /// The decoder's input: the latent embedded to the decoder width, mask tokens appended,
    /// restored to patch order, cls prepended, positions added: `[B, 1 + L, Dd]`.
    fn decoder_input(
        &self,
        latent: Tensor<3>,
        restore_rows: Tensor<1, Int>,
        l: usize,
    ) -> Tensor<3> {
        let [b, n, _] = latent.dims();
        let k = n - 1;
        let dd = self.config.decoder_dim;
        let x = self.ops.widen(self.ops.linear(&self.decoder_embed, latent)); // [B, 1 + K, Dd]
        let cls = x.clone().narrow(1, 0, 1); // [B, 1, Dd]
        let mask_tokens = self.mask_token.val().expand([b, l - k, dd]); // [B, L - K, Dd]
        let shuffled = Tensor::cat(vec![x.narrow(1, 1, k), mask_tokens], 1); // [B, L, Dd]
        let restored = shuffled
            .reshape([b * l, dd])
            .select(0, restore_rows)
            .reshape([b, l, dd]); // [B, L, Dd], patch order
        Tensor::cat(vec![cls, restored], 1) + self.decoder_pos_embed.clone().unsqueeze()
    }

    /// The decoder norm and the pixel prediction, cls dropped: `[B, L, P]`.
    fn predict(&self, x: Tensor<3>, l: usize) -> Tensor<3> {
        let x = self
            .ops
            .layer_norm(&self.decoder_norm, x, self.config.layer_norm_eps);
        let x = self.ops.linear(&self.decoder_pred, x); // [B, 1 + L, P]
        // The loss and its per-patch statistics are computed in f32.
        self.ops.widen(x.narrow(1, 1, l))
    }
}

/// A point where the forward pass can be cut (see [`MaskedAutoencoder::stages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Gather, patch embedding, positions, cls.
    Embed,
    /// Encoder block `i`.
    Encoder(usize),
    /// The encoder's final norm and the decoder's input (embedding, mask tokens, restore,
    /// positions).
    Bridge,
    /// Decoder block `i`.
    Decoder(usize),
}

/// One batch as the forward pass reads it on the device: the images, the rows of the kept
/// patches and their positions, the rows that restore patch order, and the mask.
#[derive(Debug, Clone)]
pub struct MaskedBatch {
    /// `[B, C, H, W]`, normalised.
    pub imgs: Tensor<4>,
    /// `[B·K]`: flat rows `b·L + l` of the kept patches.
    pub keep_rows: Tensor<1, Int>,
    /// `[B·K]`: the patch index of each kept row.
    pub keep_pos: Tensor<1, Int>,
    /// `[B·L]`: rows of the shuffled decoder input in patch order.
    pub restore_rows: Tensor<1, Int>,
    /// `[B, L]`, 1 = removed.
    pub mask: Tensor<2>,
    pub num_patches: usize,
    pub num_visible: usize,
}

impl MaskedBatch {
    /// `imgs` masked by `plan`, the indices uploaded to the images' device.
    pub fn new(imgs: Tensor<4>, plan: &MaskPlan) -> MaskedBatch {
        let device = imgs.device();
        let [b, _, _, _] = imgs.dims();
        let (l, k) = (plan.num_patches, plan.num_visible);
        let rows = |ids: Vec<i64>| {
            let n = ids.len();
            crate::counts::uploaded(n * size_of::<i64>());
            Tensor::<1, Int>::from_data(TensorData::new(ids, [n]), &device)
        };
        crate::counts::uploaded(plan.mask.len() * size_of::<f32>());
        let mask = Tensor::<2>::from_data(TensorData::new(plan.mask.clone(), [b, l]), &device);
        let keep_rows = plan.keep_rows();
        let keep_pos: Vec<i64> = keep_rows.iter().map(|r| r % l as i64).collect();
        MaskedBatch {
            imgs,
            keep_rows: rows(keep_rows),
            keep_pos: rows(keep_pos),
            restore_rows: rows(plan.restore_rows()),
            mask,
            num_patches: l,
            num_visible: k,
        }
    }

    /// The same batch without autodiff (for a forward pass that keeps no graph).
    pub fn inner(&self) -> MaskedBatch {
        MaskedBatch {
            imgs: self.imgs.clone().inner(),
            keep_rows: self.keep_rows.clone().inner(),
            keep_pos: self.keep_pos.clone().inner(),
            restore_rows: self.restore_rows.clone().inner(),
            mask: self.mask.clone().inner(),
            ..*self
        }
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
