//! Global gradient-norm clipping, as PyTorch's `clip_grad_norm_` (burn's own `Norm` clipping
//! works per tensor, which changes the direction of the update; this does not).

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

/// The L2 norm of all gradients of `module` taken together, `[1]`, left on the device.
pub fn global_norm<M: Module>(module: &M, grads: &GradientsParams) -> Option<Tensor<1>> {
    let mut visitor = SquaredSum { grads, acc: None };
    module.visit(&mut visitor);
    visitor.acc.map(|sq| sq.sqrt())
}

/// Scales every gradient by `min(1, max_norm / (norm + 1e-6))`; the norm stays on the device,
/// so clipping costs no readback.
pub fn clip_to<M: Module>(module: &M, grads: &mut GradientsParams, norm: Tensor<1>, max_norm: f64) {
    scale_by(module, grads, clip_factor(norm, max_norm));
}

/// Gradients of a loss multiplied by `loss_scale`, whose norm is `norm`, divided by it and
/// clipped to `max_norm` (0: not clipped) in one pass.
pub fn unscale_and_clip<M: Module>(
    module: &M,
    grads: &mut GradientsParams,
    norm: Tensor<1>,
    max_norm: f64,
    loss_scale: f64,
) {
    let norm = norm.div_scalar(loss_scale);
    let factor = if max_norm > 0.0 {
        clip_factor(norm, max_norm)
    } else {
        norm.ones_like()
    };
    scale_by(module, grads, factor.div_scalar(loss_scale));
}

/// `min(1, max_norm / (norm + 1e-6))`, on the device.
fn clip_factor(norm: Tensor<1>, max_norm: f64) -> Tensor<1> {
    norm.add_scalar(1e-6)
        .recip()
        .mul_scalar(max_norm)
        .clamp_max(1.0)
}

fn scale_by<M: Module>(module: &M, grads: &mut GradientsParams, scale: Tensor<1>) {
    let mut visitor = Scale { grads, scale };
    module.visit(&mut visitor);
}

struct SquaredSum<'a> {
    grads: &'a GradientsParams,
    acc: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredSum<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let sq = g.square().sum();
            self.acc = Some(match self.acc.take() {
                Some(acc) => acc + sq,
                None => sq,
            });
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    scale: Tensor<1>,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            let scale = self.scale.clone().reshape([1; D]);
            self.grads.register::<D>(param.id, g * scale);
        }
    }
}
