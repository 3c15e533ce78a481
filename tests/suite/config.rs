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

/// A step into a TOML value: a table key or an array index.
#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// Numeric leaves: the way to each from the root, and its value.
type Leaves = Vec<(Vec<Step>, toml::Value)>;

/// Every integer and float under `value`, found by walking it.
fn numeric_leaves(value: &toml::Value, at: &mut Vec<Step>, out: &mut Leaves) {
    let mut into = |step, child| {
        at.push(step);
        numeric_leaves(child, at, out);
        at.pop();
    };
    match value {
        toml::Value::Table(t) => t.iter().for_each(|(k, v)| into(Step::Key(k.clone()), v)),
        toml::Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| into(Step::Index(i), v)),
        toml::Value::Integer(_) | toml::Value::Float(_) => out.push((at.clone(), value.clone())),
        _ => {}
    }
}

/// The dotted field name of a leaf, as errors name it (an array element is its array's field).
fn dotted(at: &[Step]) -> String {
    let keys: Vec<&str> = at
        .iter()
        .filter_map(|s| match s {
            Step::Key(k) => Some(k.as_str()),
            Step::Index(_) => None,
        })
        .collect();
    keys.join(".")
}

/// The leaf at the end of `at`.
fn leaf_mut<'a>(mut value: &'a mut toml::Value, at: &[Step]) -> &'a mut toml::Value {
    for step in at {
        value = match step {
            Step::Key(k) => &mut value[k.as_str()],
            Step::Index(i) => &mut value[*i],
        };
    }
    value
}

/// What a careless or hostile file may put in a numeric field of the same TOML type.
fn bad_values(leaf: &toml::Value) -> Vec<(&'static str, toml::Value)> {
    use toml::Value::{Float, Integer};
    match leaf {
        Float(_) => vec![
            ("NaN", Float(f64::NAN)),
            ("inf", Float(f64::INFINITY)),
            ("-inf", Float(f64::NEG_INFINITY)),
            ("0", Float(0.0)),
            ("-1", Float(-1.0)),
            ("1e30", Float(1e30)),
        ],
        _ => vec![
            ("0", Integer(0)),
            ("-1", Integer(-1)),
            ("2^40", Integer(1 << 40)),
            ("i64::MAX", Integer(i64::MAX)),
            ("NaN", Float(f64::NAN)),
            ("1.5", Float(1.5)),
        ],
    }
}

/// The (field, bad value) pairs that are in fact legitimate settings.
const ACCEPTED: [(&str, &str); 15] = [
    // Documented "off" or "none" values.
    ("optim.warmup_steps", "0"),
    ("optim.warmup_fraction", "0"),
    ("optim.clip_grad", "0"),
    ("train.recon_every", "0"),
    ("train.knn_every", "0"),
    ("data.hflip", "0"),
    // MAE's own defaults: warmup from 0, cosine decay to 0.
    ("optim.warmup_start_factor", "0"),
    ("optim.min_lr", "0"),
    // No decay, no momentum, no centring: unusual recipes, not broken ones.
    ("optim.weight_decay", "0"),
    ("optim.beta1", "0"),
    ("optim.beta2", "0"),
    ("data.mean", "0"),
    // Every u64 is a seed.
    ("train.seed", "0"),
    ("train.seed", "2^40"),
    ("train.seed", "i64::MAX"),
];

/// Each preset as a whole TOML file, with its optional numeric fields given, once with `steps`
/// and once with `epochs` (they exclude each other).
fn full_configs() -> Vec<(String, toml::Value)> {
    let mut out = Vec::new();
    for p in Preset::ALL {
        let mut v = toml::Value::try_from(p.config()).unwrap();
        let set = |v: &mut toml::Value, section: &str, key: &str, x: i64| {
            let table = v[section].as_table_mut().unwrap();
            table.insert(key.into(), toml::Value::Integer(x));
        };
        set(&mut v, "optim", "warmup_steps", 100);
        set(&mut v, "train", "memory_budget_mib", 4096);
        set(&mut v, "train", "batch_size", 8);
        let mut by_epochs = v.clone();
        let train = by_epochs["train"].as_table_mut().unwrap();
        train.remove("steps");
        train.insert("epochs".into(), toml::Value::Float(2.0));
        out.push((format!("{} by steps", p.name()), v));
        out.push((format!("{} by epochs", p.name()), by_epochs));
    }
    out
}

/// Parses `text` as the program does; true if refused in one line naming `field`, false if
/// accepted, and a failure (with `case`) for a panic or an error that does not name it.
fn refused_by_name(case: &str, field: &str, text: &str) -> bool {
    let parsed = std::panic::catch_unwind(|| Config::from_toml_str(text, Preset::Tiny))
        .unwrap_or_else(|_| panic!("{case} panicked"));
    let Err(e) = parsed else { return false };
    let message = e.to_string();
    assert!(
        message.contains(field) && !message.contains('\n'),
        "{case}: error `{message}` is not one line naming the field"
    );
    true
}

#[test]
fn every_bad_number_in_every_field_is_refused_by_name() {
    let (mut cases, mut refused, mut seen) = (0, 0, std::collections::BTreeSet::new());
    for (name, base) in full_configs() {
        let text = toml::to_string(&base).unwrap();
        Config::from_toml_str(&text, Preset::Tiny).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut leaves = Vec::new();
        numeric_leaves(&base, &mut Vec::new(), &mut leaves);
        for (at, leaf) in &leaves {
            let field = dotted(at);
            seen.insert(field.clone());
            for (label, bad) in bad_values(leaf) {
                let mut v = base.clone();
                *leaf_mut(&mut v, at) = bad;
                let case = format!("{name}: {field} = {label}");
                cases += 1;
                if refused_by_name(&case, &field, &toml::to_string(&v).unwrap()) {
                    refused += 1;
                } else {
                    let allowed = ACCEPTED.contains(&(field.as_str(), label));
                    assert!(allowed, "{case} was accepted");
                }
            }
        }
    }
    eprintln!(
        "{cases} (field, bad value) cases over {} fields: {refused} refused",
        seen.len()
    );
    for field in [
        "model.in_chans",
        "optim.warmup_steps",
        "train.epochs",
        "train.batch_size",
    ] {
        assert!(seen.contains(field), "the walk missed {field}");
    }
}

#[test]
fn only_rgb_input_is_accepted() {
    let err = Config::from_toml_str("[model]\nin_chans = 1\n", Preset::Tiny).unwrap_err();
    assert!(
        matches!(&err, SaplingError::Config { field, message } if field == "model.in_chans" && message.contains("only 3")),
        "{err}"
    );
}

#[test]
fn command_line_overrides_are_validated_like_the_file() {
    use sapling::cli::TrainArgs;
    type Flag = fn(&mut TrainArgs);
    let cases: [(&str, Flag); 7] = [
        ("train.steps", |a| a.steps = Some(0)),
        ("train.steps", |a| a.steps = Some(u64::MAX)),
        ("train.epochs", |a| a.epochs = Some(f64::INFINITY)),
        ("train.epochs", |a| a.epochs = Some(f64::NAN)),
        ("train.effective_batch", |a| {
            a.effective_batch = Some(usize::MAX)
        }),
        ("train.memory_budget_mib", |a| {
            a.memory_budget = Some(u64::MAX)
        }),
        ("train.checkpoint_every", |a| a.checkpoint_every = Some(0)),
    ];
    for (field, set) in cases {
        let mut args = TrainArgs::default();
        set(&mut args);
        let err = args.resolve().unwrap_err();
        assert!(
            matches!(&err, SaplingError::Config { field: f, .. } if f == field),
            "{field}: {err}"
        );
    }
    let args = TrainArgs {
        seed: Some(u64::MAX),
        ..TrainArgs::default()
    };
    assert_eq!(args.resolve().unwrap().train.seed, u64::MAX);
}
