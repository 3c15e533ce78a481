//! Multi-head softmax attention on the CPU straight from the packed `qkv` rows, forward and
//! backward.
//!
//! Why: the reference splits `[B, N, 3·D]` into q, k, v, reshapes and transposes each to
//! `[B, H, N, hd]` (copies, as the views are strided), scales, multiplies, runs softmax as five
//! element-wise passes and transposes the output back; autodiff then walks all of it again,
//! including writing each of q/k/v's gradients into a zeroed `[B, N, 3·D]`. On a tiny step the
//! copies alone were ~9 % of the calling thread. Here every (batch, head) pair is one rayon
//! task: its q, k, v are read in place through strides, the `N × N` scores are formed by one
//! GEMM (the scale folded in), softmax runs in place on them, and the output GEMM writes straight
//! into the head's columns of `[B, N, D]`. The softmax probabilities are kept for the backward
//! (as the reference keeps them), which writes dq, dk, dv straight into `[B, N, 3·D]`.
//! The reference is the ops layer's split, `softmax(q·kᵀ·scale)·v` and merge (`ops`).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::gelu::exp_nonpositive_with;
use super::lanes;
use super::simd::wide_or_plain;

/// A raw pointer that rayon tasks may share: every task writes a disjoint set of elements
/// (its own head's columns), which the slices' borrow rules cannot express.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: see the type's comment; the pointer outlives the parallel loop that uses it.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// Through a method, so closures capture the `Send` wrapper and not its raw field.
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: callers stay inside the allocation (see each use).
        unsafe { self.0.add(offset) }
    }
}

/// Shapes of one call: batch, tokens, heads, head dim.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub batch: usize,
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl Dims {
    fn width(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// `dst = beta · lhs · rhs` (`accumulate`: `dst += …`) on raw strided matrices, one thread.
///
/// # Safety
/// Every index `ptr + i·rs + j·cs` within the `m × k`, `k × n`, `m × n` extents must be in
/// bounds of its allocation, and `dst` must not alias `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    (dst_rs, dst_cs): (isize, isize),
    lhs: *const f32,
    (lhs_rs, lhs_cs): (isize, isize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (isize, isize),
    beta: f32,
    accumulate: bool,
) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            accumulate,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            1.0,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

wide_or_plain! {
    /// Row-wise softmax of a row-major `[n, n]` block, in place. Each pass over a row
    /// vectorises: the max and the sum run in eight interleaved lanes ([`lanes`]), and e^x is
    /// GELU's branch-free polynomial (`libm`'s `expf`, one call per score, was most of a vit-b
    /// decoder head's softmax).
    fn softmax_rows(p: &mut [f32], n: usize) = softmax_rows_with;
}

#[inline(always)]
fn softmax_rows_with<const F: bool>(p: &mut [f32], n: usize) {
    for row in p.chunks_exact_mut(n) {
        let max = lanes::fold(row, f32::NEG_INFINITY, f32::max);
        row.iter_mut()
            .for_each(|v| *v = exp_nonpositive_with::<F>(*v - max));
        let inv = 1.0 / lanes::fold(row, 0.0, |s, v| s + v);
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// `(out [B, N, D], probs [B, H, N, N])` of softmax attention over `qkv` `[B, N, 3·D]`
/// (q, k, v side by side, heads contiguous within each, as timm's packed projection).
pub fn forward(qkv: &[f32], d: Dims, scale: f32) -> (Vec<f32>, Vec<f32>) {
    let (n, hd, w) = (d.tokens, d.head_dim, d.width());
    assert_eq!(qkv.len(), d.batch * n * 3 * w, "attention: qkv length");
    let (out_len, probs_len) = (d.batch * n * w, d.batch * d.heads * n * n);
    if n == 0 || w == 0 {
        return (vec![0.0; out_len], vec![0.0; probs_len]);
    }
    // Neither is zero-filled first: the products below write every element.
    let (mut out, mut probs) = (Vec::with_capacity(out_len), Vec::with_capacity(probs_len));
    let out_ptr = Shared(out.as_mut_ptr());
    let row3 = 3 * w as isize;
    let slots = &mut probs.spare_capacity_mut()[..probs_len];
    slots.par_chunks_mut(n * n).enumerate().for_each(|(bh, p)| {
        let (b, h) = (bh / d.heads, bh % d.heads);
        let q = qkv[b * n * 3 * w + h * hd..].as_ptr();
        // SAFETY: q, k, v are `n × hd` blocks with row stride 3·D inside `qkv` (length
        // checked above); `p` is this task's own `n × n` block; the output block is this
        // head's `hd` columns of batch `b`, written by no other task.
        unsafe {
            let k = q.add(w);
            let v = q.add(2 * w);
            gemm(
                (n, n, hd),
                p.as_mut_ptr().cast(),
                (n as isize, 1),
                q,
                (row3, 1),
                k,
                (1, row3),
                scale,
                false,
            );
            // The product above wrote all of `p`.
            let p = &mut *(p as *mut [MaybeUninit<f32>] as *mut [f32]);
            softmax_rows(p, n);
            let o = out_ptr.at(b * n * w + h * hd);
            gemm(
                (n, hd, n),
                o,
                (w as isize, 1),
                p.as_ptr(),
                (n as isize, 1),
                v,
                (row3, 1),
                1.0,
                false,
            );
        }
    });
    // SAFETY: each (batch, head) task wrote its whole `n × n` block of `probs` and its head's
    // columns of every row of `out` (products that do not accumulate write every element).
    unsafe {
        out.set_len(out_len);
        probs.set_len(probs_len);
    }
    (out, probs)
}

/// `dqkv [B, N, 3·D]` from the forward's `qkv` and `probs` and the output gradient `[B, N, D]`.
pub fn backward(qkv: &[f32], probs: &[f32], grad: &[f32], d: Dims, scale: f32) -> Vec<f32> {
    let (n, hd, w) = (d.tokens, d.head_dim, d.width());
    assert_eq!(
        qkv.len(),
        d.batch * n * 3 * w,
        "attention backward: qkv length"
    );
    assert_eq!(
        probs.len(),
        d.batch * d.heads * n * n,
        "attention backward: probs length"
    );
    assert_eq!(
        grad.len(),
        d.batch * n * w,
        "attention backward: grad length"
    );
    if n == 0 || w == 0 {
        return vec![0.0; qkv.len()];
    }
    // Not zero-filled first: the products below write every element.
    let mut dqkv = Vec::with_capacity(qkv.len());
    let dqkv_ptr = Shared(dqkv.as_mut_ptr());
    let (row3, row) = (3 * w as isize, w as isize);
    probs.par_chunks(n * n).enumerate().for_each_init(
        || vec![0.0f32; n * n],
        |ds, (bh, p)| {
            let (b, h) = (bh / d.heads, bh % d.heads);
            let base = b * n * 3 * w + h * hd;
            let go = grad[b * n * w + h * hd..].as_ptr();
            // SAFETY: as in `forward`; `ds` is this task's scratch; dq, dk, dv are this
            // head's columns of batch `b` in `dqkv`, written by no other task.
            unsafe {
                let q = qkv.as_ptr().add(base);
                let (k, v) = (q.add(w), q.add(2 * w));
                let dq = dqkv_ptr.at(base);
                let (dk, dv) = (dq.add(w), dq.add(2 * w));
                // dV = Pᵀ·dO
                gemm(
                    (n, hd, n),
                    dv,
                    (row3, 1),
                    p.as_ptr(),
                    (1, n as isize),
                    go,
                    (row, 1),
                    1.0,
                    false,
                );
                // dP = dO·Vᵀ, then dS = P ∘ (dP − rowsum(dP ∘ P))
                gemm(
                    (n, n, hd),
                    ds.as_mut_ptr(),
                    (n as isize, 1),
                    go,
                    (row, 1),
                    v,
                    (1, row3),
                    1.0,
                    false,
                );
                for (ds, p) in ds.chunks_exact_mut(n).zip(p.chunks_exact(n)) {
                    let dot = lanes::sum(ds, p, |a, b| a * b);
                    ds.iter_mut().zip(p).for_each(|(g, &p)| *g = p * (*g - dot));
                }
                // dQ = scale · dS·K, dK = scale · dSᵀ·Q
                gemm(
                    (n, hd, n),
                    dq,
                    (row3, 1),
                    ds.as_ptr(),
                    (n as isize, 1),
                    k,
                    (row3, 1),
                    scale,
                    false,
                );
                gemm(
                    (n, hd, n),
                    dk,
                    (row3, 1),
                    ds.as_ptr(),
                    (1, n as isize),
                    q,
                    (row3, 1),
                    scale,
                    false,
                );
            }
        },
    );
    // SAFETY: the (batch, head) tasks together wrote every column of every row of dq, dk and
    // dv, with products that do not accumulate.
    unsafe { dqkv.set_len(qkv.len()) };
    dqkv
}

#[cfg(test)]
mod tests {
    use super::super::simd::{FUSED_BASELINE, wide};
    use super::*;

    /// The chosen copy (AVX2 + FMA where this CPU has it) fuses the exp's steps, so it rounds
    /// differently from the plain copy, within 1e-6 relative, and its rows sum to one. 67
    /// columns leave a ragged tail of lanes, and the scores span e⁻⁸⁷ (clamped) to 1.
    #[test]
    fn chosen_copy_agrees_with_the_plain_copy() {
        let n = 67;
        let scores: Vec<f32> = (0..n * n).map(|i| (i as f32 * 0.61).sin() * 45.0).collect();
        let (mut plain, mut chosen) = (scores.clone(), scores);
        softmax_rows_with::<FUSED_BASELINE>(&mut plain, n);
        softmax_rows(&mut chosen, n);
        for (a, b) in plain.iter().zip(&chosen) {
            assert!(
                (a - b).abs() <= 1e-6 * a.abs().max(1e-30),
                "{a} vs {b} (wide: {})",
                wide()
            );
        }
        for row in chosen.chunks_exact(n) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }
}
