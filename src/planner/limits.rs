//! What the device allows a step: the largest single tensor and a memory budget.

use serde::{Deserialize, Serialize};

use crate::device::Selected;
use crate::device::peak::meminfo_field;

/// Budget assumed where WebGPU does not report device memory (it never does on its own).
pub const UNKNOWN_MEMORY_BUDGET: u64 = 4 << 30;
/// Share of reported memory the planner may use: the rest is for the data loader, the
/// display, other processes and the allocator's slack.
pub const REPORTED_MEMORY_SHARE: f64 = 0.7;

/// The key of burn's Flex CPU device (see [`DeviceLimits::key`]).
pub const FLEX_KEY: &str = "flex";

/// The limits the batch planner works within.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceLimits {
    /// How logs describe the device.
    pub adapter: String,
    /// Identifies the device across runs: a saved plan is reused only on the same key.
    pub key: String,
    pub max_buffer_size: Option<u64>,
    /// The largest tensor a kernel can bind; `None` on Flex.
    pub max_storage_buffer_binding_size: Option<u64>,
    pub max_compute_workgroup_storage_size: Option<u32>,
    /// Memory the device (or, for CPU devices, the host) reports as available.
    pub device_memory: Option<u64>,
    /// Bytes a step may use.
    pub budget: u64,
    /// The device allocates from host memory (Flex, or a software adapter such as lavapipe),
    /// so what a step keeps on the host counts against the same budget.
    #[serde(default)]
    pub shares_host_memory: bool,
    /// Where the budget came from, for people.
    pub budget_source: String,
    /// Host memory the optimizer's host side may use (the host's available memory, or
    /// `--host-memory` for a machine that is not here); `None` where it is not known.
    #[serde(default)]
    pub host_memory: Option<u64>,
}

impl DeviceLimits {
    /// Reads the limits of `selected`; `budget_mib` overrides the memory budget.
    pub fn of(selected: &Selected, budget_mib: Option<u64>) -> Self {
        let adapter = selected.describe();
        let shares_host_memory = selected.adapter.as_ref().is_none_or(|a| a.is_software());
        let (key, binding, buffer, workgroup, memory) = match &selected.adapter {
            Some(a) => {
                let key = format!("{}|{}|{}|{}", a.api, a.name, a.driver, a.device_type);
                // A CPU adapter (lavapipe, SwiftShader) allocates from host memory.
                let memory = a.is_software().then(host_available_memory).flatten();
                let l = &a.limits;
                (
                    key,
                    Some(l.max_storage_buffer_binding_size.min(l.max_buffer_size)),
                    Some(l.max_buffer_size),
                    Some(l.max_compute_workgroup_storage_size),
                    memory,
                )
            }
            None => (
                FLEX_KEY.to_string(),
                None,
                None,
                None,
                host_available_memory(),
            ),
        };
        let (budget, budget_source) = match (budget_mib, memory) {
            (Some(mib), _) => (mib << 20, "--memory-budget".to_string()),
            (None, Some(m)) => (
                (m as f64 * REPORTED_MEMORY_SHARE) as u64,
                format!(
                    "{:.0}% of available {} memory",
                    REPORTED_MEMORY_SHARE * 100.0,
                    if selected.adapter.is_some() {
                        "host (CPU adapter)"
                    } else {
                        "host"
                    }
                ),
            ),
            (None, None) => (
                UNKNOWN_MEMORY_BUDGET,
                "assumed: WebGPU does not report device memory; set --memory-budget".to_string(),
            ),
        };
        DeviceLimits {
            adapter,
            key,
            max_buffer_size: buffer,
            max_storage_buffer_binding_size: binding,
            max_compute_workgroup_storage_size: workgroup,
            device_memory: memory,
            budget,
            shares_host_memory,
            budget_source,
            host_memory: host_available_memory(),
        }
    }

    /// Whether a step's measured peak holds the optimizer's host side too: on Flex it is the
    /// process's peak resident memory (a wgpu adapter's is its memory pool, device only).
    pub fn peak_holds_host(&self) -> bool {
        self.key == FLEX_KEY
    }

    /// The same device on a host with `bytes` of memory for the optimizer's host side.
    pub fn with_host_memory(mut self, bytes: Option<u64>) -> Self {
        self.host_memory = bytes;
        self
    }

    /// The limits of a device that is not here: a GPU (`gpu`) whose single tensors may not
    /// exceed `binding`, or a CPU, with `budget` bytes for a step.
    pub fn hypothetical(gpu: bool, budget: u64, binding: Option<u64>) -> Self {
        let adapter = match (gpu, binding) {
            (true, Some(b)) => format!(
                "a GPU with a {} budget and {} storage bindings (planned, no device used)",
                super::fmt_bytes(budget),
                super::fmt_bytes(b)
            ),
            (true, None) => format!("a GPU with a {} budget", super::fmt_bytes(budget)),
            (false, _) => format!("a CPU with a {} budget", super::fmt_bytes(budget)),
        };
        DeviceLimits {
            adapter,
            key: "hypothetical".to_string(),
            max_buffer_size: binding,
            max_storage_buffer_binding_size: binding,
            max_compute_workgroup_storage_size: None,
            device_memory: None,
            budget,
            shares_host_memory: !gpu,
            budget_source: "--memory-budget".to_string(),
            host_memory: None,
        }
    }

    /// The same device with other limits, as a smaller adapter or a browser would have them.
    pub fn simulated(mut self, binding: Option<u64>, budget: Option<u64>) -> Self {
        if let Some(b) = binding {
            self.max_storage_buffer_binding_size = Some(b);
            self.max_buffer_size = Some(self.max_buffer_size.map_or(b, |m| m.max(b)));
        }
        if let Some(b) = budget {
            self.budget = b;
            self.budget_source = "simulated".to_string();
        }
        self
    }
}

/// This machine's available memory (`MemAvailable` from `/proc/meminfo`); `None` where there
/// is no such file.
pub fn host_available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_field(&text, "MemAvailable:")
}
