//! The browser's non-blocking paths (awaited readbacks, the async planner, the in-memory image
//! stream) against the blocking ones, driven here by `pollster` on Flex. The browser itself is
//! tested by `web/test.sh`.

use std::sync::Arc;

use sapling::config::{BatchSize, DataConfig};
use sapling::data::{ImageSource, Loader, Shard, Stream};
use sapling::model::MaskPlan;
use sapling::planner::{DeviceLimits, TrialOptions};
use sapling::train::{Timing, Trainer, plan_async};

use crate::common::{copy_model, flex, micro_config, temp_dir};

#[test]
fn awaited_steps_match_blocking_steps() {
    let config = micro_config("async-step");
    let device = flex().autodiff();
    let mut blocking = Trainer::new(&config, &flex()).unwrap();
    let model = copy_model(blocking.model(), &device);
    let mut awaited = Trainer::from_model(&config, model, &device).unwrap();
    let data = DataConfig {
        workers: 1,
        ..DataConfig::default()
    };
    let mut loader = Loader::new(ImageSource::Embedded, &data, 32, 4, 0, 0);
    // Plain and timed awaited steps alternate: both must leave the same weights behind.
    for step in 0..4 {
        let batch = loader.next_batch().unwrap();
        let x = blocking.step(step, 1e-3, vec![batch.clone()]).unwrap();
        let y = if step % 2 == 0 {
            pollster::block_on(awaited.step_async(step, 1e-3, vec![batch])).unwrap()
        } else {
            let timed = awaited.step_timed_async(step, 1e-3, vec![batch], Timing::Split);
            let (y, times) = pollster::block_on(timed).unwrap();
            let forward = times.forward.expect("a split step times its forward pass");
            assert!(
                0.0 < forward && forward < times.forward_backward && times.optimizer >= 0.0,
                "{times:?}"
            );
            y
        };
        assert_eq!((x.loss, x.grad_norm), (y.loss, y.grad_norm), "step {step}");
    }
}

#[test]
fn the_async_planner_walks_like_the_blocking_one() {
    let mut config = micro_config("async-plan");
    config.train.batch_size = BatchSize::Auto;
    config.train.effective_batch = 8;
    let selected = sapling::device::select(sapling::config::DeviceChoice::Cpu).unwrap();
    let limits = DeviceLimits::of(&selected, None);
    let options = TrialOptions { sizes: 2, steps: 1 };
    let plan = pollster::block_on(plan_async(&config, &flex(), &limits, options)).unwrap();
    // Divisors of 8, largest first, two of them tried for real.
    let tried: Vec<usize> = plan.trials.iter().map(|t| t.micro_batch).collect();
    assert_eq!(tried, [8, 4], "{plan:?}");
    assert!(plan.trials.iter().all(|t| t.ok() && t.images_per_sec > 0.0));
    assert!(tried.contains(&plan.micro_batch));
    assert_eq!(plan.micro_batch * plan.accum, 8);
}

#[test]
fn the_in_memory_stream_matches_the_threaded_loader() {
    let embedded = ImageSource::Embedded;
    let decoded: Vec<_> = (0..embedded.len())
        .map(|i| (embedded.name(i), embedded.load(i).unwrap()))
        .collect();
    let data = DataConfig {
        workers: 2,
        ..DataConfig::default()
    };
    let mut loader = Loader::new(ImageSource::Embedded, &data, 32, 5, 7, 0);
    let source = Arc::new(ImageSource::decoded(decoded).unwrap());
    let mut stream = Stream::new(source, &data, 32, 5, 7, Shard::WHOLE);
    // Four micro-batches cross the 14-photo epoch boundary twice. The embedded photos are
    // decoded whole, as the page's are, so the pixels are the same bits.
    for m in 0..6 {
        let a = loader.next_batch().unwrap();
        let b = stream.batch(m).unwrap();
        assert_eq!(a.first_sample, b.first_sample);
        assert_eq!(a.images, b.images, "micro-batch {m}");
    }
    assert!(ImageSource::decoded(Vec::new()).is_err());
}

#[test]
fn awaited_pictures_and_exports_match_the_blocking_ones() {
    let config = micro_config("async-outputs");
    let trainer = Trainer::new(&config, &flex()).unwrap();
    let model = trainer.model();
    let c = &model.config;
    let (values, b) = sapling::data::augment::fixed_batch(
        &ImageSource::Embedded,
        3,
        c.img_size as u32,
        &config.data,
    );
    let plan = MaskPlan::random(b, c.num_patches(), c.num_visible(), 1);
    let blocking = sapling::viz::recon_grid(model, values.clone(), &plan, &config.data).unwrap();
    let awaited = pollster::block_on(sapling::viz::recon_grid_async(
        model,
        values,
        &plan,
        &config.data,
    ))
    .unwrap();
    assert_eq!(blocking, awaited);

    let path = temp_dir("async-export").join("encoder.safetensors");
    sapling::export::write_encoder(model, "tiny", &path).unwrap();
    let bytes =
        pollster::block_on(sapling::export::encoder_safetensors_async(model, "tiny")).unwrap();
    let written = std::fs::read(&path).unwrap();
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&written).unwrap(),
        safetensors::SafeTensors::deserialize(&bytes).unwrap(),
    );
    let metadata = |bytes: &[u8]| safetensors::SafeTensors::read_metadata(bytes).unwrap().1;
    assert_eq!(metadata(&written).metadata(), metadata(&bytes).metadata());
    let mut names = a.names();
    names.sort();
    // cls, pos embed, patch embed weight and bias, 12 per block, the final norm.
    assert_eq!(names.len(), 4 + 12 * c.depth + 2, "{names:?}");
    for name in names {
        let (x, y) = (a.tensor(name).unwrap(), b.tensor(name).unwrap());
        assert_eq!((x.shape(), x.data()), (y.shape(), y.data()), "{name}");
    }
}

#[test]
fn the_mask_ratio_can_change_between_steps() {
    let config = micro_config("mask-ratio");
    let mut trainer = Trainer::new(&config, &flex()).unwrap();
    let l = config.model.num_patches();
    assert_eq!(trainer.mask_for(0, 2).num_visible, l / 4);
    trainer.set_mask_ratio(0.5).unwrap();
    assert_eq!(trainer.mask_for(0, 2).num_visible, l / 2);
    let batch = sapling::data::Batch::synthetic(2, 32, 0);
    assert!(trainer.step(0, 1e-3, vec![batch]).unwrap().loss.is_finite());
    let err = trainer.set_mask_ratio(1.0).unwrap_err().to_string();
    assert!(err.contains("model.mask_ratio"), "{err}");
}
