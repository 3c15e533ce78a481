//! A run's output folder: held by one process at a time (an OS lock, released when the process
//! dies however it dies), and holding one run's checkpoints.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::atomic;
use crate::checkpoint::{self, TrainState};
use crate::error::{Result, SaplingError};

const LOCK: &str = ".sapling.lock";
/// What a fresh run with `--overwrite` replaces besides the checkpoints.
const RUN_FILES: [&str; 4] = ["metrics.jsonl", "loss.png", "lr.png", "recon"];

/// The claimed output folder; the lock is held while this lives.
pub(super) struct RunFolder {
    _lock: File,
    /// The run's identity, kept in its checkpoints.
    pub run: String,
}

impl RunFolder {
    /// Takes `out` for a run: creates and locks it, then makes sure it holds no other run's
    /// checkpoints: a fresh run (`resume` is `None`) needs an empty folder, a resumed one its
    /// own; with `overwrite` the other run's checkpoints and files are deleted instead.
    pub fn claim(out: &Path, resume: Option<&TrainState>, overwrite: bool) -> Result<RunFolder> {
        std::fs::create_dir_all(out).map_err(|e| SaplingError::io(out, e))?;
        let lock = lock(out)?;
        checkpoint::recover(&out.join(checkpoint::DIR));
        for dir in [out.to_path_buf(), out.join("recon")] {
            atomic::remove_stale(&dir);
        }
        let run = resume.map_or_else(new_run_id, |s| s.run.clone());
        let others: Vec<PathBuf> = checkpoint::list(out)
            .into_iter()
            .filter(|dir| resume.is_none() || checkpoint::run_of(dir).as_deref() != Some(&run))
            .collect();
        if !others.is_empty() && !overwrite {
            return Err(folder_err(out, occupied(out, &others, resume.is_some())));
        }
        for dir in &others {
            checkpoint::delete(dir)?;
        }
        if resume.is_none() {
            clear_run_files(out, overwrite)?;
        }
        Ok(RunFolder { _lock: lock, run })
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

/// What to tell someone whose run would mix with the checkpoints `others` in `out`.
fn occupied(out: &Path, others: &[PathBuf], resuming: bool) -> String {
    let newest = others
        .last()
        .and_then(|p| p.file_name())
        .unwrap_or_default();
    let what = if resuming {
        "checkpoints of a different run than the one being resumed"
    } else {
        "checkpoints of an earlier run"
    };
    format!(
        "holds {what} ({} of them, newest {}); continue that run with `sapling train --resume \
         --out {}`, replace it with --overwrite, or choose another --out",
        others.len(),
        newest.to_string_lossy(),
        out.display()
    )
}

/// Deletes an earlier run's metrics, plots and pictures so a fresh run's do not mix with them.
/// Without `overwrite` they belong to a run that left no checkpoint, so nothing resumable is
/// lost; it is said all the same.
fn clear_run_files(out: &Path, overwrite: bool) -> Result<()> {
    for name in RUN_FILES {
        let path = out.join(name);
        if !path.exists() {
            continue;
        }
        if !overwrite {
            tracing::warn!(
                "replacing {} of an earlier run that left no checkpoint",
                path.display()
            );
        }
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| SaplingError::io(&path, e))?;
    }
    Ok(())
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
