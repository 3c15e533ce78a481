//! Moving a run's own files out of the way instead of deleting them: the checkpoints, metric
//! lines and pictures of a lineage a branch leaves behind (kept for good), and the run an
//! `--overwrite` replaces (kept until the new run is under way, put back if it fails).
//!
//! Only sapling's own names move: `checkpoints/step-N`, `metrics.jsonl` lines, `loss.png`,
//! `lr.png`, `config.toml`, `events.out.tfevents.*` and `recon/step-N.png`. Anything else in
//! the folder is never touched.

use std::path::{Path, PathBuf};

use crate::atomic;
use crate::checkpoint;
use crate::error::{Result, SaplingError};

pub(super) const METRICS: &str = "metrics.jsonl";
const RECON: &str = "recon";
/// Files a run rewrites as a whole (besides the metrics and pictures).
const WHOLE: [&str; 3] = ["loss.png", "lr.png", "config.toml"];

/// What was moved, for the message.
#[derive(Debug, Default)]
pub(super) struct Moved {
    pub checkpoints: Vec<String>,
    pub lines: usize,
    pub pictures: usize,
    pub files: usize,
}

impl Moved {
    pub fn is_empty(&self) -> bool {
        self.checkpoints.is_empty() && self.lines == 0 && self.pictures == 0 && self.files == 0
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.checkpoints.is_empty() {
            parts.push(format!("checkpoints {}", self.checkpoints.join(", ")));
        }
        let count = |n: usize, one: &str, many: &str| match n {
            1 => format!("1 {one}"),
            n => format!("{n} {many}"),
        };
        if self.lines > 0 {
            parts.push(count(self.lines, "metric line", "metric lines"));
        }
        if self.pictures > 0 {
            parts.push(count(
                self.pictures,
                "reconstruction picture",
                "reconstruction pictures",
            ));
        }
        if self.files > 0 {
            parts.push(count(
                self.files,
                "other file (plots, config, events)",
                "other files (plots, config, events)",
            ));
        }
        parts.join(", ")
    }
}

/// Moves into `dest` (created) the checkpoint folders `checkpoints` (into `dest_checkpoints`),
/// the metric lines and pictures of steps after `after`, and with `after` `None` the whole
/// metrics, plots and config.
pub(super) fn move_run(
    out: &Path,
    dest: &Path,
    dest_checkpoints: &Path,
    checkpoints: &[PathBuf],
    after: Option<u64>,
) -> Result<Moved> {
    let mut moved = Moved::default();
    create(dest)?;
    create(dest_checkpoints)?;
    for dir in checkpoints {
        let name = dir.file_name().unwrap_or_default();
        rename(dir, &dest_checkpoints.join(name))?;
        moved.checkpoints.push(name.to_string_lossy().into_owned());
    }
    moved.lines = move_lines(&out.join(METRICS), &dest.join(METRICS), after.unwrap_or(0))?;
    moved.pictures = move_pictures(&out.join(RECON), &dest.join(RECON), after.unwrap_or(0))?;
    if after.is_none() {
        for name in WHOLE.iter().map(|n| n.to_string()).chain(event_files(out)) {
            if out.join(&name).is_file() {
                rename(&out.join(&name), &dest.join(&name))?;
                moved.files += 1;
            }
        }
    }
    atomic::sync_dir(out);
    Ok(moved)
}

/// Copies the metric lines and pictures of the steps in `(after, upto]` from the set-aside
/// branch `from` back into `out` (after [`move_run`] took `out`'s own past `after` away), so a
/// run resumed from that branch has its own history; `from` keeps its copy.
pub(super) fn copy_back(from: &Path, out: &Path, after: u64, upto: u64) -> Result<()> {
    let within = |s: u64| s > after && s <= upto;
    if let Ok(text) = std::fs::read_to_string(from.join(METRICS)) {
        let lines: String = text
            .lines()
            .filter(|l| super::metrics::step_of(l).is_some_and(within))
            .map(|l| format!("{l}\n"))
            .collect();
        let path = out.join(METRICS);
        let mut all = std::fs::read_to_string(&path).unwrap_or_default();
        all.push_str(&lines);
        atomic::write(&path, all.as_bytes())?;
    }
    let Ok(entries) = std::fs::read_dir(from.join(RECON)) else {
        return Ok(());
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if picture_step(&name).is_some_and(within) {
            let bytes =
                std::fs::read(entry.path()).map_err(|e| SaplingError::io(entry.path(), e))?;
            create(&out.join(RECON))?;
            atomic::write(&out.join(RECON).join(&name), &bytes)?;
        }
    }
    Ok(())
}

/// The step a set-aside branch folder (`set-aside-TIME-after-step-N`) was left at, from its name.
pub(super) fn branch_point(dir: &Path) -> Option<u64> {
    let name = dir.file_name()?.to_str()?;
    name.strip_prefix("set-aside-")?
        .rsplit_once("-after-step-")?
        .1
        .parse()
        .ok()
}

/// Moves everything in `from` (a folder [`move_run`] filled) back into `out`, replacing what
/// the new run wrote under the same names, and removes `from`.
pub(super) fn move_back(from: &Path, out: &Path) -> Result<()> {
    for sub in [checkpoint::DIR, RECON] {
        let Ok(entries) = std::fs::read_dir(from.join(sub)) else {
            continue;
        };
        create(&out.join(sub))?;
        for entry in entries.filter_map(|e| e.ok()) {
            rename(&entry.path(), &out.join(sub).join(entry.file_name()))?;
        }
    }
    let names = WHOLE.iter().chain(&[METRICS]).map(|n| n.to_string());
    for name in names.chain(event_files(from)) {
        if from.join(&name).is_file() {
            rename(&from.join(&name), &out.join(&name))?;
        }
    }
    atomic::sync_dir(out);
    std::fs::remove_dir_all(from).map_err(|e| SaplingError::io(from, e))
}

/// The lines of `from` logged after step `after` go to the end of `to`; the others stay.
/// Returns how many moved.
fn move_lines(from: &Path, to: &Path, after: u64) -> Result<usize> {
    let Ok(text) = std::fs::read_to_string(from) else {
        return Ok(0);
    };
    let (later, kept): (Vec<&str>, Vec<&str>) = text
        .lines()
        .partition(|line| super::metrics::step_of(line).is_some_and(|s| s > after));
    if later.is_empty() {
        return Ok(0);
    }
    let mut moved = std::fs::read_to_string(to).unwrap_or_default();
    for line in &later {
        moved.push_str(line);
        moved.push('\n');
    }
    // The moved lines are safe in `to` before they leave `from`.
    atomic::write(to, moved.as_bytes())?;
    let kept: String = kept.iter().map(|l| format!("{l}\n")).collect();
    atomic::write(from, kept.as_bytes())?;
    Ok(later.len())
}

/// `recon/step-N.png` pictures with `N > after` go from `from` to `to`.
fn move_pictures(from: &Path, to: &Path, after: u64) -> Result<usize> {
    let Ok(entries) = std::fs::read_dir(from) else {
        return Ok(0);
    };
    let mut n = 0;
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(step) = picture_step(&name) else {
            continue;
        };
        if step > after {
            create(to)?;
            rename(&entry.path(), &to.join(&name))?;
            n += 1;
        }
    }
    Ok(n)
}

/// The step of a reconstruction picture sapling drew (`step-00000010.png`).
pub(super) fn picture_step(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?.strip_suffix(".png")?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The TensorBoard event files sapling wrote in `dir`.
fn event_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(crate::tensorboard::FILE_PREFIX))
        .collect()
}

/// Whether `out` holds a run's metrics or pictures (sapling's names only).
pub(super) fn has_run_files(out: &Path) -> bool {
    let pictures = std::fs::read_dir(out.join(RECON)).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .any(|e| picture_step(&e.file_name().to_string_lossy()).is_some())
    });
    pictures
        || !event_files(out).is_empty()
        || ["metrics.jsonl", "loss.png", "lr.png"]
            .iter()
            .any(|n| out.join(n).exists())
}

fn create(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| SaplingError::io(dir, e))
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    atomic::fault::point()
        .and_then(|_| std::fs::rename(from, to))
        .map_err(|e| SaplingError::io(from, e))
}

/// `parent/prefix-TIME-suffix` for a folder that does not exist yet: the time sorts the set-aside
/// folders, and a count tells apart two made within the same second.
pub(super) fn unused_name(parent: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let time = stamp();
    (1..)
        .map(|n| match n {
            1 => parent.join(format!("{prefix}{time}{suffix}")),
            n => parent.join(format!("{prefix}{time}-{n}{suffix}")),
        })
        .find(|p| !p.exists())
        .expect("some count is free")
}

/// `YYYYMMDD-HHMMSS` of the current UTC time, for folder names that sort by time.
fn stamp() -> String {
    let secs = web_time::SystemTime::now()
        .duration_since(web_time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}
