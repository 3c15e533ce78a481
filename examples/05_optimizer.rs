//! Step 5: AdamW and the learning-rate schedule.
//!
//! MAE/Sapiens train with AdamW (β = 0.9, 0.95; weight decay 0.05) and a learning rate that
//! scales with the batch: lr = base_lr × effective_batch / 256 (Sapiens: / 4096 at its scale).
//! It warms up linearly per iteration, then follows half a cosine down to a floor. Weight decay
//! applies to the linear layers' weight matrices only: biases, norms, the cls and mask tokens
//! (and the fixed position tables, which are not trained at all) get none.
//!
//! Run: `cargo run --release --example 05_optimizer`

mod common;

use std::collections::BTreeMap;

use burn::tensor::Device;
use sapling::config::Preset;
use sapling::model::MaskedAutoencoder;
use sapling::optim::Schedule;
use sapling::optim::decay::{decays, named_params};
use sapling::viz::plot::line_plot;

fn main() -> anyhow::Result<()> {
    let config = Preset::Tiny.config();
    let (effective, total) = (config.train.effective_batch, 1000);
    let schedule = Schedule::new(&config.optim, effective, total);
    println!(
        "base lr {:.1e} × {effective}/{} = peak lr {:.3e}; {} warmup steps of {total}",
        config.optim.base_lr, config.optim.lr_base_batch, schedule.peak_lr, schedule.warmup_steps
    );
    let points: Vec<(f64, f64)> = (0..total).map(|s| (s as f64, schedule.lr_at(s))).collect();
    for s in [
        0,
        schedule.warmup_steps / 2,
        schedule.warmup_steps,
        total / 2,
        total - 1,
    ] {
        println!("  step {s:>4}: lr {:.3e}", schedule.lr_at(s));
    }
    let path = common::out_dir("05_optimizer").join("lr.png");
    line_plot(&path, "learning rate, tiny preset", "step", "lr", &points)?;
    println!("wrote {}", path.display());

    let model = MaskedAutoencoder::new(&config.model, &Device::flex());
    let mut groups: BTreeMap<(bool, String), (usize, usize)> = BTreeMap::new();
    for param in named_params(&model) {
        // Group `blocks.3.attn.qkv.weight` as `blocks.*.attn.qkv.weight`.
        let kind: Vec<&str> = param
            .path
            .split('.')
            .map(|s| if s.parse::<usize>().is_ok() { "*" } else { s })
            .collect();
        let entry = groups
            .entry((decays(&param.path), kind.join(".")))
            .or_default();
        entry.0 += 1;
        entry.1 += param.shape.iter().product::<usize>();
    }
    for decay in [true, false] {
        println!(
            "{}:",
            if decay {
                "weight decay 0.05"
            } else {
                "no weight decay"
            }
        );
        for ((_, name), (count, numbers)) in groups.iter().filter(|((d, _), _)| *d == decay) {
            println!("  {name:<40} {count:>3} tensors {numbers:>9} values");
        }
    }
    println!("try: --effective-batch 256 on `sapling train` — the peak lr scales with it");
    Ok(())
}
