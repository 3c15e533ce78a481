//! Reader for the IDX files of MNIST-style data sets (e.g. Debian's `dataset-fashion-mnist`),
//! plain or gzip-compressed.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::source::MAX_IMAGE_SIDE;
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
    let mut body = open(path)?;
    let found = words(&mut body, 1).map_err(&err)?[0];
    if found != magic {
        return Err(err(format!(
            "magic number {found:#010x}, expected {magic:#010x} (an IDX {} file)",
            kind(magic)
        )));
    }
    let dims: Vec<usize> = words(&mut body, rank)
        .map_err(&err)?
        .into_iter()
        .map(|d| d as usize)
        .collect();
    if dims[0] == 0 {
        return Err(err(format!("holds no {} (its count is 0)", kind(magic))));
    }
    let len = body_len(&dims).ok_or_else(|| {
        err(format!(
            "the header's dimensions {dims:?} multiply past {} bytes: corrupt header",
            usize::MAX
        ))
    })?;
    check_sides(&dims[1..]).map_err(err)?;
    check_length(path, 4 * (1 + rank as u64), &dims, len as u64).map_err(err)?;
    let data = read_body(body, len).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => err(format!(
            "truncated: the compressed data ends before the {len} bytes the header {dims:?} needs"
        )),
        _ => err(format!("cannot read the data (corrupt gzip?): {e}")),
    })?;
    if data.len() != len {
        return Err(err(if data.len() > len {
            format!(
                "more data than the {len} bytes its header {dims:?} says: corrupt, or not an IDX file"
            )
        } else {
            format!(
                "truncated: {} data bytes, the header {dims:?} needs {len}",
                data.len()
            )
        }));
    }
    Ok((dims, data))
}

/// The file's bytes, decompressed when it starts with gzip's magic.
fn open(path: &Path) -> Result<Box<dyn Read>> {
    let io = |e| SaplingError::io(path, e);
    let mut file = BufReader::new(File::open(path).map_err(io)?);
    let gzip = file.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
    Ok(if gzip {
        Box::new(flate2::bufread::GzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

/// `n` big-endian words of the header.
fn words(body: &mut impl Read, n: usize) -> std::result::Result<Vec<u32>, String> {
    let mut bytes = vec![0u8; 4 * n];
    body.read_exact(&mut bytes).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            "too short to be an IDX file: its header is cut short".to_string()
        }
        _ => format!("cannot read the header (corrupt gzip?): {e}"),
    })?;
    Ok(bytes
        .chunks_exact(4)
        .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
        .collect())
}

/// "images" or "labels", for messages.
fn kind(magic: u32) -> &'static str {
    if magic == IMAGES_MAGIC {
        "images"
    } else {
        "labels"
    }
}

/// Refuses images with no pixels, or with sides past what the image decoder takes.
fn check_sides(sides: &[usize]) -> std::result::Result<(), String> {
    if sides.iter().any(|&s| s == 0 || s > MAX_IMAGE_SIDE as usize) {
        return Err(format!(
            "images of {sides:?} pixels: each side must be 1 to {MAX_IMAGE_SIDE}"
        ));
    }
    Ok(())
}

/// The most data bytes one IDX file may hold (the Fashion-MNIST training images are 47 MB).
const MAX_BODY: u64 = 1 << 30;
/// Deflate cannot shrink data more than this (its longest match per shortest code).
const MAX_DEFLATE_RATIO: u64 = 1032;

/// Checks what the header claims (`head` header bytes and `body` data bytes) against the file
/// before any of the data is read: a plain file must be exactly that long; a gzip file must
/// say that length in its trailer and be able to hold it at deflate's best ratio. So a small
/// file with a header claiming 10^8 images is refused, not read until memory runs out.
fn check_length(
    path: &Path,
    head: u64,
    dims: &[usize],
    body: u64,
) -> std::result::Result<(), String> {
    if body > MAX_BODY {
        return Err(format!(
            "its header {dims:?} claims {body} bytes of data, more than the {MAX_BODY} sapling \
             reads from one IDX file"
        ));
    }
    let trailer = || -> std::io::Result<(u64, bool, u32)> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut magic = [0u8; 2];
        let gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
        let mut isize = [0u8; 4];
        if gzip && len >= 18 {
            use std::io::{Seek, SeekFrom};
            file.seek(SeekFrom::End(-4))?;
            file.read_exact(&mut isize)?;
        }
        Ok((len, gzip, u32::from_le_bytes(isize)))
    };
    let (len, gzip, isize) = trailer().map_err(|e| format!("cannot read it: {e}"))?;
    // The data bytes the file holds, as far as can be told without reading them.
    let held = if gzip {
        if head + body > len.saturating_mul(MAX_DEFLATE_RATIO) {
            return Err(format!(
                "truncated: {len} compressed bytes cannot hold the {body} data bytes its header \
                 {dims:?} needs"
            ));
        }
        // The trailer gives the inflated length modulo 2^32.
        u64::from(isize.wrapping_sub(head as u32))
    } else {
        len.saturating_sub(head)
    };
    let exact = if gzip {
        held == body % (1 << 32)
    } else {
        held == body
    };
    match () {
        _ if exact => Ok(()),
        _ if held > body => Err(format!(
            "more data than the {body} bytes its header {dims:?} says: corrupt, or not an IDX file"
        )),
        _ => Err(format!(
            "truncated: {held} data bytes, the header {dims:?} needs {body}{}",
            if gzip {
                " (by the gzip trailer; the file may be cut short or corrupt)"
            } else {
                ""
            }
        )),
    }
}

/// Reads at most `len + 1` bytes: the extra byte tells a body longer than the header says from
/// an exact one, so a gzip bomb is never decompressed past the size its header claims.
fn read_body(body: impl Read, len: usize) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    body.take((len as u64).saturating_add(1))
        .read_to_end(&mut data)?;
    Ok(data)
}

/// The data bytes the dimensions call for, or `None` when their product overflows.
fn body_len(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}
