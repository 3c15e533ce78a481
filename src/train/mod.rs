//! Training: the optimizer step and the loop around it.

/// Metric lines (`metrics.jsonl`).
pub mod metrics;
/// The loop: set-up, logging, checkpoints.
pub mod run;
/// One optimizer step with accumulation and clipping.
pub mod step;

pub use run::{RunOptions, RunSummary, train};
pub use step::{PhaseTimes, StepStats, Trainer};
