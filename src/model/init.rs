//! MAE's initialisation: xavier-uniform linear weights, zero biases, LayerNorm 1/0, tokens
//! N(0, 0.02). Parameters are created lazily, so a preset's size can be counted without
//! allocating its weights.

use burn::module::{Initializer, Module, ModuleVisitor, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Device, Tensor};

/// `d_in → d_out` linear layer, weight `[d_in, d_out]` xavier-uniform, bias zeros.
pub fn linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    let weight = Initializer::XavierUniform { gain: 1.0 }.init_with(
        [d_in, d_out],
        Some(d_in),
        Some(d_out),
        device,
    );
    Linear {
        weight,
        bias: Some(Initializer::Zeros.init([d_out], device)),
    }
}

/// LayerNorm over `dim` with MAE's epsilon; burn initialises gamma 1, beta 0.
pub fn layer_norm(dim: usize, eps: f64, device: &Device) -> LayerNorm {
    LayerNormConfig::new(dim).with_epsilon(eps).init(device)
}

/// A learned `[1, 1, dim]` token drawn from N(0, 0.02) (cls and mask tokens).
pub fn token(dim: usize, device: &Device) -> Param<Tensor<3>> {
    Initializer::Normal {
        mean: 0.0,
        std: 0.02,
    }
    .init([1, 1, dim], device)
}

/// Initialises every lazy parameter of `module` now, in module order.
///
/// Lazy parameters draw from the device's random generator when first used, so their values
/// depend on what touches them first. A training run's first forward pass meets them in module
/// order; an export or a broadcast before it would not. Materialising them here fixes the
/// order for every caller.
pub fn materialize<M: Module>(module: &M) {
    struct Touch;
    impl ModuleVisitor for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}

/// Burn's random generator is one per backend, shared by every thread: two models drawn at once
/// (tests in parallel, an evaluation beside a run) would interleave their draws. Seeding and
/// drawing happen under this lock.
static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `make()` run right after seeding `device`'s generator with `seed`, its parameters
/// materialised, with no other seeded draw in between: the same values whatever else runs.
pub fn seeded<M: Module>(device: &Device, seed: u64, make: impl FnOnce() -> M) -> M {
    let _only = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    device.seed(seed);
    let module = make();
    materialize(&module);
    module
}
