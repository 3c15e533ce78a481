//! What `sapling info` tells a person: each adapter in two lines, and, where no GPU is found,
//! what to install or check on this operating system.

use std::fmt;

use indicatif::HumanBytes;

use super::AdapterSummary;

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.is_software() {
            "software rasteriser"
        } else {
            "GPU"
        };
        let l = &self.limits;
        writeln!(
            f,
            "{}: {} {kind} ({}), driver {}",
            self.name, self.api, self.device_type, self.driver
        )?;
        write!(
            f,
            "  largest buffer {}, largest binding {}, workgroup memory {}, {} invocations per \
             workgroup, {} storage buffers per stage, shader-f16 {}",
            HumanBytes(l.max_buffer_size),
            HumanBytes(l.max_storage_buffer_binding_size),
            HumanBytes(l.max_compute_workgroup_storage_size.into()),
            l.max_compute_invocations_per_workgroup,
            l.max_storage_buffers_per_shader_stage,
            if self.shader_f16 { "yes" } else { "no" }
        )
    }
}

/// What to do when `adapters` holds no hardware GPU, for this operating system; `None` when
/// there is one.
pub fn missing_gpu_advice(adapters: &[AdapterSummary]) -> Option<String> {
    if adapters.iter().any(|a| !a.is_software()) {
        return None;
    }
    let found = if adapters.is_empty() {
        "No WebGPU adapter was found"
    } else {
        "Only software adapters were found"
    };
    Some(format!(
        "{found}: sapling trains on the CPU (burn Flex), or on a software adapter with \
         --device wgpu (much slower). To train on a GPU:\n{}",
        platform_advice()
    ))
}

fn platform_advice() -> &'static str {
    if cfg!(target_os = "linux") {
        "  - install the GPU's Vulkan driver: mesa-vulkan-drivers (AMD and Intel), or NVIDIA's \
         driver with its Vulkan part (libnvidia-gl-<version>, the same version as the kernel \
         module), and the loader libvulkan1;\n  - check with `ls /usr/share/vulkan/icd.d \
         /etc/vulkan/icd.d` (an ICD file per driver) and `vulkaninfo --summary` (vulkan-tools);\n  \
         - in a container, pass the GPU through (`docker run --gpus all`, and for NVIDIA the \
         `graphics` driver capability)."
    } else if cfg!(target_os = "windows") {
        "  - sapling uses DirectX 12 (or Vulkan): install the GPU vendor's current driver \
         (Windows Update's may lack DX12 compute);\n  - check with `dxdiag` (Display tab: \
         Feature Levels 11_0 or higher) and that the GPU is not disabled in Device Manager;\n  \
         - over Remote Desktop or in a VM without GPU passthrough only WARP (software) is seen."
    } else if cfg!(target_os = "macos") {
        "  - sapling uses Metal, which every Mac since 2012 has on macOS 10.14 or later: update \
         macOS;\n  - in a VM or a CI runner without GPU access Metal is missing: run on the Mac \
         itself."
    } else {
        "  - sapling needs Vulkan, Metal or DirectX 12: install the GPU's driver for one of them."
    }
}
