//! A checkpoint's `manifest.json`: the files it lists, which may only be the ones sapling writes
//! (so a crafted manifest cannot point a read at `/dev/zero` or `../../x`), each read only after
//! its length on disk matches the manifest and a bound the run's model allows.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Result, SaplingError};
use crate::model::analytic_params;

pub(super) const MODEL: &str = "model.bpk";
pub(super) const OPTIM: &str = "optim.bpk";
pub(super) const STATE: &str = "state.json";
pub(super) const MANIFEST: &str = "manifest.json";

/// The manifest lists a handful of names and numbers.
const MANIFEST_MAX: u64 = 1 << 20;
/// The state holds the config and the batch plan with its trials.
const STATE_MAX: u64 = 16 << 20;
/// Room in a record beyond its values: names, shapes, burn's headers.
const RECORD_SLACK: u64 = 16 << 20;
/// More shards than this is not a world sapling has run in.
const MAX_RANKS: usize = 1 << 16;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Manifest {
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub crc32: u32,
}

/// What a listed file is; anything else in a manifest is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Model,
    Optim,
    State,
    /// Rank `.0`'s shard of the moments written by `.1` ranks.
    Shard(usize, usize),
}

fn kind(name: &str) -> Option<Kind> {
    match name {
        MODEL => return Some(Kind::Model),
        OPTIM => return Some(Kind::Optim),
        STATE => return Some(Kind::State),
        _ => {}
    }
    let (rank, ranks) = name
        .strip_prefix("optim-shard-")?
        .strip_suffix(".safetensors")?
        .split_once("-of-")?;
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.len() < 8;
    if !plain(rank) || !plain(ranks) {
        return None;
    }
    let (rank, ranks) = (rank.parse().ok()?, ranks.parse().ok()?);
    (rank < ranks && ranks <= MAX_RANKS).then_some(Kind::Shard(rank, ranks))
}

/// The file name of rank `rank`'s shard of the moments in a checkpoint written by `ranks` ranks.
pub fn shard_file(rank: usize, ranks: usize) -> String {
    format!("optim-shard-{rank}-of-{ranks}.safetensors")
}

/// Whether `file` is one rank's shard of the optimizer moments.
pub(super) fn is_shard(file: &FileEntry) -> bool {
    matches!(kind(&file.name), Some(Kind::Shard(..)))
}

impl Manifest {
    /// Reads and checks `dir/manifest.json`: only sapling's own file names, each once, the
    /// state and model, and the moments either whole or as one shard per rank of one world.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let bytes = read_bounded(dir, MANIFEST, None, MANIFEST_MAX).map_err(|e| {
            err(
                dir,
                format!("no readable {MANIFEST} ({e}): the checkpoint is incomplete"),
            )
        })?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| err(dir, format!("corrupt {MANIFEST}: {e}")))?;
        manifest.check(dir)?;
        Ok(manifest)
    }

    fn check(&self, dir: &Path) -> Result<()> {
        let mut kinds = Vec::with_capacity(self.files.len());
        for file in &self.files {
            let kind = kind(&file.name).ok_or_else(|| {
                err(
                    dir,
                    format!(
                        "{MANIFEST} lists `{}`, which is not a file sapling writes into a \
                         checkpoint; the checkpoint was altered",
                        file.name.escape_debug()
                    ),
                )
            })?;
            if kinds.contains(&kind) {
                return Err(err(dir, format!("{MANIFEST} lists {} twice", file.name)));
            }
            kinds.push(kind);
        }
        for needed in [Kind::State, Kind::Model] {
            if !kinds.contains(&needed) {
                let name = if needed == Kind::State { STATE } else { MODEL };
                return Err(err(dir, format!("{MANIFEST} does not list {name}")));
            }
        }
        let shards: Vec<(usize, usize)> = kinds
            .iter()
            .filter_map(|k| match k {
                Kind::Shard(r, n) => Some((*r, *n)),
                _ => None,
            })
            .collect();
        let whole = kinds.contains(&Kind::Optim);
        let complete_world = shards
            .first()
            .is_some_and(|&(_, n)| shards.len() == n && shards.iter().all(|s| s.1 == n));
        match (whole, shards.is_empty()) {
            (true, true) => Ok(()),
            (false, false) if complete_world => Ok(()),
            (false, true) => Err(err(dir, format!("{MANIFEST} does not list {OPTIM}"))),
            _ => Err(err(
                dir,
                format!(
                    "{MANIFEST} lists the optimizer's moments inconsistently (whole and sharded, \
                     or not one shard per rank)"
                ),
            )),
        }
    }

    /// The entry for `name`.
    pub fn entry(&self, dir: &Path, name: &str) -> Result<&FileEntry> {
        self.files
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| err(dir, format!("{MANIFEST} does not list {name}")))
    }

    /// Checks every listed file's length against the most the run's model can need (a
    /// manifest may be crafted to make a reader allocate anything).
    pub fn check_sizes(&self, dir: &Path, config: &Config) -> Result<()> {
        for file in &self.files {
            let most = most_bytes(&file.name, config);
            if file.bytes > most {
                return Err(err(
                    dir,
                    format!(
                        "{MANIFEST} says {} is {} bytes, more than a `{}` model's {} can be \
                         ({most}); the checkpoint was altered",
                        file.name,
                        file.bytes,
                        config.preset.name(),
                        file.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The largest `name` a checkpoint of `config`'s model can hold.
fn most_bytes(name: &str, config: &Config) -> u64 {
    let params = analytic_params(&config.model);
    let values = |n: usize, copies: u64| (n as u64).saturating_mul(4 * copies);
    let with_slack = |b: u64| b.saturating_add(b / 100).saturating_add(RECORD_SLACK);
    match kind(name) {
        Some(Kind::State) => STATE_MAX,
        Some(Kind::Model) => with_slack(values(params.total(), 1)),
        // Two moments per parameter.
        Some(Kind::Optim) => with_slack(values(params.learnable, 2)),
        // Two moments and the f32 master weights of this rank's block.
        Some(Kind::Shard(_, ranks)) => with_slack(values(params.learnable / ranks + ranks, 3)),
        None => 0,
    }
}

/// The file `entry` of checkpoint folder `dir`, read (no more than the manifest says) and
/// checked against its length and CRC-32.
pub(super) fn read_verified(dir: &Path, entry: &FileEntry) -> Result<Vec<u8>> {
    let name = &entry.name;
    let bytes = read_bounded(dir, name, Some(entry.bytes), entry.bytes)
        .map_err(|e| err(dir, format!("{name}: {e}")))?;
    if crc32fast::hash(&bytes) != entry.crc32 {
        return Err(corrupt(dir, name));
    }
    Ok(bytes)
}

/// Checks the file `entry` of `dir` against its length and CRC-32 without holding it.
pub(super) fn verify(dir: &Path, entry: &FileEntry) -> Result<()> {
    let name = &entry.name;
    let path = dir.join(name);
    let io = |e: std::io::Error| err(dir, format!("{name}: {e}"));
    let file = open_with_length(&path, Some(entry.bytes)).map_err(io)?;
    let mut reader = BufReader::with_capacity(1 << 20, file.take(entry.bytes));
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut seen = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        seen += n as u64;
    }
    if seen != entry.bytes || hasher.finalize() != entry.crc32 {
        return Err(corrupt(dir, name));
    }
    Ok(())
}

/// `dir/name`, which must be a regular file of `length` bytes (when given) and at most `most`.
fn read_bounded(
    dir: &Path,
    name: &str,
    length: Option<u64>,
    most: u64,
) -> std::io::Result<Vec<u8>> {
    let file = open_with_length(&dir.join(name), length)?;
    let len = file.metadata()?.len();
    if len > most {
        return Err(std::io::Error::other(format!(
            "{len} bytes, more than the {most} such a file can be"
        )));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != len {
        return Err(std::io::Error::other("the file changed while it was read"));
    }
    Ok(bytes)
}

/// Opens `path` if it is a regular file (not a device, a pipe or a folder) of `length` bytes.
fn open_with_length(path: &Path, length: Option<u64>) -> std::io::Result<std::fs::File> {
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if let Some(want) = length
        && meta.len() != want
    {
        return Err(std::io::Error::other(format!(
            "{} bytes where the manifest says {want}: the file is truncated or was replaced",
            meta.len()
        )));
    }
    Ok(file)
}

fn corrupt(dir: &Path, name: &str) -> SaplingError {
    err(
        dir,
        format!("{name} does not match its checksum: the file is corrupt"),
    )
}

fn err(dir: &Path, message: String) -> SaplingError {
    SaplingError::Checkpoint {
        path: PathBuf::from(dir),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sapling_names_are_files_of_a_checkpoint() {
        for good in [
            "model.bpk",
            "optim.bpk",
            "state.json",
            "optim-shard-0-of-2.safetensors",
        ] {
            assert!(kind(good).is_some(), "{good}");
        }
        for bad in [
            "/dev/zero",
            "../../x",
            "model.bpk/",
            "optim-shard-2-of-2.safetensors",
            "optim-shard-0-of-0.safetensors",
            "optim-shard--1-of-2.safetensors",
            "optim-shard-+1-of-2.safetensors",
            "optim-shard-0-of-99999999.safetensors",
            "optim-shard-../0-of-2.safetensors",
            "manifest.json",
        ] {
            assert!(kind(bad).is_none(), "{bad}");
        }
    }
}
