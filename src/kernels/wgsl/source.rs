//! A WGSL file from `shaders/` with its sizes filled in, keyed for burn's pipeline cache, bound
//! and dispatched.

use burn::backend::wgpu::{CubeTensor, KernelSource, SourceKernel, SourceTemplate};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::KernelArguments;
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::{DType, Shape};

/// A WGSL file from `shaders/` with its `{{ name }}` placeholders filled.
///
/// Sizes that bound loops around a `workgroupBarrier` are baked in as constants: WGSL only
/// allows barriers in uniform control flow, and a value read from a storage buffer is not
/// uniform. A run has few distinct shapes, so each compiles once. cubecl compiles these
/// modules with wgpu's bounds checks off: a kernel must keep every index in range itself.
#[derive(Debug)]
pub(crate) struct Wgsl {
    name: &'static str,
    texts: Vec<&'static str>,
    values: Vec<(&'static str, String)>,
    workgroup: u32,
}

impl Wgsl {
    /// `texts` are concatenated: shared helpers first, the kernel with `main` last.
    pub(crate) fn new(name: &'static str, texts: &[&'static str], workgroup: u32) -> Self {
        Wgsl {
            name,
            texts: texts.to_vec(),
            values: vec![("workgroup", workgroup.to_string())],
            workgroup,
        }
    }

    /// The shader's name (its `shaders/` file without the extension).
    #[cfg(test)]
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// The complete WGSL text, placeholders filled: what the device compiles.
    #[cfg(test)]
    pub(crate) fn text(&self) -> String {
        self.source().complete()
    }

    pub(crate) fn with(mut self, key: &'static str, value: impl ToString) -> Self {
        self.values.push((key, value.to_string()));
        self
    }

    /// Launches on `anchor`'s device with the buffers bound in order, `@binding(0)` first.
    pub(crate) fn launch(self, anchor: &CubeTensor, count: CubeCount, bindings: Vec<BindingOf>) {
        let buffers = bindings
            .into_iter()
            .map(|BindingOf::Tensor(t)| t.handle.clone().binding())
            .collect();
        let cube_dim = CubeDim::new_1d(self.workgroup);
        anchor.client.launch(
            Box::new(SourceKernel::new(self, cube_dim)),
            count,
            KernelArguments::new().with_buffers(buffers),
        );
    }
}

impl KernelSource for Wgsl {
    fn source(&self) -> SourceTemplate {
        self.values
            .iter()
            .fold(SourceTemplate::new(self.texts.concat()), |t, (k, v)| {
                t.register(*k, v.as_str())
            })
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.name, self.values.clone()))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// One buffer of a launch. Sizes are baked into the shader text instead of uploaded with
/// each launch: an upload per dispatch is a round trip a GPU would pay for every step.
pub(crate) enum BindingOf<'a> {
    Tensor(&'a CubeTensor),
}

/// Workgroups to cover `n` invocations of `workgroup` threads, folded into two dimensions since
/// one dimension stops at 65 535 workgroups. Shaders recover the index with `num_workgroups.x`.
pub(crate) fn cover(n: usize, workgroup: u32) -> CubeCount {
    let groups = n.div_ceil(workgroup as usize).max(1) as u32;
    let x = groups.min(65_535);
    CubeCount::Static(x, groups.div_ceil(x), 1)
}

/// A new contiguous tensor on `like`'s device.
pub(crate) fn empty(like: &CubeTensor, shape: Shape, dtype: DType) -> CubeTensor {
    let bytes = shape.num_elements() * dtype.size();
    let buffer = like.client.empty(bytes.max(4));
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        buffer,
        dtype,
    )
}

/// The WGSL name of a float tensor's element type; the kernels are written for f32.
pub(crate) fn float_type(t: &CubeTensor) -> &'static str {
    assert_eq!(
        t.dtype,
        DType::F32,
        "sapling's WGSL kernels are written for f32 tensors, got {:?}",
        t.dtype
    );
    "f32"
}

/// The element type an attention tensor is stored as (f32, or f16 in mixed precision).
pub(crate) fn half_or_single(t: &CubeTensor) -> Elem {
    match t.dtype {
        DType::F32 => Elem::F32,
        DType::F16 => Elem::F16,
        other => panic!("sapling's WGSL attention takes f32 or f16 tensors, got {other:?}"),
    }
}

/// The element type a shader's tensors are stored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Elem {
    F32,
    F16,
}

impl Elem {
    /// The WGSL type name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::F16 => "f16",
        }
    }

    /// The directive the shader starts with (f16 is an extension of WGSL).
    pub(crate) fn enable(self) -> &'static str {
        match self {
            Elem::F32 => "",
            Elem::F16 => "enable f16;",
        }
    }
}

/// The WGSL name of an index tensor's element type.
pub(crate) fn int_type(t: &CubeTensor) -> &'static str {
    match t.dtype {
        DType::I32 => "i32",
        DType::U32 => "u32",
        other => panic!("sapling's WGSL kernels take i32 or u32 indices, got {other:?}"),
    }
}
