//! AdamW with MAE's settings and two parameter groups: decayed linear weights, and the rest.

use burn::module::{Module, ParamGroup};
use burn::optim::{
    AdamW, AdamWState, LearningRate, ModuleOptimizer, Optimizer, RecordState, StateSink,
    StateSource,
};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use burn::tensor::{Device, Tensor};

use super::decay::no_decay_ids;
use super::transfer::MomentsTransfer;
use crate::config::OptimConfig;
use crate::kernels::host::adamw::Hyper;
use crate::ops::Kernels;

/// AdamW over `module`'s parameters; the no-decay group is fixed by [`super::decay::decays`].
/// With the `cpu` kernels each update is sapling's fused CPU kernel, otherwise burn's `AdamW`;
/// both keep the same state, so a checkpoint resumes on either. Every gradient is multiplied by
/// `factor` (its value at the time of the step) before its update; `transfer` hands moments
/// in and out (see [`super::transfer`]).
pub fn adamw<M: Module>(
    config: &OptimConfig,
    module: &M,
    kernels: Kernels,
    factor: &GradFactor,
    transfer: &MomentsTransfer,
) -> ModuleOptimizer {
    let fused = kernels == Kernels::Cpu;
    let (decayed, no_decay) = (hyper(config, config.weight_decay), hyper(config, 0.0));
    let no_decay_group = ParamGroup::from_ids(no_decay_ids(module));
    let group = |h| SaplingAdamW {
        h,
        fused,
        factor: factor.clone(),
        transfer: transfer.clone(),
    };
    ModuleOptimizer::from(group(decayed)).with_group(no_decay_group, group(no_decay), None)
}

/// The factor every gradient is multiplied by just before its update (the global-norm clip and
/// the loss scale's inverse), set by the trainer once per step. Multiplying there rather than
/// in a pass over all gradients first puts the multiply in the same fused element-wise kernel
/// as the update on a GPU: one launch per tensor fewer. Exactly 1 multiplies nothing.
#[derive(Debug, Clone)]
pub struct GradFactor(Arc<AtomicU32>);

impl Default for GradFactor {
    fn default() -> Self {
        GradFactor(Arc::new(AtomicU32::new(1.0f32.to_bits())))
    }
}

impl GradFactor {
    pub fn set(&self, factor: f32) {
        self.0.store(factor.to_bits(), Ordering::Relaxed);
    }

    pub fn get(&self) -> f32 {
        f32::from_bits(self.0.load(Ordering::Relaxed))
    }

    /// `grad` multiplied by the factor (itself when the factor is 1).
    pub fn apply<const D: usize>(&self, grad: Tensor<D>) -> Tensor<D> {
        match self.get() {
            1.0 => grad,
            factor => grad.mul_scalar(factor),
        }
    }
}

/// The settings of one parameter group (its `lr` and `time` are set per step).
pub fn hyper(config: &OptimConfig, weight_decay: f64) -> Hyper {
    Hyper {
        lr: 0.0,
        beta1: config.beta1 as f32,
        beta2: config.beta2 as f32,
        // burn's default epsilon is 1e-5; MAE and Sapiens use 1e-8.
        eps: config.eps as f32,
        weight_decay: weight_decay as f32,
        time: 0,
        grad_scale: 1.0,
    }
}

/// burn's AdamW with the settings of `h` (its `lr` and `time` are set per step): the reference
/// the fused CPU update is tested against, and what every other device runs.
pub fn burn_adamw(h: &Hyper) -> AdamW {
    burn::optim::AdamWConfig::new()
        .with_beta_1(h.beta1)
        .with_beta_2(h.beta2)
        .with_epsilon(h.eps)
        .with_weight_decay(h.weight_decay)
        .build()
}

/// burn's AdamW, computed by `kernels::cpu::adamw` when `fused` (one pass per tensor instead of a
/// dozen) and the tensor is on Flex.
#[derive(Clone)]
struct SaplingAdamW {
    h: Hyper,
    fused: bool,
    factor: GradFactor,
    transfer: MomentsTransfer,
}

impl Optimizer for SaplingAdamW {
    type State<const D: usize> = HostLoaded<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let state = state.map(|s| s.0);
        let state = match self.transfer.intercept(&tensor, state) {
            ControlFlow::Break(handed) => return (tensor, handed.map(HostLoaded)),
            ControlFlow::Continue(state) => state,
        };
        if !self.fused || !crate::kernels::is_flex(&tensor.device()) {
            return self.burn_step(lr, tensor, grad, state);
        }
        self.fused_step(lr, tensor, grad, state)
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        HostLoaded(<AdamW as Optimizer>::to_device(state.0, device))
    }
}

impl SaplingAdamW {
    /// burn's own update, the gradient multiplied by the factor first.
    fn burn_step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamWState<D>>,
    ) -> (Tensor<D>, Option<HostLoaded<D>>) {
        let grad = self.factor.apply(grad);
        let (tensor, state) = burn_adamw(&self.h).step(lr, tensor, grad, state);
        (tensor, state.map(HostLoaded))
    }

    /// The update as [`cpu::adamw`]'s one pass per tensor, for a tensor on Flex.
    #[cfg(not(target_family = "wasm"))]
    fn fused_step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamWState<D>>,
    ) -> (Tensor<D>, Option<HostLoaded<D>>) {
        let (time, m, v) = match state {
            Some(s) => (
                s.momentum.time + 1,
                s.momentum.moment_1,
                s.momentum.moment_2,
            ),
            // Zero moments: the first update then equals burn's, which starts from (1-β)·g.
            None => (1, grad.zeros_like(), grad.zeros_like()),
        };
        // The fused update multiplies by the factor itself, in the same pass.
        let h = Hyper {
            lr: lr as f32,
            time: time as i32,
            grad_scale: self.factor.get(),
            ..self.h
        };
        let [param, m, v] = crate::kernels::cpu::adamw(tensor, grad, m, v, h);
        let state = AdamWState::new(burn::optim::AdaptiveMomentumState::new(time, m, v));
        (param, Some(HostLoaded(state)))
    }

    /// A browser has no Flex tensor to update (`is_flex` is false there).
    #[cfg(target_family = "wasm")]
    fn fused_step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamWState<D>>,
    ) -> (Tensor<D>, Option<HostLoaded<D>>) {
        self.burn_step(lr, tensor, grad, state)
    }
}

/// burn's AdamW state, recorded under the same names, but loaded from a checkpoint onto Flex.
///
/// burn 0.22 loads optimizer state onto `Device::default()`, which is the wgpu runtime whenever
/// it is compiled in: a CPU run on a machine without a WebGPU adapter could not resume, and any
/// CPU run would start a GPU runtime. Host memory always exists; burn moves each state to its
/// parameter's device on the next step, so a wgpu run pays one upload per tensor at resume.
#[derive(Clone)]
pub struct HostLoaded<const D: usize>(AdamWState<D>);

impl<const D: usize> RecordState for HostLoaded<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        self.0.state_flatten(prefix, out);
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, _device: &Device) -> Option<Self> {
        // A page never resumes from a checkpoint; its one device is the one to load onto.
        #[cfg(target_family = "wasm")]
        let host = _device.clone();
        #[cfg(not(target_family = "wasm"))]
        let host = Device::flex();
        AdamWState::state_unflatten(prefix, src, &host).map(HostLoaded)
    }
}
