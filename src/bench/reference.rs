//! A reference case for the PyTorch MAE in `benches/torch_mae.py`: the initial weights, the
//! exact images and masks of a few steps, the learning rates, and the loss and global gradient
//! norm sapling got at each, so the two implementations can be compared step by step.

use std::path::Path;

use burn::tensor::Device;
use serde::Serialize;

use crate::config::Config;
use crate::data::{ImageSource, Loader};
use crate::error::{Result, SaplingError};
use crate::export::{RawTensor, model_tensors, write_f32_tensors, write_safetensors};
use crate::planner::Levers;
use crate::train::initial_trainer;

/// `case.json`: what the PyTorch side needs besides tensors, and sapling's results.
#[derive(Debug, Clone, Serialize)]
pub struct ReferenceCase {
    pub config: Config,
    pub micro_batch: usize,
    pub lrs: Vec<f64>,
    pub losses: Vec<f64>,
    pub grad_norms: Vec<f64>,
}

/// Trains `steps` steps of micro-batch `micro` (no accumulation) from a fresh model (or the
/// config's `train.init_from` weights) on the embedded photos, at the constant learning rate
/// `lr` (large enough that a wrong update shows in the weights), and writes `weights.safetensors` (before the first step), `final.safetensors`
/// (after the last), `case.safetensors` (`images [S, B, 3, H, W]` f32, `ids_shuffle [S, B, L]`
/// i64) and `case.json` into `dir`.
pub fn write_reference_case(
    config: &Config,
    device: &Device,
    micro: usize,
    steps: usize,
    lr: f64,
    dir: &Path,
) -> Result<ReferenceCase> {
    std::fs::create_dir_all(dir).map_err(|e| SaplingError::io(dir, e))?;
    let levers = Levers::of(config, *device == Device::flex());
    let (mut trainer, _) = initial_trainer(config, device, levers)?;
    write_f32_tensors(
        model_tensors(trainer.model())?,
        &[],
        &dir.join("weights.safetensors"),
    )?;
    let mut loader = Loader::new(
        ImageSource::Embedded,
        &config.data,
        config.model.img_size,
        micro,
        config.train.seed,
        0,
    );
    let (mut images, mut ids) = (Vec::new(), Vec::new());
    let mut case = ReferenceCase {
        config: config.clone(),
        micro_batch: micro,
        lrs: Vec::new(),
        losses: Vec::new(),
        grad_norms: Vec::new(),
    };
    for step in 0..steps as u64 {
        let batch = loader.next_batch()?;
        let plan = trainer.mask_for(batch.first_sample, micro);
        images.extend_from_slice(&batch.images);
        ids.extend(plan.ids_shuffle.iter().map(|&i| i as i64));
        let stats = trainer.step(step, lr, vec![batch])?;
        case.lrs.push(lr);
        case.losses.push(stats.loss);
        case.grad_norms.push(stats.grad_norm);
    }
    write_f32_tensors(
        model_tensors(trainer.model())?,
        &[],
        &dir.join("final.safetensors"),
    )?;
    let (s, l) = (config.model.img_size, config.model.num_patches());
    let tensors = [
        RawTensor {
            name: "images".into(),
            dtype: safetensors::Dtype::F32,
            shape: vec![steps, micro, 3, s, s],
            bytes: images.iter().flat_map(|v| v.to_le_bytes()).collect(),
        },
        RawTensor {
            name: "ids_shuffle".into(),
            dtype: safetensors::Dtype::I64,
            shape: vec![steps, micro, l],
            bytes: ids.iter().flat_map(|v| v.to_le_bytes()).collect(),
        },
    ];
    write_safetensors(&tensors, &[], &dir.join("case.safetensors"))?;
    let json = serde_json::to_string_pretty(&case).expect("case serialises");
    crate::atomic::write(&dir.join("case.json"), json.as_bytes())?;
    Ok(case)
}
