//! The training loop: data and device set-up, the step loop, logging and checkpoints.

use std::path::PathBuf;
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
use crate::data::{ImageSource, Loader};
use crate::device;
use crate::error::{Result, SaplingError};
use crate::model::MaskPlan;
use crate::optim::Schedule;
use crate::probe::{BatchPlan, DeviceLimits, plan_for_run};
use crate::seed::mix;
use crate::viz::plot::plot_metrics;
use crate::viz::{recon_grid, save_png};

/// How the loop reports to a person and where it starts.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Draw a progress bar and print metric lines on stdout.
    pub interactive: bool,
    /// Continue from this checkpoint (its model config must match).
    pub resume: Option<Arc<Loaded>>,
    /// Set (e.g. by Ctrl-C) to stop after the current step with a checkpoint.
    pub stop: Option<Arc<AtomicBool>>,
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
}

/// Trains as `config` says, writing the config, metrics and checkpoints into `config.train.out`.
pub fn train(config: &Config, options: RunOptions) -> Result<RunSummary> {
    config.validate()?;
    if let Some(loaded) = &options.resume {
        loaded.check_model(config)?;
    }
    // Data problems are reported before any device work starts.
    let source = ImageSource::new(config.data.dir.as_deref())?;
    let out = config.train.out.clone();
    std::fs::create_dir_all(&out).map_err(|e| SaplingError::io(&out, e))?;
    atomic::write(&out.join("config.toml"), config.to_toml().as_bytes())?;

    let selected = device::select(config.train.device)?;
    let limits = DeviceLimits::of(&selected, config.train.memory_budget_mib);
    let previous = options.resume.as_ref().and_then(|l| l.state.plan.as_ref());
    let plan = plan_for_run(config, &selected.device, &limits, previous)?;
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
    tracing::info!(
        "{} on {}: steps {}..{}, {} ({:?}), warmup {} steps, data: {}",
        config.preset.name(),
        selected.describe(),
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
    let mut loader = Loader::new(
        source,
        &config.data,
        config.model.img_size,
        batch,
        config.train.seed,
        start_sample,
    );
    let mut metrics = MetricsLog::open(&out.join("metrics.jsonl"))?;
    let bar = progress_bar(total, start_step, options.interactive);

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
    };
    let (mut timed_images, mut timed_secs) = (0usize, 0.0f64);
    for step in start_step..total {
        let started = Instant::now();
        let batches = (0..accum)
            .map(|_| loader.next_batch())
            .collect::<Result<Vec<_>>>()?;
        let lr = schedule.lr_at(step);
        let stats = trainer.step(step, lr, batches)?;
        let secs = started.elapsed().as_secs_f64();
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
        if done % config.train.log_every == 0 || done == total {
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
        if recon_n > 0
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
        let stopping = options
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::SeqCst));
        if done % config.train.checkpoint_every == 0 || done == total || stopping {
            let state = TrainState {
                step: done,
                samples: loader.position(),
                plan: Some(plan.clone()),
                config: config.clone(),
            };
            let path = checkpoint::save(
                &out,
                trainer.model(),
                trainer.optim(),
                &state,
                config.train.keep_checkpoints,
            )?;
            summary.checkpoint = Some(path);
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
    Ok(summary)
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
