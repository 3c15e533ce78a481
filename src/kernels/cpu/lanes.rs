//! Reductions in eight interleaved lanes, for the kernels' per-row sums.
//!
//! Why: a sum kept in one running value is a chain of dependent additions, a few cycles each,
//! that the compiler may not reorder (floating-point addition is not associative), and it keeps
//! the loop around it from vectorising. Eight running values, folded together at the end,
//! vectorise (8 wide where a kernel is compiled for AVX2). The result rounds differently from a
//! sequential sum, identically from run to run.

const LANES: usize = 8;

/// `x` folded by `f` from `init`, in lanes, then the lanes folded in order.
#[inline(always)]
pub fn fold(x: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(init, |a, &v| f(a, v));
    for c in chunks {
        for i in 0..LANES {
            acc[i] = f(acc[i], c[i]);
        }
    }
    f(acc.into_iter().fold(init, &f), tail)
}

/// `Σ f(x[i])`, in lanes.
#[inline(always)]
pub fn total(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    sum(x, x, |v, _| f(v))
}

/// `Σ f(a[i], b[i])` over the common length, in lanes.
#[inline(always)]
pub fn sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| f(x, y))
        .sum();
    for (ca, cb) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += f(ca[i], cb[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `(Σ f(a, b, c), Σ g(a, b, c))` over three slices at once, in lanes.
#[inline(always)]
pub fn sum_pair(
    (a, b, c): (&[f32], &[f32], &[f32]),
    f: impl Fn(f32, f32, f32) -> f32,
    g: impl Fn(f32, f32, f32) -> f32,
) -> (f32, f32) {
    let (mut fs, mut gs) = ([0.0f32; LANES], [0.0f32; LANES]);
    let (ca, cb, cc) = (
        a.chunks_exact(LANES),
        b.chunks_exact(LANES),
        c.chunks_exact(LANES),
    );
    let (mut f_tail, mut g_tail) = (0.0f32, 0.0f32);
    for ((&x, &y), &z) in ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .zip(cc.remainder())
    {
        f_tail += f(x, y, z);
        g_tail += g(x, y, z);
    }
    for ((x, y), z) in ca.zip(cb).zip(cc) {
        for i in 0..LANES {
            fs[i] += f(x[i], y[i], z[i]);
            gs[i] += g(x[i], y[i], z[i]);
        }
    }
    (
        fs.iter().sum::<f32>() + f_tail,
        gs.iter().sum::<f32>() + g_tail,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn lanes_agree_with_f64_sums_on_odd_lengths() {
        for n in [0, 1, 7, 8, 9, 100, 1001] {
            let a: Vec<f32> = (0..n)
                .map(|i| ((i * 13 % 29) as f32 - 14.0) * 0.1)
                .collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1).collect();
            let want: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            let got = super::sum(&a, &b, |x, y| x * y) as f64;
            assert!((got - want).abs() < 1e-4, "n = {n}: {got} vs {want}");
            let (s, sq) = super::sum_pair((&a, &b, &a), |x, _, _| x, |x, y, z| x * y * z);
            let want_s: f64 = a.iter().map(|&x| x as f64).sum();
            let want_sq: f64 = a.iter().zip(&b).map(|(&x, &y)| (x * x * y) as f64).sum();
            assert!((s as f64 - want_s).abs() < 1e-4 && (sq as f64 - want_sq).abs() < 1e-4);
            let max = super::fold(&a, f32::NEG_INFINITY, f32::max);
            assert_eq!(max, a.iter().copied().fold(f32::NEG_INFINITY, f32::max));
        }
    }
}
