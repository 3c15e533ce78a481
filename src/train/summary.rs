//! What a run adds up as it goes (losses, throughput, all-reduce cost) and the summary it ends
//! with, including a checksum of the final weights that every rank must agree on.

use std::time::Duration;

use super::outputs::Outputs;
use super::run::RunSummary;
use super::setup::Run;
use super::step::StepStats;
use crate::dist::flat::flat_params;

/// Running totals of a run.
#[derive(Debug, Default)]
pub(super) struct Tally {
    losses: Vec<(u64, f64)>,
    /// Images and seconds of the steps after the run's first, which compiles kernels on wgpu.
    timed_images: usize,
    timed_secs: f64,
    reduce_secs: f64,
    reduce_steps: u64,
    reduce_bytes: u64,
}

impl Tally {
    /// Counts step `step` (0-based) of `run`, which took `took`; returns its images per second.
    pub fn add(&mut self, run: &Run, step: u64, stats: &StepStats, took: Duration) -> f64 {
        let (secs, effective) = (took.as_secs_f64(), run.plan.effective_batch);
        if stats.reduce.buckets > 0 {
            self.reduce_secs += stats.reduce.seconds;
            self.reduce_steps += 1;
            self.reduce_bytes = stats.reduce.bytes;
        }
        if step > run.steps.start {
            self.timed_images += effective;
            self.timed_secs += secs;
        }
        self.losses.push((step + 1, stats.loss));
        effective as f64 / secs
    }

    /// The summary of a run that ended (or stopped), with its final weights checked across
    /// ranks.
    pub fn summary(self, run: &Run, outputs: Outputs) -> RunSummary {
        outputs.close();
        let skipped_files = run.loader.skipped();
        if skipped_files > 0 {
            tracing::warn!("{skipped_files} file(s) could not be decoded and were skipped");
        }
        let weights = flat_params(run.trainer.model());
        let mut crc = crc32fast::Hasher::new();
        for v in &weights {
            crc.update(&v.to_le_bytes());
        }
        let mut max_diff_from_rank0 = 0.0;
        if run.world.size() > 1 {
            // Ranks on different backends round AdamW differently; say by how much they drifted.
            let mut lead_weights = weights.clone();
            run.world.broadcast(&mut lead_weights, 0);
            max_diff_from_rank0 = weights
                .iter()
                .zip(&lead_weights)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
        }
        RunSummary {
            steps: self.losses.last().map_or(run.steps.start, |l| l.0),
            losses: self.losses,
            images_per_sec: if self.timed_secs > 0.0 {
                self.timed_images as f64 / self.timed_secs
            } else {
                0.0
            },
            skipped_files,
            device: run.describe.clone(),
            out: outputs.out,
            checkpoint: outputs.checkpoint,
            interrupted: outputs.interrupted,
            plan: run.plan.clone(),
            weights_crc32: crc.finalize(),
            max_diff_from_rank0,
            reduce_seconds: if self.reduce_steps > 0 {
                self.reduce_secs / self.reduce_steps as f64
            } else {
                0.0
            },
            reduce_bytes: self.reduce_bytes,
        }
    }
}
