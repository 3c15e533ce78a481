//! What every combination of levers allows, from the memory model alone: the question people
//! ask before they buy or rent a GPU (`sapling plan`).

use std::fmt;

use serde::Serialize;

use super::levers::{Levers, Offload, options};
use super::limits::DeviceLimits;
use super::memory::{fmt_bytes, step_memory};
use super::search::{Candidate, SAFETY_MARGIN, candidates, misfit};
use crate::config::{Checkpointing, Config, Switch};

/// One set of levers: the largest micro-batch it fits, or why not even 1 does.
#[derive(Debug, Clone, Serialize)]
pub struct LeverRow {
    pub levers: Levers,
    /// The largest micro-batch dividing the per-rank effective batch that fits, with its step.
    pub largest: Option<Candidate>,
    /// Why a micro-batch of 1 does not fit, when none does.
    pub why_not: Option<String>,
}

/// Every set of levers for one model, device and rank count.
#[derive(Debug, Clone, Serialize)]
pub struct LeverTable {
    pub preset: String,
    pub limits: DeviceLimits,
    pub ranks: usize,
    /// Images per optimizer step over all ranks.
    pub effective_batch: usize,
    pub rows: Vec<LeverRow>,
    /// What the planner picks with `config`'s own settings (without trials: the largest
    /// micro-batch that fits, with the cheapest levers that make it fit).
    pub chosen: Option<Candidate>,
}

/// The table for `config` on a Flex (`on_flex`) or wgpu device with `limits`, each of `ranks`
/// ranks taking an equal share of the effective batch.
pub fn lever_table(
    config: &Config,
    on_flex: bool,
    limits: &DeviceLimits,
    ranks: usize,
) -> LeverTable {
    let share = config.train.effective_batch / ranks.max(1);
    let model = &config.model;
    // Every lever the config and device allow, checkpointing and sharding on and off.
    let mut every = config.clone();
    every.train.activation_checkpointing = Checkpointing::Auto;
    every.train.shard_optimizer = Switch::Auto;
    every.train.offload_optimizer = Switch::Auto;
    let max_tensor = limits.max_storage_buffer_binding_size;
    let rows = options(&every, on_flex, max_tensor, ranks)
        .into_iter()
        .map(|levers| {
            let largest = candidates(model, &[levers], share, limits)
                .into_iter()
                .next();
            let why_not = largest
                .is_none()
                .then(|| misfit(&step_memory(model, 1, share, levers), limits).unwrap_or_default());
            LeverRow {
                levers,
                largest,
                why_not,
            }
        })
        .collect();
    let chosen = candidates(
        model,
        &options(config, on_flex, max_tensor, ranks),
        share,
        limits,
    )
    .into_iter()
    .next();
    LeverTable {
        preset: config.preset.name().to_string(),
        limits: limits.clone(),
        ranks,
        effective_batch: config.train.effective_batch,
        rows,
        chosen,
    }
}

impl fmt::Display for LeverTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} on {}, {} rank{}, {} images per optimizer step",
            self.preset,
            self.limits.adapter,
            self.ranks,
            if self.ranks == 1 { "" } else { "s" },
            self.effective_batch
        )?;
        if let Some(host) = self.limits.host_memory {
            writeln!(
                f,
                "host memory {} (the optimizer's host side)",
                fmt_bytes(host)
            )?;
        }
        writeln!(
            f,
            "{:<10} {:<10} {:<10} {:>6} {:>7} {:>11} {:>11} {:>11}  largest tensor",
            "kernels", "checkpoint", "optimizer", "micro", "accum", "peak", "host", "moved/step"
        )?;
        for row in &self.rows {
            let (k, c) = (row.levers.kernels.name(), checkpointing(row.levers));
            let o = optimizer(row.levers);
            match &row.largest {
                Some(best) => {
                    let accum = self.effective_batch / self.ranks.max(1) / best.micro_batch;
                    let m = &best.memory;
                    let moved = m.readback_per_micro_batch * accum as u64 + m.upload_per_step;
                    let or_dash = |b: u64| if b > 0 { fmt_bytes(b) } else { "-".to_string() };
                    writeln!(
                        f,
                        "{k:<10} {c:<10} {o:<10} {:>6} {accum:>7} {:>11} {:>11} {:>11}  {} ({})",
                        best.micro_batch,
                        fmt_bytes(m.total),
                        or_dash(m.host),
                        or_dash(moved),
                        fmt_bytes(m.largest.bytes),
                        m.largest.name
                    )?
                }
                None => writeln!(
                    f,
                    "{k:<10} {c:<10} {o:<10} {:>6}  does not fit: {}",
                    "-",
                    row.why_not.as_deref().unwrap_or("")
                )?,
            }
        }
        match &self.chosen {
            Some(c) => write!(
                f,
                "planned    micro-batch {} ({}) with the config's settings; peaks are held \
                 to {:.0}% of the {} budget",
                c.micro_batch,
                c.levers.describe(),
                SAFETY_MARGIN * 100.0,
                fmt_bytes(self.limits.budget),
            ),
            None => write!(f, "planned    nothing fits with the config's settings"),
        }
    }
}

fn checkpointing(levers: Levers) -> &'static str {
    if levers.checkpointing {
        "blocks"
    } else {
        "off"
    }
}

fn optimizer(levers: Levers) -> String {
    match (levers.shards, levers.offload) {
        (1, Offload::Off) => "device".to_string(),
        (1, Offload::Optimizer) => "offload".to_string(),
        (1, Offload::Gradients) => "offload+g".to_string(),
        (n, _) => format!("sharded/{n}"),
    }
}
