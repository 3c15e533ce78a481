//! Benchmarks: figures measured side by side in one run, printed as ratios (never timed tests).

/// The batch planner's choice against a sweep of every micro-batch.
pub mod batch_sweep;
/// A weights file's import, timed.
pub mod import;
/// Each WGSL kernel against its reference.
pub mod kernels;
/// The data loader alone against a step's demand.
pub mod loader;
/// Weights, batches, masks and results of a few steps, for the PyTorch reference.
pub mod reference;
/// Steps/s against micro-batch and tokens, plotted.
pub mod scaling;
/// One training step, phase by phase, with FLOPs.
pub mod step;

pub use batch_sweep::{SweepReport, SweepRow, batch_sweep};
pub use import::{ImportTiming, time_import};
pub use kernels::{KernelCase, KernelReport, bench_kernels};
pub use loader::{LoaderBench, LoaderRow, bench_loader, loader_rate};
pub use reference::{ReferenceCase, write_reference_case};
pub use scaling::{Scaling, ScalingPoint, Sweeps, scaling};
pub use step::{StepBench, bench_step, matmul_rate};
