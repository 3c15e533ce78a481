//! sapling's WGSL kernels: a burn backend extension ([`WgslKernels`]) whose operations are
//! the shaders in `shaders/`, the tensor-level functions the ops layer calls, and one launcher
//! file per shader.
//!
//! Each launcher fills its shader's `{{ }}` sizes from plain numbers ([`source::Wgsl`]), so the
//! shader text of any shape can be built, and validated, without a device.

/// Memory-efficient (online-softmax) attention, forward and backward.
mod attention;
/// The autodiff side: hand-written backward passes.
mod autodiff;
/// Masked norm-pix loss straight from the image, forward and backward.
mod norm_pix;
/// Patchify and gather the visible patches in one pass.
mod patch_gather;
/// Templated WGSL sources and their launch.
mod source;
/// Sums of squares of several tensors per launch (the global gradient norm).
mod squared_sums;

pub use attention::{MAX_HEAD_DIM, supports};
pub use squared_sums::SQUARED_SUMS_INPUTS;

use attention::lse_shape;

use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Dispatch, backend_extension};
use burn::tensor::{DType, Int, Shape, Tensor};

/// The operations sapling implements in WGSL.
///
/// `Cube` is the wgpu backend (the kernels live in the sibling modules), `Fusion` records them as
/// opaque operations in burn's lazy graph, and `Autodiff` adds the hand-written backward passes.
/// Flex is deliberately absent: calling these on a Flex tensor panics, so the ops layer calls
/// them on wgpu devices only.
#[backend_extension(Autodiff, Cube, Fusion)]
pub trait WgslKernels: burn::backend::Backend {
    /// Per-patch squared error of `pred` `[B, L, P]` against the (norm-pix) patches of `imgs`
    /// `[B, C, H, W]` → `[B, L]`.
    #[fusion(dtype = pred, shape = per_patch_shape(pred))]
    fn norm_pix_loss(
        pred: FloatTensor<Self>,
        imgs: FloatTensor<Self>,
        patch: usize,
        norm_pix: bool,
    ) -> FloatTensor<Self>;

    /// Gradient of [`Self::norm_pix_loss`] w.r.t. `pred`, given the gradient per patch.
    #[fusion(dtype = pred, shape = pred)]
    fn norm_pix_loss_backward(
        pred: FloatTensor<Self>,
        imgs: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        patch: usize,
        norm_pix: bool,
    ) -> FloatTensor<Self>;

    /// The patches of `imgs` `[B, C, H, W]` at flat rows `rows` (`b·L + l`) → `[rows, p·p·C]`.
    #[fusion(dtype = imgs, shape = gather_shape(imgs, rows, patch))]
    fn patch_gather(
        imgs: FloatTensor<Self>,
        rows: IntTensor<Self>,
        patch: usize,
    ) -> FloatTensor<Self>;

    /// Softmax attention over `[B, H, N, hd]` without the `N × N` scores → `(out, logsumexp)`,
    /// `logsumexp` `[B, H, N]` being what the backward pass needs.
    /// `tiled` picks the forward kernel shaped for a GPU (`attention_tiled.wgsl`) over the one
    /// row per invocation a software rasteriser runs faster (`attention.wgsl`).
    #[fusion(meta = |q, _k, _v, _s, _t| (q.clone(), TensorSpec::new(lse_shape(&q.shape), DType::F32)))]
    fn flash_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
        tiled: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Partial sums of squares of the first `count` of seven tensors (the others are
    /// placeholders, never read) → `[count · G]`, `G` partials per tensor.
    #[fusion(dtype = t0, shape = sums_shape(t0, t1, t2, t3, t4, t5, t6, count))]
    #[allow(clippy::too_many_arguments)]
    fn squared_sums(
        t0: FloatTensor<Self>,
        t1: FloatTensor<Self>,
        t2: FloatTensor<Self>,
        t3: FloatTensor<Self>,
        t4: FloatTensor<Self>,
        t5: FloatTensor<Self>,
        t6: FloatTensor<Self>,
        count: usize,
    ) -> FloatTensor<Self>;

    /// Gradients of [`Self::flash_attention`] w.r.t. `(q, k, v)`; `delta` is `rowsum(dO ∘ O)`.
    #[fusion(meta = |q, _k, _v, _l, _d, _g, _s| (q.clone(), q.clone(), q.clone()))]
    fn flash_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

#[allow(clippy::too_many_arguments)]
fn sums_shape(
    t0: &Shape,
    t1: &Shape,
    t2: &Shape,
    t3: &Shape,
    t4: &Shape,
    t5: &Shape,
    t6: &Shape,
    count: &usize,
) -> Shape {
    let lens: Vec<usize> = [t0, t1, t2, t3, t4, t5, t6][..*count]
        .iter()
        .map(|s| s.num_elements())
        .collect();
    squared_sums::partials_shape(&lens)
}

fn per_patch_shape(pred: &Shape) -> Shape {
    Shape::new([pred[0], pred[1]])
}

fn gather_shape(imgs: &Shape, rows: &Shape, patch: &usize) -> Shape {
    Shape::new([rows[0], imgs[1] * patch * patch])
}

/// Per-patch (norm-pix) squared error, differentiable w.r.t. `pred`.
///
/// # Shapes
/// `pred`: `[B, L, p·p·C]`, `imgs`: `[B, C, H, W]` → `[B, L]`
pub fn norm_pix_loss(pred: Tensor<3>, imgs: Tensor<4>, patch: usize, norm_pix: bool) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as WgslKernels>::norm_pix_loss(
        pred.into_dispatch(),
        imgs.into_dispatch(),
        patch,
        norm_pix,
    ))
}

/// The patches of `imgs` at flat rows `b·L + l`, without patchifying the rest.
///
/// # Shapes
/// `imgs`: `[B, C, H, W]`, `rows`: `[R]` → `[R, p·p·C]`
pub fn patch_gather(imgs: Tensor<4>, rows: Tensor<1, Int>, patch: usize) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as WgslKernels>::patch_gather(
        imgs.into_dispatch(),
        rows.into_dispatch(),
        patch,
    ))
}

/// `softmax(scale · q·kᵀ)·v` without materialising the scores; differentiable in `q`, `k`, `v`.
/// `tiled`: the forward kernel shaped for a GPU, else one query row per invocation.
///
/// # Shapes
/// `q`, `k`, `v`: `[B, H, N, hd]` → `[B, H, N, hd]`
pub fn flash_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    scale: f32,
    tiled: bool,
) -> Tensor<4> {
    let (out, _lse) = <Dispatch as WgslKernels>::flash_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        scale,
        tiled,
    );
    Tensor::from_dispatch(out)
}

/// `Σ x²` over every element of `tensors` (f32, any number), `[1]`: one launch per seven
/// tensors, then one concatenation and one sum of the partials.
pub fn squared_sum(tensors: Vec<Tensor<1>>) -> Tensor<1> {
    let device = tensors.first().expect("at least one tensor").device();
    let partials = tensors
        .chunks(SQUARED_SUMS_INPUTS)
        .map(|chunk| {
            // Placeholders fill the last launch: distinct, never read, allocated not written.
            let mut inputs: Vec<_> = chunk.iter().map(|t| t.clone().into_dispatch()).collect();
            inputs.resize_with(SQUARED_SUMS_INPUTS, || {
                Tensor::<1>::empty([1], &device).into_dispatch()
            });
            let [t0, t1, t2, t3, t4, t5, t6]: [_; SQUARED_SUMS_INPUTS] = inputs
                .try_into()
                .unwrap_or_else(|_| unreachable!("resized to seven"));
            Tensor::from_dispatch(<Dispatch as WgslKernels>::squared_sums(
                t0,
                t1,
                t2,
                t3,
                t4,
                t5,
                t6,
                chunk.len(),
            ))
        })
        .collect();
    Tensor::<1>::cat(partials, 0).sum()
}

impl WgslKernels for burn::backend::wgpu::CubeBackend {
    fn norm_pix_loss(
        pred: FloatTensor<Self>,
        imgs: FloatTensor<Self>,
        patch: usize,
        norm_pix: bool,
    ) -> FloatTensor<Self> {
        norm_pix::forward(pred, imgs, patch, norm_pix)
    }

    fn norm_pix_loss_backward(
        pred: FloatTensor<Self>,
        imgs: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        patch: usize,
        norm_pix: bool,
    ) -> FloatTensor<Self> {
        norm_pix::backward(pred, imgs, grad, patch, norm_pix)
    }

    fn patch_gather(
        imgs: FloatTensor<Self>,
        rows: IntTensor<Self>,
        patch: usize,
    ) -> FloatTensor<Self> {
        patch_gather::forward(imgs, rows, patch)
    }

    fn flash_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
        tiled: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        attention::forward(q, k, v, scale, tiled)
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
        attention::backward(q, k, v, lse, delta, grad, scale)
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
        squared_sums::forward([t0, t1, t2, t3, t4, t5, t6], count)
    }
}

#[cfg(test)]
mod portability;
