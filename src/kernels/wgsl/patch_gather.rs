//! Patchify and gather of the visible patches in one pass. The reference (`ops`)
//! patchifies the whole batch (`[B, L, P]`, a permuted copy of the image) and then selects the
//! kept rows.

use burn::backend::wgpu::{CubeTensor, into_contiguous};
use burn::tensor::Shape;

use super::norm_pix::{COMMON, Geometry};
use super::source::{BindingOf, Wgsl, cover, empty, float_type, int_type};

const WORKGROUP: u32 = 256;

/// The gather shader for images of `geometry`, row indices of WGSL type `int` (`i32`, `u32`),
/// `count` output elements.
pub(crate) fn shader(int: &str, geometry: Geometry, count: usize) -> Wgsl {
    let kernel = Wgsl::new(
        "patch_gather",
        &[COMMON, include_str!("../../../shaders/patch_gather.wgsl")],
        WORKGROUP,
    )
    .with("int", int)
    .with("count", count);
    geometry.fill(kernel, false)
}

pub(crate) fn forward(imgs: CubeTensor, rows: CubeTensor, patch: usize) -> CubeTensor {
    let (imgs, rows) = (into_contiguous(imgs), into_contiguous(rows));
    float_type(&imgs);
    let r = rows.meta.shape()[0];
    let p = imgs.meta.shape()[1] * patch * patch;
    let out = empty(&imgs, Shape::new([r, p]), imgs.dtype);
    shader(int_type(&rows), Geometry::of(&imgs, patch), r * p).launch(
        &imgs,
        cover(r * p, WORKGROUP),
        [&imgs, &rows, &out].map(BindingOf::Tensor).into(),
    );
    out
}
