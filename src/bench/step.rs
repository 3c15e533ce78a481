//! `sapling bench step`: the speed of one training step, split into its phases, with the
//! model's FLOPs and the FLOP rate achieved.

use std::fmt;

use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;
use web_time::Instant;

use crate::config::Config;
use crate::error::{Result, SaplingError};
use crate::model::{FlopCount, MaskPlan, MaskedAutoencoder, flops_per_image};
use crate::optim::{self, clip};
use crate::probe::fmt_bytes;
use crate::probe::peak::PeakMeter;
use crate::probe::trial::{median, synthetic_batch};

/// What one benchmark run measured (medians over the timed steps).
#[derive(Debug, Clone, Serialize)]
pub struct StepBench {
    pub preset: String,
    pub device: String,
    pub micro_batch: usize,
    pub timed_steps: usize,
    pub images_per_sec: f64,
    pub forward_ms: f64,
    pub backward_ms: f64,
    /// Global-norm clipping and the AdamW update.
    pub optimizer_ms: f64,
    pub flops: FlopCount,
    /// `flops.train_step × images/s`.
    pub achieved_flops_per_sec: f64,
    /// The device's own large-matmul rate (1024² f32, measured in the same run): the practical
    /// peak the step's FLOP rate is compared with.
    pub matmul_flops_per_sec: f64,
    /// `achieved_flops_per_sec / matmul_flops_per_sec`.
    pub fraction_of_matmul_peak: f64,
    /// Peak memory over the run, where the device reports it, and how it was read.
    pub peak_memory: Option<u64>,
    pub peak_memory_by: Option<String>,
}

/// Times `timed` steps (after two warm-up steps) of micro-batch `micro` on a fresh model,
/// waiting for the device between phases; `matmul_flops_per_sec` is the device's
/// [`matmul_rate`], measured once by the caller however many steps it benchmarks.
pub fn bench_step(
    config: &Config,
    device: &Device,
    describe: &str,
    micro: usize,
    timed: usize,
    matmul_flops_per_sec: f64,
) -> Result<StepBench> {
    let sync = |d: &Device| d.sync().map_err(|e| SaplingError::Device(e.to_string()));
    let meter = PeakMeter::start(device);
    let ad = device.clone().autodiff();
    ad.seed(config.train.seed);
    let kernels = config.train.kernels;
    let mut model = MaskedAutoencoder::new(&config.model, &ad).with_kernels(kernels);
    let mut optim = optim::adamw(&config.optim, &model, model.kernels());
    let batch = synthetic_batch(micro, config.model.img_size, config.train.seed);
    let size = config.model.img_size;
    let plan = MaskPlan::random(
        micro,
        config.model.num_patches(),
        config.model.num_visible(),
        config.train.seed,
    );
    let (mut fwd, mut bwd, mut opt) = (Vec::new(), Vec::new(), Vec::new());
    for step in 0..timed.max(1) + 2 {
        let images = Tensor::<4>::from_data(
            TensorData::new(batch.images.clone(), [micro, 3, size, size]),
            &ad,
        );
        let t0 = Instant::now();
        let loss = model.forward(images, &plan).loss;
        sync(&ad)?;
        let t1 = Instant::now();
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        sync(&ad)?;
        let t2 = Instant::now();
        let norm = clip::global_norm(&model, &grads).expect("the model has parameters");
        if config.optim.clip_grad > 0.0 {
            clip::clip_to(&model, &mut grads, norm, config.optim.clip_grad);
        }
        model = optim.step(1e-8, model, grads);
        sync(&ad)?;
        let t3 = Instant::now();
        if step >= 2 {
            fwd.push((t1 - t0).as_secs_f64());
            bwd.push((t2 - t1).as_secs_f64());
            opt.push((t3 - t2).as_secs_f64());
        }
    }
    drop(model);
    let peak = meter.finish(device);
    let (f, b, o) = (median(fwd), median(bwd), median(opt));
    let images_per_sec = micro as f64 / (f + b + o);
    let flops = flops_per_image(&config.model);
    let achieved = flops.train_step * images_per_sec;
    Ok(StepBench {
        preset: config.preset.name().to_string(),
        device: describe.to_string(),
        micro_batch: micro,
        timed_steps: timed.max(1),
        images_per_sec,
        forward_ms: f * 1e3,
        backward_ms: b * 1e3,
        optimizer_ms: o * 1e3,
        flops,
        achieved_flops_per_sec: achieved,
        matmul_flops_per_sec,
        fraction_of_matmul_peak: achieved / matmul_flops_per_sec,
        peak_memory: peak.map(|p| p.0),
        peak_memory_by: peak.map(|p| p.1.to_string()),
    })
}

/// FLOP/s of an `n × n` f32 matmul on `device` (median of `timed` after a warm-up).
pub fn matmul_rate(device: &Device, n: usize, timed: usize) -> Result<f64> {
    let a = Tensor::<2>::random([n, n], burn::tensor::Distribution::Default, device);
    let b = Tensor::<2>::random([n, n], burn::tensor::Distribution::Default, device);
    let mut secs = Vec::new();
    for i in 0..timed + 1 {
        let t0 = Instant::now();
        let c = a.clone().matmul(b.clone());
        device
            .sync()
            .map_err(|e| SaplingError::Device(e.to_string()))?;
        drop(c);
        if i > 0 {
            secs.push(t0.elapsed().as_secs_f64());
        }
    }
    Ok(2.0 * (n as f64).powi(3) / median(secs))
}

impl fmt::Display for StepBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "preset     {} on {}", self.preset, self.device)?;
        writeln!(
            f,
            "step       micro-batch {}: {:.1} images/s (median of {} steps)",
            self.micro_batch, self.images_per_sec, self.timed_steps
        )?;
        writeln!(
            f,
            "phases     forward {:.1} ms, backward {:.1} ms, optimizer {:.1} ms",
            self.forward_ms, self.backward_ms, self.optimizer_ms
        )?;
        writeln!(
            f,
            "flops      {:.3} GFLOP per image per training step; encoder {:.3} GFLOPs by the Sapiens table's convention",
            self.flops.train_step / 1e9,
            self.flops.paper_encoder / 1e9
        )?;
        writeln!(
            f,
            "achieved   {:.2} GFLOP/s = {:.0}% of this device's 1024² matmul rate ({:.2} GFLOP/s)",
            self.achieved_flops_per_sec / 1e9,
            100.0 * self.fraction_of_matmul_peak,
            self.matmul_flops_per_sec / 1e9
        )?;
        write!(
            f,
            "memory     peak {}",
            self.peak_memory
                .map_or("not reported".to_string(), |p| format!(
                    "{} ({})",
                    fmt_bytes(p),
                    self.peak_memory_by.as_deref().unwrap_or("")
                ))
        )
    }
}
