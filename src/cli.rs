//! The command line: clap definitions and the resolution of flags into a [`Config`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, DeviceChoice, Preset};
use crate::error::{Result, SaplingError};

/// Masked-autoencoder pretraining of vision transformers on any GPU through WebGPU.
#[derive(Debug, Parser)]
#[command(name = "sapling", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do; with none, `train` runs with its defaults.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pretrain an MAE (the default: `tiny` on the embedded photos).
    Train(TrainArgs),
    /// List the WebGPU adapters, their API, type and limits.
    Info,
}

/// Flags of `sapling train`; each overrides the preset and the config file.
#[derive(Debug, Default, Args)]
pub struct TrainArgs {
    /// Starting configuration [default: tiny].
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// TOML file layered over the preset (it may name its own `preset`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Folder of images (searched recursively); without it, the embedded photos.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Where to train.
    #[arg(long, value_enum)]
    pub device: Option<DeviceChoice>,
    /// Optimizer steps (replaces --epochs).
    #[arg(long, conflicts_with = "epochs")]
    pub steps: Option<u64>,
    /// Passes over the data (replaces --steps).
    #[arg(long)]
    pub epochs: Option<f64>,
    /// Images per forward/backward pass.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Micro-batches accumulated per optimizer step.
    #[arg(long)]
    pub accum: Option<usize>,
    /// Seed of weights, data order, augmentation and masks.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output folder [default: runs/PRESET].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl TrainArgs {
    /// Preset, then file, then flags; the result is validated.
    pub fn resolve(&self) -> Result<Config> {
        let base = self.preset.unwrap_or(Preset::Tiny);
        let mut config = match &self.config {
            Some(path) => {
                let config = Config::from_toml_file(path, base)?;
                if let Some(p) = self.preset
                    && p != config.preset
                {
                    return Err(SaplingError::config(
                        "preset",
                        format!(
                            "--preset {} disagrees with preset = \"{}\" in {}; drop one",
                            p.name(),
                            config.preset.name(),
                            path.display()
                        ),
                    ));
                }
                config
            }
            None => base.config(),
        };
        let t = &mut config.train;
        if let Some(d) = &self.data {
            config.data.dir = Some(d.clone());
        }
        if let Some(d) = self.device {
            t.device = d;
        }
        if let Some(s) = self.steps {
            t.steps = Some(s);
            t.epochs = None;
        }
        if let Some(e) = self.epochs {
            t.epochs = Some(e);
            t.steps = None;
        }
        if let Some(b) = self.batch_size {
            t.batch_size = b;
        }
        if let Some(a) = self.accum {
            t.accum = a;
        }
        if let Some(s) = self.seed {
            t.seed = s;
        }
        if let Some(o) = &self.out {
            t.out = o.clone();
        }
        config.validate()?;
        Ok(config)
    }
}
