//! Faults while writing: a failed write (ENOSPC, EIO) at every point of a run's checkpoints,
//! SIGKILL at random moments, a second process on the same folder, a folder holding another
//! run. After each, the newest complete checkpoint loads, no completed one is lost, and the
//! resumed run's losses equal the uninterrupted run's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use sapling::atomic::fault;
use sapling::checkpoint;
use sapling::config::Config;
use sapling::train::{RunOptions, train};

use crate::common::{losses, micro_config, temp_dir};

const ENOSPC: i32 = 28;
const EIO: i32 = 5;

fn six_steps(name: &str) -> Config {
    let mut c = micro_config(name);
    c.train.steps = Some(6);
    c.train.checkpoint_every = 2;
    c.train.log_every = 1;
    c.train.recon_every = 0;
    c
}

fn resume_from(path: Option<&Path>, out: &Path) -> RunOptions {
    let loaded = match path {
        Some(p) => checkpoint::load(p),
        None => checkpoint::latest(out),
    };
    RunOptions {
        resume: Some(Arc::new(loaded.unwrap())),
        ..RunOptions::default()
    }
}

/// Every checkpoint folder `list` shows loads, and none of the writer's files is left behind
/// outside `.step-*` folders (which the next save clears).
fn steps_that_load(out: &Path) -> Vec<u64> {
    checkpoint::list(out)
        .iter()
        .map(|p| match checkpoint::load(p) {
            Ok(l) => l.state.step,
            Err(e) => panic!("a listed checkpoint does not load: {e}"),
        })
        .collect()
}

fn assert_same_losses(got: &BTreeMap<u64, f64>, want: &BTreeMap<u64, f64>, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?}");
    for (step, w) in want {
        let g = got[step];
        assert!(
            (g - w).abs() <= 1e-6 * w.abs(),
            "{what}, step {step}: {g} vs {w}"
        );
    }
}

fn no_temporaries(out: &Path) {
    for entry in walkdir::WalkDir::new(out)
        .into_iter()
        .filter_map(|e| e.ok())
    {
        let name = entry.file_name().to_string_lossy();
        assert!(
            !name.starts_with(".sapling-"),
            "left behind: {}",
            entry.path().display()
        );
        assert!(
            !name.starts_with(".step-"),
            "left behind: {}",
            entry.path().display()
        );
    }
}

/// Fails the Nth fallible write step of the run `setup` prepares, for every N the run has; after
/// each failure `retry` says how the run is taken up again.
fn fail_each_point(
    name: &str,
    setup: impl Fn(&Config) -> RunOptions,
    retry: impl Fn(&Config) -> RunOptions,
) {
    let reference = six_steps(&format!("{name}-ref"));
    train(&reference, RunOptions::default()).unwrap();
    let want = losses(&reference.train.out);

    let c = six_steps(name);
    let out = c.train.out.clone();
    let counted = {
        let _ = std::fs::remove_dir_all(&out);
        let options = setup(&c);
        fault::arm(u32::MAX, EIO);
        train(&c, options).unwrap();
        fault::disarm()
    };
    assert!(counted > 20, "only {counted} write steps in a run");
    let mut newest_seen = 0;
    for n in 1..=counted {
        let _ = std::fs::remove_dir_all(&out);
        let options = setup(&c);
        let before = checkpoint::list(&out).len();
        fault::arm(n, if n % 2 == 0 { ENOSPC } else { EIO });
        let err = train(&c, options).expect_err("the write fails").to_string();
        fault::disarm();
        assert!(err.contains(&out.display().to_string()), "point {n}: {err}");
        // A branch sets checkpoints aside rather than losing them: both count as kept.
        let steps = kept(&out);
        let newest = steps.iter().max().copied().unwrap_or(0);
        assert!(
            newest >= newest_seen,
            "point {n}: newest {newest} < {newest_seen}"
        );
        assert!(
            steps.len() >= before.min(3),
            "point {n}: lost checkpoints, {steps:?}"
        );
        newest_seen = newest;
        train(&c, retry(&c)).unwrap_or_else(|e| panic!("point {n}: resume failed: {e}"));
        assert_same_losses(&losses(&out), &want, &format!("point {n}"));
        assert_eq!(steps_that_load(&out), vec![2, 4, 6], "point {n}");
        no_temporaries(&out);
    }
}

/// The steps of every checkpoint in `out` that loads: the live ones and those a branch set aside.
fn kept(out: &Path) -> Vec<u64> {
    let mut steps = steps_that_load(out);
    let root = out.join(checkpoint::DIR);
    for aside in std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
    {
        if !aside
            .file_name()
            .to_string_lossy()
            .starts_with("set-aside-")
        {
            continue;
        }
        for dir in std::fs::read_dir(aside.path())
            .unwrap()
            .filter_map(|e| e.ok())
        {
            if dir.file_name().to_string_lossy().starts_with("step-") {
                steps.push(checkpoint::load(&dir.path()).unwrap().state.step);
            }
        }
    }
    steps
}

/// Runs the ignored test `name` alone in a child process of this test binary. Its runs compare
/// losses across fresh starts, and a model's initialisation draws from burn's per-device random
/// generator, which tests running beside it in this process would draw from too.
fn alone(name: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--ignored", "--test-threads=1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_failed_write_at_any_point_loses_nothing_and_resumes_exactly() {
    alone("faults::failed_writes_alone");
}

#[test]
fn a_failed_replacement_of_a_checkpoint_keeps_one_complete_copy() {
    alone("faults::failed_replacements_alone");
}

#[test]
#[ignore = "run alone by a_failed_write_at_any_point_loses_nothing_and_resumes_exactly"]
fn failed_writes_alone() {
    // Taken up as a person would: from the newest checkpoint, or afresh when there is none
    // (replacing the metrics the failed run left, as the refusal says).
    let retry = |c: &Config| match checkpoint::list(&c.train.out).is_empty() {
        true => RunOptions {
            overwrite: true,
            ..RunOptions::default()
        },
        false => resume_from(None, &c.train.out),
    };
    fail_each_point("fault-fresh", |_| RunOptions::default(), retry);
}

/// Resuming from an older checkpoint branches: the newer checkpoints are set aside and the
/// branch writes its own. A failure at any point of that (the moves included) leaves every
/// checkpoint of both lineages loadable, live or set aside.
#[test]
#[ignore = "run alone by a_failed_replacement_of_a_checkpoint_keeps_one_complete_copy"]
fn failed_replacements_alone() {
    let from_2 = |c: &Config| {
        let out = &c.train.out;
        resume_from(Some(&out.join("checkpoints/step-00000002")), out)
    };
    let setup = |c: &Config| {
        train(c, RunOptions::default()).unwrap();
        from_2(c)
    };
    // Taken up by running the same command again.
    fail_each_point("fault-replace", setup, from_2);
}

fn sapling(config: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sapling"));
    cmd.args(["train", "--config"])
        .arg(config)
        .arg("--out")
        .arg(out)
        .args(extra);
    cmd
}

fn write_config(c: &Config, dir: &Path) -> PathBuf {
    let path = dir.join("run.toml");
    std::fs::write(&path, c.to_toml()).unwrap();
    path
}

/// SIGKILL at random moments of a run that checkpoints every step, many times over.
#[test]
fn sigkill_at_random_moments_never_loses_a_completed_checkpoint() {
    const TOTAL: u64 = 100;
    let dir = temp_dir("sigkill-many");
    let mut c = six_steps("sigkill-many-cfg");
    c.train.steps = Some(TOTAL);
    c.train.checkpoint_every = 1;
    let config = write_config(&c, &dir);
    let reference = dir.join("reference");
    assert!(
        sapling(&config, &reference, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    let want = losses(&reference);

    let out = dir.join("killed");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut newest_seen = 0;
    let mut kills = 0;
    for _ in 0..25 {
        // Afresh (replacing what a run killed before its first checkpoint wrote) or resumed.
        let resume: &[&str] = if checkpoint::list(&out).is_empty() {
            &["--overwrite"]
        } else {
            &["--resume"]
        };
        let mut child = sapling(&config, &out, resume)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Once the run has stepped past where it started, a random moment within a few steps
        // (each writes a checkpoint): the kill lands in any phase, whatever the machine's speed.
        let deadline = Instant::now() + Duration::from_secs(120);
        while losses(&out).keys().last().copied().unwrap_or(0) <= newest_seen {
            assert!(Instant::now() < deadline, "the run made no progress");
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..40)));
        if child.try_wait().unwrap().is_some() {
            break; // finished before the kill
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        let steps = steps_that_load(&out);
        let newest = steps.last().copied().unwrap_or(0);
        assert!(
            newest >= newest_seen,
            "kill {kills}: newest {newest} < {newest_seen}"
        );
        newest_seen = newest;
    }
    assert!(kills >= 10, "only {kills} kills landed");
    // Resuming a run that already finished says so and ends cleanly too.
    let last = sapling(&config, &out, &["--resume"]).output().unwrap();
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    assert_same_losses(&losses(&out), &want, "after the kills");
    no_temporaries(&out);
}

#[test]
fn a_fresh_run_into_another_runs_folder_is_refused_unless_overwrite() {
    let c = six_steps("refuse-fresh");
    train(&c, RunOptions::default()).unwrap();
    let before = steps_that_load(&c.train.out);
    let err = train(&c, RunOptions::default())
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("--resume") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(steps_that_load(&c.train.out), before, "nothing deleted");

    let mut short = c.clone();
    short.train.steps = Some(2);
    let options = RunOptions {
        overwrite: true,
        ..RunOptions::default()
    };
    train(&short, options).unwrap();
    assert_eq!(steps_that_load(&c.train.out), vec![2]);
    assert_eq!(
        losses(&c.train.out).len(),
        2,
        "the old run's metrics are gone"
    );
}

/// A second process on the same folder is refused, naming the one holding it; the lock goes
/// with the process, however it ends.
#[test]
fn a_second_process_on_the_same_folder_is_refused_naming_the_holder() {
    let dir = temp_dir("lock");
    let mut c = six_steps("lock-cfg");
    c.train.steps = Some(100_000);
    let config = write_config(&c, &dir);
    let out = dir.join("run");
    let mut first = sapling(&config, &out, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while losses(&out).len() < 3 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = sapling(&config, &out, &["--overwrite"]).output().unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another sapling process")
            && stderr.contains(&format!("pid {}", first.id())),
        "{stderr}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let after = sapling(&config, &out, &["--overwrite", "--steps", "2"])
        .output()
        .unwrap();
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
}
