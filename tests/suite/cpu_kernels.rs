//! sapling's CPU (Flex) kernels against their references, the ops layer's reference arms (burn's
//! own ops): values and gradients on odd shapes, strided inputs, both sides of the threading
//! thresholds, and whole training steps.

use burn::module::Param;
use burn::nn::{LayerNormConfig, Linear};
use burn::optim::Optimizer;
use burn::tensor::{Device, Distribution, Tensor};
use sapling::config::{DeviceChoice, KernelChoice};
use sapling::kernels::cpu::{self, adamw::Hyper};
use sapling::model::MaskedAutoencoder;
use sapling::ops::{Kernels, Ops};
use sapling::optim::adamw::burn_adamw;
use sapling::train::Trainer;

use crate::both_arms;
use crate::common::{assert_close, assert_same_bits, copy_model, lockstep, micro_config};

fn random<const D: usize>(shape: [usize; D], std: f64, device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, std), device)
}

/// The CPU kernel's arm (`true`) or the reference arm of the ops layer.
fn ops(kernel: bool) -> Ops {
    Ops::arm(Kernels::Cpu, kernel)
}

#[test]
fn gelu_matches_burn_values_and_gradients() {
    let device = Device::flex().autodiff();
    device.seed(3);
    // Below and above the kernel's threading threshold (2¹⁴ elements); std 3 reaches the tails.
    for shape in [[3, 37, 50], [4, 65, 768]] {
        let x_data = random::<3>(shape, 3.0, &device).into_data();
        let upstream = random::<3>(shape, 1.0, &device);
        let run = |kernel: bool| {
            let x = Tensor::<3>::from_data(x_data.clone(), &device).require_grad();
            let y = ops(kernel).gelu(x.clone());
            let grads = (y.clone() * upstream.clone()).sum().backward();
            (y, x.grad(&grads).expect("gradient of x"))
        };
        let ((y, dx), (y_ref, dx_ref)) = (run(true), run(false));
        assert_close(&format!("gelu {shape:?}"), &y, &y_ref, 1e-6);
        assert_close(&format!("gelu' {shape:?}"), &dx, &dx_ref, 1e-6);
    }
}

#[test]
fn linear_matches_burn_values_and_gradients() {
    let device = Device::flex().autodiff();
    device.seed(4);
    // (batch, tokens, in, out): tiny and odd, then above the threading threshold.
    for (b, n, din, dout) in [(3, 17, 40, 24), (1, 5, 3, 7), (32, 65, 128, 384)] {
        let x_data = random::<3>([b, n, din], 1.0, &device).into_data();
        let w_data = random::<2>([din, dout], 0.1, &device).into_data();
        let b_data = random::<1>([dout], 0.1, &device).into_data();
        let upstream = random::<3>([b, n, dout], 1.0, &device);
        let run = |kernel: bool, strided: bool| {
            let x = Tensor::<3>::from_data(x_data.clone(), &device).require_grad();
            let w = Tensor::<2>::from_data(w_data.clone(), &device).require_grad();
            let bias = Tensor::<1>::from_data(b_data.clone(), &device).require_grad();
            // A strided view of the same values: [N, B, in] swapped back to [B, N, in].
            let input = if strided {
                x.clone().swap_dims(0, 1).mul_scalar(1.0).swap_dims(0, 1)
            } else {
                x.clone()
            };
            let layer = Linear {
                weight: Param::from_tensor(w.clone()),
                bias: Some(Param::from_tensor(bias.clone())),
            };
            let y = ops(kernel).linear(&layer, input);
            let grads = (y.clone() * upstream.clone()).sum().backward();
            let g = |t: &Tensor<2>| t.grad(&grads).expect("gradient");
            (
                y,
                x.grad(&grads).expect("dx"),
                g(&w),
                bias.grad(&grads).expect("db"),
            )
        };
        let (y_ref, dx_ref, dw_ref, db_ref) = run(false, false);
        for strided in [false, true] {
            let what = format!("linear B{b} N{n} {din}→{dout} strided={strided}");
            let (y, dx, dw, db) = run(true, strided);
            assert_close(&format!("{what} out"), &y, &y_ref, 1e-5);
            assert_close(&format!("{what} dx"), &dx, &dx_ref, 1e-5);
            assert_close(&format!("{what} dw"), &dw, &dw_ref, 1e-5);
            assert_close(&format!("{what} db"), &db, &db_ref, 1e-5);
        }
    }
}

#[test]
fn layer_norm_matches_burn_values_and_gradients() {
    let device = Device::flex().autodiff();
    device.seed(6);
    // Rows below and above the kernel's split size; an offset mean to test the centring.
    for (b, n, d) in [(2, 5, 7), (32, 65, 192)] {
        let x_data = (random::<3>([b, n, d], 2.0, &device) + 3.0).into_data();
        let g_data = (random::<1>([d], 0.2, &device) + 1.0).into_data();
        let b_data = random::<1>([d], 0.2, &device).into_data();
        let upstream = random::<3>([b, n, d], 1.0, &device);
        let run = |kernel: bool| {
            let x = Tensor::<3>::from_data(x_data.clone(), &device).require_grad();
            let gamma = Tensor::<1>::from_data(g_data.clone(), &device).require_grad();
            let beta = Tensor::<1>::from_data(b_data.clone(), &device).require_grad();
            let mut norm = LayerNormConfig::new(d).with_epsilon(1e-6).init(&device);
            norm.gamma = Param::from_tensor(gamma.clone());
            norm.beta = Some(Param::from_tensor(beta.clone()));
            let y = ops(kernel).layer_norm(&norm, x.clone(), 1e-6);
            let grads = (y.clone() * upstream.clone()).sum().backward();
            let g = |t: &Tensor<1>| t.grad(&grads).expect("gradient");
            (y, x.grad(&grads).expect("dx"), g(&gamma), g(&beta))
        };
        let (got, want) = (run(true), run(false));
        let what = format!("layer norm B{b} N{n} D{d}");
        assert_close(&format!("{what} out"), &got.0, &want.0, 1e-5);
        assert_close(&format!("{what} dx"), &got.1, &want.1, 1e-4);
        assert_close(&format!("{what} dgamma"), &got.2, &want.2, 1e-5);
        assert_close(&format!("{what} dbeta"), &got.3, &want.3, 1e-5);
    }
}

#[test]
fn attention_matches_burn_values_and_gradients() {
    let device = Device::flex().autodiff();
    device.seed(8);
    // (batch, tokens, heads, head dim): the presets' head dims 32/64/80/60 and odd token counts.
    for (b, n, h, hd) in [
        (2, 17, 3, 64),
        (1, 37, 2, 80),
        (3, 5, 4, 32),
        (1, 50, 1, 60),
    ] {
        let qkv_data = random::<3>([b, n, 3 * h * hd], 1.0, &device).into_data();
        let upstream = random::<3>([b, n, h * hd], 1.0, &device);
        let run = |kernel: bool| {
            let qkv = Tensor::<3>::from_data(qkv_data.clone(), &device).require_grad();
            let out = ops(kernel).attention(qkv.clone(), h);
            let grads = (out.clone() * upstream.clone()).sum().backward();
            (out, qkv.grad(&grads).expect("dqkv"))
        };
        let ((out, dqkv), (out_ref, dqkv_ref)) = (run(true), run(false));
        let what = format!("attention B{b} N{n} H{h} hd{hd}");
        assert_close(&format!("{what} out"), &out, &out_ref, 1e-5);
        assert_close(&format!("{what} dqkv"), &dqkv, &dqkv_ref, 1e-5);
    }
}

/// Beyond the shared patch shapes: a non-square image, and tiny's images past the CPU
/// kernels' threading threshold.
const MORE_PATCH_SHAPES: [both_arms::Shape; 2] = [(2, 3, 8, 12, 4), (8, 3, 64, 64, 8)];

#[test]
fn patch_loss_matches_burn_values_and_gradients() {
    let shapes = [&both_arms::LOSS_SHAPES[..], &MORE_PATCH_SHAPES].concat();
    both_arms::loss_matches_reference(&Device::flex(), Kernels::Cpu, &shapes);
}

#[test]
fn patch_gather_matches_patchify_then_select() {
    let shapes = [&both_arms::GATHER_SHAPES[..], &MORE_PATCH_SHAPES].concat();
    both_arms::gather_matches_patchify_then_select(&Device::flex(), Kernels::Cpu, &shapes);
}

#[test]
fn squared_sum_matches_the_host() {
    both_arms::squared_sum_matches_host(&Device::flex(), Kernels::Cpu);
}

#[test]
fn adamw_matches_burn_over_steps() {
    let device = Device::flex();
    device.seed(9);
    // Above the kernel's split size, with decay; shared parameters are copied, not written.
    // Even steps scale the gradient (a clip) inside the update; burn's gets it pre-scaled.
    let h = Hyper {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.05,
        time: 0,
        grad_scale: 1.0,
    };
    let reference = burn_adamw(&h);
    let start = random::<2>([300, 70], 1.0, &device);
    let (mut p, mut m, mut v) = (start.clone(), start.zeros_like(), start.zeros_like());
    let (mut p_ref, mut state) = (start.clone(), None);
    for time in 1..=4 {
        let grad = random::<2>([300, 70], 0.5, &device);
        let shared = p.clone(); // keeps a second reference alive: no in-place write allowed
        let grad_scale = if time % 2 == 0 { 0.37 } else { 1.0 };
        let step = Hyper {
            time,
            grad_scale,
            ..h
        };
        [p, m, v] = cpu::adamw(p, grad.clone(), m, v, step);
        assert!(
            !shared.equal(p.clone()).all().into_scalar::<bool>(),
            "step {time}: the update wrote into a tensor another handle still reads"
        );
        let grad = grad.mul_scalar(grad_scale);
        (p_ref, state) = reference.step(h.lr as f64, p_ref, grad, state);
    }
    // Bit for bit: burn's arithmetic in burn's order, and the folded clip factor is the one
    // f32 product that burn's `mul_scalar` makes.
    let state = state.expect("AdamW state").momentum;
    assert_same_bits("adamw param", &p, &p_ref);
    assert_same_bits("adamw m", &m, &state.moment_1);
    assert_same_bits("adamw v", &v, &state.moment_2);
}

#[test]
fn cpu_and_reference_paths_train_alike() {
    // The whole step both ways from the same weights, batches and masks: every linear layer,
    // layer norm, attention and GELU swapped at once.
    let mut cfg = micro_config("cpu-kernel-paths");
    cfg.train.device = DeviceChoice::Cpu;
    let dev = Device::flex().autodiff();
    dev.seed(17);
    let model = MaskedAutoencoder::new(&cfg.model, &dev);
    let copy = copy_model(&model, &dev);
    cfg.train.kernels = KernelChoice::Reference;
    let mut reference = Trainer::from_model(&cfg, model, &dev).unwrap();
    cfg.train.kernels = KernelChoice::Auto;
    let mut cpu = Trainer::from_model(&cfg, copy, &dev).unwrap();
    assert_eq!(reference.model().ops().kernels, Kernels::Reference);
    assert_eq!(
        cpu.model().ops().kernels,
        Kernels::Cpu,
        "auto is cpu on Flex"
    );
    lockstep(
        ("reference", &mut reference),
        ("cpu", &mut cpu),
        4,
        1e-5,
        1e-4,
    );
}

#[test]
fn cpu_kernels_on_wgpu_are_refused_naming_the_field() {
    let mut cfg = micro_config("cpu-kernels-on-wgpu");
    cfg.train.kernels = KernelChoice::Cpu;
    cfg.train.device = DeviceChoice::Wgpu;
    match sapling::device::select_for(&cfg.train) {
        // No adapter at all: the device error comes first, which is also a clear refusal.
        Err(e) if !e.to_string().contains("train.kernels") => {
            eprintln!("no wgpu adapter here ({e}); the kernel check is not reached")
        }
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("--device cpu"), "{e}");
        }
        Ok(_) => panic!("cpu kernels on a wgpu device were accepted"),
    }
}
