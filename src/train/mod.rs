//! Training: the optimizer step and the loop around it.

/// Metric lines (`metrics.jsonl`).
pub mod metrics;
/// The loop: set-up, logging, checkpoints (the command line's; the browser drives `Trainer`
/// from `web/`).
#[cfg(not(target_family = "wasm"))]
pub mod run;
/// One optimizer step with accumulation and clipping.
pub mod step;

#[cfg(not(target_family = "wasm"))]
pub use run::{RunOptions, RunSummary, train};
pub use step::{PhaseTimes, StepStats, Trainer};
