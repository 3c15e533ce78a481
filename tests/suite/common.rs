//! Shared helpers: small configs, temporary folders, the WebGPU gate.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use sapling::config::{BatchSize, Config, ModelConfig, Preset};
use sapling::data::idx;
use sapling::device::{self, REQUIRE_GPU_ENV, Selected};

/// `sapling train --config TOML --out OUT EXTRA...`, its output discarded.
pub fn train_command(toml: &Path, out: &Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sapling"));
    cmd.args(["train", "--config"])
        .arg(toml)
        .arg("--out")
        .arg(out)
        .args(extra);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd
}

/// Starts `cmd` (a training run writing into `out`) and kills it with SIGKILL once its
/// `metrics.jsonl` reaches `step`; fails if it finishes first or makes no progress in 2 minutes.
pub fn kill_at_step(cmd: &mut std::process::Command, out: &Path, step: u64) {
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while losses(out).keys().last().is_none_or(|&s| s < step) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before it could be killed"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the run made no progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
}

/// The losses of the run `toml` describes, uninterrupted (into `DIR/reference`) and killed at
/// `step` then resumed with `--resume` and `resume_flags` (into `DIR/killed`), in that order.
pub fn uninterrupted_and_resumed(
    toml: &Path,
    dir: &Path,
    step: u64,
    resume_flags: &[&str],
) -> (
    std::collections::BTreeMap<u64, f64>,
    std::collections::BTreeMap<u64, f64>,
) {
    let reference = dir.join("reference");
    assert!(
        train_command(toml, &reference, &[])
            .status()
            .unwrap()
            .success()
    );
    let killed = dir.join("killed");
    kill_at_step(&mut train_command(toml, &killed, &[]), &killed, step);
    let resume: Vec<&str> = ["--resume"].iter().chain(resume_flags).copied().collect();
    let resumed = train_command(toml, &killed, &resume)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    (losses(&reference), losses(&killed))
}

/// A fresh, empty folder under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sapling-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A model small enough to compile and step quickly on lavapipe.
pub fn micro_model() -> ModelConfig {
    ModelConfig {
        img_size: 32,
        patch_size: 8,
        dim: 32,
        depth: 2,
        heads: 2,
        decoder_dim: 32,
        decoder_depth: 1,
        decoder_heads: 2,
        ..Preset::Tiny.config().model
    }
}

/// `tiny`'s recipe around the micro model, writing into a temp folder, on the CPU.
pub fn micro_config(name: &str) -> Config {
    let mut c = Preset::Tiny.config();
    c.model = micro_model();
    c.train.batch_size = BatchSize::Fixed(4);
    c.train.effective_batch = 4;
    c.train.steps = Some(3);
    c.train.out = temp_dir(name);
    c.train.device = sapling::config::DeviceChoice::Cpu;
    c
}

/// A two-step micro run into its own temp folder, and the checkpoint it ended with.
pub fn trained_micro(name: &str) -> (Config, sapling::checkpoint::Loaded) {
    let mut c = micro_config(name);
    c.train.steps = Some(2);
    sapling::train::train(&c, sapling::train::RunOptions::default()).unwrap();
    let loaded = sapling::checkpoint::latest(&c.train.out).unwrap();
    (c, loaded)
}

pub fn flex() -> Device {
    Device::flex()
}

/// What `SAPLING_REQUIRE_GPU` asks of the WebGPU adapter: nothing (unset: a test without one
/// skips), that there is one (`1`), or that it has shader-f16 too (`f16`).
fn required() -> Option<String> {
    std::env::var(REQUIRE_GPU_ENV)
        .ok()
        .filter(|v| v == "1" || v == "f16")
}

/// Whether a WebGPU adapter exists (for tests that use it from a child process); prints why
/// the calling test is skipped when not.
pub fn adapter_or_skip(test: &str) -> bool {
    let required = required().is_some();
    if device::adapters().is_empty() {
        assert!(
            !required,
            "{test}: {REQUIRE_GPU_ENV}=1 but no WebGPU adapter was found (install mesa-vulkan-drivers for lavapipe)"
        );
        eprintln!(
            "SKIPPED {test}: no WebGPU adapter found (set {REQUIRE_GPU_ENV}=1 to make this a failure)"
        );
        return false;
    }
    true
}

/// The WebGPU device, or `None` after printing why the calling test is skipped.
pub fn wgpu_or_skip(test: &str) -> Option<Selected> {
    let required = required().is_some();
    if !adapter_or_skip(test) {
        return None;
    }
    match device::wgpu_device() {
        Ok(s) => Some(s),
        Err(e) => {
            assert!(!required, "{test}: {REQUIRE_GPU_ENV}=1 but {e}");
            eprintln!("SKIPPED {test}: {e}");
            None
        }
    }
}

/// Whether the WebGPU adapter has shader-f16 (for the f16 tests, whose names hold `f16` so
/// one filter runs them all on such an adapter); prints why the calling test is skipped when
/// not, and fails instead when `SAPLING_REQUIRE_GPU=f16`.
pub fn f16_adapter_or_skip(test: &str) -> bool {
    if !adapter_or_skip(test) {
        return false;
    }
    if device::adapters().iter().any(|a| a.shader_f16) {
        return true;
    }
    assert!(
        required().as_deref() != Some("f16"),
        "{test}: {REQUIRE_GPU_ENV}=f16 but no WebGPU adapter has shader-f16 (lavapipe has it)"
    );
    eprintln!("SKIPPED {test}: no WebGPU adapter has shader-f16");
    false
}

/// The WebGPU device when its adapter has shader-f16 (see [`f16_adapter_or_skip`]).
pub fn wgpu_f16_or_skip(test: &str) -> Option<Selected> {
    let gpu = wgpu_or_skip(test)?;
    if gpu.adapter.as_ref().is_some_and(|a| a.shader_f16) {
        return Some(gpu);
    }
    assert!(
        required().as_deref() != Some("f16"),
        "{test}: {REQUIRE_GPU_ENV}=f16 but the WebGPU adapter has no shader-f16"
    );
    eprintln!("SKIPPED {test}: the WebGPU adapter has no shader-f16");
    None
}

/// The same weights as `model`, on `device`.
pub fn copy_model(
    model: &sapling::model::MaskedAutoencoder,
    device: &Device,
) -> sapling::model::MaskedAutoencoder {
    use burn::module::Module;
    let bytes = model.clone().into_record().into_bytes().unwrap();
    sapling::model::MaskedAutoencoder::new(&model.config, device)
        .load_record(burn::store::ModuleRecord::from_bytes(bytes).unwrap())
}

/// Steps `a` and `b` on the same embedded-photo micro-batches of 4 for `steps` steps, asserting
/// their losses and gradient norms agree within the relative tolerances.
pub fn lockstep(
    (name_a, a): (&str, &mut sapling::train::Trainer),
    (name_b, b): (&str, &mut sapling::train::Trainer),
    steps: u64,
    loss_tol: f64,
    norm_tol: f64,
) {
    use sapling::config::DataConfig;
    use sapling::data::{ImageSource, Loader};
    let data = DataConfig {
        workers: 1,
        ..DataConfig::default()
    };
    let size = a.model().config.img_size;
    let mut loader = Loader::new(ImageSource::Embedded, &data, size, 4, 0, 0);
    for step in 0..steps {
        let batch = loader.next_batch().unwrap();
        let x = a.step(step, 1e-3, vec![batch.clone()]).unwrap();
        let y = b.step(step, 1e-3, vec![batch]).unwrap();
        eprintln!(
            "step {step}: {name_a} loss {:.9} norm {:.8} | {name_b} loss {:.9} norm {:.8}",
            x.loss, x.grad_norm, y.loss, y.grad_norm
        );
        assert!(
            (x.loss - y.loss).abs() <= loss_tol * x.loss.abs(),
            "step {step}: {x:?} vs {y:?}"
        );
        assert!(
            (x.grad_norm - y.grad_norm).abs() <= norm_tol * x.grad_norm,
            "step {step}: {x:?} vs {y:?}"
        );
    }
}

/// The f32 elements of a tensor.
pub fn data<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.to_data().try_into_vec::<f32>().expect("f32 tensor")
}

/// Largest difference relative to the reference's largest magnitude, at most `tol`. A NaN on
/// either side counts as an infinite difference (`f32::max` would drop it).
pub fn assert_close<const D: usize>(what: &str, got: &Tensor<D>, want: &Tensor<D>, tol: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}: shapes differ");
    let (g, w) = (data(got), data(want));
    let scale = w.iter().fold(1e-12f32, |m, x| m.max(x.abs()));
    let diff = g.iter().zip(&w).fold(0f32, |m, (a, b)| {
        let d = (a - b).abs();
        m.max(if d.is_nan() { f32::INFINITY } else { d })
    });
    eprintln!("{what}: max |diff| {diff:.3e} (scale {scale:.3e})");
    assert!(
        diff <= tol * scale && diff.is_finite(),
        "{what}: max |diff| {diff:e} over {tol:e} × {scale:e}"
    );
}

/// The same f32 bits in every element (so NaN = NaN and 0 ≠ -0).
pub fn assert_same_bits<const D: usize>(what: &str, got: &Tensor<D>, want: &Tensor<D>) {
    assert_eq!(got.dims(), want.dims(), "{what}: shapes differ");
    let bits = |t| data(t).into_iter().map(f32::to_bits).collect::<Vec<_>>();
    let differ = bits(got)
        .iter()
        .zip(&bits(want))
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(differ, 0, "{what}: {differ} elements differ in their bits");
}

/// `step -> loss` from a run's `metrics.jsonl`; a line still being written by a running (or
/// killed) process is ignored, and a step logged twice keeps its last value.
pub fn losses(out: &std::path::Path) -> std::collections::BTreeMap<u64, f64> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

/// The largest absolute difference between two equally long slices.
pub fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Writes a gzip IDX file.
pub fn write_idx(path: &Path, magic: u32, dims: &[u32], data: &[u8]) {
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(&magic.to_be_bytes()).unwrap();
    for d in dims {
        enc.write_all(&d.to_be_bytes()).unwrap();
    }
    enc.write_all(data).unwrap();
    enc.finish().unwrap();
}

/// A two-class IDX set: class 0 is bright on the left, class 1 on the right.
pub fn toy_idx(dir: &Path, split: &str, n: usize) {
    let mut pixels = Vec::new();
    let labels: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
    for (i, &label) in labels.iter().enumerate() {
        for _y in 0..28 {
            for x in 0..28 {
                let bright = (x < 14) == (label == 0);
                pixels.push(if bright {
                    200 + (i % 50) as u8
                } else {
                    (i * 7 % 40) as u8
                });
            }
        }
    }
    write_idx(
        &dir.join(format!("{split}-images-idx3-ubyte.gz")),
        idx::IMAGES_MAGIC,
        &[n as u32, 28, 28],
        &pixels,
    );
    write_idx(
        &dir.join(format!("{split}-labels-idx1-ubyte.gz")),
        idx::LABELS_MAGIC,
        &[n as u32],
        &labels,
    );
}
