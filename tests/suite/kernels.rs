//! Every WGSL kernel against its plain-Burn reference on the WebGPU adapter (lavapipe in CI):
//! values and gradients, on shapes that are not multiples of the workgroup, head dims 32/60/64/80,
//! batch 1.

use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use sapling::config::DeviceChoice;
use sapling::kernels::{KernelPath, attention, norm_pix, ops, patch_gather};
use sapling::model::MaskedAutoencoder;
use sapling::train::Trainer;

use crate::common::{assert_close, copy_model, lockstep, micro_config, wgpu_or_skip};

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
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
                let per_patch = if kernel {
                    ops::norm_pix_loss(pred.clone(), imgs.clone(), patch, norm)
                } else {
                    norm_pix::reference(pred.clone(), imgs.clone(), patch, norm)
                };
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
        let got = ops::patch_gather(imgs.clone(), rows.clone(), patch);
        let want = patch_gather::reference(imgs, rows, patch);
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
    // the 64-row workgroup or the 16-row tile, batch 1.
    for (b, h, n, hd) in [
        (1, 2, 37, 64),
        (2, 3, 50, 80),
        (1, 1, 17, 60),
        (1, 2, 130, 32),
    ] {
        let what = format!("attention B{b} H{h} N{n} hd{hd}");
        let scale = (hd as f32).powf(-0.5);
        let inputs: Vec<TensorData> = (0..3)
            .map(|_| random::<4>([b, h, n, hd], &device).into_data())
            .collect();
        let weights: Tensor<4> = random([b, h, n, hd], &device);
        let run = |kernel: bool| {
            let [q, k, v] = [0, 1, 2]
                .map(|i| Tensor::<4>::from_data(inputs[i].clone(), &device).require_grad());
            let out = if kernel {
                ops::flash_attention(q.clone(), k.clone(), v.clone(), scale)
            } else {
                attention::reference(q.clone(), k.clone(), v.clone(), scale)
            };
            let grads = (out.clone() * weights.clone()).sum().backward();
            let grad = |t: &Tensor<4>| t.grad(&grads).expect("gradient");
            (out.inner(), [grad(&q), grad(&k), grad(&v)])
        };
        let (want, want_grads) = run(false);
        let (got, got_grads) = run(true);
        assert_close(&format!("{what} out"), &got, &want, 1e-5);
        for (name, (g, w)) in ["dq", "dk", "dv"]
            .iter()
            .zip(got_grads.iter().zip(&want_grads))
        {
            assert_close(&format!("{what} {name}"), g, w, 1e-4);
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
    let mut reference = Trainer::from_model(&cfg, model, &dev);
    cfg.train.kernels = KernelPath::Wgsl;
    let mut wgsl = Trainer::from_model(&cfg, copy, &dev);
    assert_eq!(wgsl.model().kernels(), KernelPath::Wgsl);
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
    cfg.train.kernels = KernelPath::Wgsl;
    let err = sapling::device::select_for(&cfg.train)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train.kernels") && err.contains("--device wgpu"),
        "{err}"
    );
}
