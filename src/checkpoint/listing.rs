//! The checkpoints of an output folder: listing them by step, telling whose they are, pruning,
//! deleting and tidying what a killed write left.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::DIR;
use super::manifest::{Manifest, STATE};
use crate::atomic;
use crate::error::{Result, SaplingError};

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
            if let Some(step) = step_of_name(&name) {
                return Some((step, false, e.path()));
            }
            let step = name.strip_prefix(".step-")?.strip_suffix(".replaced")?;
            Some((step.parse().ok()?, true, e.path()))
        })
        .collect();
    found.sort();
    found.dedup_by_key(|(step, _, _)| *step);
    found.into_iter().map(|(_, _, p)| p).collect()
}

/// The step of a checkpoint folder `step-NNNNNNNN` (or its set-aside copy), from its name.
pub fn step_of(dir: &Path) -> Option<u64> {
    let name = dir.file_name()?.to_str()?;
    step_of_name(name).or_else(|| {
        name.strip_prefix(".step-")?
            .strip_suffix(".replaced")?
            .parse()
            .ok()
    })
}

fn step_of_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The run that wrote checkpoint `dir`, if it is a checkpoint at all: its manifest must read
/// and its state name a run. A folder named like a checkpoint that is not one (half copied,
/// or garbage) is `None`: it belongs to no run. Not a verification of the values.
pub fn run_of(dir: &Path) -> Option<String> {
    #[derive(Deserialize)]
    struct RunOnly {
        #[serde(default)]
        run: String,
    }
    let manifest = Manifest::read(dir).ok()?;
    let entry = manifest.entry(dir, STATE).ok()?;
    let bytes = super::manifest::read_verified(dir, entry).ok()?;
    serde_json::from_slice::<RunOnly>(&bytes)
        .ok()
        .map(|r| r.run)
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
pub(super) fn hidden(step_dir: &Path, why: &str) -> PathBuf {
    let name = step_dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    atomic::parent(step_dir).join(format!(".{name}.{why}"))
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

/// Deletes this run's checkpoints but the newest `keep`, never `written` (the checkpoint just
/// made). Only the folder's live checkpoints are looked at, which after a branch are the one
/// lineage that runs (the others were set aside); another run's are not its to delete. A
/// failure is a warning, since the checkpoint just written is already safe.
pub(super) fn prune(root: &Path, run: &str, keep: usize, written: &Path) {
    let out = root.parent().unwrap_or(Path::new("."));
    let own: Vec<PathBuf> = list(out)
        .into_iter()
        .filter(|dir| dir != written && run_of(dir).as_deref() == Some(run))
        .collect();
    // `written` is one of the `keep` newest.
    let keep_others = keep.max(1) - 1;
    for old in own.iter().take(own.len().saturating_sub(keep_others)) {
        if let Err(e) = delete(old) {
            tracing::warn!("could not delete an old checkpoint: {e}");
        }
    }
}
