//! The weighted k-nearest-neighbour classifier on frozen features that self-supervised
//! pretraining is monitored with (DINO's `eval_knn.py`): features L2-normalised, each test
//! image's k most cosine-similar training images vote for their class with weight
//! `exp(similarity / T)`, top-1 accuracy reported. Seconds where the linear probe takes
//! minutes, so it can run every N steps of a run.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;

use super::features::{Pool, features};
use super::labelled::{Split, check_limits, train_and_test};
use crate::config::Config;
use crate::error::{Result, SaplingError};
use crate::model::MaskedAutoencoder;
use crate::progress::Progress;

/// DINO's defaults: 20 neighbours, temperature 0.07.
pub const K: usize = 20;
pub const TEMPERATURE: f64 = 0.07;

/// Settings of a k-NN evaluation.
#[derive(Debug, Clone)]
pub struct KnnConfig {
    pub k: usize,
    pub temperature: f64,
    pub pool: Pool,
    /// Labelled training images used (the first N of the train split).
    pub train_limit: usize,
    /// Test images scored (the first N of the test split).
    pub test_limit: usize,
}

/// What a k-NN evaluation found.
#[derive(Debug, Clone, Serialize)]
pub struct KnnReport {
    pub k: usize,
    pub temperature: f64,
    pub pool: Pool,
    pub train_images: usize,
    pub test_images: usize,
    /// Top-1 accuracy on the test images.
    pub top1: f64,
}

/// The data set in `dir` (IDX, or image folders; see [`train_and_test`]), read once and kept
/// for evaluations during a run.
pub struct KnnData {
    train: Split,
    test: Split,
}

impl KnnData {
    pub fn open(dir: &Path) -> Result<KnnData> {
        let (train, test) = train_and_test(dir)?;
        if train.is_empty() || test.is_empty() {
            return Err(SaplingError::Data {
                path: dir.to_path_buf(),
                message: "a split holds no images".into(),
            });
        }
        Ok(KnnData { train, test })
    }
}

impl KnnConfig {
    /// Refuses settings with no vote to take: no neighbours, no images, or a temperature that
    /// is not a positive number.
    fn check(&self) -> Result<()> {
        let bad = |field: &str, message: &str| Err(SaplingError::config(field, message));
        if self.k == 0 {
            return bad(
                "k",
                "at least one neighbour must vote (--k 1 or more; DINO uses 20)",
            );
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(
                "temperature",
                "must be a positive number (--temperature; DINO uses 0.07)",
            );
        }
        check_limits(self.train_limit, self.test_limit)
    }
}

/// k-NN top-1 of `model`'s encoder (of `config`) on `data`, each feature pass shown on
/// `progress`.
pub fn knn(
    config: &Config,
    model: &MaskedAutoencoder,
    data: &KnnData,
    knn: &KnnConfig,
    progress: &Progress,
) -> Result<KnnReport> {
    knn.check()?;
    let (n_train, n_test) = (
        knn.train_limit.min(data.train.len()),
        knn.test_limit.min(data.test.len()),
    );
    let phase = |split: &str, n: usize| {
        progress.phase(format!("k-NN: features of {n} {split} images"), n as u64)
    };
    let bank = features(
        model,
        &data.train,
        n_train,
        knn.pool,
        &config.data,
        phase("train", n_train),
    )?;
    let queries = features(
        model,
        &data.test,
        n_test,
        knn.pool,
        &config.data,
        phase("test", n_test),
    )?;
    let labels: Vec<usize> = (0..n_train).map(|i| data.train.label(i)).collect();
    let votes = vote(
        &bank,
        &queries,
        &labels,
        config.model.dim,
        data.train.classes().max(data.test.classes()),
        knn,
        &model.pos_embed.device(),
    );
    let correct = (0..n_test)
        .filter(|&i| votes[i] == data.test.label(i))
        .count();
    Ok(KnnReport {
        k: knn.k,
        temperature: knn.temperature,
        pool: knn.pool,
        train_images: n_train,
        test_images: n_test,
        top1: correct as f64 / n_test as f64,
    })
}

/// The class each query's k nearest bank rows vote for (weights `exp(cos / T)`). The
/// similarities are one matrix product on `device`, a block of queries at a time.
fn vote(
    bank: &[f32],
    queries: &[f32],
    labels: &[usize],
    dim: usize,
    classes: usize,
    knn: &KnnConfig,
    device: &Device,
) -> Vec<usize> {
    const BLOCK: usize = 512;
    let (n, m) = (labels.len(), queries.len() / dim);
    let k = knn.k.min(n);
    let normalised = |x: &[f32], rows: usize| {
        let t = Tensor::<2>::from_data(TensorData::new(x.to_vec(), [rows, dim]), device);
        let norm = t.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
        t / norm
    };
    let bank = normalised(bank, n).transpose();
    let mut out = Vec::with_capacity(m);
    for start in (0..m).step_by(BLOCK) {
        let rows = BLOCK.min(m - start);
        let q = normalised(&queries[start * dim..(start + rows) * dim], rows);
        let sims: Vec<f32> = q
            .matmul(bank.clone())
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .expect("f32");
        for row in sims.chunks_exact(n) {
            let mut order: Vec<usize> = (0..n).collect();
            // Ties broken by index, so the vote does not depend on the sort's stability.
            order.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            let mut score = vec![0f64; classes];
            for &j in &order[..k] {
                score[labels[j]] += (f64::from(row[j]) / knn.temperature).exp();
            }
            let best = (0..classes).max_by(|&a, &b| score[a].total_cmp(&score[b]).then(b.cmp(&a)));
            out.push(best.unwrap_or(0));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_vote_by_similarity() {
        // Two clusters on the axes; the queries sit near one each, k reaches into both.
        let bank = [1.0, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9, 0.2, 0.8];
        let labels = [0, 0, 1, 1, 1];
        let queries = [1.0, 0.05, 0.05, 1.0];
        let knn = KnnConfig {
            k: 4,
            temperature: 0.07,
            pool: Pool::Cls,
            train_limit: 5,
            test_limit: 2,
        };
        let got = vote(&bank, &queries, &labels, 2, 2, &knn, &Device::flex());
        // The first query's four nearest are two of class 0 (very close) and two of class 1:
        // the weighting, not the count, decides.
        assert_eq!(got, vec![0, 1]);
    }
}
