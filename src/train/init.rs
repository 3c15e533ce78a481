//! A run's starting weights: MAE's initialisation, or a released checkpoint
//! (`train.init_from`) loaded over it.

use burn::tensor::Device;

use super::step::Trainer;
use crate::config::Config;
use crate::error::Result;
use crate::import::{self, Report};
use crate::model::{MaskedAutoencoder, init};
use crate::planner::Levers;

/// A trainer at step 0 with `levers`: MAE's initialisation seeded by `train.seed`, then the
/// weights of `train.init_from` if the config names a file (with what was loaded, also logged).
pub fn initial_trainer(
    config: &Config,
    device: &Device,
    levers: Levers,
) -> Result<(Trainer, Option<Report>)> {
    let Some(path) = &config.train.init_from else {
        return Ok((Trainer::with_levers(config, device, levers)?, None));
    };
    // A Sapiens file is gigabytes: say what the wait is for before it starts.
    tracing::info!("reading weights from {}", path.display());
    let imported = import::read(path)?;
    let device = device.clone().autodiff();
    // A part the file lacks (the decoder of an encoder-only file) keeps exactly what a fresh
    // run of this seed would have drawn.
    let model = init::seeded(&device, config.train.seed, || {
        MaskedAutoencoder::new(&config.model, &device)
    });
    let (model, report) = imported.load(model, config.preset.name())?;
    tracing::info!("{report}");
    let trainer = Trainer::from_model_with(config, model, &device, levers)?;
    Ok((trainer, Some(report)))
}
