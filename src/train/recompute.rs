//! Backward stage by stage: activation checkpointing, and gradients handed on a stage at a
//! time.
//!
//! With `recompute` (activation checkpointing) the forward pass runs without a graph keeping
//! only each stage's input, then backward goes stage by stage from the loss, each stage's
//! forward run again with autodiff and differentiated against the gradient of its output.
//! Without it, each stage's graph is built once in the forward pass (every activation kept,
//! as in one whole graph) and differentiated the same way.
//!
//! Either way each stage's gradients exist alone and go to a [`GradSink`] at once: added into
//! the step's running sums on the device (no second full set of gradients while
//! accumulating), or read back and summed on the host by the offloaded optimizer (the device
//! then never holds more than one stage's gradients).
//!
//! Why not burn's own checkpointing: its balanced strategy recomputes the element-wise
//! (memory-bound) ops only and keeps every matmul's and kernel's inputs, so memory still grows
//! with depth. Here a step keeps one `[B, N, D]` tensor per block plus the activations of a
//! single stage, whatever the depth; the price is a second forward pass of every stage. Any
//! kernel with a backward works unchanged (the WGSL and CPU kernels are deterministic, so the
//! recomputed forward is the first one), and the gradients equal those of the whole graph: each
//! stage sees exactly the gradient of its output.

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Tensor;
use web_time::Instant;

use super::host_adamw::HostAdamW;
use crate::error::Result;
use crate::model::{MaskedAutoencoder, MaskedBatch};
use crate::timing::drain;

/// Where each stage's gradients go as soon as they exist.
pub(super) enum GradSink<'a> {
    /// Added into the step's running sums on the device.
    Device(&'a mut GradientsAccumulator<MaskedAutoencoder>),
    /// Read back and summed on the host; the device's copies are then dropped.
    Host(&'a mut HostAdamW),
}

impl GradSink<'_> {
    pub fn add(&mut self, model: &MaskedAutoencoder, grads: GradientsParams) {
        match self {
            GradSink::Device(acc) => acc.accumulate(model, grads),
            GradSink::Host(host) => host.accumulate(model, &grads),
        }
    }
}

/// What the forward pass kept of one stage for backward: its input (without a graph when the
/// stage is recomputed; otherwise the leaf its graph starts from) and, unless recomputed, its
/// output with the stage's graph.
struct Kept {
    input: Option<Tensor<3>>,
    output: Option<Tensor<3>>,
}

/// Forward and backward of one micro-batch with its loss divided by `accum` (and multiplied by
/// `loss_scale` for backward), each stage recomputed in backward when `recompute`; the
/// gradients of every stage go into `sink` as they are made. Returns the loss (detached,
/// unscaled) and, with `split`, the seconds of the forward pass (the device drained after it).
pub async fn backward_by_stages(
    model: &MaskedAutoencoder,
    batch: &MaskedBatch,
    (accum, loss_scale): (usize, f64),
    recompute: bool,
    split: bool,
    sink: &mut GradSink<'_>,
) -> Result<(Tensor<1>, f64)> {
    let started = Instant::now();
    let stages = model.stages();
    let mut kept = Vec::with_capacity(stages.len());
    let last = if recompute {
        // Forward, no graph: the input of every stage is all that is kept.
        let (plain, plain_batch) = (model.valid(), batch.inner());
        let mut x = None;
        for &stage in &stages {
            let input = x.clone().map(Tensor::from_inner);
            kept.push(Kept {
                input,
                output: None,
            });
            x = Some(plain.stage(stage, x, &plain_batch));
        }
        x.expect("the embedding stage")
    } else {
        // Each stage's graph from its own input leaf, so each is differentiated alone.
        let mut x: Option<Tensor<3>> = None;
        for &stage in &stages {
            let input = x.map(|x| x.detach().require_grad());
            let out = model.stage(stage, input.clone(), batch);
            kept.push(Kept {
                input,
                output: Some(out.clone()),
            });
            x = Some(out);
        }
        x.expect("the embedding stage").inner()
    };
    if split {
        drain(&batch.imgs.device(), last.clone()).await?;
    }
    let forward = started.elapsed().as_secs_f64();

    // The loss from the last stage's output, differentiated first.
    let head_in = Tensor::from_inner(last).require_grad();
    let loss = model
        .head(head_in.clone(), batch)
        .loss
        .div_scalar(accum as f64);
    let grads = super::step::scaled(loss.clone(), loss_scale).backward();
    let mut upstream = head_in.grad(&grads);
    sink.add(model, GradientsParams::from_grads(grads, model));

    // Then every stage, last first, against the gradient of its output.
    for &stage in stages.iter().rev() {
        let (input, out) = match kept.pop().expect("one kept entry per stage") {
            Kept {
                input,
                output: Some(out),
            } => (input, out),
            Kept {
                input,
                output: None,
            } => {
                let input = input.map(|x| x.require_grad());
                let out = model.stage(stage, input.clone(), batch);
                (input, out)
            }
        };
        let g = upstream.take().expect("every stage output feeds the next");
        let grads = (out * Tensor::from_inner(g)).sum().backward();
        upstream = input.and_then(|x| x.grad(&grads));
        sink.add(model, GradientsParams::from_grads(grads, model));
    }
    Ok((loss.detach().inner(), forward))
}
