//! Linear probing: how linearly separable are the frozen encoder's features?
//!
//! Features of the full image (no masking) are taken from the cls token or the mean of the patch
//! tokens, standardised with the training features' statistics (MAE's linear probe puts a
//! BatchNorm without affine before its head), and a softmax-regression head is fit with Adam.
//! The same is done for a randomly initialised encoder of the same shape, so the gain from
//! pretraining is visible beside the accuracy.

use std::path::Path;

use burn::module::Module;
use burn::nn::Linear;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Serialize;

use crate::config::{Config, DataConfig};
use crate::data::augment::center_resize;
use crate::data::idx::{IdxSplit, read_split};
use crate::error::Result;
use crate::model::MaskedAutoencoder;
use crate::progress::{Phase, Progress};

/// Which token summarises an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Pool {
    /// The cls token after the final norm.
    Cls,
    /// The mean of the patch tokens after the final norm.
    Mean,
}

/// Settings of a probe.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub pool: Pool,
    /// Labelled training images used (the first N of the train split).
    pub train_limit: usize,
    /// Test images scored (the first N of the test split).
    pub test_limit: usize,
    /// Full-batch Adam iterations of the head.
    pub iterations: usize,
    pub lr: f64,
    /// Seed of the random encoder.
    pub seed: u64,
}

/// Accuracies of a probe.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub pool: Pool,
    pub train_images: usize,
    pub test_images: usize,
    /// Top-1 accuracy on the test images with the checkpoint's encoder.
    pub pretrained_top1: f64,
    /// The same with a randomly initialised encoder of the same shape.
    pub random_top1: f64,
}

/// Probes `model`'s encoder (on `device`, of `config`) and a random one of the same shape on
/// the IDX data set in `data_dir`, showing each phase on `progress`.
pub fn linear_probe(
    config: &Config,
    model: &MaskedAutoencoder,
    data_dir: &Path,
    probe: &ProbeConfig,
    device: &Device,
    progress: &Progress,
) -> Result<ProbeReport> {
    let train = read_split(data_dir, "train")?;
    let test = read_split(data_dir, "t10k")?;
    let n_train = probe.train_limit.min(train.images.count);
    let n_test = probe.test_limit.min(test.images.count);
    let classes = train.labels.iter().copied().max().unwrap_or(0) as usize + 1;

    let score = |encoder: &MaskedAutoencoder, which: &str| {
        let phase = |split: &str, n: usize| {
            let what = format!("linear probe, {which} encoder: features of {n} {split} images");
            progress.phase(what, n as u64)
        };
        let f_train = features(
            encoder,
            &train,
            n_train,
            probe,
            &config.data,
            phase("train", n_train),
        );
        let f_test = features(
            encoder,
            &test,
            n_test,
            probe,
            &config.data,
            phase("test", n_test),
        );
        let what = format!(
            "linear probe, {which} encoder: {} Adam iterations of the classifier",
            probe.iterations
        );
        fit_and_score(
            progress.phase(what, probe.iterations as u64),
            (&f_train, &train.labels[..n_train]),
            (&f_test, &test.labels[..n_test]),
            config.model.dim,
            classes,
            probe,
            device,
        )
    };
    let pretrained = score(model, "pretrained");
    device.seed(probe.seed);
    let random = score(&MaskedAutoencoder::new(&config.model, device), "random");
    Ok(ProbeReport {
        pool: probe.pool,
        train_images: n_train,
        test_images: n_test,
        pretrained_top1: pretrained,
        random_top1: random,
    })
}

/// `[n, D]` host features of the first `n` images of `split`, pooled as `probe` says.
fn features(
    model: &MaskedAutoencoder,
    split: &IdxSplit,
    n: usize,
    probe: &ProbeConfig,
    data: &DataConfig,
    phase: Phase,
) -> Vec<f32> {
    const CHUNK: usize = 256;
    let c = &model.config;
    let device = model.pos_embed.device();
    let (s, l, d) = (c.img_size, c.num_patches(), c.dim);
    let idx = |v: Vec<i64>| {
        let len = v.len();
        Tensor::<1, Int>::from_data(TensorData::new(v, [len]), &device)
    };
    let mut out = Vec::with_capacity(n * d);
    for start in (0..n).step_by(CHUNK) {
        let b = CHUNK.min(n - start);
        let mut values = Vec::with_capacity(b * 3 * s * s);
        for i in start..start + b {
            center_resize(&split.images.rgb(i), s as u32, data, &mut values);
        }
        let imgs = Tensor::<4>::from_data(TensorData::new(values, [b, 3, s, s]), &device);
        // Every patch kept, in order.
        let rows = idx((0..(b * l) as i64).collect());
        let pos = idx((0..b).flat_map(|_| 0..l as i64).collect());
        let tokens = model.encode(imgs, rows, pos, l); // [B, 1+L, D]
        let pooled = match probe.pool {
            Pool::Cls => tokens.narrow(1, 0, 1).reshape([b, d]),
            Pool::Mean => tokens.narrow(1, 1, l).mean_dim(1).reshape([b, d]),
        };
        out.extend(
            pooled
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("f32"),
        );
        phase.advance(b as u64);
    }
    out
}

#[derive(Module, Debug)]
struct Head {
    linear: Linear,
}

/// Standardises with the training statistics, fits softmax regression, returns test top-1.
fn fit_and_score(
    phase: Phase,
    (x_train, y_train): (&[f32], &[u8]),
    (x_test, y_test): (&[f32], &[u8]),
    dim: usize,
    classes: usize,
    probe: &ProbeConfig,
    device: &Device,
) -> f64 {
    let ad = device.clone().autodiff();
    let (n, m) = (y_train.len(), y_test.len());
    let x = Tensor::<2>::from_data(TensorData::new(x_train.to_vec(), [n, dim]), &ad);
    let (var, mean) = x.clone().var_mean(0);
    let std = var.add_scalar(1e-6).sqrt();
    let x = (x - mean.clone()) / std.clone();
    let y = Tensor::<2, Int>::from_data(
        TensorData::new(
            y_train.iter().map(|&v| v as i64).collect::<Vec<_>>(),
            [n, 1],
        ),
        &ad,
    );
    device.seed(probe.seed);
    let mut head = Head {
        linear: burn::nn::LinearConfig::new(dim, classes).init(&ad),
    };
    let mut optim = AdamConfig::new().init();
    for _ in 0..probe.iterations {
        let logp = log_softmax(head.linear.forward(x.clone()), 1);
        let loss = logp.gather(1, y.clone()).mean().neg();
        let grads = GradientsParams::from_grads(loss.backward(), &head);
        head = optim.step(probe.lr, head, grads);
        phase.advance(1);
    }
    let x_test = Tensor::<2>::from_data(TensorData::new(x_test.to_vec(), [m, dim]), &ad);
    let logits = head.linear.forward((x_test - mean) / std);
    let pred = logits
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .expect("i64");
    let correct = pred
        .iter()
        .zip(y_test)
        .filter(|(p, y)| **p == **y as i64)
        .count();
    correct as f64 / m as f64
}
