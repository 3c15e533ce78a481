//! Training: the optimizer step, the timer and trials built on it, and the loop around it.

/// MPI ranks agreeing on how they were started.
#[cfg(not(target_family = "wasm"))]
mod agree;
/// The output folder: its lock, and one run per folder.
#[cfg(not(target_family = "wasm"))]
mod folder;
/// The host's running gradient sums, read back on a thread of their own.
mod grad_sums;
/// AdamW on the host: offloaded on one rank, sharded over MPI ranks (ZeRO-Offload, ZeRO-1).
mod host_adamw;
/// A run's starting weights: MAE's initialisation or `train.init_from`.
#[cfg(not(target_family = "wasm"))]
mod init;
/// Metric lines (`metrics.jsonl`).
pub mod metrics;
/// TensorBoard event files and the k-NN monitor.
#[cfg(not(target_family = "wasm"))]
mod monitor;
/// What a run writes after each step.
#[cfg(not(target_family = "wasm"))]
mod outputs;
/// Activation checkpointing: backward stage by stage, recomputing each.
mod recompute;
/// The loop (the command line's; the browser drives `Trainer` from `web/`).
#[cfg(not(target_family = "wasm"))]
pub mod run;
/// Setting a run's own files aside (a branch, an `--overwrite`) instead of deleting them.
#[cfg(not(target_family = "wasm"))]
mod set_aside;
/// Setting a run up.
#[cfg(not(target_family = "wasm"))]
mod setup;
/// One optimizer step with accumulation and clipping.
pub mod step;
/// Running totals and the end-of-run summary.
#[cfg(not(target_family = "wasm"))]
mod summary;
/// The step timer.
pub mod timer;
/// Trial steps for the batch planner.
pub mod trial;

#[cfg(not(target_family = "wasm"))]
pub use init::initial_trainer;
#[cfg(not(target_family = "wasm"))]
pub use run::{Console, RunOptions, RunSummary, train};
pub use step::{PhaseTimes, StepStats, Timing, Trainer};
pub use timer::{StepCounts, TimedSteps, count_steps, fresh_trainer, time_fresh, time_steps};
pub use trial::{lever_options, plan_async, run_trial_async};
#[cfg(not(target_family = "wasm"))]
pub use trial::{plan, plan_for_run, plan_in_world, run_trial};
