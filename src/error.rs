//! Typed errors of the library; the binary turns them into reports with `anyhow`.

use std::path::PathBuf;

/// Everything that can go wrong in sapling's library code.
#[derive(Debug, thiserror::Error)]
pub enum SaplingError {
    /// A configuration value is invalid; `field` names it as written in the TOML file.
    #[error("invalid config field `{field}`: {message}")]
    Config { field: String, message: String },

    /// A configuration file could not be read or parsed.
    #[error("cannot read config file {path}: {message}")]
    ConfigFile { path: PathBuf, message: String },

    /// An unknown preset name; `known` lists the presets there are.
    #[error("unknown preset `{name}`; known presets: {known}")]
    UnknownPreset { name: String, known: String },

    /// The training data cannot be used.
    #[error("data {path}: {message}")]
    Data { path: PathBuf, message: String },

    /// The requested device cannot be used.
    #[error("device: {0}")]
    Device(String),

    /// A micro-batch does not fit the device; `advice` says what does.
    #[error("micro-batch {requested} does not fit on {adapter}: {why}. {advice}")]
    BatchDoesNotFit {
        requested: usize,
        adapter: String,
        why: String,
        advice: String,
    },

    /// Training diverged: the loss or the gradient norm is NaN or infinite.
    #[error(
        "non-finite {what} ({value}) at step {step}; training stopped, the last checkpoint is intact. \
         Lower the learning rate, raise warmup, or keep gradient clipping on"
    )]
    NonFinite {
        what: &'static str,
        value: f64,
        step: u64,
    },

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The output folder is held by another process or holds another run.
    #[error("output folder {path}: {message}")]
    RunFolder { path: PathBuf, message: String },

    /// The MPI ranks of one job were started inconsistently.
    #[error("MPI ranks disagree: {0}")]
    Ranks(String),

    /// Weights to import cannot be read or do not fit the model.
    #[error("weights {path}: {message}")]
    Import { path: PathBuf, message: String },

    /// A resumed run had already reached its last step: nothing to train, which is not a
    /// failure (a job that resumes until done ends cleanly).
    #[error(
        "the run in {} is complete: it reached its last step, {step}; give --steps (or --epochs) \
         beyond {step} to train on", out.display()
    )]
    Complete { step: u64, out: PathBuf },

    /// Saving or loading a model record failed.
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
}

impl SaplingError {
    /// A bad setting, named by its field.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Training data that cannot be used, named with why.
    pub fn data(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Data {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A weights file that cannot be imported, named with why.
    pub fn import(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Import {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for library code.
pub type Result<T, E = SaplingError> = std::result::Result<T, E>;
