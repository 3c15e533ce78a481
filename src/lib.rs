//! sapling: masked-autoencoder pretraining of vision transformers (as Meta's Sapiens) on any
//! GPU through WebGPU, with burn's Flex CPU backend as the fallback.
//!
//! A step: the [`data`] loader yields augmented micro-batches; [`model`] masks each sample
//! ([`model::MaskPlan`]), encodes the visible patches, decodes with mask tokens and scores the
//! removed patches, every heavy operation going through [`ops`] (burn's maths, or sapling's
//! [`kernels`]); [`train::Trainer`] accumulates gradients, clips their global norm and steps
//! AdamW at the lr of [`optim::Schedule`]. See `ARCHITECTURE.md` for the layers.

/// The binary's allocator (mimalloc) and the planner's request to release free memory.
#[cfg(not(target_family = "wasm"))]
pub mod alloc;
/// Crash-safe file writes.
pub mod atomic;
/// Benchmarks printed as side-by-side ratios (command line only).
#[cfg(not(target_family = "wasm"))]
pub mod bench;
/// Checkpoints: atomic, verified, resumable.
pub mod checkpoint;
/// Command-line flags and their resolution into a config.
#[cfg(not(target_family = "wasm"))]
pub mod cli;
/// The typed run configuration and presets.
pub mod config;
/// Dispatches, uploads and readbacks, counted for the benchmarks.
pub mod counts;
/// Image sources, augmentation and background loading.
pub mod data;
/// Device selection (WebGPU or Flex), adapter descriptions, peak memory.
pub mod device;
/// Data-parallel training over MPI.
pub mod dist;
/// Typed errors.
pub mod error;
/// Evaluation of the frozen encoder: linear probe and k-NN.
pub mod eval;
/// The encoder as timm-layout safetensors.
pub mod export;
/// Released weights in: MAE, Sapiens, timm and Hugging Face files (`.pth` natively; safetensors
/// everywhere, from memory in a browser).
pub mod import;
/// Hand-written WGSL and CPU kernels.
pub mod kernels;
/// The names and layouts released ViT/MAE weights come in.
pub mod layout;
/// The masked autoencoder.
pub mod model;
/// The model's operations on the run's kernels.
pub mod ops;
/// AdamW groups, clipping, the lr schedule.
pub mod optim;
/// Batch planning: limits, the memory model, the search over micro-batches.
pub mod planner;
/// Progress of long commands on stderr.
pub mod progress;
/// Seed derivation.
pub mod seed;
/// TensorBoard event files (native: files on disk).
#[cfg(not(target_family = "wasm"))]
pub mod tensorboard;
/// Timing work on a device.
pub mod timing;
/// The training step, its timer and trials, and the loop.
pub mod train;
/// Pictures: reconstruction grids.
pub mod viz;

pub use error::{Result, SaplingError};
