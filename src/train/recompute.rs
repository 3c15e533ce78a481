//! Activation checkpointing by stages: forward without a graph keeping only each stage's input,
//! then backward stage by stage from the loss, each stage's forward run again with autodiff and
//! differentiated against the gradient of its output.
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

use crate::error::Result;
use crate::model::{MaskedAutoencoder, MaskedBatch};
use crate::timing::drain;

/// Forward and backward of one micro-batch with its loss divided by `accum` (and multiplied by
/// `loss_scale` for backward); the gradients of every parameter go into `acc`. Returns the
/// loss (detached, unscaled) and, with `split`, the seconds of the forward pass (the device
/// drained after it).
pub async fn backward_by_stages(
    model: &MaskedAutoencoder,
    batch: &MaskedBatch,
    accum: usize,
    loss_scale: f64,
    split: bool,
    acc: &mut GradientsAccumulator<MaskedAutoencoder>,
) -> Result<(Tensor<1>, f64)> {
    let started = Instant::now();
    let stages = model.stages();
    // Forward, no graph: the input of every stage is all that is kept.
    let plain = model.valid();
    let plain_batch = batch.inner();
    let mut inputs = Vec::with_capacity(stages.len());
    let mut x: Option<Tensor<3>> = None;
    for &stage in &stages {
        inputs.push(x.clone());
        x = Some(plain.stage(stage, x, &plain_batch));
    }
    let last = x.expect("the embedding stage");
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
    acc.accumulate(model, GradientsParams::from_grads(grads, model));

    // Then every stage, last first, against the gradient of its output.
    for (&stage, input) in stages.iter().zip(inputs).rev() {
        let input = input.map(|x| Tensor::from_inner(x).require_grad());
        let out = model.stage(stage, input.clone(), batch);
        let g = upstream.take().expect("every stage output feeds the next");
        let grads = (out * Tensor::from_inner(g)).sum().backward();
        upstream = input.and_then(|x| x.grad(&grads));
        acc.accumulate(model, GradientsParams::from_grads(grads, model));
    }
    Ok((loss.detach().inner(), forward))
}
