//! Micro-batches of the sample stream ([`super::stream`]) built on background threads: worker
//! `w` builds micro-batches `m ≡ w (mod W)` and the consumer takes them round-robin, so the
//! output does not depend on thread timing.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

#[cfg(not(target_arch = "wasm32"))]
use super::shards::{
    RankReader,
    batches::{BatchMaker, RawBatch},
};
use super::source::ImageSource;
use super::stream::{Batch, Shard, SkipLog, Stream};
use crate::config::DataConfig;
use crate::error::{Result, SaplingError};

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
        #[cfg(not(target_arch = "wasm32"))]
        if let ImageSource::Shards(set) = &source {
            let maker = |skips| BatchMaker {
                reader: RankReader::new(
                    set.clone(),
                    seed,
                    shard.rank,
                    shard.size,
                    config.shuffle_buffer,
                ),
                config: config.clone(),
                img_size,
                seed,
                shard,
                skips,
            };
            return Self::from_shards(maker, config, batch, start, round);
        }
        let source = Arc::new(source);
        let skips = Arc::new(SkipLog::default());
        let n_workers = config.workers;
        let mut receivers = Vec::with_capacity(n_workers);
        let mut workers = Vec::with_capacity(n_workers);
        for w in 0..n_workers as u64 {
            let (tx, rx) = sync_channel(config.prefetch.div_ceil(n_workers).max(1));
            receivers.push(rx);
            let job = Stream::new(source.clone(), config, img_size, batch, seed, shard)
                .sharing_skips(skips.clone());
            // The first micro-batch this worker owns at or after `start`.
            let first =
                start + (w + n_workers as u64 - start % n_workers as u64) % n_workers as u64;
            workers.push(std::thread::spawn(move || {
                work(job, first, n_workers as u64, tx)
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

    /// A rank's shards: one thread reads them in order (sequential reads, one shuffle buffer,
    /// an order that does not depend on the number of workers) and deals whole raw
    /// micro-batches out round-robin; `config.workers` threads decode and augment them.
    #[cfg(not(target_arch = "wasm32"))]
    fn from_shards(
        maker: impl Fn(Arc<SkipLog>) -> BatchMaker,
        config: &DataConfig,
        batch: usize,
        start: u64,
        round: u64,
    ) -> Self {
        let skips = Arc::new(SkipLog::default());
        let n_workers = config.workers;
        let mut receivers = Vec::with_capacity(n_workers);
        let mut raw_senders = Vec::with_capacity(n_workers);
        let mut workers = Vec::with_capacity(n_workers + 1);
        for _ in 0..n_workers {
            let (tx, rx) = sync_channel(config.prefetch.div_ceil(n_workers).max(1));
            let (raw_tx, raw_rx) = sync_channel::<Result<RawBatch>>(1);
            receivers.push(rx);
            raw_senders.push(raw_tx);
            let maker = maker(skips.clone());
            workers.push(std::thread::spawn(move || {
                for raw in raw_rx {
                    let batch = raw.and_then(|raw| maker.make(&raw));
                    let failed = batch.is_err();
                    if tx.send(batch).is_err() || failed {
                        return;
                    }
                }
            }));
        }
        let reader = maker(skips.clone()).reader;
        workers.push(std::thread::spawn(move || {
            deal(&reader, start, batch, &raw_senders)
        }));
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

/// Reads this rank's samples from its micro-batch `start` on and sends micro-batch `m` to worker
/// `m mod W`, until the workers hang up; a read error goes to the worker whose turn it is.
#[cfg(not(target_arch = "wasm32"))]
fn deal(reader: &RankReader, start: u64, batch: usize, senders: &[SyncSender<Result<RawBatch>>]) {
    let n = senders.len() as u64;
    let mut m = start;
    let mut samples = Vec::with_capacity(batch);
    let read = reader.run(start * batch as u64, |sample| {
        samples.push(sample);
        if samples.len() < batch {
            return true;
        }
        let raw = RawBatch {
            local: m,
            samples: std::mem::replace(&mut samples, Vec::with_capacity(batch)),
        };
        let sent = senders[(m % n) as usize].send(Ok(raw)).is_ok();
        m += 1;
        sent
    });
    if let Err(e) = read {
        let _ = senders[(m % n) as usize].send(Err(e));
    }
}

/// Builds every `stride`-th micro-batch from `first` until the consumer hangs up or a batch
/// fails (the failure is handed on, then the worker stops).
fn work(mut stream: Stream, first: u64, stride: u64, tx: SyncSender<Result<Batch>>) {
    let mut m = first;
    loop {
        let batch = stream.batch(m);
        let failed = batch.is_err();
        if tx.send(batch).is_err() || failed {
            return;
        }
        m += stride;
    }
}
