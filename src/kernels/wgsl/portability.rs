//! Every shader, at every size the presets instantiate, through naga (the compiler wgpu runs on
//! every backend): validated against core WebGPU, then written out as SPIR-V (Vulkan), MSL
//! (Metal) and HLSL (DX12) the way wgpu does, with the limits that differ between backends
//! checked. A kernel that would fail on a Mac, a Windows machine or in a browser fails here, on
//! any machine, with or without an adapter.

use naga::back::{hlsl, msl, spv};
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};
use naga::{AddressSpace, Module, ResourceBinding, ShaderStage};

use super::attention::{self, Pass};
use super::norm_pix::{self, Geometry};
use super::patch_gather;
use super::source::{Elem, Wgsl};
use super::squared_sums;
use crate::config::Preset;

/// WebGPU's default limits, which every browser grants a page and every wgpu backend meets.
const MAX_INVOCATIONS: u32 = 256;
const MAX_WORKGROUP_BYTES: u32 = 16 << 10;
/// Also the floor of the backends: D3D12 at feature level 11.0 has 8 UAV registers per stage.
const MAX_STORAGE_BUFFERS: usize = 8;
/// Metal's buffer argument table; wgpu adds one buffer of array sizes after the bindings.
const METAL_BUFFER_SLOTS: usize = 31;

/// One shader of a preset, with what it is called in failures.
struct Case {
    shader: Wgsl,
    elem: Elem,
    what: String,
}

/// The shaders a step of `preset` launches, at its sizes, in f32 and (attention) f16.
fn shaders(preset: Preset) -> Vec<Case> {
    let m = preset.config().model;
    let geometry = Geometry {
        channels: m.in_chans,
        patch: m.patch_size,
        height: m.img_size,
        width: m.img_size,
    };
    let mut out = Vec::new();
    for (tokens, hd) in [
        (1 + m.num_visible(), m.dim / m.heads),
        (1 + m.num_patches(), m.decoder_dim / m.decoder_heads),
    ] {
        let scale = (hd as f32).powf(-0.5);
        for elem in [Elem::F32, Elem::F16] {
            out.extend(
                Pass::ALL.map(|pass| (attention::shader(pass, tokens, hd, scale, elem), elem)),
            );
        }
    }
    for norm in [true, false] {
        let rows = m.num_patches();
        out.extend(
            [false, true].map(|bwd| (norm_pix::shader(bwd, geometry, norm, rows), Elem::F32)),
        );
    }
    let gathered = m.num_visible() * m.patch_size * m.patch_size * m.in_chans;
    out.extend(
        ["i32", "u32"].map(|int| (patch_gather::shader(int, geometry, gathered), Elem::F32)),
    );
    // A launch of seven gradients of different lengths, and one of a single tensor.
    let d = m.dim;
    let lens = [3 * d * d, 3 * d, d * d, d, 4 * d * d, 4 * d, d];
    out.extend([&lens[..], &lens[..1]].map(|l| (squared_sums::shader(l), Elem::F32)));
    out.into_iter()
        .map(|(shader, elem)| Case {
            what: format!("{} ({}) for {}", shader.name(), elem.name(), preset.name()),
            shader,
            elem,
        })
        .collect()
}

/// Parses and validates as a WebGPU device would: f16 only where the shader is the f16 variant,
/// which needs the adapter's `shader-f16`.
fn parse(case: &Case) -> (Module, ModuleInfo) {
    let (what, text) = (&case.what, case.shader.text());
    assert!(
        !text.contains("{{"),
        "{what}: a placeholder was left unfilled"
    );
    let module = naga::front::wgsl::parse_str(&text)
        .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&text)));
    let capabilities = match case.elem {
        Elem::F32 => Capabilities::default(),
        Elem::F16 => Capabilities::default() | Capabilities::SHADER_FLOAT16,
    };
    let info = Validator::new(ValidationFlags::all(), capabilities)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&text)));
    (module, info)
}

/// The storage buffers the entry point binds, in binding order.
fn storage_bindings(module: &Module) -> Vec<ResourceBinding> {
    let mut out: Vec<_> = module
        .global_variables
        .iter()
        .filter(|(_, g)| matches!(g.space, AddressSpace::Storage { .. }))
        .filter_map(|(_, g)| g.binding)
        .collect();
    out.sort_by_key(|b| (b.group, b.binding));
    out
}

fn check_webgpu_limits(case: &Case, module: &Module) {
    let what = &case.what;
    let [entry] = module.entry_points.as_slice() else {
        panic!("{what}: expected one entry point");
    };
    let invocations: u32 = entry.workgroup_size.iter().product();
    assert!(
        invocations <= MAX_INVOCATIONS,
        "{what}: {invocations} invocations per workgroup"
    );
    let shared: u32 = module
        .global_variables
        .iter()
        .filter(|(_, g)| g.space == AddressSpace::WorkGroup)
        .map(|(_, g)| module.types[g.ty].inner.size(module.to_ctx()))
        .sum();
    assert!(
        shared <= MAX_WORKGROUP_BYTES,
        "{what}: {shared} bytes of workgroup memory"
    );
    let buffers = storage_bindings(module).len();
    assert!(
        buffers <= MAX_STORAGE_BUFFERS,
        "{what}: {buffers} storage buffers in one stage"
    );
}

/// SPIR-V as wgpu's Vulkan backend writes it, allowed only the capabilities a Vulkan device
/// without optional features has (plus 16-bit floats and storage for the f16 variants).
fn spirv(case: &Case, module: &Module, info: &ModuleInfo) -> Vec<u32> {
    let mut allowed = vec![spv::Capability::Shader];
    if case.elem == Elem::F16 {
        allowed.extend([
            spv::Capability::Float16,
            spv::Capability::StorageBuffer16BitAccess,
        ]);
    }
    let options = spv::Options {
        lang_version: (1, 0),
        capabilities: Some(allowed.into_iter().collect()),
        ..Default::default()
    };
    let pipeline = spv::PipelineOptions {
        shader_stage: ShaderStage::Compute,
        entry_point: "main".into(),
    };
    spv::write_vec(module, info, &options, Some(&pipeline))
        .unwrap_or_else(|e| panic!("{}: SPIR-V: {e}", case.what))
}

/// MSL as wgpu's Metal backend writes it: each binding in its own buffer slot, then the buffer
/// of runtime array sizes, all within Metal's argument table.
fn metal(case: &Case, module: &Module, info: &ModuleInfo) -> String {
    let bindings = storage_bindings(module);
    let slots = bindings.len() + 1;
    assert!(
        slots <= METAL_BUFFER_SLOTS,
        "{}: {slots} Metal buffer slots",
        case.what
    );
    let resources = bindings
        .iter()
        .enumerate()
        .map(|(slot, binding)| {
            let target = msl::BindTarget {
                buffer: Some(slot as msl::Slot),
                mutable: true,
                ..Default::default()
            };
            (*binding, target)
        })
        .collect();
    let entry = msl::EntryPointResources {
        resources,
        immediates_buffer: None,
        sizes_buffer: Some(bindings.len() as msl::Slot),
    };
    let options = msl::Options {
        // Metal 2.0 (macOS 10.13, iOS 11): below what any wgpu-supported Mac offers.
        lang_version: (2, 0),
        per_entry_point_map: [("main".to_string(), entry)].into_iter().collect(),
        fake_missing_bindings: false,
        ..Default::default()
    };
    let pipeline = msl::PipelineOptions {
        entry_point: Some((ShaderStage::Compute, "main".into())),
        ..Default::default()
    };
    let (text, translation) = msl::write_string(module, info, &options, &pipeline)
        .unwrap_or_else(|e| panic!("{}: MSL: {e}", case.what));
    for name in translation.entry_point_names {
        name.unwrap_or_else(|e| panic!("{}: MSL entry point: {e}", case.what));
    }
    text
}

/// HLSL as wgpu's DX12 backend writes it: each storage buffer a UAV register of space 0; shader
/// model 5.1 (FXC, wgpu's fallback compiler) in f32, 6.2 (DXC, 16-bit types) in f16.
fn hlsl(case: &Case, module: &Module, info: &ModuleInfo) -> String {
    let binding_map = storage_bindings(module)
        .into_iter()
        .enumerate()
        .map(|(register, binding)| {
            let target = hlsl::BindTarget {
                space: 0,
                register: register as u32,
                ..Default::default()
            };
            (binding, target)
        })
        .collect();
    let options = hlsl::Options {
        shader_model: match case.elem {
            Elem::F32 => hlsl::ShaderModel::V5_1,
            Elem::F16 => hlsl::ShaderModel::V6_2,
        },
        binding_map,
        fake_missing_bindings: false,
        ..Default::default()
    };
    let pipeline = hlsl::PipelineOptions {
        entry_point: Some((ShaderStage::Compute, "main".into())),
    };
    let mut text = String::new();
    hlsl::Writer::new(&mut text, &options, &pipeline)
        .write(module, info, None)
        .unwrap_or_else(|e| panic!("{}: HLSL: {e}", case.what));
    text
}

#[test]
fn every_shader_of_every_preset_validates_within_webgpu_limits() {
    let mut checked = 0;
    for preset in Preset::ALL {
        for case in shaders(preset) {
            let (module, _) = parse(&case);
            check_webgpu_limits(&case, &module);
            checked += 1;
        }
    }
    assert_eq!(checked, Preset::ALL.len() * 24);
}

#[test]
fn every_shader_of_every_preset_translates_for_vulkan_metal_and_dx12() {
    for preset in Preset::ALL {
        for case in shaders(preset) {
            let (module, info) = parse(&case);
            let words = spirv(&case, &module, &info);
            assert_eq!(
                words.first(),
                Some(&0x0723_0203),
                "{}: SPIR-V magic",
                case.what
            );
            let msl = metal(&case, &module, &info);
            assert!(msl.contains("kernel void"), "{}: no MSL kernel", case.what);
            let hlsl = hlsl(&case, &module, &info);
            assert!(
                hlsl.contains("[numthreads("),
                "{}: no HLSL kernel",
                case.what
            );
            if case.elem == Elem::F16 {
                assert!(msl.contains("half"), "{}: f16 lost in MSL", case.what);
                assert!(hlsl.contains("half"), "{}: f16 lost in HLSL", case.what);
            }
        }
    }
}

#[test]
fn the_f16_variants_need_shader_f16_and_the_f32_ones_do_not() {
    let case = shaders(Preset::Tiny)
        .into_iter()
        .find(|c| c.elem == Elem::F16)
        .unwrap();
    let text = case.shader.text();
    let module = naga::front::wgsl::parse_str(&text).unwrap();
    let without = Validator::new(ValidationFlags::all(), Capabilities::default()).validate(&module);
    assert!(
        without.is_err(),
        "{}: validated without shader-f16",
        case.what
    );
}
