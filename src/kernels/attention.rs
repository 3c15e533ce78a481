//! Memory-efficient attention, forward and backward (online softmax, FlashAttention-2's
//! backward split). burn 0.22's `module::attention` differentiates through its materialised
//! fallback, so the `[B, H, N, N]` scores (1 GiB per decoder layer for one 1024-px Sapiens
//! sample) would still be kept for backward; these kernels keep `q, k, v, out` and one
//! logsumexp per row.

use burn::backend::wgpu::{CubeTensor, into_contiguous};
use burn::cubecl::CubeCount;
use burn::tensor::Tensor;
use burn::tensor::activation::softmax;

use super::ops::lse_shape;
use super::source::{BindingOf, Wgsl, empty, float_type};

const COMMON: &str = include_str!("../../shaders/attention_common.wgsl");
/// Private arrays of a few head dims per invocation, and two tiles in 16 KiB of workgroup memory.
pub const MAX_HEAD_DIM: usize = 128;

/// Whether the kernels take head dim `hd`: rows are read as vec4, and a few rows per invocation
/// live in private memory.
pub fn supports(hd: usize) -> bool {
    hd.is_multiple_of(4) && hd <= MAX_HEAD_DIM
}

/// `softmax(scale · q·kᵀ)·v` the plain way, scores materialised.
///
/// # Shapes
/// `q`, `k`, `v`: `[B, H, N, hd]` → `[B, H, N, hd]`
pub fn reference(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, scale: f32) -> Tensor<4> {
    // Scaling q before the product touches N·hd values instead of N·N.
    softmax(q.mul_scalar(scale).matmul(k.swap_dims(2, 3)), 3).matmul(v)
}

fn kernel(
    name: &'static str,
    main: &'static str,
    q: &CubeTensor,
    scale: f32,
    tiles: [&str; 2],
) -> (Wgsl, CubeCount) {
    float_type(q);
    let s = q.meta.shape();
    let (bh, n, hd) = (s[0] * s[1], s[2], s[3]);
    assert!(
        supports(hd),
        "the WGSL attention takes head dims that are multiples of 4 up to {MAX_HEAD_DIM}, got {hd}"
    );
    // One query (or key) row per invocation; no wider than the rows there are, so a short
    // sequence does not leave most of a workgroup idle.
    let workgroup = n.next_power_of_two().clamp(16, 64) as u32;
    // Two tiles of `tile × hd` floats in 16 KiB of workgroup memory.
    let rows = 1usize << (2048 / hd).min(64).ilog2();
    let wgsl = Wgsl::new(name, &[COMMON, main], workgroup)
        .with("tile", rows)
        .with("tokens", n)
        .with("head_dim", hd)
        .with("scale", format!("{scale:?}"))
        .with("tile_a", tiles[0])
        .with("tile_b", tiles[1]);
    let count = CubeCount::Static(n.div_ceil(workgroup as usize) as u32, bh as u32, 1);
    (wgsl, count)
}

pub(crate) fn forward(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    scale: f32,
) -> (CubeTensor, CubeTensor) {
    let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
    let out = empty(&q, q.meta.shape().clone(), q.dtype);
    let lse = empty(&q, lse_shape(q.meta.shape()), q.dtype);
    let (wgsl, count) = kernel(
        "attention",
        include_str!("../../shaders/attention.wgsl"),
        &q,
        scale,
        ["k", "v"],
    );
    wgsl.launch(
        &q,
        count,
        [&q, &k, &v, &out, &lse].map(BindingOf::Tensor).into(),
    );
    (out, lse)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    lse: CubeTensor,
    delta: CubeTensor,
    grad: CubeTensor,
    scale: f32,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let [q, k, v, lse, delta, grad] = [q, k, v, lse, delta, grad].map(into_contiguous);
    let [dq, dk, dv] = [0, 1, 2].map(|_| empty(&q, q.meta.shape().clone(), q.dtype));
    let inputs = [&q, &k, &v, &lse, &delta, &grad];
    let (wgsl, count) = kernel(
        "attention_backward_dq",
        include_str!("../../shaders/attention_backward_dq.wgsl"),
        &q,
        scale,
        ["k", "v"],
    );
    let mut bindings: Vec<_> = inputs.map(BindingOf::Tensor).into();
    bindings.push(BindingOf::Tensor(&dq));
    wgsl.launch(&q, count, bindings);
    let (wgsl, count) = kernel(
        "attention_backward_dkdv",
        include_str!("../../shaders/attention_backward_dkdv.wgsl"),
        &q,
        scale,
        ["q", "grad"],
    );
    let mut bindings: Vec<_> = inputs.map(BindingOf::Tensor).into();
    bindings.extend([BindingOf::Tensor(&dk), BindingOf::Tensor(&dv)]);
    wgsl.launch(&q, count, bindings);
    (dq, dk, dv)
}
