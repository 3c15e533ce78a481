//! What a run reports besides `metrics.jsonl` and its pictures: TensorBoard event files
//! (`train.tensorboard`) and the k-NN monitor (`train.knn_every`). Rank 0 only.

use std::path::Path;

use super::metrics::MetricLine;
use crate::config::Config;
use crate::error::Result;
use crate::eval::features::Pool;
use crate::eval::knn::{K, KnnConfig, KnnData, TEMPERATURE, knn};
use crate::model::MaskedAutoencoder;
use crate::progress::Progress;
use crate::tensorboard::EventWriter;

/// Training and test images the k-NN monitor uses (the first of each split): DINO's monitor
/// searches the whole training set; a run's monitor keeps to what takes seconds.
const KNN_TRAIN_IMAGES: usize = 10_000;
const KNN_TEST_IMAGES: usize = 2_000;

pub(super) struct Monitors {
    events: Option<EventWriter>,
    knn: Option<KnnData>,
    knn_every: u64,
}

impl Monitors {
    /// Opens what `config` asks for in `out`, for a run that starts after step `start`: a new
    /// event file (after a resume, opening with TensorBoard's restart marker at the first step
    /// this run logs, so what an earlier process logged past its last checkpoint is dropped
    /// from view), and the k-NN data, read now so a bad folder fails before the first step.
    pub fn open(config: &Config, out: &Path, start: u64) -> Result<Monitors> {
        let t = &config.train;
        let events = match t.tensorboard {
            false => None,
            true => {
                let mut events = EventWriter::create(out)?;
                if start > 0 {
                    events.restart_at(start + 1)?;
                }
                let text = format!("```toml\n{}\n```", config.to_toml());
                events.text(start, "config", &text)?;
                Some(events)
            }
        };
        let knn = match (&t.knn_data, t.knn_every) {
            (Some(dir), every) if every > 0 => Some(KnnData::open(dir)?),
            _ => None,
        };
        Ok(Monitors {
            events,
            knn,
            knn_every: t.knn_every,
        })
    }

    /// Whether the k-NN monitor runs after step `done`.
    pub fn knn_due(&self, done: u64, last: bool) -> bool {
        self.knn.is_some() && (done.is_multiple_of(self.knn_every.max(1)) || last)
    }

    /// The k-NN top-1 of `model`'s encoder.
    pub fn knn_top1(&self, config: &Config, model: &MaskedAutoencoder) -> Result<Option<f64>> {
        let Some(data) = &self.knn else {
            return Ok(None);
        };
        let settings = KnnConfig {
            k: K,
            temperature: TEMPERATURE,
            pool: Pool::Cls,
            train_limit: KNN_TRAIN_IMAGES,
            test_limit: KNN_TEST_IMAGES,
        };
        Ok(Some(
            knn(config, model, data, &settings, &Progress::hidden())?.top1,
        ))
    }

    /// A logged step's numbers.
    pub fn line(&mut self, line: &MetricLine) -> Result<()> {
        match &mut self.events {
            Some(events) => events.scalars(line.step, &line.scalars()),
            None => Ok(()),
        }
    }

    /// A reconstruction picture (PNG bytes of `size` pixels) of step `done`.
    pub fn picture(&mut self, done: u64, png: &[u8], size: (u32, u32)) -> Result<()> {
        match &mut self.events {
            Some(events) => events.image(done, "reconstruction", png, size),
            None => Ok(()),
        }
    }
}
