//! Optimisation: AdamW groups, global clipping, the learning-rate schedule.

/// AdamW with a decay and a no-decay group.
pub mod adamw;
/// Global gradient-norm clipping.
pub mod clip;
/// The weight-decay rule and parameter paths.
pub mod decay;
/// Linear warmup then half-cycle cosine.
pub mod schedule;

pub use adamw::adamw;
pub use schedule::{Schedule, scaled_lr};
