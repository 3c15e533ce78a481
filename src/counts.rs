//! What the process asks of its device: compute dispatches, host-to-device uploads and
//! device-to-host readbacks, counted so a benchmark can report them per training step.
//!
//! Dispatches come from cubecl itself: its launch observer sees every kernel any client
//! issues — burn's (fused element-wise blocks count once), autotune's and sapling's WGSL
//! kernels — on the issuing thread, before the kernel reaches the server. cubecl has no such
//! hook for buffer writes and reads, so sapling counts its own: every upload and readback a
//! training step makes goes through a call site that records it here ([`uploaded`],
//! [`read_back`]). The counters are process-wide because the observer slot they sit beside is;
//! a count is always a difference between two [`DeviceCounts`] snapshots.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use burn::cubecl::logging::{LaunchObservation, LaunchObserver};
use serde::Serialize;

static UPLOADS: AtomicU64 = AtomicU64::new(0);
static UPLOAD_BYTES: AtomicU64 = AtomicU64::new(0);
static READBACKS: AtomicU64 = AtomicU64::new(0);

/// Records one upload of `bytes` from the host to a device buffer.
pub fn uploaded(bytes: usize) {
    UPLOADS.fetch_add(1, Ordering::Relaxed);
    UPLOAD_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
}

/// Records one readback from the device to the host.
pub fn read_back() {
    READBACKS.fetch_add(1, Ordering::Relaxed);
}

/// Totals since the process started (or, as a difference, over a stretch of work).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct DeviceCounts {
    pub dispatches: u64,
    pub uploads: u64,
    pub upload_bytes: u64,
    pub readbacks: u64,
}

impl DeviceCounts {
    /// `self - earlier`, divided by `steps`: the mean per step of the work between the two.
    pub fn per_step_since(&self, earlier: &DeviceCounts, steps: u64) -> DeviceCounts {
        let per = |a: u64, b: u64| (a - b) / steps.max(1);
        DeviceCounts {
            dispatches: per(self.dispatches, earlier.dispatches),
            uploads: per(self.uploads, earlier.uploads),
            upload_bytes: per(self.upload_bytes, earlier.upload_bytes),
            readbacks: per(self.readbacks, earlier.readbacks),
        }
    }
}

/// Counts every kernel launch for as long as it lives.
pub struct Counting {
    dispatches: Arc<DispatchCounter>,
    _observation: LaunchObservation,
}

#[derive(Default)]
struct DispatchCounter {
    total: AtomicU64,
    by_kernel: Mutex<BTreeMap<&'static str, u64>>,
}

impl LaunchObserver for DispatchCounter {
    fn launched(&self, kernel: &'static str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut by_kernel) = self.by_kernel.lock() {
            *by_kernel.entry(kernel).or_default() += 1;
        }
    }
}

impl Counting {
    /// Starts observing launches (replacing any other observer until this drops).
    pub fn start() -> Counting {
        let dispatches = Arc::new(DispatchCounter::default());
        let observation = LaunchObservation::new(dispatches.clone());
        Counting {
            dispatches,
            _observation: observation,
        }
    }

    /// The counts so far: dispatches since [`Counting::start`], transfers since the process
    /// started.
    pub fn snapshot(&self) -> DeviceCounts {
        DeviceCounts {
            dispatches: self.dispatches.total.load(Ordering::Relaxed),
            uploads: UPLOADS.load(Ordering::Relaxed),
            upload_bytes: UPLOAD_BYTES.load(Ordering::Relaxed),
            readbacks: READBACKS.load(Ordering::Relaxed),
        }
    }

    /// Launches since [`Counting::start`] by kernel (named as cubecl names it, shortened), most
    /// first: where the dispatches of a step go.
    pub fn by_kernel(&self) -> Vec<(String, u64)> {
        let by_kernel = self.dispatches.by_kernel.lock().map(|m| m.clone());
        let mut merged = BTreeMap::<String, u64>::new();
        for (name, n) in by_kernel.unwrap_or_default() {
            *merged.entry(short_name(name)).or_default() += n;
        }
        let mut rows: Vec<_> = merged.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rows
    }
}

/// A kernel's name without its module path and generic arguments (cubecl names kernels by
/// their Rust type).
fn short_name(name: &str) -> String {
    let stem = name.split('<').next().unwrap_or(name);
    stem.rsplit("::").next().unwrap_or(stem).to_string()
}
