//! WebDataset tar shards: which files, how many samples each holds, and the reader that streams
//! one rank's share of them in a seeded order.

/// Raw micro-batches to normalised ones.
pub mod batches;
/// One shard read front to back.
pub mod members;
/// Shard order per epoch and rank, and the shuffle buffer.
pub mod order;
/// `sapling data pack`.
pub mod pack;
/// One rank's endless, resumable sample stream.
pub mod reader;
/// Brace patterns, folders of shards, single files.
pub mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::source::decode_bytes;
use crate::error::{Result, SaplingError};

pub use reader::{RankReader, Sample};
pub use spec::names_shards;

/// The file beside the shards giving each one's sample count (OpenCLIP's convention: shard file
/// name → samples), so an epoch's length is known without reading the shards.
pub const SIZES_FILE: &str = "sizes.json";

/// The file `sapling data pack` keeps in its output folder until the last shard and
/// `sizes.json` are written: a folder holding it is a pack cut short.
pub const INCOMPLETE_FILE: &str = ".pack-incomplete";

/// One shard file and its sample count.
#[derive(Debug, Clone)]
pub struct ShardFile {
    pub path: PathBuf,
    /// Samples with an image member.
    pub samples: u64,
    /// File length in bytes.
    pub bytes: u64,
}

/// The shards a run reads, each with its count, in the order `--data` names them.
#[derive(Debug, Clone)]
pub struct ShardSet {
    /// The `--data` value.
    pub spec: PathBuf,
    pub files: Vec<ShardFile>,
    /// Samples in all shards.
    pub total: u64,
    /// Where the counts came from, for the log.
    pub counted: String,
}

impl ShardSet {
    /// The shards `spec` names, counted from `sizes.json` beside them or, for shards it does not
    /// list, by reading their headers. Empty shards are left out with a warning.
    pub fn open(spec: &Path) -> Result<ShardSet> {
        let paths = spec::resolve(spec)?;
        // Each folder's sizes.json, read once (a pattern may span folders).
        let mut sizes: BTreeMap<PathBuf, BTreeMap<String, u64>> = BTreeMap::new();
        let mut files = Vec::with_capacity(paths.len());
        let mut scanned = 0;
        for path in paths {
            let folder = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            if let std::collections::btree_map::Entry::Vacant(slot) = sizes.entry(folder.clone()) {
                slot.insert(read_sizes(&folder)?);
            }
            let bytes = std::fs::metadata(&path)
                .map_err(|e| SaplingError::data(&path, format!("cannot read: {e}")))?
                .len();
            let listed = file_name(&path).and_then(|n| sizes[&folder].get(n).copied());
            let samples = match listed {
                // Every sample needs a 512-byte tar header at least.
                Some(n) if n > bytes / 512 => {
                    return Err(SaplingError::data(
                        &path,
                        format!(
                            "{SIZES_FILE} says {n} samples, more than a file of {bytes} bytes can \
                             hold; fix or delete {SIZES_FILE}"
                        ),
                    ));
                }
                Some(n) => n,
                None => {
                    scanned += 1;
                    count(&path)?
                }
            };
            if samples == 0 {
                tracing::warn!(
                    "skipping {}: the shard holds no samples with an image (jpg, jpeg, png, webp)",
                    path.display()
                );
                continue;
            }
            files.push(ShardFile {
                path,
                samples,
                bytes,
            });
        }
        if files.is_empty() {
            return Err(SaplingError::Data {
                path: spec.to_path_buf(),
                message: "none of the shards holds an image; check that they are WebDataset \
                          tar files with .jpg, .jpeg, .png or .webp members"
                    .into(),
            });
        }
        let total = files.iter().map(|f| f.samples).sum();
        let counted = match scanned {
            0 => format!("counts from {SIZES_FILE}"),
            n if n == files.len() => "counted by reading the shards".into(),
            n => format!("{n} shards counted by reading them, the rest from {SIZES_FILE}"),
        };
        Ok(ShardSet {
            spec: spec.to_path_buf(),
            files,
            total,
            counted,
        })
    }

    /// Each shard's sample count, in order.
    pub fn counts(&self) -> Vec<u64> {
        self.files.iter().map(|f| f.samples).collect()
    }

    /// Mean bytes per sample, for sizing the shuffle buffer's memory.
    pub fn mean_sample_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum::<u64>() / self.total.max(1)
    }

    /// "N samples in S shards (pattern)".
    pub fn describe(&self) -> String {
        format!(
            "{} samples in {} shard{} ({}; {})",
            self.total,
            self.files.len(),
            if self.files.len() == 1 { "" } else { "s" },
            self.spec.display(),
            self.counted
        )
    }

    /// The first `n` decodable images of the first shards, in file order.
    pub fn first_images(&self, n: usize) -> Vec<image::RgbImage> {
        let mut images = Vec::with_capacity(n);
        for file in &self.files {
            let read = members::read(
                &file.path,
                |_| true,
                |_, member| {
                    if let Some(img) = member.and_then(|m| decode_bytes(&m.bytes).ok()) {
                        images.push(img);
                    }
                    Ok(images.len() < n)
                },
            );
            if read.is_err() || images.len() == n {
                break;
            }
        }
        images
    }

    /// Refuses a set that cannot give every rank a shard.
    pub fn check_ranks(&self, ranks: usize) -> Result<()> {
        if self.files.len() >= ranks {
            return Ok(());
        }
        Err(SaplingError::Data {
            path: self.spec.clone(),
            message: format!(
                "{} shard{} for {ranks} MPI ranks: each rank reads whole shards, so every rank \
                 needs at least one; pack the data into at least {ranks} shards (sapling data \
                 pack --shard-size) or run fewer ranks",
                self.files.len(),
                if self.files.len() == 1 { "" } else { "s" },
            ),
        })
    }
}

/// Samples in one shard, by reading its headers.
pub fn count(path: &Path) -> Result<u64> {
    let scan = members::read(path, |_| false, |_, _| Ok(true))?;
    if scan.imageless_count > 0 {
        tracing::warn!(
            "{}: {} samples without an image member are skipped ({}{})",
            path.display(),
            scan.imageless_count,
            scan.imageless.join(", "),
            if scan.imageless_count as usize > scan.imageless.len() {
                ", ..."
            } else {
                ""
            }
        );
    }
    Ok(scan.samples)
}

/// The counts `folder`'s `sizes.json` gives, or none when there is no such file; a folder
/// holding a pack that did not finish is refused.
fn read_sizes(folder: &Path) -> Result<BTreeMap<String, u64>> {
    if folder.join(INCOMPLETE_FILE).exists() {
        return Err(SaplingError::Data {
            path: folder.to_path_buf(),
            message: format!(
                "holds a pack that did not finish ({INCOMPLETE_FILE}); run sapling data pack \
                 again with --overwrite"
            ),
        });
    }
    let path = folder.join(SIZES_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(BTreeMap::new());
    };
    serde_json::from_str(&text).map_err(|e| SaplingError::Data {
        path,
        message: format!(
            "is not a map of shard file names to sample counts ({e}); fix it, or delete it to \
             have the shards counted"
        ),
    })
}

/// Writes `sizes.json` for `files` into `dir`.
pub fn write_sizes(dir: &Path, files: &[(String, u64)]) -> Result<()> {
    let map: BTreeMap<&str, u64> = files.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    let text = serde_json::to_string_pretty(&map).expect("a map of strings to numbers");
    let path = dir.join(SIZES_FILE);
    crate::atomic::write(&path, format!("{text}\n").as_bytes())?;
    // Read by everyone who reads the shards, as they are.
    #[cfg(unix)]
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(|e| SaplingError::io(&path, e))?;
    Ok(())
}

fn file_name(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}
