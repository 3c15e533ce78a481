//! Choosing where a step runs: a WebGPU adapter through burn's wgpu runtime, or burn's Flex CPU
//! backend; describing adapters for `sapling info`; measuring a device's peak memory.

/// A quiet start on Linux machines without a display.
mod headless;
/// Peak-memory readings around a stretch of work.
pub mod peak;
/// Adapters and missing-driver advice for people.
mod report;

pub use headless::quiet_headless_vulkan;
pub use peak::PeakMeter;
pub use report::missing_gpu_advice;

use std::sync::OnceLock;

use burn::tensor::Device;
use burn::tensor::wgpu::wgpu;
use serde::Serialize;

#[cfg(not(target_family = "wasm"))]
use crate::config::DeviceChoice;
use crate::config::PrecisionChoice;
use crate::error::{Result, SaplingError};
use crate::ops::Precision;

/// Environment variable that turns "no WebGPU adapter" from a skip into a failure in tests.
pub const REQUIRE_GPU_ENV: &str = "SAPLING_REQUIRE_GPU";

/// The limits of an adapter that decide what fits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdapterLimits {
    pub max_buffer_size: u64,
    /// The largest single tensor the device can bind (cubecl's memory page size).
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_storage_buffers_per_shader_stage: u32,
}

/// One adapter as wgpu reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdapterSummary {
    pub name: String,
    /// Vulkan, Metal, Dx12, Gl or BrowserWebGpu.
    pub api: String,
    /// DiscreteGpu, IntegratedGpu, VirtualGpu, Cpu or Other.
    pub device_type: String,
    pub driver: String,
    pub limits: AdapterLimits,
    /// Whether shaders may use f16 (WebGPU's `shader-f16`), which `--precision f16` needs.
    pub shader_f16: bool,
}

impl AdapterSummary {
    fn from_adapter(adapter: &wgpu::Adapter) -> Self {
        let (info, limits) = (adapter.get_info(), adapter.limits());
        AdapterSummary {
            name: info.name,
            api: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
            limits: AdapterLimits {
                max_buffer_size: limits.max_buffer_size,
                max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
                max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
                max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
                max_storage_buffers_per_shader_stage: limits.max_storage_buffers_per_shader_stage,
            },
            shader_f16: adapter.features().contains(wgpu::Features::SHADER_F16),
        }
    }

    /// A software rasteriser (lavapipe, SwiftShader, WARP): far slower here than Flex.
    pub fn is_software(&self) -> bool {
        self.device_type == "Cpu"
    }
}

/// A device ready for tensors, with what it is.
#[derive(Debug, Clone)]
pub struct Selected {
    pub device: Device,
    /// The adapter behind a wgpu device; `None` on Flex.
    pub adapter: Option<AdapterSummary>,
}

impl Selected {
    /// A one-line description for logs.
    pub fn describe(&self) -> String {
        match &self.adapter {
            Some(a) => format!("wgpu: {} ({}, {})", a.name, a.api, a.device_type),
            None => "cpu: burn Flex".to_string(),
        }
    }
}

/// Every adapter wgpu can see through the WebGPU-class APIs (Vulkan, Metal, DX12, browser
/// WebGPU); OpenGL is left out, as sapling does not target it.
#[cfg(not(target_family = "wasm"))]
pub fn adapters() -> Vec<AdapterSummary> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
        .iter()
        .map(AdapterSummary::from_adapter)
        .collect()
}

/// Resolves `--device` to a device.
///
/// `auto` uses a hardware adapter if there is one and Flex otherwise (a software adapter is
/// far slower than Flex, so it is only used when asked for with `wgpu`).
#[cfg(not(target_family = "wasm"))]
pub fn select(choice: DeviceChoice) -> Result<Selected> {
    match choice {
        DeviceChoice::Cpu => Ok(cpu()),
        DeviceChoice::Wgpu => wgpu_device(),
        DeviceChoice::Auto => {
            let found = adapters();
            if found.iter().any(|a| !a.is_software()) {
                let selected = wgpu_device()?;
                if selected.adapter.as_ref().is_some_and(|a| !a.is_software()) {
                    return Ok(selected);
                }
            }
            let why = if found.is_empty() {
                "no WebGPU adapter found".to_string()
            } else {
                let names: Vec<_> = found.iter().map(|a| a.name.as_str()).collect();
                format!("only software adapters found ({})", names.join(", "))
            };
            tracing::warn!(
                "{why}; training on the CPU with burn's Flex backend (pass --device wgpu to force the WebGPU path)"
            );
            Ok(cpu())
        }
    }
}

#[cfg(not(target_family = "wasm"))]
fn cpu() -> Selected {
    Selected {
        device: Device::flex(),
        adapter: None,
    }
}

/// The device of a run, checked against its kernel choice (sapling's WGSL kernels need wgpu,
/// its CPU kernels Flex) before any work starts.
#[cfg(not(target_family = "wasm"))]
pub fn select_for(train: &crate::config::TrainConfig) -> Result<Selected> {
    let selected = select(train.device)?;
    crate::ops::Kernels::resolve(train.kernels, &selected.device)?;
    let on_flex = crate::kernels::is_flex(&selected.device);
    check_precision(
        resolve_precision(train.precision, on_flex),
        &selected.device,
    )?;
    Ok(selected)
}

/// What `choice` means on Flex (`on_flex`) or this process's wgpu device: `auto` is f16 where
/// the adapter has `shader-f16` and f32 elsewhere (also where no adapter was opened, as for
/// `sapling plan`); `f16` stays f16 ([`check_precision`] refuses it where it cannot run).
pub fn resolve_precision(choice: PrecisionChoice, on_flex: bool) -> Precision {
    let has_f16 = || !on_flex && wgpu_adapter().is_some_and(|a| a.shader_f16);
    match choice {
        PrecisionChoice::F32 => Precision::F32,
        PrecisionChoice::F16 => Precision::F16,
        PrecisionChoice::Auto if has_f16() => Precision::F16,
        PrecisionChoice::Auto => Precision::F32,
    }
}

/// Whether `precision` runs on `device`: f16 elsewhere than on a WebGPU adapter with
/// `shader-f16` is refused naming the config field and the adapter.
pub fn check_precision(precision: Precision, device: &Device) -> Result<()> {
    if precision == Precision::F32 {
        return Ok(());
    }
    let adapter = wgpu_adapter();
    match f16_refusal(crate::kernels::is_flex(device), adapter.as_ref()) {
        None => Ok(()),
        Some(why) => Err(SaplingError::config("train.precision", why)),
    }
}

/// Why f16 cannot run on Flex (`on_flex`) or on `adapter`, if it cannot.
fn f16_refusal(on_flex: bool, adapter: Option<&AdapterSummary>) -> Option<String> {
    let why = match adapter {
        _ if on_flex => "this run is on the CPU (Flex), where sapling computes in f32 only".into(),
        Some(a) if a.shader_f16 => return None,
        Some(a) => format!(
            "the WebGPU adapter {} ({}) has no shader-f16",
            a.name, a.api
        ),
        None => "no WebGPU adapter was opened".to_string(),
    };
    Some(format!(
        "f16 needs a WebGPU adapter with shader-f16 and {why}: use --precision auto (f16 where \
         the adapter has it) or f32"
    ))
}

/// Whether this process's wgpu device is a hardware adapter rather than a software rasteriser
/// (lavapipe, SwiftShader, WARP report themselves as `Cpu`): what decides between kernels
/// shaped for a GPU and ones a CPU runs faster.
pub fn hardware_adapter() -> bool {
    wgpu_adapter().is_some_and(|a| a.device_type != "Cpu")
}

/// The adapter of this process's wgpu device, once it is open.
fn wgpu_adapter() -> Option<AdapterSummary> {
    match WGPU.get() {
        Some(Ok(selected)) => selected.adapter.clone(),
        _ => None,
    }
}

/// burn's wgpu runtime can be initialised once per process, so the first result is kept and
/// handed to every later caller.
static WGPU: OnceLock<std::result::Result<Selected, String>> = OnceLock::new();

fn initialised(
    result: std::result::Result<(Device, burn::tensor::wgpu::WgpuSetup), impl std::fmt::Display>,
) -> std::result::Result<Selected, String> {
    let (device, setup) = result.map_err(|e| format!("no usable WebGPU adapter: {e}"))?;
    Ok(Selected {
        device,
        adapter: Some(AdapterSummary::from_adapter(&setup.adapter)),
    })
}

/// The process's wgpu device.
#[cfg(not(target_family = "wasm"))]
pub fn wgpu_device() -> Result<Selected> {
    WGPU.get_or_init(|| initialised(Device::wgpu_options().init_with_setup()))
        .clone()
        .map_err(SaplingError::Device)
}

/// The wgpu device, acquired without blocking: the only way in a browser, where requesting
/// the adapter and the device are promises.
pub async fn wgpu_device_async() -> Result<Selected> {
    if let Some(done) = WGPU.get() {
        return done.clone().map_err(SaplingError::Device);
    }
    let result = initialised(Device::wgpu_options().init_with_setup_async().await);
    WGPU.get_or_init(|| result)
        .clone()
        .map_err(SaplingError::Device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_is_refused_naming_the_adapter_without_shader_f16() {
        let mut adapter = AdapterSummary {
            name: "SwiftShader Device".into(),
            api: "BrowserWebGpu".into(),
            device_type: "Cpu".into(),
            driver: String::new(),
            limits: AdapterLimits {
                max_buffer_size: 1 << 28,
                max_storage_buffer_binding_size: 1 << 27,
                max_compute_workgroup_storage_size: 16384,
                max_compute_invocations_per_workgroup: 256,
                max_storage_buffers_per_shader_stage: 8,
            },
            shader_f16: false,
        };
        let why = f16_refusal(false, Some(&adapter)).expect("refused");
        assert!(
            why.contains("SwiftShader Device") && why.contains("--precision auto"),
            "{why}"
        );
        assert!(f16_refusal(true, Some(&adapter)).unwrap().contains("CPU"));
        adapter.shader_f16 = true;
        assert_eq!(f16_refusal(false, Some(&adapter)), None);
    }
}
