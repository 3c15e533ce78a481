//! Step 4: one forward pass of the MAE, stage by stage.
//!
//! The encoder embeds only the visible patches (plus a cls token), the decoder gets the encoded
//! tokens back in patch order with a shared learned mask token in every removed slot, and a
//! linear head predicts every patch's pixels. The loss is the mean squared error over the
//! *removed* patches only, against targets normalised per patch (norm-pix): each patch's own
//! mean and variance are taken out, so the model spends its capacity on structure and edges
//! instead of on each patch's brightness. MAE reports better representations with it.
//!
//! Run: `cargo run --release --example 04_forward_pass`

mod common;

use burn::tensor::{Device, Int, Tensor, TensorData};
use sapling::config::Preset;
use sapling::model::loss::masked_mean;
use sapling::model::{MaskPlan, MaskedAutoencoder, analytic_params};
use sapling::ops::{Ops, patchify};

fn main() -> anyhow::Result<()> {
    let config = Preset::Tiny.config().model;
    let device = Device::flex();
    device.seed(0);
    let model = MaskedAutoencoder::new(&config, &device);
    let counts = analytic_params(&config);
    println!(
        "tiny MAE: {:.2} M trained parameters (+ {} fixed position-table values)",
        counts.learnable as f64 / 1e6,
        counts.fixed
    );
    let (b, s, p) = (2, config.img_size, config.patch_size);
    let (l, k) = (config.num_patches(), config.num_visible());
    let images: Vec<f32> = (0..b).flat_map(|i| common::photo(i, s)).collect();
    let imgs = Tensor::<4>::from_data(TensorData::new(images, [b, 3, s, s]), &device);
    println!("1. images              {:?}", imgs.dims());
    let patches = patchify(imgs.clone(), p);
    println!(
        "2. patches             {:?}  ({l} patches of {p}×{p}×3)",
        patches.dims()
    );
    let plan = MaskPlan::random(b, l, k, 1);
    println!(
        "3. mask                keep {k} of {l} per sample ({:.0} % removed)",
        100.0 * (l - k) as f64 / l as f64
    );
    let ids = |v: Vec<i64>| {
        let n = v.len();
        Tensor::<1, Int>::from_data(TensorData::new(v, [n]), &device)
    };
    let keep = plan.keep_rows();
    let pos: Vec<i64> = keep.iter().map(|r| r % l as i64).collect();
    // The encoder gathers the kept patches of the images itself (`Ops::patch_gather`).
    let latent = model.encode(imgs.clone(), ids(keep), ids(pos), k);
    println!(
        "4. encoder output      {:?}  (cls + {k} visible tokens, width {})",
        latent.dims(),
        config.dim
    );
    let pred = model.forward_decoder(latent, ids(plan.restore_rows()), l);
    println!(
        "5. decoder prediction  {:?}  (every patch, width {} → pixels {})",
        pred.dims(),
        config.decoder_dim,
        config.patch_dim()
    );
    let mask = Tensor::<2>::from_data(TensorData::new(plan.mask.clone(), [b, l]), &device);
    let loss = |norm_pix: bool| {
        let per_patch = Ops::REFERENCE.per_patch_loss(pred.clone(), imgs.clone(), p, norm_pix);
        masked_mean(per_patch, mask.clone()).into_scalar::<f32>()
    };
    let (with, without) = (loss(true), loss(false));
    println!(
        "6. loss on removed patches: {with:.4} with norm-pix targets, {without:.4} with raw pixels"
    );
    println!(
        "   norm-pix targets have unit variance per patch, so predicting all zeros would score"
    );
    println!("   exactly 1; an untrained model's random outputs add their own variance on top.");
    println!("   Training drives it well below 1 (step 7).");
    println!("try: Preset::VitB — the same stages at 224 px, 196 patches, 49 kept");
    Ok(())
}
