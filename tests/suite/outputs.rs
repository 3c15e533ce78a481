//! What a run produces besides checkpoints: exported weights, pictures, plots, the linear probe.

use std::path::Path;

use burn::tensor::Device;
use sapling::checkpoint;
use sapling::data::idx;
use sapling::eval::probe::{Pool, ProbeConfig, linear_probe};
use sapling::export::write_encoder;
use sapling::model::MaskPlan;
use sapling::progress::Progress;
use sapling::train::{RunOptions, train};
use sapling::viz::{recon::reconstruct_file, recon_grid};

use crate::common::{micro_config, temp_dir, toy_idx};

/// A micro run of `steps` steps; returns its output folder.
fn micro_run(name: &str, steps: u64) -> std::path::PathBuf {
    let mut c = micro_config(name);
    c.train.steps = Some(steps);
    c.train.recon_every = 2;
    c.train.log_every = 1;
    train(&c, RunOptions::default()).unwrap();
    c.train.out
}

#[test]
fn export_writes_the_encoder_in_timm_layout() {
    let out = micro_run("export", 2);
    let loaded = checkpoint::latest(&out).unwrap();
    let model = loaded.model(&Device::flex()).unwrap();
    let file = out.join("encoder.safetensors");
    let n = write_encoder(&model, "tiny", &file).unwrap();
    let depth = model.config.depth;
    assert_eq!(n, 4 + 12 * depth + 2);

    let bytes = std::fs::read(&file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (d, p, l) = (
        model.config.dim,
        model.config.patch_size,
        model.config.num_patches(),
    );
    let shape = |name: &str| st.tensor(name).unwrap().shape().to_vec();
    let values = |name: &str| -> Vec<f32> {
        st.tensor(name)
            .unwrap()
            .data()
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    assert_eq!(shape("cls_token"), vec![1, 1, d]);
    assert_eq!(shape("pos_embed"), vec![1, 1 + l, d]);
    assert_eq!(shape("patch_embed.proj.weight"), vec![d, 3, p, p]);
    assert_eq!(shape("blocks.0.attn.qkv.weight"), vec![3 * d, d]);
    assert_eq!(shape("blocks.1.mlp.fc1.weight"), vec![4 * d, d]);
    assert_eq!(shape("norm.bias"), vec![d]);
    assert!(
        st.names()
            .iter()
            .all(|n| !n.starts_with("decoder") && !n.contains("mask_token"))
    );

    // Values: linear weights are transposed to [out, in]; the patch embedding becomes a
    // convolution [D, C, y, x] from sapling's (y, x, c)-ordered patch vector.
    let qkv = model.blocks[0]
        .attn
        .qkv
        .weight
        .val()
        .into_data()
        .try_into_vec::<f32>()
        .unwrap(); // [D, 3D]
    let exported = values("blocks.0.attn.qkv.weight"); // [3D, D]
    for (o, i) in [(0, 0), (5, 7), (3 * d - 1, d - 1)] {
        assert_eq!(exported[o * d + i], qkv[i * 3 * d + o]);
    }
    let w = model
        .patch_embed
        .weight
        .val()
        .into_data()
        .try_into_vec::<f32>()
        .unwrap(); // [p*p*3, D]
    let conv = values("patch_embed.proj.weight");
    for (o, c, y, x) in [(0, 0, 0, 0), (3, 2, 1, 5), (d - 1, 1, p - 1, 0)] {
        assert_eq!(
            conv[((o * 3 + c) * p + y) * p + x],
            w[((y * p + x) * 3 + c) * d + o]
        );
    }
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(header.metadata().as_ref().unwrap()["layout"], "timm-vit");
}

#[test]
fn runs_draw_reconstructions_and_plots() {
    let out = micro_run("pictures", 4);
    for file in [
        "recon/step-00000002.png",
        "recon/step-00000004.png",
        "loss.png",
        "lr.png",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let plot = image::open(out.join("loss.png")).unwrap().to_rgb8();
    assert_eq!(plot.dimensions(), (800, 400));
    assert!(
        plot.pixels().any(|p| p.0 != [255, 255, 255]),
        "plot is blank"
    );
    // The saved figure names its columns in a strip above the tiles, one title per column.
    let figure = image::open(out.join("recon/step-00000004.png"))
        .unwrap()
        .to_rgb8();
    let (w, h) = figure.dimensions();
    let inked = |x0: u32, x1: u32| {
        (x0..x1).any(|x| (0..20).any(|y| figure.get_pixel(x, y).0.iter().all(|&v| v < 128)))
    };
    assert!(
        (0..4).all(|c| inked(c * w / 4, (c + 1) * w / 4)),
        "a column is untitled"
    );

    // The grid: four columns, one row per image; where a patch is visible, the pasted column
    // shows the original.
    let loaded = checkpoint::latest(&out).unwrap();
    let model = loaded.model(&Device::flex()).unwrap();
    let cfg = &loaded.state.config;
    let s = cfg.model.img_size;
    let source = sapling::data::ImageSource::Embedded;
    let (images, b) = sapling::data::augment::fixed_batch(&source, 2, s as u32, &cfg.data);
    let plan = MaskPlan::random(b, cfg.model.num_patches(), cfg.model.num_visible(), 9);
    let grid = recon_grid(&model, images, &plan, &cfg.data).unwrap();
    let z = sapling::viz::recon::zoom(s);
    let tile = s as u32 * z + 2;
    assert_eq!(grid.dimensions(), (4 * tile + 2, b as u32 * tile + 2));
    // The saved figure: four images, and the 24-pixel title strip.
    assert_eq!((w, h), (4 * tile + 2, 4 * tile + 2 + 24));
    let visible = (0..cfg.model.num_patches())
        .find(|&i| plan.mask[i] == 0.0)
        .unwrap();
    let g = cfg.model.grid();
    let (px, py) = (
        (visible % g * cfg.model.patch_size) as u32 * z + 2,
        (visible / g * cfg.model.patch_size) as u32 * z + 2,
    );
    assert_eq!(grid.get_pixel(px, py), grid.get_pixel(px + 3 * tile, py));

    let photo = out.join("photo.png");
    source.load(0).unwrap().save(&photo).unwrap();
    let (config, model) = (&loaded.state.config, loaded.model(&Device::flex()).unwrap());
    let one = reconstruct_file(config, &model, &photo, Some(0.5), 0).unwrap();
    assert_eq!(one.dimensions(), (4 * tile + 2, tile + 2));
    let err = reconstruct_file(config, &model, &photo, Some(1.0), 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--mask-ratio"), "{err}");
    let err = reconstruct_file(config, &model, Path::new("/nonexistent.png"), None, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent.png"), "{err}");
}

#[test]
fn idx_files_read_and_bad_magic_is_named() {
    let dir = temp_dir("idx");
    toy_idx(&dir, "train", 6);
    let split = idx::read_split(&dir, "train").unwrap();
    assert_eq!(
        (split.images.count, split.images.rows, split.images.cols),
        (6, 28, 28)
    );
    assert_eq!(split.labels, vec![0, 1, 0, 1, 0, 1]);
    let source = sapling::data::ImageSource::new(Some(&dir)).unwrap();
    assert_eq!(source.len(), 6);
    assert_eq!(source.load(1).unwrap().dimensions(), (28, 28));

    let wrong = dir.join("t10k-images-idx3-ubyte.gz");
    std::fs::copy(dir.join("train-labels-idx1-ubyte.gz"), &wrong).unwrap();
    let err = idx::read_images(&wrong).unwrap_err().to_string();
    assert!(
        err.contains("t10k-images-idx3-ubyte.gz") && err.contains("expected 0x00000803"),
        "{err}"
    );
}

#[test]
fn linear_probe_separates_an_easy_task_and_reports_both_encoders() {
    let out = micro_run("probe", 2);
    let data = temp_dir("probe-data");
    toy_idx(&data, "train", 64);
    toy_idx(&data, "t10k", 32);
    let loaded = checkpoint::latest(&out).unwrap();
    let probe = ProbeConfig {
        pool: Pool::Mean,
        train_limit: 64,
        test_limit: 32,
        iterations: 100,
        lr: 1e-2,
        seed: 0,
    };
    let (config, model) = (&loaded.state.config, loaded.model(&Device::flex()).unwrap());
    let report = linear_probe(
        config,
        &model,
        &data,
        &probe,
        &Device::flex(),
        &Progress::hidden(),
    )
    .unwrap();
    assert_eq!((report.train_images, report.test_images), (64, 32));
    assert!(report.pretrained_top1 > 0.9, "{report:?}");
    assert!(report.random_top1 > 0.9, "{report:?}");
    let err = linear_probe(
        config,
        &model,
        &out,
        &probe,
        &Device::flex(),
        &Progress::hidden(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("neither an IDX"), "{err}");
}
