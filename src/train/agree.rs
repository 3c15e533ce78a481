//! MPI ranks agree, before any of them trains, on what they were started with: the same
//! config, data of the same length, the same start step and checkpoint. Ranks that disagree
//! would otherwise deadlock in mismatched collectives or silently train on inconsistent shards.

use std::hash::{DefaultHasher, Hash, Hasher};

use super::run::RunOptions;
use crate::config::Config;
use crate::dist::Collective;
use crate::error::{Result, SaplingError};

/// Config fields that may differ between ranks: where each machine keeps its data, how it
/// loads it, and its device and memory (the batch plan is then agreed across ranks).
const PER_MACHINE: [&str; 8] = [
    "data.dir",
    "data.workers",
    "data.prefetch",
    "train.device",
    "train.kernels",
    "train.memory_budget_mib",
    "train.batch_size",
    "train.activation_checkpointing",
];

/// Fails on every rank, naming the first difference, unless all ranks agree.
pub(super) fn agree(
    config: &Config,
    options: &RunOptions,
    data_len: usize,
    world: &dyn Collective,
) -> Result<()> {
    if world.size() == 1 {
        return Ok(());
    }
    let facts = facts(config, options, data_len);
    let all = world.all_gather_u64(hash(&facts));
    if all.iter().all(|&h| h == all[0]) {
        return Ok(());
    }
    // Every rank gathered the same hashes, so every rank walks this list, in this order.
    for (name, value) in &facts {
        let values = world.all_gather_u64(hash(value));
        if let Some(rank) = values.iter().position(|&v| v != values[0]) {
            return Err(SaplingError::Ranks(format!(
                "{name} differs between rank 0 and rank {rank} (on rank {}: {value}); start \
                 every rank with the same config, data and checkpoint",
                world.rank()
            )));
        }
    }
    // Same facts, different hashes: a different number of facts (another sapling version).
    Err(SaplingError::Ranks(
        "the ranks run different versions of sapling".into(),
    ))
}

/// What must be equal on every rank, named for a person, with its value here.
fn facts(config: &Config, options: &RunOptions, data_len: usize) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    flatten(
        "",
        &serde_json::to_value(config).unwrap_or_default(),
        &mut fields,
    );
    let mut facts: Vec<(String, String)> = fields
        .into_iter()
        .filter(|(field, _)| !PER_MACHINE.contains(&field.as_str()))
        .map(|(field, value)| (format!("config field `{field}`"), value))
        .collect();
    facts.push((
        "the number of images in the data".into(),
        data_len.to_string(),
    ));
    let (step, checkpoint) = options.resume.as_ref().map_or((0, "none".into()), |l| {
        (
            l.state.step,
            format!(
                "run {} step {} after {} samples",
                l.state.run, l.state.step, l.state.samples
            ),
        )
    });
    facts.push(("the start step".into(), step.to_string()));
    facts.push(("the checkpoint resumed from".into(), checkpoint));
    facts
}

/// Every leaf of `value` under `path`, named by its dotted path (`train.seed`).
fn flatten(path: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                let child = match path {
                    "" => key.clone(),
                    _ => format!("{path}.{key}"),
                };
                flatten(&child, v, out);
            }
        }
        leaf => out.push((path.to_string(), leaf.to_string())),
    }
}

fn hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}
