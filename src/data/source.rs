//! Where images come from: an image folder on disk, or the photos embedded in the binary.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use image::RgbImage;

use super::idx::{self, IdxSplit};

use crate::error::{Result, SaplingError};

/// Widest and tallest image decoded, in pixels: past any camera's or scanner's output, and small
/// enough that a forged header (PNG allows 2^31 a side) is refused before any pixel is allocated.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// Most bytes a decoder may allocate for one image: about 130 megapixels of RGBA, and few enough
/// that several loader threads decoding at once stay well inside a training machine's memory.
pub const MAX_DECODE_BYTES: u64 = 512 << 20;

/// File extensions read from an image folder (case-insensitive).
pub const EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// Public-domain / CC0 photos from scikit-image's data set, resized to 256 px on the short
/// side (see `assets/images/LICENSES.md`), so a fresh checkout trains with no download.
const EMBEDDED: [(&str, &[u8]); 14] = [
    (
        "astronaut.jpg",
        include_bytes!("../../assets/images/astronaut.jpg"),
    ),
    ("brick.jpg", include_bytes!("../../assets/images/brick.jpg")),
    (
        "camera.jpg",
        include_bytes!("../../assets/images/camera.jpg"),
    ),
    ("cell.jpg", include_bytes!("../../assets/images/cell.jpg")),
    (
        "chelsea.jpg",
        include_bytes!("../../assets/images/chelsea.jpg"),
    ),
    (
        "coffee.jpg",
        include_bytes!("../../assets/images/coffee.jpg"),
    ),
    ("coins.jpg", include_bytes!("../../assets/images/coins.jpg")),
    ("grass.jpg", include_bytes!("../../assets/images/grass.jpg")),
    (
        "gravel.jpg",
        include_bytes!("../../assets/images/gravel.jpg"),
    ),
    (
        "hubble_deep_field.jpg",
        include_bytes!("../../assets/images/hubble_deep_field.jpg"),
    ),
    ("ihc.jpg", include_bytes!("../../assets/images/ihc.jpg")),
    (
        "microaneurysms.jpg",
        include_bytes!("../../assets/images/microaneurysms.jpg"),
    ),
    (
        "retina.jpg",
        include_bytes!("../../assets/images/retina.jpg"),
    ),
    (
        "rocket.jpg",
        include_bytes!("../../assets/images/rocket.jpg"),
    ),
];

/// A fixed, ordered list of images.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// The photos compiled into the binary.
    Embedded,
    /// Files found under a folder, sorted by path so the order is the same on every machine.
    Folder { root: PathBuf, files: Vec<PathBuf> },
    /// The train split of an IDX (MNIST-style) data set folder, e.g. Fashion-MNIST.
    Idx { root: PathBuf, split: Arc<IdxSplit> },
    /// Images already decoded, with their names (the browser's: no file system there).
    Decoded(Arc<Vec<(String, RgbImage)>>),
    /// WebDataset tar shards, read in order (never by index).
    #[cfg(not(target_arch = "wasm32"))]
    Shards(Arc<super::shards::ShardSet>),
}

impl ImageSource {
    /// The embedded photos, the shards `data` names (a pattern, a folder of `.tar` files, one
    /// `.tar`), or every image under the folder `data` (recursively).
    pub fn new(data: Option<&Path>) -> Result<Self> {
        match data {
            None => Ok(ImageSource::Embedded),
            #[cfg(not(target_arch = "wasm32"))]
            Some(spec) if super::shards::names_shards(spec) => Ok(ImageSource::Shards(Arc::new(
                super::shards::ShardSet::open(spec)?,
            ))),
            Some(dir) => Self::folder(dir),
        }
    }

    /// Scans `root` recursively; a missing or image-less folder is an error. A folder holding
    /// `train-images-idx3-ubyte[.gz]` is read as an IDX data set (its train split).
    pub fn folder(root: &Path) -> Result<Self> {
        if idx::find(root, "train-images-idx3-ubyte").is_some() {
            return Ok(ImageSource::Idx {
                root: root.to_path_buf(),
                split: Arc::new(idx::read_split(root, "train")?),
            });
        }
        let err = |message: String| SaplingError::Data {
            path: root.to_path_buf(),
            message,
        };
        if !root.is_dir() {
            return Err(err(if root.exists() {
                "is not a folder; pass a folder of images with --data".into()
            } else {
                "does not exist; pass a folder of images with --data, or leave it out to use the embedded photos".into()
            }));
        }
        let mut files = Vec::new();
        for entry in walkdir::WalkDir::new(root).follow_links(true) {
            match entry {
                Ok(entry) if is_image(&entry) => files.push(entry.into_path()),
                Ok(_) => {}
                // The root itself failing is the whole source failing; one bad entry under it
                // (a dangling symlink, an unreadable folder, a loop) is not.
                Err(e) if e.depth() == 0 => return Err(err(format!("cannot list: {e}"))),
                Err(e) => tracing::warn!("skipping {}", describe_walk_error(&e)),
            }
        }
        if files.is_empty() {
            return Err(err(format!(
                "contains no images ({}); add some or point --data elsewhere",
                EXTENSIONS.join(", ")
            )));
        }
        files.sort();
        Ok(ImageSource::Folder {
            root: root.to_path_buf(),
            files,
        })
    }

    /// Images already in memory; an empty list is an error.
    pub fn decoded(images: Vec<(String, RgbImage)>) -> Result<Self> {
        if images.is_empty() {
            return Err(SaplingError::Data {
                path: "<memory>".into(),
                message: "no images to train on: add at least one".into(),
            });
        }
        Ok(ImageSource::Decoded(Arc::new(images)))
    }

    /// Appends an image to a `Decoded` source, in place while nothing else shares its list: the
    /// browser adds dropped photos one at a time and must not copy the ones it holds.
    pub fn push(&mut self, name: String, image: RgbImage) -> Result<()> {
        match self {
            ImageSource::Decoded(images) => {
                Arc::make_mut(images).push((name, image));
                Ok(())
            }
            _ => Err(SaplingError::Data {
                path: name.into(),
                message: format!(
                    "cannot be added to {}: only images in memory take more",
                    self.describe()
                ),
            }),
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        match self {
            ImageSource::Embedded => EMBEDDED.len(),
            ImageSource::Folder { files, .. } => files.len(),
            ImageSource::Idx { split, .. } => split.images.count,
            ImageSource::Decoded(images) => images.len(),
            #[cfg(not(target_arch = "wasm32"))]
            ImageSource::Shards(set) => usize::try_from(set.total).unwrap_or(usize::MAX),
        }
    }

    /// Always false: empty sources are rejected when built.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A human-readable name of image `i` (its path, or `embedded:NAME`).
    pub fn name(&self, i: usize) -> String {
        match self {
            ImageSource::Embedded => format!("embedded:{}", EMBEDDED[i].0),
            ImageSource::Folder { files, .. } => files[i].display().to_string(),
            ImageSource::Idx { split, .. } => format!("{}#{i}", split.images_path.display()),
            ImageSource::Decoded(images) => images[i].0.clone(),
            #[cfg(not(target_arch = "wasm32"))]
            ImageSource::Shards(set) => format!("{} sample {i}", set.spec.display()),
        }
    }

    /// Where the images come from, for messages.
    pub fn describe(&self) -> String {
        match self {
            ImageSource::Embedded => format!("{} embedded photos", self.len()),
            ImageSource::Folder { root, files } => {
                format!("{} images under {}", files.len(), root.display())
            }
            ImageSource::Idx { root, split } => format!(
                "{} {}x{} IDX images (train split) in {}",
                split.images.count,
                split.images.rows,
                split.images.cols,
                root.display()
            ),
            ImageSource::Decoded(images) => format!("{} images in memory", images.len()),
            #[cfg(not(target_arch = "wasm32"))]
            ImageSource::Shards(set) => set.describe(),
        }
    }

    /// The first `n` decodable images in file order (a shard set's from its first shards), for
    /// the fixed batch of the reconstruction pictures.
    pub fn first_images(&self, n: usize) -> Vec<RgbImage> {
        #[cfg(not(target_arch = "wasm32"))]
        if let ImageSource::Shards(set) = self {
            return set.first_images(n);
        }
        (0..self.len())
            .filter_map(|i| self.load(i).ok())
            .take(n)
            .collect()
    }

    /// Image `i`'s encoded bytes, for a folder's files (so a JPEG can be decoded at the scale its
    /// crop needs); `None` for sources decoded whole. The embedded photos are among those: the
    /// page decodes them whole (it holds pixels), and a run on them must give the page's numbers.
    pub fn encoded(&self, i: usize) -> Option<std::result::Result<Vec<u8>, String>> {
        match self {
            ImageSource::Folder { files, .. } => Some(read_bounded(&files[i])),
            _ => None,
        }
    }

    /// Decodes image `i` to 8-bit RGB (grey and alpha images are converted), within
    /// [`decode_limits`].
    pub fn load(&self, i: usize) -> std::result::Result<RgbImage, String> {
        match self {
            ImageSource::Embedded => decode_bytes(EMBEDDED[i].1),
            ImageSource::Folder { files, .. } => decode_file(&files[i]),
            ImageSource::Idx { split, .. } => Ok(split.images.rgb(i)),
            ImageSource::Decoded(images) => Ok(images[i].1.clone()),
            #[cfg(not(target_arch = "wasm32"))]
            ImageSource::Shards(_) => Err("shards are read in order, not by index".into()),
        }
    }
}

/// Whether a folder entry is a file with one of [`EXTENSIONS`].
fn is_image(entry: &walkdir::DirEntry) -> bool {
    entry.file_type().is_file()
        && entry
            .path()
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// "PATH: why" for an entry the folder scan could not read.
fn describe_walk_error(e: &walkdir::Error) -> String {
    let path = e
        .path()
        .map_or("an entry".into(), |p| p.display().to_string());
    match e.io_error() {
        Some(io) if io.kind() == std::io::ErrorKind::NotFound => {
            format!("{path}: dangling symbolic link")
        }
        Some(io) => format!("{path}: {io}"),
        None => format!("{path}: {e}"),
    }
}

/// The limits every image is decoded within: [`MAX_IMAGE_SIDE`] and [`MAX_DECODE_BYTES`].
pub fn decode_limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}

/// A file's bytes, refused unread when it is longer than [`MAX_DECODE_BYTES`] (no image sapling
/// decodes is, and a folder may hold anything under an image's name).
pub fn read_bounded(path: &Path) -> std::result::Result<Vec<u8>, String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > MAX_DECODE_BYTES {
        return Err(format!(
            "{len} bytes, larger than sapling decodes ({} MiB)",
            MAX_DECODE_BYTES >> 20
        ));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

/// Decodes an image file (its format read from its bytes) within [`decode_limits`].
pub fn decode_file(path: &Path) -> std::result::Result<RgbImage, String> {
    let reader = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| e.to_string())?;
    decode(reader)
}

/// Decodes an encoded image in memory within [`decode_limits`].
pub fn decode_bytes(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    decode(reader)
}

fn decode<R: std::io::BufRead + std::io::Seek>(
    mut reader: image::ImageReader<R>,
) -> std::result::Result<RgbImage, String> {
    reader.limits(decode_limits());
    match reader.decode() {
        Ok(img) => Ok(img.to_rgb8()),
        Err(image::ImageError::Limits(e)) => Err(format!(
            "larger than sapling decodes ({MAX_IMAGE_SIDE} px a side, {} MiB): {e}",
            MAX_DECODE_BYTES >> 20
        )),
        Err(e) => Err(e.to_string()),
    }
}
