//! `Σ x²` of a tensor on the CPU: the global gradient norm's sums, on every core.
//!
//! Why: the reference (`ops::Ops::squared_sum`) squares each gradient into a fresh tensor and
//! sums it, both on the calling thread: on vit-b, 111 M gradients a step, that was ≈ 50 ms of
//! serial work a step, with the squared copies' pages faulted in anew. Here each block of a
//! fixed size is summed in eight interleaved lanes ([`super::lanes`]) on whichever thread
//! takes it, and the blocks' sums are added in order, so the result does not depend on the
//! thread count.

use rayon::prelude::*;

use super::lanes;

/// Elements per block: the unit of work and of the summation order.
const BLOCK: usize = 1 << 14;

/// `Σ x²` over `x`.
pub fn sum(x: &[f32]) -> f32 {
    let block = |x: &[f32]| lanes::total(x, |v| v * v);
    if x.len() <= BLOCK {
        return block(x);
    }
    let blocks: Vec<f32> = x.par_chunks(BLOCK).map(block).collect();
    blocks.iter().sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_match_f64_on_both_sides_of_the_block_size() {
        for n in [0, 7, 1000, super::BLOCK + 13, 5 * super::BLOCK] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01)
                .collect();
            let want: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
            let got = super::sum(&x) as f64;
            assert!(
                (got - want).abs() <= 1e-5 * want.max(1.0),
                "n = {n}: {got} vs {want}"
            );
        }
    }
}
