//! An analytic model of the memory one training step needs, and of its largest single tensor.
//!
//! Everything is f32. A step holds, at its peak (the start of backward through the last
//! micro-batch): the parameters, AdamW's two moments, the gradients (two sets while
//! accumulating: the running sum and the new ones), every activation autodiff saved for
//! backward, and the temporaries of the op being differentiated. The per-block activation
//! count follows the ops in `model::block` (see [`BLOCK_SAVED_ND`]); the coefficients were
//! checked against burn's memory pool on lavapipe and the process's peak RSS on Flex (tests in
//! `tests/suite/planner.rs`).

use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::model::analytic_params;
use crate::ops::Kernels;

const F32: u64 = 4;

/// `[tokens, width]`-sized tensors one transformer block saves for backward: layer norm 1's
/// input and normalised input, its output (qkv's input), scaled q, kᵀ and v as separate
/// buffers, the merged attention output (proj's input), the residual sum, and layer norm 2's
/// three. The two hidden-width tensors (fc1's output for GELU, GELU's output for fc2) and the
/// softmax output (for both softmax's and the value product's backward) are counted apart.
pub const BLOCK_SAVED_ND: u64 = 12;
/// Hidden-width tensors saved per block.
pub const BLOCK_SAVED_HIDDEN: u64 = 2;
/// Score-sized (`[heads, tokens, tokens]`) tensors saved per block.
pub const BLOCK_SAVED_SCORES: u64 = 1;

/// The memory of one training step at a given micro-batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMemory {
    pub micro_batch: usize,
    /// Learnable parameters and the fixed position tables.
    pub params: u64,
    pub grads: u64,
    /// AdamW's first and second moments.
    pub optim_state: u64,
    /// Tensors autodiff keeps for backward.
    pub activations: u64,
    /// Temporaries alive at the peak on top of the saved activations.
    pub transient: u64,
    /// The peak: the sum of the above.
    pub total: u64,
    /// The largest single tensor of the step; it must fit the adapter's storage-binding limit.
    pub largest: Tensor,
}

/// One named tensor and its size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    pub name: String,
    pub bytes: u64,
}

/// The shape of one transformer stack as the step sees it.
struct Stack {
    tokens: u64,
    dim: u64,
    heads: u64,
    depth: u64,
    hidden: u64,
}

impl Stack {
    fn scores(&self, b: u64) -> u64 {
        b * self.heads * self.tokens * self.tokens * F32
    }
    fn hidden(&self, b: u64) -> u64 {
        b * self.tokens * self.hidden * F32
    }
    fn nd(&self, b: u64) -> u64 {
        b * self.tokens * self.dim * F32
    }
    /// Softmax probabilities kept for backward: the scores, or with the flash kernel one
    /// logsumexp per row.
    fn attention_saved(&self, b: u64, kernels: Kernels) -> u64 {
        if kernels == Kernels::Wgsl {
            b * self.heads * self.tokens * F32
        } else {
            BLOCK_SAVED_SCORES * self.scores(b)
        }
    }
    fn saved(&self, b: u64, kernels: Kernels) -> u64 {
        self.depth
            * (BLOCK_SAVED_ND * self.nd(b)
                + BLOCK_SAVED_HIDDEN * self.hidden(b)
                + self.attention_saved(b, kernels))
    }
}

/// The step memory of `model` at micro-batch `micro` with `accum` micro-batches per step, with
/// the operations of `kernels` (the WGSL kernels keep neither scores nor patch tensors).
pub fn step_memory(
    model: &ModelConfig,
    micro: usize,
    accum: usize,
    kernels: Kernels,
) -> StepMemory {
    let b = micro as u64;
    let counts = analytic_params(model);
    let learnable = counts.learnable as u64 * F32;
    let (l, k) = (model.num_patches() as u64, model.num_visible() as u64);
    let pd = model.patch_dim() as u64;
    let encoder = Stack {
        tokens: 1 + k,
        dim: model.dim as u64,
        heads: model.heads as u64,
        depth: model.depth as u64,
        hidden: (model.dim * model.mlp_ratio) as u64,
    };
    let decoder = Stack {
        tokens: 1 + l,
        dim: model.decoder_dim as u64,
        heads: model.decoder_heads as u64,
        depth: model.decoder_depth as u64,
        hidden: (model.decoder_dim * model.mlp_ratio) as u64,
    };
    let pixels = b * model.in_chans as u64 * (model.img_size as u64).pow(2) * F32;
    let patch_rows = b * l * pd * F32;
    let visible_rows = b * k * pd * F32;
    let (patches, scores) = if kernels == Kernels::Wgsl {
        // Gather and loss read the image: the visible rows, the prediction and its gradient.
        (visible_rows + 2 * patch_rows, 0)
    } else {
        // The image, its patches, the gathered visible rows; the prediction and the norm-pix
        // target, its normalised form, the difference and its square. (The CPU kernels keep
        // what burn's ops keep in a block: each layer's input, layer norm's statistics, the
        // softmax probabilities and GELU's input.)
        (7 * patch_rows, encoder.scores(b).max(decoder.scores(b)))
    };
    // Outside the blocks: the embedding with position and cls; the final norm, decoder
    // embedding, mask tokens, the restored order with positions, the decoder norm.
    let around = pixels + patches + 4 * encoder.nd(b) + 8 * decoder.nd(b);
    let activations = encoder.saved(b, kernels) + decoder.saved(b, kernels) + around;
    // At the peak: the gradient of the softmax output and of the scores of the last block
    // differentiated, next to the hidden-width gradients of its MLP.
    let transient = 2 * scores + 2 * encoder.hidden(b).max(decoder.hidden(b));
    let params = (counts.learnable + counts.fixed) as u64 * F32;
    let grads = learnable * if accum > 1 { 2 } else { 1 };
    let optim_state = 2 * learnable;
    let largest = largest_tensor(model, &encoder, &decoder, b, pixels, kernels);
    StepMemory {
        micro_batch: micro,
        params,
        grads,
        optim_state,
        activations,
        transient,
        total: params + grads + optim_state + activations + transient,
        largest,
    }
}

fn largest_tensor(
    model: &ModelConfig,
    enc: &Stack,
    dec: &Stack,
    b: u64,
    pixels: u64,
    kernels: Kernels,
) -> Tensor {
    let (d, dd) = (model.dim as u64, model.decoder_dim as u64);
    let pd = model.patch_dim() as u64;
    let materialised = u64::from(kernels != Kernels::Wgsl);
    let candidates = [
        ("encoder attention scores", materialised * enc.scores(b)),
        ("decoder attention scores", materialised * dec.scores(b)),
        (
            "patches",
            materialised * b * model.num_patches() as u64 * pd * F32,
        ),
        ("prediction", b * model.num_patches() as u64 * pd * F32),
        ("encoder MLP hidden", enc.hidden(b)),
        ("decoder MLP hidden", dec.hidden(b)),
        ("encoder qkv", 3 * enc.nd(b)),
        ("decoder qkv", 3 * dec.nd(b)),
        ("image batch", pixels),
        ("encoder MLP weight", d * enc.hidden * F32),
        ("decoder MLP weight", dd * dec.hidden * F32),
        ("patch embedding weight", pd * d * F32),
        ("position table", (1 + model.num_patches() as u64) * d * F32),
    ];
    let (name, bytes) = candidates
        .into_iter()
        .max_by_key(|c| c.1)
        .expect("candidates");
    Tensor {
        name: name.to_string(),
        bytes,
    }
}

/// Bytes as a short human figure (binary units).
pub fn fmt_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Preset;

    const REF: Kernels = Kernels::Reference;

    #[test]
    fn memory_grows_with_the_batch_and_parameters_do_not() {
        let cfg = Preset::VitB.config().model;
        let (m1, m8) = (step_memory(&cfg, 1, 1, REF), step_memory(&cfg, 8, 1, REF));
        assert_eq!(m1.params, m8.params);
        assert_eq!(m1.optim_state, 2 * m1.grads);
        assert!(m8.activations > 7 * m1.activations);
        assert!(m8.total > m1.total);
        assert_eq!(step_memory(&cfg, 8, 2, REF).grads, 2 * m8.grads);
    }

    #[test]
    fn sapiens_scores_dominate_at_1024_px() {
        // 4097 decoder tokens, 16 heads: one sample's scores are 16·4097²·4 bytes ≈ 1 GiB.
        let m = step_memory(&Preset::Sapiens03b.config().model, 1, 1, REF);
        assert_eq!(m.largest.name, "decoder attention scores");
        assert_eq!(m.largest.bytes, 16 * 4097 * 4097 * 4);
    }

    #[test]
    fn with_the_wgsl_kernels_no_sapiens_tensor_exceeds_128_mib() {
        // WebGPU's default storage-binding limit is 128 MiB: every buffer of a step must fit.
        for preset in [
            Preset::Sapiens03b,
            Preset::Sapiens06b,
            Preset::Sapiens1b,
            Preset::Sapiens2b,
        ] {
            let m = step_memory(&preset.config().model, 1, 1, Kernels::Wgsl);
            assert!(
                m.largest.bytes <= 128 << 20,
                "{preset:?}: {} is {}",
                m.largest.name,
                fmt_bytes(m.largest.bytes)
            );
            let reference = step_memory(&preset.config().model, 1, 1, REF);
            assert!(m.total < reference.total);
        }
    }

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(128 << 20), "128.0 MiB");
        assert_eq!(fmt_bytes(3 << 29), "1.5 GiB");
    }
}
