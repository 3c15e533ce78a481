//! Sums of squares of up to [`SQUARED_SUMS_INPUTS`] tensors in one launch, as partial sums: the
//! global gradient norm in a handful of dispatches instead of three per parameter tensor.

use burn::backend::wgpu::{CubeTensor, into_contiguous};
use burn::cubecl::CubeCount;
use burn::tensor::Shape;

use super::source::{BindingOf, Wgsl, empty, float_type};

/// Inputs per launch: with the output, core WebGPU's eight storage buffers per shader stage.
pub const SQUARED_SUMS_INPUTS: usize = 7;
const WORKGROUP: u32 = 256;
/// Each invocation sums at least this many elements before the workgroup reduces.
const PER_INVOCATION: usize = 16;
/// Partial sums per tensor at most: enough workgroups to fill a GPU for a large tensor.
const MAX_GROUPS: usize = 64;

/// Workgroups per tensor for inputs whose longest has `longest` elements.
fn groups(longest: usize) -> usize {
    longest
        .div_ceil(WORKGROUP as usize * PER_INVOCATION)
        .clamp(1, MAX_GROUPS)
}

/// `[count · G]`: the partial sums of `count` inputs of these lengths.
pub(crate) fn partials_shape(lens: &[usize]) -> Shape {
    let longest = lens.iter().copied().max().unwrap_or(0);
    Shape::new([lens.len() * groups(longest)])
}

/// The shader for inputs of `lens` elements (at most seven).
pub(crate) fn shader(lens: &[usize]) -> Wgsl {
    assert!(
        !lens.is_empty() && lens.len() <= SQUARED_SUMS_INPUTS,
        "squared sums take 1 to {SQUARED_SUMS_INPUTS} tensors, got {}",
        lens.len()
    );
    let longest = lens.iter().copied().max().unwrap_or(0);
    let mut all = [0usize; SQUARED_SUMS_INPUTS];
    all[..lens.len()].copy_from_slice(lens);
    let lens: Vec<String> = all.iter().map(|n| format!("{n}u")).collect();
    Wgsl::new(
        "squared_sums",
        &[include_str!("../../../shaders/squared_sums.wgsl")],
        WORKGROUP,
    )
    .with("groups", groups(longest))
    .with("lens", lens.join(", "))
}

/// The partial sums of squares of the first `count` of `inputs` (the rest repeat the first
/// and are not read): `[count · G]`.
pub(crate) fn forward(inputs: [CubeTensor; SQUARED_SUMS_INPUTS], count: usize) -> CubeTensor {
    let inputs = inputs.map(into_contiguous);
    for t in &inputs[..count] {
        float_type(t);
    }
    let lens: Vec<usize> = inputs[..count]
        .iter()
        .map(|t| t.meta.shape().num_elements())
        .collect();
    let shape = partials_shape(&lens);
    let g = shape[0] / count;
    let out = empty(&inputs[0], shape, inputs[0].dtype);
    let mut bindings: Vec<_> = inputs.iter().map(BindingOf::Tensor).collect();
    bindings.push(BindingOf::Tensor(&out));
    shader(&lens).launch(
        &inputs[0],
        CubeCount::Static(g as u32, count as u32, 1),
        bindings,
    );
    out
}
