//! sapling: masked-autoencoder pretraining of vision transformers (as Meta's Sapiens) on any
//! GPU through WebGPU, with burn's Flex CPU backend as the fallback.
//!
//! A step: the [`data`] loader yields augmented micro-batches; [`model`] masks each sample
//! ([`model::MaskPlan`]), encodes the visible patches, decodes with mask tokens and scores the
//! removed patches; [`train::Trainer`] accumulates gradients, clips their global norm and steps
//! AdamW at the lr of [`optim::Schedule`]. See `ARCHITECTURE.md`.

/// The binary's allocator (mimalloc) and the probe's request to release free memory.
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
pub mod cli;
/// The typed run configuration and presets.
pub mod config;
/// Image sources, augmentation and background loading.
pub mod data;
/// Device selection (WebGPU or Flex) and adapter descriptions.
pub mod device;
/// Data-parallel training over MPI.
pub mod dist;
/// Typed errors.
pub mod error;
/// Evaluation: linear probing.
pub mod eval;
/// The encoder as timm-layout safetensors.
pub mod export;
/// Hand-written WGSL kernels and their references.
pub mod kernels;
/// The masked autoencoder.
pub mod model;
/// AdamW groups, clipping, the lr schedule.
pub mod optim;
/// Batch size by probing the device.
pub mod probe;
/// Seed derivation.
pub mod seed;
/// The training step and loop.
pub mod train;
/// Pictures: reconstruction grids.
pub mod viz;

pub use error::{Result, SaplingError};
