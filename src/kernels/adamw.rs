//! Fused AdamW. The reference is burn's `AdamW` (`burn::optim::AdamW`), a chain of ~12
//! element-wise tensor ops per parameter; [`FusedAdamW`] is the same optimizer (same state, so
//! checkpoints move between the paths) whose step is one dispatch of `shaders/adamw.wgsl`.

use burn::backend::Dispatch;
use burn::backend::wgpu::{CubeTensor, into_contiguous};
use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate, Optimizer};
use burn::tensor::{Device, Tensor};

use super::SaplingKernels;
use super::source::{BindingOf, Wgsl, cover, empty, float_type};
use crate::config::OptimConfig;

const WORKGROUP: u32 = 256;

/// The scalars of one update; the bias corrections are computed on the host in f32, as burn does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hyper {
    pub lr: f32,
    pub beta_1: f32,
    pub beta_2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Step number, 1 on the first update.
    pub time: usize,
}

impl Hyper {
    fn words(&self, lines: usize) -> Vec<u32> {
        let t = self.time as i32;
        vec![
            lines as u32,
            u32::from(self.time == 1),
            self.lr.to_bits(),
            self.beta_1.to_bits(),
            self.beta_2.to_bits(),
            self.eps.to_bits(),
            self.weight_decay.to_bits(),
            (1.0f32 - self.beta_1.powi(t)).to_bits(),
            (1.0f32 - self.beta_2.powi(t)).to_bits(),
        ]
    }
}

pub(crate) fn launch(
    param: CubeTensor,
    grad: CubeTensor,
    moment_1: CubeTensor,
    moment_2: CubeTensor,
    hyper: Hyper,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    // The update is written in place, which saves allocating and first-touching three new
    // tensors per parameter; a buffer someone else still holds is copied first.
    let owned = |t: CubeTensor| {
        let t = into_contiguous(t);
        if t.can_mut() && t.is_contiguous_buffer() {
            t
        } else {
            t.copy()
        }
    };
    let (param, grad) = (owned(param), into_contiguous(grad));
    let shape = param.meta.shape().clone();
    float_type(&param);
    let (moment_1, moment_2) = if hyper.time == 1 {
        // The shader does not read the moments on the first step.
        (
            empty(&param, shape.clone(), param.dtype),
            empty(&param, shape.clone(), param.dtype),
        )
    } else {
        (owned(moment_1), owned(moment_2))
    };
    let n = shape.num_elements();
    let (line, width) = if n.is_multiple_of(4) {
        ("vec4<f32>", 4)
    } else {
        ("f32", 1)
    };
    let lines = n / width;
    Wgsl::new(
        "adamw",
        &[include_str!("../../shaders/adamw.wgsl")],
        WORKGROUP,
    )
    .with("line", line)
    .launch(
        &param,
        cover(lines, WORKGROUP),
        vec![
            BindingOf::Tensor(&param),
            BindingOf::Tensor(&grad),
            BindingOf::Tensor(&moment_1),
            BindingOf::Tensor(&moment_2),
            BindingOf::Words(hyper.words(lines)),
        ],
    );
    (param, moment_1, moment_2)
}

/// One fused AdamW update; `state` as burn's `AdamW` keeps it.
pub fn adamw_step<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    state: Option<AdaptiveMomentumState<D>>,
    hyper: impl Fn(usize) -> Hyper,
) -> (Tensor<D>, AdaptiveMomentumState<D>) {
    let (time, m1, m2) = match state {
        Some(s) => (s.time + 1, s.moment_1, s.moment_2),
        // The launcher does not read the moments on the first step; any tensor will do.
        None => (1, grad.clone(), grad.clone()),
    };
    let (p, m1, m2) = <Dispatch as SaplingKernels>::adamw_step(
        param.into_dispatch(),
        grad.into_dispatch(),
        m1.into_dispatch(),
        m2.into_dispatch(),
        hyper(time),
    );
    (
        Tensor::from_dispatch(p),
        AdaptiveMomentumState::new(time, Tensor::from_dispatch(m1), Tensor::from_dispatch(m2)),
    )
}

/// AdamW whose update is `shaders/adamw.wgsl`; drop-in for burn's `AdamW` in a `ModuleOptimizer`.
#[derive(Debug, Clone, Copy)]
pub struct FusedAdamW {
    pub beta_1: f32,
    pub beta_2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl FusedAdamW {
    /// The optimizer of `config` with `weight_decay` (the group's).
    pub fn new(config: &OptimConfig, weight_decay: f64) -> Self {
        FusedAdamW {
            beta_1: config.beta1 as f32,
            beta_2: config.beta2 as f32,
            eps: config.eps as f32,
            weight_decay: weight_decay as f32,
        }
    }
}

impl Optimizer for FusedAdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let (tensor, momentum) =
            adamw_step(tensor, grad, state.map(|s| s.momentum), |time| Hyper {
                lr: lr as f32,
                beta_1: self.beta_1,
                beta_2: self.beta_2,
                eps: self.eps,
                weight_decay: self.weight_decay,
                time,
            });
        (tensor, Some(AdamWState::new(momentum)))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}
