//! Features of whole images (no masking) from a frozen encoder: the cls token or the mean of the
//! patch tokens after the final norm, what the linear probe and the k-NN classifier score.

use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData};
use serde::Serialize;

use super::labelled::Split;
use crate::config::DataConfig;
use crate::data::augment::center_resize;
use crate::error::Result;
use crate::model::MaskedAutoencoder;
use crate::progress::Phase;

/// Which token summarises an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Pool {
    /// The cls token after the final norm.
    Cls,
    /// The mean of the patch tokens after the final norm.
    Mean,
}

impl Pool {
    /// The feature's name in a report.
    pub fn describe(self) -> &'static str {
        match self {
            Pool::Cls => "cls token",
            Pool::Mean => "mean of the patch tokens",
        }
    }
}

/// `[n, D]` host features of the first `n` images of `split`, pooled as `pool` says, each image
/// resized whole to the model's input size.
pub fn features(
    model: &MaskedAutoencoder,
    split: &Split,
    n: usize,
    pool: Pool,
    data: &DataConfig,
    phase: Phase,
) -> Result<Vec<f32>> {
    const CHUNK: usize = 256;
    // Without gradients: a trainer's model would otherwise record every chunk's graph (the k-NN
    // monitor during a run took all the host's memory that way).
    let model = model.valid();
    let c = &model.config;
    let device = model.pos_embed.device();
    let (s, l, d) = (c.img_size, c.num_patches(), c.dim);
    let idx = |v: Vec<i64>| {
        let len = v.len();
        Tensor::<1, Int>::from_data(TensorData::new(v, [len]), &device)
    };
    let mut out = Vec::with_capacity(n * d);
    for start in (0..n).step_by(CHUNK) {
        let b = CHUNK.min(n - start);
        let mut values = Vec::with_capacity(b * 3 * s * s);
        for i in start..start + b {
            center_resize(&split.image(i)?, s as u32, data, &mut values);
        }
        let imgs = Tensor::<4>::from_data(TensorData::new(values, [b, 3, s, s]), &device);
        // Every patch kept, in order.
        let rows = idx((0..(b * l) as i64).collect());
        let pos = idx((0..b).flat_map(|_| 0..l as i64).collect());
        let tokens = model.encode(imgs, rows, pos, l); // [B, 1+L, D]
        let pooled = match pool {
            Pool::Cls => tokens.narrow(1, 0, 1).reshape([b, d]),
            Pool::Mean => tokens.narrow(1, 1, l).mean_dim(1).reshape([b, d]),
        };
        out.extend(
            pooled
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("f32"),
        );
        phase.advance(b as u64);
    }
    Ok(out)
}
