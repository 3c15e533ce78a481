//! The model's pieces against hand computations.

use burn::module::Module;
use burn::tensor::{Distribution, Tensor, TensorData, Tolerance};
use sapling::config::Preset;
use sapling::model::loss::masked_mean;
use sapling::model::{MaskPlan, MaskedAutoencoder, analytic_params};
use sapling::ops::{Ops, norm_pix_target, patchify, unpatchify};

use crate::common::{flex, micro_model};

#[test]
fn patchify_orders_rows_columns_then_channels_and_round_trips() {
    let dev = flex();
    // [1, 2, 4, 4] with value = c * 100 + y * 10 + x.
    let values: Vec<f32> = (0..2)
        .flat_map(|c| (0..4).flat_map(move |y| (0..4).map(move |x| (c * 100 + y * 10 + x) as f32)))
        .collect();
    let imgs = Tensor::<4>::from_data(TensorData::new(values, [1, 2, 4, 4]), &dev);
    let patches = patchify(imgs.clone(), 2);
    assert_eq!(patches.dims(), [1, 4, 8]);
    let p = patches.clone().into_data().try_into_vec::<f32>().unwrap();
    // Patch 1 is grid row 0, column 1: pixels (y 0-1, x 2-3), channels innermost.
    assert_eq!(
        &p[8..16],
        &[2.0, 102.0, 3.0, 103.0, 12.0, 112.0, 13.0, 113.0]
    );
    // Patch 2 is grid row 1, column 0.
    assert_eq!(&p[16..18], &[20.0, 120.0]);
    let back = unpatchify(patches, 2, 2);
    back.into_data().assert_eq(&imgs.into_data(), true);

    let random = Tensor::<4>::random([3, 3, 32, 32], Distribution::Default, &dev);
    unpatchify(patchify(random.clone(), 8), 8, 3)
        .into_data()
        .assert_eq(&random.into_data(), true);
}

#[test]
fn norm_pix_loss_matches_a_hand_computed_case() {
    let dev = flex();
    // One channel, two 2×2 patches side by side: [1, 2, 3, 4] and a constant 10. The first is
    // removed (mask 1), the second kept.
    let imgs = Tensor::<4>::from_data(
        TensorData::new(
            vec![1.0f32, 2.0, 10.0, 10.0, 3.0, 4.0, 10.0, 10.0],
            [1, 1, 2, 4],
        ),
        &dev,
    );
    let target = patchify(imgs.clone(), 2);
    let pred = Tensor::<3>::zeros([1, 2, 4], &dev);
    let mask = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 0.0], [1, 2]), &dev);
    let loss = |norm_pix: bool| {
        let per_patch = Ops::REFERENCE.per_patch_loss(pred.clone(), imgs.clone(), 2, norm_pix);
        masked_mean(per_patch, mask.clone()).into_scalar::<f32>()
    };
    // Patch 1: mean 2.5, unbiased var 5/3; normalised values (v - 2.5)/sqrt(5/3 + 1e-6).
    // MSE against zeros = sum((v-2.5)^2) / 4 / (5/3 + 1e-6) = (5 / 4) / (5/3 + 1e-6).
    let want = 1.25 / (5.0 / 3.0 + 1e-6);
    let got = loss(true);
    assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
    // Without norm-pix: mean of 1, 4, 9, 16 = 7.5; the kept patch does not count.
    let raw = loss(false);
    assert!((raw - 7.5).abs() < 1e-5, "{raw}");
    // A constant patch normalises to zeros (variance floor), not NaN.
    let normed = norm_pix_target(target)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    assert!(normed[4..].iter().all(|v| v.abs() < 1e-6), "{normed:?}");
}

#[test]
fn parameter_count_of_the_built_model_matches_the_analytic_count() {
    let dev = flex();
    for preset in [Preset::Tiny, Preset::VitB, Preset::Sapiens03b] {
        let cfg = preset.config().model;
        let model = MaskedAutoencoder::new(&cfg, &dev);
        assert_eq!(
            model.num_params(),
            analytic_params(&cfg).learnable,
            "{}",
            preset.name()
        );
    }
}

#[test]
fn forward_gives_patch_predictions_and_a_finite_loss() {
    let dev = flex();
    let cfg = micro_model();
    let model = MaskedAutoencoder::new(&cfg, &dev);
    let imgs = Tensor::<4>::random([3, 3, 32, 32], Distribution::Normal(0.0, 1.0), &dev);
    let plan = MaskPlan::random(3, cfg.num_patches(), cfg.num_visible(), 0);
    let out = model.forward(imgs, &plan);
    assert_eq!(out.pred.dims(), [3, 16, 8 * 8 * 3]);
    let loss = out.loss.into_scalar::<f32>();
    // Targets are normalised per patch and predictions start near zero: loss ≈ 1.
    assert!(loss.is_finite() && (0.5..2.0).contains(&loss), "{loss}");
}

#[test]
fn the_encoder_only_sees_visible_patches() {
    // Changing a removed patch must not change the encoder's output; changing a kept one must.
    let dev = flex();
    let cfg = micro_model();
    let model = MaskedAutoencoder::new(&cfg, &dev);
    let plan = MaskPlan::random(1, cfg.num_patches(), cfg.num_visible(), 5);
    let imgs = Tensor::<4>::random([1, 3, 32, 32], Distribution::Normal(0.0, 1.0), &dev);
    let encode = |imgs: Tensor<4>| {
        let keep = plan.keep_rows();
        let pos: Vec<i64> = keep.iter().map(|r| r % cfg.num_patches() as i64).collect();
        let idx = |v: Vec<i64>| {
            let n = v.len();
            Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(v, [n]), &dev)
        };
        model.encode(imgs, idx(keep), idx(pos), cfg.num_visible())
    };
    let base = encode(imgs.clone()).into_data();
    let removed = (0..16).find(|&p| plan.mask[p] == 1.0).unwrap();
    let kept = (0..16).find(|&p| plan.mask[p] == 0.0).unwrap();
    let poke = |patch: usize| {
        let (gy, gx) = (patch / 4 * 8, patch % 4 * 8);
        imgs.clone().slice_assign(
            [0..1, 0..3, gy..gy + 8, gx..gx + 8],
            Tensor::<4>::full([1, 3, 8, 8], 5.0, &dev),
        )
    };
    encode(poke(removed))
        .into_data()
        .assert_approx_eq::<f32>(&base, Tolerance::default());
    assert_ne!(encode(poke(kept)).into_data(), base);
}
