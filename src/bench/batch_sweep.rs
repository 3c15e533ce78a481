//! Does the planner pick a good micro-batch? Run whole optimizer steps (accumulation included)
//! at every micro-batch that fits and compare the planner's choice with the fastest.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::tensor::Device;
use serde::Serialize;

use crate::config::{BatchSize, Config};
use crate::error::Result;
use crate::planner::{BatchPlan, DeviceLimits, Levers, TrialOptions, candidates};
use crate::train::{TimedSteps, Timing, lever_options, plan, time_fresh};

/// One micro-batch of the sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub micro_batch: usize,
    pub accum: usize,
    /// The cheapest levers with which the size fits.
    pub levers: Levers,
    /// Images per second over the timed optimizer steps; 0 when a step failed.
    pub images_per_sec: f64,
    pub error: Option<String>,
}

/// The planner's plan next to the sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    pub plan: BatchPlan,
    pub rows: Vec<SweepRow>,
    /// Throughput of the planner's choice over the best in the sweep.
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
    let plan = plan(&auto, device, limits, TrialOptions::default())?;
    let effective = config.train.effective_batch;
    let options = lever_options(config, device, limits, 1)?;
    let rows: Vec<SweepRow> = candidates(&config.model, &options, effective, limits)
        .into_iter()
        .filter(|c| effective / c.micro_batch <= max_accum)
        .map(|c| {
            let (m, levers) = (c.micro_batch, c.levers);
            tracing::info!("sweep: micro-batch {m} ({})", levers.describe());
            let result = catch_unwind(AssertUnwindSafe(|| {
                time_steps_at(config, device, m, levers, steps)
            }));
            device.memory_cleanup();
            let (images_per_sec, error) = match result {
                Ok(Ok(v)) => (v, None),
                Ok(Err(e)) => (0.0, Some(e.to_string())),
                Err(_) => (0.0, Some("the step panicked".to_string())),
            };
            SweepRow {
                micro_batch: m,
                accum: effective / m,
                levers,
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

/// Images per second of whole steps at micro-batch `micro` (median phases), after one warm-up
/// step.
fn time_steps_at(
    config: &Config,
    device: &Device,
    micro: usize,
    levers: Levers,
    steps: usize,
) -> Result<f64> {
    let effective = config.train.effective_batch;
    let steps = TimedSteps {
        warmup: 1,
        timed: steps,
        timing: Timing::Phases,
    };
    let shape = (micro, effective / micro);
    let t = pollster::block_on(time_fresh(config, device, shape, levers, steps))?;
    Ok(effective as f64 / (t.forward_backward + t.optimizer))
}

impl fmt::Display for SweepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "device     {}", self.plan.limits.adapter)?;
        writeln!(f, "plan       {}", self.plan.summary())?;
        writeln!(f, "{:>8} {:>6} {:>12}", "micro", "accum", "images/s")?;
        for r in &self.rows {
            let mark = if r.micro_batch == self.plan.micro_batch {
                "  <- planner's choice"
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
            "ratio      planner's choice / best of sweep = {:.3}",
            self.ratio
        )
    }
}
