//! One shard, read front to back: WebDataset's samples (consecutive tar members sharing the name
//! up to the first dot of the file name), each sample's image member (`jpg`, `jpeg`, `png`,
//! `webp`) as its bytes. Member names are only compared, never used as paths, so a name such as
//! `../../x.jpg` reaches no file. Unread member data is skipped by seeking.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::super::source::{EXTENSIONS, MAX_DECODE_BYTES};
use crate::error::{Result, SaplingError};

/// The image of one sample, as stored.
#[derive(Debug, Clone)]
pub struct Member {
    /// The sample's key (the member name up to the first dot of its file name).
    pub key: String,
    /// The encoded image.
    pub bytes: Vec<u8>,
}

/// What a full read of a shard found.
#[derive(Debug, Default, Clone)]
pub struct Scan {
    /// Samples with an image member.
    pub samples: u64,
    /// Keys of samples without one (skipped), the first few.
    pub imageless: Vec<String>,
    /// How many samples had no image member.
    pub imageless_count: u64,
}

/// Samples without an image named in a warning, at most.
const NAMED_SKIPS: usize = 3;

/// Walks `path`'s samples in order. For the `i`-th sample with an image, calls
/// `visit(i, Some(member))` when `want(i)`, else `visit(i, None)` without reading the image;
/// stops early when `visit` returns `false`.
pub fn read(
    path: &Path,
    mut want: impl FnMut(u64) -> bool,
    mut visit: impl FnMut(u64, Option<Member>) -> Result<bool>,
) -> Result<Scan> {
    let file =
        File::open(path).map_err(|e| SaplingError::data(path, format!("cannot open: {e}")))?;
    let length = file
        .metadata()
        .map_err(|e| SaplingError::data(path, format!("cannot read its size: {e}")))?
        .len();
    let mut archive = tar::Archive::new(Buffered {
        inner: BufReader::with_capacity(1 << 20, file),
        pos: 0,
    });
    let entries = archive
        .entries_with_seek()
        .map_err(|e| SaplingError::data(path, format!("is not a tar file: {e}")))?;
    let mut scan = Scan::default();
    // The current sample's key and whether it had its image yet.
    let mut current: Option<(String, bool)> = None;
    for entry in entries {
        let mut entry = entry.map_err(|e| truncated(path, &e))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some((key, ext)) = split_name(&name) else {
            continue;
        };
        if current.as_ref().is_none_or(|(k, _)| *k != key) {
            if let Some((old, false)) = current.take() {
                scan.note_imageless(old);
            }
            current = Some((key.to_string(), false));
        }
        let state = current.as_mut().expect("set above");
        if state.1 || !EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()) {
            continue;
        }
        state.1 = true;
        let i = scan.samples;
        scan.samples += 1;
        let member = if want(i) {
            Some(Member {
                key: key.to_string(),
                bytes: read_member(path, &name, &mut entry, length)?,
            })
        } else {
            None
        };
        if !visit(i, member)? {
            return Ok(scan);
        }
    }
    if let Some((old, false)) = current {
        scan.note_imageless(old);
    }
    Ok(scan)
}

impl Scan {
    fn note_imageless(&mut self, key: String) {
        self.imageless_count += 1;
        if self.imageless.len() < NAMED_SKIPS {
            self.imageless.push(key);
        }
    }
}

/// A buffered shard whose relative seeks stay inside the buffer when they can: `tar` seeks
/// before every header (by 0 after a member it read whole), and `BufReader::seek` always drops
/// its buffer, which made every member a fresh 1 MiB read.
pub struct Buffered {
    inner: BufReader<File>,
    pos: u64,
}

impl Read for Buffered {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Buffered {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        match to {
            SeekFrom::Current(delta) => {
                self.inner.seek_relative(delta)?;
                self.pos = self.pos.checked_add_signed(delta).ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
                })?;
            }
            other => self.pos = self.inner.seek(other)?,
        }
        Ok(self.pos)
    }
}

/// `dir/000123.seg.png` → (`dir/000123`, `seg.png`); `None` for a name with no key or no dot.
fn split_name(name: &str) -> Option<(&str, &str)> {
    let file_start = name.rfind('/').map_or(0, |s| s + 1);
    let dot = name[file_start..].find('.')? + file_start;
    (dot > file_start).then(|| (&name[..dot], &name[dot + 1..]))
}

/// A member's bytes, after checking its claimed size against what the file still holds and the
/// largest image sapling decodes, so a forged header cannot make it allocate.
fn read_member(
    path: &Path,
    name: &str,
    entry: &mut tar::Entry<'_, Buffered>,
    length: u64,
) -> Result<Vec<u8>> {
    let size = entry.size();
    let left = length.saturating_sub(entry.raw_file_position());
    if size > left {
        return Err(SaplingError::data(
            path,
            format!(
                "member {name} claims {size} bytes but only {left} follow it: the shard is \
                 truncated or corrupt; copy it again or re-pack it"
            ),
        ));
    }
    if size > MAX_DECODE_BYTES {
        return Err(SaplingError::data(
            path,
            format!(
                "member {name} is {size} bytes, more than the largest image sapling reads ({} \
                 MiB); remove it from the shard",
                MAX_DECODE_BYTES >> 20
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| truncated(path, &e))?;
    Ok(bytes)
}

fn truncated(path: &Path, e: &std::io::Error) -> SaplingError {
    SaplingError::data(
        path,
        format!(
            "cannot be read to its end ({e}): the shard is truncated or corrupt; copy it again or re-pack it"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::split_name;

    #[test]
    fn keys_end_at_the_first_dot_of_the_file_name() {
        assert_eq!(split_name("000123.jpg"), Some(("000123", "jpg")));
        assert_eq!(
            split_name("a.b/000123.seg.png"),
            Some(("a.b/000123", "seg.png"))
        );
        assert_eq!(split_name("../../x.jpg"), Some(("../../x", "jpg")));
        assert_eq!(split_name("README"), None);
        assert_eq!(split_name("dir/.hidden"), None);
    }
}
