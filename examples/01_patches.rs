//! Step 1: images to patches and back.
//!
//! A ViT does not see pixels, it sees a sequence of patches: the image is cut into a grid of
//! p × p squares and each square is flattened to one vector of p·p·C numbers. MAE's `patchify`
//! orders each vector as (row in patch, column in patch, channel), and `unpatchify` is its exact
//! inverse — the loss compares predictions with targets in this patch space.
//!
//! Run: `cargo run --release --example 01_patches`

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use image::{Rgb, RgbImage};
use sapling::config::DataConfig;
use sapling::ops::{patchify, unpatchify};
use sapling::viz::save_png;

fn main() -> anyhow::Result<()> {
    let (size, p) = (96, 16);
    let device = Device::flex();
    let values = common::photo(0, size);
    let imgs = Tensor::<4>::from_data(TensorData::new(values.clone(), [1, 3, size, size]), &device);

    let patches = patchify(imgs.clone(), p);
    let [_, l, dim] = patches.dims();
    println!("image   [1, 3, {size}, {size}]");
    println!(
        "patches [1, {l}, {dim}]: a {g}×{g} grid of {p}×{p} patches, each {p}·{p}·3 = {dim} numbers",
        g = size / p
    );

    let back = unpatchify(patches.clone(), p, 3);
    let diff = (back - imgs).abs().max().into_scalar::<f32>();
    println!(
        "unpatchify(patchify(x)) differs from x by at most {diff} (exact: it only moves values)"
    );

    // The same numbers drawn as the model sees them: patch by patch, with a gap between.
    let data = DataConfig::default();
    let rows: Vec<f32> = patches.into_data().try_into_vec().expect("f32");
    let (g, gap, zoom) = (size / p, 4u32, 2u32);
    let cell = p as u32 * zoom + gap;
    let mut picture =
        RgbImage::from_pixel(g as u32 * cell + gap, g as u32 * cell + gap, Rgb([255; 3]));
    for patch in 0..l {
        let (gy, gx) = ((patch / g) as u32, (patch % g) as u32);
        for j in 0..dim {
            // MAE's order inside a patch: (row, column, channel).
            let (y, x, c) = (j / (p * 3), (j / 3) % p, j % 3);
            let v = rows[patch * dim + j] * data.std[c] + data.mean[c];
            let level = (v.clamp(0.0, 1.0) * 255.0) as u8;
            for dy in 0..zoom {
                for dx in 0..zoom {
                    let px = picture.get_pixel_mut(
                        gap + gx * cell + x as u32 * zoom + dx,
                        gap + gy * cell + y as u32 * zoom + dy,
                    );
                    px.0[c] = level;
                }
            }
        }
    }
    let path = common::out_dir("01_patches").join("patch_grid.png");
    save_png(&picture, &path)?;
    println!("wrote {}", path.display());
    println!("try: change p to 8 or 32 — how many tokens would the encoder see?");
    Ok(())
}
