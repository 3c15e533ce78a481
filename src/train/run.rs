//! The training loop: data and device set-up, the step loop, logging and checkpoints.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressStyle};
use web_time::Instant;

use super::metrics::{MetricLine, MetricsLog};
use super::step::Trainer;
use crate::atomic;
use crate::checkpoint::{self, Loaded, TrainState};
use crate::config::Config;
use crate::data::augment::fixed_batch;
use crate::data::{ImageSource, Loader, Shard};
use crate::device;
use crate::dist::flat::flat_params;
use crate::dist::{Collective, Solo, World};
use crate::error::{Result, SaplingError};
use crate::model::MaskPlan;
use crate::optim::{Schedule, scaled_lr};
use crate::probe::{BatchPlan, DeviceLimits, plan_for_run, step_memory};
use crate::seed::mix;
use crate::viz::plot::plot_metrics;
use crate::viz::{recon_grid, save_png};

/// How the loop reports to a person and where it starts.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Draw a progress bar and print metric lines on stdout.
    pub interactive: bool,
    /// Continue from this checkpoint (its model config must match).
    pub resume: Option<Arc<Loaded>>,
    /// Set (e.g. by Ctrl-C) to stop after the current step with a checkpoint.
    pub stop: Option<Arc<AtomicBool>>,
    /// The processes training together (MPI); `None` is a world of one.
    pub world: Option<World>,
}

/// What a finished run leaves behind.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// `(step, loss)` of every optimizer step this process ran (1-based steps).
    pub losses: Vec<(u64, f64)>,
    /// Optimizer steps done in total, including those before a resume.
    pub steps: u64,
    /// Mean throughput over the steps after the first (which compiles kernels on wgpu).
    pub images_per_sec: f64,
    /// Files skipped because they could not be decoded.
    pub skipped_files: usize,
    pub device: String,
    pub out: PathBuf,
    /// The last checkpoint written.
    pub checkpoint: Option<PathBuf>,
    /// The run stopped early because `stop` was set.
    pub interrupted: bool,
    /// The batch plan the run used.
    pub plan: BatchPlan,
    /// CRC-32 of every parameter value at the end, in module order: equal on every rank.
    pub weights_crc32: u32,
    /// Largest difference of any weight from rank 0's at the end (0 in a world of one).
    pub max_diff_from_rank0: f32,
    /// Mean seconds per step spent reading gradients back, all-reducing and uploading them.
    pub reduce_seconds: f64,
    /// Gradient bytes each rank exchanged per step.
    pub reduce_bytes: u64,
}

/// Trains as `config` says, writing the config, metrics and checkpoints into `config.train.out`.
pub fn train(config: &Config, options: RunOptions) -> Result<RunSummary> {
    config.validate()?;
    let world: World = options.world.clone().unwrap_or_else(|| Rc::new(Solo));
    let (rank, ranks) = (world.rank(), world.size());
    let lead = rank == 0;
    if !config.train.effective_batch.is_multiple_of(ranks) {
        return Err(SaplingError::config(
            "train.effective_batch",
            format!(
                "{} is not divisible by the {ranks} MPI ranks; each rank must take an equal share",
                config.train.effective_batch
            ),
        ));
    }
    if let Some(loaded) = &options.resume {
        loaded.check_model(config)?;
    }
    // Data problems are reported before any device work starts.
    let source = ImageSource::new(config.data.dir.as_deref())?;
    let out = config.train.out.clone();
    if lead {
        std::fs::create_dir_all(&out).map_err(|e| SaplingError::io(&out, e))?;
        atomic::write(&out.join("config.toml"), config.to_toml().as_bytes())?;
    }

    let selected = device::select_for(&config.train)?;
    let limits = DeviceLimits::of(&selected, config.train.memory_budget_mib);
    let previous = options.resume.as_ref().and_then(|l| l.state.plan.as_ref());
    let plan = plan_across(config, &selected.device, &limits, previous, world.as_ref())?;
    let (batch, accum, effective) = (plan.micro_batch, plan.accum, plan.effective_batch);
    let total = config.train.total_steps(source.len());
    let schedule = Schedule::new(&config.optim, effective, total);
    let mut trainer = Trainer::new(config, &selected.device);
    let (start_step, start_sample) = match &options.resume {
        Some(loaded) => {
            trainer.restore(loaded, config)?;
            let s = &loaded.state;
            tracing::info!("resuming from {} at step {}", loaded.path.display(), s.step);
            (s.step, s.samples)
        }
        None => (0, 0),
    };
    // After a restore every rank holds the same weights already; a fresh start copies rank 0's.
    let mut trainer = trainer.join(world.clone());
    tracing::info!(
        "{} on {} ({}): steps {}..{}, {} ({:?}), warmup {} steps, data: {}",
        config.preset.name(),
        selected.describe(),
        world.describe(),
        start_step,
        total,
        plan.summary(),
        plan.source,
        schedule.warmup_steps,
        source.describe()
    );
    let data_len = source.len();
    // A fixed batch and mask, so successive pictures show the same images getting better.
    let (recon_images, recon_n) =
        fixed_batch(&source, 4, config.model.img_size as u32, &config.data);
    let recon_plan = MaskPlan::random(
        recon_n,
        config.model.num_patches(),
        config.model.num_visible(),
        mix(config.train.seed, 0x0f16),
    );
    let recon_dir = out.join("recon");
    let mut loader = Loader::sharded(
        source,
        &config.data,
        config.model.img_size,
        batch,
        config.train.seed,
        start_sample,
        Shard { rank, size: ranks },
    );
    let mut metrics = lead
        .then(|| MetricsLog::open(&out.join("metrics.jsonl")))
        .transpose()?;
    let bar = progress_bar(total, start_step, options.interactive && lead);

    let mut summary = RunSummary {
        losses: Vec::new(),
        steps: start_step,
        images_per_sec: 0.0,
        skipped_files: 0,
        device: selected.describe(),
        out: out.clone(),
        checkpoint: None,
        interrupted: false,
        plan: plan.clone(),
        weights_crc32: 0,
        max_diff_from_rank0: 0.0,
        reduce_seconds: 0.0,
        reduce_bytes: 0,
    };
    let (mut reduce_secs, mut reduce_steps) = (0.0f64, 0u64);
    let (mut timed_images, mut timed_secs) = (0usize, 0.0f64);
    for step in start_step..total {
        let started = Instant::now();
        let batches = (0..accum)
            .map(|_| loader.next_batch())
            .collect::<Result<Vec<_>>>()?;
        let lr = schedule.lr_at(step);
        let stats = trainer.step(step, lr, batches)?;
        let secs = started.elapsed().as_secs_f64();
        if stats.reduce.buckets > 0 {
            reduce_secs += stats.reduce.seconds;
            reduce_steps += 1;
            summary.reduce_bytes = stats.reduce.bytes;
        }
        let images_per_sec = effective as f64 / secs;
        if step > start_step {
            timed_images += effective;
            timed_secs += secs;
        }
        let done = step + 1;
        summary.losses.push((done, stats.loss));
        summary.steps = done;
        bar.set_position(done);
        bar.set_message(format!(
            "loss {:.4}  lr {:.2e}  {:.1} img/s",
            stats.loss, lr, images_per_sec
        ));
        if let Some(metrics) = metrics.as_mut()
            && (done % config.train.log_every == 0 || done == total)
        {
            let line = MetricLine {
                step: done,
                epoch: (done as usize * effective) as f64 / data_len as f64,
                loss: stats.loss,
                lr,
                grad_norm: stats.grad_norm,
                images_per_sec,
                device_bytes_in_use: selected.device.memory_pool_usage().map(|u| u.bytes_in_use),
            };
            let json = metrics.write(&line)?;
            if options.interactive {
                bar.suspend(|| println!("{json}"));
            }
        }
        if lead
            && recon_n > 0
            && config.train.recon_every > 0
            && (done % config.train.recon_every == 0 || done == total)
        {
            std::fs::create_dir_all(&recon_dir).map_err(|e| SaplingError::io(&recon_dir, e))?;
            let grid = recon_grid(
                trainer.model(),
                recon_images.clone(),
                &recon_plan,
                &config.data,
            );
            save_png(&grid, &recon_dir.join(format!("step-{done:08}.png")))?;
            plot_metrics(&out)?;
        }
        let mut stopping = options
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::SeqCst));
        if ranks > 1 {
            // A Ctrl-C may reach only some ranks; all must stop at the same step, or the others
            // would wait in the next all-reduce forever.
            stopping = world.all_reduce_min(u64::from(!stopping)) == 0;
        }
        if done % config.train.checkpoint_every == 0 || done == total || stopping {
            let state = TrainState {
                step: done,
                samples: loader.position(),
                plan: Some(plan.clone()),
                config: config.clone(),
            };
            if lead {
                let path = checkpoint::save(
                    &out,
                    trainer.model(),
                    trainer.optim(),
                    &state,
                    config.train.keep_checkpoints,
                )?;
                summary.checkpoint = Some(path);
            }
            // No rank runs ahead of a checkpoint it might have to resume from.
            world.barrier();
        }
        if stopping {
            summary.interrupted = true;
            break;
        }
    }
    bar.finish();
    summary.skipped_files = loader.skipped();
    if summary.skipped_files > 0 {
        tracing::warn!(
            "{} file(s) could not be decoded and were skipped",
            summary.skipped_files
        );
    }
    if timed_secs > 0.0 {
        summary.images_per_sec = timed_images as f64 / timed_secs;
    }
    if reduce_steps > 0 {
        summary.reduce_seconds = reduce_secs / reduce_steps as f64;
    }
    let weights = flat_params(trainer.model());
    let mut crc = crc32fast::Hasher::new();
    for v in &weights {
        crc.update(&v.to_le_bytes());
    }
    summary.weights_crc32 = crc.finalize();
    if ranks > 1 {
        // Ranks on different backends round AdamW differently; say by how much they drifted.
        let mut lead_weights = weights.clone();
        world.broadcast(&mut lead_weights, 0);
        summary.max_diff_from_rank0 = weights
            .iter()
            .zip(&lead_weights)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
    }
    Ok(summary)
}

/// Each rank plans for its share of the effective batch; the smallest micro-batch of any rank
/// is used by all, so every rank runs the same number of accumulation steps.
fn plan_across(
    config: &Config,
    device: &burn::tensor::Device,
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
    let mut plan = plan_for_run(&share, device, limits, previous.as_ref())?;
    let micro = world.all_reduce_min(plan.micro_batch as u64) as usize;
    if micro != plan.micro_batch {
        tracing::info!(
            "another rank fits only micro-batch {micro}; using it instead of {}",
            plan.micro_batch
        );
    }
    plan.micro_batch = micro;
    plan.accum = global / ranks / micro;
    plan.predicted = step_memory(&config.model, micro, plan.accum, config.train.kernels);
    plan.world_size = ranks;
    plan.effective_batch = global;
    plan.lr = scaled_lr(config.optim.base_lr, global, config.optim.lr_base_batch);
    Ok(plan)
}

fn progress_bar(total: u64, start: u64, interactive: bool) -> ProgressBar {
    if !interactive {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_position(start);
    bar.reset_eta();
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
        )
        .expect("valid template"),
    );
    bar
}
