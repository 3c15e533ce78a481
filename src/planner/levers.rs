//! The levers a step can pull to need less memory, each at some other cost, and which of them
//! a config allows on a device.

use serde::{Deserialize, Serialize};

use crate::config::{Checkpointing, Config, KernelChoice, Switch};
use crate::device::resolve_precision;
use crate::ops::{Kernels, Ops, Precision};

/// How a step runs, as far as its memory is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Levers {
    /// The operations' implementation: the WGSL kernels keep neither the `[B, H, N, N]`
    /// attention scores nor the `[B, L, P]` patch tensors.
    pub kernels: Kernels,
    /// Keep only each block's input and recompute the block during backward (a second forward
    /// pass: 18–25 % of a step's throughput where measured, BENCHMARKS.md).
    pub checkpointing: bool,
    /// Compute a layer whose activations would exceed this many bytes (a GPU's storage-binding
    /// limit) in pieces: q, k and v apart instead of packed, the MLP over token pieces. The
    /// same memory in smaller tensors; `None` never splits.
    #[serde(default)]
    pub max_tensor: Option<u64>,
    /// MPI ranks AdamW's moments and master weights are split over, kept on the host, with
    /// gradients summed on the host (1: not sharded).
    #[serde(default = "one")]
    pub shards: usize,
    /// AdamW's moments and master weights on the host (sharding, `shards > 1`, is always
    /// offloaded, with gradients summed on the host).
    #[serde(default)]
    pub offload: Offload,
    /// What matmuls and activations compute in: f16 halves most saved activations.
    #[serde(default)]
    pub precision: Precision,
}

fn one() -> usize {
    1
}

/// How much of the optimizer lives on the host (ZeRO-Offload's choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Offload {
    /// Everything on the device.
    #[default]
    Off,
    /// AdamW's moments and master weights on the host; gradients summed on the device and
    /// read back once per optimizer step, the weights uploaded once.
    Optimizer,
    /// Also every micro-batch's gradients read back, stage by stage, and summed on the host:
    /// the device holds the weights and one stage's gradients, and moves the weights' bytes
    /// across the bus every micro-batch.
    Gradients,
}

impl Levers {
    /// The levers `config` asks for outright on a Flex (`on_flex`) or wgpu device: `auto`
    /// kernels as [`Kernels::resolve`] has them, checkpointing only when asked for by name.
    pub fn of(config: &Config, on_flex: bool) -> Levers {
        *options(config, on_flex, None, 1)
            .first()
            .expect("every config allows at least one set of levers")
    }

    /// Whether AdamW runs on the host, offloaded on one rank or sharded over several.
    pub fn host_optimizer(&self) -> bool {
        self.offload != Offload::Off || self.shards > 1
    }

    /// Whether every micro-batch's gradients are summed on the host.
    pub fn grads_on_host(&self) -> bool {
        self.offload == Offload::Gradients || self.shards > 1
    }

    /// The operations these levers run a step on.
    pub fn ops(&self) -> Ops {
        Ops {
            kernels: self.kernels,
            precision: self.precision,
            max_tensor: self.max_tensor,
            tiled_attention: false,
        }
    }

    /// One line for people: "kernels wgsl, checkpointing blocks, optimizer sharded over 4".
    pub fn describe(&self) -> String {
        let checkpointing = if self.checkpointing {
            "checkpointing blocks"
        } else {
            "no checkpointing"
        };
        let sharded = match (self.shards, self.offload) {
            (1, Offload::Off) => String::new(),
            (1, Offload::Optimizer) => ", optimizer offloaded".to_string(),
            (1, Offload::Gradients) => ", optimizer and gradients offloaded".to_string(),
            (n, _) => format!(", optimizer sharded over {n}"),
        };
        let precision = match self.precision {
            Precision::F32 => "",
            Precision::F16 => ", f16",
        };
        format!(
            "kernels {}, {checkpointing}{sharded}{precision}",
            self.kernels
        )
    }
}

/// Every set of levers `config` allows on a Flex (`on_flex`) or wgpu device whose single
/// tensors may not exceed `max_tensor`, in a world of `ranks`, cheapest first: what costs time
/// comes last. `auto` kernels on wgpu are the WGSL kernels (less memory, a quarter fewer
/// launches per step, and a correct gradient norm past 2¹⁸ elements per tensor; see
/// `Ops::squared_sum`), `auto` checkpointing may turn it on, and `auto` offloading or sharding
/// too (after checkpointing: it reads every gradient back each micro-batch). On one rank the
/// host optimizer is the offloaded one; on several it is sharded over all of them.
pub fn options(
    config: &Config,
    on_flex: bool,
    max_tensor: Option<u64>,
    ranks: usize,
) -> Vec<Levers> {
    let kernels: Vec<Kernels> = match (config.train.kernels, on_flex) {
        (KernelChoice::Auto, true) => vec![Kernels::Cpu],
        (KernelChoice::Auto, false) => vec![Kernels::Wgsl],
        (KernelChoice::Reference, _) => vec![Kernels::Reference],
        (KernelChoice::Wgsl, _) => vec![Kernels::Wgsl],
        (KernelChoice::Cpu, _) => vec![Kernels::Cpu],
    };
    let checkpointing: &[bool] = match config.train.activation_checkpointing {
        Checkpointing::Off => &[false],
        Checkpointing::Blocks => &[true],
        Checkpointing::Auto => &[false, true],
    };
    // Whether AdamW runs on the host: asked for by either switch, refused by either. Over
    // several ranks it is sharded, with gradients summed on the host; on one rank the
    // gradients follow only where nothing fits otherwise (see `search::candidates`).
    let host: &[bool] = match (config.train.shard_optimizer, config.train.offload_optimizer) {
        (Switch::On, _) if ranks > 1 => &[true],
        (_, Switch::On) => &[true],
        (Switch::Off, _) if ranks > 1 => &[false],
        (_, Switch::Off) => &[false],
        _ => &[false, true],
    };
    let offloads: Vec<(usize, Offload)> = host
        .iter()
        .flat_map(|&host| match (host, ranks > 1) {
            (false, _) => vec![(1, Offload::Off)],
            (true, true) => vec![(ranks, Offload::Gradients)],
            (true, false) => vec![(1, Offload::Optimizer), (1, Offload::Gradients)],
        })
        .collect();
    let precision = resolve_precision(config.train.precision, on_flex);
    let mut all = Vec::new();
    for &(shards, offload) in &offloads {
        for &checkpointing in checkpointing {
            for &kernels in &kernels {
                all.push(Levers {
                    kernels,
                    checkpointing,
                    max_tensor,
                    shards,
                    offload,
                    precision,
                });
            }
        }
    }
    all
}
