//! sapling's CPU kernels for burn's Flex backend: a backend extension ([`CpuKernels`]) whose
//! operations are Rust on plain slices (the `gemm` crate and rayon, both already under Flex),
//! the tensor-level functions the ops layer and the optimizer call, and one file per kernel.

/// One fused AdamW update per parameter tensor (on slices, shared with the sharded optimizer).
pub use super::host::adamw;
/// Multi-head attention from the packed qkv rows, forward and backward.
pub mod attention;
/// The autodiff side: hand-written backward passes.
mod autodiff;
/// Exact GELU on every core, forward and backward.
pub mod gelu;
/// Sums in eight interleaved lanes, for the per-row reductions.
mod lanes;
/// Layer norm, one pass per row, forward and backward.
pub mod layer_norm;
/// `x·W + b` as single 2-D products, forward and backward.
pub mod linear;
/// Patches straight from the image: the kept patches' gather and the norm-pix loss.
pub mod patches;
/// The run-time choice between baseline and AVX2 + FMA copies of a loop.
mod simd;
/// `Σ x²` of a tensor on every core: the global gradient norm.
pub mod squares;

use std::mem::MaybeUninit;

use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Dispatch, backend_extension};
use burn::tensor::{DType, Int, Tensor, TensorData};

/// The operations sapling implements in Rust for burn's Flex CPU backend.
///
/// A separate trait from [`super::wgsl::WgslKernels`] because the two cover different backends:
/// calling one of these on a wgpu tensor panics, so the ops layer calls them on Flex devices
/// only. `Autodiff` adds the hand-written backward passes.
#[backend_extension(Autodiff, Flex)]
pub trait CpuKernels: burn::backend::Backend {
    /// Exact (erf) GELU, element-wise.
    fn gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `grad · gelu'(x)`, element-wise.
    fn gelu_erf_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `x [.., in] · weight [in, out] + bias [out]` → `[.., out]`, the leading dimensions
    /// flattened into the rows of one product.
    fn linear_2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// The gradient of [`Self::linear_2d`] w.r.t. `x`: `grad [.., out] · weightᵀ` → `[.., in]`.
    fn linear_2d_grad_input(
        grad: FloatTensor<Self>,
        weight: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// The gradients of [`Self::linear_2d`] w.r.t. weight and bias: `(xᵀ·grad, Σ grad)` over
    /// every row → `([in, out], [out])`.
    fn linear_2d_grad_params(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Layer norm of `x [.., d]` over its last dimension with `gamma`, `beta` `[d]` →
    /// `(y, mean, rstd)`, the last two `[rows]` being what the backward pass needs.
    fn layer_norm_rows(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// Softmax attention over packed `qkv` `[B, N, 3·D]` with `heads` heads → `(out [B, N, D],
    /// probs [B, H, N, N])`, the probabilities being what the backward pass needs.
    fn attention_qkv(
        qkv: FloatTensor<Self>,
        heads: usize,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Gradient of [`Self::attention_qkv`] w.r.t. `qkv`.
    fn attention_qkv_backward(
        qkv: FloatTensor<Self>,
        probs: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
        scale: f32,
    ) -> FloatTensor<Self>;

    /// One AdamW update of `param` with `grad` and moments `m`, `v` (all the same shape) →
    /// `(param, m, v)` updated, in place where the tensors are not shared.
    #[allow(clippy::too_many_arguments)]
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
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// `Σ x²` over every element of `x` → `[1]`, on every core without a squared copy.
    fn sum_of_squares(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Gradients of [`Self::layer_norm_rows`] w.r.t. `(x, gamma, beta)`.
    fn layer_norm_rows_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// The patches of `imgs` `[B, C, H, W]` at flat rows `rows` (`b·L + l`) → `[rows, p·p·C]`.
    fn patch_gather(
        imgs: FloatTensor<Self>,
        rows: IntTensor<Self>,
        patch: usize,
    ) -> FloatTensor<Self>;

    /// Per-patch squared error of `pred` `[B, L, P]` against the (norm-pix) patches of `imgs`
    /// `[B, C, H, W]` → `[B, L]`.
    fn patch_loss(
        pred: FloatTensor<Self>,
        imgs: FloatTensor<Self>,
        patch: usize,
        norm_pix: bool,
    ) -> FloatTensor<Self>;

    /// Gradient of [`Self::patch_loss`] w.r.t. `pred`, given the gradient per patch `[B, L]`.
    fn patch_loss_backward(
        pred: FloatTensor<Self>,
        imgs: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        patch: usize,
        norm_pix: bool,
    ) -> FloatTensor<Self>;
}

/// Exact GELU computed by sapling's CPU kernel; differentiable. Flex tensors only.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as CpuKernels>::gelu_erf(x.into_dispatch()))
}

/// `x·weight + bias` by sapling's CPU kernel; differentiable in all three. Flex tensors only.
pub fn linear<const D: usize>(x: Tensor<D>, weight: Tensor<2>, bias: Tensor<1>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as CpuKernels>::linear_2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// Layer norm over the last dimension by sapling's CPU kernel; differentiable in all three.
/// Flex tensors only.
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    let (y, _mean, _rstd) = <Dispatch as CpuKernels>::layer_norm_rows(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        eps as f32,
    );
    Tensor::from_dispatch(y)
}

/// Softmax attention of packed `qkv` `[B, N, 3·D]` → `[B, N, D]` by sapling's CPU kernel;
/// differentiable. Flex tensors only.
pub fn attention(qkv: Tensor<3>, heads: usize, scale: f32) -> Tensor<3> {
    let (out, _probs) = <Dispatch as CpuKernels>::attention_qkv(qkv.into_dispatch(), heads, scale);
    Tensor::from_dispatch(out)
}

/// The patches of `imgs` at flat rows `b·L + l` by sapling's CPU kernel (MAE's patch order);
/// the images are data, not differentiated. Flex tensors only.
///
/// # Shapes
/// `imgs`: `[B, C, H, W]`, `rows`: `[R]` → `[R, p·p·C]`
pub fn patch_gather(imgs: Tensor<4>, rows: Tensor<1, Int>, patch: usize) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as CpuKernels>::patch_gather(
        imgs.into_dispatch(),
        rows.into_dispatch(),
        patch,
    ))
}

/// Each patch's mean squared error against the (norm-pix) patches of `imgs` by sapling's CPU
/// kernel; differentiable w.r.t. `pred`. Flex tensors only.
///
/// # Shapes
/// `pred`: `[B, L, p·p·C]`, `imgs`: `[B, C, H, W]` → `[B, L]`
pub fn patch_loss(pred: Tensor<3>, imgs: Tensor<4>, patch: usize, norm_pix: bool) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as CpuKernels>::patch_loss(
        pred.into_dispatch(),
        imgs.into_dispatch(),
        patch,
        norm_pix,
    ))
}

/// One AdamW update by sapling's CPU kernel → `(param, m, v)`. Flex tensors only, no autodiff.
pub fn adamw<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    m: Tensor<D>,
    v: Tensor<D>,
    h: adamw::Hyper,
) -> [Tensor<D>; 3] {
    let (p, m, v) = <Dispatch as CpuKernels>::adamw_update(
        param.into_dispatch(),
        grad.into_dispatch(),
        m.into_dispatch(),
        v.into_dispatch(),
        h.lr,
        h.beta1,
        h.beta2,
        h.eps,
        h.weight_decay,
        h.time,
        h.grad_scale,
    );
    [p, m, v].map(Tensor::from_dispatch)
}

/// `Σ x²` over every element of each f32 tensor by sapling's CPU kernel, added in order → `[1]`:
/// the squared global norm of a step's gradients. Flex tensors only, no autodiff.
pub fn squared_sum(tensors: Vec<Tensor<1>>) -> Tensor<1> {
    let parts = tensors
        .into_iter()
        .map(|t| {
            Tensor::<1>::from_dispatch(<Dispatch as CpuKernels>::sum_of_squares(t.into_dispatch()))
        })
        .collect();
    Tensor::cat(parts, 0).sum()
}

/// [`squared_sum`] of slices on the host, the same arithmetic to the bit: each slice's `Σ x²`
/// by the same kernel, the sums added by Flex's own `sum` (so the offloaded optimizer clips
/// exactly as the device optimizer on Flex does).
pub fn squared_sum_slices<'a>(slices: impl Iterator<Item = &'a [f32]>) -> f32 {
    let parts: Vec<f32> = slices.map(squares::sum).collect();
    let n = parts.len();
    Tensor::<1>::from_data(TensorData::new(parts, [n]), &burn::tensor::Device::flex())
        .sum()
        .into_data()
        .try_into_vec::<f32>()
        .expect("an f32 sum")[0]
}

/// `t` as a uniquely owned, contiguous f32 tensor covering its whole buffer, so its storage
/// can be written in place (a copy only when it is shared or a view).
fn owned(t: FlexTensor) -> FlexTensor {
    assert_eq!(
        t.dtype(),
        DType::F32,
        "CPU kernels: AdamW tensors must be f32"
    );
    let whole = t.as_slice::<f32>().map(<[f32]>::len) == Some(t.storage::<f32>().len());
    if t.is_unique() && whole {
        return t;
    }
    let dims = t.layout().shape().as_slice().to_vec();
    flex(contiguous(&t).into_owned(), dims)
}

/// The f32 elements of a Flex tensor in row-major order (a copy only when it is a strided view).
/// Outputs are built from a `Vec<f32>` ([`flex`]), not `FlexTensor::empty`, whose byte buffer
/// is re-allocated and copied to reach 16-byte alignment.
fn contiguous(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().unwrap().to_vec()),
    }
}

/// `(rows, last dimension)` of a tensor seen as a matrix; sapling's kernels are f32 only.
fn matrix(t: &FlexTensor, what: &str) -> (usize, usize) {
    assert_eq!(t.dtype(), DType::F32, "CPU kernels: {what} must be f32");
    let dims = t.layout().shape().as_slice().to_vec();
    let last = *dims
        .last()
        .expect("CPU kernels: a matrix needs at least one dimension");
    (dims.iter().rev().skip(1).product(), last)
}

/// The attention shapes of a packed `[B, N, 3·D]` tensor.
fn attention_dims(qkv: &FlexTensor, heads: usize) -> attention::Dims {
    assert_eq!(qkv.dtype(), DType::F32, "CPU kernels: qkv must be f32");
    let s = qkv.layout().shape().as_slice();
    assert!(
        s.len() == 3 && s[2].is_multiple_of(3 * heads),
        "CPU attention: qkv {s:?} is not [B, N, 3·D] with D divisible by {heads} heads"
    );
    attention::Dims {
        batch: s[0],
        tokens: s[1],
        heads,
        head_dim: s[2] / 3 / heads,
    }
}

/// A vector of `len` f32s that `write` initialises, without the zero-fill `vec![0.0; len]`
/// would make first: that fill is a pass over the output on the calling thread before the
/// kernel's own pass on every core (≈ 2.5 % of a tiny step's CPU samples, all of it serial).
///
/// # Safety
/// `write` must initialise every element of the slice it is given.
unsafe fn written(len: usize, write: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    write(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: `write` initialised the first `len` elements (the caller's promise).
    unsafe { v.set_len(len) };
    v
}

use super::host::{PARALLEL_MIN, rows_per_task};

/// The patch geometry of images `[B, C, H, W]` cut into `patch`-pixel patches, and B.
fn patch_geometry(imgs: &FlexTensor, patch: usize) -> (patches::Geometry, usize) {
    assert_eq!(imgs.dtype(), DType::F32, "CPU kernels: images must be f32");
    let s = imgs.layout().shape().as_slice();
    assert!(
        s.len() == 4 && patch > 0 && s[2].is_multiple_of(patch) && s[3].is_multiple_of(patch),
        "CPU patch kernels: images {s:?} are not [B, C, H, W] of whole {patch}-pixel patches"
    );
    let geometry = patches::Geometry {
        channels: s[1],
        patch,
        height: s[2],
        width: s[3],
    };
    (geometry, s[0])
}

fn flex(data: Vec<f32>, dims: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, dims))
}

impl CpuKernels for Flex {
    fn gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if x.dtype() != DType::F32 {
            return <Flex as burn::backend::ops::ActivationOps<Flex>>::gelu(x);
        }
        let x_data = contiguous(&x);
        // SAFETY: GELU writes every output element.
        let out = unsafe { written(x_data.len(), |out| gelu::forward(&x_data, out)) };
        flex(out, x.layout().shape().as_slice().to_vec())
    }

    fn gelu_erf_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        if x.dtype() != DType::F32 || grad.dtype() != DType::F32 {
            return <Flex as burn::backend::ops::ActivationOps<Flex>>::gelu_backward(x, grad);
        }
        let (x_data, grad) = (contiguous(&x), contiguous(&grad));
        // SAFETY: GELU's backward writes every output element.
        let out = unsafe { written(x_data.len(), |out| gelu::backward(&x_data, &grad, out)) };
        flex(out, x.layout().shape().as_slice().to_vec())
    }

    fn linear_2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (m, din) = matrix(&x, "x");
        let (w_in, dout) = matrix(&weight, "weight");
        assert_eq!(
            din, w_in,
            "CPU linear: x has {din} features, the weight takes {w_in}"
        );
        let out = linear::forward(
            &contiguous(&x),
            &contiguous(&weight),
            &contiguous(&bias),
            m,
            din,
            dout,
        );
        let mut dims = x.layout().shape().as_slice().to_vec();
        *dims.last_mut().expect("checked above") = dout;
        flex(out, dims)
    }

    fn linear_2d_grad_input(
        grad: FloatTensor<Self>,
        weight: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (m, dout) = matrix(&grad, "grad");
        let (din, w_out) = matrix(&weight, "weight");
        assert_eq!(
            dout, w_out,
            "CPU linear: grad has {dout} features, the weight gives {w_out}"
        );
        let dx = linear::backward_input(&contiguous(&grad), &contiguous(&weight), m, din, dout);
        let mut dims = grad.layout().shape().as_slice().to_vec();
        *dims.last_mut().expect("checked above") = din;
        flex(dx, dims)
    }

    fn linear_2d_grad_params(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (m, din) = matrix(&x, "x");
        let (m2, dout) = matrix(&grad, "grad");
        assert_eq!(m, m2, "CPU linear: x has {m} rows, grad {m2}");
        let (dw, db) = linear::backward_params(&contiguous(&x), &contiguous(&grad), m, din, dout);
        (flex(dw, vec![din, dout]), flex(db, vec![dout]))
    }

    fn layer_norm_rows(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (m, d) = matrix(&x, "x");
        let (y, mean, rstd) = layer_norm::forward(
            &contiguous(&x),
            &contiguous(&gamma),
            &contiguous(&beta),
            m,
            d,
            eps,
        );
        let dims = x.layout().shape().as_slice().to_vec();
        (flex(y, dims), flex(mean, vec![m]), flex(rstd, vec![m]))
    }

    fn attention_qkv(
        qkv: FloatTensor<Self>,
        heads: usize,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let dims = attention_dims(&qkv, heads);
        let (out, probs) = attention::forward(&contiguous(&qkv), dims, scale);
        let (b, n, h) = (dims.batch, dims.tokens, dims.heads);
        (
            flex(out, vec![b, n, h * dims.head_dim]),
            flex(probs, vec![b, h, n, n]),
        )
    }

    fn attention_qkv_backward(
        qkv: FloatTensor<Self>,
        probs: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
        scale: f32,
    ) -> FloatTensor<Self> {
        let dims = attention_dims(&qkv, heads);
        let shape = qkv.layout().shape().as_slice().to_vec();
        let dqkv = attention::backward(
            &contiguous(&qkv),
            &contiguous(&probs),
            &contiguous(&grad),
            dims,
            scale,
        );
        flex(dqkv, shape)
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
        let (mut param, mut m, mut v) = (owned(param), owned(m), owned(v));
        let h = adamw::Hyper {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            time,
            grad_scale,
        };
        adamw::update(
            param.storage_mut::<f32>(),
            &contiguous(&grad),
            m.storage_mut::<f32>(),
            v.storage_mut::<f32>(),
            h,
        );
        (param, m, v)
    }

    fn layer_norm_rows_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (m, d) = matrix(&x, "x");
        let (dx, dgamma, dbeta) = layer_norm::backward(
            &contiguous(&x),
            &contiguous(&gamma),
            &contiguous(&mean),
            &contiguous(&rstd),
            &contiguous(&grad),
            m,
            d,
        );
        let dims = x.layout().shape().as_slice().to_vec();
        (flex(dx, dims), flex(dgamma, vec![d]), flex(dbeta, vec![d]))
    }

    fn patch_gather(
        imgs: FloatTensor<Self>,
        rows: IntTensor<Self>,
        patch: usize,
    ) -> FloatTensor<Self> {
        let (g, b) = patch_geometry(&imgs, patch);
        let rows: Vec<usize> = rows.into_data().iter::<i64>().map(|r| r as usize).collect();
        let count = b * g.patches();
        assert!(
            rows.iter().all(|&r| r < count),
            "CPU patch gather: a row is past the batch's {count} patches"
        );
        let imgs = contiguous(&imgs);
        // SAFETY: the gather writes every element of every requested row.
        let out = unsafe {
            written(rows.len() * g.patch_len(), |out| {
                patches::gather(&imgs, g, &rows, out)
            })
        };
        flex(out, vec![rows.len(), g.patch_len()])
    }

    fn patch_loss(
        pred: FloatTensor<Self>,
        imgs: FloatTensor<Self>,
        patch: usize,
        norm_pix: bool,
    ) -> FloatTensor<Self> {
        let (g, b) = patch_geometry(&imgs, patch);
        let (rows, len) = matrix(&pred, "pred");
        assert!(
            len == g.patch_len() && rows == b * g.patches(),
            "CPU patch loss: pred {:?} is not [{b}, {}, {}]",
            pred.layout().shape().as_slice(),
            g.patches(),
            g.patch_len()
        );
        let (pred, imgs_data) = (contiguous(&pred), contiguous(&imgs));
        // SAFETY: the loss writes one value per patch row.
        let out = unsafe {
            written(rows, |out| {
                patches::loss(&pred, &imgs_data, g, norm_pix, out)
            })
        };
        flex(out, vec![b, g.patches()])
    }

    fn patch_loss_backward(
        pred: FloatTensor<Self>,
        imgs: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        patch: usize,
        norm_pix: bool,
    ) -> FloatTensor<Self> {
        let (g, _) = patch_geometry(&imgs, patch);
        let dims = pred.layout().shape().as_slice().to_vec();
        let (pred, imgs, grad) = (contiguous(&pred), contiguous(&imgs), contiguous(&grad));
        // SAFETY: the backward writes every element of every patch row.
        let out = unsafe {
            written(pred.len(), |out| {
                patches::loss_backward(&pred, &imgs, &grad, g, norm_pix, out)
            })
        };
        flex(out, dims)
    }

    fn sum_of_squares(x: FloatTensor<Self>) -> FloatTensor<Self> {
        assert_eq!(
            x.dtype(),
            DType::F32,
            "CPU kernels: sums of squares take f32"
        );
        flex(vec![squares::sum(&contiguous(&x))], vec![1])
    }
}
