//! Layer norm over the last dimension on the CPU, forward and backward, one pass per row.
//!
//! Why: burn's layer norm on Flex is composed of element-wise ops and reductions (mean,
//! centre, square, mean, add ε, square root, divide, scale, shift), each a full pass over
//! `[B, N, D]` on the calling thread with a fresh output, and autodiff differentiates every one
//! of them. Here each row is normalised in cache on rayon's threads; the forward keeps the
//! row's mean and 1/σ for the backward, which is the closed form
//! `dx = (g − mean(g) − x̂·mean(g·x̂)) / σ` with `g = dy·γ`. The reference is burn's
//! `layer_norm` (`ops`). Variance is the biased one, as in PyTorch and burn.

use rayon::prelude::*;

/// Rows per rayon task: enough work to amortise the split.
fn rows_per_task(m: usize, d: usize) -> usize {
    let by_threads = m.div_ceil(4 * rayon::current_num_threads());
    by_threads.max((1 << 14) / d.max(1)).max(1)
}

/// `(y, mean, rstd)` of `x [m, d]` with scale `gamma` and shift `beta` `[d]`.
pub fn forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    m: usize,
    d: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), m * d, "layer norm: x length");
    assert!(
        gamma.len() == d && beta.len() == d,
        "layer norm: γ/β length"
    );
    let (mut mean, mut rstd) = (vec![0.0; m], vec![0.0; m]);
    if m == 0 || d == 0 {
        return (vec![0.0; m * d], mean, rstd);
    }
    let r = rows_per_task(m, d);
    // Not zero-filled first: every row is written below.
    let mut y = Vec::with_capacity(m * d);
    y.spare_capacity_mut()[..m * d]
        .par_chunks_mut(r * d)
        .zip(x.par_chunks(r * d))
        .zip(mean.par_chunks_mut(r).zip(rstd.par_chunks_mut(r)))
        .for_each(|((y, x), (mean, rstd))| {
            for (((y, x), mu), rs) in y
                .chunks_exact_mut(d)
                .zip(x.chunks_exact(d))
                .zip(mean.iter_mut())
                .zip(rstd.iter_mut())
            {
                let m1 = x.iter().sum::<f32>() / d as f32;
                let var = x.iter().map(|v| (v - m1) * (v - m1)).sum::<f32>() / d as f32;
                let s = 1.0 / (var + eps).sqrt();
                for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
                    y.write((x - m1) * s * g + b);
                }
                (*mu, *rs) = (m1, s);
            }
        });
    // SAFETY: the chunks cover all m·d elements and each row's d elements were written.
    unsafe { y.set_len(m * d) };
    (y, mean, rstd)
}

/// `(dx [m, d], dγ [d], dβ [d])` given the forward's input, γ, mean and 1/σ.
pub fn backward(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    m: usize,
    d: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert!(
        x.len() == m * d && dy.len() == m * d,
        "layer norm backward: x/dy length"
    );
    assert!(
        mean.len() == m && rstd.len() == m,
        "layer norm backward: mean/rstd length"
    );
    if m == 0 || d == 0 {
        return (vec![0.0; m * d], vec![0.0; d], vec![0.0; d]);
    }
    let r = rows_per_task(m, d);
    // Not zero-filled first: every row is written below. Each task returns its rows' share of
    // dγ and dβ; the shares are added after.
    let mut dx = Vec::with_capacity(m * d);
    let (dgamma, dbeta) = dx.spare_capacity_mut()[..m * d]
        .par_chunks_mut(r * d)
        .zip(x.par_chunks(r * d).zip(dy.par_chunks(r * d)))
        .zip(mean.par_chunks(r).zip(rstd.par_chunks(r)))
        .map(|((dx, (x, dy)), (mean, rstd))| {
            let (mut dg, mut db) = (vec![0.0f32; d], vec![0.0f32; d]);
            let rows = dx
                .chunks_exact_mut(d)
                .zip(x.chunks_exact(d).zip(dy.chunks_exact(d)));
            for ((dx, (x, dy)), (&mu, &s)) in rows.zip(mean.iter().zip(rstd)) {
                let (mut sum_g, mut sum_gx) = (0.0f32, 0.0f32);
                for i in 0..d {
                    let xhat = (x[i] - mu) * s;
                    let g = dy[i] * gamma[i];
                    sum_g += g;
                    sum_gx += g * xhat;
                    dg[i] += dy[i] * xhat;
                    db[i] += dy[i];
                }
                let (mean_g, mean_gx) = (sum_g / d as f32, sum_gx / d as f32);
                for i in 0..d {
                    let xhat = (x[i] - mu) * s;
                    dx[i].write((dy[i] * gamma[i] - mean_g - xhat * mean_gx) * s);
                }
            }
            (dg, db)
        })
        .reduce(
            || (vec![0.0; d], vec![0.0; d]),
            |(mut g, mut b), (g2, b2)| {
                g.iter_mut().zip(&g2).for_each(|(a, v)| *a += v);
                b.iter_mut().zip(&b2).for_each(|(a, v)| *a += v);
                (g, b)
            },
        );
    // SAFETY: the chunks cover all m·d elements and each row's d elements were written.
    unsafe { dx.set_len(m * d) };
    (dx, dgamma, dbeta)
}
