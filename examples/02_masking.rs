//! Step 2: random masking, per sample.
//!
//! MAE removes most patches (75 %) before the encoder, so the encoder only processes the rest —
//! that is where MAE's 3–4× speed-up over a plain ViT comes from. Each sample draws its own
//! random permutation; the first K patches of it are kept. sapling draws the permutation on
//! the CPU from (seed, sample index), so the same sample is masked the same way on every device
//! and after a resume.
//!
//! Run: `cargo run --release --example 02_masking`

mod common;

use sapling::config::DataConfig;
use sapling::model::MaskPlan;
use sapling::viz::{image_grid, save_png};

fn main() -> anyhow::Result<()> {
    let (size, p, ratio) = (96usize, 16usize, 0.75);
    let (grid, b) = (size / p, 4);
    let l = grid * grid;
    let k = ((1.0 - ratio) * l as f64) as usize;
    let plan = MaskPlan::random(b, l, k, 7);
    for s in 0..b {
        let kept: Vec<usize> = (0..l).filter(|&i| plan.mask[s * l + i] == 0.0).collect();
        println!("sample {s}: keeps {} of {l} patches: {kept:?}", kept.len());
    }
    println!("the encoder sees {k} tokens per image (+ cls) instead of {l}");

    // Originals and what the encoder is given (removed patches greyed out).
    let originals: Vec<f32> = (0..b).flat_map(|i| common::photo(i, size)).collect();
    let mut masked = originals.clone();
    for s in 0..b {
        for patch in (0..l).filter(|&i| plan.mask[s * l + i] == 1.0) {
            let (gy, gx) = (patch / grid, patch % grid);
            for c in 0..3 {
                for y in gy * p..(gy + 1) * p {
                    for x in gx * p..(gx + 1) * p {
                        // 0 in normalised space is the data set's mean colour.
                        masked[((s * 3 + c) * size + y) * size + x] = 0.0;
                    }
                }
            }
        }
    }
    let picture = image_grid(&[originals, masked], b, size, &DataConfig::default());
    let path = common::out_dir("02_masking").join("masks.png");
    save_png(&picture, &path)?;
    println!("wrote {}", path.display());
    println!(
        "try: a mask ratio of 0.9, or another seed — the masks change per sample, not per batch"
    );
    Ok(())
}
