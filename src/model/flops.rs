//! Analytic FLOP counts of the MAE.
//!
//! Two figures: the Sapiens paper's table convention (multiply-accumulates of the encoder's
//! linear layers over *all* patches of one image, reported as FLOPs, as fvcore counts), so
//! presets can be checked against the paper; and the work a masked training step really does
//! (2 FLOPs per multiply-add, encoder on the visible patches only, decoder, attention products,
//! backward counted as twice the forward).

use serde::Serialize;

use crate::config::ModelConfig;

/// FLOPs of one image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FlopCount {
    /// The Sapiens table's figure: encoder linears on all patches, multiply-adds.
    pub paper_encoder: f64,
    /// Forward pass of a masked training step.
    pub train_forward: f64,
    /// Forward + backward (3 × forward).
    pub train_step: f64,
}

/// FLOPs per image of `c`.
pub fn flops_per_image(c: &ModelConfig) -> FlopCount {
    let (d, dd, pd) = (c.dim as f64, c.decoder_dim as f64, c.patch_dim() as f64);
    let (l, k) = (c.num_patches() as f64, c.num_visible() as f64);
    let r = c.mlp_ratio as f64;
    // qkv 3D², proj D², MLP 2rD² multiply-adds per token.
    let linear_macs = |width: f64| (4.0 + 2.0 * r) * width * width;
    let paper_encoder = l * pd * d + c.depth as f64 * l * linear_macs(d);
    let block = |tokens: f64, width: f64, depth: usize| {
        // Linears, plus QKᵀ and the value product (tokens² · width each).
        depth as f64 * (tokens * linear_macs(width) + 2.0 * tokens * tokens * width)
    };
    let encoder = k * pd * d + block(1.0 + k, d, c.depth);
    let decoder = (1.0 + k) * d * dd + block(1.0 + l, dd, c.decoder_depth) + l * dd * pd;
    let train_forward = 2.0 * (encoder + decoder);
    FlopCount {
        paper_encoder,
        train_forward,
        train_step: 3.0 * train_forward,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Preset;

    #[test]
    fn sapiens_encoder_flops_match_the_paper_table() {
        for (p, tflops) in [
            (Preset::Sapiens03b, 1.242),
            (Preset::Sapiens06b, 2.583),
            (Preset::Sapiens1b, 4.647),
            (Preset::Sapiens2b, 8.709),
        ] {
            let got = flops_per_image(&p.config().model).paper_encoder / 1e12;
            assert!(
                (got - tflops).abs() / tflops < 0.01,
                "{}: {got} vs {tflops}",
                p.name()
            );
        }
    }

    #[test]
    fn masking_makes_the_encoder_cheaper_than_the_full_image() {
        let f = flops_per_image(&Preset::VitB.config().model);
        // A quarter of the patches: the encoder share of training is well under a full pass.
        assert!(f.train_forward < 2.0 * f.paper_encoder);
        assert_eq!(f.train_step, 3.0 * f.train_forward);
    }
}
