//! TensorBoard event files, so runs can be watched and compared live with
//! `tensorboard --logdir runs`: scalars, images (the reconstruction grids) and text (the
//! config), written as the run goes.
//!
//! An event file is a sequence of TFRecords (`record`) each holding one `Event` protobuf
//! (`proto`). Only what sapling writes is encoded, by hand: the `tfrecord` crate would bring a
//! protobuf code generator and an async runtime for four message types.
//!
//! A resumed run writes a new file that opens with TensorBoard's restart marker (a
//! `SessionLog` of status START) at the first step it will log: TensorBoard then drops what
//! earlier files logged from that step on (steps a killed run logged after its last checkpoint,
//! or an abandoned branch's), so the run shows as one curve.

mod proto;
mod record;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, SaplingError};

pub use record::{RecordError, read_records};

/// The prefix TensorBoard looks for in a log folder's file names.
pub const FILE_PREFIX: &str = "events.out.tfevents.";

/// An open event file.
pub struct EventWriter {
    file: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// A new event file in `dir`, named as TensorBoard's writers name theirs (time, host,
    /// process), holding the file-version event.
    pub fn create(dir: &Path) -> Result<EventWriter> {
        let secs = now().floor() as u64;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let name = format!("{FILE_PREFIX}{secs}.{host}.{}", std::process::id());
        // A second run in the same process and second gets a count, never the first's file.
        let (path, file) = (1..)
            .map(|n| match n {
                1 => dir.join(&name),
                n => dir.join(format!("{name}.{n}")),
            })
            .find_map(
                |path| match File::options().write(true).create_new(true).open(&path) {
                    Ok(file) => Some(Ok((path, file))),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
                    Err(e) => Some(Err(SaplingError::io(&path, e))),
                },
            )
            .expect("some count is free")?;
        let mut writer = EventWriter {
            file: BufWriter::new(file),
            path,
        };
        writer.write(&proto::file_version(now()))?;
        Ok(writer)
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// TensorBoard's restart marker: what earlier files logged from `step` on is dropped.
    pub fn restart_at(&mut self, step: u64) -> Result<()> {
        self.write(&proto::session_start(now(), step))
    }

    /// Scalars of one step, each under its tag.
    pub fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> Result<()> {
        self.write(&proto::scalars(now(), step, values))
    }

    /// A PNG picture of `width` x `height` pixels.
    pub fn image(
        &mut self,
        step: u64,
        tag: &str,
        png: &[u8],
        (width, height): (u32, u32),
    ) -> Result<()> {
        self.write(&proto::image(now(), step, tag, png, width, height))
    }

    /// Text (Markdown) for TensorBoard's text tab.
    pub fn text(&mut self, step: u64, tag: &str, text: &str) -> Result<()> {
        self.write(&proto::text(now(), step, tag, text))
    }

    /// One event as a record, flushed so a reader sees it now and a kill loses at most it.
    fn write(&mut self, event: &[u8]) -> Result<()> {
        self.file
            .write_all(&record::frame(event))
            .and_then(|_| self.file.flush())
            .map_err(|e| SaplingError::io(&self.path, e))
    }
}

/// Seconds since the Unix epoch, as events carry them.
fn now() -> f64 {
    web_time::SystemTime::now()
        .duration_since(web_time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What an event holds, for tests and tools that read event files back.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    FileVersion(String),
    /// TensorBoard's restart marker at `step`.
    Start {
        step: u64,
    },
    Scalars {
        step: u64,
        values: Vec<(String, f32)>,
    },
    Image {
        step: u64,
        tag: String,
        png: Vec<u8>,
    },
    Text {
        step: u64,
        tag: String,
        text: String,
    },
}

/// Reads the events of an event file's bytes (each record's CRCs checked).
pub fn read_events(bytes: &[u8]) -> std::result::Result<Vec<Event>, RecordError> {
    read_records(bytes)?
        .into_iter()
        .map(|r| proto::decode(&r).ok_or(RecordError::NotAnEvent))
        .collect()
}
