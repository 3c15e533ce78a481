//! Hand-written backward passes of the CPU kernels: burn's autodiff sees each kernel as one
//! node, whose backward is the matching closed-form kernel.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};

use super::CpuKernels;

#[derive(Debug)]
struct GeluBackward;

impl<B: CpuKernels> Backward<B, 1> for GeluBackward {
    /// The GELU's input.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            grads.register::<B>(node.id, B::gelu_erf_backward(ops.state, grad));
        }
    }
}

#[derive(Debug)]
struct LinearBackward;

impl<B: CpuKernels> Backward<B, 3> for LinearBackward {
    /// x, weight.
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [nx, nw, nb] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, weight) = ops.state;
        if nw.is_some() || nb.is_some() {
            let (dw, db) = B::linear_2d_grad_params(x, grad.clone());
            for (node, g) in [(nw, dw), (nb, db)] {
                if let Some(node) = node {
                    grads.register::<B>(node.id, g);
                }
            }
        }
        if let Some(node) = nx {
            grads.register::<B>(node.id, B::linear_2d_grad_input(grad, weight));
        }
    }
}

#[derive(Debug)]
struct LayerNormBackward;

impl<B: CpuKernels> Backward<B, 3> for LayerNormBackward {
    /// x, gamma, mean, rstd.
    type State = (
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
    );

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [nx, ng, nb] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, gamma, mean, rstd) = ops.state;
        let (dx, dg, db) = B::layer_norm_rows_backward(x, gamma, mean, rstd, grad);
        for (node, g) in [(nx, dx), (ng, dg), (nb, db)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

#[derive(Debug)]
struct QkvAttentionBackward;

impl<B: CpuKernels> Backward<B, 1> for QkvAttentionBackward {
    /// qkv, probs, heads, scale.
    type State = (FloatTensor<B>, FloatTensor<B>, usize, f32);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (qkv, probs, heads, scale) = ops.state;
        if let Some(node) = node {
            let dqkv = B::attention_qkv_backward(qkv, probs, grad, heads, scale);
            grads.register::<B>(node.id, dqkv);
        }
    }
}

#[derive(Debug)]
struct PatchLossBackward;

impl<B: CpuKernels> Backward<B, 1> for PatchLossBackward {
    /// pred, imgs, patch, norm_pix.
    type State = (FloatTensor<B>, FloatTensor<B>, usize, bool);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (pred, imgs, patch, norm_pix) = ops.state;
        if let Some(node) = node {
            let dpred = B::patch_loss_backward(pred, imgs, grad, patch, norm_pix);
            grads.register::<B>(node.id, dpred);
        }
    }
}

type Ad<B, C> = Autodiff<B, C>;

impl<B: CpuKernels, C: CheckpointStrategy> CpuKernels for Ad<B, C> {
    fn gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match GeluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = x.into_primitive();
                let out = B::gelu_erf(x.clone());
                prep.finish(x, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::gelu_erf(x.into_primitive())),
        }
    }

    fn gelu_erf_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        // Second derivatives are not needed for training: the result is a constant.
        FloatTensor::<Self>::new(B::gelu_erf_backward(
            x.into_primitive(),
            grad.into_primitive(),
        ))
    }

    fn linear_2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        match LinearBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, weight) = (x.into_primitive(), weight.into_primitive());
                let out = B::linear_2d(x.clone(), weight.clone(), bias.into_primitive());
                prep.finish((x, weight), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::linear_2d(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
            )),
        }
    }

    fn attention_qkv(
        qkv: FloatTensor<Self>,
        heads: usize,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        match QkvAttentionBackward
            .prepare::<C>([qkv.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let qkv = qkv.into_primitive();
                let (out, probs) = B::attention_qkv(qkv.clone(), heads, scale);
                let state = (qkv, probs.clone(), heads, scale);
                (prep.finish(state, out), FloatTensor::<Self>::new(probs))
            }
            OpsKind::UnTracked(prep) => {
                let (out, probs) = B::attention_qkv(qkv.into_primitive(), heads, scale);
                (prep.finish(out), FloatTensor::<Self>::new(probs))
            }
        }
    }

    fn attention_qkv_backward(
        qkv: FloatTensor<Self>,
        probs: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
        scale: f32,
    ) -> FloatTensor<Self> {
        FloatTensor::<Self>::new(B::attention_qkv_backward(
            qkv.into_primitive(),
            probs.into_primitive(),
            grad.into_primitive(),
            heads,
            scale,
        ))
    }

    fn adamw_update(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
        time: i32,
        grad_scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // An optimizer step is never differentiated: the results are constants.
        let (p, m, v) = B::adamw_update(
            param.into_primitive(),
            grad.into_primitive(),
            m.into_primitive(),
            v.into_primitive(),
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            time,
            grad_scale,
        );
        (
            FloatTensor::<Self>::new(p),
            FloatTensor::<Self>::new(m),
            FloatTensor::<Self>::new(v),
        )
    }

    fn layer_norm_rows(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        match LayerNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, gamma) = (x.into_primitive(), gamma.into_primitive());
                let (y, mean, rstd) =
                    B::layer_norm_rows(x.clone(), gamma.clone(), beta.into_primitive(), eps);
                let state = (x, gamma, mean.clone(), rstd.clone());
                (
                    prep.finish(state, y),
                    FloatTensor::<Self>::new(mean),
                    FloatTensor::<Self>::new(rstd),
                )
            }
            OpsKind::UnTracked(prep) => {
                let (y, mean, rstd) = B::layer_norm_rows(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    eps,
                );
                (
                    prep.finish(y),
                    FloatTensor::<Self>::new(mean),
                    FloatTensor::<Self>::new(rstd),
                )
            }
        }
    }

    fn layer_norm_rows_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (dx, dg, db) = B::layer_norm_rows_backward(
            x.into_primitive(),
            gamma.into_primitive(),
            mean.into_primitive(),
            rstd.into_primitive(),
            grad.into_primitive(),
        );
        (
            FloatTensor::<Self>::new(dx),
            FloatTensor::<Self>::new(dg),
            FloatTensor::<Self>::new(db),
        )
    }

    fn linear_2d_grad_input(
        grad: FloatTensor<Self>,
        weight: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        FloatTensor::<Self>::new(B::linear_2d_grad_input(
            grad.into_primitive(),
            weight.into_primitive(),
        ))
    }

    fn linear_2d_grad_params(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (dw, db) = B::linear_2d_grad_params(x.into_primitive(), grad.into_primitive());
        (FloatTensor::<Self>::new(dw), FloatTensor::<Self>::new(db))
    }

    fn patch_gather(
        imgs: FloatTensor<Self>,
        rows: IntTensor<Self>,
        patch: usize,
    ) -> FloatTensor<Self> {
        // Images are inputs, never parameters: the gather has no backward.
        assert!(
            !imgs.is_tracked(),
            "patch_gather has no backward pass: the images must not require gradients"
        );
        FloatTensor::<Self>::new(B::patch_gather(imgs.into_primitive(), rows, patch))
    }

    fn patch_loss(
        pred: FloatTensor<Self>,
        imgs: FloatTensor<Self>,
        patch: usize,
        norm_pix: bool,
    ) -> FloatTensor<Self> {
        // The images are data: only the prediction is differentiated.
        match PatchLossBackward
            .prepare::<C>([pred.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (pred, imgs) = (pred.into_primitive(), imgs.into_primitive());
                let out = B::patch_loss(pred.clone(), imgs.clone(), patch, norm_pix);
                prep.finish((pred, imgs, patch, norm_pix), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::patch_loss(
                pred.into_primitive(),
                imgs.into_primitive(),
                patch,
                norm_pix,
            )),
        }
    }

    fn patch_loss_backward(
        pred: FloatTensor<Self>,
        imgs: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        patch: usize,
        norm_pix: bool,
    ) -> FloatTensor<Self> {
        // Second derivatives are not needed for training: the result is a constant.
        FloatTensor::<Self>::new(B::patch_loss_backward(
            pred.into_primitive(),
            imgs.into_primitive(),
            grad.into_primitive(),
            patch,
            norm_pix,
        ))
    }

    fn sum_of_squares(x: FloatTensor<Self>) -> FloatTensor<Self> {
        // A gradient norm is never differentiated: the result is a constant.
        FloatTensor::<Self>::new(B::sum_of_squares(x.into_primitive()))
    }
}
