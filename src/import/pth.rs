//! PyTorch checkpoints (native builds): burn's `pytorch-reader` parses the pickle without
//! executing anything; a ZIP checkpoint's `data.pkl` is bounded before it is parsed.

use std::fs::File;
use std::io::{Read, Seek};
use std::path::Path;

use super::files::{Elem, FileTensor, Source};
use crate::error::{Result, SaplingError};

/// The tensors of the PyTorch checkpoint at `path`, sorted by name.
pub(super) fn open(path: &Path) -> Result<Vec<FileTensor>> {
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
            source: match elem_of(t.dtype()) {
                Some(_) => Source::Pth(t),
                None => Source::Other(format!("{:?}", t.dtype()).to_lowercase()),
            },
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

pub(super) fn elem_of(d: pytorch_reader::DType) -> Option<Elem> {
    use pytorch_reader::DType;
    match d {
        DType::F64 => Some(Elem::F64),
        DType::F32 => Some(Elem::F32),
        DType::F16 => Some(Elem::F16),
        DType::BF16 => Some(Elem::Bf16),
        _ => None,
    }
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
