//! `sapling data pack`: an image folder (recursive) or IDX files written as WebDataset shards:
//! each image a sample `KEY.jpg` (resized so its short side is at most `max_side`, JPEGs that
//! need no resize kept byte for byte, the rest encoded at `quality`) with `KEY.json` naming its
//! source (and `KEY.cls`, the label, for IDX), shards cut at `shard_size` bytes, and
//! `sizes.json` with each shard's count. The same input gives the same bytes: members in input
//! order, fixed tar headers, deterministic encoding.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use image::{ImageEncoder, RgbImage, codecs::jpeg::JpegEncoder, imageops};
use rayon::prelude::*;

use super::{INCOMPLETE_FILE, SIZES_FILE, write_sizes};
use crate::data::source::{ImageSource, decode_bytes, read_bounded};
use crate::error::{Result, SaplingError};
use crate::progress::Progress;

/// How to pack.
#[derive(Debug, Clone)]
pub struct PackOptions {
    pub out: PathBuf,
    /// A shard is closed before it would pass this many bytes (a sample larger than it gets a
    /// shard of its own).
    pub shard_size: u64,
    pub max_side: u32,
    pub quality: u8,
    pub workers: usize,
    /// Replace shards and `sizes.json` a previous pack wrote in `out`.
    pub overwrite: bool,
}

/// What a pack did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PackSummary {
    pub images: u64,
    /// JPEGs within `max_side`, stored as they were.
    pub kept: u64,
    /// Images shrunk to `max_side`.
    pub resized: u64,
    /// Images within `max_side` but not JPEGs (PNG, WebP, IDX), encoded at `quality`.
    pub encoded: u64,
    /// Files that could not be packed, with why (the first few).
    pub skipped: Vec<String>,
    pub skipped_count: u64,
    pub bytes: u64,
    pub shards: Vec<(String, u64)>,
    /// The `--data` value that reads the shards.
    pub data: String,
}

/// Samples encoded in parallel at a time: enough to keep every worker busy, few enough that
/// their bytes stay small next to a shard.
const CHUNK: usize = 256;
/// Skipped files named in the summary, at most.
const NAMED_SKIPS: usize = 10;

/// Packs `source` into `options.out`.
pub fn pack(
    source: &ImageSource,
    options: &PackOptions,
    progress: Progress,
) -> Result<PackSummary> {
    prepare_out(&options.out, options.overwrite)?;
    match write_pack(source, options, progress) {
        Ok(summary) => {
            drop_replaced(&options.out)?;
            let marker = options.out.join(INCOMPLETE_FILE);
            std::fs::remove_file(&marker).map_err(|e| io_error(&marker, e))?;
            crate::atomic::sync_dir(&options.out);
            Ok(summary)
        }
        Err(e) => {
            put_back(&options.out)?;
            Err(e)
        }
    }
}

/// The pack itself, into a prepared folder; the `.pack-incomplete` marker it leaves is removed
/// by [`pack`] once the set it replaced is gone.
fn write_pack(
    source: &ImageSource,
    options: &PackOptions,
    progress: Progress,
) -> Result<PackSummary> {
    // Until sizes.json is written, the folder says the pack is unfinished (a kill or an error
    // between shards leaves whole-looking shards of a partial set).
    let marker = options.out.join(INCOMPLETE_FILE);
    std::fs::write(&marker, b"").map_err(|e| io_error(&marker, e))?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.workers)
        .build()
        .map_err(|e| SaplingError::config("data.workers", e.to_string()))?;
    let phase = progress.phase(
        format!("packing {}", source.describe()),
        source.len() as u64,
    );
    let mut writer = ShardWriter::new(options);
    let mut summary = PackSummary::default();
    for start in (0..source.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(source.len());
        let encoded: Vec<_> = pool.install(|| {
            (start..end)
                .into_par_iter()
                .map(|i| encode(source, i, options))
                .collect()
        });
        for (i, result) in (start..end).zip(encoded) {
            match result {
                Ok((jpeg, how)) => {
                    summary.images += 1;
                    *match how {
                        Stored::Kept => &mut summary.kept,
                        Stored::Resized => &mut summary.resized,
                        Stored::Encoded => &mut summary.encoded,
                    } += 1;
                    writer.add(&members(source, i, summary.images - 1, jpeg))?;
                }
                Err(why) => {
                    summary.skipped_count += 1;
                    if summary.skipped.len() < NAMED_SKIPS {
                        summary.skipped.push(format!("{}: {why}", source.name(i)));
                    }
                }
            }
        }
        phase.advance((end - start) as u64);
    }
    drop(phase);
    writer.finish()?;
    if summary.images == 0 {
        return Err(SaplingError::Data {
            path: source.name(0).into(),
            message: "none of the images could be read, so no shard was written".into(),
        });
    }
    write_sizes(&options.out, &writer.done)?;
    summary.bytes = writer.bytes;
    summary.data = options.out.display().to_string();
    summary.shards = writer.done;
    Ok(summary)
}

/// How an image was stored.
enum Stored {
    Kept,
    Resized,
    Encoded,
}

/// Image `i` as the JPEG bytes to store, and how they were made.
fn encode(
    source: &ImageSource,
    i: usize,
    options: &PackOptions,
) -> std::result::Result<(Vec<u8>, Stored), String> {
    let original = match source {
        ImageSource::Folder { files, .. } => Some(read_bounded(&files[i])?),
        _ => None,
    };
    let img = match &original {
        Some(bytes) => decode_bytes(bytes)?,
        None => source.load(i)?,
    };
    let short = img.width().min(img.height());
    let needs_resize = short > options.max_side;
    if let Some(bytes) = original
        && !needs_resize
        && bytes.starts_with(&[0xFF, 0xD8])
    {
        return Ok((bytes, Stored::Kept));
    }
    let img = if needs_resize {
        shrink(&img, options.max_side)
    } else {
        img
    };
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, options.quality)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| e.to_string())?;
    Ok((
        jpeg,
        if needs_resize {
            Stored::Resized
        } else {
            Stored::Encoded
        },
    ))
}

/// `img` scaled so its short side is `max_side` (Lanczos-3: a downscale for storage).
fn shrink(img: &RgbImage, max_side: u32) -> RgbImage {
    let short = img.width().min(img.height()) as f64;
    let scale = max_side as f64 / short;
    let w = ((img.width() as f64 * scale).round() as u32).max(1);
    let h = ((img.height() as f64 * scale).round() as u32).max(1);
    imageops::resize(img, w, h, imageops::FilterType::Lanczos3)
}

/// Sample `n`'s tar members: the image, its source, and its label where the source has one.
fn members(source: &ImageSource, i: usize, n: u64, jpeg: Vec<u8>) -> Vec<(String, Vec<u8>)> {
    let key = format!("{n:09}");
    let name = match source {
        ImageSource::Folder { root, files } => files[i]
            .strip_prefix(root)
            .unwrap_or(&files[i])
            .display()
            .to_string(),
        _ => source.name(i),
    };
    let json = serde_json::json!({ "source": name }).to_string();
    let mut out = vec![
        (format!("{key}.jpg"), jpeg),
        (format!("{key}.json"), json.into_bytes()),
    ];
    if let ImageSource::Idx { split, .. } = source
        && let Some(label) = split.labels.get(i)
    {
        out.push((format!("{key}.cls"), label.to_string().into_bytes()));
    }
    out
}

/// Writes samples into `shard-NNNNNN.tar` files, each completed under a temporary name and
/// renamed when closed, so a killed pack leaves no shard that looks whole.
struct ShardWriter {
    out: PathBuf,
    limit: u64,
    current: Option<(
        tempfile::NamedTempFile,
        tar::Builder<BufWriter<File>>,
        u64,
        u64,
    )>,
    done: Vec<(String, u64)>,
    bytes: u64,
}

impl ShardWriter {
    fn new(options: &PackOptions) -> Self {
        ShardWriter {
            out: options.out.clone(),
            limit: options.shard_size,
            current: None,
            done: Vec::new(),
            bytes: 0,
        }
    }

    fn add(&mut self, members: &[(String, Vec<u8>)]) -> Result<()> {
        let size: u64 = members
            .iter()
            .map(|(_, b)| 512 + (b.len() as u64).next_multiple_of(512))
            .sum();
        // The two zero blocks that end an archive count too.
        let end = 1024;
        if self
            .current
            .as_ref()
            .is_some_and(|(_, _, bytes, n)| *n > 0 && bytes + size + end > self.limit)
        {
            self.close()?;
        }
        if self.current.is_none() {
            let mut builder = tempfile::Builder::new();
            builder.prefix(".shard-").suffix(".partial");
            // Shards are shared (a cluster's readers, other users): readable like any file.
            #[cfg(unix)]
            builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
            let temp = builder
                .tempfile_in(&self.out)
                .map_err(|e| io_error(&self.out, e))?;
            let file = temp.reopen().map_err(|e| io_error(temp.path(), e))?;
            let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
            builder.mode(tar::HeaderMode::Deterministic);
            self.current = Some((temp, builder, 0, 0));
        }
        let (temp, builder, bytes, n) = self.current.as_mut().expect("opened above");
        for (name, data) in members {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, name, data.as_slice())
                .map_err(|e| io_error(temp.path(), e))?;
        }
        *bytes += size;
        *n += 1;
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        let Some((temp, builder, _, n)) = self.current.take() else {
            return Ok(());
        };
        let mut inner = builder.into_inner().map_err(|e| io_error(temp.path(), e))?;
        inner.flush().map_err(|e| io_error(temp.path(), e))?;
        inner
            .get_ref()
            .sync_all()
            .map_err(|e| io_error(temp.path(), e))?;
        let name = format!("shard-{:06}.tar", self.done.len());
        let path = self.out.join(&name);
        self.bytes += inner.get_ref().metadata().map(|m| m.len()).unwrap_or(0);
        temp.persist(&path).map_err(|e| io_error(&path, e.error))?;
        self.done.push((name, n));
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.close()?;
        crate::atomic::sync_dir(&self.out);
        Ok(())
    }
}

/// Where `--overwrite` keeps the earlier pack's files until the new pack is whole: put back if
/// it fails (or, after a kill, by the next pack), deleted once it has succeeded.
const REPLACED_DIR: &str = ".pack-replaced";
/// [`REPLACED_DIR`] renamed once the new pack is whole, so a kill while deleting it never
/// leaves a partial old set that a later pack would put back.
const DELETING_DIR: &str = ".pack-replaced.delete";

/// Creates `out`, or checks that it holds nothing but a previous pack's files (set aside in
/// [`REPLACED_DIR`] when `overwrite`); anything else in it is never touched.
fn prepare_out(out: &Path, overwrite: bool) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| io_error(out, e))?;
    // A pack killed while replacing another: the earlier, whole set comes back first.
    put_back(out)?;
    drop_dir(&out.join(DELETING_DIR))?;
    let ours = packs_files(out)?;
    if ours.is_empty() {
        return Ok(());
    }
    if !overwrite {
        return Err(SaplingError::Data {
            path: out.to_path_buf(),
            message: format!(
                "already holds {} shard file(s) from an earlier pack; pass --overwrite to replace \
                 them, or pack into a new folder",
                ours.len()
            ),
        });
    }
    let aside = out.join(REPLACED_DIR);
    std::fs::create_dir(&aside).map_err(|e| io_error(&aside, e))?;
    for path in ours {
        let to = aside.join(path.file_name().expect("a listed file"));
        std::fs::rename(&path, &to).map_err(|e| io_error(&path, e))?;
    }
    crate::atomic::sync_dir(out);
    Ok(())
}

/// The files of sapling data pack's own names in `out`; anything else there is an error.
fn packs_files(out: &Path) -> Result<Vec<PathBuf>> {
    let mut ours = Vec::new();
    for entry in std::fs::read_dir(out).map_err(|e| io_error(out, e))? {
        let entry = entry.map_err(|e| io_error(out, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == REPLACED_DIR || name == DELETING_DIR {
            continue;
        }
        if !is_packs_own(&name) {
            return Err(SaplingError::Data {
                path: out.to_path_buf(),
                message: format!(
                    "holds {name}, which sapling data pack did not write; pack into an empty or \
                     new folder"
                ),
            });
        }
        ours.push(entry.path());
    }
    Ok(ours)
}

/// Where a pack that replaced another failed or was killed: its own files go, and the set it
/// replaced comes back. Nothing to do when no set was set aside.
fn put_back(out: &Path) -> Result<()> {
    let aside = out.join(REPLACED_DIR);
    if !aside.is_dir() {
        return Ok(());
    }
    for path in packs_files(out)? {
        std::fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
    }
    for entry in std::fs::read_dir(&aside).map_err(|e| io_error(&aside, e))? {
        let path = entry.map_err(|e| io_error(&aside, e))?.path();
        let to = out.join(path.file_name().expect("a listed file"));
        std::fs::rename(&path, &to).map_err(|e| io_error(&path, e))?;
    }
    std::fs::remove_dir(&aside).map_err(|e| io_error(&aside, e))?;
    crate::atomic::sync_dir(out);
    Ok(())
}

/// Deletes the set a successful pack replaced.
fn drop_replaced(out: &Path) -> Result<()> {
    let (aside, deleting) = (out.join(REPLACED_DIR), out.join(DELETING_DIR));
    if aside.is_dir() {
        std::fs::rename(&aside, &deleting).map_err(|e| io_error(&aside, e))?;
    }
    drop_dir(&deleting)
}

fn drop_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(dir, e)),
        _ => Ok(()),
    }
}

/// `shard-NNNNNN.tar`, `sizes.json`, or a pack's temporary or marker file.
fn is_packs_own(name: &str) -> bool {
    let shard = name
        .strip_prefix("shard-")
        .and_then(|s| s.strip_suffix(".tar"))
        .is_some_and(|n| n.len() == 6 && n.bytes().all(|b| b.is_ascii_digit()));
    shard
        || name == SIZES_FILE
        || name == INCOMPLETE_FILE
        || (name.starts_with(".shard-") && name.ends_with(".partial"))
}

fn io_error(path: &Path, source: std::io::Error) -> SaplingError {
    SaplingError::Io {
        path: path.to_path_buf(),
        source,
    }
}
