//! MAE's reconstruction loss: per-patch MSE, averaged over the removed patches only, with
//! optional per-patch normalised targets (norm-pix).

use burn::tensor::Tensor;

/// Variance floor of norm-pix, as MAE's `(var + 1.e-6) ** .5`.
pub const NORM_PIX_EPS: f64 = 1e-6;

/// Normalises every patch of `[B, L, P]` by its own mean and unbiased variance.
pub fn norm_pix_target(target: Tensor<3>) -> Tensor<3> {
    let (var, mean) = target.clone().var_mean(2); // [B, L, 1] each
    (target - mean) / var.add_scalar(NORM_PIX_EPS).sqrt()
}

/// Mean over removed patches of each patch's mean squared error.
///
/// # Shapes
/// `pred`, `target`: `[B, L, P]`; `mask`: `[B, L]` with 1 = removed → `[1]`
pub fn masked_mse(
    pred: Tensor<3>,
    target: Tensor<3>,
    mask: Tensor<2>,
    norm_pix: bool,
) -> Tensor<1> {
    masked_mean(per_patch_mse(pred, target, norm_pix), mask)
}

/// Each patch's mean squared error against its (norm-pix) target.
///
/// # Shapes
/// `pred`, `target`: `[B, L, P]` → `[B, L]`
pub fn per_patch_mse(pred: Tensor<3>, target: Tensor<3>, norm_pix: bool) -> Tensor<2> {
    let [b, l, _] = pred.dims();
    let target = if norm_pix {
        norm_pix_target(target)
    } else {
        target
    };
    (pred - target).square().mean_dim(2).reshape([b, l])
}

/// The mean of per-patch losses over the removed patches (`mask` 1 = removed).
///
/// # Shapes
/// `per_patch`, `mask`: `[B, L]` → `[1]`
pub fn masked_mean(per_patch: Tensor<2>, mask: Tensor<2>) -> Tensor<1> {
    (per_patch * mask.clone()).sum() / mask.sum()
}
