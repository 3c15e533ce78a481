//! Micro-batches decoded and augmented on background threads, in a deterministic order.
//!
//! The stream is an endless sequence of samples: sample `n` is image `perm_e[n mod N]` of epoch
//! `e = n / N`, where `perm_e` is a shuffle seeded by `(seed, e)`, and its augmentation draws
//! from a generator seeded by `(seed, n)`. Worker `w` builds micro-batches `m ≡ w (mod W)` and
//! the consumer takes them round-robin, so the output does not depend on thread timing.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rand::{SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use super::augment::augment;
use super::source::ImageSource;
use crate::config::DataConfig;
use crate::error::{Result, SaplingError};
use crate::seed::mix;

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

/// Files that failed to decode, shared by the workers so each is reported once.
#[derive(Debug, Default)]
pub struct SkipLog {
    seen: Mutex<HashSet<usize>>,
    count: AtomicUsize,
}

impl SkipLog {
    /// Distinct files skipped so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn record(&self, source: &ImageSource, i: usize, message: &str) {
        let mut seen = self.seen.lock().expect("skip log lock");
        if seen.insert(i) {
            self.count.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("skipping {}: cannot decode ({message})", source.name(i));
        }
    }
}

/// The background loader; dropping it stops its threads.
pub struct Loader {
    receivers: Vec<Receiver<Result<Batch>>>,
    /// The next of this rank's micro-batches to hand out.
    next: u64,
    /// Samples all ranks read per micro-batch of each.
    round: u64,
    workers: Vec<JoinHandle<()>>,
    skips: Arc<SkipLog>,
}

impl Loader {
    /// Starts the workers at sample `start_sample` of the stream, which must fall on a
    /// micro-batch boundary (checkpoints do: they are taken at whole optimizer steps).
    pub fn new(
        source: ImageSource,
        config: &DataConfig,
        img_size: usize,
        batch: usize,
        seed: u64,
        start_sample: u64,
    ) -> Self {
        Self::sharded(
            source,
            config,
            img_size,
            batch,
            seed,
            start_sample,
            Shard::WHOLE,
        )
    }

    /// One rank's share of the stream: global micro-batches `j · size + rank`, so the ranks
    /// together read every sample once and `start_sample` counts samples of all ranks.
    pub fn sharded(
        source: ImageSource,
        config: &DataConfig,
        img_size: usize,
        batch: usize,
        seed: u64,
        start_sample: u64,
        shard: Shard,
    ) -> Self {
        let round = (batch * shard.size) as u64;
        if !start_sample.is_multiple_of(round) {
            tracing::warn!(
                "the stream position {start_sample} is not a multiple of micro-batch x ranks = {round}; continuing from the boundary below it"
            );
        }
        let start = start_sample / round;
        let source = Arc::new(source);
        let skips = Arc::new(SkipLog::default());
        let n_workers = config.workers;
        let mut receivers = Vec::with_capacity(n_workers);
        let mut workers = Vec::with_capacity(n_workers);
        for w in 0..n_workers as u64 {
            let (tx, rx) = sync_channel(config.prefetch.div_ceil(n_workers).max(1));
            receivers.push(rx);
            let job = Worker {
                shard,
                source: source.clone(),
                config: config.clone(),
                img_size,
                batch,
                seed,
                skips: skips.clone(),
            };
            // The first micro-batch this worker owns at or after `start`.
            let first =
                start + (w + n_workers as u64 - start % n_workers as u64) % n_workers as u64;
            workers.push(std::thread::spawn(move || {
                job.run(first, n_workers as u64, tx)
            }));
        }
        Loader {
            receivers,
            next: start,
            round,
            workers,
            skips,
        }
    }

    /// The next micro-batch, in stream order.
    pub fn next_batch(&mut self) -> Result<Batch> {
        let w = (self.next % self.receivers.len() as u64) as usize;
        self.next += 1;
        self.receivers[w].recv().unwrap_or_else(|_| {
            Err(SaplingError::Data {
                path: "<loader>".into(),
                message: "a loader thread stopped unexpectedly".into(),
            })
        })
    }

    /// Samples handed out so far by all ranks, counted from the start of the stream.
    pub fn position(&self) -> u64 {
        self.next * self.round
    }

    /// Files skipped because they could not be decoded.
    pub fn skipped(&self) -> usize {
        self.skips.count()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channels makes each worker's next send fail, which ends it.
        self.receivers.clear();
        for w in self.workers.drain(..) {
            let _ = w.join();
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

struct Worker {
    shard: Shard,
    source: Arc<ImageSource>,
    config: DataConfig,
    img_size: usize,
    batch: usize,
    seed: u64,
    skips: Arc<SkipLog>,
}

impl Worker {
    fn run(self, first: u64, stride: u64, tx: SyncSender<Result<Batch>>) {
        let mut epoch_perm: Option<(u64, Vec<usize>)> = None;
        let mut m = first;
        loop {
            let batch = self.build(m, &mut epoch_perm);
            let failed = batch.is_err();
            if tx.send(batch).is_err() || failed {
                return;
            }
            m += stride;
        }
    }

    fn build(&self, local: u64, epoch_perm: &mut Option<(u64, Vec<usize>)>) -> Result<Batch> {
        let m = local * self.shard.size as u64 + self.shard.rank as u64;
        let n = self.source.len() as u64;
        let mut images = Vec::with_capacity(self.batch * 3 * self.img_size * self.img_size);
        for s in 0..self.batch as u64 {
            let sample = m * self.batch as u64 + s;
            let epoch = sample / n;
            if epoch_perm.as_ref().is_none_or(|(e, _)| *e != epoch) {
                let mut perm: Vec<usize> = (0..n as usize).collect();
                perm.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(self.seed, epoch)));
                *epoch_perm = Some((epoch, perm));
            }
            let perm = &epoch_perm.as_ref().expect("set above").1;
            let img = self.decode_from(perm[(sample % n) as usize])?;
            let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed ^ 0x5eed_da7a, sample));
            augment(
                &img,
                self.img_size as u32,
                &self.config,
                &mut rng,
                &mut images,
            );
        }
        Ok(Batch {
            images,
            batch: self.batch,
            size: self.img_size,
            first_sample: m * self.batch as u64,
        })
    }

    /// Decodes image `i`, or the next decodable one after it: a broken file is skipped with one
    /// warning, and the substitute is the same on every run.
    fn decode_from(&self, i: usize) -> Result<image::RgbImage> {
        let n = self.source.len();
        for k in 0..n {
            let j = (i + k) % n;
            match self.source.load(j) {
                Ok(img) => return Ok(img),
                Err(message) => self.skips.record(&self.source, j, &message),
            }
        }
        Err(SaplingError::Data {
            path: self.source.name(0).into(),
            message: format!("none of the {n} images could be decoded"),
        })
    }
}
