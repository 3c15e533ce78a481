//! The training loop: data and device set-up, the step loop, logging and checkpoints.

use std::path::PathBuf;

use burn::module::Module;
use indicatif::{ProgressBar, ProgressStyle};
use web_time::Instant;

use super::metrics::{MetricLine, MetricsLog};
use super::step::Trainer;
use crate::atomic;
use crate::config::Config;
use crate::data::{ImageSource, Loader};
use crate::device;
use crate::error::{Result, SaplingError};
use crate::model::MaskedAutoencoder;
use crate::optim::Schedule;

/// How the loop reports to a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// Draw a progress bar and print metric lines on stdout.
    pub interactive: bool,
}

/// What a finished run leaves behind.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// `(step, loss)` of every optimizer step.
    pub losses: Vec<(u64, f64)>,
    pub steps: u64,
    /// Mean throughput over the steps after the first (which compiles kernels on wgpu).
    pub images_per_sec: f64,
    /// Files skipped because they could not be decoded.
    pub skipped_files: usize,
    pub device: String,
    pub out: PathBuf,
}

/// File name of the model weights in the output folder.
pub const MODEL_FILE: &str = "model.bpk";

/// Trains as `config` says, writing the config, metrics and model into `config.train.out`.
pub fn train(config: &Config, options: RunOptions) -> Result<RunSummary> {
    config.validate()?;
    // Data problems are reported before any device work starts.
    let source = ImageSource::new(config.data.dir.as_deref())?;
    let out = config.train.out.clone();
    std::fs::create_dir_all(&out).map_err(|e| SaplingError::io(&out, e))?;
    atomic::write(&out.join("config.toml"), config.to_toml().as_bytes())?;

    let selected = device::select(config.train.device)?;
    let total = config.train.total_steps(source.len());
    let schedule = Schedule::new(&config.optim, config.train.effective_batch(), total);
    tracing::info!(
        "{} on {}: {} steps, micro-batch {} x {} accumulation = {} images/step, peak lr {:.3e}, warmup {} steps, data: {}",
        config.preset.name(),
        selected.describe(),
        total,
        config.train.batch_size,
        config.train.accum,
        config.train.effective_batch(),
        schedule.peak_lr,
        schedule.warmup_steps,
        source.describe()
    );
    let data_len = source.len();
    let mut loader = Loader::new(
        source,
        &config.data,
        config.model.img_size,
        config.train.batch_size,
        config.train.seed,
        0,
    );
    let mut trainer = Trainer::new(config, &selected.device);
    let mut metrics = MetricsLog::open(&out.join("metrics.jsonl"))?;
    let bar = progress_bar(total, options.interactive);

    let mut losses = Vec::with_capacity(total as usize);
    let (mut timed_images, mut timed_secs) = (0usize, 0.0f64);
    for step in 0..total {
        let started = Instant::now();
        let batches = (0..config.train.accum)
            .map(|_| loader.next_batch())
            .collect::<Result<Vec<_>>>()?;
        let lr = schedule.lr_at(step);
        let stats = trainer.step(step, lr, batches)?;
        let secs = started.elapsed().as_secs_f64();
        let images_per_sec = config.train.effective_batch() as f64 / secs;
        if step > 0 {
            timed_images += config.train.effective_batch();
            timed_secs += secs;
        }
        losses.push((step, stats.loss));
        bar.set_position(step + 1);
        bar.set_message(format!(
            "loss {:.4}  lr {:.2e}  {:.1} img/s",
            stats.loss, lr, images_per_sec
        ));
        let done = step + 1;
        if done % config.train.log_every == 0 || done == total {
            let line = MetricLine {
                step: done,
                epoch: (done as usize * config.train.effective_batch()) as f64 / data_len as f64,
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
        if done % config.train.checkpoint_every == 0 || done == total {
            save_model(trainer.model(), &out.join(MODEL_FILE))?;
        }
    }
    bar.finish();
    let skipped = loader.skipped();
    if skipped > 0 {
        tracing::warn!("{skipped} file(s) could not be decoded and were skipped");
    }
    Ok(RunSummary {
        losses,
        steps: total,
        images_per_sec: if timed_secs > 0.0 {
            timed_images as f64 / timed_secs
        } else {
            0.0
        },
        skipped_files: skipped,
        device: selected.describe(),
        out,
    })
}

/// Writes the model's weights atomically (burnpack format).
pub fn save_model(model: &MaskedAutoencoder, path: &std::path::Path) -> Result<()> {
    let err = |e: burn::store::RecordError| SaplingError::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let bytes = model.clone().into_record().into_bytes().map_err(err)?;
    atomic::write(path, &bytes)
}

fn progress_bar(total: u64, interactive: bool) -> ProgressBar {
    if !interactive {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
        )
        .expect("valid template"),
    );
    bar
}
