//! The k-NN monitor: DINO's weighted k-NN on frozen features, on IDX data sets and image
//! folders, from the command line and every N steps of a run.

use std::path::Path;
use std::process::Command;

use burn::tensor::Device;
use sapling::eval::features::Pool;
use sapling::eval::knn::{KnnConfig, KnnData, knn};
use sapling::progress::Progress;
use sapling::train::{RunOptions, train};

use crate::common::{losses, micro_config, temp_dir, toy_idx, trained_micro};

fn settings(train_limit: usize, test_limit: usize) -> KnnConfig {
    KnnConfig {
        k: 20,
        temperature: 0.07,
        pool: Pool::Mean,
        train_limit,
        test_limit,
    }
}

/// An `ImageFolder` data set: two classes, red and blue, each picture a little different.
fn colour_folders(dir: &Path) {
    for (split, n) in [("train", 12), ("val", 6)] {
        for (class, rgb) in [("blue", [20u8, 30, 220]), ("red", [220, 30, 20])] {
            let folder = dir.join(split).join(class);
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..n {
                let shade = (i * 7) as u8;
                let img = image::RgbImage::from_fn(40, 40, |x, _| {
                    image::Rgb([
                        rgb[0].saturating_sub(shade),
                        rgb[1] + (x as u8 % 9),
                        rgb[2].saturating_sub(shade),
                    ])
                });
                img.save(folder.join(format!("{i}.png"))).unwrap();
            }
        }
    }
}

#[test]
fn knn_separates_easy_classes_from_idx_files_and_from_folders() {
    let (c, loaded) = trained_micro("knn-eval");
    let model = loaded.model(&Device::flex()).unwrap();

    let idx = temp_dir("knn-idx");
    toy_idx(&idx, "train", 64);
    toy_idx(&idx, "t10k", 32);
    let report = knn(
        &c,
        &model,
        &KnnData::open(&idx).unwrap(),
        &settings(64, 32),
        &Progress::hidden(),
    )
    .unwrap();
    assert_eq!((report.train_images, report.test_images), (64, 32));
    assert!(report.top1 > 0.9, "{report:?}");

    let folders = temp_dir("knn-folders");
    colour_folders(&folders);
    let data = KnnData::open(&folders).unwrap();
    let report = knn(&c, &model, &data, &settings(100, 100), &Progress::hidden()).unwrap();
    assert_eq!((report.train_images, report.test_images), (24, 12));
    assert_eq!(report.top1, 1.0, "{report:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_sapling"))
        .args(["eval", "knn", "--device", "cpu", "--json", "--checkpoint"])
        .arg(&loaded.path)
        .arg("--data")
        .arg(&folders)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["pretrained"]["top1"], 1.0, "{stdout}");
    assert!(json["random_top1"].as_f64().is_some(), "{stdout}");
}

#[test]
fn a_run_logs_knn_accuracy_every_n_steps() {
    let data = temp_dir("knn-run-data");
    toy_idx(&data, "train", 64);
    toy_idx(&data, "t10k", 32);
    let mut c = micro_config("knn-run");
    (c.train.steps, c.train.log_every, c.train.knn_every) = (Some(5), 10, 2);
    c.train.knn_data = Some(data);
    train(&c, RunOptions::default()).unwrap();
    let text = std::fs::read_to_string(c.train.out.join("metrics.jsonl")).unwrap();
    let knn: Vec<(u64, f64)> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| Some((v["step"].as_u64()?, v["knn_top1"].as_f64()?)))
        .collect();
    assert_eq!(knn.iter().map(|k| k.0).collect::<Vec<_>>(), vec![2, 4, 5]);
    assert!(knn.iter().all(|k| (0.0..=1.0).contains(&k.1)), "{knn:?}");
    assert_eq!(losses(&c.train.out).len(), 3);

    let mut missing = micro_config("knn-no-data");
    missing.train.knn_every = 2;
    let err = missing.validate().unwrap_err().to_string();
    assert!(err.contains("train.knn_data"), "{err}");
}

/// Settings that leave nothing to score are refused naming the field, by both evaluations,
/// before any feature is computed (`--k 0` used to panic in the vote).
#[test]
fn settings_with_nothing_to_score_are_refused_by_name() {
    let (_, loaded) = trained_micro("knn-refused");
    let idx = temp_dir("knn-refused-idx");
    toy_idx(&idx, "train", 8);
    toy_idx(&idx, "t10k", 8);
    let cases = [
        ("knn", "--k", "0", "`k`"),
        ("knn", "--temperature", "0", "`temperature`"),
        ("knn", "--temperature", "NaN", "`temperature`"),
        ("knn", "--train-limit", "0", "`train_limit`"),
        ("knn", "--test-limit", "0", "`test_limit`"),
        ("linear-probe", "--train-limit", "0", "`train_limit`"),
        ("linear-probe", "--test-limit", "0", "`test_limit`"),
    ];
    for (command, flag, value, field) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_sapling"))
            .args(["eval", command, "--device", "cpu", "--checkpoint"])
            .arg(&loaded.path)
            .arg("--data")
            .arg(&idx)
            .args([flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let case = format!("eval {command} {flag} {value}");
        assert_eq!(out.status.code(), Some(1), "{case}: {stderr}");
        assert!(
            stderr.contains(field) && !stderr.contains("panicked"),
            "{case}: {stderr}"
        );
    }
}
