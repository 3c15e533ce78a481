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

pub use super::features::Pool;
use super::features::features;
use super::labelled::{check_limits, train_and_test};
use crate::config::Config;
use crate::error::Result;
use crate::model::MaskedAutoencoder;
use crate::progress::{Phase, Progress};

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
    check_limits(probe.train_limit, probe.test_limit)?;
    let (train, test) = train_and_test(data_dir)?;
    let n_train = probe.train_limit.min(train.len());
    let n_test = probe.test_limit.min(test.len());
    let classes = train.classes();
    let labels = |split: &super::labelled::Split, n: usize| {
        (0..n).map(|i| split.label(i)).collect::<Vec<_>>()
    };
    let (y_train, y_test) = (labels(&train, n_train), labels(&test, n_test));

    let score = |encoder: &MaskedAutoencoder, which: &str| {
        let phase = |split: &str, n: usize| {
            let what = format!("linear probe, {which} encoder: features of {n} {split} images");
            progress.phase(what, n as u64)
        };
        let f_train = features(
            encoder,
            &train,
            n_train,
            probe.pool,
            &config.data,
            phase("train", n_train),
        )?;
        let f_test = features(
            encoder,
            &test,
            n_test,
            probe.pool,
            &config.data,
            phase("test", n_test),
        )?;
        let what = format!(
            "linear probe, {which} encoder: {} Adam iterations of the classifier",
            probe.iterations
        );
        Ok::<_, crate::error::SaplingError>(fit_and_score(
            progress.phase(what, probe.iterations as u64),
            (&f_train, &y_train),
            (&f_test, &y_test),
            config.model.dim,
            classes,
            probe,
            device,
        ))
    };
    let pretrained = score(model, "pretrained")?;
    let random = crate::model::init::seeded(device, probe.seed, || {
        MaskedAutoencoder::new(&config.model, device)
    });
    let random = score(&random, "random")?;
    Ok(ProbeReport {
        pool: probe.pool,
        train_images: n_train,
        test_images: n_test,
        pretrained_top1: pretrained,
        random_top1: random,
    })
}

#[derive(Module, Debug)]
struct Head {
    linear: Linear,
}

/// Standardises with the training statistics, fits softmax regression, returns test top-1.
fn fit_and_score(
    phase: Phase,
    (x_train, y_train): (&[f32], &[usize]),
    (x_test, y_test): (&[f32], &[usize]),
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
    let mut head = crate::model::init::seeded(device, probe.seed, || Head {
        linear: burn::nn::LinearConfig::new(dim, classes).init(&ad),
    });
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
