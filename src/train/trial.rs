//! Trial steps for the batch planner: a throwaway trainer runs the real training step at one
//! micro-batch on synthetic images, so the plan rests on what the device did, not only on the
//! memory model. The search over sizes is the planner's (`planner::search`); this
//! module hands it the trials.

use burn::tensor::Device;

use super::step::{PhaseTimes, Timing};
use super::timer::{TimedSteps, time_fresh};
use crate::config::{Config, Switch};
use crate::device::PeakMeter;
use crate::error::{Result, SaplingError};
use crate::ops::Kernels;
use crate::planner::{self, BatchPlan, DeviceLimits, Levers, Trial, TrialOptions};

/// Plans the batch of `config` on `device`: the memory model, then real trial steps as
/// `options` says (see [`planner::search`]).
pub async fn plan_async(
    config: &Config,
    device: &Device,
    limits: &DeviceLimits,
    options: TrialOptions,
) -> Result<BatchPlan> {
    let levers = lever_options(config, device, limits, 1)?;
    planner::search(
        config,
        &levers,
        limits,
        options,
        async |micro, accum, levers| {
            run_trial_async(config, device, (micro, accum), levers, options.steps).await
        },
    )
    .await
}

/// [`plan_async`], blocking; a trial that panics (e.g. a device out of memory) is a rejected
/// size, not the end of the run.
#[cfg(not(target_family = "wasm"))]
pub fn plan(
    config: &Config,
    device: &Device,
    limits: &DeviceLimits,
    options: TrialOptions,
) -> Result<BatchPlan> {
    plan_in_world(config, device, limits, options, 1)
}

/// [`plan`] for one of `ranks` MPI ranks (the sharding lever needs several): `config`'s
/// effective batch is this rank's share.
#[cfg(not(target_family = "wasm"))]
pub fn plan_in_world(
    config: &Config,
    device: &Device,
    limits: &DeviceLimits,
    options: TrialOptions,
    ranks: usize,
) -> Result<BatchPlan> {
    let levers = lever_options(config, device, limits, ranks)?;
    pollster::block_on(planner::search(
        config,
        &levers,
        limits,
        options,
        async |micro, accum, levers| {
            run_trial(config, device, (micro, accum), levers, options.steps)
        },
    ))
}

/// The levers `config` allows on `device` with `limits` in a world of `ranks`, cheapest first;
/// kernels the device cannot run, and sharding without several MPI ranks, are refused naming
/// the field.
pub fn lever_options(
    config: &Config,
    device: &Device,
    limits: &DeviceLimits,
    ranks: usize,
) -> Result<Vec<Levers>> {
    Kernels::resolve(config.train.kernels, device)?;
    if config.train.shard_optimizer == Switch::On && ranks < 2 {
        let why = if cfg!(feature = "mpi") {
            "needs several MPI ranks: start the run with `mpirun -n N`, or set it to false"
        } else {
            "needs several MPI ranks, and this build has no MPI: build with `--features mpi` \
             and start the run with `mpirun -n N`, or set it to false"
        };
        return Err(SaplingError::config("train.shard_optimizer", why));
    }
    let (shard, offload) = (config.train.shard_optimizer, config.train.offload_optimizer);
    if ranks > 1
        && matches!(
            (shard, offload),
            (Switch::On, Switch::Off) | (Switch::Off, Switch::On)
        )
    {
        return Err(SaplingError::config(
            "train.offload_optimizer",
            "under MPI the optimizer on the host is sharded over the ranks, so offloading and \
             sharding go together: set train.shard_optimizer and train.offload_optimizer alike \
             (or one of them to auto)",
        ));
    }
    let on_flex = crate::kernels::is_flex(device);
    let max_tensor = limits.max_storage_buffer_binding_size;
    Ok(planner::levers::options(config, on_flex, max_tensor, ranks))
}

/// The plan of one of `ranks` ranks of a training run: the checkpoint's (`previous`) on the
/// same device and effective batch, otherwise planned afresh.
#[cfg(not(target_family = "wasm"))]
pub fn plan_for_run(
    config: &Config,
    device: &Device,
    limits: &DeviceLimits,
    previous: Option<&BatchPlan>,
    ranks: usize,
) -> Result<BatchPlan> {
    let on_flex = crate::kernels::is_flex(device);
    let precision = crate::device::resolve_precision(config.train.precision, on_flex);
    let allowed = lever_options(config, device, limits, ranks)?;
    match planner::reusable(config, limits, previous, precision, &allowed) {
        Some(plan) => Ok(plan),
        None => plan_in_world(config, device, limits, TrialOptions::default(), ranks),
    }
}

/// One warm-up step (it compiles kernels and allocates AdamW's moments) and `timed` measured
/// steps of micro-batch `micro` with `levers` on a fresh model; `accum` only turns the phase
/// times into whole-step throughput. Failures, panics included, come back as
/// [`Trial::error`].
#[cfg(not(target_family = "wasm"))]
pub fn run_trial(
    config: &Config,
    device: &Device,
    (micro, accum): (usize, usize),
    levers: Levers,
    timed: usize,
) -> Trial {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let meter = PeakMeter::start(device);
    let measured = crate::dist::world::catching_panics(|| {
        catch_unwind(AssertUnwindSafe(|| {
            pollster::block_on(measure(config, device, micro, levers, timed))
        }))
    });
    let result = match measured {
        Ok(measured) => measured.map_err(|e| e.to_string()),
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the step panicked".to_string())),
    };
    conclude(device, micro, accum, meter, result)
}

/// [`run_trial`] without blocking (the browser's). A panic cannot be caught there: it aborts
/// the module, as every panic in wasm32 does.
pub async fn run_trial_async(
    config: &Config,
    device: &Device,
    (micro, accum): (usize, usize),
    levers: Levers,
    timed: usize,
) -> Trial {
    let meter = PeakMeter::start(device);
    let result = measure(config, device, micro, levers, timed)
        .await
        .map_err(|e| e.to_string());
    conclude(device, micro, accum, meter, result)
}

/// Median phase times of a throwaway trainer at micro-batch `micro`, one micro-batch per step.
async fn measure(
    config: &Config,
    device: &Device,
    micro: usize,
    levers: Levers,
    timed: usize,
) -> Result<PhaseTimes> {
    let steps = TimedSteps {
        warmup: 1,
        timed,
        timing: Timing::Phases,
    };
    time_fresh(config, device, (micro, 1), levers, steps).await
}

/// The trial from its measurement (the medians, or why the size failed) and the peak memory
/// the device reported meanwhile. The planner adds the memory model's prediction.
fn conclude(
    device: &Device,
    micro: usize,
    accum: usize,
    meter: PeakMeter,
    result: std::result::Result<PhaseTimes, String>,
) -> Trial {
    let mut trial = Trial {
        micro_batch: micro,
        error: None,
        forward_backward_ms: 0.0,
        optimizer_ms: 0.0,
        images_per_sec: 0.0,
        predicted_peak: 0,
        measured_peak: None,
        measured_by: None,
        levers: None,
    };
    if let Some((peak, how)) = meter.finish(device) {
        trial.measured_peak = Some(peak);
        trial.measured_by = Some(how.to_string());
    }
    match result {
        Ok(t) => {
            trial.forward_backward_ms = t.forward_backward * 1e3;
            trial.optimizer_ms = t.optimizer * 1e3;
            trial.images_per_sec =
                (micro * accum) as f64 / (accum as f64 * t.forward_backward + t.optimizer);
        }
        Err(message) => trial.error = Some(message),
    }
    device.memory_cleanup();
    trial
}
