//! `sapling bench loader`: images/s of the data loader alone (decode, crop, resize, flip,
//! normalise on its worker threads) at several worker counts, against what a training step
//! consumes, so the number of workers a preset needs is a measurement, not a guess.

use std::fmt;

use serde::Serialize;
use web_time::Instant;

use crate::config::Config;
use crate::data::{ImageSource, Loader};
use crate::error::{Result, SaplingError};

/// The loader's rate with one worker count.
#[derive(Debug, Clone, Serialize)]
pub struct LoaderRow {
    pub workers: usize,
    pub images_per_sec: f64,
    /// `images_per_sec / demand`.
    pub times_demand: f64,
}

/// One source, one preset: the loader's rate per worker count against the step's demand.
#[derive(Debug, Clone, Serialize)]
pub struct LoaderBench {
    pub preset: String,
    pub source: String,
    pub img_size: usize,
    pub micro_batch: usize,
    /// Images/s the training step consumes (measured by the caller in the same run).
    pub demand: f64,
    pub demand_by: String,
    pub rows: Vec<LoaderRow>,
}

impl LoaderBench {
    /// The fewest workers measured whose rate meets the demand.
    pub fn workers_needed(&self) -> Option<usize> {
        self.rows
            .iter()
            .find(|r| r.images_per_sec >= self.demand)
            .map(|r| r.workers)
    }
}

/// Images/s of a loader with `workers` threads building micro-batches of `batch`: the first
/// micro-batch of each worker is a warm-up (thread start, first decode), then `batches` are
/// timed as the trainer takes them, in stream order.
pub fn loader_rate(
    source: &ImageSource,
    config: &Config,
    (batch, workers): (usize, usize),
    batches: usize,
) -> Result<f64> {
    if workers == 0 || batches == 0 {
        return Err(SaplingError::config(
            "--loader-workers / --batches",
            "every worker count and the number of timed micro-batches must be at least 1",
        ));
    }
    let mut data = config.data.clone();
    data.workers = workers;
    // One micro-batch in flight per worker: the most a worker can run ahead in training too.
    data.prefetch = data.prefetch.max(workers);
    let img = config.model.img_size;
    let mut loader = Loader::new(source.clone(), &data, img, batch, config.train.seed, 0);
    for _ in 0..workers {
        loader.next_batch()?;
    }
    let t0 = Instant::now();
    for _ in 0..batches {
        loader.next_batch()?;
    }
    Ok((batches * batch) as f64 / t0.elapsed().as_secs_f64())
}

/// The loader at each of `workers`, against `demand` images/s.
pub fn bench_loader(
    config: &Config,
    batch: usize,
    workers: &[usize],
    batches: usize,
    (demand, demand_by): (f64, String),
) -> Result<LoaderBench> {
    let source = ImageSource::new(config.data.dir.as_deref())?;
    let mut rows = Vec::with_capacity(workers.len());
    for &w in workers {
        let rate = loader_rate(&source, config, (batch, w), batches)?;
        rows.push(LoaderRow {
            workers: w,
            images_per_sec: rate,
            times_demand: rate / demand,
        });
    }
    Ok(LoaderBench {
        preset: config.preset.name().to_string(),
        source: source.describe(),
        img_size: config.model.img_size,
        micro_batch: batch,
        demand,
        demand_by,
        rows,
    })
}

impl fmt::Display for LoaderBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "loader     {} at {} px, micro-batch {}, from {}",
            self.preset, self.img_size, self.micro_batch, self.source
        )?;
        writeln!(
            f,
            "demand     {:.1} images/s ({})",
            self.demand, self.demand_by
        )?;
        writeln!(
            f,
            "{:>8} {:>10} {:>11} {:>10}",
            "workers", "images/s", "per worker", "x demand"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:>8} {:>10.1} {:>11.1} {:>10.2}",
                r.workers,
                r.images_per_sec,
                r.images_per_sec / r.workers as f64,
                r.times_demand
            )?;
        }
        match self.workers_needed() {
            Some(w) => write!(f, "needs      {w} worker(s) to keep up"),
            None => write!(
                f,
                "needs      more workers than measured: the loader would limit training"
            ),
        }
    }
}
