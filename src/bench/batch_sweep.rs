//! Does the probe pick a good micro-batch? Run whole optimizer steps (accumulation included)
//! at every micro-batch that fits and compare the probe's choice with the fastest.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::tensor::Device;
use serde::Serialize;

use crate::config::{BatchSize, Config};
use crate::error::Result;
use crate::probe::trial::{median, synthetic_batch};
use crate::probe::{BatchPlan, DeviceLimits, ProbeOptions, plan};
use crate::train::Trainer;

/// One micro-batch of the sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub micro_batch: usize,
    pub accum: usize,
    /// Images per second over the timed optimizer steps; 0 when a step failed.
    pub images_per_sec: f64,
    pub error: Option<String>,
}

/// The probe's plan next to the sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    pub plan: BatchPlan,
    pub rows: Vec<SweepRow>,
    /// Throughput of the probe's choice over the best in the sweep.
    pub ratio: f64,
}

/// Plans the batch as `sapling train` would, then times `steps` whole optimizer steps at every
/// fitting micro-batch with at most `max_accum` accumulation steps.
pub fn batch_sweep(
    config: &Config,
    device: &Device,
    limits: &DeviceLimits,
    steps: usize,
    max_accum: usize,
) -> Result<SweepReport> {
    let mut auto = config.clone();
    auto.train.batch_size = BatchSize::Auto;
    let plan = plan(&auto, device, limits, ProbeOptions::default())?;
    let effective = config.train.effective_batch;
    let rows: Vec<SweepRow> =
        crate::probe::plan::candidates(&config.model, config.train.kernels, effective, limits)
            .into_iter()
            .filter(|(m, _)| effective / m <= max_accum)
            .map(|(m, _)| {
                tracing::info!("sweep: micro-batch {m}");
                let result =
                    catch_unwind(AssertUnwindSafe(|| time_steps(config, device, m, steps)));
                device.memory_cleanup();
                let (images_per_sec, error) = match result {
                    Ok(Ok(v)) => (v, None),
                    Ok(Err(e)) => (0.0, Some(e.to_string())),
                    Err(_) => (0.0, Some("the step panicked".to_string())),
                };
                SweepRow {
                    micro_batch: m,
                    accum: effective / m,
                    images_per_sec,
                    error,
                }
            })
            .collect();
    let best = rows.iter().map(|r| r.images_per_sec).fold(0.0, f64::max);
    let chosen = rows
        .iter()
        .find(|r| r.micro_batch == plan.micro_batch)
        .map_or(0.0, |r| r.images_per_sec);
    Ok(SweepReport {
        ratio: if best > 0.0 { chosen / best } else { 0.0 },
        plan,
        rows,
    })
}

/// Images per second of whole steps at micro-batch `micro` (median step), after one warm-up
/// step.
fn time_steps(config: &Config, device: &Device, micro: usize, steps: usize) -> Result<f64> {
    let mut config = config.clone();
    config.train.batch_size = BatchSize::Fixed(micro);
    let accum = config.train.effective_batch / micro;
    let mut trainer = Trainer::new(&config, device);
    let batch = synthetic_batch(micro, config.model.img_size, config.train.seed);
    let batches = || vec![batch.clone(); accum];
    trainer.step_timed(0, 1e-8, batches())?;
    let mut secs = Vec::new();
    for step in 1..=steps.max(1) as u64 {
        let (_, t) = trainer.step_timed(step, 1e-8, batches())?;
        secs.push(t.forward_backward + t.optimizer);
    }
    Ok(config.train.effective_batch as f64 / median(secs))
}

impl fmt::Display for SweepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "device     {}", self.plan.limits.adapter)?;
        writeln!(f, "probe      {}", self.plan.summary())?;
        writeln!(f, "{:>8} {:>6} {:>12}", "micro", "accum", "images/s")?;
        for r in &self.rows {
            let mark = if r.micro_batch == self.plan.micro_batch {
                "  <- probe's choice"
            } else {
                ""
            };
            match &r.error {
                None => writeln!(
                    f,
                    "{:>8} {:>6} {:>12.1}{mark}",
                    r.micro_batch, r.accum, r.images_per_sec
                )?,
                Some(e) => writeln!(
                    f,
                    "{:>8} {:>6} {:>12}  failed: {e}",
                    r.micro_batch, r.accum, "-"
                )?,
            }
        }
        write!(
            f,
            "ratio      probe's choice / best of sweep = {:.3}",
            self.ratio
        )
    }
}
