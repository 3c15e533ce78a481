//! `sapling bench scaling`: training steps per second against the micro-batch and against the
//! image size (tokens per image), as tables and plots.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::Serialize;

use super::step::{bench_step, matmul_rate};
use crate::config::Config;
use crate::error::{Result, SaplingError};
use crate::planner::Levers;
use crate::viz::plot::line_plot;

/// One measured point.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingPoint {
    pub micro_batch: usize,
    pub img_size: usize,
    /// Patches per image.
    pub tokens: usize,
    pub steps_per_sec: f64,
    pub images_per_sec: f64,
}

/// Both sweeps, and where their plots went.
#[derive(Debug, Clone, Serialize)]
pub struct Scaling {
    pub by_batch: Vec<ScalingPoint>,
    pub by_tokens: Vec<ScalingPoint>,
    pub plots: Vec<PathBuf>,
}

/// The points of the two sweeps.
#[derive(Debug, Clone)]
pub struct Sweeps {
    /// Micro-batches, at the config's image size.
    pub batches: Vec<usize>,
    /// Image sizes, at micro-batch `batch_for_sizes`.
    pub sizes: Vec<usize>,
    pub batch_for_sizes: usize,
    /// Timed steps per point.
    pub timed: usize,
}

/// Measures `config`'s model over both sweeps and draws `scaling-batch.png` and
/// `scaling-tokens.png` into `out`.
pub fn scaling(
    config: &Config,
    device: &Device,
    describe: &str,
    sweeps: &Sweeps,
    out: &Path,
) -> Result<Scaling> {
    let Sweeps {
        batches,
        sizes,
        batch_for_sizes,
        timed,
    } = sweeps.clone();
    let p = config.model.patch_size;
    if let Some(bad) = sizes.iter().find(|s| *s % p != 0 || **s == 0) {
        return Err(SaplingError::config(
            "--img-sizes",
            format!("{bad} is not a positive multiple of the patch size {p}"),
        ));
    }
    let matmul = matmul_rate(device, 1024, 3)?;
    let point = |c: &Config, b: usize| -> Result<ScalingPoint> {
        tracing::info!("scaling: micro-batch {b}, {} px", c.model.img_size);
        let levers = Levers::of(c, *device == Device::flex());
        let r = bench_step(c, device, describe, (b, 1, levers), timed, matmul)?;
        Ok(ScalingPoint {
            micro_batch: b,
            img_size: c.model.img_size,
            tokens: c.model.num_patches(),
            steps_per_sec: r.images_per_sec / b as f64,
            images_per_sec: r.images_per_sec,
        })
    };
    let by_batch = batches
        .iter()
        .map(|&b| point(config, b))
        .collect::<Result<Vec<_>>>()?;
    let by_tokens = sizes
        .iter()
        .map(|&s| {
            let mut c = config.clone();
            c.model.img_size = s;
            c.validate()?;
            point(&c, batch_for_sizes)
        })
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(out).map_err(|e| SaplingError::io(out, e))?;
    let name = config.preset.name();
    let plots = vec![
        out.join("scaling-batch.png"),
        out.join("scaling-tokens.png"),
    ];
    line_plot(
        &plots[0],
        &format!("{name} on {describe}: steps/s vs micro-batch"),
        "micro-batch",
        "steps/s",
        &by_batch
            .iter()
            .map(|p| (p.micro_batch as f64, p.steps_per_sec))
            .collect::<Vec<_>>(),
    )?;
    line_plot(
        &plots[1],
        &format!("{name} on {describe}: steps/s vs tokens (batch {batch_for_sizes})"),
        "patches per image",
        "steps/s",
        &by_tokens
            .iter()
            .map(|p| (p.tokens as f64, p.steps_per_sec))
            .collect::<Vec<_>>(),
    )?;
    Ok(Scaling {
        by_batch,
        by_tokens,
        plots,
    })
}
