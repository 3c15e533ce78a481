//! Fixed 2-D sin-cos position embeddings, as MAE's `get_2d_sincos_pos_embed`.
//!
//! For a `g × g` grid and width `D`, the patch at row `i`, column `j` (token `i * g + j`) gets
//! `[sin(j·ω), cos(j·ω), sin(i·ω), cos(i·ω)]`, each block `D / 4` wide, with
//! `ω_k = 10000^(-k / (D/4))`. The column index fills the first half, as in MAE (mmpretrain, and
//! so Sapiens' released weights, put the row first; it only matters when loading their weights).
//! The optional cls slot in front is all zeros.

use crate::config::PosEmbed;

/// Row-major `[(cls as usize) + g * g, dim]` values in MAE's layout.
pub fn sincos_2d(dim: usize, grid: usize, cls: bool) -> Vec<f32> {
    sincos_2d_in(PosEmbed::Mae, dim, grid, cls)
}

/// [`sincos_2d`] in either layout: `Mae` puts the column's sines and cosines first,
/// `Mmpretrain` the row's.
pub fn sincos_2d_in(layout: PosEmbed, dim: usize, grid: usize, cls: bool) -> Vec<f32> {
    assert!(
        dim.is_multiple_of(4),
        "sin-cos position embedding needs a width divisible by 4"
    );
    let quarter = dim / 4;
    let omega: Vec<f64> = (0..quarter)
        .map(|k| 1.0 / 10000f64.powf(k as f64 / quarter as f64))
        .collect();
    let mut out = vec![0.0f32; if cls { dim } else { 0 }];
    out.reserve(grid * grid * dim);
    for i in 0..grid {
        for j in 0..grid {
            let (first, second) = match layout {
                PosEmbed::Mae => (j, i),
                PosEmbed::Mmpretrain => (i, j),
            };
            for pos in [first as f64, second as f64] {
                out.extend(omega.iter().map(|w| (pos * w).sin() as f32));
                out.extend(omega.iter().map(|w| (pos * w).cos() as f32));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_closed_form() {
        let (dim, grid) = (16, 5);
        let pe = sincos_2d(dim, grid, true);
        assert_eq!(pe.len(), (1 + grid * grid) * dim);
        assert!(pe[..dim].iter().all(|v| *v == 0.0), "cls slot is zeros");
        let q = dim / 4;
        for i in 0..grid {
            for j in 0..grid {
                let row = &pe[(1 + i * grid + j) * dim..][..dim];
                for k in 0..q {
                    let w = 10000f64.powf(-(k as f64) / q as f64);
                    let want = [
                        (j as f64 * w).sin(),
                        (j as f64 * w).cos(),
                        (i as f64 * w).sin(),
                        (i as f64 * w).cos(),
                    ];
                    for (block, want) in want.iter().enumerate() {
                        let got = row[block * q + k] as f64;
                        assert!((got - want).abs() < 1e-6, "({i},{j}) block {block} k {k}");
                    }
                }
            }
        }
        // mmpretrain's layout swaps the halves.
        let rows = sincos_2d_in(PosEmbed::Mmpretrain, dim, grid, true);
        let t = 1 + 2 * grid + 3; // token (row 2, column 3)
        assert_eq!(
            rows[t * dim..][..dim / 2],
            pe[t * dim + dim / 2..][..dim / 2]
        );
        assert_eq!(
            rows[t * dim + dim / 2..][..dim / 2],
            pe[t * dim..][..dim / 2]
        );
        // Token (0, 0): sines 0, cosines 1.
        assert_eq!(&pe[dim..dim + q], &vec![0.0; q][..]);
        assert_eq!(&pe[dim + q..dim + 2 * q], &vec![1.0; q][..]);
    }
}
