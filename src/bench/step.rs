//! `sapling bench step`: the speed of one training step, split into its phases, with the
//! model's FLOPs and the FLOP rate achieved.

use std::fmt;

use burn::tensor::{Device, Distribution, Tensor};
use serde::Serialize;
use web_time::Instant;

use crate::config::Config;
use crate::device::PeakMeter;
use crate::error::Result;
use crate::model::{FlopCount, flops_per_image};
use crate::planner::{Levers, fmt_bytes, step_memory};
use crate::timing::{drain, median, repeat};
use crate::train::{StepCounts, TimedSteps, Timing, count_steps, fresh_trainer, time_steps};

/// Plain steps run after the timed ones with the device counters on.
const COUNTED_STEPS: u64 = 2;

/// What one benchmark run measured (medians over the timed steps).
#[derive(Debug, Clone, Serialize)]
pub struct StepBench {
    pub preset: String,
    pub device: String,
    pub micro_batch: usize,
    /// Micro-batches per step.
    pub accum: usize,
    pub levers: Levers,
    pub timed_steps: usize,
    pub images_per_sec: f64,
    pub forward_ms: f64,
    pub backward_ms: f64,
    /// Global-norm clipping and the AdamW update.
    pub optimizer_ms: f64,
    pub flops: FlopCount,
    /// `flops.train_step × images/s`.
    pub achieved_flops_per_sec: f64,
    /// The device's own large-matmul rate (1024² f32, measured in the same run): the practical
    /// peak the step's FLOP rate is compared with.
    pub matmul_flops_per_sec: f64,
    /// `achieved_flops_per_sec / matmul_flops_per_sec`.
    pub fraction_of_matmul_peak: f64,
    /// The memory model's peak for this step: on Flex, whose device memory is the host's,
    /// with the host optimizer's side added.
    pub predicted_peak: u64,
    /// The memory model's host side (the offloaded optimizer), included above on Flex.
    pub predicted_host: u64,
    /// Peak memory over the run, where the device reports it, and how it was read.
    pub peak_memory: Option<u64>,
    pub peak_memory_by: Option<String>,
    /// What a plain (untimed) step asks of the device.
    pub counts: StepCounts,
}

/// Times `timed` training steps (after two warm-up steps) of micro-batch `micro` on a fresh
/// model, the device drained between forward, backward and optimizer; `matmul_flops_per_sec`
/// is the device's [`matmul_rate`], measured once by the caller however many steps it
/// benchmarks.
pub fn bench_step(
    config: &Config,
    device: &Device,
    describe: &str,
    (micro, accum, levers): (usize, usize, Levers),
    timed: usize,
    matmul_flops_per_sec: f64,
) -> Result<StepBench> {
    let meter = PeakMeter::start(device);
    let steps = TimedSteps {
        warmup: 2,
        timed,
        timing: Timing::Split,
    };
    let (mut trainer, batches) = fresh_trainer(config, device, (micro, accum), levers)?;
    let times = pollster::block_on(time_steps(&mut trainer, &batches, steps))?;
    let peak = meter.finish(device);
    let counts = pollster::block_on(count_steps(&mut trainer, device, &batches, COUNTED_STEPS))?;
    let f = times.forward.expect("a split step times its forward pass");
    let (b, o) = (times.forward_backward - f, times.optimizer);
    let images_per_sec = (micro * accum) as f64 / (f + b + o);
    let predicted = step_memory(&config.model, micro, accum, levers);
    let flex = crate::kernels::is_flex(device);
    let flops = flops_per_image(&config.model);
    let achieved = flops.train_step * images_per_sec;
    Ok(StepBench {
        preset: config.preset.name().to_string(),
        device: describe.to_string(),
        micro_batch: micro,
        accum,
        levers,
        timed_steps: timed.max(1),
        images_per_sec,
        forward_ms: f * 1e3,
        backward_ms: b * 1e3,
        optimizer_ms: o * 1e3,
        flops,
        achieved_flops_per_sec: achieved,
        matmul_flops_per_sec,
        fraction_of_matmul_peak: achieved / matmul_flops_per_sec,
        predicted_peak: predicted.total + if flex { predicted.host } else { 0 },
        predicted_host: predicted.host,
        peak_memory: peak.map(|p| p.0),
        peak_memory_by: peak.map(|p| p.1.to_string()),
        counts,
    })
}

/// FLOP/s of an `n × n` f32 matmul on `device` (median of `timed` after a warm-up).
pub fn matmul_rate(device: &Device, n: usize, timed: usize) -> Result<f64> {
    let a = Tensor::<2>::random([n, n], Distribution::Default, device);
    let b = Tensor::<2>::random([n, n], Distribution::Default, device);
    let secs = pollster::block_on(repeat(1, timed, async || {
        let t0 = Instant::now();
        let c = a.clone().matmul(b.clone());
        drain(device, c).await?;
        Ok(t0.elapsed().as_secs_f64())
    }))?;
    Ok(2.0 * (n as f64).powi(3) / median(secs))
}

impl fmt::Display for StepBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "preset     {} on {}", self.preset, self.device)?;
        writeln!(
            f,
            "step       micro-batch {} x {} ({}): {:.1} images/s (median of {} steps)",
            self.micro_batch,
            self.accum,
            self.levers.describe(),
            self.images_per_sec,
            self.timed_steps
        )?;
        writeln!(
            f,
            "phases     forward {:.1} ms, backward {:.1} ms, optimizer {:.1} ms",
            self.forward_ms, self.backward_ms, self.optimizer_ms
        )?;
        writeln!(
            f,
            "flops      {:.3} GFLOP per image per training step; encoder {:.3} GFLOPs by the Sapiens table's convention",
            self.flops.train_step / 1e9,
            self.flops.paper_encoder / 1e9
        )?;
        writeln!(
            f,
            "achieved   {:.2} GFLOP/s = {:.0}% of this device's 1024² matmul rate ({:.2} GFLOP/s)",
            self.achieved_flops_per_sec / 1e9,
            100.0 * self.fraction_of_matmul_peak,
            self.matmul_flops_per_sec / 1e9
        )?;
        write!(
            f,
            "memory     peak {}; the memory model predicts {}",
            self.peak_memory
                .map_or("not reported".to_string(), |p| format!(
                    "{} ({})",
                    fmt_bytes(p),
                    self.peak_memory_by.as_deref().unwrap_or("")
                )),
            fmt_bytes(self.predicted_peak)
        )?;
        let c = &self.counts;
        let per = c.per_step;
        write!(
            f,
            "\ndevice     per step: {} dispatches, {} uploads ({}), {} readbacks; pool {} reserved, {} more per step (mean of {} plain steps)",
            per.dispatches,
            per.uploads,
            fmt_bytes(per.upload_bytes),
            per.readbacks,
            c.pool_reserved.map_or("n/a".into(), fmt_bytes),
            c.pool_growth_per_step.map_or("n/a".into(), fmt_bytes),
            c.steps
        )?;
        if !c.by_kernel.is_empty() {
            let top: Vec<String> = c
                .by_kernel
                .iter()
                .take(12)
                .map(|(name, n)| format!("{name} {n}"))
                .collect();
            write!(f, "\nkernels    per step: {}", top.join(", "))?;
        }
        Ok(())
    }
}
