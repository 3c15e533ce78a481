//! One rank's sample stream from shards: epoch after epoch, the rank's shards
//! ([`order::rank_shards`]) read front to back through the shuffle buffer, without end. Where the
//! stream stands after `n` samples follows from the counts alone ([`order::replay`]), so a
//! resumed run reads again only the shards that still hold samples in the buffer.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use super::ShardSet;
use super::members;
use super::order;
use crate::error::{Result, SaplingError};

/// One sample as the loader receives it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Index of its shard in the set.
    pub shard: usize,
    pub key: String,
    /// The encoded image.
    pub bytes: Vec<u8>,
}

/// A rank's reader of a shard set.
#[derive(Debug, Clone)]
pub struct RankReader {
    set: Arc<ShardSet>,
    counts: Vec<u64>,
    seed: u64,
    rank: usize,
    ranks: usize,
    capacity: usize,
}

impl RankReader {
    pub fn new(set: Arc<ShardSet>, seed: u64, rank: usize, ranks: usize, capacity: usize) -> Self {
        let counts = set.counts();
        RankReader {
            set,
            counts,
            seed,
            rank,
            ranks,
            capacity,
        }
    }

    /// `"SHARD:KEY"`, for messages.
    pub fn name(&self, sample: &Sample) -> String {
        format!(
            "{}:{}",
            self.set.files[sample.shard].path.display(),
            sample.key
        )
    }

    /// Hands this rank's samples, from its `start`-th on, to `emit` until `emit` returns false.
    pub fn run(&self, start: u64, mut emit: impl FnMut(Sample) -> bool) -> Result<()> {
        // A rank without a shard would look for its samples forever.
        self.set.check_ranks(self.ranks)?;
        let (mut epoch, mut skip) = self.locate(start);
        while self.run_epoch(epoch, skip, &mut emit)? {
            epoch += 1;
            skip = 0;
        }
        Ok(())
    }

    /// This rank's samples in `epoch`, in reading order (the shards it reads, in order).
    pub fn epoch_shards(&self, epoch: u64) -> Vec<usize> {
        order::rank_shards(&self.counts, self.seed, epoch, self.ranks, self.rank)
    }

    fn epoch_len(&self, shards: &[usize]) -> u64 {
        shards.iter().map(|&s| self.counts[s]).sum()
    }

    /// The epoch this rank's `n`-th sample falls in, and its place in that epoch.
    fn locate(&self, mut n: u64) -> (u64, u64) {
        let mut epoch = 0;
        loop {
            let len = self.epoch_len(&self.epoch_shards(epoch));
            if n < len {
                return (epoch, n);
            }
            n -= len;
            epoch += 1;
        }
    }

    /// One epoch from its `skip`-th sample on; false when `emit` asked to stop.
    fn run_epoch(
        &self,
        epoch: u64,
        skip: u64,
        emit: &mut impl FnMut(Sample) -> bool,
    ) -> Result<bool> {
        let shards = self.epoch_shards(epoch);
        let mut rng = order::buffer_rng(self.seed, epoch, self.rank);
        // Past samples are not read again: the buffer as it stood, then only the samples still
        // in it are fetched (by seeking past the rest of their shards).
        let (mut buffer, next) =
            order::replay::<Sample>(self.epoch_len(&shards), self.capacity, skip, &mut rng);
        // The slot of each buffered ordinal whose sample is still to be re-read.
        let missing: HashMap<u64, usize> = buffer
            .slots_mut()
            .iter()
            .enumerate()
            .map(|(i, (o, _))| (*o, i))
            .collect();
        let first_needed = missing.keys().copied().min().unwrap_or(next);
        let missing = RefCell::new(missing);
        let mut base = 0u64;
        for &s in &shards {
            let count = self.counts[s];
            if base + count <= first_needed {
                base += count;
                continue;
            }
            let path = &self.set.files[s].path;
            let mut more = true;
            let scan = members::read(
                path,
                |i| base + i >= next || missing.borrow().contains_key(&(base + i)),
                |i, member| {
                    let o = base + i;
                    if i >= count {
                        return Err(miscounted(path, count, "more"));
                    }
                    let Some(member) = member else {
                        return Ok(true);
                    };
                    let sample = Sample {
                        shard: s,
                        key: member.key,
                        bytes: member.bytes,
                    };
                    if o < next {
                        if let Some(slot) = missing.borrow_mut().remove(&o) {
                            buffer.slots_mut()[slot].1 = Some(sample);
                        }
                        return Ok(true);
                    }
                    if let Some((_, out)) = buffer.push(o, Some(sample), &mut rng) {
                        more = emit(out.expect("read before it was buffered"));
                    }
                    Ok(more)
                },
            )?;
            if !more {
                return Ok(false);
            }
            if scan.samples != count {
                return Err(miscounted(path, count, "fewer"));
            }
            base += count;
        }
        while let Some((_, out)) = buffer.pop(&mut rng) {
            if !emit(out.expect("every buffered sample was read")) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn miscounted(path: &std::path::Path, count: u64, found: &str) -> SaplingError {
    SaplingError::Data {
        path: path.to_path_buf(),
        message: format!(
            "holds {found} samples with an image than the {count} counted for it ({} beside it, \
             or a read at the start of the run): the shard changed since; fix or delete {}",
            super::SIZES_FILE,
            super::SIZES_FILE
        ),
    }
}
