//! AdamW on the host: offloaded on one rank (ZeRO-Offload), sharded across MPI ranks (ZeRO
//! stage 1).
//!
//! The parameters, in module order, form one flat vector cut into one equal block per rank
//! (one block, the whole vector, on one rank). Gradients are read back and summed on the host
//! as backward produces them, a stage at a time where the backward is staged, so the device
//! holds no running sum; at the end of a step the sums are reduce-scattered, so each rank
//! receives the mean gradient of its own block only; each rank runs AdamW on its block, with
//! its block's moments and f32 master weights, which live on the host; the updated blocks are
//! all-gathered and every rank uploads the same full parameters. The device never holds
//! AdamW's moments, and each rank's host holds `1/N` of them.
//!
//! The arithmetic is burn's AdamW (`kernels::cpu::adamw`, bit-identical to burn's in its test)
//! and PyTorch's global-norm clipping. On one rank nothing is exchanged or copied (the sums are
//! the gradient, the master weights are uploaded as they are) and the norm is summed as the CPU
//! kernels sum it on the device, so an offloaded run on Flex computes the device optimizer's
//! bits; over several ranks only the order in which the squared gradients are summed for the
//! norm differs from the unsharded step, so the two agree to rounding.

use burn::optim::GradientsParams;

use super::grad_sums::GradSums;
use crate::config::OptimConfig;
use crate::dist::Collective;
use crate::dist::flat::{flat_params, with_flat_params};
use crate::error::{Result, SaplingError};
use crate::export::{RawTensor, safetensors_bytes};
use crate::kernels::host::adamw::{Hyper, update};
use crate::model::MaskedAutoencoder;
use crate::optim::adamw::hyper;
use crate::optim::decay::{decays, named_params};
use crate::optim::transfer::ParamMoments;

/// What the optimizer of one rank keeps on the host.
pub(super) struct HostAdamW {
    /// Values per parameter, in module order, and whether each decays.
    params: Vec<(usize, bool)>,
    /// Values of all parameters together.
    total: usize,
    /// Values per rank (`total` rounded up to a multiple of the rank count).
    block: usize,
    rank: usize,
    ranks: usize,
    /// This rank's block of the f32 master weights and of AdamW's moments.
    master: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    /// Optimizer steps taken (AdamW's bias correction).
    time: i32,
    /// Every micro-batch's gradients of every parameter, summed since the last step.
    sums: GradSums,
    decayed: Hyper,
    no_decay: Hyper,
}

/// A step's reduced loss and gradient norm, for the caller's checks and logs.
pub(super) struct Reduced {
    pub loss: f64,
    pub grad_norm: f64,
    /// Bytes this rank moved: over MPI, the reduce-scatter and the all-gather; offloaded on
    /// one rank, the gradients read back and the weights uploaded.
    pub bytes: u64,
}

impl HostAdamW {
    /// The shard of `world.rank()` for `model`'s parameters as they are now (every rank holds
    /// the same weights when this is called).
    pub fn new(
        model: &MaskedAutoencoder,
        config: &OptimConfig,
        world: &dyn Collective,
        bucket_bytes: usize,
    ) -> Self {
        let params: Vec<(usize, bool)> = named_params(model)
            .into_iter()
            .map(|p| (p.shape.iter().product(), decays(&p.path)))
            .collect();
        let total = params.iter().map(|p| p.0).sum::<usize>();
        let (rank, ranks) = (world.rank(), world.size());
        let block = total.div_ceil(ranks);
        let mut master = flat_params(model);
        master.resize(block * ranks, 0.0);
        let master = master[rank * block..(rank + 1) * block].to_vec();
        let sums = GradSums::new(total, params.len(), bucket_bytes);
        HostAdamW {
            params,
            total,
            block,
            rank,
            ranks,
            master,
            m: vec![0.0; block],
            v: vec![0.0; block],
            time: 0,
            sums,
            decayed: hyper(config, config.weight_decay),
            no_decay: hyper(config, 0.0),
        }
    }

    /// Adds gradients (a micro-batch's, or one stage's of it) into the host sums; the
    /// device's can then be freed.
    pub fn accumulate(&mut self, model: &MaskedAutoencoder, grads: &GradientsParams) {
        self.sums.add(model, grads);
    }

    /// Adds a step's gradients, summed on the device, in on this thread.
    pub fn accumulate_step(&mut self, model: &MaskedAutoencoder, grads: &GradientsParams) {
        self.sums.add_here(model, grads);
    }

    /// The mean gradient of this rank's block over every rank (on one rank, the sums
    /// themselves), the loss (`loss_sum` of this rank's micro-batches) averaged over ranks,
    /// and the global gradient norm (f32, of the gradients as they were summed: in f16 still
    /// scaled). The host sums start again from nothing.
    pub fn reduce(&mut self, loss_sum: f32, world: &dyn Collective) -> (Vec<f32>, Reduced) {
        let (mut send, read) = self.sums.take();
        if self.ranks == 1 {
            // Nothing to exchange: the sums are the gradient (the buffer comes back in `apply`).
            let grad = send;
            let reduced = Reduced {
                loss: loss_sum as f64,
                grad_norm: self.norm(&grad) as f64,
                bytes: read + 4 * self.total as u64,
            };
            return (grad, reduced);
        }
        send.resize(self.block * self.ranks, 0.0);
        let mut grad = vec![0.0; self.block];
        world.reduce_scatter_sum(&send, &mut grad);
        let scale = 1.0 / self.ranks as f32;
        grad.iter_mut().for_each(|g| *g *= scale);
        let mut sums = [grad.iter().map(|g| g * g).sum::<f32>(), loss_sum];
        world.all_reduce_sum(&mut sums);
        let reduced = Reduced {
            loss: sums[1] as f64 / self.ranks as f64,
            grad_norm: (sums[0] as f64).sqrt(),
            bytes: 2 * 4 * (self.block * self.ranks) as u64,
        };
        (grad, reduced)
    }

    /// `‖grad‖` of a whole gradient, summed per parameter as the device's CPU kernels sum it.
    fn norm(&self, grad: &[f32]) -> f32 {
        let mut at = 0;
        let slices = self.params.iter().map(|&(len, _)| {
            at += len;
            &grad[at - len..at]
        });
        #[cfg(not(target_family = "wasm"))]
        let sum = crate::kernels::cpu::squared_sum_slices(slices);
        #[cfg(target_family = "wasm")]
        let sum = slices.flatten().map(|g| g * g).sum::<f32>();
        sum.sqrt()
    }

    /// AdamW at `lr` on this rank's block with its mean gradient `grad` scaled by `clip_scale`,
    /// then every rank's updated block gathered into `model`.
    pub fn apply(
        &mut self,
        model: MaskedAutoencoder,
        mut grad: Vec<f32>,
        lr: f64,
        clip_scale: f32,
        world: &dyn Collective,
    ) -> MaskedAutoencoder {
        let model = self.update(model, &grad, lr, clip_scale, world);
        if self.ranks == 1 {
            self.sums.give_back(std::mem::take(&mut grad));
        }
        model
    }

    fn update(
        &mut self,
        model: MaskedAutoencoder,
        grad: &[f32],
        lr: f64,
        clip_scale: f32,
        world: &dyn Collective,
    ) -> MaskedAutoencoder {
        self.time += 1;
        let (start, end) = (self.rank * self.block, (self.rank + 1) * self.block);
        let mut at = 0;
        for &(len, decays) in &self.params {
            // The part of this parameter inside this rank's block.
            let (lo, hi) = (at.max(start), (at + len).min(end));
            at += len;
            if lo >= hi {
                continue;
            }
            let h = Hyper {
                lr: lr as f32,
                time: self.time,
                grad_scale: clip_scale,
                ..if decays { self.decayed } else { self.no_decay }
            };
            let r = lo - start..hi - start;
            let (p, m, v) = (
                &mut self.master[r.clone()],
                &mut self.m[r.clone()],
                &mut self.v[r.clone()],
            );
            update(p, &grad[r], m, v, h);
        }
        if self.ranks == 1 {
            return with_flat_params(model, &self.master);
        }
        let mut all = vec![0.0; self.block * self.ranks];
        world.all_gather(&self.master, &mut all);
        all.truncate(self.total);
        with_flat_params(model, &all)
    }

    /// This rank's moments as the bytes of a safetensors file, with what a resume needs to
    /// place them.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let tensor = |name: &str, values: &[f32]| RawTensor {
            name: name.to_string(),
            dtype: safetensors::Dtype::F32,
            shape: vec![values.len()],
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        // The master weights are the model's, which the checkpoint holds whole.
        let tensors = [tensor("m", &self.m), tensor("v", &self.v)];
        let meta = [
            ("time", self.time.to_string()),
            ("total", self.total.to_string()),
            ("rank", self.rank.to_string()),
            ("ranks", self.ranks.to_string()),
        ];
        let meta: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (*k, v.as_str())).collect();
        safetensors_bytes(&tensors, &meta).map_err(|message| SaplingError::Checkpoint {
            path: "<optimizer shard>".into(),
            message,
        })
    }

    /// Restores this rank's moments from every shard of a checkpoint (`shards`, in rank
    /// order), written by any number of ranks: the shards are joined and cut again for this
    /// world. (The master weights come from the restored model.)
    pub fn restore(&mut self, shards: &[(std::path::PathBuf, Vec<u8>)]) -> Result<()> {
        let (time, m, v) = join_shards(shards, self.total)?;
        self.set_moments(time, m, v);
        Ok(())
    }

    /// Takes this rank's block of whole moments `m` and `v` (every parameter's, in module
    /// order) after `time` steps.
    fn set_moments(&mut self, time: i32, mut m: Vec<f32>, mut v: Vec<f32>) {
        let (start, end) = (self.rank * self.block, (self.rank + 1) * self.block);
        for all in [&mut m, &mut v] {
            // Drop the old world's padding, pad for this one.
            all.truncate(self.total);
            all.resize(self.block * self.ranks, 0.0);
        }
        (self.m, self.v) = (m[start..end].to_vec(), v[start..end].to_vec());
        self.time = time;
    }

    /// Takes the moments burn's optimizer held (one entry per parameter, module order; `None`
    /// for a parameter it never stepped): a checkpoint of the device optimizer resumed here.
    pub fn set_from_device(&mut self, moments: Vec<Option<ParamMoments>>) {
        let (mut m, mut v) = (
            Vec::with_capacity(self.total),
            Vec::with_capacity(self.total),
        );
        let mut time = 0;
        for (p, &(len, _)) in moments.into_iter().zip(&self.params) {
            match p {
                Some(p) => {
                    time = time.max(p.time as i32);
                    m.extend(p.m);
                    v.extend(p.v);
                }
                None => {
                    m.resize(m.len() + len, 0.0);
                    v.resize(v.len() + len, 0.0);
                }
            }
        }
        self.set_moments(time, m, v);
    }
}

/// Every shard of a checkpoint's moments (`shards`, in rank order) joined: the optimizer's
/// steps and the whole `m` and `v` of a model with `total` values (padding dropped).
pub(super) fn join_shards(
    shards: &[(std::path::PathBuf, Vec<u8>)],
    total: usize,
) -> Result<(i32, Vec<f32>, Vec<f32>)> {
    let mut joined = [Vec::new(), Vec::new()];
    let mut time = None;
    for (path, bytes) in shards {
        let err = |message: String| SaplingError::Checkpoint {
            path: path.clone(),
            message,
        };
        let file = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| err(format!("not an optimizer shard: {e}")))?;
        for (i, name) in ["m", "v"].iter().enumerate() {
            let t = file
                .tensor(name)
                .map_err(|e| err(format!("no `{name}`: {e}")))?;
            joined[i].extend(
                t.data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| err(format!("unreadable metadata: {e}")))?;
        let field = |key: &str| {
            meta.metadata()
                .as_ref()
                .and_then(|m| m.get(key))
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or_else(|| err(format!("no `{key}` in the shard's metadata")))
        };
        if field("total")? as usize != total {
            return Err(err(format!(
                "the shard is of a model with {} values, this one has {}",
                field("total")?,
                total
            )));
        }
        time = Some(field("time")? as i32);
    }
    let [mut m, mut v] = joined;
    if m.len() < total || v.len() < total {
        return Err(SaplingError::Checkpoint {
            path: shards.first().map(|s| s.0.clone()).unwrap_or_default(),
            message: format!(
                "the shards hold {} of the model's {} values",
                m.len().min(v.len()),
                total
            ),
        });
    }
    m.truncate(total);
    v.truncate(total);
    Ok((time.unwrap_or(0), m, v))
}
