//! What a run writes after each step into its output folder: metric lines, reconstruction
//! pictures and plots, checkpoints; and whether to stop (Ctrl-C, agreed across ranks).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressStyle};

use super::folder::RunFolder;
use super::metrics::{MetricLine, MetricsLog};
use super::monitor::Monitors;
use super::run::{Console, RunOptions};
use super::setup::{Run, start_of};
use super::step::StepStats;
use crate::atomic;
use crate::checkpoint::{self, TrainState};
use crate::config::Config;
use crate::data::ImageSource;
use crate::data::augment::fixed_batch;
use crate::dist::World;
use crate::error::{Result, SaplingError};
use crate::model::MaskPlan;
use crate::seed::{self, mix};
use crate::viz::plot::{plot_metrics, with_column_titles};
use crate::viz::recon::COLUMN_TITLES;
use crate::viz::{png_bytes, recon_grid};

/// The output folder of a run and what goes into it.
pub(super) struct Outputs {
    config: Config,
    /// Rank 0 writes; other ranks only take part in the stop vote and the barrier.
    lead: bool,
    world: World,
    pub out: PathBuf,
    console: Console,
    metrics: Option<MetricsLog>,
    /// TensorBoard and the k-NN monitor (rank 0).
    monitors: Option<Monitors>,
    bar: ProgressBar,
    pictures: Pictures,
    stop: Option<Arc<AtomicBool>>,
    /// Images in the data set, for the epoch count.
    data_len: usize,
    total: u64,
    /// The last checkpoint written.
    pub checkpoint: Option<PathBuf>,
    /// The run stopped early because `stop` was set.
    pub interrupted: bool,
    /// The folder, held for the whole run (rank 0).
    folder: Option<RunFolder>,
}

/// MAE's figure for a fixed batch and mask, so successive pictures show the same images getting
/// better.
struct Pictures {
    images: Vec<f32>,
    plan: MaskPlan,
    dir: PathBuf,
}

impl Outputs {
    /// Claims the output folder (rank 0: locked, and holding no other run) and writes the run's
    /// config into it.
    pub fn open(
        config: &Config,
        options: &RunOptions,
        world: &World,
        source: &ImageSource,
    ) -> Result<Outputs> {
        let lead = world.rank() == 0;
        let out = config.train.out.clone();
        let resumed = options.resume.as_deref();
        let folder = lead
            .then(|| RunFolder::claim(&out, resumed, options.overwrite))
            .transpose()?;
        if lead {
            atomic::write(&out.join("config.toml"), config.to_toml().as_bytes())?;
        }
        let m = &config.model;
        let (images, n) = fixed_batch(source, 4, m.img_size as u32, &config.data);
        let plan = MaskPlan::random(
            n,
            m.num_patches(),
            m.num_visible(),
            mix(config.train.seed, seed::RECON_PICTURES),
        );
        let start = start_of(options).0;
        let metrics = lead
            .then(|| MetricsLog::open_at(&out.join("metrics.jsonl"), start))
            .transpose()?;
        let monitors = lead
            .then(|| Monitors::open(config, &out, start))
            .transpose()?;
        let total = config.train.total_steps(source.len());
        Ok(Outputs {
            config: config.clone(),
            lead,
            world: world.clone(),
            console: options.console,
            metrics,
            monitors,
            bar: progress_bar(total, start, options.console != Console::Off && lead),
            pictures: Pictures {
                images,
                plan,
                dir: out.join("recon"),
            },
            out,
            stop: options.stop.clone(),
            data_len: source.len(),
            total,
            checkpoint: None,
            interrupted: false,
            folder,
        })
    }

    /// Writes what is due after optimizer step `done` (1-based); returns whether to stop now.
    pub fn after_step(
        &mut self,
        run: &Run,
        done: u64,
        lr: f64,
        stats: &StepStats,
        images_per_sec: f64,
    ) -> Result<bool> {
        // A step is done: a run an `--overwrite` set aside can go now.
        if let Some(folder) = self.folder.as_mut() {
            folder.under_way();
        }
        let t = &self.config.train;
        let (log_every, recon_every, checkpoint_every) =
            (t.log_every, t.recon_every, t.checkpoint_every);
        let last = done == self.total;
        self.bar.set_position(done);
        self.bar.set_message(format!(
            "loss {:.4}  lr {:.2e}  {images_per_sec:.1} img/s",
            stats.loss, lr
        ));
        let knn_due = self
            .monitors
            .as_ref()
            .is_some_and(|m| m.knn_due(done, last));
        if done.is_multiple_of(log_every) || last || knn_due {
            self.log(run, done, lr, stats, images_per_sec, knn_due)?;
        }
        let picture_due = recon_every > 0 && (done.is_multiple_of(recon_every) || last);
        if self.lead && picture_due && self.pictures.plan.batch > 0 {
            self.draw(run, done)?;
        }
        let stopping = self.stopping();
        if done.is_multiple_of(checkpoint_every) || last || stopping {
            self.save(run, done)?;
        }
        self.interrupted = stopping;
        Ok(stopping)
    }

    fn log(
        &mut self,
        run: &Run,
        done: u64,
        lr: f64,
        stats: &StepStats,
        images_per_sec: f64,
        knn_due: bool,
    ) -> Result<()> {
        let Some(metrics) = self.metrics.as_mut() else {
            return Ok(());
        };
        let knn_top1 = match (&self.monitors, knn_due) {
            (Some(monitors), true) => monitors.knn_top1(&self.config, run.trainer.model())?,
            _ => None,
        };
        let line = MetricLine {
            step: done,
            epoch: (done as usize * run.plan.effective_batch) as f64 / self.data_len as f64,
            loss: stats.loss,
            lr,
            grad_norm: stats.grad_norm,
            images_per_sec,
            device_bytes_in_use: run.device.memory_pool_usage().map(|u| u.bytes_in_use),
            rss_bytes: crate::device::peak::resident_bytes(),
            loss_scale: stats.loss_scale.map(|s| s.scale),
            skipped_steps: stats.loss_scale.map(|s| s.skipped_steps),
            knn_top1,
        };
        let json = metrics.write(&line)?;
        if let Some(monitors) = self.monitors.as_mut() {
            monitors.line(&line)?;
        }
        let shown = match self.console {
            Console::Off => return Ok(()),
            Console::Json => json,
            Console::People => for_people(&line, self.total),
        };
        self.bar.suspend(|| println!("{shown}"));
        Ok(())
    }

    /// The reconstruction figure of step `done` (a file, and an image for TensorBoard), and the
    /// loss and lr plots redrawn.
    fn draw(&mut self, run: &Run, done: u64) -> Result<()> {
        let p = &self.pictures;
        std::fs::create_dir_all(&p.dir).map_err(|e| SaplingError::io(&p.dir, e))?;
        let model = run.trainer.model();
        let grid = recon_grid(model, p.images.clone(), &p.plan, &self.config.data)?;
        let figure = with_column_titles(&grid, &COLUMN_TITLES);
        let path = p.dir.join(format!("step-{done:08}.png"));
        let png = png_bytes(&figure).map_err(|message| SaplingError::Data {
            path: path.clone(),
            message,
        })?;
        atomic::write(&path, &png)?;
        if let Some(monitors) = self.monitors.as_mut() {
            monitors.picture(done, &png, figure.dimensions())?;
        }
        plot_metrics(&self.out)
    }

    /// Whether the stop flag is set on any rank: a Ctrl-C may reach only some, and all must
    /// stop at the same step, or the others would wait in the next all-reduce forever.
    fn stopping(&self) -> bool {
        let here = self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
        if self.world.size() > 1 {
            return self.world.all_reduce_min(u64::from(!here)) == 0;
        }
        here
    }

    /// A checkpoint of step `done`: rank 0 writes it (every rank its shard of a sharded
    /// optimizer), and no rank runs ahead of a checkpoint it might have to resume from.
    fn save(&mut self, run: &Run, done: u64) -> Result<()> {
        let state = TrainState {
            run: self
                .folder
                .as_ref()
                .map(|f| f.run.clone())
                .unwrap_or_default(),
            step: done,
            samples: run.loader.position(),
            plan: Some(run.plan.clone()),
            config: self.config.clone(),
            loss_scale: run.trainer.loss_scale(),
        };
        let path = checkpoint::save(
            &self.out,
            run.trainer.model(),
            run.trainer.moments()?,
            &state,
            self.config.train.keep_checkpoints,
            self.world.as_ref(),
        )?;
        if path.is_some() {
            self.checkpoint = path;
        }
        Ok(())
    }

    /// Ends the progress bar.
    pub fn close(&self) {
        self.bar.finish();
    }
}

/// A logged step as a person reads it on the terminal, one line.
fn for_people(line: &MetricLine, total: u64) -> String {
    let mut text = format!(
        "step {}/{total}  epoch {:.2}  loss {:.4}  lr {:.2e}  grad norm {:.3}  {:.1} img/s",
        line.step, line.epoch, line.loss, line.lr, line.grad_norm, line.images_per_sec
    );
    if let Some(bytes) = line.device_bytes_in_use {
        text += &format!("  device {}", crate::planner::fmt_bytes(bytes));
    }
    if let (Some(scale), Some(skipped)) = (line.loss_scale, line.skipped_steps) {
        text += &format!("  loss scale {scale}  skipped {skipped}");
    }
    if let Some(top1) = line.knn_top1 {
        text += &format!("  k-NN top-1 {:.2} %", 100.0 * top1);
    }
    text
}

fn progress_bar(total: u64, start: u64, shown: bool) -> ProgressBar {
    if !shown {
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
