//! What the binary prints: the terminal is for people (progress, a line per logged step,
//! advice), JSON goes to stdout only when asked for, long commands say what they do at once,
//! and a machine without a display prints no driver noise.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sapling::checkpoint;
use sapling::train::{RunOptions, train};

use crate::common::{micro_config, temp_dir, toy_idx};

const SAPLING: &str = env!("CARGO_BIN_EXE_sapling");

fn run(cmd: &mut Command) -> (String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&stdout).to_string(),
        String::from_utf8_lossy(&stderr).to_string(),
    );
    assert!(status.success(), "{cmd:?} failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

fn is_json(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line).is_ok()
}

#[test]
fn train_prints_json_on_stdout_only_with_the_json_flag() {
    for json in [false, true] {
        let name = if json {
            "console-json"
        } else {
            "console-people"
        };
        let mut c = micro_config(name);
        (c.train.steps, c.train.log_every, c.train.recon_every) = (Some(2), 1, 0);
        let file = temp_dir(&format!("{name}-config")).join("run.toml");
        std::fs::write(&file, c.to_toml()).unwrap();
        let mut cmd = Command::new(SAPLING);
        cmd.args(["train", "--config", file.to_str().unwrap()]);
        if json {
            cmd.arg("--json");
        }
        let (stdout, stderr) = run(&mut cmd);
        let lines: Vec<&str> = stdout.lines().collect();
        if json {
            assert_eq!(lines.len(), 2, "one JSON line per logged step:\n{stdout}");
            assert!(lines.iter().all(|l| is_json(l) && l.contains("\"loss\"")));
            assert!(stderr.contains("done: 2 steps"), "{stderr}");
            // A pipe is not a terminal: the log lines carry no colour codes.
            assert!(
                stderr.contains(" INFO ") && !stderr.contains('\u{1b}'),
                "{stderr}"
            );
        } else {
            assert!(
                !lines.iter().any(|l| is_json(l)),
                "JSON on stdout:\n{stdout}"
            );
            assert!(lines.iter().any(|l| l.starts_with("step 2/2")), "{stdout}");
            assert!(
                lines.last().unwrap().starts_with("done: 2 steps"),
                "{stdout}"
            );
        }
        let metrics = std::fs::read_to_string(c.train.out.join("metrics.jsonl")).unwrap();
        assert_eq!(metrics.lines().filter(|l| is_json(l)).count(), 2);
    }
}

#[test]
fn info_without_a_display_prints_no_loader_noise() {
    let mut cmd = Command::new(SAPLING);
    cmd.arg("info");
    for name in [
        "XDG_RUNTIME_DIR",
        "WAYLAND_DISPLAY",
        "DISPLAY",
        "NODEVICE_SELECT",
        "MESA_VK_DEVICE_SELECT",
    ] {
        cmd.env_remove(name);
    }
    let (stdout, stderr) = run(&mut cmd);
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{stderr}");
    // Adapters for people, or what to install; never a JSON dump without --json.
    assert!(!stdout.trim_start().starts_with(['{', '[']), "{stdout}");
    let json = run(Command::new(SAPLING).args(["info", "--json"])).0;
    let adapters: serde_json::Value = serde_json::from_str(&json).unwrap();
    let n = adapters.as_array().unwrap().len();
    let gpus = adapters
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["device_type"] != "Cpu")
        .count();
    assert_eq!(stdout.contains("To train on a GPU"), gpus == 0, "{stdout}");
    assert_eq!(stdout.matches("storage buffers per stage").count(), n);
}

#[test]
fn linear_probe_says_what_it_does_from_the_start() {
    let mut c = micro_config("console-probe");
    c.train.steps = Some(1);
    train(&c, RunOptions::default()).unwrap();
    let ckpt = checkpoint::latest(&c.train.out).unwrap().path;
    let data = temp_dir("console-probe-data");
    toy_idx(&data, "train", 64);
    toy_idx(&data, "t10k", 32);
    let started = Instant::now();
    let mut child = Command::new(SAPLING)
        .args([
            "eval",
            "linear-probe",
            "--device",
            "cpu",
            "--iterations",
            "20",
        ])
        .args(["--train-limit", "64", "--test-limit", "32"])
        .arg("--checkpoint")
        .arg(&ckpt)
        .arg("--data")
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let _ = send.send((started.elapsed(), line.unwrap()));
        }
    });
    let (first_at, first) = lines.recv_timeout(Duration::from_secs(60)).unwrap();
    let out = child.wait_with_output().unwrap();
    let rest: Vec<String> = lines.iter().map(|(_, l)| l).collect();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{first}\n{rest:?}");
    // Before any feature is computed, the person waiting reads what is being done.
    assert!(
        first.contains("linear probe") && first.contains("features of 64 train images"),
        "{first}"
    );
    assert!(
        first_at < Duration::from_secs(20),
        "first line after {first_at:?}"
    );
    for phase in [
        "random encoder: features of 32 test images",
        "Adam iterations",
    ] {
        assert!(rest.iter().any(|l| l.contains(phase)), "{phase}: {rest:?}");
    }
    assert!(stdout.contains("pretrained top-1"), "{stdout}");
    assert!(!stdout.lines().any(is_json), "{stdout}");
}
