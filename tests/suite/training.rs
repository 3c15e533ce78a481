//! Whole training runs on the CPU backend.

use sapling::config::{BatchSize, DeviceChoice, Preset};
use sapling::train::{RunOptions, train};

use crate::common::temp_dir;

fn mean(xs: &[(u64, f64)]) -> f64 {
    xs.iter().map(|x| x.1).sum::<f64>() / xs.len() as f64
}

#[test]
fn tiny_loss_falls_on_the_embedded_photos() {
    let mut c = Preset::Tiny.config();
    c.train.device = DeviceChoice::Cpu;
    c.train.steps = Some(STEPS);
    c.train.batch_size = BatchSize::Fixed(16);
    c.train.effective_batch = 16;
    c.train.out = temp_dir("loss-falls");
    let summary = train(&c, RunOptions::default()).unwrap();
    assert_eq!(summary.losses.len(), STEPS as usize);
    let (first, last) = (
        mean(&summary.losses[..20]),
        mean(&summary.losses[STEPS as usize - 20..]),
    );
    eprintln!(
        "tiny on Flex: loss {first:.4} -> {last:.4} over {STEPS} steps, {:.1} images/s",
        summary.images_per_sec
    );
    assert!(
        last < 0.8 * first,
        "loss did not fall clearly: {first:.4} -> {last:.4}"
    );
    // The run leaves its config, metrics and a final checkpoint behind.
    for file in [
        "config.toml",
        "metrics.jsonl",
        "checkpoints/step-00000300/manifest.json",
    ] {
        assert!(c.train.out.join(file).is_file(), "{file} missing");
    }
    let lines = std::fs::read_to_string(c.train.out.join("metrics.jsonl")).unwrap();
    let last_line: serde_json::Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    assert_eq!(last_line["step"], STEPS);
    assert!(last_line["grad_norm"].as_f64().unwrap() > 0.0);
}

const STEPS: u64 = 300;

#[test]
fn a_diverging_run_stops_with_a_clear_error() {
    // An lr no config accepts (they stop at 10), given to the trainer directly: the step
    // itself must refuse to apply a non-finite update.
    let mut c = crate::common::micro_config("diverge");
    c.optim.clip_grad = 0.0;
    let mut trainer = sapling::train::Trainer::new(&c, &crate::common::flex()).unwrap();
    let source = sapling::data::ImageSource::Embedded;
    let mut loader = sapling::data::Loader::new(source, &c.data, 32, 4, 0, 0);
    let err = (0..6)
        .find_map(|s| {
            let batch = loader.next_batch().unwrap();
            trainer.step(s, 1e30, vec![batch]).err()
        })
        .expect("the run diverges")
        .to_string();
    assert!(err.contains("non-finite") && err.contains("step"), "{err}");
}
