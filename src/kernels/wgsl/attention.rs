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
    /// One query row per invocation (what a software rasteriser prefers).
    Forward,
    /// Several invocations per query row, the query tile in workgroup memory (what a GPU
    /// prefers; see `attention_tiled.wgsl`).
    ForwardTiled,
    /// dq, one query row per invocation.
    BackwardDq,
    /// dk and dv, one key row per invocation.
    BackwardDkDv,
}

#[cfg(test)]
impl Pass {
    pub(crate) const ALL: [Pass; 4] = [
        Pass::Forward,
        Pass::ForwardTiled,
        Pass::BackwardDq,
        Pass::BackwardDkDv,
    ];
}

/// The shader of `pass` for `tokens` rows of head dim `head_dim`, its tensors stored as `elem`
/// (the logsumexp and `delta` rows are f32 either way).
pub(crate) fn shader(pass: Pass, tokens: usize, head_dim: usize, scale: f32, elem: Elem) -> Wgsl {
    assert!(
        supports(head_dim),
        "the WGSL attention takes head dims that are multiples of 4 up to {MAX_HEAD_DIM}, got {head_dim}"
    );
    let (name, main, tiles) = match pass {
        Pass::ForwardTiled => return tiled_shader(tokens, head_dim, scale, elem),
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
    let kernel = Wgsl::new(name, &[COMMON, main], workgroup(tokens))
        .with("tile", rows)
        .with("tile_a", tiles[0])
        .with("tile_b", tiles[1]);
    with_sizes(kernel, tokens, head_dim, scale, elem)
}

/// The placeholders every attention shader has: sequence length, head dim, scale, and the
/// element type tensors are stored as.
fn with_sizes(kernel: Wgsl, tokens: usize, head_dim: usize, scale: f32, elem: Elem) -> Wgsl {
    kernel
        .with("tokens", tokens)
        .with("head_dim", head_dim)
        .with("scale", format!("{scale:?}"))
        .with("elem", elem.name())
        .with("enable", elem.enable())
}

/// Invocations of a workgroup of the tiled forward pass.
const TILED_WORKGROUP: usize = 64;

/// The tiled forward pass' shape for head dim `hd`: query rows per workgroup and keys per tile.
/// Invocations per row (`TILED_WORKGROUP / rows`) divide the row's vec4 columns and leave each
/// invocation at least four of them where the head dim allows; the key tile is the largest
/// power of two (≤ 64) that fits beside the query tile and the scores in WebGPU's 16 KiB of
/// workgroup memory.
pub(crate) fn tiled_shape(hd: usize) -> (usize, usize) {
    let hd4 = hd / 4;
    let per_row = [8, 4, 2, 1]
        .into_iter()
        .find(|&t| hd4.is_multiple_of(t) && t <= (hd4 / 4).max(1))
        .unwrap_or(1);
    let rows = TILED_WORKGROUP / per_row;
    let fits = |bc: usize| 4 * (rows * hd + 2 * bc * hd + rows * bc) <= 16 * 1024;
    let tile = [64, 32, 16, 8, 4, 2, 1]
        .into_iter()
        .find(|&bc| fits(bc) && bc >= per_row)
        .unwrap_or(per_row);
    (rows, tile)
}

fn tiled_shader(tokens: usize, head_dim: usize, scale: f32, elem: Elem) -> Wgsl {
    let (rows, tile) = tiled_shape(head_dim);
    let kernel = Wgsl::new(
        "attention_tiled",
        &[include_str!("../../../shaders/attention_tiled.wgsl")],
        TILED_WORKGROUP as u32,
    )
    .with("rows", rows)
    .with("tile", tile);
    with_sizes(kernel, tokens, head_dim, scale, elem)
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
    let rows = match pass {
        Pass::ForwardTiled => tiled_shape(hd).0,
        _ => workgroup(n) as usize,
    };
    let count = CubeCount::Static(n.div_ceil(rows) as u32, bh as u32, 1);
    (shader(pass, n, hd, scale, elem), count)
}

/// The forward pass, `tiled` ([`Pass::ForwardTiled`]) or one row per invocation
/// ([`Pass::Forward`]): lavapipe ran the tiled form at 0.79–0.87× of the other (tiny and vit-b
/// encoders and decoders, `sapling bench kernels`), so the caller picks by adapter (see
/// `Ops::tiled_attention`).
pub(crate) fn forward(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    scale: f32,
    tiled: bool,
) -> (CubeTensor, CubeTensor) {
    let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
    let out = empty(&q, q.meta.shape().clone(), q.dtype);
    // Statistics stay f32 in mixed precision.
    let lse = empty(&q, lse_shape(q.meta.shape()), DType::F32);
    let pass = if tiled {
        Pass::ForwardTiled
    } else {
        Pass::Forward
    };
    let (wgsl, count) = launch_shape(pass, &q, scale);
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
