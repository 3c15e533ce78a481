//! Step 6: probing the device and choosing the batch.
//!
//! Papers state an effective batch (4096 images per optimizer step for Sapiens); a given device
//! fits some micro-batch B of it, and gradient accumulation makes up the rest (4096 = B × accum).
//! sapling reads the adapter's limits, models the memory of one step for every B that divides
//! the effective batch — parameters, gradients, AdamW moments, saved activations including
//! attention scores, and the largest single tensor, which must fit WebGPU's storage-binding
//! limit — and then (for `--batch-size auto`) times real steps to pick the fastest that fits.
//!
//! Run: `cargo run --release --example 06_batch_probe`

mod common;

use sapling::config::{DeviceChoice, Preset};
use sapling::ops::{Kernels, Precision};
use sapling::planner::{DeviceLimits, Levers, Offload, TrialOptions, fmt_bytes, step_memory};
use sapling::train::plan;

fn main() -> anyhow::Result<()> {
    let selected = sapling::device::select(DeviceChoice::Auto)?;
    let limits = DeviceLimits::of(&selected, None);
    println!("device   {}", selected.describe());
    let or_none = |v: Option<u64>| v.map(fmt_bytes).unwrap_or_else(|| "none".into());
    println!(
        "limits   storage binding {}, buffer {}; memory budget {} ({})",
        or_none(limits.max_storage_buffer_binding_size),
        or_none(limits.max_buffer_size),
        fmt_bytes(limits.budget),
        limits.budget_source
    );
    // The memory model alone (no trial steps) for every preset, at its own effective batch.
    let modelled = TrialOptions::MODEL_ONLY;
    for preset in [
        Preset::Tiny,
        Preset::VitB,
        Preset::VitL,
        Preset::Sapiens03b,
        Preset::Sapiens2b,
    ] {
        let config = preset.config();
        match plan(&config, &selected.device, &limits, modelled) {
            Ok(p) => println!("{:<13} {}", preset.name(), p.summary()),
            Err(e) => println!("{:<13} does not fit: {e}", preset.name()),
        }
    }
    // What one Sapiens sample needs, and what the WGSL kernels (step 8), activation
    // checkpointing (only block inputs kept, blocks recomputed in backward) and mixed precision
    // (f16 activations) change.
    let sapiens = Preset::Sapiens03b.config().model;
    for kernels in [Kernels::Reference, Kernels::Wgsl] {
        for (checkpointing, precision) in [
            (false, Precision::F32),
            (false, Precision::F16),
            (true, Precision::F32),
            (true, Precision::F16),
        ] {
            let levers = Levers {
                kernels,
                checkpointing,
                max_tensor: Some(128 << 20),
                shards: 1,
                offload: Offload::Off,
                precision,
            };
            let m = step_memory(&sapiens, 1, 1, levers);
            println!(
                "sapiens-0.3b, 1 image, {kernels} kernels, checkpointing {checkpointing}, {precision}: {} per step; largest tensor {} ({})",
                fmt_bytes(m.total),
                m.largest.name,
                fmt_bytes(m.largest.bytes)
            );
        }
    }
    // Real trial steps for the small preset: measured speed and memory beside the model.
    let mut tiny = Preset::Tiny.config();
    tiny.train.device = DeviceChoice::Cpu;
    let trials = TrialOptions {
        sizes: if common::fast() { 1 } else { 3 },
        steps: if common::fast() { 1 } else { 3 },
    };
    let cpu = sapling::device::select(DeviceChoice::Cpu)?;
    let cpu_limits = DeviceLimits::of(&cpu, None);
    let chosen = plan(&tiny, &cpu.device, &cpu_limits, trials)?;
    for t in &chosen.trials {
        println!(
            "tiny on Flex, micro-batch {:>2}: {:>6.1} images/s, predicted {}, measured {}",
            t.micro_batch,
            t.images_per_sec,
            fmt_bytes(t.predicted_peak),
            t.measured_peak.map(fmt_bytes).unwrap_or_else(|| "-".into())
        );
    }
    println!("chosen: {}", chosen.summary());
    println!("try: `sapling probe --preset vit-b --memory-budget 2048` — B shrinks, accum grows");
    Ok(())
}
