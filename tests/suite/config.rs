//! The typed config: presets, layering, validation messages.

use sapling::config::{Config, Preset};
use sapling::error::SaplingError;
use sapling::model::analytic_params;

#[test]
fn every_preset_is_valid_and_round_trips_through_toml() {
    for p in Preset::ALL {
        let c = p.config();
        c.validate().unwrap_or_else(|e| panic!("{}: {e}", p.name()));
        assert_eq!(
            Config::from_toml_str(&c.to_toml(), Preset::Tiny).unwrap(),
            c
        );
        assert_eq!(Preset::from_name(p.name()).unwrap(), p);
    }
}

#[test]
fn sapiens_presets_have_the_published_shapes() {
    let shape = |p: Preset| {
        let m = p.config().model;
        (
            m.img_size,
            m.patch_size,
            m.dim,
            m.depth,
            m.heads,
            m.decoder_dim,
            m.decoder_depth,
            m.decoder_heads,
        )
    };
    for (preset, want) in [
        (Preset::Sapiens03b, (1024, 16, 1024, 24, 16, 512, 8, 16)),
        (Preset::Sapiens06b, (1024, 16, 1280, 32, 16, 512, 8, 16)),
        (Preset::Sapiens1b, (1024, 16, 1536, 40, 24, 512, 8, 16)),
        (Preset::Sapiens2b, (1024, 16, 1920, 48, 32, 512, 8, 16)),
    ] {
        assert_eq!(shape(preset), want, "{}", preset.name());
    }
    assert_eq!(shape(Preset::VitB), (224, 16, 768, 12, 12, 512, 8, 16));
    let m = Preset::Sapiens2b.config().model;
    assert_eq!(m.dim / m.heads, 60);
    assert_eq!(m.num_patches(), 4096);
    assert_eq!(m.num_visible(), 1024);
}

#[test]
fn sapiens_parameter_counts_match_the_paper() {
    // Sapiens reports sizes including the decoder and the fixed position tables.
    for (p, reported) in [
        (Preset::Sapiens03b, 0.336e9),
        (Preset::Sapiens06b, 0.664e9),
        (Preset::Sapiens1b, 1.169e9),
        (Preset::Sapiens2b, 2.163e9),
    ] {
        let total = analytic_params(&p.config().model).total() as f64;
        assert!(
            (total - reported).abs() / reported < 0.002,
            "{}: {total} vs reported {reported}",
            p.name()
        );
    }
    // ViT-B/16 by hand: encoder 85,647,360 (patch embed 590,592, cls 768, 12 blocks of
    // 7,087,872, norm 1,536) + decoder 26,008,320.
    assert_eq!(
        analytic_params(&Preset::VitB.config().model).learnable,
        111_655_680
    );
}

#[test]
fn a_file_layers_over_its_preset_and_rejects_unknown_fields() {
    let c = Config::from_toml_str(
        "preset = \"vit-b\"\n[train]\nepochs = 2.0\n[optim]\nwarmup_start_factor = 1e-4\n",
        Preset::Tiny,
    )
    .unwrap();
    assert_eq!(c.preset, Preset::VitB);
    assert_eq!(c.model.dim, 768);
    assert_eq!(
        (c.train.steps, c.train.epochs),
        (None, Some(2.0)),
        "epochs replaces steps"
    );
    assert_eq!(c.optim.warmup_start_factor, 1e-4);
    assert_eq!(
        c.optim.beta2, 0.95,
        "untouched fields keep the preset's values"
    );

    let err = Config::from_toml_str("[model]\ndepht = 3\n", Preset::Tiny).unwrap_err();
    assert!(err.to_string().contains("depht"), "{err}");
    let err = Config::from_toml_str("[model]\npatch_size = 7\n", Preset::Tiny).unwrap_err();
    assert!(
        matches!(&err, SaplingError::Config { field, .. } if field == "model.img_size"),
        "{err}"
    );
    let err = Config::from_toml_str("preset = \"vit-z\"\n", Preset::Tiny).unwrap_err();
    assert!(
        err.to_string().contains("vit-z") && err.to_string().contains("sapiens-2b"),
        "{err}"
    );
    let err = Config::from_toml_str("[optim]\nbeta2 = 1.5\n", Preset::Tiny).unwrap_err();
    assert!(err.to_string().contains("optim.beta2"), "{err}");
}

#[test]
fn a_missing_config_file_is_named() {
    let err = Config::from_toml_file("/nonexistent/run.toml".as_ref(), Preset::Tiny).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/run.toml"), "{err}");
}

#[test]
fn batch_size_is_auto_or_a_divisor_of_the_effective_batch() {
    use sapling::config::BatchSize;
    let parse = |text: &str| Config::from_toml_str(text, Preset::Tiny);
    assert_eq!(
        parse("[train]\nbatch_size = \"auto\"")
            .unwrap()
            .train
            .batch_size,
        BatchSize::Auto
    );
    let c = parse("[train]\nbatch_size = 8\neffective_batch = 64").unwrap();
    assert_eq!(
        (c.train.batch_size, c.train.effective_batch),
        (BatchSize::Fixed(8), 64)
    );
    let err = parse("[train]\nbatch_size = \"big\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("batch_size") && err.contains("auto"), "{err}");
    let err = parse("[train]\nbatch_size = 24").unwrap_err().to_string();
    assert!(
        err.contains("train.batch_size") && err.contains("use 16 (2 accumulation steps)"),
        "{err}"
    );
    let err = parse("[train]\naccum = 2").unwrap_err().to_string();
    assert!(err.contains("accum"), "{err}");
}
