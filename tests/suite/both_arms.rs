//! Kernels that both kernel sets have (the kept patches' gather, the per-patch norm-pix loss,
//! the gradients' sum of squares), checked against the ops layer's reference arm or the host,
//! by the WGSL (`kernels`) and CPU (`cpu_kernels`) suites alike, each on its own device.

use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use sapling::ops::{Kernels, Ops};

use crate::common::{assert_close, assert_same_bits};

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// Image batches for the loss: P = 48 and 108 are not multiples of the WGSL kernels' 64-wide
/// workgroup, one is a single sample, one has a single channel.
pub const LOSS_SHAPES: [Shape; 3] = [(2, 3, 16, 16, 4), (1, 3, 18, 18, 6), (3, 1, 10, 10, 5)];

/// Image batches for the gather: one patch per image, a single channel, odd patch sizes.
pub const GATHER_SHAPES: [Shape; 3] = [(3, 3, 20, 20, 4), (1, 3, 16, 16, 16), (2, 1, 12, 12, 3)];

/// `(batch, channels, height, width, patch)`.
pub type Shape = (usize, usize, usize, usize, usize);

/// Per-patch loss values and gradients of `kernels`' arm against the reference on `device`.
pub fn loss_matches_reference(device: &Device, kernels: Kernels, shapes: &[Shape]) {
    let device = device.clone().autodiff();
    device.seed(5);
    for &(b, c, h, w, patch) in shapes {
        let l = (h / patch) * (w / patch);
        let p = patch * patch * c;
        let imgs: Tensor<4> = random([b, c, h, w], &device);
        let mask: Tensor<2> = Tensor::random([b, l], Distribution::Bernoulli(0.75), &device);
        for norm in [true, false] {
            let what = format!("{kernels} B{b} C{c} {h}×{w}px p{patch} norm_pix={norm}");
            let pred_data = random::<3>([b, l, p], &device).into_data();
            let run = |kernel: bool| {
                let pred = Tensor::<3>::from_data(pred_data.clone(), &device).require_grad();
                let per_patch = Ops::arm(kernels, kernel).per_patch_loss(
                    pred.clone(),
                    imgs.clone(),
                    patch,
                    norm,
                );
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

/// The kept patches' gather of `kernels`' arm against patchify-then-select on `device`: equal,
/// not close (both only move values).
pub fn gather_matches_patchify_then_select(device: &Device, kernels: Kernels, shapes: &[Shape]) {
    device.seed(7);
    for &(b, c, h, w, patch) in shapes {
        let l = (h / patch) * (w / patch);
        let imgs: Tensor<4> = random([b, c, h, w], device);
        // An uneven selection, out of order, as masks give per sample.
        let rows: Vec<i64> = (0..b * l)
            .filter(|r| r % 3 != 1)
            .rev()
            .map(|r| r as i64)
            .collect();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows.clone(), [rows.len()]), device);
        let got = Ops::arm(kernels, true).patch_gather(imgs.clone(), rows.clone(), patch);
        let want = Ops::arm(kernels, false).patch_gather(imgs, rows, patch);
        assert_same_bits(
            &format!("{kernels} gather B{b} C{c} {h}×{w}px p{patch}"),
            &got,
            &want,
        );
    }
}

/// The sum of squares of many tensors (the global gradient norm) of both arms against the host.
pub fn squared_sum_matches_host(device: &Device, kernels: Kernels) {
    device.seed(11);
    // Eleven tensors: a full WGSL launch of seven and a partial one of four; lengths that are
    // not multiples of the 256-wide workgroup or the CPU kernel's block, one of a single
    // element, and one long enough to be split over many workgroups (≥ 256 · 16 · 2 elements)
    // and past 2¹⁸ elements, where burn's own full sum on wgpu loses elements (see
    // `Ops::squared_sum`).
    let lens = [1000, 1, 4096, 300_001, 257, 64, 3, 70_000, 5, 513, 12_345];
    let tensors: Vec<Tensor<1>> = lens.iter().map(|&n| random([n], device)).collect();
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
            let got = value(Ops::arm(kernels, kernel).squared_sum(ts.to_vec()));
            assert!(
                (got - want).abs() <= 1e-5 * want,
                "{kernels}: squared sum of {what} (kernel {kernel}): {got} vs {want} on the host"
            );
        }
    }
}
