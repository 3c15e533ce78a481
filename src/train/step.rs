//! One optimizer step: forward and backward over `accum` micro-batches, global clipping, a
//! finiteness check, then AdamW.
//!
//! The step is written once, as `async`: a browser cannot block on the device, so its one
//! readback per step is awaited. Natively [`Trainer::step`] blocks on the same code.

use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};

use std::rc::Rc;

use crate::checkpoint::{Loaded, Moments};
use crate::config::Config;
use crate::data::Batch;
use crate::dist::{ReduceStats, Solo, World, all_reduce_grads, broadcast_weights};
use crate::error::{Result, SaplingError};
use crate::model::{MaskPlan, MaskedAutoencoder, MaskedBatch, init};
use crate::ops::Precision;
use crate::optim::decay::named_params;
use crate::optim::transfer::{self, MomentsTransfer, ParamMoments};
use crate::optim::{self, GradFactor, LossScale, Verdict, clip};
use crate::planner::Levers;
use crate::seed::{self, mix};
use crate::timing::drain;

use super::host_adamw::{HostAdamW, join_shards};
use super::recompute::{GradSink, backward_by_stages};
use web_time::Instant;

/// What a step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Mean loss over the step's micro-batches (and over every rank's).
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// The gradient all-reduce over ranks (zero in a world of one).
    pub reduce: ReduceStats,
    /// f16 runs: the loss scale after this step (see [`LossScale`]).
    pub loss_scale: Option<LossScale>,
    /// The gradients overflowed in f16: the weights and the optimizer were left as they were.
    pub skipped: bool,
}

/// How much of a step to time. Timing waits for the device, which an untimed step never does
/// beyond its one readback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// Forward + backward (up to the readback) and the optimizer (the device drained after it).
    Phases,
    /// Also the forward passes alone: the device is drained after each one, which costs a
    /// little time, so only benchmarks ask for it.
    Split,
}

/// Seconds spent in each phase of a timed step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseTimes {
    /// The forward passes of every micro-batch, with [`Timing::Split`].
    pub forward: Option<f64>,
    /// Forward and backward over every micro-batch, gradient accumulation, the all-reduce and
    /// the global norm, up to the step's readback.
    pub forward_backward: f64,
    /// Clipping and the AdamW update.
    pub optimizer: f64,
}

/// How a step's gradients become new weights.
enum Update {
    /// burn's optimizer (or the fused CPU AdamW) on the device: gradients summed there and,
    /// with several ranks, all-reduced.
    Device(ModuleOptimizer),
    /// AdamW on the host: offloaded on one rank, sharded across several (ZeRO-Offload,
    /// ZeRO stage 1).
    Host(Box<HostAdamW>),
}

/// The model and its optimizer, on an autodiff device.
pub struct Trainer {
    model: Option<MaskedAutoencoder>,
    update: Update,
    optim_config: crate::config::OptimConfig,
    device: Device,
    levers: Levers,
    clip_grad: f64,
    seed: u64,
    /// Patches per image and kept patches per image, for drawing masks.
    mask_shape: (usize, usize),
    world: World,
    bucket_bytes: usize,
    overlap: bool,
    /// The dynamic loss scale of an f16 run (`None` in f32).
    loss_scale: Option<LossScale>,
    /// What the device optimizer multiplies each gradient by this step (clip and loss scale).
    grad_factor: GradFactor,
    /// Hands moments between the device optimizer and the host one (resumes across levers).
    transfer: MomentsTransfer,
}

impl Trainer {
    /// A fresh model with MAE's initialisation, seeded by `config.train.seed`, with the levers
    /// `config` asks for outright (see [`Levers::of`]).
    pub fn new(config: &Config, device: &Device) -> Result<Self> {
        Self::with_levers(
            config,
            device,
            Levers::of(config, crate::kernels::is_flex(device)),
        )
    }

    /// [`Trainer::new`] with the given `levers` (a batch plan's).
    pub fn with_levers(config: &Config, device: &Device, levers: Levers) -> Result<Self> {
        let device = device.clone().autodiff();
        let model = crate::model::init::seeded(&device, config.train.seed, || {
            MaskedAutoencoder::new(&config.model, &device)
        });
        Self::from_model_with(config, model, &device, levers)
    }

    /// Trains an existing model (already on `device`), with the levers `config` asks for.
    pub fn from_model(config: &Config, model: MaskedAutoencoder, device: &Device) -> Result<Self> {
        let levers = Levers::of(config, crate::kernels::is_flex(device));
        Self::from_model_with(config, model, device, levers)
    }

    /// [`Trainer::from_model`] with the given `levers`.
    pub fn from_model_with(
        config: &Config,
        model: MaskedAutoencoder,
        device: &Device,
        levers: Levers,
    ) -> Result<Self> {
        levers.kernels.check(device)?;
        crate::device::check_precision(levers.precision, device)?;
        let ops = levers
            .ops()
            .with_tiled_attention(crate::device::hardware_adapter());
        init::materialize(&model);
        let model = model.with_ops(ops);
        let bucket_bytes = (config.train.allreduce_bucket_mib << 20) as usize;
        let (grad_factor, transfer) = (GradFactor::default(), MomentsTransfer::default());
        // A host optimizer is built for a world of one until the trainer joins its world
        // (a trial step of a sharded plan runs so, alone).
        let update = if levers.host_optimizer() {
            let host = HostAdamW::new(&model, &config.optim, &Solo, bucket_bytes);
            Update::Host(Box::new(host))
        } else {
            let optim = optim::adamw(&config.optim, &model, ops.kernels, &grad_factor, &transfer);
            Update::Device(optim)
        };
        let mask_shape = (model.config.num_patches(), model.config.num_visible());
        Ok(Trainer {
            model: Some(model),
            update,
            grad_factor,
            transfer,
            optim_config: config.optim.clone(),
            device: device.clone(),
            levers,
            clip_grad: config.optim.clip_grad,
            seed: config.train.seed,
            mask_shape,
            world: Rc::new(Solo),
            bucket_bytes,
            overlap: config.train.allreduce_overlap,
            loss_scale: (levers.precision == Precision::F16).then(LossScale::default),
        })
    }

    /// The memory levers this trainer's steps use.
    pub fn levers(&self) -> Levers {
        self.levers
    }

    /// Joins `world`: rank 0's weights are copied to every rank (initialisation differs per
    /// process and backend), and every step averages gradients over the ranks; with the
    /// sharding lever, each rank keeps and updates its shard of AdamW from here on.
    pub fn join(mut self, world: World) -> Result<Self> {
        if world.size() > 1 {
            let model = self.model.take().expect("model is present between steps");
            self.model = Some(broadcast_weights(model, world.as_ref()));
        }
        if self.levers.shards > 1 {
            if self.levers.shards != world.size() {
                return Err(SaplingError::config(
                    "train.shard_optimizer",
                    format!(
                        "the plan shards the optimizer over {} ranks but {} run",
                        self.levers.shards,
                        world.size()
                    ),
                ));
            }
            let bucket = self.bucket_bytes;
            let shard = HostAdamW::new(self.model(), &self.optim_config, world.as_ref(), bucket);
            self.update = Update::Host(Box::new(shard));
        }
        self.world = world;
        Ok(self)
    }

    /// Restores weights, optimizer moments and an f16 run's loss scale from a checkpoint of the
    /// same model config (after [`Trainer::join`], so a sharded optimizer knows its rank).
    pub fn restore(&mut self, loaded: &Loaded, config: &Config) -> Result<()> {
        self.set_loss_scale(loaded.state.loss_scale);
        // The ops the trainer resolved when it was built (the attention form included), not
        // rebuilt from the levers, so a resumed run computes as the uninterrupted one did.
        let ops = self.model().ops();
        // The weights are loaded into a model of the same config, so a checkpoint that does
        // not load leaves this trainer's model as it was.
        let fresh = MaskedAutoencoder::new(&self.model().config, &self.device);
        let model = loaded.load_model(fresh)?.with_ops(ops);
        self.model = Some(model);
        let (model, bucket) = (self.model(), self.bucket_bytes);
        // Loading brings back the checkpoint's parameter ids; the no-decay group is a list of
        // ids, so the optimizer is rebuilt from the restored model before the moments go in.
        // Moments written by the other kind of optimizer are handed across (`optim::transfer`).
        self.update = match (self.levers.host_optimizer(), loaded.is_sharded()) {
            (true, true) => {
                let mut host = HostAdamW::new(model, &config.optim, self.world.as_ref(), bucket);
                host.restore(&loaded.shards()?)?;
                Update::Host(Box::new(host))
            }
            (true, false) => {
                let mut optim = self.device_optimizer(config);
                optim = loaded.load_optim(optim)?;
                let model = self.model.take().expect("restored above");
                let (model, moments) = transfer::harvest(&mut optim, &self.transfer, model);
                let mut host = HostAdamW::new(&model, &config.optim, self.world.as_ref(), bucket);
                host.set_from_device(moments);
                self.model = Some(model);
                Update::Host(Box::new(host))
            }
            (false, true) => {
                let lengths: Vec<usize> = named_params(model)
                    .iter()
                    .map(|p| p.shape.iter().product())
                    .collect();
                let total = lengths.iter().sum();
                let (time, m, v) = join_shards(&loaded.shards()?, total)?;
                let mut optim = self.device_optimizer(config);
                let model = self.model.take().expect("restored above");
                let moments = per_param(time, &m, &v, &lengths);
                self.model = Some(transfer::seed(&mut optim, &self.transfer, model, moments));
                Update::Device(optim)
            }
            (false, false) => Update::Device(loaded.load_optim(self.device_optimizer(config))?),
        };
        Ok(())
    }

    /// burn's AdamW (or the fused CPU one) over the model as it is now, with no moments.
    fn device_optimizer(&self, config: &Config) -> burn::optim::ModuleOptimizer {
        let kernels = self.model().ops().kernels;
        optim::adamw(
            &config.optim,
            self.model(),
            kernels,
            &self.grad_factor,
            &self.transfer,
        )
    }

    /// The loss scale of an f16 run, to be saved with the weights.
    pub fn loss_scale(&self) -> Option<LossScale> {
        self.loss_scale
    }

    /// Goes on with a saved loss scale (an f16 run resumed; ignored in f32).
    pub fn set_loss_scale(&mut self, saved: Option<LossScale>) {
        if let (Some(scale), Some(saved)) = (self.loss_scale.as_mut(), saved) {
            *scale = saved;
        }
    }

    /// The optimizer's part of a checkpoint: burn's record, or this rank's shard.
    pub fn moments(&self) -> Result<Moments<'_>> {
        match &self.update {
            Update::Device(optim) => Ok(Moments::Whole(optim)),
            Update::Host(host) => Ok(Moments::Shard(host.to_bytes()?)),
        }
    }

    /// The model as it is now.
    pub fn model(&self) -> &MaskedAutoencoder {
        self.model.as_ref().expect("model is present between steps")
    }

    /// Masks `ratio` of each sample's patches from the next step on (the browser's slider):
    /// the weights do not depend on the ratio, only the masks and the work per step do.
    pub fn set_mask_ratio(&mut self, ratio: f64) -> Result<()> {
        let model = self.model.as_mut().expect("model is present between steps");
        let mut config = model.config.clone();
        config.mask_ratio = ratio;
        config.validate()?;
        self.mask_shape = (config.num_patches(), config.num_visible());
        model.config = config;
        Ok(())
    }

    /// The masks of `batch` samples starting at stream index `first_sample`: each a pure
    /// function of the seed and the sample's index, so every backend, every resumed run and
    /// every micro-batch size masks the same patches of the same sample.
    pub fn mask_for(&self, first_sample: u64, batch: usize) -> MaskPlan {
        let (l, k) = self.mask_shape;
        let seeds: Vec<u64> = (first_sample..first_sample + batch as u64)
            .map(|s| mix(self.seed ^ seed::MASKS, s))
            .collect();
        MaskPlan::from_seeds(&seeds, l, k)
    }

    /// Runs one optimizer step at learning rate `lr` over `batches` (one per micro-batch).
    ///
    /// Fails without touching the weights when the loss or gradient norm is not finite.
    pub async fn step_async(
        &mut self,
        step: u64,
        lr: f64,
        batches: Vec<Batch>,
    ) -> Result<StepStats> {
        self.run(step, lr, batches, None)
            .await
            .map(|(stats, _)| stats)
    }

    /// [`Trainer::step_async`], also timing its phases as `timing` says.
    pub async fn step_timed_async(
        &mut self,
        step: u64,
        lr: f64,
        batches: Vec<Batch>,
        timing: Timing,
    ) -> Result<(StepStats, PhaseTimes)> {
        self.run(step, lr, batches, Some(timing))
            .await
            .map(|(stats, times)| (stats, times.expect("a timed step has times")))
    }

    /// [`Trainer::step_async`], blocking.
    #[cfg(not(target_family = "wasm"))]
    pub fn step(&mut self, step: u64, lr: f64, batches: Vec<Batch>) -> Result<StepStats> {
        pollster::block_on(self.step_async(step, lr, batches))
    }

    /// [`Trainer::step_timed_async`], blocking.
    #[cfg(not(target_family = "wasm"))]
    pub fn step_timed(
        &mut self,
        step: u64,
        lr: f64,
        batches: Vec<Batch>,
        timing: Timing,
    ) -> Result<(StepStats, PhaseTimes)> {
        pollster::block_on(self.step_timed_async(step, lr, batches, timing))
    }

    async fn run(
        &mut self,
        step: u64,
        lr: f64,
        batches: Vec<Batch>,
        timing: Option<Timing>,
    ) -> Result<(StepStats, Option<PhaseTimes>)> {
        let started = Instant::now();
        let (pending, forward) = self.forward_backward(batches, timing).await?;
        crate::counts::read_back();
        // A failed readback (a lost device, a browser's mapping error) keeps the weights: the
        // model goes back to the trainer with the step not applied.
        let values = match read_scalars(pending.readout.clone().into_data_async().await) {
            Ok(values) => values,
            Err(e) => {
                self.model = Some(pending.model);
                return Err(e);
            }
        };
        // The readback waited for every gradient: forward and backward are done.
        let forward_backward = started.elapsed().as_secs_f64();
        let stats = self.apply(pending, &values, step, lr)?;
        let Some(_) = timing else {
            return Ok((stats, None));
        };
        let updated = self.model().decoder_pred.weight.val();
        drain(&self.device, updated).await?;
        let times = PhaseTimes {
            forward,
            forward_backward,
            optimizer: started.elapsed().as_secs_f64() - forward_backward,
        };
        Ok((stats, Some(times)))
    }

    /// Forward and backward over every micro-batch, the all-reduce over ranks and the global
    /// norm: everything up to the step's one readback, queued on the device. With the
    /// optimizer sharded, every micro-batch's gradients are summed on the host instead and
    /// only the loss is read back. With [`Timing::Split`], also the seconds of the forward
    /// passes alone.
    async fn forward_backward(
        &mut self,
        batches: Vec<Batch>,
        timing: Option<Timing>,
    ) -> Result<(Pending, Option<f64>)> {
        let accum = batches.len();
        let split = timing == Some(Timing::Split);
        let mut forward = 0.0;
        let model = self.model.take().expect("model is present between steps");
        let mut acc = GradientsAccumulator::<MaskedAutoencoder>::new();
        let mut loss_sum: Option<Tensor<1>> = None;
        let (levers, loss_scale) = (self.levers, self.scale());
        for batch in batches {
            let masked = self.masked_batch(batch);
            let mut sink = match &mut self.update {
                Update::Host(host) if levers.grads_on_host() => GradSink::Host(host),
                _ => GradSink::Device(&mut acc),
            };
            let done = backward_one(
                &model,
                &masked,
                (accum, loss_scale),
                levers,
                split,
                &mut sink,
            );
            let (loss, secs) = match done.await {
                Ok(done) => done,
                Err(e) => {
                    self.model = Some(model);
                    return Err(e);
                }
            };
            forward += secs;
            loss_sum = Some(match loss_sum {
                Some(s) => s + loss,
                None => loss,
            });
        }
        let loss_sum = loss_sum.expect("at least one micro-batch");
        if let Update::Host(host) = &mut self.update {
            if !levers.grads_on_host() {
                // Summed on the device: read back once for the step.
                host.accumulate_step(&model, &acc.grads());
            }
            let pending = Pending {
                model,
                grads: None,
                readout: loss_sum,
                reduce: ReduceStats::default(),
            };
            return Ok((pending, split.then_some(forward)));
        }
        let mut grads = acc.grads();
        let reduce = if self.world.size() > 1 {
            all_reduce_grads(
                &model,
                &mut grads,
                self.world.as_ref(),
                self.bucket_bytes,
                self.overlap,
            )
        } else {
            ReduceStats::default()
        };
        let norm =
            clip::global_norm(&model, &grads, model.ops()).expect("the model has parameters");
        // One readback per step: the loss and the norm together.
        let readout = Tensor::cat(vec![loss_sum, norm], 0);
        let pending = Pending {
            model,
            grads: Some(grads),
            readout,
            reduce,
        };
        Ok((pending, split.then_some(forward)))
    }

    /// A micro-batch on the device with its masks.
    fn masked_batch(&self, batch: Batch) -> MaskedBatch {
        let plan = self.mask_for(batch.first_sample, batch.batch);
        crate::counts::uploaded(batch.images.len() * size_of::<f32>());
        let images = Tensor::<4>::from_data(
            TensorData::new(batch.images, [batch.batch, 3, batch.size, batch.size]),
            &self.device,
        );
        MaskedBatch::new(images, &plan)
    }

    /// What the loss is multiplied by before backward (1 in f32).
    fn scale(&self) -> f64 {
        self.loss_scale.map_or(1.0, |s| s.scale)
    }

    /// What to do with a step whose loss and gradient norm (of the scaled loss, in f16) were
    /// read back: in f16 an overflowed norm skips the step and halves the scale; a non-finite
    /// loss, or a non-finite norm in f32 (or in f16 even unscaled), fails it.
    fn judge(&mut self, loss: f64, norm: f64, step: u64) -> Result<Verdict> {
        let verdict = match self.loss_scale.as_mut() {
            Some(scale) if loss.is_finite() => scale.after_step(norm),
            _ if norm.is_finite() => Verdict::Apply,
            _ => Verdict::Fail,
        };
        let fail = |what, value| Err(SaplingError::NonFinite { what, value, step });
        match verdict {
            _ if !loss.is_finite() => fail("loss", loss),
            Verdict::Fail => fail("gradient norm", norm),
            verdict => Ok(verdict),
        }
    }

    /// Checks the read-back loss and norm, clips and steps AdamW; a non-finite value fails
    /// the step with the weights untouched.
    fn apply(&mut self, pending: Pending, values: &[f32], step: u64, lr: f64) -> Result<StepStats> {
        let Pending {
            model,
            grads,
            mut reduce,
            ..
        } = pending;
        let world = self.world.clone();
        let started = Instant::now();
        let (loss, grad_norm, host_grad) = match (&mut self.update, &grads) {
            (Update::Host(host), _) => {
                let (grad, r) = host.reduce(values[0], world.as_ref());
                reduce.bytes = r.bytes;
                reduce.buckets = 1;
                (r.loss, r.grad_norm, Some(grad))
            }
            (Update::Device(_), _) => {
                let mut loss = [values[0]];
                if world.size() > 1 {
                    world.all_reduce_sum(&mut loss);
                }
                let loss = loss[0] as f64 / world.size() as f64;
                (loss, values[1] as f64, None)
            }
        };
        // The scale this step's backward used (judging it may change the scale).
        let loss_scale = self.scale();
        let verdict = match self.judge(loss, grad_norm, step) {
            Ok(verdict) => verdict,
            Err(e) => {
                self.model = Some(model);
                return Err(e);
            }
        };
        // The norm as read back or reduced (of the scaled gradients, in f16).
        let read_norm = grad_norm as f32;
        let grad_norm = grad_norm / loss_scale;
        let stats = StepStats {
            loss,
            grad_norm,
            reduce,
            loss_scale: self.loss_scale,
            skipped: verdict == Verdict::Skip,
        };
        if stats.skipped {
            // The gradients overflowed in f16: dropped, weights and moments as they were.
            self.model = Some(model);
            return Ok(stats);
        }
        let factor = clip::clip_factor(read_norm, self.clip_grad, loss_scale);
        let model = match (&mut self.update, grads, host_grad) {
            (Update::Device(optim), Some(grads), _) => {
                self.grad_factor.set(factor);
                optim.step(lr, model, grads)
            }
            (Update::Host(host), _, Some(grad)) => {
                let model = host.apply(model, grad, lr, factor, world.as_ref());
                reduce.seconds = started.elapsed().as_secs_f64();
                model
            }
            _ => unreachable!("the pending step matches the optimizer"),
        };
        self.model = Some(model);
        Ok(StepStats { reduce, ..stats })
    }
}

/// Forward and backward of one of `accum` micro-batches, its gradients into `sink`: its loss
/// (detached, already divided by `accum`) and, with `split`, the seconds of its forward pass.
/// Backward goes stage by stage (see `recompute`) with activation checkpointing, with the
/// gradients summed on the host, and while accumulating (so the running sums never sit beside
/// a whole second set: vit-b at micro-batch 4 on Flex peaked 504 MiB higher at two micro-batches
/// than at one through the whole graph); otherwise through the whole graph at once.
async fn backward_one(
    model: &MaskedAutoencoder,
    masked: &MaskedBatch,
    (accum, loss_scale): (usize, f64),
    levers: Levers,
    split: bool,
    sink: &mut GradSink<'_>,
) -> Result<(Tensor<1>, f64)> {
    if levers.checkpointing || levers.grads_on_host() || accum > 1 {
        let scaling = (accum, loss_scale);
        return backward_by_stages(model, masked, scaling, levers.checkpointing, split, sink).await;
    }
    let started = Instant::now();
    // Accumulated gradients are summed, so each micro-batch carries 1/accum of the loss.
    let loss = model.forward_batch(masked).loss.div_scalar(accum as f64);
    if split {
        drain(&masked.imgs.device(), loss.clone()).await?;
    }
    let forward = started.elapsed().as_secs_f64();
    let grads = scaled(loss.clone(), loss_scale).backward();
    sink.add(model, GradientsParams::from_grads(grads, model));
    Ok((loss.detach().inner(), forward))
}

/// `loss` multiplied by `loss_scale` for backward (itself at 1, so f32 runs are unchanged).
pub(super) fn scaled(loss: Tensor<1>, loss_scale: f64) -> Tensor<1> {
    if loss_scale == 1.0 {
        loss
    } else {
        loss.mul_scalar(loss_scale)
    }
}

/// A step between its forward/backward pass and its one readback.
struct Pending {
    model: MaskedAutoencoder,
    /// The summed gradients, on the device (`None` when the sharded optimizer summed them on
    /// the host); their global norm is in the readout.
    grads: Option<GradientsParams>,
    /// `[loss sum, gradient norm]` read back together, or the loss sum alone when sharded.
    readout: Tensor<1>,
    reduce: ReduceStats,
}

fn read_scalars<E: std::fmt::Display>(
    data: std::result::Result<TensorData, E>,
) -> Result<Vec<f32>> {
    data.map_err(|e| SaplingError::Device(e.to_string()))
        .map(|d| d.try_into_vec::<f32>().expect("f32 scalars"))
}

/// Whole flat moments cut into one entry per parameter of `lengths` (module order).
fn per_param(time: i32, m: &[f32], v: &[f32], lengths: &[usize]) -> Vec<Option<ParamMoments>> {
    let mut at = 0;
    lengths
        .iter()
        .map(|&n| {
            at += n;
            Some(ParamMoments {
                time: time.max(0) as usize,
                m: m[at - n..at].to_vec(),
                v: v[at - n..at].to_vec(),
            })
        })
        .collect()
}
