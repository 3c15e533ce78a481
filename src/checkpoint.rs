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

/// The file of rank `rank`'s shard of the moments in a checkpoint written by `ranks` ranks.
pub fn shard_file(rank: usize, ranks: usize) -> String {
    format!("optim-shard-{rank}-of-{ranks}.safetensors")
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
        read_verified(&self.path, entry(&self.manifest, &self.path, name)?)
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
        prune(&root, &state.run, keep);
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

/// Deletes checkpoint folder `dir`: renamed out of [`list`]'s sight first, so a process killed
/// while deleting never leaves a half-deleted folder that looks like a checkpoint.
pub fn delete(dir: &Path) -> Result<()> {
    let doomed = hidden(dir, "deleting");
    std::fs::rename(dir, &doomed).map_err(|e| SaplingError::io(dir, e))?;
    std::fs::remove_dir_all(&doomed).map_err(|e| SaplingError::io(&doomed, e))
}

/// `.step-N.<why>` beside the checkpoint `step-N`: out of [`list`]'s sight (but for `replaced`,
/// which it reads as a stand-in) and tidied by [`recover`].
fn hidden(step_dir: &Path, why: &str) -> PathBuf {
    let name = step_dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    atomic::parent(step_dir).join(format!(".{name}.{why}"))
}

/// Checkpoint folders under `out/checkpoints`, oldest first (by step).
pub fn list(out: &Path) -> Vec<PathBuf> {
    let root = out.join(DIR);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    // (step, is a set-aside copy, path): a set-aside copy stands in only for a missing step.
    let mut found: Vec<(u64, bool, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if let Some(step) = name.strip_prefix("step-") {
                return Some((step.parse().ok()?, false, e.path()));
            }
            let step = name.strip_prefix(".step-")?.strip_suffix(".replaced")?;
            Some((step.parse().ok()?, true, e.path()))
        })
        .collect();
    found.sort();
    found.dedup_by_key(|(step, _, _)| *step);
    found.into_iter().map(|(_, _, p)| p).collect()
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
    let whole_moments = (!manifest.files.iter().any(is_shard)).then_some(OPTIM);
    for name in [STATE, MODEL].into_iter().chain(whole_moments) {
        entry(&manifest, &dir, name)?;
    }
    // Every file is read and checked now, and all but the state dropped, so a damaged
    // checkpoint is found before a run relies on it.
    let mut state = Vec::new();
    for file in &manifest.files {
        let bytes = read_verified(&dir, file)?;
        if file.name == STATE {
            state = bytes;
        }
    }
    let state: TrainState =
        serde_json::from_slice(&state).map_err(|e| err(format!("{STATE}: {e}")))?;
    state
        .config
        .validate()
        .map_err(|e| err(format!("{STATE} holds a config sapling cannot use: {e}")))?;
    Ok(Loaded {
        path: dir,
        state,
        manifest,
    })
}

/// Whether `file` is one rank's shard of the optimizer moments.
fn is_shard(file: &FileEntry) -> bool {
    file.name.starts_with("optim-shard-")
}

/// The manifest's entry for `name`.
fn entry<'m>(manifest: &'m Manifest, dir: &Path, name: &str) -> Result<&'m FileEntry> {
    manifest
        .files
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| SaplingError::Checkpoint {
            path: dir.to_path_buf(),
            message: format!("{MANIFEST} does not list {name}"),
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

/// Tidies what a run killed while writing left behind in `root` (an output folder's
/// `checkpoints`): half-assembled folders are deleted, and a set-aside copy whose replacement
/// never arrived is put back. Called under the run's lock, so no other process is writing here.
pub fn recover(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !name.starts_with(".step-") {
            continue;
        }
        let original = name
            .strip_suffix(".replaced")
            .and_then(|n| n.strip_prefix('.'))
            .map(|step| root.join(step));
        match original {
            Some(original) if !original.exists() => {
                if let Err(e) = std::fs::rename(&path, &original) {
                    tracing::warn!("could not restore {}: {e}", path.display());
                }
            }
            _ => {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

/// Deletes this run's checkpoints but the newest `keep`. Another run's checkpoints are not its
/// to delete; a failure is a warning, since the checkpoint just written is already safe.
fn prune(root: &Path, run: &str, keep: usize) {
    let out = root.parent().unwrap_or(Path::new("."));
    let own: Vec<PathBuf> = list(out)
        .into_iter()
        .filter(|dir| run_of(dir).as_deref() == Some(run))
        .collect();
    for old in own.iter().take(own.len().saturating_sub(keep.max(1))) {
        if let Err(e) = delete(old) {
            tracing::warn!("could not delete an old checkpoint: {e}");
        }
    }
}

/// The run that wrote checkpoint `dir`, from its state (not verified: used only to choose).
pub fn run_of(dir: &Path) -> Option<String> {
    #[derive(Deserialize)]
    struct RunOnly {
        #[serde(default)]
        run: String,
    }
    let bytes = std::fs::read(dir.join(STATE)).ok()?;
    serde_json::from_slice::<RunOnly>(&bytes)
        .ok()
        .map(|r| r.run)
}
