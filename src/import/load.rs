//! The file's values put into a model: PyTorch's layouts turned into burn's (linear weights
//! transposed, the patch convolution flattened in sapling's (row, column, channel) order).

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{Device, Tensor, TensorData};

use super::check::{self, FileShape};
use super::{Imported, Report};
use crate::config::{ModelConfig, PosEmbed};
use crate::error::{Result, SaplingError};
use crate::kernels::host::transpose;
use crate::model::MaskedAutoencoder;
use crate::model::block::Block;

impl Imported {
    /// Checks the file against `model` (built for the run's config, named `preset` in
    /// messages) and loads every tensor it has; a missing decoder keeps the model's own
    /// initialisation. The position tables stay sapling's fixed ones, checked to be the same
    /// function (their layout must match `model.pos_embed`).
    pub fn load(
        &self,
        mut model: MaskedAutoencoder,
        preset: &str,
    ) -> Result<(MaskedAutoencoder, Report)> {
        let c = model.config.clone();
        let (has_decoder, pos) = self.check(&c, preset)?;
        let device = model.cls_token.val().device();
        let mut loaded = Loader {
            from: self,
            device,
            count: 0,
        };
        model.cls_token = loaded.tensor("cls_token", [1, 1, c.dim])?;
        model.patch_embed.weight = loaded.patch_conv(c.patch_size, c.in_chans, c.dim)?;
        model.patch_embed.bias = Some(loaded.tensor("patch_embed.proj.bias", [c.dim])?);
        for (i, block) in model.blocks.iter_mut().enumerate() {
            loaded.block(block, &format!("blocks.{i}"))?;
        }
        loaded.norm(&mut model.norm, "norm")?;
        let encoder = loaded.count;
        if has_decoder {
            loaded.linear(&mut model.decoder_embed, "decoder_embed")?;
            model.mask_token = loaded.tensor("mask_token", [1, 1, c.decoder_dim])?;
            for (i, block) in model.decoder_blocks.iter_mut().enumerate() {
                loaded.block(block, &format!("decoder_blocks.{i}"))?;
            }
            loaded.norm(&mut model.decoder_norm, "decoder_norm")?;
            loaded.linear(&mut model.decoder_pred, "decoder_pred")?;
        }
        let report = Report {
            path: self.path.clone(),
            layout: self.layout(),
            encoder,
            decoder: loaded.count - encoder,
            pos,
            grids: FileShape::of(self)?.grid.map(|g| (g, c.grid())),
            ignored: self.ignored.clone(),
        };
        Ok((model, report))
    }
}

impl Imported {
    /// Whether the file fits a model of `c` (named `preset` in messages), before any value
    /// but the position tables' is read: every shape, and the tables' layout against
    /// `model.pos_embed`. Returns whether the file has a decoder, and its tables' layout.
    pub fn check(&self, c: &ModelConfig, preset: &str) -> Result<(bool, Option<PosEmbed>)> {
        let has_decoder = check::shapes(self, c, preset)?;
        let pos = self.pos_embed()?;
        if let Some(layout) = pos
            && layout != c.pos_embed
        {
            return Err(SaplingError::config(
                "model.pos_embed",
                format!(
                    "{} has its position tables in {}'s layout; set model.pos_embed = \"{}\" \
                     (`sapling train --init-from` sets it)",
                    self.path.display(),
                    layout.name(),
                    layout.name()
                ),
            ));
        }
        Ok((has_decoder, pos))
    }
}

/// Makes parameters from the file's tensors, counting them.
struct Loader<'a> {
    from: &'a Imported,
    device: Device,
    count: usize,
}

impl Loader<'_> {
    fn tensor<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
    ) -> Result<Param<Tensor<D>>> {
        let values = self.from.values(name)?;
        self.param(values, shape)
    }

    fn param<const D: usize>(
        &mut self,
        values: Vec<f32>,
        shape: [usize; D],
    ) -> Result<Param<Tensor<D>>> {
        self.count += 1;
        Ok(Param::from_data(
            TensorData::new(values, shape),
            &self.device,
        ))
    }

    /// PyTorch's `[out, in]` weight as burn's `[in, out]`, and the bias.
    fn linear(&mut self, lin: &mut Linear, name: &str) -> Result<()> {
        let w = self.from.values(&format!("{name}.weight"))?;
        let [d_in, d_out] = lin.weight.val().dims();
        lin.weight = self.param(transpose(&w, d_out, d_in), [d_in, d_out])?;
        lin.bias = Some(self.tensor(&format!("{name}.bias"), [d_out])?);
        Ok(())
    }

    fn norm(&mut self, norm: &mut LayerNorm, name: &str) -> Result<()> {
        let [d] = norm.gamma.val().dims();
        norm.gamma = self.tensor(&format!("{name}.weight"), [d])?;
        norm.beta = Some(self.tensor(&format!("{name}.bias"), [d])?);
        Ok(())
    }

    fn block(&mut self, b: &mut Block, name: &str) -> Result<()> {
        self.norm(&mut b.norm1, &format!("{name}.norm1"))?;
        self.linear(&mut b.attn.qkv, &format!("{name}.attn.qkv"))?;
        self.linear(&mut b.attn.proj, &format!("{name}.attn.proj"))?;
        self.norm(&mut b.norm2, &format!("{name}.norm2"))?;
        self.linear(&mut b.mlp.fc1, &format!("{name}.mlp.fc1"))?;
        self.linear(&mut b.mlp.fc2, &format!("{name}.mlp.fc2"))
    }

    /// The `[D, C, p, p]` convolution as sapling's `[p·p·C, D]` linear over (row, column,
    /// channel) patch vectors.
    fn patch_conv(&mut self, p: usize, ch: usize, d: usize) -> Result<Param<Tensor<2>>> {
        let conv = self.from.values("patch_embed.proj.weight")?;
        let mut w = vec![0.0f32; conv.len()];
        for o in 0..d {
            for c in 0..ch {
                for r in 0..p {
                    for q in 0..p {
                        w[((r * p + q) * ch + c) * d + o] = conv[((o * ch + c) * p + r) * p + q];
                    }
                }
            }
        }
        self.param(w, [p * p * ch, d])
    }
}
