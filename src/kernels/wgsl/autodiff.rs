//! Hand-written backward passes of the WGSL kernels: burn's autodiff sees each kernel as one
//! node, whose backward is the matching backward kernel.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::{DType, FloatDType};

use super::WgslKernels;

#[derive(Debug)]
struct NormPixBackward;

impl<B: WgslKernels> Backward<B, 1> for NormPixBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, usize, bool);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (pred, imgs, patch, norm_pix) = ops.state;
        if let Some(node) = node {
            grads.register::<B>(
                node.id,
                B::norm_pix_loss_backward(pred, imgs, grad, patch, norm_pix),
            );
        }
    }
}

#[derive(Debug)]
struct AttentionBackward;

impl<B: WgslKernels> Backward<B, 3> for AttentionBackward {
    /// q, k, v, out, logsumexp, scale.
    type State = (
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        f32,
    );

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [nq, nk, nv] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (q, k, v, out, lse, scale) = ops.state;
        // delta = rowsum(dO ∘ O): O(N·hd), cheap in burn's own ops; in f32 whatever the
        // tensors are stored as, as the kernels read it.
        let wide = |t: FloatTensor<B>| match t.dtype() {
            DType::F32 => t,
            _ => B::float_cast(t, FloatDType::F32),
        };
        let delta = B::float_sum_dim(B::float_mul(wide(grad.clone()), wide(out)), 3);
        let (dq, dk, dv) = B::flash_attention_backward(q, k, v, lse, delta, grad, scale);
        for (node, g) in [(nq, dq), (nk, dk), (nv, dv)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

type Ad<B, C> = Autodiff<B, C>;

impl<B: WgslKernels, C: CheckpointStrategy> WgslKernels for Ad<B, C> {
    fn norm_pix_loss(
        pred: FloatTensor<Self>,
        imgs: FloatTensor<Self>,
        patch: usize,
        norm_pix: bool,
    ) -> FloatTensor<Self> {
        // The images are data: only the prediction is differentiated.
        match NormPixBackward
            .prepare::<C>([pred.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (pred, imgs) = (pred.into_primitive(), imgs.into_primitive());
                let out = B::norm_pix_loss(pred.clone(), imgs.clone(), patch, norm_pix);
                prep.finish((pred, imgs, patch, norm_pix), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::norm_pix_loss(
                pred.into_primitive(),
                imgs.into_primitive(),
                patch,
                norm_pix,
            )),
        }
    }

    fn norm_pix_loss_backward(
        pred: FloatTensor<Self>,
        imgs: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        patch: usize,
        norm_pix: bool,
    ) -> FloatTensor<Self> {
        // Second derivatives are not needed for training: the result is a constant.
        FloatTensor::<Self>::new(B::norm_pix_loss_backward(
            pred.into_primitive(),
            imgs.into_primitive(),
            grad.into_primitive(),
            patch,
            norm_pix,
        ))
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

    fn flash_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
        tiled: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        match AttentionBackward
            .prepare::<C>([q.node(), k.node(), v.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (q, k, v) = (q.into_primitive(), k.into_primitive(), v.into_primitive());
                let (out, lse) = B::flash_attention(q.clone(), k.clone(), v.clone(), scale, tiled);
                let state = (q, k, v, out.clone(), lse.clone(), scale);
                (prep.finish(state, out), FloatTensor::<Self>::new(lse))
            }
            OpsKind::UnTracked(prep) => {
                let (out, lse) = B::flash_attention(
                    q.into_primitive(),
                    k.into_primitive(),
                    v.into_primitive(),
                    scale,
                    tiled,
                );
                (prep.finish(out), FloatTensor::<Self>::new(lse))
            }
        }
    }

    fn squared_sums(
        t0: FloatTensor<Self>,
        t1: FloatTensor<Self>,
        t2: FloatTensor<Self>,
        t3: FloatTensor<Self>,
        t4: FloatTensor<Self>,
        t5: FloatTensor<Self>,
        t6: FloatTensor<Self>,
        count: usize,
    ) -> FloatTensor<Self> {
        // Norms of gradients are read, never differentiated: no graph is recorded.
        let [t0, t1, t2, t3, t4, t5, t6] = [t0, t1, t2, t3, t4, t5, t6].map(|t| t.into_primitive());
        FloatTensor::<Self>::new(B::squared_sums(t0, t1, t2, t3, t4, t5, t6, count))
    }

    fn flash_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (dq, dk, dv) = B::flash_attention_backward(
            q.into_primitive(),
            k.into_primitive(),
            v.into_primitive(),
            lse.into_primitive(),
            delta.into_primitive(),
            grad.into_primitive(),
            scale,
        );
        (
            FloatTensor::<Self>::new(dq),
            FloatTensor::<Self>::new(dk),
            FloatTensor::<Self>::new(dv),
        )
    }
}
