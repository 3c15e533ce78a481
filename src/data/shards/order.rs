//! The order samples leave the shards in, as a pure function of the seed, the epoch, the rank and
//! the shards' sample counts: which shards each rank reads in an epoch, and the shuffle buffer's
//! picks. Nothing here reads a file, so a resumed run can recompute where it was.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use crate::seed::{self, mix};

/// The shards rank `rank` of `ranks` reads in `epoch`, in reading order. The epoch's shard order
/// is a seeded shuffle; each shard in turn goes to the rank with the fewest samples so far (the
/// lowest rank on a tie), so ranks' epochs differ by at most one shard's samples even when shards
/// are uneven. Every shard goes to exactly one rank.
pub fn rank_shards(counts: &[u64], seed: u64, epoch: u64, ranks: usize, rank: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(
        seed ^ seed::SHARD_ORDER,
        epoch,
    )));
    // (samples so far, rank), least first: a resume walks every epoch before its own, so this
    // stays O(shards · log ranks) an epoch.
    let mut loads: BinaryHeap<Reverse<(u64, usize)>> =
        (0..ranks).map(|r| Reverse((0, r))).collect();
    let mut mine = Vec::new();
    for s in order {
        let Reverse((load, r)) = loads.pop().expect("at least one rank");
        loads.push(Reverse((load + counts[s], r)));
        if r == rank {
            mine.push(s);
        }
    }
    mine
}

/// The generator of a rank's shuffle-buffer picks in one epoch.
pub fn buffer_rng(seed: u64, epoch: u64, rank: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(mix(seed ^ seed::SHUFFLE_BUFFER, epoch), rank as u64))
}

/// WebDataset's shuffle buffer: samples go in in reading order; once it holds `capacity`, each
/// new one makes it give out a uniformly chosen one; at the end of the epoch it empties in random
/// order. Each slot remembers the sample's ordinal (its place in the epoch's reading order), so
/// the same picks can be replayed from the counts alone.
pub struct ShuffleBuffer<T> {
    slots: Vec<(u64, T)>,
    capacity: usize,
}

impl<T> ShuffleBuffer<T> {
    pub fn new(capacity: usize) -> Self {
        ShuffleBuffer {
            slots: Vec::with_capacity(capacity.min(1 << 16)),
            capacity: capacity.max(1),
        }
    }

    /// Adds sample `ordinal`; returns the one given out, if the buffer was full.
    pub fn push(&mut self, ordinal: u64, item: T, rng: &mut ChaCha8Rng) -> Option<(u64, T)> {
        self.slots.push((ordinal, item));
        (self.slots.len() >= self.capacity).then(|| self.pop(rng).expect("not empty"))
    }

    /// Gives out a uniformly chosen sample, or `None` when empty.
    pub fn pop(&mut self, rng: &mut ChaCha8Rng) -> Option<(u64, T)> {
        if self.slots.is_empty() {
            return None;
        }
        let i = rng.random_range(0..self.slots.len());
        Some(self.slots.swap_remove(i))
    }

    /// The slots, in buffer order.
    pub fn slots_mut(&mut self) -> &mut [(u64, T)] {
        &mut self.slots
    }
}

/// Where an epoch of `len` samples stands after `emitted` picks: the buffer (its ordinals, every
/// item `None` until the caller reads it) and the ordinal read next. `rng` is left exactly where
/// the live reader's would be.
pub fn replay<T>(
    len: u64,
    capacity: usize,
    emitted: u64,
    rng: &mut ChaCha8Rng,
) -> (ShuffleBuffer<Option<T>>, u64) {
    let mut buffer = ShuffleBuffer::new(capacity);
    let mut given = 0;
    let mut next = 0;
    while given < emitted && next < len {
        if buffer.push(next, None, rng).is_some() {
            given += 1;
        }
        next += 1;
    }
    while given < emitted && buffer.pop(rng).is_some() {
        given += 1;
    }
    (buffer, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shard_goes_to_one_rank_and_loads_stay_within_a_shard() {
        let counts = [5, 9, 1, 7, 7, 3, 8, 2, 6, 4];
        for epoch in 0..5 {
            let lists: Vec<Vec<usize>> = (0..3)
                .map(|r| rank_shards(&counts, 7, epoch, 3, r))
                .collect();
            let mut all: Vec<usize> = lists.concat();
            all.sort();
            assert_eq!(all, (0..counts.len()).collect::<Vec<_>>());
            let loads: Vec<u64> = lists
                .iter()
                .map(|l| l.iter().map(|&s| counts[s]).sum())
                .collect();
            let spread = loads.iter().max().unwrap() - loads.iter().min().unwrap();
            assert!(spread <= 9, "epoch {epoch}: loads {loads:?}");
        }
        assert_ne!(
            rank_shards(&counts, 7, 0, 1, 0),
            rank_shards(&counts, 7, 1, 1, 0)
        );
    }

    #[test]
    fn the_buffer_gives_each_sample_once_and_replays_from_counts() {
        let (len, capacity) = (50u64, 8usize);
        let mut rng = buffer_rng(3, 0, 0);
        let mut buffer = ShuffleBuffer::new(capacity);
        let mut out = Vec::new();
        for o in 0..len {
            out.extend(buffer.push(o, o * 10, &mut rng).map(|(_, v)| v));
        }
        while let Some((_, v)) = buffer.pop(&mut rng) {
            out.push(v);
        }
        let mut sorted = out.clone();
        sorted.sort();
        assert_eq!(sorted, (0..len).map(|o| o * 10).collect::<Vec<_>>());
        assert_ne!(out, sorted, "shuffled");
        for emitted in [0, 1, 20, 43, 47, 50] {
            let mut rng = buffer_rng(3, 0, 0);
            let (mut buffer, next) = replay::<()>(len, capacity, emitted, &mut rng);
            let mut rest = Vec::new();
            for o in next..len {
                rest.extend(buffer.push(o, None, &mut rng).map(|(o, _)| o * 10));
            }
            while let Some((o, _)) = buffer.pop(&mut rng) {
                rest.push(o * 10);
            }
            assert_eq!(rest, out[emitted as usize..], "after {emitted}");
        }
    }
}
