//! Memory-efficient attention, forward and backward (online softmax, FlashAttention-2's
//! backward split). burn 0.22's `module::attention` differentiates through its materialised
//! fallback, so the `[B, H, N, N]` scores (1 GiB per decoder layer for one 1024-px Sapiens
//! sample) would still be kept for backward; these kernels keep `q, k, v, out` and one
//! logsumexp per row.

use burn::backend::wgpu::{CubeTensor, into_contiguous};
use burn::cubecl::CubeCount;
use burn::tensor::Shape;

use burn::tensor::DType;

use super::source::{BindingOf, Elem, Wgsl, empty, half_or_single};

const COMMON: &str = include_str!("../../../shaders/attention_common.wgsl");
/// Private arrays of a few head dims per invocation, and two tiles in 16 KiB of workgroup memory.
pub const MAX_HEAD_DIM: usize = 128;

/// Whether the kernels take head dim `hd`: rows are read as vec4, and a few rows per invocation
/// live in private memory.
pub fn supports(hd: usize) -> bool {
    hd.is_multiple_of(4) && hd <= MAX_HEAD_DIM
}

/// `[B, H, N]`: one logsumexp per query row, what the backward pass needs.
pub(crate) fn lse_shape(q: &Shape) -> Shape {
    Shape::new([q[0], q[1], q[2]])
}

/// The three shaders of one attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    Forward,
    /// dq, one query row per invocation.
    BackwardDq,
    /// dk and dv, one key row per invocation.
    BackwardDkDv,
}

#[cfg(test)]
impl Pass {
    pub(crate) const ALL: [Pass; 3] = [Pass::Forward, Pass::BackwardDq, Pass::BackwardDkDv];
}

/// The shader of `pass` for `tokens` rows of head dim `head_dim`, its tensors stored as `elem`
/// (the logsumexp and `delta` rows are f32 either way).
pub(crate) fn shader(pass: Pass, tokens: usize, head_dim: usize, scale: f32, elem: Elem) -> Wgsl {
    assert!(
        supports(head_dim),
        "the WGSL attention takes head dims that are multiples of 4 up to {MAX_HEAD_DIM}, got {head_dim}"
    );
    let (name, main, tiles) = match pass {
        Pass::Forward => (
            "attention",
            include_str!("../../../shaders/attention.wgsl"),
            ["k", "v"],
        ),
        Pass::BackwardDq => (
            "attention_backward_dq",
            include_str!("../../../shaders/attention_backward_dq.wgsl"),
            ["k", "v"],
        ),
        Pass::BackwardDkDv => (
            "attention_backward_dkdv",
            include_str!("../../../shaders/attention_backward_dkdv.wgsl"),
            ["q", "grad"],
        ),
    };
    // Two tiles of `tile × hd` floats in 16 KiB of workgroup memory.
    let rows = 1usize << (2048 / head_dim).min(64).ilog2();
    Wgsl::new(name, &[COMMON, main], workgroup(tokens))
        .with("tile", rows)
        .with("tokens", tokens)
        .with("head_dim", head_dim)
        .with("scale", format!("{scale:?}"))
        .with("tile_a", tiles[0])
        .with("tile_b", tiles[1])
        .with("elem", elem.name())
        .with("enable", elem.enable())
}

/// One query (or key) row per invocation; no wider than the rows there are, so a short
/// sequence does not leave most of a workgroup idle.
fn workgroup(tokens: usize) -> u32 {
    tokens.next_power_of_two().clamp(16, 64) as u32
}

/// `pass` over `q`'s shape `[B, H, N, hd]`: the shader and its workgroup count.
fn launch_shape(pass: Pass, q: &CubeTensor, scale: f32) -> (Wgsl, CubeCount) {
    let elem = half_or_single(q);
    let s = q.meta.shape();
    let (bh, n, hd) = (s[0] * s[1], s[2], s[3]);
    let count = CubeCount::Static(n.div_ceil(workgroup(n) as usize) as u32, bh as u32, 1);
    (shader(pass, n, hd, scale, elem), count)
}

pub(crate) fn forward(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    scale: f32,
) -> (CubeTensor, CubeTensor) {
    let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
    let out = empty(&q, q.meta.shape().clone(), q.dtype);
    // Statistics stay f32 in mixed precision.
    let lse = empty(&q, lse_shape(q.meta.shape()), DType::F32);
    let (wgsl, count) = launch_shape(Pass::Forward, &q, scale);
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
    let (wgsl, count) = launch_shape(Pass::BackwardDq, &q, scale);
    let mut bindings: Vec<_> = inputs.map(BindingOf::Tensor).into();
    bindings.push(BindingOf::Tensor(&dq));
    wgsl.launch(&q, count, bindings);
    let (wgsl, count) = launch_shape(Pass::BackwardDkDv, &q, scale);
    let mut bindings: Vec<_> = inputs.map(BindingOf::Tensor).into();
    bindings.extend([BindingOf::Tensor(&dk), BindingOf::Tensor(&dv)]);
    wgsl.launch(&q, count, bindings);
    (dq, dk, dv)
}
