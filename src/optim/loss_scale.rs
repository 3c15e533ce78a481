//! Dynamic loss scaling for f16 training, as PyTorch's `GradScaler`: the loss is multiplied by
//! a large power of two before backward, so that small gradients do not flush to zero in f16;
//! a step whose gradients overflowed (a non-finite norm) is skipped without touching the
//! weights or the optimizer and the scale halved; after enough clean steps it is doubled.

use serde::{Deserialize, Serialize};

/// The first scale, 2¹⁶ (PyTorch's default).
pub const INITIAL_SCALE: f64 = 65536.0;
/// Clean steps after which the scale doubles (PyTorch's default).
pub const GROWTH_INTERVAL: u64 = 2000;
/// The scale is never raised past this: f32 gradients of an f16 graph stay in range.
const MAX_SCALE: f64 = 16_777_216.0;

/// The loss scale of a run and what it did, saved in checkpoints so a resumed run goes on
/// with the same scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    /// What the loss is multiplied by before backward (a power of two, so scaling and
    /// unscaling are exact).
    pub scale: f64,
    /// Clean steps since the scale last changed.
    pub clean_steps: u64,
    /// Steps skipped because their gradients overflowed, over the whole run.
    pub skipped_steps: u64,
}

impl Default for LossScale {
    fn default() -> Self {
        LossScale {
            scale: INITIAL_SCALE,
            clean_steps: 0,
            skipped_steps: 0,
        }
    }
}

/// What to do with a step, given its scaled gradient norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The gradients are finite: unscale, clip and update.
    Apply,
    /// They overflowed: skip the update; the scale was halved.
    Skip,
    /// They are not finite even unscaled (the scale would drop below 1): not an f16 range
    /// problem, so the run stops as an f32 run would.
    Fail,
}

impl LossScale {
    /// Updates the scale after a step whose scaled gradient norm is `norm`.
    pub fn after_step(&mut self, norm: f64) -> Verdict {
        if !norm.is_finite() {
            if self.scale <= 1.0 {
                return Verdict::Fail;
            }
            self.scale /= 2.0;
            self.clean_steps = 0;
            self.skipped_steps += 1;
            return Verdict::Skip;
        }
        self.clean_steps += 1;
        if self.clean_steps >= GROWTH_INTERVAL {
            self.scale = (self.scale * 2.0).min(MAX_SCALE);
            self.clean_steps = 0;
        }
        Verdict::Apply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_halves_and_skips_clean_steps_double() {
        let mut s = LossScale::default();
        assert_eq!(s.after_step(f64::INFINITY), Verdict::Skip);
        assert_eq!(s.after_step(f64::NAN), Verdict::Skip);
        assert_eq!((s.scale, s.skipped_steps), (INITIAL_SCALE / 4.0, 2));
        for _ in 0..GROWTH_INTERVAL - 1 {
            assert_eq!(s.after_step(1.0), Verdict::Apply);
        }
        assert_eq!(s.scale, INITIAL_SCALE / 4.0);
        s.after_step(1.0);
        assert_eq!((s.scale, s.clean_steps), (INITIAL_SCALE / 2.0, 0));
        // An overflow resets the count of clean steps.
        s.after_step(1.0);
        s.after_step(f64::INFINITY);
        assert_eq!(
            (s.scale, s.clean_steps, s.skipped_steps),
            (INITIAL_SCALE / 4.0, 0, 3)
        );
    }

    #[test]
    fn gradients_that_overflow_unscaled_fail() {
        let mut s = LossScale {
            scale: 1.0,
            ..LossScale::default()
        };
        assert_eq!(s.after_step(f64::INFINITY), Verdict::Fail);
        let mut big = LossScale {
            scale: MAX_SCALE,
            clean_steps: GROWTH_INTERVAL - 1,
            skipped_steps: 0,
        };
        big.after_step(0.5);
        assert_eq!(big.scale, MAX_SCALE);
    }
}
