//! The one typed run configuration: named presets, TOML files layered on top, CLI overrides last.
//!
//! Layering works on TOML values: the preset is serialised, the file's tables are merged into it
//! key by key, and the result is deserialised with unknown fields rejected, so a typo in a file is
//! an error naming the field rather than a silently ignored setting.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, SaplingError};

/// A named starting point for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// CPU-sized: 64 px, patch 8, 192 wide, 4 blocks. Trains in minutes on a laptop.
    Tiny,
    /// MAE paper ViT-B/16 at 224 px.
    VitB,
    /// MAE paper ViT-L/16 at 224 px.
    VitL,
    /// Sapiens 0.3B: 1024 px, patch 16, 1024 wide, 24 blocks.
    #[serde(rename = "sapiens-0.3b")]
    #[value(name = "sapiens-0.3b")]
    Sapiens03b,
    /// Sapiens 0.6B: 1280 wide, 32 blocks, head dim 80.
    #[serde(rename = "sapiens-0.6b")]
    #[value(name = "sapiens-0.6b")]
    Sapiens06b,
    /// Sapiens 1B: 1536 wide, 40 blocks, 24 heads.
    #[serde(rename = "sapiens-1b")]
    #[value(name = "sapiens-1b")]
    Sapiens1b,
    /// Sapiens 2B: 1920 wide, 48 blocks, 32 heads (head dim 60).
    #[serde(rename = "sapiens-2b")]
    #[value(name = "sapiens-2b")]
    Sapiens2b,
}

impl Preset {
    /// Every preset, in size order.
    pub const ALL: [Preset; 7] = [
        Preset::Tiny,
        Preset::VitB,
        Preset::VitL,
        Preset::Sapiens03b,
        Preset::Sapiens06b,
        Preset::Sapiens1b,
        Preset::Sapiens2b,
    ];
    /// Names as written in configs and on the command line.
    pub const NAMES: [&'static str; 7] = [
        "tiny",
        "vit-b",
        "vit-l",
        "sapiens-0.3b",
        "sapiens-0.6b",
        "sapiens-1b",
        "sapiens-2b",
    ];

    /// The preset's name as written in configs.
    pub fn name(self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|p| *p == self).expect("listed")]
    }

    /// Parses a preset name.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Self::ALL[i])
            .ok_or_else(|| SaplingError::UnknownPreset {
                name: name.to_string(),
                known: Self::NAMES.join(", "),
            })
    }

    /// The full configuration this preset stands for.
    pub fn config(self) -> Config {
        let sapiens = |dim, depth, heads| ModelConfig {
            img_size: 1024,
            patch_size: 16,
            dim,
            depth,
            heads,
            ..ModelConfig::mae_decoder()
        };
        let model = match self {
            Preset::Tiny => ModelConfig {
                img_size: 64,
                patch_size: 8,
                in_chans: 3,
                dim: 192,
                depth: 4,
                heads: 3,
                decoder_dim: 128,
                decoder_depth: 2,
                decoder_heads: 4,
                mlp_ratio: 4,
                mask_ratio: 0.75,
                norm_pix: true,
                layer_norm_eps: 1e-6,
                pos_embed: PosEmbed::Mae,
            },
            Preset::VitB => ModelConfig {
                dim: 768,
                depth: 12,
                heads: 12,
                ..ModelConfig::mae_decoder()
            },
            Preset::VitL => ModelConfig {
                dim: 1024,
                depth: 24,
                heads: 16,
                ..ModelConfig::mae_decoder()
            },
            Preset::Sapiens03b => sapiens(1024, 24, 16),
            Preset::Sapiens06b => sapiens(1280, 32, 16),
            Preset::Sapiens1b => sapiens(1536, 40, 24),
            Preset::Sapiens2b => sapiens(1920, 48, 32),
        };
        let mut train = match self {
            // Sized so the default `cargo run --release` finishes in minutes on two CPU cores.
            Preset::Tiny => TrainConfig {
                steps: Some(400),
                effective_batch: 32,
                ..TrainConfig::default()
            },
            // MAE's and Sapiens' recipe: 4096 images per optimizer step, reached with
            // accumulation on whatever micro-batch the device holds.
            _ => TrainConfig {
                effective_batch: 4096,
                ..TrainConfig::default()
            },
        };
        train.out = PathBuf::from("runs").join(self.name());
        let optim = match self {
            // A few hundred steps on a dozen photos: a short warmup and a higher base lr let the
            // loss move visibly; large presets keep the MAE recipe as is.
            Preset::Tiny => OptimConfig {
                base_lr: 1.5e-3,
                ..OptimConfig::default()
            },
            _ => OptimConfig::default(),
        };
        Config {
            preset: self,
            model,
            optim,
            data: DataConfig::default(),
            train,
        }
    }
}

/// Everything a run needs; written next to its outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The preset the values started from (informational once loaded).
    pub preset: Preset,
    pub model: ModelConfig,
    pub optim: OptimConfig,
    pub data: DataConfig,
    pub train: TrainConfig,
}

/// Shapes of the masked autoencoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Square input side in pixels.
    pub img_size: usize,
    /// Square patch side in pixels; `img_size` must be a multiple.
    pub patch_size: usize,
    /// Image channels: only 3 (RGB), the only layout the data pipeline decodes.
    pub in_chans: usize,
    /// Encoder width.
    pub dim: usize,
    /// Encoder blocks.
    pub depth: usize,
    /// Encoder attention heads.
    pub heads: usize,
    /// Decoder width.
    pub decoder_dim: usize,
    /// Decoder blocks.
    pub decoder_depth: usize,
    /// Decoder attention heads.
    pub decoder_heads: usize,
    /// MLP hidden width as a multiple of the block width.
    pub mlp_ratio: usize,
    /// Fraction of patches removed per sample.
    pub mask_ratio: f64,
    /// Normalise each target patch by its own mean and variance (MAE's `norm_pix_loss`).
    pub norm_pix: bool,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Which coordinate fills the first half of each fixed sin-cos position vector: `mae`
    /// (the patch's column, as MAE, timm and Hugging Face build it) or `mmpretrain` (its row, as
    /// mmpretrain and so Sapiens' released weights do). Set from the file by `--init-from`.
    #[serde(default)]
    pub pos_embed: PosEmbed,
}

/// The layout of the fixed 2-D sin-cos position tables (see `ModelConfig::pos_embed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PosEmbed {
    /// Column first: MAE's `get_2d_sincos_pos_embed`.
    #[default]
    Mae,
    /// Row first: mmpretrain's `build_2d_sincos_position_embedding`.
    Mmpretrain,
}

impl PosEmbed {
    /// The name used in configs.
    pub fn name(self) -> &'static str {
        match self {
            PosEmbed::Mae => "mae",
            PosEmbed::Mmpretrain => "mmpretrain",
        }
    }
}

impl ModelConfig {
    /// MAE's ViT-B at 224 px with the 512/8/16 decoder shared by MAE and Sapiens.
    fn mae_decoder() -> Self {
        ModelConfig {
            img_size: 224,
            patch_size: 16,
            in_chans: 3,
            dim: 768,
            depth: 12,
            heads: 12,
            decoder_dim: 512,
            decoder_depth: 8,
            decoder_heads: 16,
            mlp_ratio: 4,
            mask_ratio: 0.75,
            norm_pix: true,
            layer_norm_eps: 1e-6,
            pos_embed: PosEmbed::Mae,
        }
    }

    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.img_size / self.patch_size
    }

    /// Patches per image (`L`).
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    /// Values per patch: `p * p * C`.
    pub fn patch_dim(&self) -> usize {
        self.patch_size * self.patch_size * self.in_chans
    }

    /// Patches each sample keeps: `L - floor(L * mask_ratio)`.
    pub fn num_visible(&self) -> usize {
        let l = self.num_patches();
        l - (l as f64 * self.mask_ratio).floor() as usize
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        int_in("model.img_size", self.img_size, bounds::IMG_SIZE)?;
        int_in("model.patch_size", self.patch_size, bounds::IMG_SIZE)?;
        // Images are decoded as RGB, and the data streams and pictures hard-code three planes.
        if self.in_chans != 3 {
            return Err(SaplingError::config(
                "model.in_chans",
                format!("{} is not supported; only 3 (RGB) is", self.in_chans),
            ));
        }
        int_in("model.dim", self.dim, bounds::WIDTH)?;
        int_in("model.depth", self.depth, bounds::DEPTH)?;
        int_in("model.heads", self.heads, bounds::HEADS)?;
        int_in("model.decoder_dim", self.decoder_dim, bounds::WIDTH)?;
        int_in("model.decoder_depth", self.decoder_depth, bounds::DEPTH)?;
        int_in("model.decoder_heads", self.decoder_heads, bounds::HEADS)?;
        int_in("model.mlp_ratio", self.mlp_ratio, bounds::MLP_RATIO)?;
        float_in("model.mask_ratio", self.mask_ratio, bounds::FRACTION)?;
        float_in("model.layer_norm_eps", self.layer_norm_eps, bounds::EPS)?;
        self.validate_shapes()
    }

    /// The constraints between fields, once each is in range.
    fn validate_shapes(&self) -> Result<()> {
        if !self.img_size.is_multiple_of(self.patch_size) {
            return Err(SaplingError::config(
                "model.img_size",
                format!(
                    "{} is not a multiple of patch_size {}",
                    self.img_size, self.patch_size
                ),
            ));
        }
        for (field, dim, heads) in [
            ("model.dim", self.dim, self.heads),
            ("model.decoder_dim", self.decoder_dim, self.decoder_heads),
        ] {
            if !dim.is_multiple_of(heads) {
                return Err(SaplingError::config(
                    field,
                    format!("{dim} is not divisible by its {heads} heads"),
                ));
            }
            // The 2-D sin-cos embedding splits the width in halves, each in sin/cos halves.
            if !dim.is_multiple_of(4) {
                return Err(SaplingError::config(
                    field,
                    format!("{dim} must be a multiple of 4 for the 2-D sin-cos position embedding"),
                ));
            }
        }
        self.validate_sizes()?;
        if self.num_visible() == self.num_patches() {
            return Err(SaplingError::config(
                "model.mask_ratio",
                format!(
                    "{} masks no patch of {}; the loss would be empty",
                    self.mask_ratio,
                    self.num_patches()
                ),
            ));
        }
        Ok(())
    }
}

impl ModelConfig {
    /// Each field can be in range while their products describe tensors no machine holds
    /// (4096 px at patch 1 is 16.7 M tokens, and a position table of them at width 16384 a
    /// terabyte, built before any memory check): the derived sizes are bounded too.
    fn validate_sizes(&self) -> Result<()> {
        let tokens = self.num_patches() as u64;
        if tokens > bounds::TOKENS {
            return Err(SaplingError::config(
                "model.patch_size",
                format!(
                    "{} px at patch {} is {tokens} patches per image, more than {}; use a \
                     larger patch_size or a smaller img_size",
                    self.img_size,
                    self.patch_size,
                    bounds::TOKENS
                ),
            ));
        }
        let (d, dd, p) = (
            self.dim as u64,
            self.decoder_dim as u64,
            self.patch_dim() as u64,
        );
        let hidden = |w: u64| w * w * self.mlp_ratio as u64;
        let tensors = [
            ("the position table", (tokens + 1) * d.max(dd)),
            ("the patch embedding", p * d),
            ("the prediction head", p * dd),
            ("an encoder MLP weight", hidden(d)),
            ("a decoder MLP weight", hidden(dd)),
            ("an attention qkv weight", 3 * d.max(dd) * d.max(dd)),
        ];
        for (what, elements) in tensors {
            if elements > bounds::TENSOR_ELEMENTS {
                return Err(SaplingError::config(
                    "model",
                    format!(
                        "{what} would hold {elements} values, more than the {} of any tensor \
                         sapling builds; the widths, patch size and image size together are \
                         too large",
                        bounds::TENSOR_ELEMENTS
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// AdamW, clipping and the learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Learning rate at `lr_base_batch`; the run uses `base_lr * effective_batch / lr_base_batch`.
    pub base_lr: f64,
    /// Batch size `base_lr` refers to (MAE 256, Sapiens 4096).
    pub lr_base_batch: usize,
    /// Floor of the cosine decay.
    pub min_lr: f64,
    /// Warmup length in optimizer steps; when absent, `warmup_fraction` of the run.
    pub warmup_steps: Option<u64>,
    /// Warmup as a fraction of all steps (MAE: 40 of 800 epochs).
    pub warmup_fraction: f64,
    /// Warmup starts at this fraction of the peak lr (MAE 0, Sapiens 1e-4).
    pub warmup_start_factor: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Global gradient-norm clip (Sapiens 1.0); 0 turns clipping off.
    pub clip_grad: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            base_lr: 1.5e-4,
            lr_base_batch: 256,
            min_lr: 0.0,
            warmup_steps: None,
            warmup_fraction: 0.05,
            warmup_start_factor: 0.0,
            weight_decay: 0.05,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            clip_grad: 1.0,
        }
    }
}

impl OptimConfig {
    fn validate(&self) -> Result<()> {
        float_in("optim.base_lr", self.base_lr, bounds::LR)?;
        int_in("optim.lr_base_batch", self.lr_base_batch, bounds::BATCH)?;
        float_in("optim.min_lr", self.min_lr, bounds::LR_FLOOR)?;
        if let Some(w) = self.warmup_steps {
            int_in("optim.warmup_steps", w, bounds::STEPS_OR_NONE)?;
        }
        let (fraction, start) = (self.warmup_fraction, self.warmup_start_factor);
        float_in("optim.warmup_fraction", fraction, bounds::FRACTION)?;
        float_in("optim.warmup_start_factor", start, bounds::UNIT)?;
        float_in("optim.weight_decay", self.weight_decay, bounds::DECAY)?;
        float_in("optim.beta1", self.beta1, bounds::FRACTION)?;
        float_in("optim.beta2", self.beta2, bounds::FRACTION)?;
        float_in("optim.eps", self.eps, bounds::EPS)?;
        float_in("optim.clip_grad", self.clip_grad, bounds::CLIP_GRAD)
    }
}

/// Where images come from and how they are augmented.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Image folder (searched recursively); absent uses the images embedded in the binary.
    pub dir: Option<PathBuf>,
    /// Decoding threads.
    pub workers: usize,
    /// Batches decoded ahead of the device.
    pub prefetch: usize,
    /// Samples each rank holds to shuffle shards' samples (WebDataset's shuffle buffer; timm
    /// uses 8192): memory is this times the mean encoded image size.
    pub shuffle_buffer: usize,
    /// RandomResizedCrop area range, as fractions of the image.
    pub crop_scale: [f64; 2],
    /// RandomResizedCrop aspect-ratio range.
    pub crop_ratio: [f64; 2],
    /// Probability of a horizontal flip.
    pub hflip: f64,
    /// Per-channel mean on the 0–1 scale (ImageNet).
    pub mean: [f32; 3],
    /// Per-channel standard deviation on the 0–1 scale (ImageNet).
    pub std: [f32; 3],
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dir: None,
            workers: 2,
            prefetch: 4,
            shuffle_buffer: 4096,
            crop_scale: [0.2, 1.0],
            crop_ratio: [3.0 / 4.0, 4.0 / 3.0],
            hflip: 0.5,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }
}

impl DataConfig {
    fn validate(&self) -> Result<()> {
        int_in("data.workers", self.workers, bounds::WORKERS)?;
        int_in("data.prefetch", self.prefetch, bounds::PREFETCH)?;
        int_in(
            "data.shuffle_buffer",
            self.shuffle_buffer,
            bounds::SHUFFLE_BUFFER,
        )?;
        for (field, [lo, hi], range) in [
            ("data.crop_scale", self.crop_scale, bounds::CROP_SCALE),
            ("data.crop_ratio", self.crop_ratio, bounds::CROP_RATIO),
        ] {
            float_in(&format!("{field}[0]"), lo, range)?;
            float_in(&format!("{field}[1]"), hi, range)?;
            if lo > hi {
                return Err(SaplingError::config(
                    field,
                    format!("[{lo}, {hi}]: the first (min) must not exceed the second (max)"),
                ));
            }
        }
        float_in("data.hflip", self.hflip, bounds::UNIT)?;
        for c in 0..3 {
            float_in(&format!("data.mean[{c}]"), self.mean[c], bounds::UNIT)?;
            float_in(&format!("data.std[{c}]"), self.std[c], bounds::EPS)?;
        }
        Ok(())
    }
}

/// Which device runs the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceChoice {
    /// A hardware WebGPU adapter if there is one, else the CPU (Flex).
    Auto,
    /// The WebGPU path even on a software adapter (lavapipe, SwiftShader).
    Wgpu,
    /// Burn's Flex CPU backend.
    Cpu,
}

/// Which implementation of the hot operations a run asks for; `ops::Kernels` is what it
/// resolves to on the run's device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelChoice {
    /// What was measured to pay off on the run's device: sapling's CPU kernels on Flex, burn's
    /// ops on wgpu (there burn fuses the element-wise ops itself, and the WGSL kernels saved
    /// memory but no time on the adapters measured so far).
    #[default]
    Auto,
    /// burn's generic ops composed as in the model code, on every device: the reference.
    Reference,
    /// sapling's WGSL kernels (wgpu devices only).
    Wgsl,
    /// sapling's Rust kernels for burn's Flex CPU backend (Flex only).
    Cpu,
}

impl KernelChoice {
    /// Every choice, as written in configs and on the command line.
    pub const NAMES: [&'static str; 4] = ["auto", "reference", "wgsl", "cpu"];
    const ALL: [KernelChoice; 4] = [
        KernelChoice::Auto,
        KernelChoice::Reference,
        KernelChoice::Wgsl,
        KernelChoice::Cpu,
    ];

    /// The lowercase name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|k| *k == self).expect("listed")]
    }
}

impl std::fmt::Display for KernelChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KernelChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Self::ALL[i])
            .ok_or_else(|| {
                format!("unknown kernel path `{s}`: use `auto`, `reference`, `wgsl` or `cpu`")
            })
    }
}

/// Length, batching and bookkeeping of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimizer steps; exactly one of `steps` and `epochs` is set.
    pub steps: Option<u64>,
    /// Passes over the data, converted to steps with the effective batch.
    pub epochs: Option<f64>,
    /// Images per forward/backward (micro-batch): `auto` is planned on the device, a number
    /// is used as is (it must divide `effective_batch`).
    pub batch_size: BatchSize,
    /// Images per optimizer step; the learning rate scales from it, and the micro-batch is
    /// accumulated `effective_batch / micro-batch` times to reach it.
    pub effective_batch: usize,
    /// Device memory the batch planner may use, in MiB; absent: the memory the device reports
    /// (host memory for Flex and CPU adapters), or 4096 where WebGPU does not say.
    pub memory_budget_mib: Option<u64>,
    pub seed: u64,
    pub device: DeviceChoice,
    /// Output folder: config, metrics, checkpoints.
    pub out: PathBuf,
    /// Optimizer steps between metric lines.
    pub log_every: u64,
    /// Optimizer steps between checkpoints (one is always written at the end).
    pub checkpoint_every: u64,
    /// Checkpoints kept; older ones are deleted once a newer one is complete.
    pub keep_checkpoints: usize,
    /// Optimizer steps between reconstruction pictures in `OUT/recon/` (0 turns them off).
    pub recon_every: u64,
    /// Size of the gradient buckets read back and all-reduced together across MPI ranks.
    pub allreduce_bucket_mib: u64,
    /// Read the next bucket back while MPI reduces the current one.
    pub allreduce_overlap: bool,
    /// `auto` (what pays off on the device: `cpu` on Flex, `wgsl` on wgpu), `reference`
    /// (burn's ops everywhere), `wgsl` (sapling's kernels for the patch gather, the norm-pix
    /// loss and attention; wgpu devices only) or `cpu` (sapling's linear, layer norm,
    /// attention, GELU and AdamW; Flex only).
    #[serde(default)]
    pub kernels: KernelChoice,
    /// `off` (every activation kept for backward), `blocks` (only each transformer block's input
    /// kept, the block recomputed during backward: less memory, a second forward pass) or
    /// `auto` (the batch planner uses it only for a micro-batch that does not fit without).
    #[serde(default)]
    pub activation_checkpointing: Checkpointing,
    /// `true` (each MPI rank keeps and updates 1/N of AdamW's moments and master weights, on
    /// the host, and gradients are summed on the host: ZeRO stage 1), `false`, or `"auto"`
    /// (sharded when more than one rank runs and the planner needs it for a micro-batch to fit).
    #[serde(default)]
    pub shard_optimizer: Switch,
    /// `true` (AdamW's moments and f32 master weights on the host, updated there by the fused
    /// CPU AdamW on every core; each micro-batch's gradients read back and summed on the
    /// host, so the device holds the weights and one stage's gradients: ZeRO-Offload),
    /// `false`, or `"auto"` (offloaded only when a micro-batch does not fit otherwise). Under
    /// MPI the offloaded optimizer is the sharded one: each rank offloads its shard.
    #[serde(default)]
    pub offload_optimizer: Switch,
    /// `f32`, `f16` (mixed precision: matmuls and activations in half precision, master
    /// weights, AdamW, layer norm, softmax and the loss in f32, the loss scaled dynamically;
    /// WebGPU adapters with `shader-f16` only) or `auto` (f16 where the adapter has
    /// `shader-f16`, f32 elsewhere).
    #[serde(default)]
    pub precision: PrecisionChoice,
    /// Weights to start from instead of MAE's initialisation: a MAE, Sapiens, timm or Hugging
    /// Face checkpoint (`.pth` or `.safetensors`), or a file `sapling export` wrote. Only a
    /// fresh run reads it; a resumed run continues from its checkpoint.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// Write TensorBoard event files into the output folder as the run goes (scalars, the
    /// reconstruction pictures, the config), to watch runs with `tensorboard --logdir runs`.
    #[serde(default = "yes")]
    pub tensorboard: bool,
    /// Optimizer steps between k-NN evaluations of the encoder on `knn_data` (0: none), logged
    /// in the metrics as `knn_top1`.
    #[serde(default)]
    pub knn_every: u64,
    /// Labelled held-out data for the k-NN monitor: an IDX data set folder, or a folder with
    /// train/ and val/ (or test/) holding one folder of images per class.
    #[serde(default)]
    pub knn_data: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

/// A lever a run turns on, off, or leaves to the batch planner (`train.shard_optimizer`,
/// `train.offload_optimizer`); written `true`, `false` or `"auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Switch {
    Off,
    On,
    /// On only where the planner needs it for a micro-batch to fit.
    #[default]
    Auto,
}

impl Serialize for Switch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Switch::Off => s.serialize_bool(false),
            Switch::On => s.serialize_bool(true),
            Switch::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for Switch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Switch;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false or \"auto\"")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> std::result::Result<Switch, E> {
                Ok(if v { Switch::On } else { Switch::Off })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Switch, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl std::str::FromStr for Switch {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "true" | "on" => Ok(Switch::On),
            "false" | "off" => Ok(Switch::Off),
            "auto" => Ok(Switch::Auto),
            other => Err(format!("`{other}` is not true, false or auto")),
        }
    }
}

/// The arithmetic a run asks for; `ops::Precision` is what it resolves to on the run's device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionChoice {
    /// Everything in f32.
    #[default]
    F32,
    /// Mixed precision with f16 (see `TrainConfig::precision`).
    F16,
    /// f16 where the WebGPU adapter has `shader-f16`, f32 elsewhere (and on the CPU).
    Auto,
}

impl PrecisionChoice {
    /// The lowercase name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PrecisionChoice::F32 => "f32",
            PrecisionChoice::F16 => "f16",
            PrecisionChoice::Auto => "auto",
        }
    }
}

/// Whether a step keeps every activation for backward or recomputes each block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Checkpointing {
    /// Every activation autodiff needs is kept.
    Off,
    /// Only block inputs are kept; each block's forward runs again in backward.
    Blocks,
    /// Off, unless the planner needs it for a micro-batch to fit.
    #[default]
    Auto,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: Some(1000),
            epochs: None,
            batch_size: BatchSize::Auto,
            effective_batch: 32,
            memory_budget_mib: None,
            seed: 0,
            device: DeviceChoice::Auto,
            out: PathBuf::from("runs/default"),
            log_every: 10,
            checkpoint_every: 200,
            keep_checkpoints: 3,
            recon_every: 100,
            allreduce_bucket_mib: 25,
            allreduce_overlap: true,
            kernels: KernelChoice::Auto,
            activation_checkpointing: Checkpointing::Auto,
            shard_optimizer: Switch::Auto,
            offload_optimizer: Switch::Auto,
            precision: PrecisionChoice::F32,
            init_from: None,
            tensorboard: true,
            knn_every: 0,
            knn_data: None,
        }
    }
}

impl TrainConfig {
    /// Optimizer steps for a dataset of `len` images.
    pub fn total_steps(&self, len: usize) -> u64 {
        match (self.steps, self.epochs) {
            (Some(s), _) => s,
            (None, Some(e)) => ((e * len as f64) / self.effective_batch as f64).ceil() as u64,
            (None, None) => 0,
        }
    }

    fn validate(&self) -> Result<()> {
        match (self.steps, self.epochs) {
            (Some(_), Some(_)) => Err(SaplingError::config(
                "train.steps",
                "set either steps or epochs, not both",
            )),
            (None, None) => Err(SaplingError::config("train.steps", "set steps or epochs")),
            (Some(s), None) => int_in("train.steps", s, bounds::STEPS),
            (None, Some(e)) => float_in("train.epochs", e, bounds::EPOCHS),
        }?;
        int_in("train.effective_batch", self.effective_batch, bounds::BATCH)?;
        if let BatchSize::Fixed(b) = self.batch_size {
            int_in("train.batch_size", b, bounds::BATCH)?;
            self.check_divides(b)?;
        }
        if let Some(m) = self.memory_budget_mib {
            int_in("train.memory_budget_mib", m, bounds::MEMORY_MIB)?;
        }
        // `seed` is not checked: every u64 is a seed.
        int_in("train.log_every", self.log_every, bounds::STEPS)?;
        int_in(
            "train.checkpoint_every",
            self.checkpoint_every,
            bounds::STEPS,
        )?;
        int_in(
            "train.keep_checkpoints",
            self.keep_checkpoints,
            bounds::KEEP,
        )?;
        int_in("train.recon_every", self.recon_every, bounds::STEPS_OR_NONE)?;
        int_in("train.knn_every", self.knn_every, bounds::STEPS_OR_NONE)?;
        if self.knn_every > 0 && self.knn_data.is_none() {
            return Err(SaplingError::config(
                "train.knn_data",
                "train.knn_every asks for k-NN evaluations: name the labelled data to evaluate \
                 on (an IDX folder, or train/ and val/ folders of class folders)",
            ));
        }
        int_in(
            "train.allreduce_bucket_mib",
            self.allreduce_bucket_mib,
            bounds::BUCKET_MIB,
        )
    }

    /// A fixed micro-batch must reach the effective batch in whole accumulation steps.
    fn check_divides(&self, b: usize) -> Result<()> {
        if self.effective_batch.is_multiple_of(b) {
            return Ok(());
        }
        let fits = largest_divisor_at_most(self.effective_batch, b);
        Err(SaplingError::config(
            "train.batch_size",
            format!(
                "{b} does not divide train.effective_batch {e}, so no whole number of \
                 accumulation steps reaches it; use {fits} ({}), \"auto\", or change \
                 effective_batch",
                accumulation_steps(self.effective_batch / fits),
                e = self.effective_batch
            ),
        ))
    }
}

impl Config {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        self.optim.validate()?;
        self.data.validate()?;
        self.train.validate()
    }

    /// Loads a TOML file on top of the preset it names (`preset = "..."`), or on top of `base`.
    pub fn from_toml_file(path: &Path, base: Preset) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| SaplingError::ConfigFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_toml_str(&text, base).map_err(|e| match e {
            SaplingError::ConfigFile { message, .. } => SaplingError::ConfigFile {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text layered over a preset; see [`Config::from_toml_file`].
    pub fn from_toml_str(text: &str, base: Preset) -> Result<Config> {
        let file_err = |message: String| SaplingError::ConfigFile {
            path: PathBuf::from("<inline>"),
            message,
        };
        let file: toml::Table = toml::from_str(text).map_err(|e| file_err(e.to_string()))?;
        let preset = match file.get("preset") {
            Some(toml::Value::String(name)) => Preset::from_name(name)?,
            Some(_) => return Err(SaplingError::config("preset", "must be a string")),
            None => base,
        };
        let mut merged = toml::Table::try_from(preset.config())
            .map_err(|e| file_err(format!("internal: preset does not serialise: {e}")))?;
        // A file that gives the run length one way replaces the preset's other way.
        if let (Some(toml::Value::Table(file_train)), Some(toml::Value::Table(train))) =
            (file.get("train"), merged.get_mut("train"))
        {
            for (given, other) in [("epochs", "steps"), ("steps", "epochs")] {
                if file_train.contains_key(given) && !file_train.contains_key(other) {
                    train.remove(other);
                }
            }
        }
        merge(&mut merged, file);
        let config: Config = toml::Value::Table(merged)
            .try_into()
            // toml names the field on a second line; one line reads better after the file's.
            .map_err(|e: toml::de::Error| file_err(e.to_string().trim_end().replace('\n', " ")))?;
        config.validate()?;
        Ok(config)
    }

    /// The config as TOML, as written next to a run's outputs.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }
}

/// The micro-batch: planned on the device, or given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchSize {
    /// Chosen by the batch planner from the device's limits and trial steps.
    #[default]
    Auto,
    Fixed(usize),
}

impl std::fmt::Display for BatchSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchSize::Auto => f.write_str("auto"),
            BatchSize::Fixed(b) => write!(f, "{b}"),
        }
    }
}

impl std::str::FromStr for BatchSize {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "auto" {
            return Ok(BatchSize::Auto);
        }
        s.parse()
            .map(BatchSize::Fixed)
            .map_err(|_| format!("`{s}` is neither \"auto\" nor a whole number"))
    }
}

impl Serialize for BatchSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            BatchSize::Auto => s.serialize_str("auto"),
            BatchSize::Fixed(b) => s.serialize_u64(*b as u64),
        }
    }
}

impl<'de> Deserialize<'de> for BatchSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = BatchSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"auto\" or a whole number of images")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<BatchSize, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<BatchSize, E> {
                Ok(BatchSize::Fixed(v as usize))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<BatchSize, E> {
                usize::try_from(v)
                    .map(BatchSize::Fixed)
                    .map_err(|_| E::custom(format!("{v} is negative")))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// "1 accumulation step", "4 accumulation steps".
pub fn accumulation_steps(n: usize) -> String {
    format!("{n} accumulation step{}", if n == 1 { "" } else { "s" })
}

/// The largest divisor of `n` that is at most `cap` (at least 1).
pub fn largest_divisor_at_most(n: usize, cap: usize) -> usize {
    (1..=cap.min(n))
        .rev()
        .find(|d| n.is_multiple_of(*d))
        .unwrap_or(1)
}

/// What each numeric field accepts: far beyond any published recipe, yet finite and small
/// enough that nothing downstream overflows, allocates without end or runs for ever on a typo.
mod bounds {
    use std::ops::RangeInclusive;

    use super::{Interval, closed, open_high, open_low};

    pub const IMG_SIZE: RangeInclusive<u64> = 1..=4096;
    /// Patches per image: 4096 px at patch 16 (Sapiens at 1024 px has 4096).
    pub const TOKENS: u64 = 1 << 16;
    /// Values in one weight or table: 8 GiB in f32, past WebGPU's largest buffers.
    pub const TENSOR_ELEMENTS: u64 = 1 << 31;
    /// Encoder and decoder widths (the 2B Sapiens is 1920 wide).
    pub const WIDTH: RangeInclusive<u64> = 1..=16384;
    pub const DEPTH: RangeInclusive<u64> = 1..=512;
    pub const HEADS: RangeInclusive<u64> = 1..=512;
    pub const MLP_RATIO: RangeInclusive<u64> = 1..=64;
    /// Micro-batch, effective batch and the lr's reference batch.
    pub const BATCH: RangeInclusive<u64> = 1..=1 << 20;
    /// Run lengths and intervals between logs and checkpoints.
    pub const STEPS: RangeInclusive<u64> = 1..=1_000_000_000;
    /// Where 0 is documented: no warmup, no reconstruction pictures.
    pub const STEPS_OR_NONE: RangeInclusive<u64> = 0..=1_000_000_000;
    /// 16 TiB.
    pub const MEMORY_MIB: RangeInclusive<u64> = 1..=1 << 24;
    pub const KEEP: RangeInclusive<u64> = 1..=10_000;
    /// Shifted left by 20 into bytes, so it must stay far from the top of `u64`.
    pub const BUCKET_MIB: RangeInclusive<u64> = 1..=16384;
    pub const WORKERS: RangeInclusive<u64> = 1..=256;
    /// Each prefetched batch is a whole micro-batch of decoded pixels held in memory.
    pub const PREFETCH: RangeInclusive<u64> = 1..=64;
    /// A million samples of ~110 KB would be ~110 GB of host memory: past that is a typo.
    pub const SHUFFLE_BUFFER: RangeInclusive<u64> = 1..=1 << 20;

    /// Fractions that must leave something: mask ratio, warmup fraction, Adam's betas.
    pub const FRACTION: Interval = open_high(0.0, 1.0);
    /// Probabilities and factors.
    pub const UNIT: Interval = closed(0.0, 1.0);
    /// Positive constants a division relies on: epsilons, pixel standard deviations.
    pub const EPS: Interval = open_low(0.0, 1.0);
    pub const LR: Interval = open_low(0.0, 10.0);
    pub const LR_FLOOR: Interval = closed(0.0, 10.0);
    pub const DECAY: Interval = closed(0.0, 10.0);
    /// 0 is the documented "off"; a huge threshold is an "off" spelled by mistake.
    pub const CLIP_GRAD: Interval = closed(0.0, 1e6);
    pub const EPOCHS: Interval = open_low(0.0, 1e5);
    /// A crop keeps a positive share of the image, at most all of it.
    pub const CROP_SCALE: Interval = open_low(0.0, 1.0);
    pub const CROP_RATIO: Interval = closed(0.01, 100.0);
}

/// A finite interval of accepted values, closed or open at each end.
#[derive(Debug, Clone, Copy)]
struct Interval {
    lo: f64,
    hi: f64,
    lo_open: bool,
    hi_open: bool,
}

impl Interval {
    /// False for NaN and both infinities, since both ends are finite.
    fn contains(self, x: f64) -> bool {
        let above = x > self.lo || (!self.lo_open && x == self.lo);
        let below = x < self.hi || (!self.hi_open && x == self.hi);
        above && below
    }
}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (open, close) = (
            if self.lo_open { '(' } else { '[' },
            if self.hi_open { ')' } else { ']' },
        );
        write!(f, "{open}{:?}, {:?}{close}", self.lo, self.hi)
    }
}

/// `[lo, hi]`.
const fn closed(lo: f64, hi: f64) -> Interval {
    Interval {
        lo,
        hi,
        lo_open: false,
        hi_open: false,
    }
}

/// `(lo, hi]`.
const fn open_low(lo: f64, hi: f64) -> Interval {
    Interval {
        lo_open: true,
        ..closed(lo, hi)
    }
}

/// `[lo, hi)`.
const fn open_high(lo: f64, hi: f64) -> Interval {
    Interval {
        hi_open: true,
        ..closed(lo, hi)
    }
}

/// `value` must lie in `range`.
fn float_in(field: &str, value: impl Into<f64>, range: Interval) -> Result<()> {
    let value = value.into();
    if range.contains(value) {
        return Ok(());
    }
    Err(SaplingError::config(
        field,
        format!("{value:?} is outside {range}; set a number in that interval"),
    ))
}

/// `value` must lie in `range` (inclusive).
fn int_in<T>(field: &str, value: T, range: RangeInclusive<u64>) -> Result<()>
where
    T: TryInto<u64> + Copy + std::fmt::Display,
{
    if value.try_into().is_ok_and(|v| range.contains(&v)) {
        return Ok(());
    }
    Err(SaplingError::config(
        field,
        format!(
            "{value} is outside [{}, {}]; set a whole number in that range",
            range.start(),
            range.end()
        ),
    ))
}

/// Overlays `top` on `base`: tables merge key by key, any other value replaces.
fn merge(base: &mut toml::Table, top: toml::Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => merge(b, t),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}
