//! Reader for the IDX files of MNIST-style data sets (e.g. Debian's `dataset-fashion-mnist`),
//! plain or gzip-compressed.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Result, SaplingError};

/// Magic number of an unsigned-byte, 3-D (images) IDX file.
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an unsigned-byte, 1-D (labels) IDX file.
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// A stack of grey images.
#[derive(Debug, Clone)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    /// `count · rows · cols` bytes, image after image, row-major.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// Image `i` as RGB (grey copied to the three channels).
    pub fn rgb(&self, i: usize) -> image::RgbImage {
        let px = &self.pixels[i * self.rows * self.cols..][..self.rows * self.cols];
        image::RgbImage::from_fn(self.cols as u32, self.rows as u32, |x, y| {
            let v = px[y as usize * self.cols + x as usize];
            image::Rgb([v, v, v])
        })
    }
}

/// One split of an IDX data set folder: `{split}-images-idx3-ubyte[.gz]` and its labels.
#[derive(Debug, Clone)]
pub struct IdxSplit {
    pub images: IdxImages,
    pub labels: Vec<u8>,
    pub images_path: PathBuf,
}

/// The path of `{stem}` or `{stem}.gz` in `dir`, if either exists.
pub fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [dir.join(stem), dir.join(format!("{stem}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}

/// Reads the `split` ("train" or "t10k") of the IDX data set in `dir`.
pub fn read_split(dir: &Path, split: &str) -> Result<IdxSplit> {
    let missing = |what: &str| SaplingError::Data {
        path: dir.to_path_buf(),
        message: format!(
            "no {split}-{what}-idx?-ubyte[.gz] file: not an IDX (MNIST-style) data set folder"
        ),
    };
    let images_path =
        find(dir, &format!("{split}-images-idx3-ubyte")).ok_or_else(|| missing("images"))?;
    let labels_path =
        find(dir, &format!("{split}-labels-idx1-ubyte")).ok_or_else(|| missing("labels"))?;
    let images = read_images(&images_path)?;
    let labels = read_labels(&labels_path)?;
    if labels.len() != images.count {
        return Err(SaplingError::Data {
            path: labels_path,
            message: format!("has {} labels for {} images", labels.len(), images.count),
        });
    }
    Ok(IdxSplit {
        images,
        labels,
        images_path,
    })
}

/// Reads an images file (magic 0x00000803).
pub fn read_images(path: &Path) -> Result<IdxImages> {
    let (dims, data) = read(path, IMAGES_MAGIC, 3)?;
    Ok(IdxImages {
        count: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels: data,
    })
}

/// Reads a labels file (magic 0x00000801).
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    Ok(read(path, LABELS_MAGIC, 1)?.1)
}

fn read(path: &Path, magic: u32, rank: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let err = |message: String| SaplingError::Data {
        path: path.to_path_buf(),
        message,
    };
    let raw = std::fs::read(path).map_err(|e| SaplingError::io(path, e))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| err(format!("corrupt gzip: {e}")))?;
        out
    } else {
        raw
    };
    let word = |i: usize| -> Option<u32> {
        bytes
            .get(4 * i..4 * i + 4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
    };
    let found = word(0).ok_or_else(|| err("too short to be an IDX file".into()))?;
    if found != magic {
        return Err(err(format!(
            "magic number {found:#010x}, expected {magic:#010x} (an IDX {} file)",
            if magic == IMAGES_MAGIC {
                "images"
            } else {
                "labels"
            }
        )));
    }
    let dims: Vec<usize> = (1..=rank)
        .map(|i| word(i).map(|d| d as usize))
        .collect::<Option<_>>()
        .ok_or_else(|| err("header cut short".into()))?;
    let len: usize = dims.iter().product();
    let start = 4 * (rank + 1);
    if bytes.len() != start + len {
        return Err(err(format!(
            "{} data bytes, the header {dims:?} needs {len}",
            bytes.len().saturating_sub(start)
        )));
    }
    Ok((dims, bytes[start..].to_vec()))
}
