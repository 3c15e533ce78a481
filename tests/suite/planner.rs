//! Batch planning: the memory model against what devices report, simulated small limits,
//! bad requests, and plans kept across resumes.

use std::process::Command;

use sapling::config::{BatchSize, Config, DeviceChoice, KernelChoice, PrecisionChoice, Preset};
use sapling::data::{ImageSource, Loader};
use sapling::device::{self, Selected};
use sapling::ops::Kernels;
use sapling::planner::{self, BatchPlan, DeviceLimits, PlanSource, TrialOptions};
use sapling::train::{self, RunOptions, Trainer, train};

use crate::common::{adapter_or_skip, f16_adapter_or_skip, flex, micro_config};

/// Predicted peak over measured peak must lie in this range.
const MODEL_TOLERANCE: (f64, f64) = (0.7, 1.3);

pub(crate) fn flex_limits() -> DeviceLimits {
    DeviceLimits::of(
        &Selected {
            device: flex(),
            adapter: None,
        },
        Some(64 << 10),
    )
}

fn preset(p: Preset, effective: usize, batch: BatchSize) -> Config {
    let mut c = p.config();
    c.train.effective_batch = effective;
    c.train.batch_size = batch;
    c
}

const MODEL_ONLY: TrialOptions = TrialOptions::MODEL_ONLY;

/// Runs `sapling probe ... --json` (the batch planner) in its own process, so its peak memory
/// is its own.
pub(crate) fn plan_in_child(args: &[&str]) -> BatchPlan {
    let out = Command::new(env!("CARGO_BIN_EXE_sapling"))
        .arg("probe")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sapling probe {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub(crate) fn assert_model_matches(plan: &BatchPlan, what: &str) {
    assert!(!plan.trials.is_empty(), "{what}: no trials");
    for t in &plan.trials {
        assert!(
            t.ok(),
            "{what}: micro-batch {} failed: {:?}",
            t.micro_batch,
            t.error
        );
        let measured = t.measured_peak.expect("the device reports a peak") as f64;
        let ratio = t.predicted_peak as f64 / measured;
        eprintln!(
            "{what}: micro-batch {} predicted {} measured {} ({}) ratio {ratio:.2}",
            t.micro_batch,
            planner::fmt_bytes(t.predicted_peak),
            planner::fmt_bytes(measured as u64),
            t.measured_by.as_deref().unwrap_or("")
        );
        assert!(
            (MODEL_TOLERANCE.0..=MODEL_TOLERANCE.1).contains(&ratio),
            "{what}: micro-batch {}: predicted/measured = {ratio:.2}",
            t.micro_batch
        );
    }
}

#[test]
fn memory_model_matches_the_peak_on_flex() {
    // Two sizes: how far below them the planner walks depends on timings, and the model's fixed
    // allowances make the smallest micro-batches over-predicted (on a loaded machine it once
    // walked down past the tolerance).
    let tiny = plan_in_child(&[
        "--device",
        "cpu",
        "--trial-sizes",
        "2",
        "--trial-steps",
        "1",
    ]);
    assert_model_matches(&tiny, "tiny on Flex");
    let vit_b = plan_in_child(&[
        "--device",
        "cpu",
        "--preset",
        "vit-b",
        "--effective-batch",
        "4",
        "--trial-sizes",
        "1",
        "--trial-steps",
        "1",
    ]);
    assert_model_matches(&vit_b, "vit-b on Flex");
}

/// Micro-batch 8, not tiny's default 32: on a software adapter the trial steps' run time, not
/// shader compilation, dominated this test (about 650 s of CPU a process at 32 on lavapipe);
/// the model's activation terms still scale by the batch.
#[test]
fn memory_model_matches_the_wgpu_memory_pool() {
    if !pool_modelled_or_skip("memory_model_matches_the_wgpu_memory_pool") {
        return;
    }
    let plan = plan_in_child(&[
        "--device",
        "wgpu",
        "--precision",
        "f32",
        "--effective-batch",
        "8",
        "--trial-sizes",
        "1",
        "--trial-steps",
        "1",
    ]);
    assert_model_matches(&plan, "tiny on wgpu");
}

/// Whether the adapter's memory pool is one the model is held to. On SwiftShader cubecl's pool
/// reserves about a quarter less than on lavapipe for the same step (tiny at micro-batch 8:
/// 42.6 MiB against 58.7 MiB, with 58.4 MiB predicted), so the model over-predicts there, which
/// only makes plans cautious; lavapipe's pool is the one the model was built against.
fn pool_modelled_or_skip(test: &str) -> bool {
    if !adapter_or_skip(test) {
        return false;
    }
    if device::adapters()
        .iter()
        .all(|a| a.name.contains("SwiftShader"))
    {
        eprintln!(
            "SKIPPED {test}: SwiftShader's memory pool is not the modelled one (see the doc)"
        );
        return false;
    }
    true
}

/// Mixed precision: activations counted at their own width (an adapter with shader-f16).
#[test]
fn f16_memory_model_matches_the_wgpu_memory_pool() {
    if !f16_adapter_or_skip("f16_memory_model_matches_the_wgpu_memory_pool")
        || !pool_modelled_or_skip("f16_memory_model_matches_the_wgpu_memory_pool")
    {
        return;
    }
    let plan = plan_in_child(&[
        "--device",
        "wgpu",
        "--precision",
        "f16",
        "--effective-batch",
        "8",
        "--trial-sizes",
        "1",
        "--trial-steps",
        "1",
    ]);
    assert_model_matches(&plan, "tiny in f16 on wgpu");
}

/// vit-b on lavapipe takes about 14 minutes (kernel compilation and autotuning of every new
/// shape on a software rasteriser), too long for every CI run: `cargo test --release --
/// --ignored vit_b` runs it. Measured 2026-11-28: predicted 1.8 GiB, pool 1.9 GiB.
#[test]
#[ignore]
fn vit_b_memory_model_matches_the_wgpu_memory_pool() {
    if !adapter_or_skip("vit_b_memory_model_matches_the_wgpu_memory_pool") {
        return;
    }
    let vit_b = plan_in_child(&[
        "--device",
        "wgpu",
        "--preset",
        "vit-b",
        "--effective-batch",
        "1",
        "--trial-sizes",
        "1",
        "--trial-steps",
        "1",
    ]);
    assert_model_matches(&vit_b, "vit-b on wgpu");
}

#[test]
fn small_limits_shrink_the_micro_batch_and_raise_accumulation() {
    let cases = [
        (Preset::VitB, 256, 128u64 << 20, 8u64 << 30),
        (Preset::VitB, 256, 16 << 20, 8 << 30),
        (Preset::VitB, 256, 128 << 20, 3 << 30),
        // A browser-class adapter: WebGPU's default binding cap and a 512 MiB budget.
        (Preset::Tiny, 1024, 128 << 20, 512 << 20),
    ];
    for (p, effective, binding, budget) in cases {
        let config = preset(p, effective, BatchSize::Auto);
        let roomy = train::plan(&config, &flex(), &flex_limits(), MODEL_ONLY).unwrap();
        assert_eq!(roomy.source, PlanSource::Modelled);
        let limits = flex_limits().simulated(Some(binding), Some(budget));
        let plan = train::plan(&config, &flex(), &limits, MODEL_ONLY).unwrap();
        let case = format!("{} under {binding} B binding, {budget} B budget", p.name());
        assert!(
            plan.micro_batch < roomy.micro_batch,
            "{case}: {} vs {}",
            plan.micro_batch,
            roomy.micro_batch
        );
        assert_eq!(plan.micro_batch * plan.accum, effective, "{case}");
        assert!(plan.accum > roomy.accum, "{case}");
        assert!(plan.predicted.largest.bytes <= binding, "{case}");
        assert!(plan.predicted.total <= budget, "{case}");
        // The next size up would not have fitted with any lever: the plan is the largest
        // that does.
        let options = train::lever_options(&config, &flex(), &limits, 1).unwrap();
        let (twice, half) = (plan.micro_batch * 2, plan.accum / 2);
        assert!(
            planner::fitting(&config.model, &options, twice, half, &limits).is_none(),
            "{case}"
        );
    }
}

#[test]
fn sapiens_scores_do_not_fit_a_webgpu_binding() {
    // One sample's decoder scores are ~1 GiB, over WebGPU's default 128 MiB binding limit,
    // on the reference path; the WGSL flash-attention kernel never materialises them.
    let mut config = preset(Preset::Sapiens03b, 4096, BatchSize::Auto);
    let limits = flex_limits().simulated(Some(128 << 20), Some(64 << 30));
    let err = train::plan(&config, &flex(), &limits, MODEL_ONLY)
        .unwrap_err()
        .to_string();
    assert!(err.contains("Not even a micro-batch of 1"), "{err}");
    assert!(err.contains("decoder attention scores"), "{err}");

    // Planned without a wgpu device: the search itself only needs the kernels' memory model.
    config.train.kernels = KernelChoice::Wgsl;
    let options = planner::levers::options(&config, false, Some(128 << 20), 1);
    assert!(options.iter().all(|l| l.kernels == Kernels::Wgsl));
    let plan = pollster::block_on(planner::search(
        &config,
        &options,
        &limits,
        MODEL_ONLY,
        async |_, _, _| unreachable!("no trial steps with the memory model alone"),
    ))
    .unwrap();
    assert!(plan.micro_batch >= 1, "{}", plan.summary());
    assert!(
        plan.predicted.largest.bytes <= 128 << 20,
        "{}",
        plan.summary()
    );
}

#[test]
fn a_batch_that_cannot_fit_is_refused_with_what_does() {
    let config = preset(Preset::VitB, 256, BatchSize::Fixed(128));
    let limits = flex_limits().simulated(None, Some(3 << 30));
    let err = train::plan(&config, &flex(), &limits, MODEL_ONLY)
        .unwrap_err()
        .to_string();
    let fits = train::plan(
        &preset(Preset::VitB, 256, BatchSize::Auto),
        &flex(),
        &limits,
        MODEL_ONLY,
    )
    .unwrap();
    let want = format!(
        "The largest micro-batch that fits is {m}: use --batch-size {m} ({a} accumulation steps to keep the effective batch of 256)",
        m = fits.micro_batch,
        a = fits.accum
    );
    assert!(err.contains("micro-batch 128 does not fit"), "{err}");
    assert!(err.contains(&want), "{err}");
}

#[test]
fn the_plan_is_measured_saved_and_reused_on_resume() {
    let mut c = micro_config("plan-resume");
    c.train.batch_size = BatchSize::Auto;
    c.train.effective_batch = 8;
    c.train.steps = Some(2);
    c.train.checkpoint_every = 2;
    let first = train(&c, RunOptions::default()).unwrap();
    assert_eq!(first.plan.source, PlanSource::Measured);
    assert_eq!(first.plan.micro_batch * first.plan.accum, 8);
    assert!(first.plan.trials.iter().all(|t| t.ok()));
    let loaded = sapling::checkpoint::latest(&c.train.out).unwrap();
    let saved = loaded
        .state
        .plan
        .clone()
        .expect("the checkpoint keeps the plan");
    assert_eq!(
        (
            saved.micro_batch,
            saved.accum,
            saved.source,
            &saved.limits.key
        ),
        (
            first.plan.micro_batch,
            first.plan.accum,
            PlanSource::Measured,
            &first.plan.limits.key
        )
    );

    let mut more = c.clone();
    more.train.steps = Some(3);
    let resumed = train(
        &more,
        RunOptions {
            resume: Some(std::sync::Arc::new(loaded)),
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!(resumed.plan.source, PlanSource::Reused);
    assert_eq!(resumed.plan.micro_batch, first.plan.micro_batch);

    // Another device: planned again, same effective batch.
    let mut elsewhere = first.plan.clone();
    elsewhere.limits.key = "Vulkan|some other GPU".into();
    let limits = flex_limits();
    let again = train::plan_for_run(&c, &flex(), &limits, Some(&elsewhere), 1).unwrap();
    assert_eq!(again.source, PlanSource::Measured);
    assert_eq!(again.effective_batch, 8);
}

#[test]
fn splitting_a_batch_into_micro_batches_keeps_the_step() {
    // Masks and crops are drawn per sample, so 1 x 8 and 4 x 2 see the same data.
    let c = micro_config("split");
    let dev = flex();
    let step_with = |micro: usize| {
        let mut t = Trainer::new(&c, &dev).unwrap();
        let mut loader = Loader::new(ImageSource::Embedded, &c.data, 32, micro, 0, 0);
        let batches = (0..8 / micro)
            .map(|_| loader.next_batch().unwrap())
            .collect();
        t.step(0, 1e-3, batches).unwrap()
    };
    let (whole, split) = (step_with(8), step_with(2));
    assert!(
        (whole.loss - split.loss).abs() < 1e-5 * whole.loss,
        "{whole:?} vs {split:?}"
    );
    assert!(
        (whole.grad_norm - split.grad_norm).abs() < 1e-4 * whole.grad_norm,
        "{whole:?} vs {split:?}"
    );
}

#[test]
fn auto_is_the_default_and_on_flex_never_touches_wgpu() {
    let c = Preset::Tiny.config();
    assert_eq!(c.train.batch_size, BatchSize::Auto);
    let limits = DeviceLimits::of(&device::select(DeviceChoice::Cpu).unwrap(), None);
    assert_eq!(limits.key, "flex");
    assert!(limits.max_storage_buffer_binding_size.is_none());
    assert!(limits.budget > 0);
}

#[test]
fn sapiens_presets_fit_a_24_gib_gpu_with_the_default_levers() {
    // The planner with default settings, from the memory model alone (no device): WebGPU's
    // default 128 MiB binding and a desktop GPU's 2 GiB, the 2B preset at 4 ranks.
    for binding in [128u64 << 20, 2 << 30] {
        for (p, ranks, want) in [
            (Preset::Sapiens03b, 1, 8),
            (Preset::Sapiens06b, 1, 4),
            (Preset::Sapiens1b, 4, 2),
            (Preset::Sapiens2b, 4, 1),
        ] {
            let limits = DeviceLimits::hypothetical(true, 24 << 30, Some(binding));
            let table = planner::lever_table(&p.config(), false, &limits, ranks);
            let chosen = table.chosen.as_ref().unwrap_or_else(|| panic!("{table}"));
            eprintln!(
                "{} at {} ranks, {} MiB binding: micro-batch {} ({})",
                p.name(),
                ranks,
                binding >> 20,
                chosen.micro_batch,
                chosen.levers.describe()
            );
            assert!(chosen.micro_batch >= want, "{table}");
            assert!(chosen.memory.largest.bytes <= binding, "{table}");
        }
    }
}

/// Issue 39's goals for one GPU, from the memory model alone (WebGPU's default 128 MiB
/// binding, a host with 64 GiB): the optimizer offloaded (and the running gradient sums kept
/// without a second copy) brings the 1B and 2B presets onto one 24 GiB card and raises what
/// laptops and mid-range cards fit.
#[test]
fn offloading_fits_the_big_presets_and_small_cards() {
    let host = Some(64 << 30);
    for (p, gib, want) in [
        (Preset::Sapiens1b, 24, 4),
        (Preset::Sapiens2b, 24, 1),
        (Preset::Sapiens03b, 8, 4),
        (Preset::Sapiens06b, 16, 8),
        (Preset::VitL, 8, 64),
    ] {
        for precision in [PrecisionChoice::F32, PrecisionChoice::F16] {
            let mut c = p.config();
            c.train.precision = precision;
            let limits =
                DeviceLimits::hypothetical(true, gib << 30, Some(128 << 20)).with_host_memory(host);
            let table = planner::lever_table(&c, false, &limits, 1);
            let chosen = table.chosen.as_ref().unwrap_or_else(|| panic!("{table}"));
            eprintln!(
                "{} on {gib} GiB in {precision:?}: micro-batch {} ({})",
                p.name(),
                chosen.micro_batch,
                chosen.levers.describe()
            );
            assert!(chosen.micro_batch >= want, "{table}");
        }
    }
    // Without the host memory the offloaded optimizer needs, it is refused by name.
    let limits = DeviceLimits::hypothetical(true, 24 << 30, Some(128 << 20))
        .with_host_memory(Some(16 << 30));
    let table = planner::lever_table(&Preset::Sapiens2b.config(), false, &limits, 1);
    assert!(table.chosen.is_none(), "{table}");
    assert!(table.to_string().contains("host side needs"), "{table}");
}

#[test]
fn offloading_and_sharding_disagreeing_under_mpi_is_refused() {
    let mut c = micro_config("offload-vs-shard");
    c.train.shard_optimizer = sapling::config::Switch::On;
    c.train.offload_optimizer = sapling::config::Switch::Off;
    let err = train::lever_options(&c, &flex(), &flex_limits(), 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("train.offload_optimizer"), "{err}");
    // On one rank an offloaded optimizer is on offer, gradients on the host last.
    c.train.shard_optimizer = sapling::config::Switch::Off;
    c.train.offload_optimizer = sapling::config::Switch::On;
    let options = train::lever_options(&c, &flex(), &flex_limits(), 1).unwrap();
    assert!(options.iter().all(|l| l.host_optimizer()), "{options:?}");
    assert!(options.last().unwrap().grads_on_host(), "{options:?}");
}

#[test]
fn sharding_needs_several_ranks_and_says_so() {
    let mut c = micro_config("shard-one-rank");
    c.train.shard_optimizer = sapling::config::Switch::On;
    let err = train::lever_options(&c, &flex(), &flex_limits(), 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("train.shard_optimizer"), "{err}");
    assert!(err.contains("mpirun"), "{err}");
    // Several ranks: only sharded levers are on offer.
    let options = train::lever_options(&c, &flex(), &flex_limits(), 2).unwrap();
    assert!(options.iter().all(|l| l.shards == 2), "{options:?}");
}
