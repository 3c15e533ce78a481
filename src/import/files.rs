//! The tensors of a weights file: a PyTorch checkpoint (`.pth`/`.pt`/`.bin`, read by burn's
//! `pytorch-reader`, which parses the pickle without executing anything and keeps only
//! tensors and plain containers; native builds only) or a safetensors file (from disk, or bytes
//! in memory in a browser), told apart by their bytes.

#[cfg(not(target_family = "wasm"))]
use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
#[cfg(not(target_family = "wasm"))]
use std::sync::Mutex;

use burn::tensor::{bf16, f16};

use crate::error::{Result, SaplingError};

/// One tensor of a file, its values not read yet.
pub(super) struct FileTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub(super) source: Source,
}

pub(super) enum Source {
    #[cfg(not(target_family = "wasm"))]
    Pth(pytorch_reader::Tensor),
    /// Little-endian bytes of a safetensors tensor: its range of the file, read when its values
    /// are asked for (after the shapes were checked against the model), never the whole file.
    #[cfg(not(target_family = "wasm"))]
    File(Arc<Mutex<File>>, Range<u64>, Elem),
    /// The same in a file held in memory (a browser's), shared by every tensor.
    Memory(Arc<Vec<u8>>, Range<usize>, Elem),
    /// Not floating point (an int buffer such as `num_batches_tracked`): never a weight.
    Other(String),
}

#[derive(Clone, Copy)]
pub(super) enum Elem {
    F64,
    F32,
    F16,
    Bf16,
}

impl FileTensor {
    /// Whether the tensor holds floating-point values (only those can be weights).
    pub fn is_float(&self) -> bool {
        match &self.source {
            #[cfg(not(target_family = "wasm"))]
            Source::Pth(t) => super::pth::elem_of(t.dtype()).is_some(),
            Source::Other(_) => false,
            _ => true,
        }
    }

    /// The element type, for messages.
    pub fn dtype(&self) -> String {
        match &self.source {
            #[cfg(not(target_family = "wasm"))]
            Source::Pth(t) => format!("{:?}", t.dtype()).to_lowercase(),
            #[cfg(not(target_family = "wasm"))]
            Source::File(_, _, e) => e.name().to_string(),
            Source::Memory(_, _, e) => e.name().to_string(),
            Source::Other(d) => d.clone(),
        }
    }

    /// The values as f32 (f16, bf16 and f64 converted, as PyTorch's `.float()` does).
    pub fn values(&self, path: &Path) -> Result<Vec<f32>> {
        #[cfg(not(target_family = "wasm"))]
        let cannot = |e: &dyn std::fmt::Display| {
            SaplingError::import(path, format!("cannot read {}: {e}", self.name))
        };
        let (bytes, elem) = match &self.source {
            #[cfg(not(target_family = "wasm"))]
            Source::Pth(t) => {
                let elem = super::pth::elem_of(t.dtype()).ok_or_else(|| self.not_float(path))?;
                let bytes = t.read().map_err(|e| cannot(&e))?;
                (std::borrow::Cow::Owned(bytes), elem)
            }
            #[cfg(not(target_family = "wasm"))]
            Source::File(file, range, elem) => (
                std::borrow::Cow::Owned(read_range(file, range).map_err(|e| cannot(&e))?),
                *elem,
            ),
            Source::Memory(bytes, range, elem) => {
                (std::borrow::Cow::Borrowed(&bytes[range.clone()]), *elem)
            }
            Source::Other(_) => return Err(self.not_float(path)),
        };
        Ok(convert(&bytes, elem))
    }

    fn not_float(&self, path: &Path) -> SaplingError {
        SaplingError::import(
            path,
            format!("{} holds {} values, not weights", self.name, self.dtype()),
        )
    }
}

impl Elem {
    fn name(self) -> &'static str {
        match self {
            Elem::F64 => "f64",
            Elem::F32 => "f32",
            Elem::F16 => "f16",
            Elem::Bf16 => "bf16",
        }
    }
}

/// Little-endian bytes of `elem` as f32 values.
fn convert(bytes: &[u8], elem: Elem) -> Vec<f32> {
    match elem {
        Elem::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Elem::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        Elem::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Elem::Bf16 => bytes
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
    }
}

/// Every tensor of the file at `path`, with dotted names through the file's dictionaries
/// (`model.blocks.0.attn.qkv.weight`, `state_dict.backbone.…`).
#[cfg(not(target_family = "wasm"))]
pub(super) fn open(path: &Path) -> Result<Vec<FileTensor>> {
    use std::io::Read;
    let mut head = [0u8; 9];
    let unreadable = |e: std::io::Error| SaplingError::import(path, format!("cannot read it: {e}"));
    let n = File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(unreadable)?;
    let len = std::fs::metadata(path).map_err(unreadable)?.len();
    // safetensors: an 8-byte little-endian header length, then the JSON header.
    let header = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    if n == 9 && head[8] == b'{' && header < len {
        return super::safetensors_file::open(path);
    }
    super::pth::open(path)
}

/// The bytes of `range` of `file`.
#[cfg(not(target_family = "wasm"))]
fn read_range(file: &Mutex<File>, range: &Range<u64>) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = file
        .lock()
        .map_err(|_| std::io::Error::other("a reader panicked"))?;
    let mut bytes = vec![0u8; (range.end - range.start) as usize];
    file.seek(SeekFrom::Start(range.start))?;
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}
