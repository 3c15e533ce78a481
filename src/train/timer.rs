//! The step timer: the real training step ([`Trainer`]) run after warm-up steps, with the
//! median of each phase. The batch planner's trials and every `sapling bench` command that times
//! a step use it, so what they time is what trains.

use burn::tensor::Device;

use super::step::{PhaseTimes, Timing, Trainer};
use crate::config::{BatchSize, Config};
use crate::data::Batch;
use crate::error::Result;
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

/// [`time_steps`] of a fresh trainer of `config` with `levers` at micro-batch `micro` with
/// `accum` micro-batches per step, all copies of one synthetic batch (a step's cost does not
/// depend on the pixels).
pub async fn time_fresh(
    config: &Config,
    device: &Device,
    (micro, accum): (usize, usize),
    levers: Levers,
    steps: TimedSteps,
) -> Result<PhaseTimes> {
    let mut config = config.clone();
    config.train.batch_size = BatchSize::Fixed(micro);
    let mut trainer = Trainer::with_levers(&config, device, levers)?;
    let batch = Batch::synthetic(micro, config.model.img_size, config.train.seed);
    time_steps(&mut trainer, &vec![batch; accum.max(1)], steps).await
}
