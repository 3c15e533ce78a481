//! Patchify and gather of the visible patches in one pass. The reference patchifies the whole
//! batch (`[B, L, P]`, a permuted copy of the image) and then selects the kept rows.

use burn::backend::wgpu::{CubeTensor, into_contiguous};
use burn::tensor::{Int, Shape, Tensor};

use super::norm_pix::geometry;
use super::source::{BindingOf, Wgsl, cover, empty, float_type, int_type};
use crate::model::patch::patchify;

const WORKGROUP: u32 = 256;

/// The plain-Burn way: patchify everything, then select rows `b·L + l`.
///
/// # Shapes
/// `imgs`: `[B, C, H, W]`, `rows`: `[R]` → `[R, p·p·C]`
pub fn reference(imgs: Tensor<4>, rows: Tensor<1, Int>, patch: usize) -> Tensor<2> {
    let patches = patchify(imgs, patch);
    let [b, l, p] = patches.dims();
    patches.reshape([b * l, p]).select(0, rows)
}

pub(crate) fn forward(imgs: CubeTensor, rows: CubeTensor, patch: usize) -> CubeTensor {
    let (imgs, rows) = (into_contiguous(imgs), into_contiguous(rows));
    float_type(&imgs);
    let r = rows.meta.shape()[0];
    let p = imgs.meta.shape()[1] * patch * patch;
    let out = empty(&imgs, Shape::new([r, p]), imgs.dtype);
    let kernel = Wgsl::new(
        "patch_gather",
        &[
            include_str!("../../shaders/patch_common.wgsl"),
            include_str!("../../shaders/patch_gather.wgsl"),
        ],
        WORKGROUP,
    )
    .with("int", int_type(&rows));
    geometry(kernel, &imgs, patch, false).launch(
        &imgs,
        cover(r * p, WORKGROUP),
        vec![
            BindingOf::Tensor(&imgs),
            BindingOf::Tensor(&rows),
            BindingOf::Tensor(&out),
            BindingOf::Words(vec![(r * p) as u32]),
        ],
    );
    out
}
