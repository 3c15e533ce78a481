//! An analytic model of the memory one training step needs, and of its largest single tensor.
//!
//! Parameters, gradients and optimizer state are f32; activations are f32, or with
//! [`Precision::F16`] about half of them f16 (see [`BLOCK_SAVED_ND_OPERANDS`]). A step holds,
//! at its peak (the start of backward through the last micro-batch): the parameters, AdamW's
//! two moments (none with the optimizer on the host), the gradients (while accumulating, the
//! running sums and one stage's new ones, since backward then goes stage by stage; with
//! gradients summed on the host, one stage's alone), every activation autodiff saved for
//! backward, and the temporaries of the op being differentiated. The per-block activation
//! count follows the ops in `model::block` (see [`BLOCK_SAVED_ND`]); the coefficients were
//! checked against burn's memory pool on lavapipe and the process's peak RSS on Flex (tests in
//! `tests/suite/planner.rs`). With activation checkpointing the saved activations are each
//! stage's input plus the activations of the one stage being differentiated.

use serde::{Deserialize, Serialize};

use super::levers::Levers;
use crate::config::ModelConfig;
use crate::model::analytic_params;
use crate::model::block::block_params;
use crate::ops::{Kernels, Precision};

const F32: u64 = 4;

/// `[tokens, width]`-sized tensors one transformer block saves for backward: layer norm 1's
/// input and normalised input, its output (qkv's input), scaled q, kᵀ and v as separate
/// buffers, the merged attention output (proj's input), the residual sum, and layer norm 2's
/// three. The two hidden-width tensors (fc1's output for GELU, GELU's output for fc2) and the
/// softmax output (for both softmax's and the value product's backward) are counted apart.
pub const BLOCK_SAVED_ND: u64 = 12;
/// Of [`BLOCK_SAVED_ND`], the operands of a matmul or of attention (qkv's input, q, k, v, the
/// attention output, fc1's input): in mixed precision these are kept in f16, the rest (layer
/// norms' inputs and statistics, the residual sums) in f32.
pub const BLOCK_SAVED_ND_OPERANDS: u64 = 6;
/// The gradient bytes read back at once (`train.allreduce_bucket_mib`'s default).
pub const READBACK_BUCKET: u64 = 25 << 20;
/// Stages' gradients on the device at once while the host sums them: one being made, one
/// handed to the reader thread, one being read back (`train::grad_sums`).
pub const HOST_SUM_STAGES: u64 = 3;
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
    /// Host memory the optimizer on the host (offloaded or sharded) needs per rank besides:
    /// the gradient sums, this rank's moments and master weights, and over several ranks the
    /// buffers of the exchange (0 with the optimizer on the device).
    #[serde(default)]
    pub host: u64,
    /// Gradient bytes read back from the device per micro-batch (the host optimizer).
    #[serde(default)]
    pub readback_per_micro_batch: u64,
    /// Bytes moved per optimizer step besides: the weights uploaded and, with gradients summed
    /// on the device, the sums read back (the host optimizer).
    #[serde(default)]
    pub upload_per_step: u64,
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
    /// Bytes of an element of what matmuls compute in.
    act: u64,
}

impl Stack {
    fn scores(&self, b: u64) -> u64 {
        b * self.heads * self.tokens * self.tokens * F32
    }
    /// Hidden-width activations, in the compute precision.
    fn hidden(&self, b: u64) -> u64 {
        b * self.tokens * self.hidden * self.act
    }
    /// A `[tokens, width]` tensor of the residual stream (f32).
    fn nd(&self, b: u64) -> u64 {
        b * self.tokens * self.dim * F32
    }
    /// A `[tokens, width]` matmul or attention operand, in the compute precision.
    fn operand(&self, b: u64) -> u64 {
        b * self.tokens * self.dim * self.act
    }
    /// Softmax probabilities kept for backward: the scores (f32 in either precision: the
    /// value product takes them in f32), or with the flash kernel one logsumexp per row.
    fn attention_saved(&self, b: u64, kernels: Kernels) -> u64 {
        if kernels == Kernels::Wgsl {
            b * self.heads * self.tokens * F32
        } else {
            BLOCK_SAVED_SCORES * self.scores(b)
        }
    }
    /// What one block keeps for backward.
    fn block(&self, b: u64, kernels: Kernels) -> u64 {
        (BLOCK_SAVED_ND - BLOCK_SAVED_ND_OPERANDS) * self.nd(b)
            + BLOCK_SAVED_ND_OPERANDS * self.operand(b)
            + BLOCK_SAVED_HIDDEN * self.hidden(b)
            + self.attention_saved(b, kernels)
    }
}

/// The step memory of `model` at micro-batch `micro` with `accum` micro-batches per step, with
/// `levers` pulled.
pub fn step_memory(model: &ModelConfig, micro: usize, accum: usize, levers: Levers) -> StepMemory {
    let b = micro as u64;
    let kernels = levers.kernels;
    let counts = analytic_params(model);
    let learnable = counts.learnable as u64 * F32;
    let (l, k) = (model.num_patches() as u64, model.num_visible() as u64);
    let pd = model.patch_dim() as u64;
    let act = levers.precision.bytes();
    let encoder = Stack {
        tokens: 1 + k,
        dim: model.dim as u64,
        heads: model.heads as u64,
        depth: model.depth as u64,
        hidden: (model.dim * model.mlp_ratio) as u64,
        act,
    };
    let decoder = Stack {
        tokens: 1 + l,
        dim: model.decoder_dim as u64,
        heads: model.decoder_heads as u64,
        depth: model.decoder_depth as u64,
        hidden: (model.decoder_dim * model.mlp_ratio) as u64,
        act,
    };
    let pixels = b * model.in_chans as u64 * (model.img_size as u64).pow(2) * F32;
    let patch_rows = b * l * pd * F32;
    let visible_rows = b * k * pd * F32;
    let wgsl = kernels == Kernels::Wgsl;
    // The embedding reads the image: its patches and the gathered rows, or with the WGSL gather
    // the rows alone. The loss keeps the prediction and its gradient, and on burn's ops the
    // norm-pix target, its normalised form, the difference and its square. (The CPU kernels keep
    // what burn's ops keep in a block: each layer's input, layer norm's statistics, the softmax
    // probabilities and GELU's input.)
    let (gather, loss) = if wgsl {
        (visible_rows, 2 * patch_rows)
    } else {
        (2 * patch_rows, 5 * patch_rows)
    };
    let scores = if wgsl {
        0
    } else {
        encoder.scores(b).max(decoder.scores(b))
    };
    // Outside the blocks: the embedding with position and cls, the final norm (4 encoder-wide);
    // the decoder embedding, mask tokens, the restored order with positions and the decoder
    // norm (8 decoder-wide).
    let (embed, bridge, head) = (
        gather + 2 * encoder.nd(b),
        2 * encoder.nd(b) + 5 * decoder.nd(b),
        loss + 3 * decoder.nd(b),
    );
    let (enc_block, dec_block) = (encoder.block(b, kernels), decoder.block(b, kernels));
    // In mixed precision every linear layer's weight is cast to f16 once per forward pass and
    // the copy kept for backward; with checkpointing only the stage being differentiated keeps
    // its copies (the graph-free forward keeps none).
    let weight_copies = match (levers.precision, levers.checkpointing) {
        (Precision::F32, _) => 0,
        (Precision::F16, false) => learnable * act / F32,
        (Precision::F16, true) => {
            let widest = model.dim.max(model.decoder_dim);
            block_params(widest, model.mlp_ratio) as u64 * act
        }
    };
    let activations = weight_copies
        + if levers.checkpointing {
            // Each stage's input (the encoder blocks' and the bridge's encoder-wide, the decoder
            // blocks' and the head's decoder-wide), the head's graph, then while one stage is
            // recomputed and differentiated its activations, its output and the incoming gradient.
            let inputs = (encoder.depth + 1) * encoder.nd(b) + (decoder.depth + 1) * decoder.nd(b);
            let stage = enc_block.max(dec_block).max(embed).max(bridge);
            pixels + inputs + head + stage + 2 * encoder.nd(b).max(decoder.nd(b))
        } else {
            pixels + encoder.depth * enc_block + decoder.depth * dec_block + embed + bridge + head
        };
    // At the peak: the gradient of the softmax output and of the scores of the last block
    // differentiated, next to the hidden-width gradients of its MLP. (The CPU attention kernel
    // differentiates one batch row and head at a time in a per-thread scratch.)
    let score_grads = if kernels == Kernels::Cpu {
        0
    } else {
        2 * scores
    };
    let params = (counts.learnable + counts.fixed) as u64 * F32;
    let stage_grads = largest_stage_params(model) * F32;
    // The host optimizer reads gradients back a bucket at a time, each bucket first joined
    // into one buffer on the device (whose page a memory pool then keeps).
    let readback = match (levers.host_optimizer(), levers.grads_on_host()) {
        (false, _) => 0,
        (true, true) => stage_grads.min(READBACK_BUCKET),
        (true, false) => learnable.min(READBACK_BUCKET),
    };
    let transient = score_grads + 2 * encoder.hidden(b).max(decoder.hidden(b)) + readback;
    // Gradients on the device. With the gradients summed on the host, each stage's are read
    // back as backward makes them, on a reader thread: a few stages' at a time. Accumulating
    // on the device keeps the running sums, and the staged backward adds each stage's new
    // gradients in at once: one stage's beside the sums.
    let host_optimizer = levers.host_optimizer();
    let grads = match (levers.grads_on_host(), accum > 1) {
        (true, _) => HOST_SUM_STAGES * stage_grads,
        (false, false) => learnable,
        (false, true) => learnable + stage_grads,
    };
    let optim_state = if host_optimizer { 0 } else { 2 * learnable };
    // On the host: the gradient sums, this rank's moments and master weights, and over
    // several ranks, while reducing and gathering, a padded copy of the sums and the gathered
    // parameters.
    let host = match (host_optimizer, levers.shards) {
        (false, _) => 0,
        (true, 1) => 4 * learnable,
        (true, n) => 3 * learnable + 3 * learnable.div_ceil(n as u64),
    };
    let (readback_per_micro_batch, upload_per_step) = match (host_optimizer, levers.grads_on_host())
    {
        (false, _) => (0, 0),
        (true, true) => (learnable, learnable),
        // The summed gradients read back once, counted with the upload.
        (true, false) => (0, 2 * learnable),
    };
    let largest = largest_tensor(model, &encoder, &decoder, b, pixels, levers);
    StepMemory {
        micro_batch: micro,
        params,
        grads,
        optim_state,
        activations,
        transient,
        total: params + grads + optim_state + activations + transient,
        largest,
        host,
        readback_per_micro_batch,
        upload_per_step,
    }
}

/// Values of the stage with the most parameters: an encoder or decoder block, the patch
/// embedding, the bridge (encoder norm, decoder embedding, mask token) or the head.
fn largest_stage_params(model: &ModelConfig) -> u64 {
    let (d, dd, p) = (model.dim, model.decoder_dim, model.patch_dim());
    [
        block_params(d, model.mlp_ratio),
        block_params(dd, model.mlp_ratio),
        p * d + 2 * d,
        2 * d + d * dd + 2 * dd,
        2 * dd + dd * p + p,
    ]
    .into_iter()
    .max()
    .unwrap_or(0) as u64
}

fn largest_tensor(
    model: &ModelConfig,
    enc: &Stack,
    dec: &Stack,
    b: u64,
    pixels: u64,
    levers: Levers,
) -> Tensor {
    let (d, dd) = (model.dim as u64, model.decoder_dim as u64);
    let pd = model.patch_dim() as u64;
    let materialised = u64::from(levers.kernels != Kernels::Wgsl);
    // Layers past the split threshold are computed in pieces (`model::block`): q, k and v
    // apart, the MLP's hidden activations over token pieces.
    let ops = levers.ops();
    let qkv = |s: &Stack| {
        let one = s.operand(b);
        if ops.pieces(3 * one) > 1 {
            one
        } else {
            3 * one
        }
    };
    let hidden = |s: &Stack| {
        let pieces = (ops.pieces(s.hidden(b)) as u64).min(s.tokens);
        s.hidden(b).div_ceil(s.tokens) * s.tokens.div_ceil(pieces)
    };
    let candidates = [
        ("encoder attention scores", materialised * enc.scores(b)),
        ("decoder attention scores", materialised * dec.scores(b)),
        (
            "patches",
            materialised * b * model.num_patches() as u64 * pd * F32,
        ),
        ("prediction", b * model.num_patches() as u64 * pd * F32),
        ("encoder MLP hidden", hidden(enc)),
        ("decoder MLP hidden", hidden(dec)),
        ("encoder qkv", qkv(enc)),
        ("decoder qkv", qkv(dec)),
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
    use crate::planner::levers::Offload;

    const REF: Levers = Levers {
        kernels: Kernels::Reference,
        checkpointing: false,
        max_tensor: None,
        shards: 1,
        offload: Offload::Off,
        precision: Precision::F32,
    };

    #[test]
    fn memory_grows_with_the_batch_and_parameters_do_not() {
        let cfg = Preset::VitB.config().model;
        let (m1, m8) = (step_memory(&cfg, 1, 1, REF), step_memory(&cfg, 8, 1, REF));
        assert_eq!(m1.params, m8.params);
        assert_eq!(m1.optim_state, 2 * m1.grads);
        assert!(m8.activations > 7 * m1.activations);
        assert!(m8.total > m1.total);
        // Accumulating: the running sums and one stage's new gradients (an encoder block's).
        let block = block_params(cfg.dim, cfg.mlp_ratio) as u64 * F32;
        assert_eq!(step_memory(&cfg, 8, 2, REF).grads, m8.grads + block);
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
            let m = step_memory(
                &preset.config().model,
                1,
                1,
                Levers {
                    kernels: Kernels::Wgsl,
                    checkpointing: false,
                    max_tensor: None,
                    shards: 1,
                    offload: Offload::Off,
                    precision: Precision::F32,
                },
            );
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
    fn f16_halves_the_operands_and_keeps_the_rest() {
        let cfg = Preset::VitB.config().model;
        let half = Levers {
            precision: Precision::F16,
            ..REF
        };
        let (f32, f16) = (step_memory(&cfg, 8, 1, REF), step_memory(&cfg, 8, 1, half));
        assert_eq!(
            (f16.params, f16.grads, f16.optim_state),
            (f32.params, f32.grads, f32.optim_state)
        );
        assert!(f16.activations < f32.activations);
        assert!(f16.activations > f32.activations / 2);
        assert!(f16.transient < f32.transient);
    }

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(128 << 20), "128.0 MiB");
        assert_eq!(fmt_bytes(3 << 29), "1.5 GiB");
    }
}
