//! The masked autoencoder and its parts; every heavy operation goes through `ops`.

/// Transformer blocks: attention, MLP, pre-norm block.
pub mod block;
/// Analytic FLOP counts.
pub mod flops;
/// MAE's initialisation helpers.
pub mod init;
/// The masked mean of the per-patch loss.
pub mod loss;
/// The encoder/decoder model and its analytic parameter count.
pub mod mae;
/// Per-sample random masking drawn on the CPU.
pub mod masking;
/// Fixed 2-D sin-cos position embeddings.
pub mod pos_embed;

pub use flops::{FlopCount, flops_per_image};
pub use mae::{MaeOutput, MaskedAutoencoder, MaskedBatch, ParamCount, Stage, analytic_params};
pub use masking::MaskPlan;
