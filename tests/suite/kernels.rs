//! Every WGSL kernel against its reference, the ops layer's reference arm, on the WebGPU adapter
//! (lavapipe in CI): values and gradients, on shapes that are not multiples of the workgroup,
//! head dims 32/60/64/80, batch 1.

use burn::tensor::{Device, Distribution, Tensor};
use sapling::config::{DeviceChoice, KernelChoice};
use sapling::model::MaskedAutoencoder;
use sapling::ops::{Kernels, Ops};
use sapling::train::Trainer;

use crate::both_arms;
use crate::common::{assert_close, copy_model, lockstep, micro_config, wgpu_or_skip};

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// The WGSL kernel's arm (`true`) or the reference arm of the ops layer.
fn ops(kernel: bool) -> Ops {
    Ops::arm(Kernels::Wgsl, kernel)
}

#[test]
fn norm_pix_loss_matches_reference_values_and_gradients() {
    let Some(gpu) = wgpu_or_skip("norm_pix_loss_matches_reference_values_and_gradients") else {
        return;
    };
    both_arms::loss_matches_reference(&gpu.device, Kernels::Wgsl, &both_arms::LOSS_SHAPES);
}

#[test]
fn patch_gather_matches_patchify_then_select() {
    let Some(gpu) = wgpu_or_skip("patch_gather_matches_patchify_then_select") else {
        return;
    };
    both_arms::gather_matches_patchify_then_select(
        &gpu.device,
        Kernels::Wgsl,
        &both_arms::GATHER_SHAPES,
    );
}

#[test]
fn flash_attention_matches_reference_values_and_gradients() {
    let Some(gpu) = wgpu_or_skip("flash_attention_matches_reference_values_and_gradients") else {
        return;
    };
    let device = gpu.device.clone().autodiff();
    device.seed(9);
    // Head dims of the Sapiens presets (64, 80, 60), token counts that are not multiples of
    // the 64-row workgroup or the 16-row tile, batch 1. The tiled form splits each row over
    // 4 (hd 64, 80), 1 (hd 60) and 2 (hd 32) invocations.
    for (b, h, n, hd) in [
        (1, 2, 37, 64),
        (2, 3, 50, 80),
        (1, 1, 17, 60),
        (1, 2, 130, 32),
    ] {
        let what = format!("attention B{b} H{h} N{n} hd{hd}");
        let qkv_data = random::<3>([b, n, 3 * h * hd], &device).into_data();
        let weights: Tensor<3> = random([b, n, h * hd], &device);
        let run = |ops: Ops| {
            let qkv = Tensor::<3>::from_data(qkv_data.clone(), &device).require_grad();
            let out = ops.attention(qkv.clone(), h);
            let grads = (out.clone() * weights.clone()).sum().backward();
            (out.inner(), qkv.grad(&grads).expect("gradient"))
        };
        let (want, want_grad) = run(ops(false));
        // Both forward kernels: one query row per invocation, and the tiled form for GPUs.
        for tiled in [false, true] {
            let what = format!("{what} tiled={tiled}");
            let (got, got_grad) = run(ops(true).with_tiled_attention(tiled));
            assert_close(&format!("{what} out"), &got, &want, 1e-5);
            // dq, dk and dv side by side, each against its own scale.
            for (i, name) in ["dq", "dk", "dv"].iter().enumerate() {
                let part = |g: &Tensor<3>| g.clone().narrow(2, i * h * hd, h * hd);
                assert_close(
                    &format!("{what} {name}"),
                    &part(&got_grad),
                    &part(&want_grad),
                    1e-4,
                );
            }
        }
    }
}

#[test]
fn squared_sum_matches_reference() {
    let Some(gpu) = wgpu_or_skip("squared_sum_matches_reference") else {
        return;
    };
    both_arms::squared_sum_matches_host(&gpu.device, Kernels::Wgsl);
}

#[test]
fn wgsl_and_reference_paths_train_alike() {
    // The whole step both ways from the same weights, batches and masks: gather, loss and
    // attention all swapped at once.
    let Some(gpu) = wgpu_or_skip("wgsl_and_reference_paths_train_alike") else {
        return;
    };
    let mut cfg = micro_config("kernel-paths");
    cfg.train.device = DeviceChoice::Wgpu;
    let dev = gpu.device.clone().autodiff();
    dev.seed(13);
    let model = MaskedAutoencoder::new(&cfg.model, &dev);
    let copy = copy_model(&model, &dev);
    let mut reference = Trainer::from_model(&cfg, model, &dev).unwrap();
    cfg.train.kernels = KernelChoice::Wgsl;
    let mut wgsl = Trainer::from_model(&cfg, copy, &dev).unwrap();
    assert_eq!(wgsl.model().ops().kernels, Kernels::Wgsl);
    lockstep(
        ("reference", &mut reference),
        ("wgsl", &mut wgsl),
        4,
        1e-5,
        1e-4,
    );
}

#[test]
fn wgsl_kernels_on_the_cpu_are_refused_naming_the_field() {
    let mut cfg = micro_config("kernels-on-cpu");
    cfg.train.kernels = KernelChoice::Wgsl;
    let err = sapling::device::select_for(&cfg.train)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train.kernels") && err.contains("--device wgpu"),
        "{err}"
    );
}
