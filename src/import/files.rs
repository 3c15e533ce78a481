//! The tensors of a weights file: a PyTorch checkpoint (`.pth`/`.pt`/`.bin`, read by burn's
//! `pytorch-reader`, which parses the pickle without executing anything and keeps only
//! tensors and plain containers) or a safetensors file, told apart by their bytes.

use std::io::Read;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use burn::tensor::{bf16, f16};

use crate::error::{Result, SaplingError};

/// One tensor of a file, its values not read yet.
pub(super) struct FileTensor {
    pub name: String,
    pub shape: Vec<usize>,
    source: Source,
}

enum Source {
    Pth(pytorch_reader::Tensor),
    /// Little-endian bytes of a safetensors tensor: its range of the file, read once and
    /// shared by every tensor (no second copy).
    Bytes(Arc<Vec<u8>>, Range<usize>, Elem),
    /// Not floating point (an int buffer such as `num_batches_tracked`): never a weight.
    Other(String),
}

#[derive(Clone, Copy)]
enum Elem {
    F64,
    F32,
    F16,
    Bf16,
}

impl FileTensor {
    /// Whether the tensor holds floating-point values (only those can be weights).
    pub fn is_float(&self) -> bool {
        match &self.source {
            Source::Pth(t) => elem_of_pth(t.dtype()).is_some(),
            Source::Bytes(..) => true,
            Source::Other(_) => false,
        }
    }

    /// The element type, for messages.
    pub fn dtype(&self) -> String {
        match &self.source {
            Source::Pth(t) => format!("{:?}", t.dtype()).to_lowercase(),
            Source::Bytes(_, _, e) => e.name().to_string(),
            Source::Other(d) => d.clone(),
        }
    }

    /// The values as f32 (f16, bf16 and f64 converted, as PyTorch's `.float()` does).
    pub fn values(&self, path: &Path) -> Result<Vec<f32>> {
        let (bytes, elem) = match &self.source {
            Source::Pth(t) => {
                let elem = elem_of_pth(t.dtype()).ok_or_else(|| self.not_float(path))?;
                let bytes = t.read().map_err(|e| {
                    SaplingError::import(path, format!("cannot read {}: {e}", self.name))
                })?;
                (std::borrow::Cow::Owned(bytes), elem)
            }
            Source::Bytes(file, range, elem) => {
                (std::borrow::Cow::Borrowed(&file[range.clone()]), *elem)
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

fn elem_of_pth(d: pytorch_reader::DType) -> Option<Elem> {
    use pytorch_reader::DType;
    match d {
        DType::F64 => Some(Elem::F64),
        DType::F32 => Some(Elem::F32),
        DType::F16 => Some(Elem::F16),
        DType::BF16 => Some(Elem::Bf16),
        _ => None,
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
pub(super) fn open(path: &Path) -> Result<Vec<FileTensor>> {
    let mut head = [0u8; 9];
    let unreadable = |e: std::io::Error| SaplingError::import(path, format!("cannot read it: {e}"));
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(unreadable)?;
    let len = std::fs::metadata(path).map_err(unreadable)?.len();
    // safetensors: an 8-byte little-endian header length, then the JSON header.
    let header = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    if n == 9 && head[8] == b'{' && header < len {
        return open_safetensors(path);
    }
    let reader = pytorch_reader::PytorchReader::new(path).map_err(|e| {
        SaplingError::import(
            path,
            format!(
                "neither a safetensors file nor a PyTorch checkpoint sapling can read ({e}); \
                 is the file complete, and a state dict saved with torch.save?"
            ),
        )
    })?;
    let mut out: Vec<FileTensor> = reader
        .into_tensors()
        .into_values()
        .map(|t| FileTensor {
            name: t.name.clone(),
            shape: t.shape().to_vec(),
            source: match elem_of_pth(t.dtype()) {
                Some(_) => Source::Pth(t),
                None => Source::Other(format!("{:?}", t.dtype()).to_lowercase()),
            },
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn open_safetensors(path: &Path) -> Result<Vec<FileTensor>> {
    let bytes = std::fs::read(path)
        .map_err(|e| SaplingError::import(path, format!("cannot read it: {e}")))?;
    let shared = Arc::new(bytes);
    let file = safetensors::SafeTensors::deserialize(&shared).map_err(|e| {
        SaplingError::import(
            path,
            format!("not a readable safetensors file ({e}); is it complete?"),
        )
    })?;
    let mut out: Vec<FileTensor> = file
        .iter()
        .map(|(name, view)| {
            use safetensors::Dtype;
            let elem = match view.dtype() {
                Dtype::F64 => Some(Elem::F64),
                Dtype::F32 => Some(Elem::F32),
                Dtype::F16 => Some(Elem::F16),
                Dtype::BF16 => Some(Elem::Bf16),
                _ => None,
            };
            FileTensor {
                name: name.to_string(),
                shape: view.shape().to_vec(),
                source: match elem {
                    Some(e) => {
                        // The view borrows the shared buffer: its offset there is its range.
                        let start = view.data().as_ptr() as usize - shared.as_ptr() as usize;
                        let range = start..start + view.data().len();
                        Source::Bytes(Arc::clone(&shared), range, e)
                    }
                    None => Source::Other(format!("{:?}", view.dtype()).to_lowercase()),
                },
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
