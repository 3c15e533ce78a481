//! Checkpoints: everything needed to continue a run exactly, written so a crash never leaves a
//! half-written one that looks complete.
//!
//! A checkpoint is a folder `OUT/checkpoints/step-NNNNNNNN/` holding `model.bpk`, the optimizer
//! moments (`optim.bpk`, or with the optimizer sharded across MPI ranks one
//! `optim-shard-R-of-N.safetensors` per rank), `state.json` (step, stream position, config) and,
//! written last, `manifest.json` with each file's length and CRC-32. The folder is assembled
//! under a temporary name (every rank writing its own shard into it) and renamed into place by
//! rank 0, so a folder with a valid manifest is complete; one without, or whose files do not
//! match it, is reported and skipped in favour of the previous one. Replacing a checkpoint of
//! the same step moves the old one aside to `.step-NNNNNNNN.replaced` first; [`list`] treats
//! that copy as the step's checkpoint until the new one is in place, so at every instant one
//! complete copy is visible.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use crate::atomic::{self, fault};
use crate::config::{Config, ModelConfig};
use crate::dist::Collective;
use crate::error::{Result, SaplingError};
use crate::model::MaskedAutoencoder;

mod listing;
mod manifest;

pub use listing::{delete, list, recover, run_of, step_of};
pub use manifest::shard_file;

use listing::hidden;
use manifest::{FileEntry, MANIFEST, MODEL, Manifest, OPTIM, STATE, is_shard, read_verified};

/// Sub-folder of the output folder holding checkpoints.
pub const DIR: &str = "checkpoints";

/// Where a run stands, besides weights and optimizer moments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    /// Which run wrote it (chosen when the run starts, kept on resume): a run prunes only its
    /// own checkpoints. Empty in checkpoints written before runs had one.
    #[serde(default)]
    pub run: String,
    /// Optimizer steps done.
    pub step: u64,
    /// Samples consumed from the data stream; data order, crops and masks all derive from this
    /// position and the seed, so it is the whole RNG state, whatever the micro-batch.
    pub samples: u64,
    /// The batch plan the run used; reused on resume on the same device.
    pub plan: Option<crate::planner::BatchPlan>,
    /// The config the run was started with.
    pub config: Config,
    /// The loss scale of an f16 run (absent in f32 runs and older checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<crate::optim::LossScale>,
}

/// A verified checkpoint: its state in memory, its weights and moments read (and verified
/// again) from disk only when loaded, so a run does not carry them for its whole length.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub state: TrainState,
    manifest: Manifest,
}

/// The optimizer's part of a checkpoint.
pub enum Moments<'a> {
    /// burn's optimizer record: every rank holds all the moments, rank 0 writes them.
    Whole(&'a ModuleOptimizer),
    /// This rank's shard, as the bytes of its file: every rank writes its own.
    Shard(Vec<u8>),
}

impl Loaded {
    /// Loads the weights into `model` (built from `state.config.model`).
    pub fn load_model(&self, model: MaskedAutoencoder) -> Result<MaskedAutoencoder> {
        let bytes = self.read(MODEL)?;
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
            .map_err(|e| self.err(format!("{MODEL}: {e}")))?;
        model.try_load_record(record).map_err(|e| {
            self.err(format!(
                "{MODEL} does not fit a `{}` model ({e}); the checkpoint is damaged or was \
                 written by another version of sapling",
                self.state.config.preset.name()
            ))
        })
    }

    /// Fails, naming this checkpoint and both presets, when `config` asks for another model.
    pub fn check_model(&self, config: &Config) -> Result<()> {
        // The position tables' layout is the one of the weights the run started from
        // (`--init-from`), not a shape the flags of a resume choose.
        let asked = ModelConfig {
            pos_embed: self.state.config.model.pos_embed,
            ..config.model.clone()
        };
        if self.state.config.model == asked {
            return Ok(());
        }
        Err(self.err(format!(
            "holds a `{}` model, but the run asks for `{}` with other shapes; resume without \
             --preset/--config to continue it as it was",
            self.state.config.preset.name(),
            config.preset.name()
        )))
    }

    /// Builds the checkpoint's model on `device` with its weights.
    pub fn model(&self, device: &burn::tensor::Device) -> Result<MaskedAutoencoder> {
        self.load_model(MaskedAutoencoder::new(&self.state.config.model, device))
    }

    /// Loads the optimizer moments into `optim`.
    pub fn load_optim(&self, optim: ModuleOptimizer) -> Result<ModuleOptimizer> {
        if self.is_sharded() {
            return Err(self.err(format!(
                "its optimizer moments are sharded over {} MPI ranks; resume it with \
                 train.shard_optimizer = true under mpirun",
                self.shard_entries().count()
            )));
        }
        let bytes = Bytes::from_bytes_vec(self.read(OPTIM)?);
        optim
            .from_bytes(bytes)
            .map_err(|e| self.err(format!("{OPTIM}: {e}")))
    }

    /// Every shard of the optimizer moments, read and verified, in rank order (empty when the
    /// moments were written whole).
    pub fn shards(&self) -> Result<Vec<(PathBuf, Vec<u8>)>> {
        self.shard_entries()
            .map(|entry| {
                let bytes = read_verified(&self.path, entry)?;
                Ok((self.path.join(&entry.name), bytes))
            })
            .collect()
    }

    /// Whether the moments were written as shards.
    pub fn is_sharded(&self) -> bool {
        self.shard_entries().next().is_some()
    }

    fn shard_entries(&self) -> impl Iterator<Item = &FileEntry> {
        self.manifest.files.iter().filter(|f| is_shard(f))
    }

    /// The file `name` of this checkpoint, verified against the manifest.
    fn read(&self, name: &str) -> Result<Vec<u8>> {
        read_verified(&self.path, self.manifest.entry(&self.path, name)?)
    }

    /// The run folder this checkpoint belongs to: the folder holding the `checkpoints` folder
    /// it sits in (directly, or in a set-aside branch there). `None` for a checkpoint folder
    /// that was taken out of its run folder.
    pub fn run_folder(&self) -> Option<PathBuf> {
        let dir = std::path::absolute(&self.path).ok()?;
        dir.ancestors()
            .skip(1)
            .find(|a| a.file_name().is_some_and(|n| n == DIR))
            .and_then(Path::parent)
            .map(Path::to_path_buf)
    }

    fn err(&self, e: impl std::fmt::Display) -> SaplingError {
        SaplingError::Checkpoint {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }
}

/// Writes a checkpoint of `step` into `out/checkpoints/`, then keeps only the newest `keep`.
/// Every rank of `world` calls it: rank 0 writes the model, the state and whole moments; with
/// sharded moments every rank writes its shard into the folder rank 0 assembles. Returns the
/// checkpoint's folder on rank 0. No rank returns before the checkpoint is complete.
pub fn save(
    out: &Path,
    model: &MaskedAutoencoder,
    moments: Moments,
    state: &TrainState,
    keep: usize,
    world: &dyn Collective,
) -> Result<Option<PathBuf>> {
    let lead = world.rank() == 0;
    let root = out.join(DIR);
    let final_dir = root.join(format!("step-{:08}", state.step));
    // One name every rank can derive; the run's lock keeps other processes out of `out`.
    let tmp = root.join(format!(".step-{:08}.tmp", state.step));
    if lead {
        std::fs::create_dir_all(&root).map_err(|e| SaplingError::io(&root, e))?;
        fault::point()
            .and_then(|_| std::fs::create_dir_all(&tmp))
            .map_err(|e| SaplingError::io(&tmp, e))?;
    }
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let shards = match moments {
        Moments::Whole(optim) => {
            if lead {
                let bytes = optim.into_bytes().map_err(|e| record_err(&final_dir, e))?;
                files.push((OPTIM.to_string(), bytes.to_vec()));
            }
            Vec::new()
        }
        Moments::Shard(bytes) => {
            world.barrier(); // the folder exists
            let name = shard_file(world.rank(), world.size());
            atomic::write(&tmp.join(&name), &bytes)?;
            let (lengths, crcs) = (
                world.all_gather_u64(bytes.len() as u64),
                world.all_gather_u64(u64::from(crc32fast::hash(&bytes))),
            );
            (0..world.size())
                .map(|r| FileEntry {
                    name: shard_file(r, world.size()),
                    bytes: lengths[r],
                    crc32: crcs[r] as u32,
                })
                .collect()
        }
    };
    let mut saved = None;
    if lead {
        files.push((
            MODEL.to_string(),
            model
                .clone()
                .into_record()
                .into_bytes()
                .map_err(|e| record_err(&final_dir, e))?
                .to_vec(),
        ));
        files.push((
            STATE.to_string(),
            serde_json::to_vec_pretty(state).expect("state serialises"),
        ));
        finish(&root, &tmp, &final_dir, files, shards)?;
        listing::prune(&root, &state.run, keep, &final_dir);
        saved = Some(final_dir);
    }
    // No rank runs ahead of a checkpoint it might have to resume from.
    world.barrier();
    Ok(saved)
}

fn record_err(dir: &Path, e: burn::store::RecordError) -> SaplingError {
    SaplingError::Checkpoint {
        path: dir.to_path_buf(),
        message: e.to_string(),
    }
}

/// Writes `files` and then the manifest (listing them and the `shards` already written) into
/// `tmp`, and renames it to `final_dir`.
fn finish(
    root: &Path,
    tmp: &Path,
    final_dir: &Path,
    files: Vec<(String, Vec<u8>)>,
    shards: Vec<FileEntry>,
) -> Result<()> {
    let mut manifest = Manifest { files: shards };
    for (name, bytes) in &files {
        atomic::write(&tmp.join(name), bytes)?;
        manifest.files.push(FileEntry {
            name: name.to_string(),
            bytes: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        });
    }
    atomic::write(
        &tmp.join(MANIFEST),
        &serde_json::to_vec_pretty(&manifest).expect("manifest"),
    )?;
    // Replacing a checkpoint of the same step (a run resumed from an older one) moves the old
    // copy aside under a name `list` still reads, so one complete copy is visible throughout.
    let aside = hidden(final_dir, "replaced");
    if final_dir.exists() {
        fault::point()
            .and_then(|_| std::fs::rename(final_dir, &aside))
            .map_err(|e| SaplingError::io(final_dir, e))?;
    }
    fault::point()
        .and_then(|_| std::fs::rename(tmp, final_dir))
        .map_err(|e| SaplingError::io(final_dir, e))?;
    atomic::sync_dir(root);
    let _ = std::fs::remove_dir_all(&aside);
    Ok(())
}

/// The newest checkpoint under `out` that verifies; broken newer ones are reported and skipped.
pub fn latest(out: &Path) -> Result<Loaded> {
    let all = list(out);
    for path in all.iter().rev() {
        match load(path) {
            Ok(loaded) => return Ok(loaded),
            Err(e) => tracing::warn!("{e}; falling back to the previous checkpoint"),
        }
    }
    Err(SaplingError::Checkpoint {
        path: out.join(DIR),
        message: if all.is_empty() {
            "no checkpoint to resume from; start the run without --resume".into()
        } else {
            format!(
                "none of the {} checkpoints is complete and intact",
                all.len()
            )
        },
    })
}

/// Reads and verifies one checkpoint folder (or `.../model.bpk` inside one): the manifest
/// names only sapling's files, the state is one a run can continue from, and every file has
/// the length the manifest gives (within what the state's model can need) and its CRC-32.
pub fn load(path: &Path) -> Result<Loaded> {
    let dir = if path.is_file() {
        atomic::parent(path).to_path_buf()
    } else {
        path.to_path_buf()
    };
    let err = |message: String| SaplingError::Checkpoint {
        path: dir.clone(),
        message,
    };
    if !dir.is_dir() {
        return Err(err(
            "does not exist; pass a checkpoint folder (OUT/checkpoints/step-N)".into(),
        ));
    }
    let manifest = Manifest::read(&dir)?;
    let state = read_verified(&dir, manifest.entry(&dir, STATE)?)?;
    let state: TrainState =
        serde_json::from_slice(&state).map_err(|e| err(format!("{STATE}: {e}")))?;
    state
        .config
        .validate()
        .map_err(|e| err(format!("{STATE} holds a config sapling cannot use: {e}")))?;
    state
        .check_plan()
        .map_err(|e| err(format!("{STATE}: {e}")))?;
    manifest.check_sizes(&dir, &state.config)?;
    // Every other file is checked now (streamed, not held), so a damaged checkpoint is found
    // before a run relies on it.
    for file in manifest.files.iter().filter(|f| f.name != STATE) {
        manifest::verify(&dir, file)?;
    }
    Ok(Loaded {
        path: dir,
        state,
        manifest,
    })
}

impl TrainState {
    /// A saved batch plan must be one a run can take: at least one image per micro-batch,
    /// accumulation step and rank, which together make its effective batch.
    fn check_plan(&self) -> std::result::Result<(), String> {
        let Some(plan) = &self.plan else {
            return Ok(());
        };
        let (micro, accum, ranks) = (plan.micro_batch, plan.accum, plan.world_size);
        let product = micro.checked_mul(accum).and_then(|n| n.checked_mul(ranks));
        if micro == 0 || accum == 0 || ranks == 0 || product != Some(plan.effective_batch) {
            return Err(format!(
                "its batch plan (micro-batch {micro} x {accum} accumulation x {ranks} ranks, \
                 effective batch {}) is not one a run can take; the file was altered",
                plan.effective_batch
            ));
        }
        Ok(())
    }
}
