//! The sample stream: an endless sequence of samples where sample `n` is image
//! `perm_e[n mod N]` of epoch `e = n / N`, `perm_e` a shuffle seeded by `(seed, e)`, and its
//! augmentation draws from a generator seeded by `(seed, n)`. Any micro-batch can be built on
//! its own, so threads (native) or a browser's event loop build the same batches.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use super::augment::{augment, augment_encoded};
use super::source::ImageSource;
use crate::config::DataConfig;
use crate::error::{Result, SaplingError};
use crate::seed::{self, mix};

/// One micro-batch of normalised images.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, 3, S, S]` row-major.
    pub images: Vec<f32>,
    pub batch: usize,
    pub size: usize,
    /// Stream index of the first sample; sample `b` of the batch is `first_sample + b`.
    pub first_sample: u64,
}

impl Batch {
    /// Normalised-looking noise for timing a step: its cost does not depend on the pixels.
    pub fn synthetic(batch: usize, size: usize, seed: u64) -> Batch {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let images = (0..batch * 3 * size * size)
            .map(|_| rng.random_range(-2.0f32..2.0))
            .collect();
        Batch {
            images,
            batch,
            size,
            first_sample: 0,
        }
    }
}

/// Files that failed to decode, shared by the workers so each is reported once.
#[derive(Debug, Default)]
pub struct SkipLog {
    seen: Mutex<HashSet<String>>,
    count: AtomicUsize,
}

impl SkipLog {
    /// Distinct files skipped so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Notes that the image `name` could not be decoded, warning the first time.
    pub fn record(&self, name: String, message: &str) {
        let mut seen = self.seen.lock().expect("skip log lock");
        if !seen.contains(&name) {
            self.count.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("skipping {name}: cannot decode ({message})");
            seen.insert(name);
        }
    }
}

/// Which part of the stream a process reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub size: usize,
}

impl Shard {
    /// The whole stream (a world of one).
    pub const WHOLE: Shard = Shard { rank: 0, size: 1 };
}

/// One reader of the stream: builds any micro-batch of its shard on demand.
pub struct Stream {
    shard: Shard,
    source: Arc<ImageSource>,
    config: DataConfig,
    img_size: usize,
    batch: usize,
    seed: u64,
    skips: Arc<SkipLog>,
    /// The shuffle of the epoch last read from.
    epoch_perm: Option<(u64, Vec<usize>)>,
}

impl Stream {
    /// Micro-batches of `batch` samples at `img_size` pixels from `source`.
    pub fn new(
        source: Arc<ImageSource>,
        config: &DataConfig,
        img_size: usize,
        batch: usize,
        seed: u64,
        shard: Shard,
    ) -> Self {
        Stream {
            shard,
            source,
            config: config.clone(),
            img_size,
            batch,
            seed,
            skips: Arc::default(),
            epoch_perm: None,
        }
    }

    /// Reports undecodable files into `skips` (shared by several readers).
    pub fn sharing_skips(mut self, skips: Arc<SkipLog>) -> Self {
        self.skips = skips;
        self
    }

    /// The images this stream reads.
    pub fn source(&self) -> &Arc<ImageSource> {
        &self.source
    }

    /// Adds an image to the source and returns the new count; see [`ImageSource::push`]. Later
    /// samples draw from the larger set (the epoch's shuffle is redrawn for it).
    pub fn push_image(&mut self, name: String, image: image::RgbImage) -> Result<usize> {
        Arc::make_mut(&mut self.source).push(name, image)?;
        self.epoch_perm = None;
        Ok(self.source.len())
    }

    /// Files skipped because they could not be decoded.
    pub fn skipped(&self) -> usize {
        self.skips.count()
    }

    /// This shard's micro-batch `local`: global micro-batch `local · shards + rank`.
    pub fn batch(&mut self, local: u64) -> Result<Batch> {
        let m = local * self.shard.size as u64 + self.shard.rank as u64;
        let n = self.source.len() as u64;
        let mut images = Vec::with_capacity(self.batch * 3 * self.img_size * self.img_size);
        for s in 0..self.batch as u64 {
            let sample = m * self.batch as u64 + s;
            let epoch = sample / n;
            if self.epoch_perm.as_ref().is_none_or(|(e, _)| *e != epoch) {
                let mut perm: Vec<usize> = (0..n as usize).collect();
                perm.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(self.seed, epoch)));
                self.epoch_perm = Some((epoch, perm));
            }
            let i = self.epoch_perm.as_ref().expect("set above").1[(sample % n) as usize];
            self.augment_from(i, sample, &mut images)?;
        }
        Ok(Batch {
            images,
            batch: self.batch,
            size: self.img_size,
            first_sample: m * self.batch as u64,
        })
    }

    /// Appends sample `sample` made of image `i`, or of the next decodable one after it: a
    /// broken file is skipped with one warning, and the substitute is the same on every run.
    fn augment_from(&self, i: usize, sample: u64, out: &mut Vec<f32>) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        if let ImageSource::Shards(set) = &*self.source {
            return Err(SaplingError::Data {
                path: set.spec.clone(),
                message: "shards are read in order by the Loader, not by index".into(),
            });
        }
        let n = self.source.len();
        for k in 0..n {
            let j = (i + k) % n;
            let (size, config) = (self.img_size, &self.config);
            let made = match self.source.encoded(j) {
                Some(Ok(bytes)) => {
                    augment_sample(Input::Encoded(&bytes), sample, self.seed, size, config, out)
                }
                Some(Err(message)) => Err(message),
                None => self.source.load(j).and_then(|img| {
                    augment_sample(Input::Decoded(&img), sample, self.seed, size, config, out)
                }),
            };
            match made {
                Ok(()) => return Ok(()),
                Err(message) => self.skips.record(self.source.name(j), &message),
            }
        }
        Err(SaplingError::Data {
            path: self.source.name(0).into(),
            message: format!("none of the {n} images could be decoded"),
        })
    }
}

/// An image as a sample's augmentation takes it.
pub enum Input<'a> {
    /// Encoded bytes (a file's, a shard member's): JPEGs may be decoded at a reduced scale.
    Encoded(&'a [u8]),
    Decoded(&'a image::RgbImage),
}

/// Sample `sample`'s crop and flip of `input` (drawn from `(seed, sample)` alone), appended to
/// `out`; nothing is appended when the image does not decode.
pub fn augment_sample(
    input: Input<'_>,
    sample: u64,
    seed: u64,
    img_size: usize,
    config: &DataConfig,
    out: &mut Vec<f32>,
) -> std::result::Result<(), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed ^ seed::AUGMENTATION, sample));
    match input {
        Input::Encoded(bytes) => augment_encoded(bytes, img_size as u32, config, &mut rng, out),
        Input::Decoded(img) => {
            augment(img, img_size as u32, config, &mut rng, out);
            Ok(())
        }
    }
}
