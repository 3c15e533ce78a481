//! Step 8: a custom WGSL kernel — launched, checked against its reference, timed.
//!
//! sapling's hot paths can run as hand-written WGSL (`--kernels wgsl`). The simplest is the
//! patch gather: the reference path patchifies the whole batch (a permuted copy of every image)
//! and then selects the visible rows; `shaders/patch_gather.wgsl` computes, for each output
//! element, which pixel of which image it is and copies only those. The kernel is an operation
//! of a burn backend extension (`sapling::kernels::wgsl`), so it composes with burn tensors;
//! its launcher (`src/kernels/wgsl/patch_gather.rs`) fills the template's sizes, binds the
//! buffers and dispatches one invocation per output element. The model never calls it
//! directly: `sapling::ops::Ops::patch_gather` is one `match` whose reference arm is the plain
//! burn version and whose `wgsl` arm is this kernel.
//!
//! Run: `cargo run --release --example 08_wgsl_kernel` (needs a WebGPU adapter; on a machine
//! without a GPU, `apt-get install mesa-vulkan-drivers` gives lavapipe, a software one)

mod common;

use burn::tensor::{Distribution, Int, Tensor, TensorData};
use sapling::config::Preset;
use sapling::model::MaskPlan;
use sapling::ops::{Kernels, Ops};
use sapling::timing::{drain, median, repeat};
use web_time::Instant;

fn main() -> anyhow::Result<()> {
    let selected = match sapling::device::wgpu_device() {
        Ok(s) => s,
        Err(e) => {
            println!(
                "{e}: this step needs a WebGPU adapter (on Linux without a GPU, install mesa-vulkan-drivers)"
            );
            return Ok(());
        }
    };
    let device = selected.device.clone();
    println!("adapter: {}", selected.describe());
    println!("the shader, as the launcher sees it before its sizes are filled in:\n");
    println!("{}", include_str!("../shaders/patch_gather.wgsl"));

    let config = Preset::Tiny.config().model;
    let b = if common::fast() { 4 } else { 32 };
    let (s, p, l, k) = (
        config.img_size,
        config.patch_size,
        config.num_patches(),
        config.num_visible(),
    );
    let imgs = Tensor::<4>::random([b, 3, s, s], Distribution::Normal(0.0, 1.0), &device);
    let rows = MaskPlan::random(b, l, k, 3).keep_rows();
    let rows = Tensor::<1, Int>::from_data(TensorData::new(rows.clone(), [rows.len()]), &device);

    // 1. Correctness: the same numbers as the plain-burn reference.
    let kernel = Ops::new(Kernels::Wgsl);
    let got = kernel.patch_gather(imgs.clone(), rows.clone(), p);
    let want = Ops::REFERENCE.patch_gather(imgs.clone(), rows.clone(), p);
    let diff = (got.clone() - want).abs().max().into_scalar::<f32>();
    println!(
        "gathered {:?}; largest difference from the reference: {diff}",
        got.dims()
    );
    assert_eq!(diff, 0.0, "a gather moves values: it must match exactly");

    // 2. Speed: median of several runs after a warm-up, waiting for the device each time.
    let reps = if common::fast() { 3 } else { 20 };
    let time = |ops: Ops| -> anyhow::Result<f64> {
        let ms = pollster::block_on(repeat(1, reps, async || {
            let t0 = Instant::now();
            let out = ops.patch_gather(imgs.clone(), rows.clone(), p);
            drain(&device, out).await?;
            Ok(t0.elapsed().as_secs_f64() * 1e3)
        }))?;
        Ok(median(ms))
    };
    let reference = time(Ops::REFERENCE)?;
    let kernel = time(kernel)?;
    println!(
        "reference {reference:.2} ms, kernel {kernel:.2} ms: {:.2}× (micro-batch {b}); the reference also writes all {} patches ({} KiB) first",
        reference / kernel,
        b * l,
        b * l * config.patch_dim() * 4 / 1024
    );
    println!(
        "next: `sapling bench kernels` does this for every kernel, `cargo test -- kernels::` checks them all"
    );
    Ok(())
}
