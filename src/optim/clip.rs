//! Global gradient-norm clipping, as PyTorch's `clip_grad_norm_` (burn's own `Norm` clipping
//! works per tensor, which changes the direction of the update; this does not).
//!
//! The norm is computed on the device and read back with the loss (the step's one readback),
//! so the clipping factor is a number on the host: gradients are scaled by a scalar that
//! burn's fusion folds into the optimizer's element-wise kernel, and not touched at all when
//! the factor is 1. Dispatches, not FLOPs, are what per-tensor work costs a GPU here.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use crate::ops::Ops;

/// The L2 norm of all gradients of `module` taken together, `[1]`, left on the device. The
/// squares are summed by `ops` (the WGSL path sums seven tensors per dispatch).
pub fn global_norm<M: Module>(module: &M, grads: &GradientsParams, ops: Ops) -> Option<Tensor<1>> {
    let mut visitor = Flat {
        grads,
        flat: Vec::new(),
    };
    module.visit(&mut visitor);
    (!visitor.flat.is_empty()).then(|| ops.squared_sum(visitor.flat).sqrt())
}

/// `min(1, max_norm / (norm + 1e-6))` in f32 (as the device computed it before), or 1 when
/// `max_norm` is 0 (no clipping); divided by `loss_scale` (a power of two: exact) when the
/// gradients carry one. `norm` is the norm of the scaled gradients, as read back.
pub fn clip_factor(norm: f32, max_norm: f64, loss_scale: f64) -> f32 {
    let norm = norm / loss_scale as f32;
    let clip = if max_norm > 0.0 {
        ((norm + 1e-6).recip() * max_norm as f32).min(1.0)
    } else {
        1.0
    };
    clip / loss_scale as f32
}

struct Flat<'a> {
    grads: &'a GradientsParams,
    flat: Vec<Tensor<1>>,
}

impl ModuleVisitor for Flat<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let n = g.shape().num_elements();
            self.flat.push(g.reshape([n]));
        }
    }
}
