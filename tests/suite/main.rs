//! sapling's integration tests, in one binary so burn is linked once.
//!
//! Run with `cargo test --release`. Tests that need a WebGPU adapter skip (saying why) when
//! there is none, and fail instead when `SAPLING_REQUIRE_GPU=1`.

mod async_paths;
mod both_arms;
mod checkpointing;
mod common;
mod config;
mod console;
mod cpu_kernels;
mod crafted;
mod data;
mod dist;
mod examples;
mod faults;
mod import;
mod kernels;
mod knn;
mod layers;
mod lineage;
mod model;
#[cfg(feature = "mpi")]
mod mpi;
mod offload;
mod optim;
mod outputs;
mod planner;
mod precision;
mod pytorch_numbers;
mod resume;
mod shards;
mod tensorboard;
mod training;
mod wgpu_parity;
