//! `x·W + b` on the CPU as single 2-D matrix products, forward and backward.
//!
//! Why: on Flex under autodiff, burn's linear is a tracked matmul plus a broadcast bias add.
//! Depending on burn's transform policy the product is either batched against the broadcast
//! weight (its backward then forms a weight gradient per batch element and sums them) or folded
//! into one 2-D product; the bias add is another pass over the output and its gradient another
//! reduction; and every Flex matmul output is allocated as a zeroed byte vector that is then
//! re-allocated and copied to reach 16-byte alignment (≈ 30 % of the calling thread's time in
//! a tiny step). Here the rows of all batch elements are always one `[M, in]` matrix
//! (M = B·N): the forward is one GEMM that starts from the bias, the weight gradient one GEMM
//! with `M` as its inner dimension, the input gradient one GEMM against the transposed weight
//! (read through strides, never copied), outputs are plain `Vec<f32>`s. The reference is
//! burn's `linear` (`ops`).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::written;

/// From this many multiply-adds on, a product is split across rayon's threads (Flex's own
/// threshold: 192³).
const PARALLEL_MIN_OPS: usize = 192 * 192 * 192;

fn parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    if m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MIN_OPS {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    }
}

/// The row-major `[rows, cols]` matrix in `data`, or its transpose when `transposed`.
struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    transposed: bool,
}

impl Mat<'_> {
    /// (column stride, row stride) of the matrix as used in the product.
    fn strides(&self) -> (isize, isize) {
        if self.transposed {
            (self.cols as isize, 1)
        } else {
            (1, self.cols as isize)
        }
    }
    fn shape(&self) -> (usize, usize) {
        if self.transposed {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }
}

/// `dst = lhs·rhs`, or `dst += lhs·rhs` when `accumulate`; `dst` row-major `[m, n]`. Without
/// `accumulate` gemm only writes `dst` (a zero `alpha` is never multiplied into it), so it may
/// be uninitialised; with it, `dst` must be initialised.
fn matmul(dst: &mut [MaybeUninit<f32>], lhs: &Mat, rhs: &Mat, accumulate: bool) {
    let (m, k) = lhs.shape();
    let (k2, n) = rhs.shape();
    assert_eq!(k, k2, "linear: inner dimensions differ");
    assert_eq!(dst.len(), m * n, "linear: output has the wrong length");
    assert_eq!(lhs.data.len(), lhs.rows * lhs.cols, "linear: lhs length");
    assert_eq!(rhs.data.len(), rhs.rows * rhs.cols, "linear: rhs length");
    let (lhs_cs, lhs_rs) = lhs.strides();
    let (rhs_cs, rhs_rs) = rhs.strides();
    // SAFETY: the asserts above bound every index gemm forms from (m, n, k) and the strides.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().cast::<f32>(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.data.as_ptr(),
            rhs_cs,
            rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(m, n, k),
        );
    }
}

/// `x [m, din] · w [din, dout] + b [dout]` → `[m, dout]`.
pub fn forward(x: &[f32], w: &[f32], b: &[f32], m: usize, din: usize, dout: usize) -> Vec<f32> {
    assert_eq!(b.len(), dout, "linear: bias length");
    let x = Mat {
        data: x,
        rows: m,
        cols: din,
        transposed: false,
    };
    let w = Mat {
        data: w,
        rows: din,
        cols: dout,
        transposed: false,
    };
    // SAFETY: every row is first set to the bias, then the product is added to it.
    unsafe {
        written(m * dout, |out| {
            fill_rows(out, b);
            matmul(out, &x, &w, true);
        })
    }
}

/// Rows per rayon task when `rows` rows are split over every thread: a few tasks per thread, at
/// least 64 rows each.
fn rows_per_task(rows: usize) -> usize {
    rows.div_ceil(4 * rayon::current_num_threads()).max(64)
}

/// Every `b.len()`-long row of `out` set to `b`, row blocks on every thread (the output of a
/// forward GEMM is a pass over memory that the calling thread alone used to make).
fn fill_rows(out: &mut [MaybeUninit<f32>], b: &[f32]) {
    if b.is_empty() {
        return;
    }
    out.par_chunks_mut(rows_per_task(out.len() / b.len()) * b.len())
        .for_each(|block| {
            for row in block.chunks_exact_mut(b.len()) {
                row.write_copy_of_slice(b);
            }
        });
}

/// `dy [m, dout] · wᵀ` → the input gradient `[m, din]`.
pub fn backward_input(dy: &[f32], w: &[f32], m: usize, din: usize, dout: usize) -> Vec<f32> {
    let dy = Mat {
        data: dy,
        rows: m,
        cols: dout,
        transposed: false,
    };
    let wt = Mat {
        data: w,
        rows: din,
        cols: dout,
        transposed: true,
    };
    // SAFETY: a product that does not accumulate writes every element of its output.
    unsafe { written(m * din, |dx| matmul(dx, &dy, &wt, false)) }
}

/// `(xᵀ · dy [din, dout], Σ_rows dy [dout])`: the weight and bias gradients.
pub fn backward_params(
    x: &[f32],
    dy: &[f32],
    m: usize,
    din: usize,
    dout: usize,
) -> (Vec<f32>, Vec<f32>) {
    let xt = Mat {
        data: x,
        rows: m,
        cols: din,
        transposed: true,
    };
    let dym = Mat {
        data: dy,
        rows: m,
        cols: dout,
        transposed: false,
    };
    // SAFETY: a product that does not accumulate writes every element of its output.
    let dw = unsafe { written(din * dout, |dw| matmul(dw, &xt, &dym, false)) };
    (dw, column_sums(dy, m, dout))
}

/// Σ over the rows of a row-major `[m, n]` matrix, row blocks on every thread.
fn column_sums(a: &[f32], m: usize, n: usize) -> Vec<f32> {
    let add_rows = |rows: &[f32]| {
        let mut acc = vec![0.0f32; n];
        for row in rows.chunks_exact(n) {
            for (s, &v) in acc.iter_mut().zip(row) {
                *s += v;
            }
        }
        acc
    };
    if n == 0 || m == 0 {
        return vec![0.0; n];
    }
    a.par_chunks(rows_per_task(m) * n).map(add_rows).reduce(
        || vec![0.0; n],
        |mut s, p| {
            s.iter_mut().zip(&p).for_each(|(s, p)| *s += p);
            s
        },
    )
}

pub use crate::kernels::host::transpose;

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
            }
        }
        out
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "[{i}]: {x} vs {y}");
        }
    }

    #[test]
    fn products_match_naive_loops() {
        // Sizes on both sides of the threading threshold, odd on purpose.
        for (m, din, dout) in [(5, 3, 7), (301, 97, 203)] {
            let x: Vec<f32> = (0..m * din)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
                .collect();
            let w: Vec<f32> = (0..din * dout)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
                .collect();
            let b: Vec<f32> = (0..dout).map(|i| i as f32 * 0.01).collect();
            let dy: Vec<f32> = (0..m * dout)
                .map(|i| ((i * 3 % 17) as f32 - 8.0) * 0.1)
                .collect();

            let mut want = naive(&x, &w, m, din, dout);
            want.chunks_mut(dout)
                .for_each(|r| r.iter_mut().zip(&b).for_each(|(v, b)| *v += b));
            close(&forward(&x, &w, &b, m, din, dout), &want);

            let want_dx = naive(&dy, &transpose(&w, din, dout), m, dout, din);
            close(&backward_input(&dy, &w, m, din, dout), &want_dx);

            let (dw, db) = backward_params(&x, &dy, m, din, dout);
            close(&dw, &naive(&transpose(&x, m, din), &dy, din, m, dout));
            let want_db: Vec<f32> = (0..dout)
                .map(|j| (0..m).map(|i| dy[i * dout + j]).sum())
                .collect();
            close(&db, &want_db);
        }
    }
}
