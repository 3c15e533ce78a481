//! Writing files so that a crash never leaves a half-written one under the final name.

use std::io::Write;
use std::path::Path;

use crate::error::{Result, SaplingError};

/// Writes `bytes` to `path` through a temporary file in the same folder: write, fsync, rename,
/// then fsync the folder so the rename itself survives a power loss.
///
/// The temporary gets an unpredictable name created exclusively (never through a symlink
/// someone planted) and is deleted if anything fails before the rename.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent(path);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| SaplingError::io(p, e)
    };
    fault::point().map_err(io(path))?;
    let mut file = tempfile::Builder::new()
        .prefix(PREFIX)
        .suffix(SUFFIX)
        .tempfile_in(dir)
        .map_err(io(path))?;
    fault::point()
        .and_then(|_| file.write_all(bytes))
        .and_then(|_| file.as_file().sync_all())
        .map_err(io(path))?;
    fault::point().map_err(io(path))?;
    file.persist(path)
        .map_err(|e| SaplingError::io(path, e.error))?;
    sync_dir(dir);
    Ok(())
}

/// Deletes the temporaries of writes in `dir` that a killed process never finished. Only for a
/// folder no other process is writing (the run's, under its lock).
pub fn remove_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(PREFIX) && name.ends_with(SUFFIX) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

const PREFIX: &str = ".sapling-";
const SUFFIX: &str = ".tmp";

/// The folder holding `path` (`.` for a bare file name).
pub fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Makes renames inside `dir` durable. Folder fsync is not supported everywhere (e.g. Windows),
/// and by then the rename has happened, so a failure is not an error.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Fault injection for the tests: every fallible step of a write (creating, writing, renaming a
/// file or folder) passes a [`point`], and a test can make the Nth one on its thread fail.
pub mod fault {
    use std::cell::Cell;
    use std::io;

    thread_local! {
        /// Points still to pass before the failure, and the OS error it raises.
        static PLAN: Cell<Option<(u32, i32)>> = const { Cell::new(None) };
        /// Points passed on this thread since the last [`arm`].
        static PASSED: Cell<u32> = const { Cell::new(0) };
    }

    /// Makes the `n`th point (1-based) from now on this thread fail with OS error `errno`
    /// (e.g. `ENOSPC` = 28, `EIO` = 5 on Linux).
    pub fn arm(n: u32, errno: i32) {
        PLAN.set(Some((n, errno)));
        PASSED.set(0);
    }

    /// Disarms, returning how many points were passed since [`arm`].
    pub fn disarm() -> u32 {
        PLAN.set(None);
        PASSED.get()
    }

    /// One fallible step; fails when the armed count runs out.
    pub fn point() -> io::Result<()> {
        let Some((n, errno)) = PLAN.get() else {
            return Ok(());
        };
        PASSED.set(PASSED.get() + 1);
        if n <= 1 {
            PLAN.set(None);
            return Err(io::Error::from_raw_os_error(errno));
        }
        PLAN.set(Some((n - 1, errno)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    fn names(dir: &std::path::Path) -> Vec<std::ffi::OsString> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        super::write(&path, b"one").unwrap();
        super::write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(names(dir.path()).len(), 1);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        super::write(&path, b"old").unwrap();
        for n in 1..=3 {
            super::fault::arm(n, 28);
            let err = super::write(&path, b"new").unwrap_err().to_string();
            super::fault::disarm();
            assert!(err.contains("a.bin"), "{err}");
            assert_eq!(std::fs::read(&path).unwrap(), b"old");
            assert_eq!(names(dir.path()).len(), 1, "point {n}");
        }
    }
}
