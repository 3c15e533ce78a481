//! Layer norm over the last dimension on the CPU, forward and backward, one pass per row.
//!
//! Why: burn's layer norm on Flex is composed of element-wise ops and reductions (mean,
//! centre, square, mean, add ε, square root, divide, scale, shift), each a full pass over
//! `[B, N, D]` on the calling thread with a fresh output, and autodiff differentiates every one
//! of them. Here each row is normalised in cache on rayon's threads; the forward keeps the
//! row's mean and 1/σ for the backward, which is the closed form
//! `dx = (g − mean(g) − x̂·mean(g·x̂)) / σ` with `g = dy·γ`. The reference is burn's
//! `layer_norm` (`ops`). Variance is the biased one, as in PyTorch and burn.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::simd::wide_or_plain;
use super::{lanes, rows_per_task};

/// One task's rows of the forward: `(y, x, mean, rstd)`.
type ForwardRows<'a> = (
    &'a mut [MaybeUninit<f32>],
    &'a [f32],
    &'a mut [f32],
    &'a mut [f32],
);

/// The row loops, compiled for the baseline and for AVX2 (`wide_or_plain!` below) because the
/// row sums in eight [`lanes`] vectorise 8 wide there. `F` is unused: nothing here fuses, so
/// both copies give the same bits (the sums' order is the lanes', not the vector width's).
#[inline(always)]
fn forward_rows_with<const F: bool>(
    rows: ForwardRows,
    gamma: &[f32],
    beta: &[f32],
    d: usize,
    eps: f32,
) {
    let (y, x, mean, rstd) = rows;
    for (((y, x), mu), rs) in y
        .chunks_exact_mut(d)
        .zip(x.chunks_exact(d))
        .zip(mean.iter_mut())
        .zip(rstd.iter_mut())
    {
        let m1 = lanes::total(x, |v| v) / d as f32;
        let var = lanes::total(x, |v| (v - m1) * (v - m1)) / d as f32;
        let s = 1.0 / (var + eps).sqrt();
        for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
            y.write((x - m1) * s * g + b);
        }
        (*mu, *rs) = (m1, s);
    }
}

/// One task's rows of the backward: `(dx, x, dy, mean, rstd)`.
type BackwardRows<'a> = (
    &'a mut [MaybeUninit<f32>],
    &'a [f32],
    &'a [f32],
    &'a [f32],
    &'a [f32],
);

/// As [`forward_rows_with`]: `F` is unused, and both copies give the same bits.
#[inline(always)]
fn backward_rows_with<const F: bool>(
    rows: BackwardRows,
    gamma: &[f32],
    dg: &mut [f32],
    db: &mut [f32],
    d: usize,
) {
    let (dx, x, dy, mean, rstd) = rows;
    let rows = dx
        .chunks_exact_mut(d)
        .zip(x.chunks_exact(d).zip(dy.chunks_exact(d)));
    for ((dx, (x, dy)), (&mu, &s)) in rows.zip(mean.iter().zip(rstd)) {
        // Σ g and Σ g·x̂, with g = dy·γ and x̂ = (x − μ)·σ⁻¹.
        let (sum_g, sum_gx) = lanes::sum_pair(
            (x, dy, gamma),
            |_, dy, gamma| dy * gamma,
            |x, dy, gamma| dy * gamma * ((x - mu) * s),
        );
        let (mean_g, mean_gx) = (sum_g / d as f32, sum_gx / d as f32);
        let sums = dg.iter_mut().zip(db.iter_mut());
        for ((((dx, &x), &dy), &gamma), (dg, db)) in
            dx.iter_mut().zip(x).zip(dy).zip(gamma).zip(sums)
        {
            let xhat = (x - mu) * s;
            *dg += dy * xhat;
            *db += dy;
            dx.write((dy * gamma - mean_g - xhat * mean_gx) * s);
        }
    }
}

wide_or_plain! {
    fn forward_rows(rows: ForwardRows, gamma: &[f32], beta: &[f32], d: usize, eps: f32)
        = forward_rows_with;
}
wide_or_plain! {
    fn backward_rows(rows: BackwardRows, gamma: &[f32], dg: &mut [f32], db: &mut [f32], d: usize)
        = backward_rows_with;
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
            let rows = (y, x, mean, rstd);
            forward_rows(rows, gamma, beta, d, eps)
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
    assert_eq!(gamma.len(), d, "layer norm backward: γ length");
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
            let rows = (dx, x, dy, mean, rstd);
            backward_rows(rows, gamma, &mut dg, &mut db, d);
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

#[cfg(test)]
mod tests {
    use super::super::simd::{FUSED_BASELINE, wide};
    use super::*;

    /// The chosen copy (AVX2 where this CPU has it) gives the plain copy's bits: the sums' order
    /// is the lanes', whatever the vector width. 203 columns leave a ragged tail of lanes.
    #[test]
    fn chosen_copy_gives_the_plain_copys_bits() {
        let (m, d) = (9, 203);
        let wave = |k: usize, a: f32| (0..k).map(|i| (i as f32 * a).sin() * 3.0 + 0.5).collect();
        let (x, dy): (Vec<f32>, Vec<f32>) = (wave(m * d, 0.37), wave(m * d, 1.13));
        let (gamma, beta): (Vec<f32>, Vec<f32>) = (wave(d, 0.7), wave(d, 0.2));
        let bits = |v: Vec<MaybeUninit<f32>>| -> Vec<u32> {
            v.iter()
                .map(|v| unsafe { v.assume_init() }.to_bits())
                .collect()
        };
        let forward = |chosen: bool| {
            let mut y = vec![MaybeUninit::new(0.0); m * d];
            let (mut mean, mut rstd) = (vec![0.0; m], vec![0.0; m]);
            let rows = (&mut y[..], &x[..], &mut mean[..], &mut rstd[..]);
            if chosen {
                forward_rows(rows, &gamma, &beta, d, 1e-6)
            } else {
                forward_rows_with::<FUSED_BASELINE>(rows, &gamma, &beta, d, 1e-6)
            }
            (bits(y), mean, rstd)
        };
        let (plain, chosen) = (forward(false), forward(true));
        assert!(plain == chosen, "forward differs (wide: {})", wide());
        let (_, mean, rstd) = plain;
        let backward = |chosen: bool| {
            let mut dx = vec![MaybeUninit::new(0.0); m * d];
            let (mut dg, mut db) = (vec![0.0; d], vec![0.0; d]);
            let rows = (&mut dx[..], &x[..], &dy[..], &mean[..], &rstd[..]);
            if chosen {
                backward_rows(rows, &gamma, &mut dg, &mut db, d)
            } else {
                backward_rows_with::<FUSED_BASELINE>(rows, &gamma, &mut dg, &mut db, d)
            }
            (bits(dx), dg, db)
        };
        let (plain, chosen) = (backward(false), backward(true));
        assert!(plain == chosen, "backward differs (wide: {})", wide());
    }
}
