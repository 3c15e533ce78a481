//! Step 7: a short real training run, reconstructions getting better.
//!
//! Everything so far, in the loop `sapling train` runs: the loader crops, flips and normalises
//! the embedded photos, each step masks them, runs the MAE, clips the global gradient norm and
//! steps AdamW at the scheduled lr; every few steps the same four masked images are
//! reconstructed into `recon/step-N.png` (original | masked | prediction | prediction with the
//! visible patches pasted back), and `loss.png`/`lr.png` are redrawn. A checkpoint is written at
//! the end — `sapling train --resume` would continue from it.
//!
//! Run: `cargo run --release --example 07_training_run` (40 s on two cores)

mod common;

use sapling::config::{BatchSize, DeviceChoice, Preset};
use sapling::train::{RunOptions, train};

fn main() -> anyhow::Result<()> {
    let mut config = Preset::Tiny.config();
    let steps = if common::fast() { 4 } else { 120 };
    config.train.steps = Some(steps);
    config.train.effective_batch = 16;
    config.train.batch_size = BatchSize::Fixed(16);
    config.train.device = DeviceChoice::Cpu;
    config.train.recon_every = (steps / 4).max(1);
    config.train.log_every = (steps / 12).max(1);
    config.train.checkpoint_every = steps;
    config.optim.warmup_steps = Some(steps / 10);
    let out = common::out_dir("07_training_run");
    config.train.out = out.clone();
    let summary = train(&config, RunOptions::default())?;
    let every = (steps as usize / 12).max(1);
    for (step, loss) in summary.losses.iter().step_by(every) {
        println!("step {step:>4}: loss {loss:.4}");
    }
    println!(
        "{} steps at {:.0} images/s on {}",
        summary.steps, summary.images_per_sec, summary.device
    );
    let mut pictures: Vec<_> = std::fs::read_dir(out.join("recon"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    pictures.sort();
    for p in &pictures {
        println!("wrote {}", p.display());
    }
    println!("open the recon pictures in order: blobs first, then edges and colours in place");
    println!("try: steps 400 (what `cargo run --release` does), or --data with your own photos");
    Ok(())
}
