//! Weight-decay groups and global clipping.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Distribution, Tensor};
use sapling::model::{MaskPlan, MaskedAutoencoder};
use sapling::ops::{Kernels, Ops};
use sapling::optim::adamw::GradFactor;
use sapling::optim::clip::{clip_factor, global_norm};
use sapling::optim::decay::{decays, named_params};

use crate::common::{flex, micro_model};

#[test]
fn weight_decay_applies_to_linear_weights_only() {
    let cfg = micro_model();
    let model = MaskedAutoencoder::new(&cfg, &flex());
    let params = named_params(&model);
    assert_eq!(
        params
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum::<usize>(),
        model.num_params()
    );
    let paths: Vec<&str> = params.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "blocks.0.attn.qkv.weight",
        "decoder_blocks.0.mlp.fc2.bias",
        "cls_token",
        "mask_token",
        "norm.gamma",
        "decoder_pred.weight",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:?}"
        );
    }
    let (decayed, plain): (Vec<_>, Vec<_>) = params.iter().partition(|p| decays(&p.path));
    // Exactly the 2-D linear matrices decay: patch embed, 4 per block, decoder embed, decoder pred.
    let linears = 1 + 4 * (cfg.depth + cfg.decoder_depth) + 2;
    assert_eq!(decayed.len(), linears);
    assert!(
        decayed
            .iter()
            .all(|p| p.shape.len() == 2 && p.path.ends_with(".weight"))
    );
    // Everything else: biases, LayerNorm gamma/beta, the two tokens.
    let norms = 2 * (cfg.depth + cfg.decoder_depth) + 2;
    assert_eq!(plain.len(), linears + 2 * norms + 2);
    for p in &plain {
        let ok = p.path.ends_with(".bias")
            || p.path.ends_with(".gamma")
            || p.path.ends_with(".beta")
            || p.path == "cls_token"
            || p.path == "mask_token";
        assert!(ok, "unexpected no-decay parameter {}", p.path);
    }
}

#[test]
fn clipping_scales_all_gradients_by_one_global_factor() {
    let dev = flex().autodiff();
    let cfg = micro_model();
    let model = MaskedAutoencoder::new(&cfg, &dev);
    let imgs = Tensor::<4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &dev);
    let plan = MaskPlan::random(2, cfg.num_patches(), cfg.num_visible(), 1);
    let loss = model.forward(imgs, &plan).loss;
    let grads = GradientsParams::from_grads(loss.backward(), &model);

    // The norm over everything, computed on the host from each gradient.
    let params = named_params(&model);
    let host: Vec<Vec<f32>> = params.iter().map(|p| host_grad(&grads, p)).collect();
    let want = host
        .iter()
        .flatten()
        .map(|v| (*v as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let ops = Ops::new(Kernels::Reference);
    let norm = global_norm(&model, &grads, ops).unwrap();
    let norm = norm.into_scalar::<f32>();
    let got = norm as f64;
    assert!((got - want).abs() / want < 1e-4, "{got} vs {want}");

    // Clip to half the norm: every gradient shrinks by the same factor 0.5, applied as the
    // optimizer applies it to each gradient before its update.
    let factor = GradFactor::default();
    factor.set(clip_factor(norm, want / 2.0, 1.0));
    let mut clipped = grads;
    model.visit(&mut Scale {
        grads: &mut clipped,
        factor: &factor,
    });
    let after = global_norm(&model, &clipped, ops)
        .unwrap()
        .into_scalar::<f32>() as f64;
    assert!((after - want / 2.0).abs() / want < 1e-4, "{after}");
    for (p, before) in params.iter().zip(&host) {
        let now = host_grad(&clipped, p);
        for (a, b) in now.iter().zip(before) {
            assert!(
                (a - b * 0.5).abs() <= 1e-6 + 1e-4 * b.abs(),
                "{}: {a} vs {b}/2",
                p.path
            );
        }
    }
    // A limit above the norm leaves gradients as they are.
    assert_eq!(clip_factor(norm, want * 10.0, 1.0), 1.0);
    let same = global_norm(&model, &clipped, ops)
        .unwrap()
        .into_scalar::<f32>() as f64;
    assert!((same - want / 2.0).abs() / want < 1e-4);
}

fn host_grad(grads: &GradientsParams, p: &sapling::optim::decay::NamedParam) -> Vec<f32> {
    let data = match p.shape.len() {
        1 => grads.get::<1>(p.id).map(|g| g.into_data()),
        2 => grads.get::<2>(p.id).map(|g| g.into_data()),
        3 => grads.get::<3>(p.id).map(|g| g.into_data()),
        n => panic!("unexpected rank {n}"),
    };
    data.unwrap_or_else(|| panic!("no gradient for {}", p.path))
        .try_into_vec::<f32>()
        .unwrap()
}

/// Applies `factor` to every gradient of a module, as `SaplingAdamW` does one by one.
struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: &'a GradFactor,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register::<D>(param.id, self.factor.apply(g));
        }
    }
}
