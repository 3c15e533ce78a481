//! Real trial steps: a throwaway model runs forward, backward and AdamW at one micro-batch,
//! so the plan rests on what the device did, not only on the memory model.

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::tensor::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::memory::step_memory;
use super::peak::PeakMeter;
use crate::config::{BatchSize, Config};
use crate::data::Batch;
use crate::train::{PhaseTimes, Trainer};

/// What one micro-batch size did on the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub micro_batch: usize,
    /// Why the size was rejected; `None` when every step ran.
    pub error: Option<String>,
    /// Median forward + backward time of one micro-batch, after the first step.
    pub forward_backward_ms: f64,
    /// Median clipping + AdamW time.
    pub optimizer_ms: f64,
    /// Images per second of a whole optimizer step at the plan's accumulation, from the two
    /// phases: `effective / (accum · forward_backward + optimizer)`.
    pub images_per_sec: f64,
    /// The memory model's peak for this size.
    pub predicted_peak: u64,
    /// Peak memory the device reported over the trial, where it reports one.
    pub measured_peak: Option<u64>,
    /// How `measured_peak` was read.
    pub measured_by: Option<String>,
}

impl Trial {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// Runs one warm-up step (it compiles kernels and allocates AdamW's moments) and `timed`
/// measured steps of micro-batch `micro` on a fresh model; `accum` is only used to turn the
/// phase times into whole-step throughput. Failures, panics included, come back as
/// [`Trial::error`].
pub fn run_trial(
    config: &Config,
    device: &Device,
    micro: usize,
    accum: usize,
    timed: usize,
) -> Trial {
    let meter = PeakMeter::start(device);
    let result = match catch_unwind(AssertUnwindSafe(|| measure(config, device, micro, timed))) {
        Ok(measured) => measured.map_err(|e| e.to_string()),
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the step panicked".to_string())),
    };
    Trial::conclude(config, device, micro, accum, meter, result)
}

/// [`run_trial`] without blocking (the browser's probe). A panic cannot be caught there: it
/// aborts the module, as every panic in wasm32 does.
pub async fn run_trial_async(
    config: &Config,
    device: &Device,
    micro: usize,
    accum: usize,
    timed: usize,
) -> Trial {
    let meter = PeakMeter::start(device);
    let result = measure_async(config, device, micro, timed)
        .await
        .map_err(|e| e.to_string());
    Trial::conclude(config, device, micro, accum, meter, result)
}

impl Trial {
    fn conclude(
        config: &Config,
        device: &Device,
        micro: usize,
        accum: usize,
        meter: PeakMeter,
        // The medians, or why the size failed (an error's or a panic's message).
        result: std::result::Result<(f64, f64), String>,
    ) -> Trial {
        let mut trial = Trial {
            micro_batch: micro,
            error: None,
            forward_backward_ms: 0.0,
            optimizer_ms: 0.0,
            images_per_sec: 0.0,
            predicted_peak: step_memory(&config.model, micro, accum, config.train.kernels).total,
            measured_peak: None,
            measured_by: None,
        };
        if let Some((peak, how)) = meter.finish(device) {
            trial.measured_peak = Some(peak);
            trial.measured_by = Some(how.to_string());
        }
        match result {
            Ok((fb, opt)) => {
                trial.forward_backward_ms = fb * 1e3;
                trial.optimizer_ms = opt * 1e3;
                trial.images_per_sec = (micro * accum) as f64 / (accum as f64 * fb + opt);
            }
            Err(message) => trial.error = Some(message),
        }
        device.memory_cleanup();
        trial
    }
}

/// A throwaway trainer at micro-batch `micro`, its one synthetic batch, and the tiny learning
/// rate a trial steps at (it measures, it does not need to learn).
fn trial_trainer(config: &Config, device: &Device, micro: usize) -> (Trainer, Batch, f64) {
    let mut config = config.clone();
    config.train.batch_size = BatchSize::Fixed(micro);
    let trainer = Trainer::new(&config, device);
    let batch = synthetic_batch(micro, config.model.img_size, config.train.seed);
    (trainer, batch, 1e-8)
}

/// Median seconds of (forward + backward, optimizer) over the timed steps: a shared machine's
/// hiccups move the mean, not the median.
fn measure(
    config: &Config,
    device: &Device,
    micro: usize,
    timed: usize,
) -> crate::Result<(f64, f64)> {
    let (mut trainer, batch, lr) = trial_trainer(config, device, micro);
    let mut times = Vec::new();
    for step in 0..=timed.max(1) as u64 {
        times.push(trainer.step_timed(step, lr, vec![batch.clone()])?.1);
    }
    Ok(medians_after_warmup(times))
}

/// [`measure`], awaiting each step.
async fn measure_async(
    config: &Config,
    device: &Device,
    micro: usize,
    timed: usize,
) -> crate::Result<(f64, f64)> {
    let (mut trainer, batch, lr) = trial_trainer(config, device, micro);
    let mut times = Vec::new();
    for step in 0..=timed.max(1) as u64 {
        times.push(
            trainer
                .step_timed_async(step, lr, vec![batch.clone()])
                .await?
                .1,
        );
    }
    Ok(medians_after_warmup(times))
}

/// The first step compiles kernels and allocates AdamW's moments: it is left out.
fn medians_after_warmup(times: Vec<PhaseTimes>) -> (f64, f64) {
    let timed = &times[1..];
    (
        median(timed.iter().map(|t| t.forward_backward).collect()),
        median(timed.iter().map(|t| t.optimizer).collect()),
    )
}

/// The median of a non-empty list.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Normalised-looking noise: the step's cost does not depend on the pixels.
pub fn synthetic_batch(batch: usize, size: usize, seed: u64) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let images = (0..batch * 3 * size * size)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect();
    Batch {
        images,
        batch,
        size,
        first_sample: 0,
    }
}
