//! Batch size by probing the device: its limits, a memory model of one step, and real trial
//! steps, giving a micro-batch and the accumulation that keeps the effective batch.

/// The device's limits and the memory budget.
pub mod limits;
/// The analytic memory model of a step.
pub mod memory;
/// Peak-memory readings around a stretch of work.
pub mod peak;
/// Choosing micro-batch and accumulation.
pub mod plan;
/// How a plan prints.
mod report;
/// Real trial steps.
pub mod trial;

pub use limits::DeviceLimits;
pub use memory::{StepMemory, fmt_bytes, step_memory};
pub use plan::{BatchPlan, PlanSource, ProbeOptions, plan, plan_async, plan_for_run};
pub use trial::{Trial, run_trial, run_trial_async};
