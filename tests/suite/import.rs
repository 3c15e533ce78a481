//! Released weights in (`import`) and out (`export --format`): the fixtures in
//! `tests/fixtures/import` hold one micro MAE in every layout sapling reads, and what PyTorch
//! computed with it (`make_fixtures.py`); sapling's forward pass on the same input must give
//! the same numbers, every layout must round-trip bit for bit, and bad files must be refused
//! with a message naming them.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use sapling::config::{Config, ModelConfig, PosEmbed, Preset};
use sapling::export::{
    Export, RawTensor, model_tensors, write_f32_tensors, write_safetensors, write_weights,
};
use sapling::import::{self, Report};
use sapling::layout::Layout;
use sapling::model::{MaskPlan, MaskedAutoencoder, init};
use sapling::ops::Precision;

use crate::common::{flex, max_difference, temp_dir};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(name)
}

/// The fixtures' model (`micro.toml`, `MICRO` in `make_fixtures.py`).
fn micro(pos_embed: PosEmbed) -> ModelConfig {
    let config = Config::from_toml_file(&fixture("micro.toml"), Preset::Tiny).unwrap();
    ModelConfig {
        pos_embed,
        ..config.model
    }
}

fn load(path: &Path, config: &ModelConfig) -> sapling::Result<(MaskedAutoencoder, Report)> {
    let device = flex();
    device.seed(7);
    let model = MaskedAutoencoder::new(config, &device);
    init::materialize(&model);
    import::read(path)?.load(model, "micro")
}

/// `expected.safetensors`: name → (shape, f32 values; int64 read as f32).
fn expected(name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(fixture("expected.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = file.tensor(name).unwrap();
    let values = match t.dtype() {
        safetensors::Dtype::F32 => t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        safetensors::Dtype::I64 => t
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32)
            .collect(),
        other => panic!("{name}: {other:?}"),
    };
    (t.shape().to_vec(), values)
}

/// The fixtures' images and masks as sapling's batch.
fn input(config: &ModelConfig, device: &Device) -> (Tensor<4>, MaskPlan) {
    let (shape, images) = expected("images");
    let (_, ids) = expected("ids_shuffle");
    let (b, l) = (shape[0], config.num_patches());
    let ids_shuffle: Vec<usize> = ids.iter().map(|&i| i as usize).collect();
    let mut ids_restore = vec![0; b * l];
    let mut mask = vec![1.0f32; b * l];
    let k = config.num_visible();
    for s in 0..b {
        for (rank, &patch) in ids_shuffle[s * l..][..l].iter().enumerate() {
            ids_restore[s * l + patch] = rank;
            if rank < k {
                mask[s * l + patch] = 0.0;
            }
        }
    }
    let plan = MaskPlan {
        batch: b,
        num_patches: l,
        num_visible: k,
        ids_shuffle,
        ids_restore,
        mask,
    };
    let imgs = Tensor::from_data(TensorData::new(images, [shape[0], 3, 16, 16]), device);
    (imgs, plan)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

fn latent(model: &MaskedAutoencoder, imgs: Tensor<4>, plan: &MaskPlan) -> Vec<f32> {
    let device = imgs.device();
    let rows = |v: Vec<i64>| {
        let n = v.len();
        Tensor::<1, Int>::from_data(TensorData::new(v, [n]), &device)
    };
    let keep = plan.keep_rows();
    let pos: Vec<i64> = keep.iter().map(|r| r % plan.num_patches as i64).collect();
    values(model.encode(imgs, rows(keep), rows(pos), plan.num_visible))
}

#[test]
fn every_layout_computes_what_pytorch_computed() {
    let files = [
        ("mae_full.pth", PosEmbed::Mae, true),
        ("mae_encoder.pth", PosEmbed::Mae, false),
        ("timm_encoder.safetensors", PosEmbed::Mae, false),
        ("hf_vitmae.safetensors", PosEmbed::Mae, true),
        ("hf_vitmae_v5.safetensors", PosEmbed::Mae, true),
        ("sapiens_clean.pth", PosEmbed::Mmpretrain, false),
        ("sapiens_full.pth", PosEmbed::Mmpretrain, true),
    ];
    for (file, pos, whole) in files {
        let config = micro(pos);
        let imported = import::read(&fixture(file)).unwrap();
        assert_eq!(imported.pos_embed().unwrap(), Some(pos), "{file}");
        let (model, report) = load(&fixture(file), &config).unwrap();
        assert_eq!(report.encoder, 29, "{file}: {report}");
        assert_eq!(
            report.decoder,
            if whole { 19 } else { 0 },
            "{file}: {report}"
        );
        let (imgs, plan) = input(&config, &flex());
        let name = pos.name();
        let got = latent(&model, imgs.clone(), &plan);
        let (_, want) = expected(&format!("latent_{name}"));
        let diff = max_difference(&got, &want);
        eprintln!("{file}: encoder output within {diff:e} of PyTorch's");
        assert!(
            diff < 1e-5,
            "{file}: encoder output differs from PyTorch's by {diff}"
        );
        if whole {
            let loss = values(model.forward(imgs, &plan).loss)[0];
            let (_, want) = expected(&format!("loss_{name}"));
            let rel = ((loss - want[0]) / want[0]).abs();
            eprintln!(
                "{file}: loss {loss} vs PyTorch's {} (relative {rel:e})",
                want[0]
            );
            assert!(
                rel < 1e-5,
                "{file}: loss {loss} vs PyTorch's {} (rel {rel:e})",
                want[0]
            );
        }
    }
}

#[test]
fn every_layout_round_trips_bit_for_bit() {
    let config = micro(PosEmbed::Mae);
    let (model, _) = load(&fixture("mae_full.pth"), &config).unwrap();
    let original = model_tensors(&model).unwrap();
    let dir = temp_dir("import-round-trip");
    for layout in [Layout::Timm, Layout::HuggingFace, Layout::Mmpretrain] {
        for with_decoder in [false, true] {
            let path = dir.join(format!("{layout:?}-{with_decoder}.safetensors"));
            let what = Export {
                layout,
                with_decoder,
                dtype: Precision::F32,
            };
            let n = write_weights(&model, "micro", &path, what).unwrap();
            let imported = import::read(&path).unwrap();
            assert_eq!(imported.layout(), layout);
            let (back, report) = load(&path, &config).unwrap();
            assert_eq!(
                report.encoder + report.decoder,
                29 + 19 * with_decoder as usize
            );
            // 30 encoder and 20 decoder tensors; Hugging Face's q, k, v add 4 per block.
            let blocks = 2 + with_decoder as usize;
            let hf = if layout == Layout::HuggingFace {
                4 * blocks
            } else {
                0
            };
            assert_eq!(n, 30 + 20 * with_decoder as usize + hf);
            let restored = model_tensors(&back).unwrap();
            let count = if with_decoder { original.len() } else { 30 };
            for (a, b) in original.iter().zip(&restored).take(count) {
                assert_eq!(a.name, b.name);
                let same = a
                    .values
                    .iter()
                    .zip(&b.values)
                    .all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(
                    same,
                    "{layout:?} (decoder {with_decoder}): {} changed",
                    a.name
                );
            }
        }
    }
}

/// The message of a refused file, which must name it.
fn refusal(path: &Path, config: &ModelConfig) -> String {
    let err = match load(path, config) {
        Ok(_) => panic!("{} was accepted", path.display()),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&path.display().to_string()) || err.contains("model.pos_embed"),
        "the message names neither the file nor the field: {err}"
    );
    err
}

#[test]
fn bad_files_are_refused_with_a_message() {
    let config = micro(PosEmbed::Mae);
    let dir = temp_dir("import-refusals");
    // Cut short: a ZIP without its directory, a safetensors file without its data.
    for name in ["mae_full.pth", "hf_vitmae.safetensors"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let cut = dir.join(format!("cut-{name}"));
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = refusal(&cut, &config);
        assert!(err.contains("complete"), "{name}: {err}");
    }
    let err = refusal(&fixture("not_a_state_dict.pth"), &config);
    assert!(err.contains("found list"), "{err}");
    let err = refusal(&fixture("other_model.pth"), &config);
    assert!(err.contains("no ViT patch embedding"), "{err}");
    let noise = dir.join("noise.pth");
    std::fs::write(
        &noise,
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    refusal(&noise, &config);
    let empty = dir.join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    refusal(&empty, &config);
}

#[test]
fn another_model_is_refused_naming_its_shapes() {
    // The micro file into `tiny`: every mismatch in one message, and what the file is.
    let err = refusal(&fixture("mae_full.pth"), &Preset::Tiny.config().model);
    assert!(err.contains("dim 16, depth 2, MLP 64, patch 4"), "{err}");
    assert!(
        err.contains("no preset") && err.contains("you chose micro"),
        "{err}"
    );
    assert!(
        err.contains("`cls_token` is [1, 1, 16] in the file, [1, 1, 192] here"),
        "{err}"
    );
    // A deeper model than the file: the missing blocks are named.
    let deeper = ModelConfig {
        depth: 3,
        ..micro(PosEmbed::Mae)
    };
    let err = refusal(&fixture("mae_full.pth"), &deeper);
    assert!(err.contains("`blocks.2.norm1.weight` is missing"), "{err}");
    // Sapiens' row-first tables into a model built column first.
    let err = refusal(&fixture("sapiens_full.pth"), &micro(PosEmbed::Mae));
    assert!(err.contains("model.pos_embed = \"mmpretrain\""), "{err}");
}

#[test]
fn a_learned_position_table_is_refused() {
    let config = micro(PosEmbed::Mae);
    let (model, _) = load(&fixture("mae_full.pth"), &config).unwrap();
    let mut tensors = model_tensors(&model).unwrap();
    let pos = tensors.iter_mut().find(|t| t.name == "pos_embed").unwrap();
    pos.values[40] += 0.5;
    let path = temp_dir("import-learned").join("learned.safetensors");
    write_f32_tensors(tensors, &[], &path).unwrap();
    let err = refusal(&path, &config);
    assert!(err.contains("not a fixed 2-D sin-cos table"), "{err}");
}

#[test]
fn another_resolution_builds_its_own_position_tables() {
    // A 16-px file at 32 px: the same weights, sin-cos tables for the 8×8 grid.
    let config = ModelConfig {
        img_size: 32,
        ..micro(PosEmbed::Mae)
    };
    let (model, report) = load(&fixture("mae_full.pth"), &config).unwrap();
    assert_eq!(report.grids, Some((4, 8)));
    assert!(
        report.to_string().contains("8×8 grid (the file's is 4×4)"),
        "{report}"
    );
    assert_eq!(model.pos_embed.dims(), [1 + 64, 16]);
}

#[test]
fn an_encoder_only_start_initialises_the_decoder_as_mae_does() {
    // `train --init-from` an encoder: the encoder is the file's, the decoder MAE's
    // initialisation (xavier-uniform weights, zero biases, unit norms, N(0, 0.02) mask token).
    // (That it is exactly a fresh run's draw holds by construction, the same seed drawn in the
    // same order; Flex's generator is shared by the tests running beside this one.)
    let mut config = crate::common::micro_config("import-init");
    config.model = micro(PosEmbed::Mae);
    config.train.init_from = Some(fixture("mae_encoder.pth"));
    let levers = sapling::planner::Levers::of(&config, true);
    let (started, report) = sapling::train::initial_trainer(&config, &flex(), levers).unwrap();
    let report = report.unwrap();
    assert_eq!((report.encoder, report.decoder), (29, 0));
    let started = model_tensors(started.model()).unwrap();
    let (file, _) = load(&fixture("mae_encoder.pth"), &config.model).unwrap();
    let file = model_tensors(&file).unwrap();
    for (s, f) in started.iter().zip(&file) {
        let v = &s.values;
        let decoder = s.name.starts_with("decoder") || s.name == "mask_token";
        if !decoder {
            assert_eq!(v, &f.values, "{} is not the file's", s.name);
        } else if s.name == "decoder_pos_embed" {
            continue;
        } else if s.name.ends_with(".bias") {
            assert!(v.iter().all(|x| *x == 0.0), "{} is not zero", s.name);
        } else if s.name.contains("norm") {
            assert!(v.iter().all(|x| *x == 1.0), "{} is not one", s.name);
        } else if s.name == "mask_token" {
            let sd = (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
            assert!(sd > 0.005 && sd < 0.06, "mask token spread {sd}");
        } else {
            let [fan_out, fan_in] = s.shape[..] else {
                panic!("{}", s.name)
            };
            let bound = (6.0 / (fan_in + fan_out) as f32).sqrt();
            let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            assert!(
                max <= bound && max > bound / 2.0,
                "{}: {max} vs {bound}",
                s.name
            );
        }
    }
}

#[test]
fn a_run_refuses_another_models_weights_before_it_starts() {
    // Checked with the config, before the run claims its folder or touches a device.
    let mut config = crate::common::micro_config("import-refused-run");
    config.train.init_from = Some(fixture("mae_full.pth"));
    let err = sapling::train::train(&config, Default::default())
        .expect_err("a 16-wide file does not fit a 32-wide model")
        .to_string();
    assert!(
        err.contains("mae_full.pth") && err.contains("you chose"),
        "{err}"
    );
    let written = std::fs::read_dir(&config.train.out).unwrap().count();
    assert_eq!(written, 0, "the refused run wrote into its folder");
}

#[test]
fn bf16_weights_load_as_rounded_f32() {
    // Sapiens also ships bf16 files: every value converted, the bf16 position tables still
    // recognised as sin-cos.
    let config = micro(PosEmbed::Mae);
    let (model, _) = load(&fixture("mae_full.pth"), &config).unwrap();
    let tensors = model_tensors(&model).unwrap();
    let round = |v: &f32| burn::tensor::bf16::from_f32(*v);
    let raw: Vec<RawTensor> = tensors
        .iter()
        .map(|t| RawTensor {
            name: t.name.clone(),
            dtype: safetensors::Dtype::BF16,
            shape: t.shape.clone(),
            bytes: t
                .values
                .iter()
                .flat_map(|v| round(v).to_le_bytes())
                .collect(),
        })
        .collect();
    let path = temp_dir("import-bf16").join("bf16.safetensors");
    write_safetensors(&raw, &[], &path).unwrap();
    let (back, report) = load(&path, &config).unwrap();
    assert_eq!((report.encoder, report.decoder), (29, 19));
    for (a, b) in tensors.iter().zip(model_tensors(&back).unwrap()) {
        if a.name.ends_with("pos_embed") {
            continue; // sapling's own f32 tables
        }
        let want: Vec<f32> = a.values.iter().map(|v| round(v).to_f32()).collect();
        assert_eq!(want, b.values, "{}", a.name);
    }
}

#[test]
fn a_run_from_sapiens_weights_resumes_with_its_tables() {
    use sapling::cli::TrainArgs;
    use sapling::config::{BatchSize, DeviceChoice};
    let out = temp_dir("import-resume");
    let args = |init_from: Option<PathBuf>, steps, resume| TrainArgs {
        config: Some(fixture("micro.toml")),
        init_from,
        device: Some(DeviceChoice::Cpu),
        steps: Some(steps),
        batch_size: Some(BatchSize::Fixed(4)),
        effective_batch: Some(4),
        checkpoint_every: Some(2),
        out: Some(out.clone()),
        resume,
        ..Default::default()
    };
    let (config, _) = args(Some(fixture("sapiens_clean.pth")), 2, None)
        .resolve_run()
        .unwrap();
    assert_eq!(config.model.pos_embed, PosEmbed::Mmpretrain);
    sapling::train::train(&config, Default::default()).unwrap();
    // Resumed with the same --config but no --init-from: the checkpoint's tables, not a
    // mismatch with the config's default layout.
    let (resumed, loaded) = args(None, 4, Some(None)).resolve_run().unwrap();
    assert!(loaded.is_some());
    assert_eq!(resumed.model.pos_embed, PosEmbed::Mmpretrain);
}

#[test]
fn a_fine_tuned_vit_is_refused_for_its_tensors_not_its_shapes() {
    // timm's fine-tuned ViTs pool with `fc_norm` instead of `norm`: same shapes, other tensors.
    let config = micro(PosEmbed::Mae);
    let (model, _) = load(&fixture("mae_full.pth"), &config).unwrap();
    let mut tensors = model_tensors(&model).unwrap();
    for t in tensors.iter_mut().filter(|t| t.name.starts_with("norm.")) {
        t.name = format!("fc_{}", t.name);
    }
    let path = temp_dir("import-fc-norm").join("finetuned.safetensors");
    write_f32_tensors(tensors, &[], &path).unwrap();
    let err = refusal(&path, &config);
    assert!(err.contains("its shapes are this model's"), "{err}");
    assert!(err.contains("`norm.weight` is missing"), "{err}");
}
