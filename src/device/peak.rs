//! Peak memory of a stretch of work, as the device reports it: burn's memory pool on wgpu,
//! the process's peak resident set on Flex (whose allocations are plain host memory).

use burn::tensor::Device;

/// Started before the work, read after it.
pub enum PeakMeter {
    /// Bytes the wgpu memory pool had reserved before.
    Pool(u64),
    /// Resident bytes before, after resetting the kernel's high-water mark.
    Rss(u64),
    Unavailable,
}

impl PeakMeter {
    pub fn start(device: &Device) -> Self {
        device.memory_cleanup();
        if let Some(usage) = device.memory_pool_usage() {
            return PeakMeter::Pool(usage.bytes_reserved);
        }
        // Freed heap the allocator kept would be reused silently and hide the next peak.
        release_free_heap();
        // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux ≥ 4.0).
        if std::fs::write("/proc/self/clear_refs", "5").is_ok()
            && let Some(rss) = status_field("VmRSS:")
        {
            return PeakMeter::Rss(rss);
        }
        PeakMeter::Unavailable
    }

    /// The peak above the starting point, and how it was read.
    pub fn finish(self, device: &Device) -> Option<(u64, &'static str)> {
        match self {
            PeakMeter::Pool(before) => device.memory_pool_usage().map(|u| {
                (
                    u.bytes_reserved.saturating_sub(before),
                    "wgpu memory pool, bytes reserved",
                )
            }),
            PeakMeter::Rss(before) => status_field("VmHWM:")
                .map(|hwm| (hwm.saturating_sub(before), "process peak resident memory")),
            PeakMeter::Unavailable => None,
        }
    }
}

/// The process's resident memory now, where the OS reports it (Linux).
pub fn resident_bytes() -> Option<u64> {
    status_field("VmRSS:")
}

fn status_field(field: &str) -> Option<u64> {
    meminfo_field(&std::fs::read_to_string("/proc/self/status").ok()?, field)
}

/// Hands the allocator's free heap back to the system (mimalloc and glibc keep it otherwise).
#[cfg(not(target_family = "wasm"))]
fn release_free_heap() {
    crate::alloc::release_free_memory();
}

#[cfg(target_family = "wasm")]
fn release_free_heap() {}

/// A `kB` field of `/proc/meminfo`-style text, in bytes.
pub fn meminfo_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}
