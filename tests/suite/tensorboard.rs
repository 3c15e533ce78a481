//! TensorBoard event files: what a run writes reads back record by record (CRCs checked) as
//! the metrics, pictures and config of the run, and a resumed or branched run shows as one
//! curve by TensorBoard's own rule (a restart marker drops what earlier files logged from its
//! step on).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use sapling::checkpoint;
use sapling::tensorboard::{Event, FILE_PREFIX, read_events};
use sapling::train::{RunOptions, train};

use crate::common::{losses, micro_config};

/// Every event of every event file in `dir`, files in name order (as TensorBoard reads them).
fn events(dir: &Path) -> Vec<Vec<Event>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(FILE_PREFIX)
        })
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| read_events(&std::fs::read(f).unwrap()).unwrap())
        .collect()
}

/// The curve of `tag` as TensorBoard shows it: files in order, and at a restart marker of step
/// `s` whatever was logged at `s` or later dropped.
fn curve(files: &[Vec<Event>], tag: &str) -> BTreeMap<u64, f32> {
    let mut curve = BTreeMap::new();
    for event in files.iter().flatten() {
        match event {
            Event::Start { step } => curve.retain(|s, _| s < step),
            Event::Scalars { step, values } => {
                for (t, v) in values {
                    if t == tag {
                        curve.insert(*step, *v);
                    }
                }
            }
            _ => {}
        }
    }
    curve
}

fn as_f32(losses: &BTreeMap<u64, f64>) -> BTreeMap<u64, f32> {
    losses.iter().map(|(s, l)| (*s, *l as f32)).collect()
}

#[test]
fn a_run_writes_its_metrics_pictures_and_config_as_events() {
    let mut c = micro_config("tb-run");
    (c.train.steps, c.train.log_every, c.train.recon_every) = (Some(6), 1, 3);
    train(&c, RunOptions::default()).unwrap();
    let files = events(&c.train.out);
    assert_eq!(files.len(), 1);
    let file = &files[0];
    assert_eq!(file[0], Event::FileVersion("brain.Event:2".into()));
    assert!(
        file.iter()
            .any(|e| matches!(e, Event::Text { tag, text, .. }
            if tag == "config" && text.contains("[train]"))),
        "the config as text"
    );
    assert_eq!(curve(&files, "train/loss"), as_f32(&losses(&c.train.out)));
    for tag in [
        "train/lr",
        "train/grad_norm",
        "speed/images_per_sec",
        "memory/rss_bytes",
    ] {
        assert_eq!(curve(&files, tag).len(), 6, "{tag}");
    }
    let pictures: Vec<u64> = file
        .iter()
        .filter_map(|e| match e {
            Event::Image { step, png, .. } => {
                image::load_from_memory(png).expect("a PNG");
                Some(*step)
            }
            _ => None,
        })
        .collect();
    assert_eq!(pictures, vec![3, 6]);
}

#[test]
fn a_branched_run_shows_as_one_curve() {
    let mut c = micro_config("tb-branch");
    (c.train.steps, c.train.log_every, c.train.recon_every) = (Some(6), 1, 0);
    c.train.checkpoint_every = 2;
    train(&c, RunOptions::default()).unwrap();
    // From step 2, four steps: steps 3 and 4 again, on the new branch.
    let from = checkpoint::load(&checkpoint::list(&c.train.out)[0]).unwrap();
    let mut config = from.state.config.clone();
    config.train.steps = Some(4);
    let options = RunOptions {
        resume: Some(Arc::new(from)),
        ..RunOptions::default()
    };
    train(&config, options).unwrap();
    let files = events(&c.train.out);
    assert_eq!(files.len(), 2);
    assert_eq!(
        files[1][1],
        Event::Start { step: 3 },
        "the restart marker opens the new file"
    );
    let shown = curve(&files, "train/loss");
    assert_eq!(shown, as_f32(&losses(&c.train.out)));
    assert_eq!(shown.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
}

#[test]
fn tensorboard_can_be_turned_off() {
    let mut c = micro_config("tb-off");
    c.train.tensorboard = false;
    train(&c, RunOptions::default()).unwrap();
    assert!(events(&c.train.out).is_empty());
}
