//! Benchmarks: figures measured side by side in one run, printed as ratios (never timed tests).

/// The batch planner's choice against a sweep of every micro-batch.
pub mod batch_sweep;

pub use batch_sweep::{SweepReport, SweepRow, batch_sweep};
