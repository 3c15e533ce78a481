//! The command line: clap definitions and the resolution of flags into a [`Config`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::checkpoint::{self, Loaded};
use crate::config::{
    BatchSize, Checkpointing, Config, DeviceChoice, KernelChoice, PrecisionChoice, Preset, Switch,
};
use crate::error::{Result, SaplingError};
use crate::eval::probe::Pool;
use crate::layout::Layout;
use crate::ops::Precision;

/// Masked-autoencoder pretraining of vision transformers on any GPU through WebGPU.
#[derive(Debug, Parser)]
#[command(name = "sapling", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do; with none, `train` runs with its defaults.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pretrain an MAE (the default: `tiny` on the embedded photos).
    Train(TrainCommandArgs),
    /// List the WebGPU adapters, their API, type and limits, and what to install where no GPU
    /// is found.
    Info(InfoArgs),
    /// Draw original | masked | reconstruction | pasted for one image through a checkpoint.
    Reconstruct(ReconstructArgs),
    /// Show the device's limits and the batch plan: micro-batch, accumulation, learning rate,
    /// predicted memory, from the memory model and real trial steps.
    #[command(name = "probe")]
    Plan(PlanArgs),
    /// Plan for hardware that is not here (no device used): for every combination of memory
    /// levers, the largest micro-batch that fits, its peak and its largest single tensor.
    #[command(name = "plan")]
    Hypothetical(HypotheticalArgs),
    /// Benchmarks (figures side by side in one run).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Evaluate a checkpoint or a weights file.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Write a checkpoint's encoder (or whole MAE) as safetensors in timm's, Hugging Face's or
    /// mmpretrain's layout.
    Export(ExportArgs),
    /// Draw the loss curves of several runs in one PNG, labelled by folder name.
    Plot(PlotArgs),
    /// Prepare training data.
    #[command(subcommand)]
    Data(DataCommand),
}

/// Data preparation.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Write an image folder (recursive) or IDX files as WebDataset tar shards, resized so the
    /// short side is at most --max-side, with sizes.json giving each shard's sample count.
    Pack(PackArgs),
}

/// Flags of `sapling data pack`.
#[derive(Debug, Args)]
pub struct PackArgs {
    /// An image folder (searched recursively) or a folder of IDX files.
    #[arg(long)]
    pub data: PathBuf,
    /// Folder for the shards; it must be empty or new (or hold an earlier pack, with --overwrite).
    #[arg(long)]
    pub out: PathBuf,
    /// Largest shard, e.g. 1GiB, 500MB, 64MiB.
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    pub shard_size: u64,
    /// Largest short side in pixels: larger images are shrunk (Sapiens trains at 1024).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..=16384))]
    pub max_side: u32,
    /// JPEG quality of images that are re-encoded (JPEGs that need no resize are kept as they are).
    #[arg(long, default_value_t = 95, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: u8,
    /// Encoding threads [default: all cores].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Replace the shards of an earlier pack in --out.
    #[arg(long)]
    pub overwrite: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `1GiB`, `500MB`, `64MiB`, `4096` (bytes) as a byte count of at least 1 MiB.
fn parse_bytes(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}`: give a size such as 1GiB, 500MB or 64MiB"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => (1u64 << 20) as f64,
        "g" | "gb" => 1e9,
        "gib" => (1u64 << 30) as f64,
        "t" | "tb" => 1e12,
        "tib" => (1u64 << 40) as f64,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}`; use B, KiB, MiB, GiB, KB, MB or GB"
            ));
        }
    };
    let bytes = number * scale;
    if !(bytes >= (1u64 << 20) as f64 && bytes <= (1u64 << 50) as f64) {
        return Err(format!(
            "`{text}`: a shard size must be between 1 MiB and 1 PiB"
        ));
    }
    Ok(bytes as u64)
}

/// Flags of `sapling info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Print the adapters as one JSON array.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `sapling plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Run folders (each with its metrics.jsonl).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Output PNG.
    #[arg(long, default_value = "losses.png")]
    pub out: PathBuf,
}

/// Flags of `sapling reconstruct`.
#[derive(Debug, Args)]
pub struct ReconstructArgs {
    #[command(flatten)]
    pub weights: WeightsArgs,
    /// Image file (jpg, png, webp).
    #[arg(long)]
    pub image: PathBuf,
    /// Fraction of patches to remove [default: the model's].
    #[arg(long)]
    pub mask_ratio: Option<f64>,
    /// Seed of the mask.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output PNG.
    #[arg(long, default_value = "reconstruction.png")]
    pub out: PathBuf,
}

/// Flags of `sapling export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Checkpoint folder (OUT/checkpoints/step-N).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output file, e.g. encoder.safetensors.
    #[arg(long)]
    pub out: PathBuf,
    /// Element type of the written tensors: `f32` (as trained), or `f16` (half the size).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub dtype: Precision,
    /// Names and layout: timm's ViT (`timm`), Hugging Face's ViTMAE (`hf`: `ViTMAEModel`, or
    /// with the decoder `ViTMAEForPreTraining`) or mmpretrain's, as Sapiens (`mmpretrain`).
    #[arg(long, value_enum, default_value_t = Layout::Timm)]
    pub format: Layout,
    /// Write the decoder too (the whole MAE), not only the encoder.
    #[arg(long)]
    pub with_decoder: bool,
}

/// Flags of `sapling bench import`.
#[derive(Debug, Args)]
pub struct BenchImportArgs {
    /// The weights file.
    #[arg(long, value_name = "FILE")]
    pub weights: PathBuf,
    /// The model it goes into [default: the preset its shapes are].
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
}

/// Where `reconstruct` and `eval` take their model from: a sapling checkpoint, or a weights
/// file (MAE, Sapiens, timm, Hugging Face, `sapling export`) with the preset it is.
#[derive(Debug, Args)]
pub struct WeightsArgs {
    /// Checkpoint folder (OUT/checkpoints/step-N).
    #[arg(long, required_unless_present = "weights", conflicts_with = "weights")]
    pub checkpoint: Option<PathBuf>,
    /// A weights file instead of a checkpoint (`.pth` or `.safetensors`).
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// The model of --weights [default: the preset its shapes are].
    #[arg(long, value_enum, requires = "weights")]
    pub preset: Option<Preset>,
}

/// Flags of `sapling plan`: the run's flags (`--preset`, `--config`, `--effective-batch`,
/// `--memory-budget`, `--device cpu` for a CPU, ...) plus the hardware planned for.
#[derive(Debug, Args)]
pub struct HypotheticalArgs {
    #[command(flatten)]
    pub run: TrainArgs,
    /// MPI ranks sharing the effective batch.
    #[arg(long, default_value_t = 1)]
    pub ranks: usize,
    /// The GPU's storage-binding limit in MiB (WebGPU's default is 128; desktop GPUs allow
    /// 2048 or more when asked).
    #[arg(long, value_name = "MIB", default_value_t = 128)]
    pub binding: u64,
    /// Host memory of the machine planned for, in MiB, for an offloaded or sharded
    /// optimizer's host side (default: this machine's available memory).
    #[arg(long, value_name = "MIB")]
    pub host_memory: Option<u64>,
    /// Print the table as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `sapling probe` (the batch planner): the run's flags (the plan is the one `train`
/// would make) plus how much to try.
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub run: TrainArgs,
    /// Most micro-batch sizes to run for real (0: memory model only).
    #[arg(long, default_value_t = 6)]
    pub trial_sizes: usize,
    /// Timed steps per size, after a warm-up step.
    #[arg(long, default_value_t = 5)]
    pub trial_steps: usize,
    /// Pretend the adapter's storage-binding limit is this many MiB.
    #[arg(long, value_name = "MIB")]
    pub simulate_binding: Option<u64>,
    /// Plan as one of this many MPI ranks (each takes its share of the effective batch, and
    /// the optimizer may be sharded; trial steps of a sharded plan run alone, with the whole
    /// optimizer on this host).
    #[arg(long, default_value_t = 1)]
    pub ranks: usize,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Import a weights file (MAE, Sapiens, timm, Hugging Face) onto the CPU, phase by phase.
    Import(BenchImportArgs),
    /// One training step: images/s, forward / backward / optimizer time, FLOPs, peak memory.
    Step(BenchStepArgs),
    /// Each of sapling's kernels on the device (WGSL on wgpu, Rust on the CPU) against its
    /// reference at a preset's shapes: time, ratio, memory kept.
    Kernels(BenchKernelsArgs),
    /// Steps/s against the micro-batch and against the image size (tokens), with plots.
    Scaling(BenchScalingArgs),
    /// Write the weights, images, masks and sapling's losses of a few steps for
    /// `benches/torch_mae.py` to replay in PyTorch.
    ReferenceCase(ReferenceCaseArgs),
    /// The planner's micro-batch against every micro-batch that fits, as whole optimizer steps.
    BatchSweep(BatchSweepArgs),
    /// The data loader alone (decode, crop, normalise) at several worker counts, against the
    /// images/s a training step of the preset consumes.
    Loader(BenchLoaderArgs),
}

/// Flags of `sapling bench step`.
#[derive(Debug, Args)]
pub struct BenchStepArgs {
    #[command(flatten)]
    pub run: TrainArgs,
    /// Timed steps, after two warm-up steps.
    #[arg(long, default_value_t = 5)]
    pub timed_steps: usize,
    /// Micro-batches per step (gradients accumulated over them).
    #[arg(long, default_value_t = 1)]
    pub accum: usize,
    /// Which offloaded form to time (instead of the first the config allows): `off`,
    /// `optimizer` (moments on the host, gradients summed on the device) or `gradients`
    /// (gradients summed on the host too).
    #[arg(long, value_enum)]
    pub offload: Option<crate::planner::Offload>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `sapling bench loader`.
#[derive(Debug, Args)]
pub struct BenchLoaderArgs {
    #[command(flatten)]
    pub run: TrainArgs,
    /// Worker counts to measure.
    #[arg(
        long = "loader-workers",
        value_delimiter = ',',
        default_value = "1,2,4"
    )]
    pub workers: Vec<usize>,
    /// Timed micro-batches per worker count, after one per worker as a warm-up.
    #[arg(long, default_value_t = 8)]
    pub batches: usize,
    /// The step's demand in images/s, instead of measuring a training step first.
    #[arg(long, value_name = "IMAGES_PER_SEC")]
    pub demand: Option<f64>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `sapling bench kernels`.
#[derive(Debug, Args)]
pub struct BenchKernelsArgs {
    #[command(flatten)]
    pub run: TrainArgs,
    /// Timed repetitions per kernel, after one warm-up.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `sapling bench scaling`.
#[derive(Debug, Args)]
pub struct BenchScalingArgs {
    #[command(flatten)]
    pub run: TrainArgs,
    /// Micro-batches to measure at the preset's image size.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64")]
    pub batches: Vec<usize>,
    /// Image sizes (multiples of the patch size) to measure at `--size-batch`.
    #[arg(long, value_delimiter = ',', default_value = "32,48,64,96,128")]
    pub img_sizes: Vec<usize>,
    /// Micro-batch of the image-size sweep.
    #[arg(long, default_value_t = 8)]
    pub size_batch: usize,
    /// Timed steps per point, after two warm-up steps.
    #[arg(long, default_value_t = 7)]
    pub timed_steps: usize,
    /// Folder for the plots.
    #[arg(long = "plots", default_value = "runs/scaling")]
    pub plots: PathBuf,
}

/// Flags of `sapling bench reference-case`.
#[derive(Debug, Args)]
pub struct ReferenceCaseArgs {
    #[command(flatten)]
    pub run: TrainArgs,
    /// Folder to write into.
    #[arg(long = "case-dir")]
    pub dir: PathBuf,
    /// Micro-batch (no accumulation).
    #[arg(long, default_value_t = 4)]
    pub micro_batch: usize,
    /// Steps to record.
    #[arg(long, default_value_t = 3)]
    pub record_steps: usize,
    /// Constant learning rate of the recorded steps.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
}

/// Flags of `sapling bench batch-sweep`.
#[derive(Debug, Args)]
pub struct BatchSweepArgs {
    #[command(flatten)]
    pub run: TrainArgs,
    /// Timed optimizer steps per micro-batch, after a warm-up step.
    #[arg(long, default_value_t = 9)]
    pub timed_steps: usize,
    /// Skip micro-batches needing more accumulation steps than this.
    #[arg(long, default_value_t = 32)]
    pub max_accum: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Evaluations of a checkpoint.
#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Freeze the encoder and fit a linear classifier on its features of a labelled data set
    /// (an IDX folder, Fashion-MNIST by default, or train/ and val/ folders of class folders);
    /// also reports a random encoder of the same shape.
    LinearProbe(LinearProbeArgs),
    /// Freeze the encoder and classify the test images by their k nearest training images
    /// (DINO's weighted k-NN on cosine similarity), the monitor self-supervised pretraining is
    /// watched by; also reports a random encoder of the same shape.
    Knn(KnnArgs),
}

/// The labelled images an evaluation scores, and the feature it scores them by.
#[derive(Debug, Args)]
pub struct LabelledArgs {
    /// Labelled data: an IDX data set folder (train-* and t10k-* files), or a folder with
    /// train/ and val/ (or test/) holding one folder of images per class.
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
    pub data: PathBuf,
    /// Feature: cls token or mean of patch tokens.
    #[arg(long, value_enum, default_value = "cls")]
    pub pool: Pool,
    /// Labelled training images used.
    #[arg(long, default_value_t = 10_000)]
    pub train_limit: usize,
    /// Test images scored.
    #[arg(long, default_value_t = 10_000)]
    pub test_limit: usize,
}

/// Flags of `sapling eval knn`.
#[derive(Debug, Args)]
pub struct KnnArgs {
    #[command(flatten)]
    pub weights: WeightsArgs,
    #[command(flatten)]
    pub labelled: LabelledArgs,
    /// Neighbours that vote.
    #[arg(long, default_value_t = crate::eval::knn::K)]
    pub k: usize,
    /// Temperature of the votes' weights `exp(cos / T)`.
    #[arg(long, default_value_t = crate::eval::knn::TEMPERATURE)]
    pub temperature: f64,
    /// Where to compute features.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// Print the report as JSON on stdout instead of a line for people.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `sapling eval linear-probe`.
#[derive(Debug, Args)]
pub struct LinearProbeArgs {
    #[command(flatten)]
    pub weights: WeightsArgs,
    #[command(flatten)]
    pub labelled: LabelledArgs,
    /// Adam iterations of the classifier (full batch).
    #[arg(long, default_value_t = 300)]
    pub iterations: usize,
    /// Where to compute features.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// Print the report as JSON on stdout instead of a line for people.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `sapling train`: the run's, and how it reports on the terminal.
#[derive(Debug, Default, Args)]
pub struct TrainCommandArgs {
    #[command(flatten)]
    pub run: TrainArgs,
    /// Print each logged step as a JSON line on stdout, and nothing else there, instead of a
    /// line for people (the run folder's metrics.jsonl has the same lines either way).
    #[arg(long)]
    pub json: bool,
}

/// Flags of a run (`sapling train`, and the benchmarks and plans of one); each overrides the
/// preset and the config file.
#[derive(Debug, Default, Args)]
pub struct TrainArgs {
    /// Starting configuration [default: tiny].
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// TOML file layered over the preset (it may name its own `preset`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Folder of images (searched recursively); without it, the embedded photos.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Where to train.
    #[arg(long, value_enum)]
    pub device: Option<DeviceChoice>,
    /// Optimizer steps (replaces --epochs).
    #[arg(long, conflicts_with = "epochs")]
    pub steps: Option<u64>,
    /// Passes over the data (replaces --steps).
    #[arg(long)]
    pub epochs: Option<f64>,
    /// Images per forward/backward pass: `auto` (planned on the device) or a number dividing the
    /// effective batch.
    #[arg(long)]
    pub batch_size: Option<BatchSize>,
    /// Images per optimizer step (reached by accumulating micro-batches).
    #[arg(long)]
    pub effective_batch: Option<usize>,
    /// Device memory the batch planner may use, in MiB.
    #[arg(long, value_name = "MIB")]
    pub memory_budget: Option<u64>,
    /// Hot paths on what pays off on the device (`auto`), burn's ops (`reference`), sapling's
    /// WGSL kernels (`wgsl`, wgpu only) or its CPU kernels (`cpu`, Flex only).
    #[arg(long, value_name = "auto|reference|wgsl|cpu")]
    pub kernels: Option<KernelChoice>,
    /// Keep every activation (`off`), only each block's input and recompute the block in
    /// backward (`blocks`), or let the batch planner decide (`auto`).
    #[arg(long, value_enum)]
    pub activation_checkpointing: Option<Checkpointing>,
    /// Split AdamW's state across MPI ranks, on the host (`true`), keep it whole on each
    /// device (`false`), or let the batch planner decide (`auto`).
    #[arg(long, value_name = "true|false|auto")]
    pub shard_optimizer: Option<Switch>,
    /// Keep AdamW's moments and master weights on the host and sum gradients there, so the
    /// device holds little more than the weights (`true`), keep them on the device (`false`),
    /// or let the batch planner decide (`auto`).
    #[arg(long, value_name = "true|false|auto")]
    pub offload_optimizer: Option<Switch>,
    /// Arithmetic: `f32`, `f16` (mixed precision, WebGPU adapters with `shader-f16`) or `auto`
    /// (f16 where the adapter has it).
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionChoice>,
    /// Start from released weights instead of MAE's initialisation: a MAE, Sapiens, timm or
    /// Hugging Face checkpoint (`.pth`, `.safetensors`), or a file `sapling export` wrote.
    #[arg(long, value_name = "FILE")]
    pub init_from: Option<PathBuf>,
    /// Seed of weights, data order, augmentation and masks.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output folder [default: runs/PRESET].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Optimizer steps between checkpoints.
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Continue from the latest intact checkpoint in the output folder, or from PATH.
    #[arg(long, value_name = "PATH")]
    #[allow(clippy::option_option)]
    pub resume: Option<Option<PathBuf>>,
    /// Train into an output folder that holds another run's checkpoints, deleting them and
    /// that run's metrics, plots and pictures (without it such a folder is refused).
    #[arg(long)]
    pub overwrite: bool,
}

impl TrainArgs {
    /// Preset, then file, then flags; with `--resume`, the checkpoint's config then flags.
    pub fn resolve_run(&self) -> Result<(Config, Option<Loaded>)> {
        let fresh = self.resolve()?;
        let Some(resume) = &self.resume else {
            return Ok((fresh, None));
        };
        let loaded = match resume {
            Some(path) => checkpoint::load(path)?,
            None => checkpoint::latest(&fresh.train.out)?,
        };
        if self.preset.is_some() || self.config.is_some() {
            loaded.check_model(&fresh)?;
        }
        let mut config = loaded.state.config.clone();
        self.apply_flags(&mut config);
        // Into the checkpoint's own run folder (wherever it was moved or copied to), not the
        // folder its stored config names, unless `--out` says otherwise.
        if self.out.is_none() {
            config.train.out = match resume {
                None => fresh.train.out,
                Some(path) => loaded
                    .run_folder()
                    .ok_or_else(|| SaplingError::Checkpoint {
                        path: path.clone(),
                        message: "is not inside a run folder (OUT/checkpoints/step-N), so where \
                              the resumed run writes is not known; say it with --out"
                            .into(),
                    })?,
            };
        }
        config.validate()?;
        Ok((config, Some(loaded)))
    }

    /// Preset, then file, then flags; the result is validated.
    pub fn resolve(&self) -> Result<Config> {
        let base = self.preset.unwrap_or(Preset::Tiny);
        let mut config = match &self.config {
            Some(path) => {
                let config = Config::from_toml_file(path, base)?;
                if let Some(p) = self.preset
                    && p != config.preset
                {
                    return Err(SaplingError::config(
                        "preset",
                        format!(
                            "--preset {} disagrees with preset = \"{}\" in {}; drop one",
                            p.name(),
                            config.preset.name(),
                            path.display()
                        ),
                    ));
                }
                config
            }
            None => base.config(),
        };
        self.apply_flags(&mut config);
        if let Some(path) = &self.init_from {
            config.train.init_from = Some(path.clone());
        }
        // A resumed run's layout is its checkpoint's: the file need not exist any more.
        if self.resume.is_none() {
            adopt_position_tables(&mut config)?;
        }
        config.validate()?;
        Ok(config)
    }

    fn apply_flags(&self, config: &mut Config) {
        // `--init-from` is not applied here: a resumed run continues from its checkpoint.
        let t = &mut config.train;
        if let Some(d) = &self.data {
            config.data.dir = Some(d.clone());
        }
        if let Some(d) = self.device {
            t.device = d;
        }
        if let Some(s) = self.steps {
            t.steps = Some(s);
            t.epochs = None;
        }
        if let Some(e) = self.epochs {
            t.epochs = Some(e);
            t.steps = None;
        }
        if let Some(b) = self.batch_size {
            t.batch_size = b;
        }
        if let Some(e) = self.effective_batch {
            t.effective_batch = e;
        }
        if let Some(m) = self.memory_budget {
            t.memory_budget_mib = Some(m);
        }
        if let Some(k) = self.kernels {
            t.kernels = k;
        }
        if let Some(c) = self.activation_checkpointing {
            t.activation_checkpointing = c;
        }
        if let Some(s) = self.shard_optimizer {
            t.shard_optimizer = s;
        }
        if let Some(o) = self.offload_optimizer {
            t.offload_optimizer = o;
        }
        if let Some(p) = self.precision {
            t.precision = p;
        }
        if let Some(s) = self.seed {
            t.seed = s;
        }
        if let Some(o) = &self.out {
            t.out = o.clone();
        }
        if let Some(c) = self.checkpoint_every {
            t.checkpoint_every = c;
        }
    }
}

/// A run starting from released weights builds its fixed position tables in the file's
/// layout (Sapiens' are row first), so the imported encoder sees the positions it learned.
fn adopt_position_tables(config: &mut Config) -> Result<()> {
    let Some(path) = &config.train.init_from else {
        return Ok(());
    };
    let Some(layout) = crate::import::read(path)?.pos_embed()? else {
        return Ok(());
    };
    if layout != config.model.pos_embed {
        tracing::info!(
            "model.pos_embed = \"{}\": the layout of {}'s position tables",
            layout.name(),
            path.display()
        );
        config.model.pos_embed = layout;
    }
    Ok(())
}
