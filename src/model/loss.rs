//! MAE's reconstruction loss: the per-patch error (`ops::Ops::per_patch_loss`, norm-pix
//! targets optional) averaged over the removed patches only.

use burn::tensor::Tensor;

/// The mean of per-patch losses over the removed patches (`mask` 1 = removed).
///
/// # Shapes
/// `per_patch`, `mask`: `[B, L]` → `[1]`
pub fn masked_mean(per_patch: Tensor<2>, mask: Tensor<2>) -> Tensor<1> {
    (per_patch * mask.clone()).sum() / mask.sum()
}
