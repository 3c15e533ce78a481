//! Per-sample random masking, drawn on the CPU.
//!
//! MAE draws uniform noise and argsorts it on the device. Burn's wgpu `argsort` reads back
//! synchronously, which panics in a browser, so sapling draws each sample's permutation with a
//! seeded ChaCha generator and uploads indices instead: same distribution (a uniformly random
//! subset of exactly `L - floor(L·r)` kept patches), identical on every backend, no readback.
//!
//! Convention used everywhere: in `mask`, **1 = removed** (predicted by the decoder), 0 = kept.

use rand::{SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use crate::seed::mix;

/// The masking of one batch, in plain index form.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskPlan {
    pub batch: usize,
    /// Patches per image (`L`).
    pub num_patches: usize,
    /// Kept patches per image (`K`).
    pub num_visible: usize,
    /// `[B, L]` row-major: a random permutation per sample; its first `K` entries are kept.
    pub ids_shuffle: Vec<usize>,
    /// `[B, L]`: the inverse permutation, `ids_shuffle[ids_restore[j]] == j`.
    pub ids_restore: Vec<usize>,
    /// `[B, L]` in the original patch order: 1 = removed, 0 = kept.
    pub mask: Vec<f32>,
}

impl MaskPlan {
    /// Draws a plan for `batch` samples of `num_patches` patches keeping `num_visible` each;
    /// sample `b` draws from `mix(seed, b)`.
    pub fn random(batch: usize, num_patches: usize, num_visible: usize, seed: u64) -> Self {
        let seeds: Vec<u64> = (0..batch as u64).map(|b| mix(seed, b)).collect();
        Self::from_seeds(&seeds, num_patches, num_visible)
    }

    /// One sample per seed. Seeding each sample on its own (by its index in the data stream)
    /// makes a sample's mask independent of how the stream is cut into micro-batches, so a
    /// changed micro-batch size trains on the same masks.
    pub fn from_seeds(seeds: &[u64], num_patches: usize, num_visible: usize) -> Self {
        assert!(num_visible <= num_patches);
        let batch = seeds.len();
        let mut ids_shuffle = Vec::with_capacity(batch * num_patches);
        let mut ids_restore = vec![0; batch * num_patches];
        let mut mask = vec![1.0f32; batch * num_patches];
        for (b, &seed) in seeds.iter().enumerate() {
            let mut perm: Vec<usize> = (0..num_patches).collect();
            perm.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
            for (rank, &patch) in perm.iter().enumerate() {
                ids_restore[b * num_patches + patch] = rank;
                if rank < num_visible {
                    mask[b * num_patches + patch] = 0.0;
                }
            }
            ids_shuffle.extend(perm);
        }
        MaskPlan {
            batch,
            num_patches,
            num_visible,
            ids_shuffle,
            ids_restore,
            mask,
        }
    }

    /// `[B·K]` row indices into a `[B·L, ·]` flattened patch tensor: the kept patches of each
    /// sample, in shuffled order.
    pub fn keep_rows(&self) -> Vec<i64> {
        (0..self.batch)
            .flat_map(|b| {
                self.ids_shuffle[b * self.num_patches..][..self.num_visible]
                    .iter()
                    .map(move |&p| (b * self.num_patches + p) as i64)
            })
            .collect()
    }

    /// `[B·L]` row indices into a `[B·L, ·]` tensor in shuffled order (kept first, then mask
    /// tokens) that put every token back at its original patch position.
    pub fn restore_rows(&self) -> Vec<i64> {
        (0..self.batch)
            .flat_map(|b| {
                self.ids_restore[b * self.num_patches..][..self.num_patches]
                    .iter()
                    .map(move |&r| (b * self.num_patches + r) as i64)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_right_count_as_a_permutation() {
        let (b, l) = (4, 49);
        let k = l - (l as f64 * 0.75).floor() as usize;
        let plan = MaskPlan::random(b, l, k, 7);
        for s in 0..b {
            let perm = &plan.ids_shuffle[s * l..][..l];
            let mut sorted = perm.to_vec();
            sorted.sort_unstable();
            assert_eq!(
                sorted,
                (0..l).collect::<Vec<_>>(),
                "sample {s} is a permutation"
            );
            for j in 0..l {
                assert_eq!(
                    perm[plan.ids_restore[s * l + j]],
                    j,
                    "restore inverts shuffle"
                );
            }
            let removed: f32 = plan.mask[s * l..][..l].iter().sum();
            assert_eq!(removed as usize, l - k, "sample {s} removes L - K patches");
            for &kept in &perm[..k] {
                assert_eq!(plan.mask[s * l + kept], 0.0);
            }
        }
    }

    #[test]
    fn differs_per_sample_and_per_seed_but_repeats_per_seed() {
        let plan = MaskPlan::random(8, 64, 16, 1);
        let first = &plan.ids_shuffle[..64];
        assert!((1..8).all(|s| &plan.ids_shuffle[s * 64..][..64] != first));
        assert_eq!(plan, MaskPlan::random(8, 64, 16, 1));
        assert_ne!(plan, MaskPlan::random(8, 64, 16, 2));
    }

    #[test]
    fn row_indices_address_the_flattened_batch() {
        let plan = MaskPlan::random(2, 9, 3, 3);
        let keep = plan.keep_rows();
        assert_eq!(keep.len(), 6);
        assert!(keep[..3].iter().all(|&r| r < 9) && keep[3..].iter().all(|&r| r >= 9));
        let restore = plan.restore_rows();
        // Restoring the shuffled order of 0..L gives back 0..L.
        for b in 0..2 {
            for j in 0..9 {
                let shuffled_pos = restore[b * 9 + j] as usize - b * 9;
                assert_eq!(plan.ids_shuffle[b * 9 + shuffled_pos], j);
            }
        }
    }
}
