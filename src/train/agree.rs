//! MPI ranks agree, before any of them trains, on what they were started with: the same
//! config, data of the same length, the same start step and checkpoint. Ranks that disagree
//! would otherwise deadlock in mismatched collectives or silently train on inconsistent shards.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

use super::run::RunOptions;
use crate::config::Config;
use crate::dist::Collective;
use crate::error::{Result, SaplingError};

/// Config fields that may differ between ranks: where each machine keeps its data, how it
/// loads it, and its device and memory (the batch plan is then agreed across ranks).
const PER_MACHINE: [&str; 9] = [
    "data.dir",
    "data.workers",
    "data.prefetch",
    "train.device",
    "train.kernels",
    "train.memory_budget_mib",
    "train.batch_size",
    "train.activation_checkpointing",
    // Only rank 0 evaluates k-NN.
    "train.knn_data",
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
    // Ranks of one job must run the same program: another version or build could step, count
    // or name things differently while agreeing on every setting.
    facts.push(("sapling's version".into(), env!("CARGO_PKG_VERSION").into()));
    facts.push(("sapling's build features".into(), build_features()));
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

/// With the optimizer sharded, every rank writes its shard of each checkpoint into the folder
/// rank 0 claimed, so every rank must see that folder (one file system, not node-local disks):
/// rank 0 writes a token file there, and every rank looks for it, before the first step rather
/// than at the first checkpoint.
pub(super) fn check_shared_out(out: &Path, world: &dyn Collective) -> Result<()> {
    let mine = if world.rank() == 0 {
        let nanos = web_time::SystemTime::now()
            .duration_since(web_time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ u64::from(std::process::id()).rotate_left(32) | 1
    } else {
        0
    };
    let token = world.all_gather_u64(mine)[0];
    let path = out.join(format!(".sapling-ranks-{token:016x}"));
    let wrote = world.rank() != 0 || crate::atomic::write(&path, &token.to_le_bytes()).is_ok();
    world.barrier();
    let sees = wrote && std::fs::read(&path).is_ok_and(|b| b == token.to_le_bytes());
    let seen = world.all_gather_u64(u64::from(sees));
    world.barrier();
    if world.rank() == 0 {
        let _ = std::fs::remove_file(&path);
    }
    let blind: Vec<String> = (0..seen.len())
        .filter(|&r| seen[r] == 0)
        .map(|r| r.to_string())
        .collect();
    if blind.is_empty() {
        return Ok(());
    }
    Err(SaplingError::Ranks(format!(
        "rank(s) {} cannot see the output folder {} that rank 0 writes into; with the optimizer \
         sharded every rank writes its part of each checkpoint there. Put --out on a file system \
         every node shares (NFS, Lustre), or train with --shard-optimizer false",
        blind.join(", "),
        out.display()
    )))
}

/// The cargo features this binary was built with (those that change what a rank computes or
/// how it talks to the others).
fn build_features() -> String {
    let features = [
        ("mpi", cfg!(feature = "mpi")),
        ("mimalloc", cfg!(feature = "mimalloc")),
        ("debug-assertions", cfg!(debug_assertions)),
    ];
    let on: Vec<&str> = features.iter().filter(|f| f.1).map(|f| f.0).collect();
    on.join(",")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_agree_on_the_binary_too() {
        let facts = facts(
            &crate::config::Preset::Tiny.config(),
            &RunOptions::default(),
            10,
        );
        let names: Vec<&str> = facts.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"sapling's version"), "{names:?}");
        assert!(names.contains(&"sapling's build features"), "{names:?}");
    }
}
