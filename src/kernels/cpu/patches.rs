//! Patches read straight from the image batch on the CPU: the gather of the kept patches, and
//! the per-patch (norm-pix) loss with its backward, as `patch_gather.wgsl` and
//! `norm_pix_loss.wgsl` do on wgpu.
//!
//! Why: the reference (`ops`) patchifies the whole batch (a permuted copy of every image),
//! then selects rows or normalises each patch with burn's `var_mean`, subtracts, squares and
//! averages: a dozen passes over `[B, L, P]` on the calling thread, forward and backward, with
//! autodiff keeping each intermediate. Here one task per block of patches reads its pixels,
//! computes the patch's statistics in cache and writes only the result; the backward
//! recomputes the statistics from the image instead of keeping them.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::{lanes, rows_per_task};

/// Variance floor of norm-pix, as MAE's `(var + 1.e-6) ** .5` (`ops::NORM_PIX_EPS`).
const EPS: f32 = 1e-6;

/// Where the patches of an image batch `[B, C, H, W]` are, in MAE's (p, q, c) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub channels: usize,
    pub patch: usize,
    pub height: usize,
    pub width: usize,
}

impl Geometry {
    /// Patches per image (L).
    pub fn patches(self) -> usize {
        (self.height / self.patch) * (self.width / self.patch)
    }

    /// Elements per patch (P = p·p·C).
    pub fn patch_len(self) -> usize {
        self.patch * self.patch * self.channels
    }

    /// Elements per image.
    fn image(self) -> usize {
        self.channels * self.height * self.width
    }

    /// Patch `l` of its image `img` (`[C, H, W]`) into `out` (`P` elements, MAE's order),
    /// each element stored by `set`: each channel's row of `p` pixels is read contiguously.
    #[inline(always)]
    fn read<T>(self, img: &[f32], l: usize, out: &mut [T], set: impl Fn(&mut T, f32)) {
        let (c, p, w) = (self.channels, self.patch, self.width);
        let (top, left) = ((l / (w / p)) * p, (l % (w / p)) * p);
        let plane = self.height * w;
        for (py, row) in out.chunks_exact_mut(p * c).enumerate() {
            for ch in 0..c {
                let at = ch * plane + (top + py) * w + left;
                for (px, &v) in row.chunks_exact_mut(c).zip(&img[at..at + p]) {
                    set(&mut px[ch], v);
                }
            }
        }
    }

    /// The patch at flat row `row` (`b·L + l`) of `imgs` as the loss's target: normalised by
    /// its own mean and unbiased variance when `norm_pix`.
    fn target(self, imgs: &[f32], row: usize, norm_pix: bool, out: &mut [f32]) {
        self.read(
            self.image_of(imgs, row),
            row % self.patches(),
            out,
            |o, v| *o = v,
        );
        if !norm_pix {
            return;
        }
        let n = out.len() as f32;
        let mean = lanes::total(out, |v| v) / n;
        let var = lanes::total(out, |v| (v - mean) * (v - mean)) / (n - 1.0);
        let rstd = 1.0 / (var + EPS).sqrt();
        out.iter_mut().for_each(|v| *v = (*v - mean) * rstd);
    }

    /// The image of flat patch row `row` (`b·L + l`) in `imgs`.
    fn image_of(self, imgs: &[f32], row: usize) -> &[f32] {
        let size = self.image();
        &imgs[(row / self.patches()) * size..][..size]
    }
}

/// The patches at flat rows `b·L + l` of `imgs` → `[rows.len(), P]`, written into `out`.
pub fn gather(imgs: &[f32], g: Geometry, rows: &[usize], out: &mut [MaybeUninit<f32>]) {
    let (len, per_image) = (g.patch_len(), g.patches());
    assert_eq!(out.len(), rows.len() * len, "patch gather: output length");
    let t = rows_per_task(rows.len(), len);
    out.par_chunks_mut(t * len)
        .zip(rows.par_chunks(t))
        .for_each(|(out, rows)| {
            for (out, &row) in out.chunks_exact_mut(len).zip(rows) {
                g.read(g.image_of(imgs, row), row % per_image, out, |o, v| {
                    o.write(v);
                });
            }
        });
}

/// Each patch's mean squared error of `pred` `[B, L, P]` against its target, written into
/// `out` `[B, L]`.
pub fn loss(pred: &[f32], imgs: &[f32], g: Geometry, norm_pix: bool, out: &mut [MaybeUninit<f32>]) {
    let len = g.patch_len();
    assert_eq!(pred.len(), out.len() * len, "patch loss: lengths");
    let t = rows_per_task(out.len(), len);
    out.par_chunks_mut(t)
        .zip(pred.par_chunks(t * len))
        .enumerate()
        .for_each(|(task, (out, pred))| {
            let mut target = vec![0.0; len];
            for (i, (out, pred)) in out.iter_mut().zip(pred.chunks_exact(len)).enumerate() {
                let row = task * t + i;
                g.target(imgs, row, norm_pix, &mut target);
                let e = lanes::sum(pred, &target, |p, t| (p - t) * (p - t));
                out.write(e / len as f32);
            }
        });
}

/// The gradient of [`loss`] w.r.t. `pred`, given each patch's incoming gradient `grad` `[B, L]`:
/// `2·grad·(pred − target)/P`, written into `out` `[B, L, P]`.
pub fn loss_backward(
    pred: &[f32],
    imgs: &[f32],
    grad: &[f32],
    g: Geometry,
    norm_pix: bool,
    out: &mut [MaybeUninit<f32>],
) {
    let len = g.patch_len();
    assert_eq!(pred.len(), grad.len() * len, "patch loss backward: lengths");
    assert_eq!(out.len(), pred.len(), "patch loss backward: output length");
    let t = rows_per_task(grad.len(), len);
    out.par_chunks_mut(t * len)
        .zip(pred.par_chunks(t * len))
        .enumerate()
        .for_each(|(task, (out, pred))| {
            let mut target = vec![0.0; len];
            let rows = out.chunks_exact_mut(len).zip(pred.chunks_exact(len));
            for (i, (out, pred)) in rows.enumerate() {
                let row = task * t + i;
                g.target(imgs, row, norm_pix, &mut target);
                let scale = 2.0 * grad[row] / len as f32;
                for ((o, p), t) in out.iter_mut().zip(pred).zip(&target) {
                    o.write(scale * (p - t));
                }
            }
        });
}
