//! MAE's reconstruction figure: original | masked input | reconstruction | reconstruction with
//! the visible patches pasted back, one row per image.
//!
//! With norm-pix the model predicts each patch normalised by its own statistics; to look like an
//! image the prediction is mapped back with the *target* patch's mean and standard deviation
//! (MAE issues #95/#164: without this, reconstructions look like noise).

use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use image::{Rgb, RgbImage};

use crate::config::DataConfig;
use crate::error::{Result, SaplingError};
use crate::model::{MaskPlan, MaskedAutoencoder};
use crate::ops::{NORM_PIX_EPS, patchify, unpatchify};

/// The figure's columns, as a title strip names them in files (the page has its own caption).
pub const COLUMN_TITLES: [&str; 4] = [
    "original",
    "masked input",
    "reconstruction",
    "visible pasted back",
];

/// Pixels between tiles.
const GUTTER: u32 = 2;

/// Integer magnification of small images (e.g. 32-px Fashion-MNIST), so a tile is at least
/// 128 px wide and patches stay visible.
pub fn zoom(img_size: usize) -> u32 {
    (128 / img_size as u32).max(1)
}

/// Renders the figure for `images` (`[B, 3, S, S]` normalised host values) masked by `plan`;
/// the one readback is awaited (a browser cannot block).
pub async fn recon_grid_async(
    model: &MaskedAutoencoder,
    images: Vec<f32>,
    plan: &MaskPlan,
    data: &DataConfig,
) -> Result<RgbImage> {
    let (columns, b, s) = recon_columns(model, images, plan);
    let values = columns
        .into_data_async()
        .await
        .map_err(|e| SaplingError::Device(e.to_string()))?
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 images");
    let columns: Vec<Vec<f32>> = values.chunks(b * 3 * s * s).map(|c| c.to_vec()).collect();
    Ok(image_grid(&columns, b, s, data))
}

/// [`recon_grid_async`], blocking.
#[cfg(not(target_family = "wasm"))]
pub fn recon_grid(
    model: &MaskedAutoencoder,
    images: Vec<f32>,
    plan: &MaskPlan,
    data: &DataConfig,
) -> Result<RgbImage> {
    pollster::block_on(recon_grid_async(model, images, plan, data))
}

/// The figure's four columns stacked as `[4·B, 3, S, S]` on the device, with `B` and `S`.
fn recon_columns(
    model: &MaskedAutoencoder,
    images: Vec<f32>,
    plan: &MaskPlan,
) -> (Tensor<4>, usize, usize) {
    let model = model.valid();
    let device = model.pos_embed.device();
    let c = &model.config;
    let (b, s, p) = (plan.batch, c.img_size, c.patch_size);
    let imgs = Tensor::<4>::from_data(TensorData::new(images, [b, 3, s, s]), &device);
    let pred = model.forward(imgs.clone(), plan).pred; // [B, L, P]
    let target = patchify(imgs.clone(), p);
    let pred = if c.norm_pix {
        let (var, mean) = target.var_mean(2);
        pred * var.add_scalar(NORM_PIX_EPS).sqrt() + mean
    } else {
        pred
    };
    let recon = unpatchify(pred, p, 3);
    let mask = Tensor::<2>::from_data(
        TensorData::new(plan.mask.clone(), [b, plan.num_patches]),
        &device,
    );
    let mask = unpatchify(mask.unsqueeze_dim::<3>(2).repeat_dim(2, p * p * 3), p, 3); // [B, 3, S, S], 1 = removed
    let keep = mask.clone().neg().add_scalar(1.0);
    // Removed patches are shown as 0 in normalised space: the data set's mean colour.
    let masked = imgs.clone() * keep.clone();
    let pasted = imgs.clone() * keep + recon.clone() * mask;
    (Tensor::cat(vec![imgs, masked, recon, pasted], 0), b, s)
}

/// Normalised `[B, 3, S, S]` images side by side: one row per sample, one column per entry of
/// `columns`, magnified by [`zoom`], on white with gutters.
pub fn image_grid(columns: &[Vec<f32>], b: usize, s: usize, data: &DataConfig) -> RgbImage {
    let z = zoom(s);
    let tile = s as u32 * z;
    let cols = columns.len() as u32;
    let width = cols * tile + (cols + 1) * GUTTER;
    let height = b as u32 * tile + (b as u32 + 1) * GUTTER;
    let mut grid = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    for (col, values) in columns.iter().enumerate() {
        for row in 0..b {
            let x0 = GUTTER + col as u32 * (tile + GUTTER);
            let y0 = GUTTER + row as u32 * (tile + GUTTER);
            for y in 0..s {
                for x in 0..s {
                    let px = std::array::from_fn(|ch| {
                        let v = values[((row * 3 + ch) * s + y) * s + x];
                        ((v * data.std[ch] + data.mean[ch]).clamp(0.0, 1.0) * 255.0).round() as u8
                    });
                    for (dy, dx) in (0..z).flat_map(|dy| (0..z).map(move |dx| (dy, dx))) {
                        grid.put_pixel(x0 + x as u32 * z + dx, y0 + y as u32 * z + dy, Rgb(px));
                    }
                }
            }
        }
    }
    grid
}

/// The figure for one image file through `model` (of `config`), masking `mask_ratio` of it
/// (default: the model's own ratio).
#[cfg(not(target_family = "wasm"))]
pub fn reconstruct_file(
    config: &crate::config::Config,
    model: &MaskedAutoencoder,
    image_path: &std::path::Path,
    mask_ratio: Option<f64>,
    seed: u64,
) -> Result<RgbImage> {
    let mut model_config = config.model.clone();
    if let Some(r) = mask_ratio {
        if !(0.0..1.0).contains(&r) {
            return Err(SaplingError::config(
                "--mask-ratio",
                format!("{r} must be in [0, 1)"),
            ));
        }
        model_config.mask_ratio = r;
    }
    let img = crate::data::source::decode_file(image_path).map_err(|e| SaplingError::Data {
        path: image_path.to_path_buf(),
        message: format!("cannot decode: {e}"),
    })?;
    let mut values = Vec::new();
    crate::data::augment::center_resize(
        &img,
        config.model.img_size as u32,
        &config.data,
        &mut values,
    );
    let plan = MaskPlan::random(
        1,
        model_config.num_patches(),
        model_config.num_visible(),
        seed,
    );
    recon_grid(model, values, &plan, &config.data)
}
