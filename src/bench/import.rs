//! How long a weights file takes to come in: parsing its names, drawing the model it goes into,
//! and reading and converting its values into that model's parameters.

use std::path::Path;
use std::time::Instant;

use burn::tensor::Device;

use crate::config::Preset;
use crate::error::{Result, SaplingError};
use crate::import::{self, Report};
use crate::model::{MaskedAutoencoder, init};

/// Seconds per phase of one import onto Flex.
#[derive(Debug, Clone)]
pub struct ImportTiming {
    pub preset: Preset,
    pub file_bytes: u64,
    /// Opening the file and mapping its names (safetensors files are read whole here).
    pub read_s: f64,
    /// Drawing MAE's initialisation for the model (what a decoder the file lacks keeps).
    pub init_s: f64,
    /// Reading, converting and placing every tensor, shape and position checks included.
    pub load_s: f64,
    pub report: Report,
}

/// Imports the file at `path` into a model of `preset` (default: the file's) on Flex, timed.
pub fn time_import(path: &Path, preset: Option<Preset>) -> Result<ImportTiming> {
    let file_bytes = std::fs::metadata(path)
        .map_err(|e| SaplingError::io(path, e))?
        .len();
    let t0 = Instant::now();
    let imported = import::read(path)?;
    let config = imported.config_for(preset)?;
    let t1 = Instant::now();
    let device = Device::flex();
    let model = MaskedAutoencoder::new(&config.model, &device);
    init::materialize(&model);
    let t2 = Instant::now();
    let (_model, report) = imported.load(model, config.preset.name())?;
    let t3 = Instant::now();
    Ok(ImportTiming {
        preset: config.preset,
        file_bytes,
        read_s: (t1 - t0).as_secs_f64(),
        init_s: (t2 - t1).as_secs_f64(),
        load_s: (t3 - t2).as_secs_f64(),
        report,
    })
}
