//! Data-parallel training over MPI: the world of processes, and the host-side all-reduce of
//! gradients in buckets.
//!
//! Burn 0.22's own collectives do not cover wgpu or Flex, so each rank reads its gradients
//! back in buckets, MPI sums them on the host, and every rank uploads the mean and takes the
//! identical AdamW step. Without the `mpi` feature (or without `mpirun`) the world is one
//! process and the same code path runs with nothing to exchange.

/// Parameters and gradients as flat host buffers, in module order.
pub mod flat;
/// Bucketed gradient all-reduce, with and without overlap.
pub mod reduce;
/// The process group: a world of one, or MPI's world.
pub mod world;

pub use reduce::{ReduceStats, add_placed_into, all_reduce_grads, broadcast_weights};
pub use world::{Collective, Solo, World};
