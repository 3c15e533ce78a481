//! safetensors files: the header alone is read and checked (its length and every tensor's
//! range against the file's length, each range exactly its shape's bytes) before any value; a
//! tensor's bytes are read only when asked for. From disk natively, from memory in a browser.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use super::files::{Elem, FileTensor, Source};
use crate::error::{Result, SaplingError};

/// The largest safetensors header read (as the `safetensors` crate's own bound).
const MAX_HEADER: u64 = 100_000_000;

/// The file at `path`.
#[cfg(not(target_family = "wasm"))]
pub(super) fn open(path: &Path) -> Result<Vec<FileTensor>> {
    use std::io::Read;
    let io = |e: std::io::Error| SaplingError::import(path, format!("cannot read it: {e}"));
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut word = [0u8; 8];
    file.read_exact(&mut word).map_err(io)?;
    let n = header_length(path, u64::from_le_bytes(word), len)?;
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(io)?;
    let shared = Arc::new(std::sync::Mutex::new(file));
    tensors(path, &header, len, |range, elem| {
        Source::File(Arc::clone(&shared), range, elem)
    })
}

/// A file's bytes, held in memory (`path` names it in messages).
pub(super) fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Vec<FileTensor>> {
    let len = bytes.len() as u64;
    let word: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad(path, "shorter than a safetensors header".into()))?;
    let n = header_length(path, u64::from_le_bytes(word), len)?;
    let shared = Arc::new(bytes);
    let header = shared[8..8 + n as usize].to_vec();
    tensors(path, &header, len, |range, elem| {
        Source::Memory(
            Arc::clone(&shared),
            range.start as usize..range.end as usize,
            elem,
        )
    })
}

fn bad(path: &Path, message: String) -> SaplingError {
    SaplingError::import(
        path,
        format!("not a readable safetensors file ({message}); is it complete?"),
    )
}

/// The header length `n` a file of `len` bytes claims, if it can hold it.
fn header_length(path: &Path, n: u64, len: u64) -> Result<u64> {
    if n > MAX_HEADER || 8 + n > len {
        return Err(bad(
            path,
            format!("its header claims {n} bytes of a {len}-byte file"),
        ));
    }
    Ok(n)
}

/// The tensors `header` describes in a file of `len` bytes, each given its source by `source`
/// (its byte range in the file and its element type), sorted by name.
fn tensors(
    path: &Path,
    header: &[u8],
    len: u64,
    source: impl Fn(Range<u64>, Elem) -> Source,
) -> Result<Vec<FileTensor>> {
    let n = header.len() as u64;
    let metadata: safetensors::tensor::Metadata =
        serde_json::from_slice(header).map_err(|e| bad(path, e.to_string()))?;
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
            return Err(bad(
                path,
                format!("the range of `{name}` does not fit its shape and dtype"),
            ));
        }
        end = stop;
    }
    if 8 + n + end != len {
        return Err(bad(
            path,
            format!(
                "its header describes {} bytes but the file holds {len}",
                8 + n + end
            ),
        ));
    }
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
            let (a, b) = (info.data_offsets.0 as u64, info.data_offsets.1 as u64);
            FileTensor {
                name: name.to_string(),
                shape: info.shape.clone(),
                source: match elem {
                    Some(e) => source(data_start + a..data_start + b, e),
                    None => Source::Other(format!("{:?}", info.dtype).to_lowercase()),
                },
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
