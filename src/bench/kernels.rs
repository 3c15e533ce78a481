//! `sapling bench kernels`: each of sapling's kernels (WGSL on wgpu, Rust on the CPU) against
//! its reference (the ops layer's two arms) on the same device in the same run, at the shapes
//! of a preset's step: time (median after warm-up, the device drained before and after each
//! repetition), the ratio, and the device memory each path keeps alive between forward and
//! backward (wgpu only: Flex has no pool to read).

use std::fmt;

use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use serde::Serialize;
use web_time::Instant;

use crate::config::Config;
use crate::error::{Result, SaplingError};
use crate::model::MaskPlan;
use crate::ops::{Kernels, Ops};
use crate::planner::fmt_bytes;
use crate::timing::{median, repeat};

/// One kernel against its reference.
#[derive(Debug, Clone, Serialize)]
pub struct KernelCase {
    pub kernel: String,
    /// What runs, with its shapes.
    pub work: String,
    pub reference_ms: f64,
    pub kernel_ms: f64,
    /// `reference_ms / kernel_ms`: above 1, the kernel is faster.
    pub speedup: f64,
    /// Device memory in use after the forward pass minus before, i.e. the output and what is
    /// kept for backward (wgpu pool, bytes in use); `None` where nothing is kept for backward.
    pub reference_kept: Option<u64>,
    pub kernel_kept: Option<u64>,
    /// Memory the reference writes that the kernel never does, worked out from the shapes.
    pub reference_extra: Option<u64>,
}

/// All kernels at one preset's shapes.
#[derive(Debug, Clone, Serialize)]
pub struct KernelReport {
    pub preset: String,
    pub device: String,
    /// The kernels measured against the reference: `wgsl` or `cpu`.
    pub kernels: Kernels,
    pub micro_batch: usize,
    pub repetitions: usize,
    pub cases: Vec<KernelCase>,
}

/// Times `work` `reps` times after one warm-up, draining the device around each.
fn time(device: &Device, reps: usize, mut work: impl FnMut()) -> Result<f64> {
    let sync = || {
        device
            .sync()
            .map_err(|e| SaplingError::Device(e.to_string()))
    };
    sync()?;
    let times = pollster::block_on(repeat(1, reps.max(1), async || {
        let t0 = Instant::now();
        work();
        sync()?;
        Ok(t0.elapsed().as_secs_f64())
    }))?;
    Ok(median(times) * 1e3)
}

/// Bytes in use after `forward` (its result held) minus before.
fn kept<T>(device: &Device, forward: impl FnOnce() -> T) -> Result<Option<u64>> {
    device
        .sync()
        .map_err(|e| SaplingError::Device(e.to_string()))?;
    device.memory_cleanup();
    let before = device.memory_pool_usage().map(|u| u.bytes_in_use);
    let held = forward();
    device
        .sync()
        .map_err(|e| SaplingError::Device(e.to_string()))?;
    let after = device.memory_pool_usage().map(|u| u.bytes_in_use);
    drop(held);
    Ok(before.zip(after).map(|(b, a)| a.saturating_sub(b)))
}

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

fn case(
    kernel: &str,
    work: String,
    (reference_ms, kernel_ms): (f64, f64),
    (reference_kept, kernel_kept): (Option<u64>, Option<u64>),
    reference_extra: Option<u64>,
) -> KernelCase {
    KernelCase {
        kernel: kernel.to_string(),
        work,
        reference_ms,
        kernel_ms,
        speedup: reference_ms / kernel_ms,
        reference_kept,
        kernel_kept,
        reference_extra,
    }
}

/// Benchmarks every kernel of `kernels` (`wgsl` or `cpu`) at `config`'s shapes with micro-batch
/// `micro` on `device`, which runs them.
pub fn bench_kernels(
    config: &Config,
    device: &Device,
    kernels: Kernels,
    describe: &str,
    micro: usize,
    reps: usize,
) -> Result<KernelReport> {
    if kernels == Kernels::Reference {
        return Err(SaplingError::config(
            "train.kernels",
            "`bench kernels` times sapling's kernels against the reference: use --kernels auto",
        ));
    }
    let m = &config.model;
    let (b, s, p) = (micro, m.img_size, m.patch_size);
    let (l, k, pd) = (m.num_patches(), m.num_visible(), m.patch_dim());
    let ad = device.clone().autodiff();
    ad.seed(config.train.seed);
    let ops = |kernel: bool| Ops::arm(kernels, kernel);
    let mut cases = Vec::new();

    let imgs: Tensor<4> = random([b, m.in_chans, s, s], device);
    let plan = MaskPlan::random(b, l, k, config.train.seed);
    let keep = plan.keep_rows();
    let rows = Tensor::<1, Int>::from_data(TensorData::new(keep.clone(), [keep.len()]), device);
    let t = (
        time(device, reps, || {
            let _ = ops(false).patch_gather(imgs.clone(), rows.clone(), p);
        })?,
        time(device, reps, || {
            let _ = ops(true).patch_gather(imgs.clone(), rows.clone(), p);
        })?,
    );
    cases.push(case(
        "patch_gather",
        format!("[{b}, {}, {s}, {s}] → [{}, {pd}]", m.in_chans, b * k),
        t,
        (None, None),
        Some((b * l * pd * 4) as u64),
    ));

    let imgs_ad = Tensor::<4>::from_data(imgs.to_data(), &ad);
    let mask = Tensor::<2>::from_data(TensorData::new(plan.mask.clone(), [b, l]), &ad);
    let pred_data = random::<3>([b, l, pd], device).into_data();
    let loss = |kernel: bool| {
        let pred = Tensor::<3>::from_data(pred_data.clone(), &ad).require_grad();
        let per_patch = ops(kernel).per_patch_loss(pred, imgs_ad.clone(), p, m.norm_pix);
        (per_patch * mask.clone()).sum() / mask.clone().sum()
    };
    let t = (
        time(device, reps, || {
            let _ = loss(false).backward();
        })?,
        time(device, reps, || {
            let _ = loss(true).backward();
        })?,
    );
    let held = (kept(device, || loss(false))?, kept(device, || loss(true))?);
    cases.push(case(
        "norm_pix_loss (fwd+bwd)",
        format!(
            "pred [{b}, {l}, {pd}], image [{b}, {}, {s}, {s}]",
            m.in_chans
        ),
        t,
        held,
        None,
    ));

    let stacks = [
        ("encoder", 1 + k, m.heads, m.dim / m.heads),
        (
            "decoder",
            1 + l,
            m.decoder_heads,
            m.decoder_dim / m.decoder_heads,
        ),
    ];
    // Both forward kernels of the WGSL attention: one query row per invocation, and the tiled
    // form for GPUs (`Ops::tiled_attention`); the backward kernels are the same.
    let forms: &[bool] = match kernels {
        Kernels::Wgsl => &[false, true],
        _ => &[false],
    };
    let attention = stacks
        .into_iter()
        .flat_map(|s| forms.iter().map(move |&tiled| (s, tiled)));
    for ((stack, n, h, hd), tiled) in attention {
        let qkv = random::<3>([b, n, 3 * h * hd], device).into_data();
        let forward = |kernel: bool| {
            let qkv = Tensor::<3>::from_data(qkv.clone(), &ad).require_grad();
            ops(kernel).with_tiled_attention(tiled).attention(qkv, h)
        };
        let t = (
            time(device, reps, || {
                let _ = forward(false).sum().backward();
            })?,
            time(device, reps, || {
                let _ = forward(true).sum().backward();
            })?,
        );
        let held = (
            kept(device, || forward(false))?,
            kept(device, || forward(true))?,
        );
        let form = if tiled { ", tiled" } else { "" };
        cases.push(case(
            &format!("attention, {stack}{form} (fwd+bwd)"),
            format!("qkv [{b}, {n}, 3·{}], {h} heads of {hd}", h * hd),
            t,
            held,
            Some((b * h * n * n * 4) as u64),
        ));
    }

    if kernels == Kernels::Cpu {
        cases.extend(cpu_only_cases(config, &ad, micro, reps)?);
    }

    Ok(KernelReport {
        preset: config.preset.name().to_string(),
        device: describe.to_string(),
        kernels,
        micro_batch: micro,
        repetitions: reps,
        cases,
    })
}

/// The kernels only the CPU has (on wgpu these ops are burn's on both arms), at the decoder's
/// shapes, where a tiny step spends most: linear (fc1), GELU and layer norm, forward and backward.
fn cpu_only_cases(config: &Config, ad: &Device, b: usize, reps: usize) -> Result<Vec<KernelCase>> {
    let m = &config.model;
    let (n, d, hidden) = (
        1 + m.num_patches(),
        m.decoder_dim,
        m.decoder_dim * m.mlp_ratio,
    );
    let ops = |kernel: bool| Ops::arm(Kernels::Cpu, kernel);
    let x = random::<3>([b, n, d], ad).into_data();
    let h = random::<3>([b, n, hidden], ad).into_data();
    let leaf = |data: &TensorData| Tensor::<3>::from_data(data.clone(), ad).require_grad();
    let fc1 = burn::nn::LinearConfig::new(d, hidden).init(ad);
    let norm = burn::nn::LayerNormConfig::new(d).init(ad);
    let timed = |work: &dyn Fn(bool)| -> Result<(f64, f64)> {
        Ok((
            time(ad, reps, || work(false))?,
            time(ad, reps, || work(true))?,
        ))
    };
    let linear = timed(&|k| {
        let _ = ops(k).linear(&fc1, leaf(&x)).sum().backward();
    })?;
    let gelu = timed(&|k| {
        let _ = ops(k).gelu(leaf(&h)).sum().backward();
    })?;
    let layer_norm = timed(&|k| {
        let _ = ops(k).layer_norm(&norm, leaf(&x), 1e-6).sum().backward();
    })?;
    Ok(vec![
        case(
            "linear (fwd+bwd)",
            format!("[{b}, {n}, {d}] · [{d}, {hidden}]"),
            linear,
            (None, None),
            None,
        ),
        case(
            "gelu (fwd+bwd)",
            format!("[{b}, {n}, {hidden}]"),
            gelu,
            (None, None),
            None,
        ),
        case(
            "layer_norm (fwd+bwd)",
            format!("[{b}, {n}, {d}]"),
            layer_norm,
            (None, None),
            None,
        ),
    ])
}

impl fmt::Display for KernelReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} at micro-batch {} on {}, {} kernels (median of {} after a warm-up)",
            self.preset, self.micro_batch, self.device, self.kernels, self.repetitions
        )?;
        writeln!(
            f,
            "{:<36} {:>12} {:>10} {:>8} {:>13} {:>13} {:>14}  work",
            "kernel",
            "reference ms",
            format!("{} ms", self.kernels),
            "speedup",
            "ref kept",
            "kernel kept",
            "ref also writes"
        )?;
        let mem = |b: Option<u64>| b.map(fmt_bytes).unwrap_or_else(|| "-".into());
        for c in &self.cases {
            writeln!(
                f,
                "{:<36} {:>12.2} {:>10.2} {:>7.2}× {:>13} {:>13} {:>14}  {}",
                c.kernel,
                c.reference_ms,
                c.kernel_ms,
                c.speedup,
                mem(c.reference_kept),
                mem(c.kernel_kept),
                mem(c.reference_extra),
                c.work
            )?;
        }
        Ok(())
    }
}
