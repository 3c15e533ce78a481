//! The masked norm-pix loss, forward and backward, reading targets straight from the image.
//!
//! The reference ([`reference`]) patchifies the whole batch, normalises each patch with burn's
//! `var_mean` and keeps the chain of `[B, L, P]` intermediates for autodiff; the kernels keep
//! nothing but the prediction and the image.

use burn::backend::wgpu::{CubeTensor, into_contiguous};
use burn::tensor::{Shape, Tensor};

use super::source::{BindingOf, Wgsl, cover, empty, float_type};
use crate::model::loss::per_patch_mse;
use crate::model::patch::patchify;

const WORKGROUP: u32 = 64;
const COMMON: &str = include_str!("../../shaders/patch_common.wgsl");

/// Per-patch squared error the plain-Burn way: patchify, normalise, compare.
///
/// # Shapes
/// `pred`: `[B, L, P]`, `imgs`: `[B, C, H, W]` → `[B, L]`
pub fn reference(pred: Tensor<3>, imgs: Tensor<4>, patch: usize, norm_pix: bool) -> Tensor<2> {
    per_patch_mse(pred, patchify(imgs, patch), norm_pix)
}

/// The patch-geometry template values shared by the loss and gather kernels.
pub(crate) fn geometry(kernel: Wgsl, imgs: &CubeTensor, patch: usize, norm_pix: bool) -> Wgsl {
    let shape = imgs.meta.shape();
    assert!(
        shape[2].is_multiple_of(patch) && shape[3].is_multiple_of(patch),
        "image {}×{} is not a whole number of {patch}-pixel patches",
        shape[2],
        shape[3]
    );
    kernel
        .with("channels", shape[1])
        .with("patch", patch)
        .with("height", shape[2])
        .with("width", shape[3])
        .with("norm_pix", norm_pix)
}

pub(crate) fn forward(
    pred: CubeTensor,
    imgs: CubeTensor,
    patch: usize,
    norm_pix: bool,
) -> CubeTensor {
    let (pred, imgs) = (into_contiguous(pred), into_contiguous(imgs));
    float_type(&pred);
    let [b, l] = [pred.meta.shape()[0], pred.meta.shape()[1]];
    let out = empty(&pred, Shape::new([b, l]), pred.dtype);
    let kernel = Wgsl::new(
        "norm_pix_loss",
        &[COMMON, include_str!("../../shaders/norm_pix_loss.wgsl")],
        WORKGROUP,
    );
    geometry(kernel, &imgs, patch, norm_pix).launch(
        &pred,
        cover(b * l, WORKGROUP),
        vec![
            BindingOf::Tensor(&pred),
            BindingOf::Tensor(&imgs),
            BindingOf::Tensor(&out),
            BindingOf::Words(vec![(b * l) as u32]),
        ],
    );
    out
}

pub(crate) fn backward(
    pred: CubeTensor,
    imgs: CubeTensor,
    grad: CubeTensor,
    patch: usize,
    norm_pix: bool,
) -> CubeTensor {
    let (pred, imgs, grad) = (
        into_contiguous(pred),
        into_contiguous(imgs),
        into_contiguous(grad),
    );
    let shape = pred.meta.shape().clone();
    let out = empty(&pred, shape.clone(), pred.dtype);
    let kernel = Wgsl::new(
        "norm_pix_loss_backward",
        &[
            COMMON,
            include_str!("../../shaders/norm_pix_loss_backward.wgsl"),
        ],
        WORKGROUP,
    );
    let rows = shape[0] * shape[1];
    geometry(kernel, &imgs, patch, norm_pix).launch(
        &pred,
        cover(rows, WORKGROUP),
        vec![
            BindingOf::Tensor(&pred),
            BindingOf::Tensor(&imgs),
            BindingOf::Tensor(&grad),
            BindingOf::Tensor(&out),
            BindingOf::Words(vec![rows as u32]),
        ],
    );
    out
}
