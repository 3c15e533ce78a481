//! Checkpoints: everything needed to continue a run exactly, written so a crash never leaves a
//! half-written one that looks complete.
//!
//! A checkpoint is a folder `OUT/checkpoints/step-NNNNNNNN/` holding `model.bpk`, the optimizer
//! moments (`optim.bpk`, or with the optimizer sharded across MPI ranks one
//! `optim-shard-R-of-N.safetensors` per rank), `state.json` (step, stream position, config) and,
//! written last, `manifest.json` with each file's length and CRC-32. The folder is assembled
//! under a temporary name (every rank writing its own shard into it) and renamed into place by
//! rank 0, so a folder with a valid manifest is complete; one without, or whose files do not
//! match it, is reported and skipped in favour of the previous one.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use crate::atomic;
use crate::config::Config;
use crate::dist::Collective;
use crate::error::{Result, SaplingError};
use crate::model::MaskedAutoencoder;

/// Sub-folder of the output folder holding checkpoints.
pub const DIR: &str = "checkpoints";
const MODEL: &str = "model.bpk";
const OPTIM: &str = "optim.bpk";
const STATE: &str = "state.json";
const MANIFEST: &str = "manifest.json";

/// Where a run stands, besides weights and optimizer moments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: u64,
    /// Samples consumed from the data stream; data order, crops and masks all derive from this
    /// position and the seed, so it is the whole RNG state, whatever the micro-batch.
    pub samples: u64,
    /// The batch plan the run used; reused on resume on the same device.
    pub plan: Option<crate::planner::BatchPlan>,
    /// The config the run was started with.
    pub config: Config,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileEntry {
    name: String,
    bytes: u64,
    crc32: u32,
}

/// A checkpoint loaded into memory and verified.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub state: TrainState,
    model: Bytes,
    /// burn's optimizer record; `None` when the moments were written as shards.
    optim: Option<Bytes>,
    /// The shard files of the moments, in rank order, with their manifest entries.
    shards: Vec<FileEntry>,
}

/// The optimizer's part of a checkpoint.
pub enum Moments<'a> {
    /// burn's optimizer record: every rank holds all the moments, rank 0 writes them.
    Whole(&'a ModuleOptimizer),
    /// This rank's shard, as the bytes of its file: every rank writes its own.
    Shard(Vec<u8>),
}

/// The file of rank `rank`'s shard of the moments in a checkpoint written by `ranks` ranks.
pub fn shard_file(rank: usize, ranks: usize) -> String {
    format!("optim-shard-{rank}-of-{ranks}.safetensors")
}

impl Loaded {
    /// Loads the weights into `model` (built from `state.config.model`).
    pub fn load_model(&self, model: MaskedAutoencoder) -> Result<MaskedAutoencoder> {
        let record = ModuleRecord::from_bytes(self.model.clone()).map_err(|e| self.err(e))?;
        Ok(model.load_record(record))
    }

    /// Fails, naming this checkpoint and both presets, when `config` asks for another model.
    pub fn check_model(&self, config: &Config) -> Result<()> {
        if self.state.config.model == config.model {
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
        let Some(bytes) = &self.optim else {
            return Err(self.err(format!(
                "its optimizer moments are sharded over {} MPI ranks; resume it with \
                 train.shard_optimizer = true under mpirun",
                self.shards.len()
            )));
        };
        optim.from_bytes(bytes.clone()).map_err(|e| self.err(e))
    }

    /// Every shard of the optimizer moments, read and verified, in rank order (empty when the
    /// moments were written whole).
    pub fn shards(&self) -> Result<Vec<(PathBuf, Vec<u8>)>> {
        self.shards
            .iter()
            .map(|entry| {
                let bytes = read_verified(&self.path, entry)?;
                Ok((self.path.join(&entry.name), bytes))
            })
            .collect()
    }

    /// Whether the moments were written as shards.
    pub fn is_sharded(&self) -> bool {
        self.optim.is_none()
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
        remove_stale_temporaries(&root);
        std::fs::create_dir_all(&tmp).map_err(|e| SaplingError::io(&tmp, e))?;
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
        prune(&root, keep)?;
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
    // Replacing an existing checkpoint of the same step (a resumed run re-saving) goes through
    // a rename aside, so at every instant one complete copy exists.
    if final_dir.exists() {
        let name = final_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("step");
        let old = root.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(final_dir, &old).map_err(|e| SaplingError::io(final_dir, e))?;
        let _ = std::fs::remove_dir_all(&old);
    }
    std::fs::rename(tmp, final_dir).map_err(|e| SaplingError::io(final_dir, e))?;
    if let Ok(d) = std::fs::File::open(root) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Checkpoint folders under `out/checkpoints`, oldest first (by step).
pub fn list(out: &Path) -> Vec<PathBuf> {
    let root = out.join(DIR);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step = name.strip_prefix("step-")?.parse().ok()?;
            Some((step, e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
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

/// Reads and verifies one checkpoint folder (or `.../model.bpk` inside one).
pub fn load(path: &Path) -> Result<Loaded> {
    let dir = if path.is_file() {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
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
    let manifest: Manifest = std::fs::read(dir.join(MANIFEST))
        .map_err(|e| {
            err(format!(
                "no readable {MANIFEST} ({e}): the checkpoint is incomplete"
            ))
        })
        .and_then(|b| {
            serde_json::from_slice(&b).map_err(|e| err(format!("corrupt {MANIFEST}: {e}")))
        })?;
    let entry = |name: &str| {
        manifest
            .files
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| err(format!("{MANIFEST} does not list {name}")))
    };
    let model = read_verified(&dir, entry(MODEL)?)?;
    let state: TrainState = serde_json::from_slice(&read_verified(&dir, entry(STATE)?)?)
        .map_err(|e| err(format!("{STATE}: {e}")))?;
    let shards: Vec<FileEntry> = manifest
        .files
        .iter()
        .filter(|f| f.name.starts_with("optim-shard-"))
        .cloned()
        .collect();
    let optim = if shards.is_empty() {
        Some(Bytes::from_bytes_vec(read_verified(&dir, entry(OPTIM)?)?))
    } else {
        None
    };
    Ok(Loaded {
        path: dir.clone(),
        state,
        model: Bytes::from_bytes_vec(model),
        optim,
        shards,
    })
}

/// The file `entry` of checkpoint folder `dir`, checked against its length and CRC-32.
fn read_verified(dir: &Path, entry: &FileEntry) -> Result<Vec<u8>> {
    let err = |message: String| SaplingError::Checkpoint {
        path: dir.to_path_buf(),
        message,
    };
    let name = &entry.name;
    let bytes = std::fs::read(dir.join(name)).map_err(|e| err(format!("{name}: {e}")))?;
    if bytes.len() as u64 != entry.bytes || crc32fast::hash(&bytes) != entry.crc32 {
        return Err(err(format!(
            "{name} does not match its checksum: the file is corrupt"
        )));
    }
    Ok(bytes)
}

/// Deletes half-assembled checkpoint folders (`.step-*`) left by a run that was killed while
/// writing; one output folder is written by one run at a time.
fn remove_stale_temporaries(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        if entry.file_name().to_string_lossy().starts_with(".step-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn prune(root: &Path, keep: usize) -> Result<()> {
    let all = list(root.parent().unwrap_or(Path::new(".")));
    for old in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        std::fs::remove_dir_all(old).map_err(|e| SaplingError::io(old, e))?;
    }
    Ok(())
}
