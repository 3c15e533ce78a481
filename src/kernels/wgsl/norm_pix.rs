//! The per-patch (norm-pix) loss, forward and backward, reading targets straight from the image.
//!
//! The reference (`ops`) patchifies the whole batch, normalises each patch with burn's
//! `var_mean` and keeps the chain of `[B, L, P]` intermediates for autodiff; the kernels keep
//! nothing but the prediction and the image.

use burn::backend::wgpu::{CubeTensor, into_contiguous};
use burn::tensor::Shape;

use super::source::{BindingOf, Wgsl, cover, empty, float_type};

const WORKGROUP: u32 = 64;
pub(crate) const COMMON: &str = include_str!("../../../shaders/patch_common.wgsl");

/// Where the patches of an image batch are: what the loss and gather shaders are sized by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub channels: usize,
    pub patch: usize,
    pub height: usize,
    pub width: usize,
}

impl Geometry {
    /// The geometry of `imgs` `[B, C, H, W]` cut into `patch`-pixel patches.
    pub(crate) fn of(imgs: &CubeTensor, patch: usize) -> Geometry {
        let shape = imgs.meta.shape();
        assert!(
            shape[2].is_multiple_of(patch) && shape[3].is_multiple_of(patch),
            "image {}×{} is not a whole number of {patch}-pixel patches",
            shape[2],
            shape[3]
        );
        Geometry {
            channels: shape[1],
            patch,
            height: shape[2],
            width: shape[3],
        }
    }

    /// `kernel` with this geometry's template values filled.
    pub(crate) fn fill(self, kernel: Wgsl, norm_pix: bool) -> Wgsl {
        kernel
            .with("channels", self.channels)
            .with("patch", self.patch)
            .with("height", self.height)
            .with("width", self.width)
            .with("norm_pix", norm_pix)
    }
}

/// The forward (per-patch loss) or backward (gradient w.r.t. the prediction) shader.
pub(crate) fn shader(backward: bool, geometry: Geometry, norm_pix: bool, rows: usize) -> Wgsl {
    let kernel = if backward {
        Wgsl::new(
            "norm_pix_loss_backward",
            &[
                COMMON,
                include_str!("../../../shaders/norm_pix_loss_backward.wgsl"),
            ],
            WORKGROUP,
        )
    } else {
        Wgsl::new(
            "norm_pix_loss",
            &[COMMON, include_str!("../../../shaders/norm_pix_loss.wgsl")],
            WORKGROUP,
        )
    };
    geometry.fill(kernel.with("count", rows), norm_pix)
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
    shader(false, Geometry::of(&imgs, patch), norm_pix, b * l).launch(
        &pred,
        cover(b * l, WORKGROUP),
        [&pred, &imgs, &out].map(BindingOf::Tensor).into(),
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
    let rows = shape[0] * shape[1];
    shader(true, Geometry::of(&imgs, patch), norm_pix, rows).launch(
        &pred,
        cover(rows, WORKGROUP),
        [&pred, &imgs, &grad, &out].map(BindingOf::Tensor).into(),
    );
    out
}
