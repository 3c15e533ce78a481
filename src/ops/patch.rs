//! Images to patch sequences and back, in MAE's order (`nchpwq -> nhwpqc`): patches row-major
//! over the grid, and inside a patch its pixels row-major with the channels innermost.

use burn::tensor::Tensor;

/// `[B, C, H, W]` → `[B, L, p·p·C]` with `L = (H/p)·(W/p)`.
pub fn patchify(imgs: Tensor<4>, p: usize) -> Tensor<3> {
    let [b, c, h, w] = imgs.dims();
    let (gh, gw) = (h / p, w / p);
    imgs.reshape([b, c, gh, p, gw, p]) // [B, C, h, p, w, q]
        .permute([0, 2, 4, 3, 5, 1]) // [B, h, w, p, q, C]
        .reshape([b, gh * gw, p * p * c])
}

/// `[B, L, p·p·C]` → `[B, C, H, W]`, the inverse of [`patchify`] for a square grid.
pub fn unpatchify(patches: Tensor<3>, p: usize, c: usize) -> Tensor<4> {
    let [b, l, _] = patches.dims();
    let g = (l as f64).sqrt().round() as usize;
    assert_eq!(g * g, l, "unpatchify needs a square grid, got {l} patches");
    patches
        .reshape([b, g, g, p, p, c]) // [B, h, w, p, q, C]
        .permute([0, 5, 1, 3, 2, 4]) // [B, C, h, p, w, q]
        .reshape([b, c, g * p, g * p])
}
