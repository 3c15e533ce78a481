//! Every WGSL kernel against its reference, the ops layer's reference arm, on the WebGPU adapter
//! (lavapipe in CI): values and gradients, on shapes that are not multiples of the workgroup,
//! head dims 32/60/64/80, batch 1.

use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use sapling::config::{DeviceChoice, KernelChoice};
use sapling::model::MaskedAutoencoder;
use sapling::ops::{Kernels, Ops};
use sapling::train::Trainer;

use crate::common::{arm, assert_close, copy_model, lockstep, micro_config, wgpu_or_skip};

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// The WGSL kernel's arm (`true`) or the reference arm of the ops layer.
fn ops(kernel: bool) -> Ops {
    arm(Kernels::Wgsl, kernel)
}

#[test]
fn norm_pix_loss_matches_reference_values_and_gradients() {
    let Some(gpu) = wgpu_or_skip("norm_pix_loss_matches_reference_values_and_gradients") else {
        return;
    };
    let device = gpu.device.clone().autodiff();
    device.seed(5);
    // (batch, channels, image, patch): P = 48 and 108 are not multiples of the 64-wide
    // workgroup; one is a single sample.
    for (b, c, img, patch) in [(2, 3, 16, 4), (1, 3, 18, 6), (3, 1, 10, 5)] {
        let l = (img / patch) * (img / patch);
        let p = patch * patch * c;
        let imgs: Tensor<4> = random([b, c, img, img], &device);
        let mask: Tensor<2> = Tensor::random([b, l], Distribution::Bernoulli(0.75), &device);
        for norm in [true, false] {
            let what = format!("B{b} C{c} {img}px p{patch} norm_pix={norm}");
            let pred_data = random::<3>([b, l, p], &device).into_data();
            let run = |kernel: bool| {
                let pred = Tensor::<3>::from_data(pred_data.clone(), &device).require_grad();
                let per_patch = ops(kernel).per_patch_loss(pred.clone(), imgs.clone(), patch, norm);
                let loss = (per_patch.clone() * mask.clone()).sum() / mask.clone().sum();
                let grads = loss.backward();
                (per_patch.inner(), pred.grad(&grads).expect("pred gradient"))
            };
            let (want, want_grad) = run(false);
            let (got, got_grad) = run(true);
            assert_close(&format!("{what} per-patch loss"), &got, &want, 1e-5);
            assert_close(&format!("{what} d/dpred"), &got_grad, &want_grad, 1e-5);
        }
    }
}

#[test]
fn patch_gather_matches_patchify_then_select() {
    let Some(gpu) = wgpu_or_skip("patch_gather_matches_patchify_then_select") else {
        return;
    };
    let device = gpu.device.clone();
    device.seed(7);
    for (b, c, img, patch) in [(3, 3, 20, 4), (1, 3, 16, 16), (2, 1, 12, 3)] {
        let l = (img / patch) * (img / patch);
        let imgs: Tensor<4> = random([b, c, img, img], &device);
        // An uneven selection, rows repeated and out of order, as masks give per sample.
        let rows: Vec<i64> = (0..b * l)
            .filter(|r| r % 3 != 1)
            .rev()
            .map(|r| r as i64)
            .collect();
        let rows =
            Tensor::<1, Int>::from_data(TensorData::new(rows.clone(), [rows.len()]), &device);
        let got = ops(true).patch_gather(imgs.clone(), rows.clone(), patch);
        let want = ops(false).patch_gather(imgs, rows, patch);
        assert_close(
            &format!("gather B{b} C{c} {img}px p{patch}"),
            &got,
            &want,
            0.0,
        );
    }
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
    let device = gpu.device.clone();
    device.seed(11);
    // Eleven tensors: a full launch of seven and a partial one of four; lengths that are not
    // multiples of the 256-wide workgroup, one of a single element, and one long enough to be
    // split over many workgroups (≥ 256 · 16 · 2 elements) and past 2¹⁸ elements, where burn's
    // own full sum on wgpu loses elements (see `Ops::squared_sum`). Both arms against the host.
    let lens = [1000, 1, 4096, 300_001, 257, 64, 3, 70_000, 5, 513, 12_345];
    let tensors: Vec<Tensor<1>> = lens.iter().map(|&n| random([n], &device)).collect();
    let host = |ts: &[Tensor<1>]| -> f64 {
        ts.iter()
            .flat_map(|t| t.to_data().try_to_vec::<f32>().unwrap())
            .map(|x| (x as f64).powi(2))
            .sum()
    };
    let value = |t: Tensor<1>| t.into_scalar::<f32>() as f64;
    for (what, ts) in [
        ("eleven tensors", &tensors[..]),
        ("one tensor", &tensors[3..4]),
    ] {
        let want = host(ts);
        for kernel in [false, true] {
            let got = value(ops(kernel).squared_sum(ts.to_vec()));
            eprintln!("squared sum of {what} (kernel {kernel}): {got} vs {want} on the host");
            assert!(
                (got - want).abs() <= 1e-5 * want,
                "squared sum of {what} (kernel {kernel}): {got} vs {want} on the host"
            );
        }
    }
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
