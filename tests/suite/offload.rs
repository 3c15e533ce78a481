//! The optimizer offloaded to the host: the device optimizer's bits on Flex (same arithmetic),
//! exact resumes, and checkpoints that resume across the lever both ways.

use sapling::checkpoint::{self, TrainState};
use sapling::config::{BatchSize, Config, Switch};
use sapling::data::{Batch, ImageSource, Loader};
use sapling::dist::flat::flat_params;
use sapling::model::MaskedAutoencoder;
use sapling::planner::{Levers, Offload};
use sapling::train::{StepStats, Trainer};

use crate::common::{
    copy_model, flex, micro_config, temp_dir, uninterrupted_and_resumed, wgpu_or_skip,
};

/// Two micro-batches a step, so accumulation is covered; clipping active (a small limit).
fn config(name: &str) -> Config {
    let mut cfg = micro_config(name);
    cfg.train.effective_batch = 8;
    cfg.optim.clip_grad = 0.05;
    cfg
}

fn levers(cfg: &Config, offload: Offload, checkpointing: bool) -> Levers {
    Levers {
        offload,
        checkpointing,
        ..Levers::of(cfg, true)
    }
}

fn batches(cfg: &Config, steps: usize) -> Vec<Vec<Batch>> {
    let mut loader = Loader::new(ImageSource::Embedded, &cfg.data, 32, 4, 0, 0);
    (0..steps)
        .map(|_| vec![loader.next_batch().unwrap(), loader.next_batch().unwrap()])
        .collect()
}

/// Steps `trainer` over `batches` from step `first`, returning each step's stats.
fn run(trainer: &mut Trainer, first: u64, batches: &[Vec<Batch>]) -> Vec<StepStats> {
    (first..)
        .zip(batches)
        .map(|(step, b)| trainer.step(step, 1e-3, b.clone()).unwrap())
        .collect()
}

fn bits(model: &MaskedAutoencoder) -> Vec<u32> {
    flat_params(model).iter().map(|v| v.to_bits()).collect()
}

/// Every form, with and without checkpointing, against the device optimizer from the same
/// weights over the same batches (`per_step` micro-batches a step): the same bits.
fn same_bits_as_the_device_optimizer(per_step: usize) {
    let cfg = config(&format!("offload-bits-{per_step}"));
    let device = flex().autodiff();
    let data: Vec<Vec<Batch>> = batches(&cfg, 3)
        .into_iter()
        .map(|mut b| {
            b.truncate(per_step);
            b
        })
        .collect();
    let reference = MaskedAutoencoder::new(&cfg.model, &device);
    let trained = |lev: Levers| {
        let model = copy_model(&reference, &device);
        let mut t = Trainer::from_model_with(&cfg, model, &device, lev).unwrap();
        let stats = run(&mut t, 0, &data);
        (stats, bits(t.model()))
    };
    let (want, want_bits) = trained(levers(&cfg, Offload::Off, false));
    assert!(
        want.iter().any(|s| s.grad_norm > cfg.optim.clip_grad),
        "clipping should be active: {want:?}"
    );
    for (offload, checkpointing) in [
        (Offload::Off, true),
        (Offload::Optimizer, false),
        (Offload::Optimizer, true),
        (Offload::Gradients, false),
        (Offload::Gradients, true),
    ] {
        let (got, got_bits) = trained(levers(&cfg, offload, checkpointing));
        let what = format!("{offload:?}, checkpointing {checkpointing}, {per_step} a step");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((g.loss, g.grad_norm), (w.loss, w.grad_norm), "{what}");
        }
        assert!(got_bits == want_bits, "{what}: the weights differ");
    }
}

/// With two micro-batches a step every form accumulates (the device optimizer's backward goes
/// stage by stage then too); with one, the device optimizer differentiates the whole graph at
/// once and the gradients-offloaded form stage by stage without recompute: the same bits with
/// the CPU kernels either way.
#[test]
fn offloaded_steps_are_the_device_optimizers_bits_on_flex() {
    same_bits_as_the_device_optimizer(2);
    same_bits_as_the_device_optimizer(1);
}

/// On WebGPU the offloaded step sums and clips on the host what the device optimizer sums on
/// the device (another order): the same numbers to rounding.
#[test]
fn offloaded_steps_match_the_device_optimizer_on_webgpu() {
    let Some(gpu) = wgpu_or_skip("offloaded_steps_match_the_device_optimizer_on_webgpu") else {
        return;
    };
    let cfg = config("offload-wgpu");
    let device = gpu.device.clone().autodiff();
    let data = batches(&cfg, 2);
    let reference = MaskedAutoencoder::new(&cfg.model, &device);
    let on_device = Levers::of(&cfg, false);
    let trained = |offload: Offload| {
        let model = copy_model(&reference, &device);
        let lev = Levers {
            offload,
            ..on_device
        };
        let mut t = Trainer::from_model_with(&cfg, model, &device, lev).unwrap();
        let stats = run(&mut t, 0, &data);
        (stats, flat_params(t.model()))
    };
    let (want, want_w) = trained(Offload::Off);
    for offload in [Offload::Optimizer, Offload::Gradients] {
        let (got, got_w) = trained(offload);
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g.loss - w.loss).abs() <= 1e-6 * w.loss
                    && (g.grad_norm - w.grad_norm).abs() <= 1e-5 * w.grad_norm,
                "{offload:?}: {g:?} vs {w:?}"
            );
        }
        let worst = got_w
            .iter()
            .zip(&want_w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 1e-5, "{offload:?}: weights differ by {worst}");
    }
}

/// A checkpoint of a trainer with `from` levers, restored into one with `to` levers: the next
/// steps are the bits of the trainer that went on without stopping.
fn resume_across(cfg: &Config, from: Offload, to: Offload) {
    let device = flex().autodiff();
    let data = batches(cfg, 4);
    let model = MaskedAutoencoder::new(&cfg.model, &device);
    let mut a = Trainer::from_model_with(cfg, model, &device, levers(cfg, from, false)).unwrap();
    run(&mut a, 0, &data[..2]);
    let state = TrainState {
        run: String::new(),
        step: 2,
        samples: 16,
        plan: None,
        config: cfg.clone(),
        loss_scale: None,
    };
    let solo = sapling::dist::Solo;
    let out = temp_dir(&format!("offload-across-{from:?}-{to:?}"));
    let path = checkpoint::save(&out, a.model(), a.moments().unwrap(), &state, 3, &solo)
        .unwrap()
        .expect("rank 0 writes");
    let loaded = checkpoint::load(&path).unwrap();
    let fresh = MaskedAutoencoder::new(&cfg.model, &device);
    let mut b = Trainer::from_model_with(cfg, fresh, &device, levers(cfg, to, false)).unwrap();
    b.restore(&loaded, cfg).unwrap();
    let numbers = |stats: Vec<StepStats>| -> Vec<(f64, f64)> {
        stats.iter().map(|s| (s.loss, s.grad_norm)).collect()
    };
    let want = numbers(run(&mut a, 2, &data[2..]));
    let got = numbers(run(&mut b, 2, &data[2..]));
    assert_eq!(got, want, "{from:?} → {to:?}");
    assert!(
        bits(a.model()) == bits(b.model()),
        "{from:?} → {to:?}: weights differ"
    );
}

#[test]
fn checkpoints_resume_exactly_across_the_offload_lever() {
    let cfg = config("offload-across");
    resume_across(&cfg, Offload::Gradients, Offload::Gradients);
    resume_across(&cfg, Offload::Gradients, Offload::Off);
    resume_across(&cfg, Offload::Off, Offload::Optimizer);
    resume_across(&cfg, Offload::Optimizer, Offload::Gradients);
}

#[test]
fn a_killed_offloaded_run_resumes_with_the_same_losses() {
    let dir = temp_dir("offload-kill");
    let mut c = micro_config("offload-kill-cfg");
    c.train.steps = Some(60);
    c.train.batch_size = BatchSize::Fixed(4);
    c.train.effective_batch = 8;
    c.train.log_every = 1;
    c.train.checkpoint_every = 10;
    c.train.offload_optimizer = Switch::On;
    let toml = dir.join("run.toml");
    std::fs::write(&toml, c.to_toml()).unwrap();
    // Resumed with the optimizer back on the device: the same numbers still.
    let (want, got) = uninterrupted_and_resumed(&toml, &dir, 25, &["--offload-optimizer", "false"]);
    assert_eq!(got, want);
    let (reference, killed) = (dir.join("reference"), dir.join("killed"));
    let last = checkpoint::load(&killed.join("checkpoints/step-00000060")).unwrap();
    let levers = last.state.plan.and_then(|p| p.levers).unwrap();
    assert_eq!(levers.offload, Offload::Off, "the resumed run's optimizer");
    let first = checkpoint::load(&reference.join("checkpoints/step-00000060")).unwrap();
    let levers = first.state.plan.and_then(|p| p.levers).unwrap();
    assert_eq!(
        levers.offload,
        Offload::Optimizer,
        "the offloaded run's optimizer"
    );
}
