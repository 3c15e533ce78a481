//! One JSON object per logged step, appended to `metrics.jsonl` (and printed on stdout with
//! `sapling train --json`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::Serialize;

use crate::error::{Result, SaplingError};

/// A logged step.
#[derive(Debug, Clone, Serialize)]
pub struct MetricLine {
    /// Optimizer steps done (1-based).
    pub step: u64,
    /// Passes over the data so far.
    pub epoch: f64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub images_per_sec: f64,
    /// Bytes in use in the device's memory pool, where the backend reports it.
    pub device_bytes_in_use: Option<u64>,
    /// The process's resident memory, where the OS reports it: with the pool's bytes, what a
    /// long run is checked against for leaks.
    pub rss_bytes: Option<u64>,
    /// f16 runs: the loss scale after this step, and the steps skipped so far because their
    /// gradients overflowed (absent in f32 runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped_steps: Option<u64>,
    /// Top-1 of the k-NN monitor at this step (`train.knn_every`), where it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knn_top1: Option<f64>,
}

impl MetricLine {
    /// The line's numbers under TensorBoard tags.
    pub fn scalars(&self) -> Vec<(&'static str, f64)> {
        let mut out = vec![
            ("train/loss", self.loss),
            ("train/lr", self.lr),
            ("train/grad_norm", self.grad_norm),
            ("train/epoch", self.epoch),
            ("speed/images_per_sec", self.images_per_sec),
        ];
        let optional = [
            (
                "memory/device_bytes_in_use",
                self.device_bytes_in_use.map(|b| b as f64),
            ),
            ("memory/rss_bytes", self.rss_bytes.map(|b| b as f64)),
            ("f16/loss_scale", self.loss_scale),
            ("f16/skipped_steps", self.skipped_steps.map(|n| n as f64)),
            ("eval/knn_top1", self.knn_top1),
        ];
        out.extend(optional.into_iter().filter_map(|(tag, v)| Some((tag, v?))));
        out
    }
}

/// Appends metric lines to a file.
pub struct MetricsLog {
    file: BufWriter<File>,
    path: std::path::PathBuf,
}

impl MetricsLog {
    /// Opens `path` for a run at step `start`: lines of later steps (logged before the run was
    /// stopped and resumed from an earlier checkpoint) are dropped, so no step appears twice.
    pub fn open_at(path: &Path, start: u64) -> Result<Self> {
        if let Ok(text) = std::fs::read_to_string(path) {
            let kept: String = text
                .lines()
                .filter(|line| step_of(line).is_some_and(|s| s <= start))
                .map(|line| format!("{line}\n"))
                .collect();
            if kept.len() != text.len() {
                crate::atomic::write(path, kept.as_bytes())?;
            }
        }
        Self::open(path)
    }

    /// Opens (appending) `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| SaplingError::io(path, e))?;
        Ok(MetricsLog {
            file: BufWriter::new(file),
            path: path.to_path_buf(),
        })
    }

    /// Writes one line and flushes it, returning the JSON text.
    pub fn write(&mut self, line: &MetricLine) -> Result<String> {
        let json = serde_json::to_string(line).expect("metrics serialise");
        writeln!(self.file, "{json}")
            .and_then(|_| self.file.flush())
            .map_err(|e| SaplingError::io(&self.path, e))?;
        Ok(json)
    }
}

/// The step of a metric line, if it is one.
pub(super) fn step_of(line: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Step {
        step: u64,
    }
    serde_json::from_str::<Step>(line).ok().map(|s| s.step)
}
