//! Activation checkpointing: the same losses and gradients as keeping every activation, on
//! every kernel path, with accumulation; less memory measured, and the memory model's
//! prediction still matching what the device reports.

use burn::tensor::Device;
use sapling::config::{BatchSize, Checkpointing, Config, DataConfig, DeviceChoice, KernelChoice};
use sapling::data::{ImageSource, Loader};
use sapling::model::MaskedAutoencoder;
use sapling::ops::{Kernels, Precision};
use sapling::planner::{BatchPlan, Levers};
use sapling::train::Trainer;

use crate::common::{copy_model, micro_config, wgpu_or_skip};

/// Steps a trainer without and one with checkpointing from the same weights, over the same
/// micro-batches (two per step, so accumulation is covered), comparing every loss and norm.
fn agree(device: &Device, kernels: Kernels, tolerance: f64) {
    let mut cfg = micro_config(&format!("checkpointing-{kernels}"));
    cfg.train.effective_batch = 8;
    let device = device.clone().autodiff();
    device.seed(21);
    let model = MaskedAutoencoder::new(&cfg.model, &device);
    let copy = copy_model(&model, &device);
    let levers = |checkpointing| Levers {
        kernels,
        checkpointing,
        max_tensor: None,
        shards: 1,
        offload: sapling::planner::levers::Offload::Off,
        precision: Precision::F32,
    };
    let mut kept = trainer(&cfg, model, &device, levers(false));
    let mut recomputed = trainer(&cfg, copy, &device, levers(true));
    let data = DataConfig {
        workers: 1,
        ..DataConfig::default()
    };
    let mut loader = Loader::new(ImageSource::Embedded, &data, 32, 4, 0, 0);
    for step in 0..3 {
        let batches = vec![loader.next_batch().unwrap(), loader.next_batch().unwrap()];
        let a = kept.step(step, 1e-3, batches.clone()).unwrap();
        let b = recomputed.step(step, 1e-3, batches).unwrap();
        eprintln!(
            "{kernels} step {step}: kept {:.9} / {:.9}, recomputed {:.9} / {:.9}",
            a.loss, a.grad_norm, b.loss, b.grad_norm
        );
        assert!(
            (a.loss - b.loss).abs() <= tolerance * a.loss
                && (a.grad_norm - b.grad_norm).abs() <= tolerance * a.grad_norm,
            "{kernels} step {step}: {a:?} vs {b:?}"
        );
    }
}

/// A trainer over `model` (the weights to compare from) whose config asks for `levers`.
fn trainer(cfg: &Config, model: MaskedAutoencoder, device: &Device, levers: Levers) -> Trainer {
    let mut cfg = cfg.clone();
    cfg.train.kernels = match levers.kernels {
        Kernels::Reference => KernelChoice::Reference,
        Kernels::Wgsl => KernelChoice::Wgsl,
        Kernels::Cpu => KernelChoice::Cpu,
    };
    cfg.train.activation_checkpointing = if levers.checkpointing {
        Checkpointing::Blocks
    } else {
        Checkpointing::Off
    };
    let trainer = Trainer::from_model(&cfg, model, device).unwrap();
    assert_eq!(trainer.levers(), levers);
    trainer
}

#[test]
fn checkpointed_steps_equal_kept_ones_on_the_cpu() {
    // The recomputed forward is the same arithmetic, and each stage gets exactly the gradient
    // of its output: bit for bit with the CPU kernels. burn's own layer norm is a dozen ops
    // whose input also feeds the residual, so a block input sums three gradient contributions,
    // in an order that differs when the block's input is a graph leaf (last-bit differences).
    agree(&Device::flex(), Kernels::Cpu, 0.0);
    agree(&Device::flex(), Kernels::Reference, 1e-6);
}

#[test]
fn checkpointed_steps_equal_kept_ones_on_webgpu() {
    let Some(gpu) = wgpu_or_skip("checkpointed_steps_equal_kept_ones_on_webgpu") else {
        return;
    };
    agree(&gpu.device, Kernels::Reference, 1e-6);
    agree(&gpu.device, Kernels::Wgsl, 1e-6);
}

/// `sapling probe` for tiny on the CPU, one trial at micro-batch 32 (its effective batch, where
/// activations are most of a step's memory), its peak measured in its own process.
fn tiny_plan(checkpointing: &str) -> BatchPlan {
    crate::planner::plan_in_child(&[
        "--device",
        "cpu",
        "--activation-checkpointing",
        checkpointing,
        "--trial-sizes",
        "1",
        "--trial-steps",
        "1",
    ])
}

#[test]
fn checkpointing_cuts_the_measured_peak_as_modelled() {
    let (kept, recomputed) = (tiny_plan("off"), tiny_plan("blocks"));
    crate::planner::assert_model_matches(&kept, "tiny, every activation kept");
    crate::planner::assert_model_matches(&recomputed, "tiny, blocks recomputed");
    let peak = |p: &BatchPlan| p.trials[0].measured_peak.expect("Flex reports its peak");
    eprintln!(
        "tiny micro-batch 32 on Flex: peak {:.1} MiB kept, {:.1} MiB recomputed",
        peak(&kept) as f64 / (1 << 20) as f64,
        peak(&recomputed) as f64 / (1 << 20) as f64
    );
    assert!(
        (peak(&recomputed) as f64) < 0.85 * peak(&kept) as f64,
        "checkpointing saved too little"
    );
    assert_eq!(recomputed.micro_batch, 32);
    assert_eq!(recomputed.levers.map(|l| l.checkpointing), Some(true));
}

#[test]
fn the_planner_checkpoints_only_a_size_that_needs_it() {
    let mut c = micro_config("checkpointing-auto");
    c.train.device = DeviceChoice::Cpu;
    c.train.batch_size = BatchSize::Auto;
    c.train.effective_batch = 8;
    c.train.offload_optimizer = sapling::config::Switch::Off;
    let limits = crate::planner::flex_limits();
    let options = sapling::train::lever_options(&c, &Device::flex(), &limits, 1).unwrap();
    assert_eq!(options.len(), 2, "{options:?}");
    let roomy = sapling::planner::candidates(&c.model, &options, 8, &limits);
    assert!(roomy.iter().all(|c| !c.levers.checkpointing), "{roomy:?}");
    // A budget between the two models of micro-batch 8: it fits only recomputed.
    let off = sapling::planner::step_memory(&c.model, 8, 1, options[0]).total;
    let on = sapling::planner::step_memory(&c.model, 8, 1, options[1]).total;
    assert!(on < off);
    let budget = ((on + off) / 2) as f64 / 0.85;
    let tight = limits.clone().simulated(None, Some(budget as u64));
    let fits = sapling::planner::candidates(&c.model, &options, 8, &tight);
    assert_eq!(fits[0].micro_batch, 8);
    assert!(fits[0].levers.checkpointing, "{fits:?}");
    assert!(
        fits.iter().skip(1).all(|c| !c.levers.checkpointing),
        "smaller sizes fit without: {fits:?}"
    );
}

/// Steps a trainer that splits every layer into pieces (a tiny tensor limit) and one that does
/// not, from the same weights, comparing losses and norms.
fn split_agrees(device: &Device, kernels: Kernels) {
    let cfg = micro_config(&format!("split-{kernels}"));
    let device = device.clone().autodiff();
    device.seed(23);
    let model = MaskedAutoencoder::new(&cfg.model, &device);
    let copy = copy_model(&model, &device);
    let levers = |max_tensor| Levers {
        kernels,
        checkpointing: false,
        max_tensor,
        shards: 1,
        offload: sapling::planner::levers::Offload::Off,
        precision: Precision::F32,
    };
    let mut whole = trainer(&cfg, model, &device, levers(None));
    // 4 KiB: the packed qkv of this model is 4·17·96·4 B and the MLP's hidden 4·17·128·4 B,
    // so q, k, v are computed apart and the MLP in token pieces, in the encoder and decoder.
    let mut split = Trainer::from_model_with(&cfg, copy, &device, levers(Some(4 << 10))).unwrap();
    let data = DataConfig {
        workers: 1,
        ..DataConfig::default()
    };
    let mut loader = Loader::new(ImageSource::Embedded, &data, 32, 4, 0, 0);
    for step in 0..3 {
        let batch = loader.next_batch().unwrap();
        let a = whole.step(step, 1e-3, vec![batch.clone()]).unwrap();
        let b = split.step(step, 1e-3, vec![batch]).unwrap();
        eprintln!("{kernels} step {step}: whole {a:?}, split {b:?}");
        assert!(
            (a.loss - b.loss).abs() <= 1e-5 * a.loss
                && (a.grad_norm - b.grad_norm).abs() <= 1e-4 * a.grad_norm,
            "{kernels} step {step}: {a:?} vs {b:?}"
        );
    }
}

#[test]
fn layers_split_for_the_binding_limit_train_alike() {
    split_agrees(&Device::flex(), Kernels::Reference);
    if let Some(gpu) = wgpu_or_skip("layers_split_for_the_binding_limit_train_alike") {
        split_agrees(&gpu.device, Kernels::Wgsl);
    }
}
