//! Every walkthrough step in `examples/` runs to the end (in its fast mode) and writes its
//! pictures, so none rots. `cargo test` builds the examples next to the test binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::temp_dir;

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/suite-… → target/<profile>/examples/<name>
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    dir.join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

fn run(name: &str, pictures: &[&str]) {
    let bin = example(name);
    assert!(
        bin.exists(),
        "{} was not built (cargo test builds examples)",
        bin.display()
    );
    let out = temp_dir(&format!("example-{name}"));
    let result = Command::new(&bin)
        .env("SAPLING_EXAMPLE_FAST", "1")
        .env("SAPLING_EXAMPLE_OUT", &out)
        .output()
        .expect("example runs");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "{name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        stdout.lines().count() >= 3,
        "{name} printed too little:\n{stdout}"
    );
    for picture in pictures {
        let path = out.join(name).join(picture);
        assert!(
            path.exists(),
            "{name} did not write {}:\n{stdout}",
            path.display()
        );
    }
}

#[test]
fn walkthrough_01_patches() {
    run("01_patches", &["patch_grid.png"]);
}

#[test]
fn walkthrough_02_masking() {
    run("02_masking", &["masks.png"]);
}

#[test]
fn walkthrough_03_position_embeddings() {
    run("03_position_embeddings", &["similarity.png"]);
}

#[test]
fn walkthrough_04_forward_pass() {
    run("04_forward_pass", &[]);
}

#[test]
fn walkthrough_05_optimizer() {
    run("05_optimizer", &["lr.png"]);
}

#[test]
fn walkthrough_06_batch_probe() {
    run("06_batch_probe", &[]);
}

#[test]
fn walkthrough_07_training_run() {
    run("07_training_run", &["loss.png", "recon"]);
}

#[test]
fn walkthrough_08_wgsl_kernel() {
    run("08_wgsl_kernel", &[]);
}

#[test]
fn walkthrough_09_released_weights() {
    run("09_released_weights", &[]);
}
