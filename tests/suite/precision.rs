//! Mixed precision: the f16 attention kernels and the f16 reference arm against f32, an f16
//! step against an f32 step from the same weights, dynamic loss scaling skipping an overflowed
//! step, the refusals, the f16 export and the loss scale in checkpoints.

use burn::module::Module;
use burn::tensor::{DType, Device, Distribution, Tensor};
use sapling::checkpoint::{self, TrainState};
use sapling::config::{DataConfig, DeviceChoice, KernelChoice, PrecisionChoice};
use sapling::data::{ImageSource, Loader};
use sapling::device::{resolve_precision, select_for};
use sapling::model::MaskedAutoencoder;
use sapling::ops::{Kernels, Ops, Precision};
use sapling::optim::LossScale;
use sapling::planner::Levers;
use sapling::train::Trainer;

use crate::common::{assert_close, copy_model, flex, micro_config, temp_dir, wgpu_f16_or_skip};

/// Attention of `qkv` on `ops`, its output and gradient w.r.t. `qkv`, both in f32.
fn attention(ops: Ops, qkv: &Tensor<3>, weights: &Tensor<3>, heads: usize) -> [Tensor<3>; 2] {
    let qkv = qkv.clone().require_grad();
    let out = ops.widen(ops.attention(ops.narrow(qkv.clone()), heads));
    let grads = (out.clone() * weights.clone()).sum().backward();
    [out.inner(), qkv.grad(&grads).expect("gradient")]
}

#[test]
fn f16_attention_matches_f32_on_both_arms() {
    let Some(gpu) = wgpu_f16_or_skip("f16_attention_matches_f32_on_both_arms") else {
        return;
    };
    let device = gpu.device.clone().autodiff();
    device.seed(31);
    for (b, h, n, hd) in [(1, 2, 37, 64), (2, 1, 17, 32)] {
        let what = format!("B{b} H{h} N{n} hd{hd}");
        // Inputs that f16 holds exactly, so what differs is the arithmetic alone.
        let normal: Tensor<3> =
            Tensor::random([b, n, 3 * h * hd], Distribution::Normal(0., 1.), &device);
        let qkv = normal.cast(DType::F16).cast(DType::F32);
        let weights: Tensor<3> =
            Tensor::random([b, n, h * hd], Distribution::Normal(0., 1.), &device);
        // The f32 reference on Flex: lavapipe, the adapter with f16 in CI, then compiles only
        // the f16 kernels (its shader compiler is the slow part of a test there).
        let on_flex = |t: &Tensor<3>| Tensor::<3>::from_data(t.to_data(), &flex().autodiff());
        let [want, want_grad] = attention(Ops::REFERENCE, &on_flex(&qkv), &on_flex(&weights), h)
            .map(|t| Tensor::<3>::from_data(t.to_data(), &device).inner());
        for kernels in [Kernels::Reference, Kernels::Wgsl] {
            let ops = Ops::new(kernels).with_precision(Precision::F16);
            let [got, got_grad] = attention(ops, &qkv, &weights, h);
            // f16 keeps 11 significant bits: outputs rounded once (WGSL) or after an f16
            // matmul (reference), gradients through two f16 products.
            assert_close(&format!("{what} {kernels} f16 out"), &got, &want, 4e-3);
            assert_close(
                &format!("{what} {kernels} f16 grad"),
                &got_grad,
                &want_grad,
                1.5e-2,
            );
        }
    }
}

fn embedded_loader(size: usize) -> Loader {
    let data = DataConfig {
        workers: 1,
        ..DataConfig::default()
    };
    Loader::new(ImageSource::Embedded, &data, size, 4, 0, 0)
}

/// Trainers from the same weights: in f32 on Flex (burn's ops), and in f16 on the WebGPU device
/// with `kernels`. The f32 twin is on Flex so that lavapipe, the adapter with f16 in CI,
/// compiles only the f16 kernels (its shader compiler is the slow part of a test there).
fn twins(name: &str, kernels: KernelChoice, device: &Device) -> (Trainer, Trainer) {
    let mut cfg = micro_config(name);
    let dev = device.clone().autodiff();
    dev.seed(37);
    let model = MaskedAutoencoder::new(&cfg.model, &dev);
    cfg.train.kernels = KernelChoice::Reference;
    let single = Trainer::from_model(
        &cfg,
        copy_model(&model, &flex().autodiff()),
        &flex().autodiff(),
    )
    .unwrap();
    cfg.train.device = DeviceChoice::Wgpu;
    cfg.train.kernels = kernels;
    cfg.train.precision = PrecisionChoice::F16;
    let half = Trainer::from_model(&cfg, model, &dev).unwrap();
    (single, half)
}

#[test]
fn f16_steps_track_f32_steps() {
    let Some(gpu) = wgpu_f16_or_skip("f16_steps_track_f32_steps") else {
        return;
    };
    for kernels in [KernelChoice::Reference, KernelChoice::Wgsl] {
        let (mut single, mut half) = twins("f16-track", kernels, &gpu.device);
        assert_eq!(half.levers().precision, Precision::F16);
        let mut loader = embedded_loader(single.model().config.img_size);
        for step in 0..4 {
            let batch = loader.next_batch().unwrap();
            let x = single.step(step, 1e-3, vec![batch.clone()]).unwrap();
            let y = half.step(step, 1e-3, vec![batch]).unwrap();
            eprintln!("{kernels:?} step {step}: f32 {x:?}\n  f16 {y:?}");
            assert_eq!(x.loss_scale, None);
            let scale = y.loss_scale.expect("an f16 step reports its loss scale");
            assert_eq!(
                (scale.scale, scale.skipped_steps, y.skipped),
                (65536.0, 0, false)
            );
            assert!((x.loss - y.loss).abs() <= 5e-3 * x.loss, "step {step} loss");
            assert!(
                (x.grad_norm - y.grad_norm).abs() <= 3e-2 * x.grad_norm,
                "step {step} norm"
            );
        }
    }
}

/// `model`'s parameters, as the bytes of its record.
fn weights(model: &MaskedAutoencoder) -> Vec<u8> {
    model.clone().into_record().into_bytes().unwrap().to_vec()
}

#[test]
fn an_f16_overflowed_step_is_skipped_and_the_scale_halved() {
    let Some(gpu) = wgpu_f16_or_skip("an_f16_overflowed_step_is_skipped_and_the_scale_halved")
    else {
        return;
    };
    let (_, mut half) = twins("f16-overflow", KernelChoice::Reference, &gpu.device);
    // 2⁴⁰ times the loss's gradient is far past f16's 65504 where the prediction's gradient
    // enters the f16 graph.
    half.set_loss_scale(Some(LossScale {
        scale: 2f64.powi(40),
        ..LossScale::default()
    }));
    let before = weights(half.model());
    let mut loader = embedded_loader(half.model().config.img_size);
    let first = half
        .step(0, 1e-3, vec![loader.next_batch().unwrap()])
        .unwrap();
    assert!(first.skipped && !first.grad_norm.is_finite(), "{first:?}");
    let scale = first.loss_scale.unwrap();
    assert_eq!((scale.scale, scale.skipped_steps), (2f64.powi(39), 1));
    assert_eq!(
        weights(half.model()),
        before,
        "a skipped step must not touch the weights"
    );
    // Halving goes on until the gradients fit, then steps apply again.
    let mut applied = None;
    for step in 1..40 {
        let stats = half
            .step(step, 1e-3, vec![loader.next_batch().unwrap()])
            .unwrap();
        if !stats.skipped {
            applied = Some(stats);
            break;
        }
    }
    let applied = applied.expect("the scale came down to where the gradients fit in f16");
    assert!(applied.grad_norm.is_finite() && applied.loss.is_finite());
    assert_ne!(weights(half.model()), before);
}

#[test]
fn f16_on_the_cpu_is_refused_naming_the_field() {
    let mut cfg = micro_config("f16-cpu");
    cfg.train.precision = PrecisionChoice::F16;
    let err = select_for(&cfg.train).unwrap_err().to_string();
    assert!(
        err.contains("train.precision") && err.contains("f32"),
        "{err}"
    );
    let levers = Levers {
        precision: Precision::F16,
        ..Levers::of(&cfg, true)
    };
    let err = Trainer::with_levers(&cfg, &flex(), levers)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("train.precision"), "{err}");
    // `auto` is f32 on the CPU.
    cfg.train.precision = PrecisionChoice::Auto;
    assert_eq!(resolve_precision(cfg.train.precision, true), Precision::F32);
    assert_eq!(Levers::of(&cfg, true).precision, Precision::F32);
    select_for(&cfg.train).unwrap();
}

#[test]
fn an_f16_export_is_half_the_size_and_rounds_to_nearest() {
    let cfg = micro_config("f16-export");
    let dev = flex();
    dev.seed(41);
    let model = MaskedAutoencoder::new(&cfg.model, &dev);
    sapling::model::init::materialize(&model);
    let dir = temp_dir("f16-export");
    let (single, half) = (dir.join("f32.safetensors"), dir.join("f16.safetensors"));
    let n = sapling::export::write_encoder(&model, "tiny", &single).unwrap();
    assert_eq!(
        sapling::export::write_encoder_as(&model, "tiny", &half, Precision::F16).unwrap(),
        n
    );
    let (a, b) = (
        std::fs::read(&single).unwrap(),
        std::fs::read(&half).unwrap(),
    );
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&a).unwrap(),
        safetensors::SafeTensors::deserialize(&b).unwrap(),
    );
    let (mut bytes32, mut bytes16) = (0, 0);
    for (name, wide) in a.tensors() {
        let narrow = b.tensor(&name).unwrap();
        assert_eq!(
            (narrow.dtype(), narrow.shape()),
            (safetensors::Dtype::F16, wide.shape())
        );
        let want = wide
            .data()
            .chunks(4)
            .map(|c| burn::tensor::f16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
        let got = narrow
            .data()
            .chunks(2)
            .map(|c| burn::tensor::f16::from_le_bytes([c[0], c[1]]));
        assert!(got.eq(want), "{name}: not f32 rounded to nearest f16");
        bytes32 += wide.data().len();
        bytes16 += narrow.data().len();
    }
    assert_eq!(2 * bytes16, bytes32);
}

#[test]
fn the_loss_scale_is_saved_and_restored_with_the_checkpoint() {
    let cfg = micro_config("f16-state");
    let trainer = Trainer::new(&cfg, &flex()).unwrap();
    let scale = LossScale {
        scale: 1024.0,
        clean_steps: 17,
        skipped_steps: 3,
    };
    let state = TrainState {
        run: String::new(),
        step: 1,
        samples: 4,
        plan: None,
        config: cfg.clone(),
        loss_scale: Some(scale),
    };
    let solo = sapling::dist::Solo;
    let path = checkpoint::save(
        &cfg.train.out,
        trainer.model(),
        trainer.moments().unwrap(),
        &state,
        1,
        &solo,
    )
    .unwrap()
    .expect("rank 0 writes the checkpoint");
    assert_eq!(
        checkpoint::load(&path).unwrap().state.loss_scale,
        Some(scale)
    );
    // An f32 trainer has no scale to restore into: resuming an f16 run in f32 drops it.
    let mut f32_trainer = Trainer::new(&cfg, &flex()).unwrap();
    f32_trainer.set_loss_scale(Some(scale));
    assert_eq!(f32_trainer.loss_scale(), None);
}

#[test]
fn a_precision_sapling_does_not_have_is_refused_by_name() {
    use sapling::config::{Config, Preset};
    let err = Config::from_toml_str("[train]\nprecision = \"bf16\"\n", Preset::Tiny)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train.precision") && err.contains("f16"),
        "{err}"
    );
    let ok = Config::from_toml_str("[train]\nprecision = \"auto\"\n", Preset::Tiny).unwrap();
    assert_eq!(ok.train.precision, PrecisionChoice::Auto);
}
