//! A training session as the page drives it: the sapling library's trainer, batch planner, data
//! stream and pictures, with every device readback awaited (a browser cannot block).

use std::sync::Arc;

use image::RgbImage;
use sapling::config::{BatchSize, Checkpointing, Config, KernelChoice, PrecisionChoice, Preset};
use sapling::data::augment::fixed_batch;
use sapling::data::source::MAX_IMAGE_SIDE;
use sapling::data::{ImageSource, Shard, Stream};
use sapling::device::{AdapterSummary, Selected};
use sapling::export::Export;
use sapling::layout::Layout;
use sapling::model::MaskPlan;
use sapling::ops::Precision;
use sapling::optim::Schedule;
use sapling::planner::{BatchPlan, DeviceLimits, TrialOptions};
use sapling::train::{Trainer, plan_async};
use sapling::{Result, SaplingError};
use serde::{Deserialize, Serialize};
use web_time::Instant;

/// Images shown in the reconstruction grid.
const PREVIEW_IMAGES: usize = 4;

/// Short side dropped photos are kept at, as the embedded photos are: crops at the model's input
/// size keep their detail, and a 50-megapixel photo takes 0.2 MB of the page instead of 150.
const KEEP_SHORT_SIDE: u32 = 256;

/// Dropped images the page holds at most (each kept at [`KEEP_SHORT_SIDE`] on its short side),
/// and the pixel bytes they may take together: a visitor dropping a whole photo library
/// gets a clear refusal instead of a tab that runs out of memory.
const MAX_DROPPED: usize = 5_000;
const MAX_DROPPED_BYTES: usize = 768 << 20;

/// What the page may set when it starts a session (JSON; unknown fields are refused).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    /// Images per optimizer step (the planner picks the micro-batch that reaches it).
    pub effective_batch: usize,
    /// Steps of the learning-rate schedule.
    pub steps: u64,
    pub seed: u64,
    pub kernels: KernelChoice,
    /// `off`, `blocks` (each block recomputed in backward) or `auto` (the planner decides).
    pub activation_checkpointing: Checkpointing,
    /// Device memory a step may use, in MiB; without it the planner assumes a budget, as
    /// WebGPU does not tell a page how much memory the GPU has.
    pub memory_budget_mib: Option<u64>,
    /// `auto` (f16 where the adapter has `shader-f16`, as native runs), `f16` or `f32`.
    pub precision: PrecisionChoice,
}

impl Default for Options {
    fn default() -> Self {
        let train = Preset::Tiny.config().train;
        Options {
            effective_batch: train.effective_batch,
            steps: train.steps.unwrap_or(400),
            seed: train.seed,
            kernels: KernelChoice::Auto,
            activation_checkpointing: Checkpointing::Auto,
            memory_budget_mib: None,
            precision: PrecisionChoice::Auto,
        }
    }
}

/// What one step reports to the page.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Optimizer steps done, this one included.
    pub step: u64,
    pub loss: f64,
    pub grad_norm: f64,
    pub lr: f64,
    /// Wall-clock seconds of this step, from its first batch to the readback of its loss.
    pub seconds: f64,
    pub images_per_sec: f64,
}

/// The adapter and the batch plan, for the page's device panel.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    pub adapter: Option<AdapterSummary>,
    pub limits: DeviceLimits,
}

/// The model, its optimizer and its data on the visitor's GPU.
pub struct Session {
    config: Config,
    selected: Selected,
    trainer: Trainer,
    /// Reads the images (the embedded photos, then the dropped ones); it alone holds them, so a
    /// drop extends the list in place.
    stream: Stream,
    schedule: Schedule,
    plan: Option<BatchPlan>,
    /// Optimizer steps done.
    step: u64,
    /// Samples read from the stream (always a whole number of optimizer steps).
    samples: u64,
    /// When the last step ended: images/s counts the page's own time between steps too.
    last_end: Option<Instant>,
    /// Dropped images held, and their pixel bytes.
    dropped: (usize, usize),
}

impl Session {
    /// Acquires WebGPU and builds the `tiny` model on the photos bundled with sapling.
    pub async fn start(options: Options) -> Result<Session> {
        let selected = sapling::device::wgpu_device_async().await?;
        let mut config = Preset::Tiny.config();
        config.train.effective_batch = options.effective_batch;
        config.train.steps = Some(options.steps);
        config.train.seed = options.seed;
        config.train.kernels = options.kernels;
        config.train.activation_checkpointing = options.activation_checkpointing;
        config.train.memory_budget_mib = options.memory_budget_mib;
        config.train.precision = options.precision;
        config.validate()?;
        if config.train.kernels == KernelChoice::Cpu {
            return Err(SaplingError::config(
                "kernels",
                "the CPU kernels run on burn's Flex backend and a page trains on WebGPU: \
                 use kernels=auto, reference or wgsl",
            ));
        }
        let embedded = ImageSource::Embedded;
        let images = (0..embedded.len())
            .map(|i| {
                let img = embedded.load(i).map_err(|message| SaplingError::Data {
                    path: embedded.name(i).into(),
                    message,
                })?;
                Ok((embedded.name(i), img))
            })
            .collect::<Result<Vec<_>>>()?;
        let trainer = Trainer::new(&config, &selected.device)?;
        let schedule = Schedule::new(&config.optim, options.effective_batch, options.steps);
        let source = Arc::new(ImageSource::decoded(images)?);
        let stream = stream(&config, source, 1);
        Ok(Session {
            config,
            selected,
            trainer,
            stream,
            schedule,
            plan: None,
            step: 0,
            samples: 0,
            last_end: None,
            dropped: (0, 0),
        })
    }

    pub fn device(&self) -> DeviceReport {
        DeviceReport {
            adapter: self.selected.adapter.clone(),
            limits: self.limits(),
        }
    }

    /// The limits the planner works within, its budget explained in the page's own terms.
    fn limits(&self) -> DeviceLimits {
        let budget = self.config.train.memory_budget_mib;
        let mut limits = DeviceLimits::of(&self.selected, budget);
        if let Some(mib) = budget {
            limits.budget_source = format!("set by budget={mib} in this page's address");
        } else if limits.device_memory.is_none() {
            limits.budget_source = "assumed: WebGPU does not tell a page how much memory the GPU \
                has; add budget=MIB to this page's address to plan for yours (e.g. budget=8192)"
                .into();
        }
        limits
    }

    /// Picks the micro-batch as native runs do: the memory model, then `sizes` trial sizes of
    /// `steps` timed steps each (0 sizes: the memory model alone).
    pub async fn plan_batch(&mut self, sizes: usize, steps: usize) -> Result<BatchPlan> {
        let mut config = self.config.clone();
        config.train.batch_size = BatchSize::Auto;
        let limits = self.limits();
        let options = TrialOptions { sizes, steps };
        let plan = plan_async(&config, &self.selected.device, &limits, options).await?;
        // Before the first step a trainer can still take the plan's levers (a fresh model of the
        // same seed).
        if let Some(levers) = plan.levers
            && levers != self.trainer.levers()
            && self.step == 0
        {
            self.trainer = Trainer::with_levers(&self.config, &self.selected.device, levers)?;
        }
        self.stream = stream(&self.config, self.stream.source().clone(), plan.micro_batch);
        self.plan = Some(plan.clone());
        Ok(plan)
    }

    /// One optimizer step: `accum` micro-batches from the stream, forward, backward, AdamW.
    pub async fn step(&mut self) -> Result<StepReport> {
        let plan = self.plan.as_ref().ok_or_else(|| {
            SaplingError::config(
                "batch",
                "plan the batch before training (no batch plan yet)",
            )
        })?;
        let (micro, accum) = (plan.micro_batch, plan.accum);
        let started = self.last_end.unwrap_or_else(Instant::now);
        // Steps read whole effective batches, so `samples` is a multiple of the micro-batch.
        let first = self.samples / micro as u64;
        let batches = (first..first + accum as u64)
            .map(|m| self.stream.batch(m))
            .collect::<Result<Vec<_>>>()?;
        self.samples += (micro * accum) as u64;
        let lr = self.schedule.lr_at(self.step);
        let stats = self.trainer.step_async(self.step, lr, batches).await?;
        self.step += 1;
        let now = Instant::now();
        let seconds = now.duration_since(started).as_secs_f64();
        self.last_end = Some(now);
        Ok(StepReport {
            step: self.step,
            loss: stats.loss,
            grad_norm: stats.grad_norm,
            lr,
            seconds,
            images_per_sec: (micro * accum) as f64 / seconds,
        })
    }

    /// Starts over from the weights in a safetensors file the visitor gave (`name` for
    /// messages): the layouts `--init-from` reads (timm, Hugging Face, mmpretrain, what
    /// `sapling export` writes), checked against `tiny` before a value is read; a file without a
    /// decoder keeps this model's. The optimizer and the schedule start afresh, on the same
    /// images (the dropped ones included). Returns what was loaded, for the page.
    pub fn load_weights(&mut self, name: &str, bytes: Vec<u8>) -> Result<String> {
        let imported = sapling::import::read_safetensors_bytes(name, bytes)?;
        let current = self.trainer.model().clone();
        let (model, report) = imported.load(current, self.config.preset.name())?;
        let device = self.selected.device.clone().autodiff();
        self.trainer =
            Trainer::from_model_with(&self.config, model, &device, self.trainer.levers())?;
        self.step = 0;
        self.samples = 0;
        self.last_end = None;
        Ok(report.to_string())
    }

    /// Forgets the time since the last step (after a pause), so images/s counts training only.
    pub fn pause(&mut self) {
        self.last_end = None;
    }

    /// MAE's figure for the first photos (original | masked | reconstruction | visible pasted
    /// back), as PNG bytes.
    pub async fn reconstruction(&self) -> Result<Vec<u8>> {
        let model_config = &self.trainer.model().config;
        let size = model_config.img_size as u32;
        let (values, b) = fixed_batch(
            self.stream.source(),
            PREVIEW_IMAGES,
            size,
            &self.config.data,
        );
        let plan = MaskPlan::random(
            b,
            model_config.num_patches(),
            model_config.num_visible(),
            self.config.train.seed,
        );
        let grid =
            sapling::viz::recon_grid_async(self.trainer.model(), values, &plan, &self.config.data)
                .await?;
        sapling::viz::png_bytes(&grid).map_err(|message| SaplingError::Data {
            path: "<reconstruction.png>".into(),
            message,
        })
    }

    pub fn set_mask_ratio(&mut self, ratio: f64) -> Result<()> {
        self.trainer.set_mask_ratio(ratio)?;
        self.config.model.mask_ratio = ratio;
        Ok(())
    }

    /// The short side the page should draw a dropped photo at before [`Session::add_pixels`].
    pub fn keep_side(&self) -> u32 {
        KEEP_SHORT_SIDE.max(self.config.model.img_size as u32)
    }

    /// Adds a dropped image, as the page decoded it (`width` x `height` RGBA, alpha dropped), to
    /// the training set, shrunk to [`Session::keep_side`] if larger; returns how many there are.
    pub fn add_pixels(
        &mut self,
        name: &str,
        width: u32,
        height: u32,
        rgba: Vec<u8>,
    ) -> Result<usize> {
        let rgba = rgba_image(width, height, rgba).ok_or_else(|| SaplingError::Data {
            path: name.into(),
            message: format!(
                "{width}x{height} pixels: a side is 0 or past {MAX_IMAGE_SIDE}, or the bytes \
                 given are not that many RGBA pixels"
            ),
        })?;
        let image = shrink(
            image::DynamicImage::ImageRgba8(rgba).to_rgb8(),
            self.keep_side(),
        );
        let (count, bytes) = (self.dropped.0 + 1, self.dropped.1 + image.as_raw().len());
        if count > MAX_DROPPED || bytes > MAX_DROPPED_BYTES {
            return Err(SaplingError::Data {
                path: name.into(),
                message: format!(
                    "the page holds {} dropped images ({} MiB) already, and at most {MAX_DROPPED} \
                     ({} MiB); train on a folder of this many with the command-line sapling",
                    self.dropped.0,
                    self.dropped.1 >> 20,
                    MAX_DROPPED_BYTES >> 20
                ),
            });
        }
        let held = self.stream.push_image(format!("dropped:{name}"), image)?;
        self.dropped = (count, bytes);
        Ok(held)
    }

    pub fn image_count(&self) -> usize {
        self.stream.source().len()
    }

    /// The encoder, or the whole MAE (`with_decoder`), in timm's ViT layout as safetensors
    /// bytes: what `sapling export --with-decoder` writes and `--init-from` reads.
    pub async fn weights_safetensors(&self, with_decoder: bool) -> Result<Vec<u8>> {
        let what = Export {
            layout: Layout::Timm,
            with_decoder,
            dtype: Precision::F32,
        };
        let preset = self.config.preset.name();
        sapling::export::weights_safetensors_async(self.trainer.model(), preset, what).await
    }
}

/// `rgba` as a `width` x `height` image, if it is exactly that many pixels within the limits.
fn rgba_image(width: u32, height: u32, rgba: Vec<u8>) -> Option<image::RgbaImage> {
    let sides = 1..=MAX_IMAGE_SIDE;
    let len = (width as usize)
        .checked_mul(height as usize)?
        .checked_mul(4)?;
    if !sides.contains(&width) || !sides.contains(&height) || rgba.len() != len {
        return None;
    }
    image::RgbaImage::from_raw(width, height, rgba)
}

/// `image` with its short side at most `side` (aspect kept).
fn shrink(image: RgbImage, side: u32) -> RgbImage {
    let short = image.width().min(image.height());
    if short <= side {
        return image;
    }
    let scale =
        |n: u32| ((u64::from(n) * u64::from(side)).div_ceil(u64::from(short)) as u32).max(1);
    image::imageops::resize(
        &image,
        scale(image.width()),
        scale(image.height()),
        image::imageops::FilterType::Triangle,
    )
}

fn stream(config: &Config, source: Arc<ImageSource>, micro: usize) -> Stream {
    Stream::new(
        source,
        &config.data,
        config.model.img_size,
        micro,
        config.train.seed,
        Shard::WHOLE,
    )
}
