//! Micro-batches from shard samples: the rank's reader thread hands each worker whole raw
//! micro-batches (encoded images in stream order); the worker decodes and augments them exactly
//! as a folder's, each sample's crop drawn from its place in the stream.

use std::sync::Arc;

use super::{RankReader, Sample};
use crate::config::DataConfig;
use crate::data::stream::{Batch, Input, Shard, SkipLog, augment_sample};
use crate::error::{Result, SaplingError};

/// One micro-batch's encoded samples: this rank's micro-batch `local`.
pub struct RawBatch {
    pub local: u64,
    pub samples: Vec<Sample>,
}

/// Turns raw micro-batches into normalised ones.
pub struct BatchMaker {
    pub reader: RankReader,
    pub config: DataConfig,
    pub img_size: usize,
    pub seed: u64,
    pub shard: Shard,
    pub skips: Arc<SkipLog>,
}

impl BatchMaker {
    /// Decodes and augments `raw`. A sample that does not decode is replaced by the next one of
    /// the micro-batch that does (the same on every run), with one warning.
    pub fn make(&self, raw: &RawBatch) -> Result<Batch> {
        let batch = raw.samples.len();
        let first = (raw.local * self.shard.size as u64 + self.shard.rank as u64) * batch as u64;
        let mut images = Vec::with_capacity(batch * 3 * self.img_size * self.img_size);
        for b in 0..batch {
            self.augment_from(&raw.samples, b, first + b as u64, &mut images)?;
        }
        Ok(Batch {
            images,
            batch,
            size: self.img_size,
            first_sample: first,
        })
    }

    fn augment_from(&self, samples: &[Sample], b: usize, n: u64, out: &mut Vec<f32>) -> Result<()> {
        for k in 0..samples.len() {
            let sample = &samples[(b + k) % samples.len()];
            let input = Input::Encoded(&sample.bytes);
            match augment_sample(input, n, self.seed, self.img_size, &self.config, out) {
                Ok(()) => return Ok(()),
                Err(message) => self.skips.record(self.reader.name(sample), &message),
            }
        }
        Err(SaplingError::Data {
            path: self.reader.name(&samples[b]).into(),
            message: format!(
                "none of the {} images of this micro-batch could be decoded; check the shards",
                samples.len()
            ),
        })
    }
}
