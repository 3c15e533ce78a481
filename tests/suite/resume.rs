//! Checkpoints: exact resume after SIGKILL, corrupt checkpoints, mismatched presets.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sapling::checkpoint::{self, TrainState};
use sapling::cli::TrainArgs;
use sapling::config::{BatchSize, Preset};
use sapling::data::{ImageSource, Loader};
use sapling::train::{RunOptions, Trainer, train};

use crate::common::{
    flex, kill_at_step, losses, micro_config, temp_dir, train_command, trained_micro,
};

#[test]
fn a_killed_run_resumes_with_the_same_losses() {
    const TOTAL: u64 = 300;
    let dir = temp_dir("kill-resume");
    let mut c = micro_config("kill-resume-cfg");
    c.train.steps = Some(TOTAL);
    c.train.batch_size = BatchSize::Fixed(8);
    c.train.effective_batch = 8;
    c.train.log_every = 1;
    c.train.checkpoint_every = 40;
    let toml = dir.join("run.toml");
    std::fs::write(&toml, c.to_toml()).unwrap();
    let run = |out: &Path, extra: &[&str]| train_command(&toml, out, extra);

    let reference = dir.join("reference");
    assert!(run(&reference, &[]).status().unwrap().success());
    let want = losses(&reference);
    assert_eq!(want.len() as u64, TOTAL);

    // Kill -9 once a checkpoint exists and the run has gone past it.
    let killed = dir.join("killed");
    kill_at_step(&mut run(&killed, &[]), &killed, 100);
    let before = losses(&killed).keys().last().copied().unwrap();
    assert!(before < TOTAL, "killed at step {before}");

    // A write cut short by a kill leaves a temporary folder; the next save clears it.
    std::fs::create_dir_all(killed.join("checkpoints/.step-00000001.tmp-1")).unwrap();
    assert!(run(&killed, &["--resume"]).status().unwrap().success());
    let leftovers: Vec<_> = std::fs::read_dir(killed.join("checkpoints"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let got = losses(&killed);
    assert_eq!(got.len() as u64, TOTAL);
    for (step, want) in &want {
        let got = got[step];
        assert!(
            (got - want).abs() <= 1e-6 * want.abs(),
            "step {step}: {got} after resume vs {want}"
        );
    }
    assert_eq!(
        checkpoint::list(&killed).len(),
        3,
        "keeps the last 3 checkpoints"
    );
}

#[test]
fn a_corrupt_or_half_written_checkpoint_falls_back_to_the_previous_one() {
    let mut c = micro_config("corrupt");
    c.train.steps = Some(6);
    c.train.checkpoint_every = 2;
    train(&c, RunOptions::default()).unwrap();
    let out = &c.train.out;
    let all = checkpoint::list(out);
    assert_eq!(all.len(), 3);
    assert_eq!(checkpoint::latest(out).unwrap().state.step, 6);

    // Flip one byte of the newest model file: detected by its checksum.
    let model = all[2].join("model.bpk");
    let mut bytes = std::fs::read(&model).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&model, bytes).unwrap();
    let err = checkpoint::load(&all[2])
        .expect_err("corruption detected")
        .to_string();
    assert!(
        err.contains("model.bpk") && err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(checkpoint::latest(out).unwrap().state.step, 4);

    // A folder without its manifest is an unfinished write.
    std::fs::remove_file(all[1].join("manifest.json")).unwrap();
    assert_eq!(checkpoint::latest(out).unwrap().state.step, 2);
}

#[test]
fn resuming_with_another_preset_is_refused_by_name() {
    let mut c = micro_config("other-preset");
    c.train.steps = Some(2);
    train(&c, RunOptions::default()).unwrap();
    let args = TrainArgs {
        preset: Some(Preset::VitB),
        out: Some(c.train.out.clone()),
        resume: Some(None),
        ..TrainArgs::default()
    };
    let err = args.resolve_run().expect_err("refused").to_string();
    assert!(
        err.contains("vit-b") && err.contains("step-00000002"),
        "{err}"
    );
    let none = TrainArgs {
        out: Some(temp_dir("no-checkpoints")),
        resume: Some(None),
        ..TrainArgs::default()
    };
    let err = none
        .resolve_run()
        .expect_err("nothing to resume")
        .to_string();
    assert!(err.contains("no checkpoint"), "{err}");
}

fn weights(m: &sapling::model::MaskedAutoencoder) -> Vec<Vec<f32>> {
    sapling::export::encoder_tensors(m)
        .unwrap()
        .into_iter()
        .map(|t| t.values)
        .collect()
}

/// Restoring reproduces the weights and the next step bit for bit, including the parameters of
/// the no-decay group (whose membership is by parameter id).
#[test]
fn restore_is_bit_exact() {
    let cfg = micro_config("exact-restore");
    let dev = flex();
    let mut a = Trainer::new(&cfg, &dev).unwrap();
    let mut loader = Loader::new(ImageSource::Embedded, &cfg.data, 32, 4, 0, 0);
    for s in 0..3 {
        a.step(s, 1e-3, vec![loader.next_batch().unwrap()]).unwrap();
    }
    let state = TrainState {
        run: String::new(),
        step: 3,
        samples: 12,
        plan: None,
        config: cfg.clone(),
        loss_scale: None,
    };
    let moments = a.moments().unwrap();
    let solo = sapling::dist::Solo;
    let path = checkpoint::save(&cfg.train.out, a.model(), moments, &state, 3, &solo)
        .unwrap()
        .expect("rank 0 writes the checkpoint");
    let loaded = checkpoint::load(&path).unwrap();
    let mut b = Trainer::new(&cfg, &dev).unwrap();
    b.restore(&loaded, &cfg).unwrap();
    assert!(
        weights(a.model()) == weights(b.model()),
        "weights differ after restore"
    );
    let batch = loader.next_batch().unwrap();
    let sa = a.step(3, 1e-3, vec![batch.clone()]).unwrap();
    let sb = b.step(3, 1e-3, vec![batch]).unwrap();
    assert_eq!(sa, sb);
    assert!(
        weights(a.model()) == weights(b.model()),
        "weights differ after one more step"
    );
}

#[test]
fn ctrl_c_writes_a_checkpoint_and_exits_cleanly() {
    let dir = temp_dir("ctrl-c");
    let mut c = micro_config("ctrl-c-cfg");
    c.train.steps = Some(100_000);
    c.train.log_every = 1;
    let toml = dir.join("run.toml");
    std::fs::write(&toml, c.to_toml()).unwrap();
    let out = dir.join("run");
    let child = Command::new(env!("CARGO_BIN_EXE_sapling"))
        .args(["train", "--config"])
        .arg(&toml)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while losses(&out).len() < 5 {
        assert!(Instant::now() < deadline, "the run made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "exit status {:?}", output.status);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("interrupted at step"), "{stdout}");
    let last = checkpoint::latest(&out).unwrap();
    assert_eq!(last.state.step, *losses(&out).keys().last().unwrap());
}

#[test]
fn weights_that_do_not_fit_the_model_are_an_error_not_a_panic() {
    let (c, loaded) = trained_micro("misfit");
    let mut other = c.model.clone();
    other.dim = 48;
    let model = sapling::model::MaskedAutoencoder::new(&other, &flex());
    let err = loaded
        .load_model(model)
        .expect_err("shapes differ")
        .to_string();
    assert!(
        err.contains("model.bpk") && err.contains("does not fit"),
        "{err}"
    );
}

/// A checkpoint that does not load leaves the trainer as it was: it still has its model and
/// steps (the browser keeps training after any failed call).
#[test]
fn a_failed_restore_keeps_the_trainers_model() {
    let (c, loaded) = trained_micro("restore-fails");
    let mut other = c.clone();
    other.model.dim = 48;
    other.model.decoder_dim = 48;
    let mut trainer = Trainer::new(&other, &flex()).unwrap();
    let before = weights(trainer.model());
    let err = trainer
        .restore(&loaded, &other)
        .expect_err("another model")
        .to_string();
    assert!(err.contains("does not fit"), "{err}");
    assert!(
        weights(trainer.model()) == before,
        "the weights are the trainer's own"
    );
    let mut loader = Loader::new(ImageSource::Embedded, &other.data, 32, 4, 0, 0);
    let stats = trainer
        .step(0, 1e-3, vec![loader.next_batch().unwrap()])
        .unwrap();
    assert!(stats.loss.is_finite());
}
