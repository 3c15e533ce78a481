//! Exact (erf) GELU on the CPU, forward and backward, on every core.
//!
//! Why: on Flex, burn's GELU calls `libm::erff` one element at a time on the calling thread,
//! forward and backward; it was the largest single item of a tiny training step's serial time
//! (≈ 16 % of all CPU samples, while the matmuls ran on both cores). Here `erf` is a rational
//! function and `exp` a Cephes polynomial, both branch-free so the loops vectorise, and the
//! elements are split across rayon's threads. The reference is burn's own GELU (`ops`).
//!
//! The loops are compiled twice on x86-64 (`simd::wide_or_plain!`): in the AVX2 + FMA copy each
//! polynomial step is one fused multiply-add.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::simd::{FUSED_BASELINE, wide_or_plain};
use super::{PARALLEL_MIN, rows_per_task};

/// A chunk of a kernel's output, written before it is read.
type Out<'a> = &'a mut [MaybeUninit<f32>];

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π).
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// `a · b + c`, fused (one rounding) where `FUSED`: only instantiated so where the CPU has FMA,
/// since without it `mul_add` is a slow library call.
#[inline(always)]
fn madd<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FUSED { a.mul_add(b, c) } else { a * b + c }
}

/// erf as Eigen's / XLA's `generic_fast_erf_float`: an odd/even rational function on [-4, 4]
/// (beyond it erf is ±1 in f32), a few ulp from the true value.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    erf_with::<FUSED_BASELINE>(x)
}

#[inline(always)]
#[allow(clippy::excessive_precision)]
fn erf_with<const F: bool>(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = madd::<F>(x2, -2.726_142_258_013_06e-10, 2.770_681_424_959_02e-08);
    p = madd::<F>(x2, p, -2.101_024_020_825_08e-06);
    p = madd::<F>(x2, p, -5.692_506_394_623_46e-05);
    p = madd::<F>(x2, p, -7.349_906_303_268_55e-04);
    p = madd::<F>(x2, p, -2.954_599_808_540_25e-03);
    p = madd::<F>(x2, p, -1.609_603_332_624_15e-02);
    let mut q = madd::<F>(x2, -1.456_607_184_649_96e-05, -2.133_740_552_789_05e-04);
    q = madd::<F>(x2, q, -1.682_826_974_382_03e-03);
    q = madd::<F>(x2, q, -7.373_329_167_204_68e-03);
    q = madd::<F>(x2, q, -1.426_473_905_141_89e-02);
    x * p / q
}

/// e^x for x ≤ 0 (Cephes `expf`: x = n·ln2 + r, a degree-6 polynomial in r, 2ⁿ from the
/// exponent bits). Inputs below -87 give e^-87 ≈ 1.6e-38 instead of smaller values or 0,
/// which is below anything a gradient carries.
#[cfg(test)]
fn exp_nonpositive(x: f32) -> f32 {
    exp_nonpositive_with::<FUSED_BASELINE>(x)
}

#[inline(always)]
#[allow(clippy::excessive_precision)]
pub(super) fn exp_nonpositive_with<const F: bool>(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer, branch-free
    let x = x.clamp(-87.0, 0.0);
    let n = madd::<F>(x, std::f32::consts::LOG2_E, ROUND) - ROUND;
    let r = madd::<F>(n, 2.121_944_4e-4, madd::<F>(n, -0.693_359_375, x));
    let r2 = r * r;
    let mut p = madd::<F>(1.987_569_15e-4, r, 1.398_199_950_7e-3);
    p = madd::<F>(p, r, 8.333_451_907_3e-3);
    p = madd::<F>(p, r, 4.166_579_589_4e-2);
    p = madd::<F>(p, r, 1.666_666_545_9e-1);
    p = madd::<F>(p, r, 5.000_000_120_1e-1);
    let e = madd::<F>(p, r2, r) + 1.0;
    e * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

#[inline(always)]
fn gelu_one<const F: bool>(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_with::<F>(x * FRAC_1_SQRT_2))
}

#[inline(always)]
fn gelu_grad_one<const F: bool>(x: f32, g: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf_with::<F>(x * FRAC_1_SQRT_2));
    let pdf = INV_SQRT_2PI * exp_nonpositive_with::<F>(-0.5 * x * x);
    g * madd::<F>(x, pdf, cdf)
}

/// The element loops, written once and inlined into each instruction set's copy, so the whole
/// polynomial is compiled (and vectorised) for that copy's target features.
#[inline(always)]
fn forward_chunk_with<const F: bool>(x: &[f32], out: &mut [MaybeUninit<f32>]) {
    for (o, &x) in out.iter_mut().zip(x) {
        o.write(gelu_one::<F>(x));
    }
}

#[inline(always)]
fn backward_chunk_with<const F: bool>(x: &[f32], g: &[f32], out: &mut [MaybeUninit<f32>]) {
    for ((o, &x), &g) in out.iter_mut().zip(x).zip(g) {
        o.write(gelu_grad_one::<F>(x, g));
    }
}

wide_or_plain! { fn forward_chunk(x: &[f32], out: &mut [MaybeUninit<f32>]) = forward_chunk_with; }
wide_or_plain! {
    fn backward_chunk(x: &[f32], g: &[f32], out: &mut [MaybeUninit<f32>]) = backward_chunk_with;
}

/// `out[i] = gelu(x[i])`, every element of `out` written.
pub fn forward(x: &[f32], out: &mut [MaybeUninit<f32>]) {
    assert_eq!(x.len(), out.len(), "gelu: input and output lengths differ");
    let run = |(o, x): (Out, &[f32])| forward_chunk(x, o);
    if x.len() < PARALLEL_MIN {
        return run((out, x));
    }
    let c = rows_per_task(x.len(), 1);
    out.par_chunks_mut(c).zip(x.par_chunks(c)).for_each(run);
}

/// `out[i] = grad[i] · gelu'(x[i])`, every element of `out` written.
pub fn backward(x: &[f32], grad: &[f32], out: &mut [MaybeUninit<f32>]) {
    assert_eq!(
        x.len(),
        grad.len(),
        "gelu backward: input and gradient lengths differ"
    );
    assert_eq!(
        x.len(),
        out.len(),
        "gelu backward: input and output lengths differ"
    );
    let run = |(o, (x, g)): (Out, (&[f32], &[f32]))| backward_chunk(x, g, o);
    if x.len() < PARALLEL_MIN {
        return run((out, (x, grad)));
    }
    let c = rows_per_task(x.len(), 1);
    out.par_chunks_mut(c)
        .zip(x.par_chunks(c).zip(grad.par_chunks(c)))
        .for_each(run);
}

#[cfg(test)]
mod tests {
    use super::super::simd::wide;
    use super::*;

    /// erf(x) = 1 - erfc(x) by its continued fraction would be another approximation; compare
    /// with a 64-bit series instead (exact to f64 rounding for |x| ≤ 4).
    fn erf_f64(x: f64) -> f64 {
        // Maclaurin series of erf: 2/√π Σ (-1)ⁿ x^(2n+1) / (n! (2n+1)).
        let mut sum = 0.0;
        let mut term = x; // (-1)ⁿ x^(2n+1) / n!
        for n in 0..200 {
            sum += term / (2 * n + 1) as f64;
            term *= -x * x / (n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_and_exp_are_within_a_few_ulp() {
        let mut worst_erf = 0.0f64;
        let mut worst_exp = 0.0f64;
        for i in -4000i32..=4000 {
            let x = i as f32 * 1e-3;
            let want = erf_f64(x as f64);
            worst_erf = worst_erf.max((erf(x) as f64 - want).abs());
            let e = -(i.abs() as f32) * 0.02; // 0 .. -80
            let want = (e as f64).exp();
            worst_exp = worst_exp.max(((exp_nonpositive(e) as f64 - want) / want).abs());
        }
        assert!(worst_erf < 5e-7, "erf: max abs error {worst_erf}");
        assert!(worst_exp < 5e-7, "exp: max rel error {worst_exp}");
        assert!((erf(9.0) - 1.0).abs() < 1e-6 && (erf(-9.0) + 1.0).abs() < 1e-6);
    }

    /// The AVX2 + FMA copy (where this CPU has it) fuses the polynomials' steps, so it rounds
    /// differently from the plain copy, within 1e-6.
    #[test]
    fn chosen_copy_agrees_with_the_plain_copy() {
        let x: Vec<f32> = (-6000..6000).map(|i| i as f32 * 1.1e-3).collect();
        let g: Vec<f32> = x.iter().map(|v| 1.0 - 0.3 * v).collect();
        let n = x.len();
        let run = |f: &dyn Fn(&mut [MaybeUninit<f32>])| {
            let mut out = vec![MaybeUninit::new(0.0); n];
            f(&mut out);
            out.iter()
                .map(|v| unsafe { v.assume_init() })
                .collect::<Vec<f32>>()
        };
        let (plain, chosen) = (
            run(&|o| forward_chunk_with::<FUSED_BASELINE>(&x, o)),
            run(&|o| forward_chunk(&x, o)),
        );
        let close = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .all(|(a, b)| (a - b).abs() <= 1e-6 * (1.0 + a.abs()))
        };
        assert!(close(&plain, &chosen), "forward differs (wide: {})", wide());
        let (plain, chosen) = (
            run(&|o| backward_chunk_with::<FUSED_BASELINE>(&x, &g, o)),
            run(&|o| backward_chunk(&x, &g, o)),
        );
        assert!(
            close(&plain, &chosen),
            "backward differs (wide: {})",
            wide()
        );
    }

    #[test]
    fn gradient_matches_finite_differences() {
        for i in -60..=60 {
            let x = i as f32 * 0.1;
            let h = 1e-2f64;
            let f = |x: f64| 0.5 * x * (1.0 + erf_f64(x / std::f64::consts::SQRT_2));
            let want = (f(x as f64 + h) - f(x as f64 - h)) / (2.0 * h);
            let got = gelu_grad_one::<FUSED_BASELINE>(x, 1.0) as f64;
            assert!((got - want).abs() < 1e-4, "x = {x}: {got} vs {want}");
        }
    }
}
