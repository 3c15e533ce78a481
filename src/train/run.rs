//! The training loop, as MAE's `engine_pretrain.py` reads: set up, then for every step take the
//! micro-batches and the lr, step, and write what is due (metrics, pictures, checkpoint); finish.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use web_time::Instant;

use super::agree::agree;
use super::outputs::Outputs;
use super::setup::{Run, check_data, check_not_past_end};
use super::summary::Tally;
use crate::checkpoint::Loaded;
use crate::config::Config;
use crate::dist::{Solo, World};
use crate::error::Result;
use crate::planner::BatchPlan;

/// How the loop reports to a person and where it starts.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// What the terminal shows: nothing (a library caller), or a progress bar with one line
    /// per logged step for people or as JSON.
    pub console: Console,
    /// Continue from this checkpoint (its model config must match).
    pub resume: Option<Arc<Loaded>>,
    /// Delete another run's checkpoints and files in the output folder instead of refusing.
    pub overwrite: bool,
    /// Set (e.g. by Ctrl-C) to stop after the current step with a checkpoint.
    pub stop: Option<Arc<AtomicBool>>,
    /// The processes training together (MPI); `None` is a world of one.
    pub world: Option<World>,
}

/// Where a run reports to a terminal. `metrics.jsonl` is written in every mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Console {
    /// Nothing on stdout and no progress bar.
    #[default]
    Off,
    /// A progress bar (on a terminal) and a summary line per logged step on stdout.
    People,
    /// A progress bar (on a terminal) and each logged step's metric line, as JSON, on stdout
    /// and nothing else there.
    Json,
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

/// Trains as `config` says, writing the config, metrics, pictures and checkpoints into
/// `config.train.out`.
pub fn train(config: &Config, options: RunOptions) -> Result<RunSummary> {
    let world: World = options.world.clone().unwrap_or_else(|| Rc::new(Solo));
    // Data problems are reported before any device work starts.
    let source = check_data(config, &options, world.as_ref())?;
    agree(config, &options, source.len(), world.as_ref())?;
    check_not_past_end(&options, config, source.len())?;
    let mut outputs = Outputs::open(config, &options, &world, &source)?;
    let mut run = Run::start(config, &options, world, source)?;
    let mut tally = Tally::default();
    for step in run.steps.clone() {
        let started = Instant::now();
        let batches = run.next_batches()?;
        let lr = run.schedule.lr_at(step);
        let stats = run.trainer.step(step, lr, batches)?;
        let images_per_sec = tally.add(&run, step, &stats, started.elapsed());
        if outputs.after_step(&run, step + 1, lr, &stats, images_per_sec)? {
            break;
        }
    }
    Ok(tally.summary(&run, outputs))
}
