//! A run folder's lineage and the files in it: resuming from an older checkpoint branches (the
//! other lineage set aside, never lost or pruned, and `--resume` continues the branch), a fresh
//! run or an `--overwrite` touches only sapling's own files and loses nothing when it fails,
//! `--resume PATH` writes into the checkpoint's own folder, and checkpoints that cannot be are
//! refused by name.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sapling::checkpoint::{self, Loaded};
use sapling::cli::TrainArgs;
use sapling::config::Config;
use sapling::train::{RunOptions, train};

use crate::common::{losses, micro_config, temp_dir};

fn six_steps(name: &str) -> Config {
    let mut c = micro_config(name);
    c.train.steps = Some(6);
    c.train.checkpoint_every = 2;
    c.train.log_every = 1;
    c.train.recon_every = 2;
    c
}

fn steps(out: &Path) -> Vec<u64> {
    checkpoint::list(out)
        .iter()
        .map(|p| checkpoint::load(p).unwrap().state.step)
        .collect()
}

/// `sapling train --resume [PATH] [--steps N]` as the command line resolves it, then run.
fn resume(path: Option<&Path>, out: Option<&Path>, steps: u64) -> sapling::Result<Config> {
    let args = TrainArgs {
        resume: Some(path.map(Path::to_path_buf)),
        out: out.map(Path::to_path_buf),
        steps: Some(steps),
        ..TrainArgs::default()
    };
    let (config, loaded) = args.resolve_run()?;
    let options = RunOptions {
        resume: loaded.map(Arc::new),
        ..RunOptions::default()
    };
    train(&config, options)?;
    Ok(config)
}

/// The branches set aside in `out`.
fn set_aside(out: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("set-aside-")
        })
        .collect();
    dirs.sort();
    dirs
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

#[test]
fn resuming_an_older_checkpoint_branches_and_resume_continues_the_branch() {
    let c = six_steps("branch");
    let out = &c.train.out;
    train(&c, RunOptions::default()).unwrap();
    let first = losses(out);
    assert_eq!(steps(out), vec![2, 4, 6]);

    // From step 2, a run of 3 steps: a branch.
    let step2 = checkpoint::list(out)[0].clone();
    resume(Some(&step2), None, 3).unwrap();
    assert_eq!(steps(out), vec![2, 3], "the branch's lineage alone is live");
    let aside = set_aside(out);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(
        aside[0].to_string_lossy().ends_with("-after-step-2"),
        "{aside:?}"
    );
    assert_eq!(
        names(&aside[0]),
        ["metrics.jsonl", "recon", "step-00000004", "step-00000006"]
    );
    let old = losses(&aside[0]);
    assert_eq!(old.keys().copied().collect::<Vec<_>>(), vec![3, 4, 5, 6]);
    for (step, loss) in &old {
        assert_eq!(
            first[step], *loss,
            "the old lineage's metric lines are kept as written"
        );
    }
    assert_eq!(
        names(&aside[0].join("recon")),
        ["step-00000004.png", "step-00000006.png"]
    );
    // Step 3's loss is the forward pass on step 2's weights: the same in both lineages.
    assert_eq!(losses(out)[&3], first[&3]);

    // `--resume` continues the lineage that ran last (step 3), not the abandoned step 6.
    resume(None, Some(out), 6).unwrap();
    assert_eq!(steps(out), vec![3, 4, 6]);
    assert_eq!(losses(out).len(), 6);
    assert_eq!(
        names(&aside[0]),
        ["metrics.jsonl", "recon", "step-00000004", "step-00000006"],
        "a set-aside branch is never pruned"
    );

    // Going back to the abandoned lineage sets this one aside in turn, and its history
    // (lines 3 to 6) comes back from the folder it was kept in.
    let back = aside[0].join("step-00000006");
    resume(Some(&back), None, 8).unwrap();
    let now = losses(out);
    for step in 1..=6 {
        assert_eq!(
            now[&step], first[&step],
            "step {step} is the old lineage's again"
        );
    }
    assert_eq!(now.len(), 8);
    assert_eq!(set_aside(out).len(), 2);
    assert_eq!(steps(out), vec![8]);
}

/// The checkpoint just written is never pruned, whatever `keep_checkpoints` (1 included) and
/// whatever newer-numbered checkpoints a folder once held.
#[test]
fn the_checkpoint_just_written_is_never_pruned() {
    let c = six_steps("keep-one");
    let out = &c.train.out;
    train(&c, RunOptions::default()).unwrap();
    let loaded = checkpoint::list(out)[0].clone();
    let loaded = checkpoint::load(&loaded).unwrap();
    let mut config = loaded.state.config.clone();
    config.train.keep_checkpoints = 1;
    config.train.steps = Some(3);
    let options = RunOptions {
        resume: Some(Arc::new(loaded)),
        ..RunOptions::default()
    };
    train(&config, options).unwrap();
    assert_eq!(steps(out), vec![3]);
}

#[test]
fn a_fresh_run_never_deletes_files_it_did_not_write() {
    let c = six_steps("user-files");
    let out = &c.train.out;
    std::fs::create_dir_all(out.join("recon")).unwrap();
    std::fs::write(out.join("recon/notes.txt"), "mine").unwrap();
    std::fs::write(out.join("notes.txt"), "mine too").unwrap();
    // An earlier run that left metrics and a picture but no checkpoint.
    std::fs::write(out.join("metrics.jsonl"), "{\"step\":1,\"loss\":9.0}\n").unwrap();
    std::fs::write(out.join("recon/step-00000001.png"), "not really").unwrap();

    let err = train(&c, RunOptions::default())
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("metrics and pictures") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        1
    );

    let options = RunOptions {
        overwrite: true,
        ..RunOptions::default()
    };
    train(&c, options).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("recon/notes.txt")).unwrap(),
        "mine"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine too"
    );
    assert!(
        losses(out).values().all(|&l| l != 9.0),
        "the old metrics were replaced"
    );
    assert!(
        !names(out).iter().any(|n| n.starts_with(".overwritten")),
        "{:?}",
        names(out)
    );
}

#[test]
fn an_overwrite_that_fails_to_start_puts_the_old_run_back() {
    let c = six_steps("overwrite-fails");
    let out = &c.train.out;
    train(&c, RunOptions::default()).unwrap();
    let before = (steps(out), losses(out), names(&out.join("recon")));

    // A fresh run that claims the folder, then finds its batch does not fit.
    let mut failing = c.clone();
    failing.train.memory_budget_mib = Some(1);
    let options = RunOptions {
        overwrite: true,
        ..RunOptions::default()
    };
    let err = train(&failing, options)
        .expect_err("does not fit")
        .to_string();
    assert!(err.contains("does not fit"), "{err}");
    assert_eq!((steps(out), losses(out), names(&out.join("recon"))), before);
    assert!(
        !names(out).iter().any(|n| n.starts_with(".overwritten")),
        "{:?}",
        names(out)
    );
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        !config.contains("memory_budget_mib = 1\n"),
        "the old run's config is back"
    );

    // A process killed after setting the old run aside and before its first step: the next
    // start puts it back (here, a resume of the old run).
    let hidden = out.join(".overwritten-20260101-000000");
    std::fs::create_dir_all(hidden.join("checkpoints")).unwrap();
    for dir in checkpoint::list(out) {
        std::fs::rename(
            &dir,
            hidden.join("checkpoints").join(dir.file_name().unwrap()),
        )
        .unwrap();
    }
    std::fs::rename(out.join("metrics.jsonl"), hidden.join("metrics.jsonl")).unwrap();
    assert!(steps(out).is_empty());
    let resumed = resume(None, Some(out), 8);
    assert!(
        resumed.is_err(),
        "nothing to resume before the claim has put it back"
    );
    let options = RunOptions {
        resume: None,
        ..RunOptions::default()
    };
    // A fresh run finds the old run back in place and refuses, as for any other run.
    let err = train(&c, options).expect_err("refused").to_string();
    assert!(err.contains("checkpoints of an earlier run"), "{err}");
    assert_eq!(steps(out), vec![2, 4, 6]);
    resume(None, Some(out), 8).unwrap();
    assert_eq!(losses(out).len(), 8);
}

#[test]
fn resume_from_a_path_writes_into_the_checkpoints_own_folder() {
    let c = six_steps("moved-from");
    train(&c, RunOptions::default()).unwrap();
    let moved = temp_dir("moved-to").join("run");
    std::fs::rename(&c.train.out, &moved).unwrap();
    let config = resume(Some(&moved.join("checkpoints/step-00000004")), None, 8).unwrap();
    assert_eq!(config.train.out, std::path::absolute(&moved).unwrap());
    assert!(
        !c.train.out.exists(),
        "the folder the stored config names is not recreated"
    );
    assert_eq!(steps(&moved), vec![4, 6, 8]);

    // A checkpoint taken out of its run folder: where to write must be said.
    let loose = temp_dir("loose-checkpoint");
    let step = moved.join("checkpoints/step-00000008");
    std::fs::create_dir_all(loose.join("step-00000008")).unwrap();
    for name in names(&step) {
        std::fs::copy(step.join(&name), loose.join("step-00000008").join(&name)).unwrap();
    }
    let args = TrainArgs {
        resume: Some(Some(loose.join("step-00000008"))),
        steps: Some(10),
        ..TrainArgs::default()
    };
    let err = args.resolve_run().expect_err("no run folder").to_string();
    assert!(
        err.contains("--out") && err.contains("not inside a run folder"),
        "{err}"
    );
    let elsewhere = temp_dir("loose-into");
    resume(Some(&loose.join("step-00000008")), Some(&elsewhere), 10).unwrap();
    assert_eq!(steps(&elsewhere), vec![10]);
}

#[test]
fn a_folder_named_like_a_checkpoint_that_is_not_one_is_skipped() {
    let c = six_steps("garbage-step");
    let out = &c.train.out;
    train(&c, RunOptions::default()).unwrap();
    let garbage = out.join("checkpoints/step-00000099");
    std::fs::create_dir_all(&garbage).unwrap();
    std::fs::write(garbage.join("model.bpk"), b"half a copy").unwrap();
    resume(None, Some(out), 8).unwrap();
    assert_eq!(losses(out).len(), 8);
    assert!(
        garbage.join("model.bpk").exists(),
        "not sapling's to delete"
    );
}

/// Rewrites `state.json` of checkpoint `dir` with `edit` applied, and its manifest entry, as
/// a crafted (or damaged and re-summed) file would be.
pub fn edit_state(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    edit(&mut state);
    let bytes = serde_json::to_vec_pretty(&state).unwrap();
    std::fs::write(dir.join("state.json"), &bytes).unwrap();
    edit_manifest(dir, |files| {
        for f in files.iter_mut().filter(|f| f["name"] == "state.json") {
            f["bytes"] = bytes.len().into();
            f["crc32"] = crc32fast::hash(&bytes).into();
        }
    });
}

pub fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut Vec<serde_json::Value>)) {
    let path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(manifest["files"].as_array_mut().unwrap());
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
}

#[test]
fn a_state_that_cannot_be_is_refused_by_name() {
    let c = six_steps("impossible-state");
    let out = &c.train.out;
    train(&c, RunOptions::default()).unwrap();
    let newest = checkpoint::list(out).pop().unwrap();

    edit_state(&newest, |s| s["step"] = u64::MAX.into());
    let err = resume(None, Some(out), 8)
        .expect_err("past the end")
        .to_string();
    assert!(
        err.contains("past the run's last step 8") && err.contains("step-00000006"),
        "{err}"
    );
    assert!(losses(out).len() == 6, "nothing ran");

    // At its last step a run is complete: said, and not a failure of the command.
    edit_state(&newest, |s| s["step"] = 6.into());
    let err = resume(None, Some(out), 6).expect_err("complete");
    assert!(
        matches!(err, sapling::SaplingError::Complete { step: 6, .. }),
        "{err}"
    );
    let done = Command::new(env!("CARGO_BIN_EXE_sapling"))
        .args(["train", "--resume", "--steps", "6", "--out"])
        .arg(out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success() && stdout.contains("is complete"),
        "{stdout}"
    );

    for micro in [0, 3] {
        edit_state(&newest, |s| s["plan"]["micro_batch"] = micro.into());
        let err: String = match checkpoint::load(&newest) {
            Err(e) => e.to_string(),
            Ok(Loaded { .. }) => panic!("micro-batch {micro} loaded"),
        };
        assert!(
            err.contains("batch plan") && err.contains("state.json"),
            "{err}"
        );
    }
}

/// A run branched from an older checkpoint, killed with SIGKILL, resumes with the losses of
/// the same branch run without a kill.
#[test]
fn a_killed_branch_resumes_with_the_same_losses() {
    const TOTAL: u64 = 200;
    let c = six_steps("kill-branch");
    let base = &c.train.out;
    train(&c, RunOptions::default()).unwrap();
    let dir = temp_dir("kill-branch-runs");
    let copy = |name: &str| {
        let to = dir.join(name);
        let status = Command::new("cp")
            .arg("-r")
            .arg(base)
            .arg(&to)
            .status()
            .unwrap();
        assert!(status.success());
        to
    };
    let (reference, killed) = (copy("reference"), copy("killed"));
    let branch = |out: &Path, from: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sapling"));
        cmd.args(["train", "--resume"]);
        match from {
            Some(p) => cmd.arg(p),
            None => cmd.arg("--out").arg(out),
        };
        cmd.args(["--steps", &TOTAL.to_string(), "--checkpoint-every", "20"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    };
    let from2 = |out: &Path| out.join("checkpoints/step-00000002");
    assert!(
        branch(&reference, Some(&from2(&reference)))
            .status()
            .unwrap()
            .success()
    );
    let want = losses(&reference);

    let mut child = branch(&killed, Some(&from2(&killed))).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while losses(&killed).keys().last().is_none_or(|&s| s < 50) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(branch(&killed, None).status().unwrap().success());
    let got = losses(&killed);
    assert_eq!(got.len() as u64, TOTAL);
    for (step, w) in &want {
        assert!(
            (got[step] - w).abs() <= 1e-6 * w.abs(),
            "step {step}: {} vs {w}",
            got[step]
        );
    }
    // The abandoned steps 4 and 6 are still there, once.
    let aside = set_aside(&killed);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        names(&aside[0]),
        ["metrics.jsonl", "recon", "step-00000004", "step-00000006"]
    );
}
