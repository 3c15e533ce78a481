//! Micro-batches of the sample stream ([`super::stream`]) built on background threads: worker
//! `w` builds micro-batches `m ≡ w (mod W)` and the consumer takes them round-robin, so the
//! output does not depend on thread timing.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

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
