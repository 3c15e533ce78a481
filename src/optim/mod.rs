//! Optimisation: AdamW groups, global clipping, the learning-rate schedule, loss scaling.

/// AdamW with a decay and a no-decay group.
pub mod adamw;
/// Global gradient-norm clipping.
pub mod clip;
/// The weight-decay rule and parameter paths.
pub mod decay;
/// Dynamic loss scaling for f16.
pub mod loss_scale;
/// Linear warmup then half-cycle cosine.
pub mod schedule;
/// Moments handed between burn's optimizer and the host optimizer (checkpoints resumed
/// across the offload lever).
pub mod transfer;

pub use adamw::{GradFactor, adamw};
pub use loss_scale::{LossScale, Verdict};
pub use schedule::{Schedule, scaled_lr};
