//! Setting a run up: the data checked before any device work, then the device, the batch plan
//! (agreed across MPI ranks), the schedule, the trainer (restored and joined) and the loader.

use std::ops::Range;

use burn::tensor::Device;

use super::agree::check_shared_out;
use super::init::initial_trainer;
use super::run::RunOptions;
use super::step::Trainer;
use super::trial::{lever_options, plan_for_run};
use crate::config::{Config, PrecisionChoice};
use crate::data::{Batch, ImageSource, Loader, Shard};
use crate::device;
use crate::dist::{Collective, World};
use crate::error::{Result, SaplingError};
use crate::import;
use crate::ops::Precision;
use crate::optim::{Schedule, scaled_lr};
use crate::planner::{BatchPlan, DeviceLimits, fitting};

/// A run ready to step.
pub(super) struct Run {
    pub world: World,
    pub trainer: Trainer,
    pub loader: Loader,
    pub schedule: Schedule,
    pub plan: BatchPlan,
    /// The optimizer steps still to run (0-based).
    pub steps: Range<u64>,
    pub device: Device,
    /// The device, for people.
    pub describe: String,
}

/// Checks what can be checked before any device work (the config, the ranks against the
/// effective batch, a checkpoint or a weights file against the model) and opens the images.
pub(super) fn check_data(
    config: &Config,
    options: &RunOptions,
    world: &dyn Collective,
) -> Result<ImageSource> {
    config.validate()?;
    paths_are_utf8(config)?;
    let ranks = world.size();
    if !config.train.effective_batch.is_multiple_of(ranks) {
        return Err(SaplingError::config(
            "train.effective_batch",
            format!(
                "{} is not divisible by the {ranks} MPI ranks; each rank must take an equal share",
                config.train.effective_batch
            ),
        ));
    }
    match (&options.resume, &config.train.init_from) {
        (Some(loaded), _) => loaded.check_model(config)?,
        // The file's names and shapes only: its values are read once the trainer is built.
        (None, Some(path)) => {
            import::read(path)?.check(&config.model, config.preset.name())?;
        }
        (None, None) => {}
    }
    let source = ImageSource::new(config.data.dir.as_deref())?;
    #[cfg(not(target_arch = "wasm32"))]
    if let ImageSource::Shards(set) = &source {
        set.check_ranks(ranks)?;
        tracing::info!(
            "shuffle buffer: {} samples per rank, about {} at this data's mean of {} per sample",
            config.data.shuffle_buffer,
            crate::planner::fmt_bytes(config.data.shuffle_buffer as u64 * set.mean_sample_bytes()),
            crate::planner::fmt_bytes(set.mean_sample_bytes())
        );
    }
    Ok(source)
}

/// A checkpoint past the run's last step is refused by name, and one at it has nothing left to
/// train ([`SaplingError::Complete`]), both before the folder is touched. Called after the
/// ranks agreed on the checkpoint, so every rank ends alike.
pub(super) fn check_not_past_end(
    options: &RunOptions,
    config: &Config,
    images: usize,
) -> Result<()> {
    let Some(loaded) = &options.resume else {
        return Ok(());
    };
    let (step, total) = (loaded.state.step, config.train.total_steps(images));
    if step < total {
        return Ok(());
    }
    if step == total {
        return Err(SaplingError::Complete {
            step,
            out: config.train.out.clone(),
        });
    }
    Err(SaplingError::Checkpoint {
        path: loaded.path.clone(),
        message: format!(
            "says it is at step {step}, past the run's last step {total}; give --steps (or \
             --epochs) beyond {step} to train on, or resume from another checkpoint"
        ),
    })
}

/// The run writes its config as TOML, whose strings are UTF-8: a path that is not cannot be
/// recorded, so it is refused here by its field rather than failing once the run has started.
fn paths_are_utf8(config: &Config) -> Result<()> {
    let paths = [
        ("data.dir", config.data.dir.as_deref()),
        ("train.out", Some(config.train.out.as_path())),
        ("train.init_from", config.train.init_from.as_deref()),
        ("train.knn_data", config.train.knn_data.as_deref()),
    ];
    for (field, path) in paths {
        if let Some(path) = path
            && path.to_str().is_none()
        {
            return Err(SaplingError::config(
                field,
                format!(
                    "{} is not valid UTF-8, so the run's config.toml cannot record it; \
                     rename it, or reach it through a symbolic link with a UTF-8 name",
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Where a resumed run starts: `(step, samples consumed)`.
pub(super) fn start_of(options: &RunOptions) -> (u64, u64) {
    options
        .resume
        .as_ref()
        .map_or((0, 0), |l| (l.state.step, l.state.samples))
}

impl Run {
    /// The device, the batch plan, the trainer (restored from `options.resume`, then given
    /// rank 0's weights) and the loader at the run's position in the data stream.
    pub fn start(
        config: &Config,
        options: &RunOptions,
        world: World,
        source: ImageSource,
    ) -> Result<Run> {
        let selected = device::select_for(&config.train)?;
        let limits = DeviceLimits::of(&selected, config.train.memory_budget_mib);
        let previous = options.resume.as_ref().and_then(|l| l.state.plan.as_ref());
        let plan = plan_across(config, &selected.device, &limits, previous, world.as_ref())?;
        let total = config.train.total_steps(source.len());
        let schedule = Schedule::new(&config.optim, plan.effective_batch, total);
        let levers = plan.levers.expect("a run's plan has its levers");
        if levers.shards > 1 {
            check_shared_out(&config.train.out, world.as_ref())?;
        }
        // A fresh start copies rank 0's weights to every rank; a restore then replaces them by
        // the checkpoint's on every rank (and a sharded optimizer needs its rank to restore).
        let mut trainer = match &options.resume {
            Some(_) => Trainer::with_levers(config, &selected.device, levers)?,
            None => initial_trainer(config, &selected.device, levers)?.0,
        }
        .join(world.clone())?;
        if let Some(loaded) = &options.resume {
            trainer.restore(loaded, config)?;
            tracing::info!(
                "resuming from {} at step {}, writing into {}",
                loaded.path.display(),
                loaded.state.step,
                config.train.out.display()
            );
        }
        let (start_step, start_sample) = start_of(options);
        let steps = start_step..total;
        let describe = format!("{} ({})", selected.describe(), world.describe());
        announce(config, &describe, &steps, &plan, &schedule, &source);
        let shard = Shard {
            rank: world.rank(),
            size: world.size(),
        };
        let loader = Loader::sharded(
            source,
            &config.data,
            config.model.img_size,
            plan.micro_batch,
            config.train.seed,
            start_sample,
            shard,
        );
        Ok(Run {
            world,
            trainer,
            loader,
            schedule,
            plan,
            steps,
            describe: selected.describe(),
            device: selected.device,
        })
    }

    /// The micro-batches of the next optimizer step.
    pub fn next_batches(&mut self) -> Result<Vec<Batch>> {
        (0..self.plan.accum)
            .map(|_| self.loader.next_batch())
            .collect()
    }
}

/// One line saying what the run will do.
fn announce(
    config: &Config,
    device: &str,
    steps: &Range<u64>,
    plan: &BatchPlan,
    schedule: &Schedule,
    source: &ImageSource,
) {
    tracing::info!(
        "{} on {device}: steps {}..{}, {} ({:?}), warmup {} steps, data: {}",
        config.preset.name(),
        steps.start,
        steps.end,
        plan.summary(),
        plan.source,
        schedule.warmup_steps,
        source.describe()
    );
    if config.train.precision == PrecisionChoice::Auto {
        let chosen = plan.levers.map_or(Precision::F32, |l| l.precision);
        let why = match chosen {
            Precision::F16 => "the adapter has shader-f16",
            Precision::F32 => "f16 needs a WebGPU adapter with shader-f16",
        };
        tracing::info!("precision auto: {chosen} ({why})");
    }
}

/// Each rank plans for its share of the effective batch; the smallest micro-batch of any rank
/// is used by all, so every rank runs the same number of accumulation steps.
fn plan_across(
    config: &Config,
    device: &Device,
    limits: &DeviceLimits,
    previous: Option<&BatchPlan>,
    world: &dyn Collective,
) -> Result<BatchPlan> {
    let ranks = world.size();
    let global = config.train.effective_batch;
    let mut share = config.clone();
    share.train.effective_batch = global / ranks;
    let previous = previous.filter(|p| p.world_size == ranks).map(|p| {
        let mut p = p.clone();
        p.effective_batch = global / ranks;
        p
    });
    let mut plan = plan_for_run(&share, device, limits, previous.as_ref(), ranks)?;
    let micro = world.all_reduce_min(plan.micro_batch as u64) as usize;
    if micro != plan.micro_batch {
        tracing::info!(
            "another rank fits only micro-batch {micro}; using it instead of {}",
            plan.micro_batch
        );
    }
    let accum = global / ranks / micro;
    // This rank's cheapest levers at the micro-batch all ranks use; if any rank needs the
    // optimizer sharded, all shard it.
    let mut options = lever_options(config, device, limits, ranks)?;
    let here = fitting(&config.model, &options, micro, accum, limits);
    let sharded = here.as_ref().is_some_and(|c| c.levers.shards > 1);
    if world.all_reduce_min(u64::from(!sharded)) == 0 {
        options.retain(|l| l.shards > 1);
    }
    // Memory only shrinks with the micro-batch, so a size another rank chose below this
    // rank's own fits here too.
    let chosen = fitting(&config.model, &options, micro, accum, limits).ok_or_else(|| {
        SaplingError::Device(format!(
            "micro-batch {micro}, chosen across ranks, does not fit on {}",
            limits.adapter
        ))
    })?;
    plan.micro_batch = micro;
    plan.accum = accum;
    plan.levers = Some(chosen.levers);
    plan.predicted = chosen.memory;
    plan.world_size = ranks;
    plan.effective_batch = global;
    plan.lr = scaled_lr(config.optim.base_lr, global, config.optim.lr_base_batch);
    Ok(plan)
}
