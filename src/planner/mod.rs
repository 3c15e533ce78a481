//! Batch planning: the device's limits, a memory model of one step, and a search over the
//! micro-batches that fit, giving a micro-batch and the accumulation that keeps the effective
//! batch. The search asks its caller to run trial steps (`train::trial` runs the real
//! training step), so planning itself never builds a model.

/// The memory levers and which a config allows.
pub mod levers;
/// The device's limits and the memory budget.
pub mod limits;
/// The analytic memory model of a step.
pub mod memory;
/// How a plan prints.
mod report;
/// Choosing micro-batch and accumulation.
pub mod search;
/// Every combination of levers from the memory model alone (`sapling plan`).
pub mod table;
/// What a trial step measured.
pub mod trial;

pub use levers::{Levers, Offload};
pub use limits::{DeviceLimits, host_available_memory as host_memory};
pub use memory::{StepMemory, fmt_bytes, step_memory};
pub use search::{BatchPlan, Candidate, PlanSource, candidates, fitting, misfit, reusable, search};
pub use table::{LeverRow, LeverTable, lever_table};
pub use trial::{Trial, TrialOptions};
