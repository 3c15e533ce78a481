//! Deriving independent, reproducible seeds from the run seed.
//!
//! Everything random in a run is a pure function of the run seed and a position, so a resumed
//! run, another micro-batch size or another backend draws the same values. Each use has its own
//! salt below; changing one changes every run's data, masks or pictures.

/// Salt of the per-sample mask seeds: sample `n`'s mask is drawn from `mix(seed ^ MASKS, n)`.
pub const MASKS: u64 = 0x3a5c;
/// Salt of the per-sample augmentation seeds (crop, flip): `mix(seed ^ AUGMENTATION, n)`.
pub const AUGMENTATION: u64 = 0x5eed_da7a;
/// Stream of the one fixed mask of the reconstruction pictures: `mix(seed, RECON_PICTURES)`.
pub const RECON_PICTURES: u64 = 0x0f16;
/// Salt of each epoch's shard order: `mix(seed ^ SHARD_ORDER, epoch)`.
pub const SHARD_ORDER: u64 = 0x5a4d_0bde;
/// Salt of each rank's shuffle-buffer picks in an epoch: `mix(mix(seed ^ SHUFFLE_BUFFER, epoch), rank)`.
pub const SHUFFLE_BUFFER: u64 = 0xb0ff_e125;

/// SplitMix64 finaliser over `seed` and `stream`: distinct inputs give unrelated seeds.
pub fn mix(seed: u64, stream: u64) -> u64 {
    let mut z = seed
        .wrapping_add(stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
