//! What a trial step at one micro-batch measured. The trials themselves run the real training
//! step, so they live with it (`train::trial`); the planner only reads their results.

use serde::{Deserialize, Serialize};

use super::levers::Levers;

/// What one micro-batch size did on the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub micro_batch: usize,
    /// Why the size was rejected; `None` when every step ran.
    pub error: Option<String>,
    /// Median forward + backward time of one micro-batch, after the first step.
    pub forward_backward_ms: f64,
    /// Median clipping + AdamW time.
    pub optimizer_ms: f64,
    /// Images per second of a whole optimizer step at the plan's accumulation, from the two
    /// phases: `effective / (accum · forward_backward + optimizer)`.
    pub images_per_sec: f64,
    /// The memory model's peak for this size.
    pub predicted_peak: u64,
    /// Peak memory the device reported over the trial, where it reports one.
    pub measured_peak: Option<u64>,
    /// How `measured_peak` was read.
    pub measured_by: Option<String>,
    /// The levers the trial ran with.
    #[serde(default)]
    pub levers: Option<Levers>,
}

impl Trial {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// How much to try for real.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrialOptions {
    /// Most micro-batch sizes to run for real, largest first (0: trust the memory model).
    pub sizes: usize,
    /// Timed steps per size, after one warm-up step.
    pub steps: usize,
}

impl TrialOptions {
    /// The memory model alone, no step run.
    pub const MODEL_ONLY: TrialOptions = TrialOptions { sizes: 0, steps: 0 };
}

impl Default for TrialOptions {
    fn default() -> Self {
        TrialOptions { sizes: 6, steps: 5 }
    }
}
