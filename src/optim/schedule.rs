//! The per-iteration learning rate: linear warmup, then half-cycle cosine (MAE's `lr_sched.py`,
//! Sapiens' LinearLR + CosineAnnealingLR), set before every optimizer step.

use crate::config::OptimConfig;

/// A resolved schedule for one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Peak lr: `base_lr · effective_batch / lr_base_batch`.
    pub peak_lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub warmup_start_factor: f64,
    pub total_steps: u64,
}

impl Schedule {
    /// Scales the base lr by the effective batch and fixes the warmup length.
    pub fn new(optim: &OptimConfig, effective_batch: usize, total_steps: u64) -> Self {
        let warmup = optim
            .warmup_steps
            .unwrap_or((optim.warmup_fraction * total_steps as f64).round() as u64)
            .min(total_steps);
        Schedule {
            peak_lr: scaled_lr(optim.base_lr, effective_batch, optim.lr_base_batch),
            min_lr: optim.min_lr,
            warmup_steps: warmup,
            warmup_start_factor: optim.warmup_start_factor,
            total_steps,
        }
    }

    /// The lr of optimizer step `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        let step = step as f64;
        let warmup = self.warmup_steps as f64;
        if step < warmup {
            // (1) warmup: factor rises linearly from `warmup_start_factor` to 1.
            let s = self.warmup_start_factor;
            return self.peak_lr * (s + (1.0 - s) * step / warmup);
        }
        // (2) half-cycle cosine from the peak at the end of warmup to `min_lr` at the last step.
        let span = (self.total_steps as f64 - warmup).max(1.0);
        let t = ((step - warmup) / span).min(1.0);
        self.min_lr + (self.peak_lr - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// The linear scaling rule: `base_lr · effective_batch / lr_base_batch`.
pub fn scaled_lr(base_lr: f64, effective_batch: usize, lr_base_batch: usize) -> f64 {
    base_lr * effective_batch as f64 / lr_base_batch as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(start: f64) -> Schedule {
        let optim = OptimConfig {
            base_lr: 1.5e-4,
            lr_base_batch: 256,
            min_lr: 1e-6,
            warmup_steps: Some(40),
            warmup_start_factor: start,
            ..OptimConfig::default()
        };
        Schedule::new(&optim, 4096, 1040)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn scales_with_the_effective_batch() {
        assert!(close(schedule(0.0).peak_lr, 1.5e-4 * 16.0));
        assert!(close(scaled_lr(1.5e-4, 4096, 4096), 1.5e-4));
    }

    #[test]
    fn warmup_starts_at_the_start_factor_and_reaches_the_peak() {
        let mae = schedule(0.0);
        assert_eq!(mae.lr_at(0), 0.0);
        assert!(close(mae.lr_at(20), mae.peak_lr * 0.5));
        let sapiens = schedule(1e-4);
        assert!(close(sapiens.lr_at(0), sapiens.peak_lr * 1e-4));
        assert!(close(
            sapiens.lr_at(10),
            sapiens.peak_lr * (1e-4 + (1.0 - 1e-4) * 0.25)
        ));
        // End of warmup: exactly the peak, the first cosine step.
        assert!(close(sapiens.lr_at(40), sapiens.peak_lr));
    }

    #[test]
    fn cosine_halves_at_the_middle_and_ends_at_min_lr() {
        let s = schedule(0.0);
        let mid = 40 + (1040 - 40) / 2;
        assert!(close(s.lr_at(mid), s.min_lr + (s.peak_lr - s.min_lr) * 0.5));
        assert!(close(s.lr_at(1040), s.min_lr));
        assert!(
            close(s.lr_at(5000), s.min_lr),
            "stays at min_lr past the end"
        );
        let quarter = 40 + 250;
        let want =
            s.min_lr + (s.peak_lr - s.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI / 4.0).cos());
        assert!(close(s.lr_at(quarter), want));
    }

    #[test]
    fn warmup_fraction_applies_when_steps_are_not_given() {
        let s = Schedule::new(&OptimConfig::default(), 256, 400);
        assert_eq!(s.warmup_steps, 20);
        assert!(s.lr_at(19) < s.lr_at(20));
    }
}
