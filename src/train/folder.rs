//! A run's output folder: held by one process at a time (an OS lock, released when the process
//! dies however it dies), and holding one run's checkpoints, in one lineage.
//!
//! - A fresh run needs a folder without another run's checkpoints, metrics or pictures; with
//!   `--overwrite` that run is set aside (`.overwritten-*`) and deleted only once the new run
//!   has taken its first step, or put back if it fails before (or on the next start, if it was
//!   killed before).
//! - Resuming from a checkpoint that is not the newest of its lineage is a branch: the newer
//!   checkpoints, and the metric lines and pictures past the checkpoint's step, are set aside
//!   in `checkpoints/set-aside-TIME-after-step-N/`, never deleted and never pruned, so `--resume`
//!   continues the lineage that ran last and the abandoned one can still be resumed by path.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use super::set_aside::{self, Moved, has_run_files, move_back, move_run, unused_name};
use crate::atomic;
use crate::checkpoint::{self, Loaded};
use crate::error::{Result, SaplingError};

const LOCK: &str = ".sapling.lock";
/// Where an `--overwrite` keeps the run it replaces until the new one is under way.
const OVERWRITTEN: &str = ".overwritten-";
const DELETING: &str = ".deleting";

/// The claimed output folder; the lock is held while this lives.
pub(super) struct RunFolder {
    out: PathBuf,
    /// The run an `--overwrite` replaces, set aside until this run is under way; put back if
    /// this value is dropped first (the new run failed to start).
    replaced: Option<PathBuf>,
    /// The run's identity, kept in its checkpoints.
    pub run: String,
    // Last, so the lock is released after `Drop` has put a replaced run back.
    _lock: File,
}

impl RunFolder {
    /// Takes `out` for a run: creates and locks it, then makes sure it holds no other run: a
    /// fresh run (`resume` is `None`) needs a folder without another run's checkpoints, metrics
    /// or pictures, a resumed one without another run's checkpoints; with `overwrite` that run
    /// is set aside instead of refused. A resumed run from an older checkpoint branches.
    pub fn claim(out: &Path, resume: Option<&Loaded>, overwrite: bool) -> Result<RunFolder> {
        std::fs::create_dir_all(out).map_err(|e| SaplingError::io(out, e))?;
        let lock = lock(out)?;
        recover_overwritten(out)?;
        checkpoint::recover(&out.join(checkpoint::DIR));
        for dir in [out.to_path_buf(), out.join("recon")] {
            atomic::remove_stale(&dir);
        }
        let run = resume.map_or_else(new_run_id, |l| l.state.run.clone());
        let (own, others) = sort_checkpoints(out, &run);
        let own = if resume.is_some() { own } else { Vec::new() };
        let leftovers = resume.is_none() && has_run_files(out);
        if (!others.is_empty() || leftovers) && !overwrite {
            return Err(folder_err(out, occupied(out, &others, resume.is_some())));
        }
        let mut folder = RunFolder {
            out: out.to_path_buf(),
            replaced: None,
            run,
            _lock: lock,
        };
        if !others.is_empty() || leftovers {
            folder.set_aside_replaced(&others, resume.is_none())?;
        }
        if let Some(loaded) = resume {
            branch(out, loaded, &own)?;
        }
        Ok(folder)
    }

    /// The new run is under way (it has taken a step): the run it replaced is deleted now.
    pub fn under_way(&mut self) {
        let Some(replaced) = self.replaced.take() else {
            return;
        };
        let doomed = PathBuf::from(format!("{}{DELETING}", replaced.display()));
        let gone =
            std::fs::rename(&replaced, &doomed).and_then(|_| std::fs::remove_dir_all(&doomed));
        match gone {
            Ok(()) => tracing::info!("deleted the run this one replaced (--overwrite)"),
            Err(e) => tracing::warn!(
                "could not delete the replaced run in {}: {e}",
                replaced.display()
            ),
        }
    }

    /// Moves another run's checkpoints (and, for a fresh run, the metrics, plots, config and
    /// pictures of the run before it) into a hidden folder, kept until [`RunFolder::under_way`].
    fn set_aside_replaced(&mut self, others: &[PathBuf], whole_run: bool) -> Result<()> {
        let dest = unused_name(&self.out, OVERWRITTEN, "");
        // The folder is recorded first: whatever of the move fails, dropping `self` moves back
        // what had moved.
        self.replaced = Some(dest.clone());
        let dest_checkpoints = dest.join(checkpoint::DIR);
        let after = (!whole_run).then_some(u64::MAX);
        let moved = move_run(&self.out, &dest, &dest_checkpoints, others, after)?;
        tracing::warn!(
            "--overwrite: set aside the run in {} ({}); it is deleted once this run has taken \
             its first step, and put back if it fails before",
            self.out.display(),
            moved.describe()
        );
        Ok(())
    }
}

impl Drop for RunFolder {
    fn drop(&mut self) {
        if let Some(replaced) = self.replaced.take() {
            match move_back(&replaced, &self.out) {
                Ok(()) => tracing::warn!(
                    "the run did not get under way: the run it was to replace is back in {}",
                    self.out.display()
                ),
                Err(e) => tracing::error!(
                    "could not put the replaced run back from {} ({e}); its files are there",
                    replaced.display()
                ),
            }
        }
    }
}

/// A run an `--overwrite` set aside and a killed process never deleted or put back: deleted if
/// the deletion had started, put back otherwise (the new run never took a step).
fn recover_overwritten(out: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(());
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(OVERWRITTEN) {
            continue;
        }
        if name.ends_with(DELETING) {
            let _ = std::fs::remove_dir_all(entry.path());
            continue;
        }
        tracing::warn!(
            "putting back the run an --overwrite set aside in {}: the process that was to replace \
             it ended before its first step",
            out.display()
        );
        move_back(&entry.path(), out)?;
    }
    Ok(())
}

/// The folder's checkpoints: `run`'s and another run's; a folder named like a checkpoint that
/// is not a complete one (half copied, garbage) is neither, and is said so.
fn sort_checkpoints(out: &Path, run: &str) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut own, mut others) = (Vec::new(), Vec::new());
    for dir in checkpoint::list(out) {
        match checkpoint::run_of(&dir) {
            Some(r) if r == run => own.push(dir),
            Some(_) => others.push(dir),
            None => tracing::warn!(
                "{} is not a complete checkpoint (no readable manifest and state); ignored",
                dir.display()
            ),
        }
    }
    (own, others)
}

/// Resuming from `loaded` into `out`, whose live checkpoints of the same run are `own`: those
/// that are not behind it in its lineage, and the metric lines and pictures past the point
/// where the lineages part, are set aside for good. When `loaded` is one of `own`, the older
/// ones are its lineage and they part at its step. When it comes from a branch set aside
/// earlier, they part where that branch was left, and the branch's history up to `loaded` is
/// copied back; from anywhere else (a copy), none of `own` is known to be its lineage.
fn branch(out: &Path, loaded: &Loaded, own: &[PathBuf]) -> Result<()> {
    let step = loaded.state.step;
    let here = |dir: &Path| same_dir(dir, &loaded.path);
    let live = own.iter().any(|d| here(d));
    let source_branch = atomic::parent(&loaded.path).to_path_buf();
    let parted = match set_aside::branch_point(&source_branch) {
        Some(at) if !live => at.min(step),
        _ => step,
    };
    let ahead: Vec<PathBuf> = own
        .iter()
        .filter(|d| !here(d) && (!live || checkpoint::step_of(d).is_none_or(|s| s > step)))
        .cloned()
        .collect();
    // No checkpoint of another lineage: the lines and pictures past `step` were written after
    // the last checkpoint of this one (a killed run) and are written again as it goes on.
    if ahead.is_empty() && parted == step {
        return Ok(());
    }
    let dest = unused_name(
        &out.join(checkpoint::DIR),
        "set-aside-",
        &format!("-after-step-{parted}"),
    );
    let moved: Moved = move_run(out, &dest, &dest, &ahead, Some(parted))?;
    if parted < step {
        set_aside::copy_back(&source_branch, out, parted, step)?;
    }
    if moved.is_empty() {
        let _ = std::fs::remove_dir(&dest);
        return Ok(());
    }
    let back = match moved.checkpoints.last() {
        Some(newest) => format!(
            "; `sapling train --resume {}` goes back to it",
            dest.join(newest).display()
        ),
        None => String::new(),
    };
    tracing::warn!(
        "resuming from step {step} branches the run: {} of the other lineage moved to {} \
         (never deleted or pruned{back})",
        moved.describe(),
        dest.display(),
    );
    Ok(())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Locks `out/.sapling.lock` and writes who holds it; if another process holds it, says who.
fn lock(out: &Path) -> Result<File> {
    let path = out.join(LOCK);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| SaplingError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(folder_err(
                out,
                format!(
                    "another sapling process is using it ({}); wait for it, stop it, or choose \
                     another --out",
                    holder.trim()
                ),
            ));
        }
        Err(TryLockError::Error(e)) => return Err(SaplingError::io(&path, e)),
    }
    let holder = format!(
        "pid {} on {}, since unix time {}",
        std::process::id(),
        host(),
        web_time::SystemTime::now()
            .duration_since(web_time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    );
    file.set_len(0)
        .and_then(|_| file.rewind())
        .and_then(|_| file.write_all(holder.as_bytes()))
        .map_err(|e| SaplingError::io(&path, e))?;
    Ok(file)
}

/// The machine's name where the OS says it without a library (Linux), for the lock message.
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "this machine".into())
}

/// What to tell someone whose run would mix with the checkpoints `others` (or, for a fresh
/// run, the metrics and pictures of an earlier run) in `out`.
fn occupied(out: &Path, others: &[PathBuf], resuming: bool) -> String {
    let what = match (others.last().and_then(|p| p.file_name()), resuming) {
        (Some(newest), true) => format!(
            "checkpoints of a different run than the one being resumed ({} of them, newest {})",
            others.len(),
            newest.to_string_lossy()
        ),
        (Some(newest), false) => format!(
            "checkpoints of an earlier run ({} of them, newest {})",
            others.len(),
            newest.to_string_lossy()
        ),
        (None, _) => "the metrics and pictures of an earlier run that left no checkpoint".into(),
    };
    format!(
        "holds {what}; continue that run with `sapling train --resume --out {}`, replace it \
         with --overwrite (it is deleted once the new run has taken a step), or choose another \
         --out",
        out.display()
    )
}

/// A run id unlikely to repeat: the start time in nanoseconds and the process id.
fn new_run_id() -> String {
    let nanos = web_time::SystemTime::now()
        .duration_since(web_time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}", std::process::id())
}

fn folder_err(out: &Path, message: impl Into<String>) -> SaplingError {
    SaplingError::RunFolder {
        path: out.to_path_buf(),
        message: message.into(),
    }
}
