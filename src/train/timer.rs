//! The step timer: the real training step ([`Trainer`]) run after warm-up steps, with the
//! median of each phase. The batch planner's trials and every `sapling bench` command that times
//! a step use it, so what they time is what trains.

use burn::tensor::Device;

use super::step::{PhaseTimes, Timing, Trainer};
use crate::config::{BatchSize, Config};
use crate::counts::{Counting, DeviceCounts};
use crate::data::Batch;
use crate::error::{Result, SaplingError};
use crate::planner::Levers;
use crate::timing::{median, repeat};

/// The learning rate of timed steps: they measure, they do not need to learn.
pub const TIMING_LR: f64 = 1e-8;

/// How many steps to run and what to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedSteps {
    /// Steps run first and left out (they compile kernels and allocate AdamW's moments).
    pub warmup: usize,
    /// Steps whose phases are timed (at least one).
    pub timed: usize,
    pub timing: Timing,
}

/// Runs `trainer` over `batches` (one per micro-batch) as `steps` says and returns the median of
/// each phase over the timed steps.
pub async fn time_steps(
    trainer: &mut Trainer,
    batches: &[Batch],
    steps: TimedSteps,
) -> Result<PhaseTimes> {
    let mut step = 0;
    let times = repeat(steps.warmup, steps.timed.max(1), async || {
        let (_, times) = trainer
            .step_timed_async(step, TIMING_LR, batches.to_vec(), steps.timing)
            .await?;
        step += 1;
        Ok(times)
    })
    .await?;
    let of = |phase: fn(&PhaseTimes) -> Option<f64>| {
        let values: Option<Vec<f64>> = times.iter().map(phase).collect();
        values.map(median)
    };
    Ok(PhaseTimes {
        forward: of(|t| t.forward),
        forward_backward: of(|t| Some(t.forward_backward)).expect("always timed"),
        optimizer: of(|t| Some(t.optimizer)).expect("always timed"),
    })
}

/// [`time_steps`] of a [`fresh_trainer`].
pub async fn time_fresh(
    config: &Config,
    device: &Device,
    shape: (usize, usize),
    levers: Levers,
    steps: TimedSteps,
) -> Result<PhaseTimes> {
    let (mut trainer, batches) = fresh_trainer(config, device, shape, levers)?;
    time_steps(&mut trainer, &batches, steps).await
}

/// A fresh trainer of `config` with `levers` at micro-batch `micro`, and the `accum`
/// micro-batches of one step, all copies of one synthetic batch (a step's cost does not depend
/// on the pixels).
pub fn fresh_trainer(
    config: &Config,
    device: &Device,
    (micro, accum): (usize, usize),
    levers: Levers,
) -> Result<(Trainer, Vec<Batch>)> {
    let mut config = config.clone();
    config.train.batch_size = BatchSize::Fixed(micro);
    let trainer = Trainer::with_levers(&config, device, levers)?;
    let batch = Batch::synthetic(micro, config.model.img_size, config.train.seed);
    Ok((trainer, vec![batch; accum.max(1)]))
}

/// What `steps` plain training steps (untimed, as `train` runs them) ask of the device, per
/// step: dispatches, uploads, readbacks (see [`crate::counts`]), and the memory pool's bytes
/// reserved after them and its growth per step (zero once the pool has warmed up).
pub async fn count_steps(
    trainer: &mut Trainer,
    device: &Device,
    batches: &[Batch],
    steps: u64,
) -> Result<StepCounts> {
    let counting = Counting::start();
    let pool = || device.memory_pool_usage().map(|u| u.bytes_reserved);
    let (before, pool_before) = (counting.snapshot(), pool());
    for step in 0..steps {
        trainer
            .step_async(step, TIMING_LR, batches.to_vec())
            .await?;
    }
    device
        .sync()
        .map_err(|e| SaplingError::Device(e.to_string()))?;
    let pool_after = pool();
    let by_kernel = counting
        .by_kernel()
        .into_iter()
        .map(|(name, n)| (name, n / steps.max(1)))
        .collect();
    Ok(StepCounts {
        steps,
        per_step: counting.snapshot().per_step_since(&before, steps),
        by_kernel,
        pool_reserved: pool_after,
        pool_growth_per_step: pool_before
            .zip(pool_after)
            .map(|(b, a)| a.saturating_sub(b) / steps.max(1)),
    })
}

/// [`count_steps`]' result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepCounts {
    pub steps: u64,
    pub per_step: DeviceCounts,
    /// Dispatches per step by kernel, most first.
    pub by_kernel: Vec<(String, u64)>,
    /// Bytes the memory pool holds after the counted steps (wgpu only).
    pub pool_reserved: Option<u64>,
    pub pool_growth_per_step: Option<u64>,
}
