//! The tensors of a weights file: a PyTorch checkpoint (`.pth`/`.pt`/`.bin`, read by burn's
//! `pytorch-reader`, which parses the pickle without executing anything and keeps only
//! tensors and plain containers) or a safetensors file, told apart by their bytes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};

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
    /// Little-endian bytes of a safetensors tensor: its range of the file, read when its values
    /// are asked for (after the shapes were checked against the model), never the whole file.
    Bytes(Arc<Mutex<File>>, Range<u64>, Elem),
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
            Source::Bytes(file, range, elem) => (
                std::borrow::Cow::Owned(read_range(file, range).map_err(|e| {
                    SaplingError::import(path, format!("cannot read {}: {e}", self.name))
                })?),
                *elem,
            ),
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
    check_pickle_size(path)?;
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

/// The largest `data.pkl` sapling parses. A state dict's pickle holds only names, shapes and
/// storage keys (a few hundred bytes a tensor: 0.2 MB for Sapiens-2B's 570 tensors with their
/// optimizer state); each byte of it can push an object of ~100 bytes, so this bounds what
/// parsing may allocate to well under a gigabyte, where pytorch-reader's own 100 MiB bound
/// allows ten.
const MAX_PICKLE: u64 = 8 << 20;

/// Refuses a ZIP checkpoint whose `data.pkl` is larger than [`MAX_PICKLE`] once inflated, before
/// anything parses it. (Legacy and tar checkpoints hold their pickle uncompressed, so their own
/// length bounds it.)
fn check_pickle_size(path: &Path) -> Result<()> {
    let io = |e: std::io::Error| SaplingError::import(path, format!("cannot read it: {e}"));
    let mut file = File::open(path).map_err(io)?;
    let mut magic = [0u8; 4];
    if file.read(&mut magic).map_err(io)? < 4 || magic != *b"PK\x03\x04" {
        return Ok(());
    }
    file.rewind().map_err(io)?;
    // An unreadable archive is left to pytorch-reader, which says what is wrong with it.
    let Ok(mut archive) = zip::ZipArchive::new(std::io::BufReader::new(file)) else {
        return Ok(());
    };
    let largest = (0..archive.len())
        .filter_map(|i| {
            let entry = archive.by_index_raw(i).ok()?;
            let name = entry.name().ok()?.to_string();
            (name == "data.pkl" || name.ends_with("/data.pkl")).then(|| (entry.size(), name))
        })
        .max();
    match largest {
        Some((size, name)) if size > MAX_PICKLE => Err(SaplingError::import(
            path,
            format!(
                "its {name} inflates to {size} bytes, more than the {MAX_PICKLE} a state dict's \
                 pickle needs (tensor values are stored apart from it); sapling does not parse \
                 it. Save the weights alone with torch.save(model.state_dict(), ...)"
            ),
        )),
        _ => Ok(()),
    }
}

/// The largest safetensors header read (as the `safetensors` crate's own bound).
const MAX_HEADER: u64 = 100_000_000;

/// A safetensors file's tensors from its header alone: the header's length and every tensor's
/// range are checked against the file's length before anything else is read.
fn open_safetensors(path: &Path) -> Result<Vec<FileTensor>> {
    let bad = |message: String| {
        SaplingError::import(
            path,
            format!("not a readable safetensors file ({message}); is it complete?"),
        )
    };
    let io = |e: std::io::Error| SaplingError::import(path, format!("cannot read it: {e}"));
    let mut file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut word = [0u8; 8];
    file.read_exact(&mut word).map_err(io)?;
    let n = u64::from_le_bytes(word);
    if n > MAX_HEADER || 8 + n > len {
        return Err(bad(format!(
            "its header claims {n} bytes of a {len}-byte file"
        )));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(io)?;
    let metadata: safetensors::tensor::Metadata =
        serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    let infos = metadata.tensors();
    // Contiguous, in offset order, each exactly its elements' bytes, ending at the file's end.
    let mut ordered: Vec<(&String, &safetensors::tensor::TensorInfo)> =
        infos.iter().map(|(k, v)| (k, *v)).collect();
    ordered.sort_by_key(|(_, info)| info.data_offsets);
    let mut end = 0u64;
    for (name, info) in &ordered {
        let (start, stop) = (info.data_offsets.0 as u64, info.data_offsets.1 as u64);
        let bytes = info
            .shape
            .iter()
            .try_fold(info.dtype.bitsize() as u64, |n, &d| n.checked_mul(d as u64))
            .map(|bits| bits / 8);
        if start != end || Some(stop.saturating_sub(start)) != bytes || stop < start {
            return Err(bad(format!(
                "the range of `{name}` does not fit its shape and dtype"
            )));
        }
        end = stop;
    }
    if 8 + n + end != len {
        return Err(bad(format!(
            "its header describes {} bytes but the file holds {len}",
            8 + n + end
        )));
    }
    let shared = Arc::new(Mutex::new(file));
    let data_start = 8 + n;
    let mut out: Vec<FileTensor> = ordered
        .into_iter()
        .map(|(name, info)| {
            use safetensors::Dtype;
            let elem = match info.dtype {
                Dtype::F64 => Some(Elem::F64),
                Dtype::F32 => Some(Elem::F32),
                Dtype::F16 => Some(Elem::F16),
                Dtype::BF16 => Some(Elem::Bf16),
                _ => None,
            };
            let range =
                data_start + info.data_offsets.0 as u64..data_start + info.data_offsets.1 as u64;
            FileTensor {
                name: name.to_string(),
                shape: info.shape.clone(),
                source: match elem {
                    Some(e) => Source::Bytes(Arc::clone(&shared), range, e),
                    None => Source::Other(format!("{:?}", info.dtype).to_lowercase()),
                },
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The bytes of `range` of `file`.
fn read_range(file: &Mutex<File>, range: &Range<u64>) -> std::io::Result<Vec<u8>> {
    let mut file = file
        .lock()
        .map_err(|_| std::io::Error::other("a reader panicked"))?;
    let mut bytes = vec![0u8; (range.end - range.start) as usize];
    file.seek(SeekFrom::Start(range.start))?;
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}
