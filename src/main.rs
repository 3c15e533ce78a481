//! `sapling`: the command-line entry point. Each command is one small function here; all work
//! lives in the library (`sapling::train::train` is the training loop).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use sapling::cli::{
    BatchSweepArgs, BenchCommand, BenchImportArgs, BenchKernelsArgs, BenchLoaderArgs,
    BenchScalingArgs, BenchStepArgs, Cli, Command, DataCommand, EvalCommand, ExportArgs,
    HypotheticalArgs, InfoArgs, KnnArgs, LinearProbeArgs, PackArgs, PlanArgs, PlotArgs,
    ReconstructArgs, ReferenceCaseArgs, TrainArgs, TrainCommandArgs, WeightsArgs,
};
use sapling::config::{BatchSize, Config, DeviceChoice};
use sapling::device::Selected;
use sapling::dist::World;
use sapling::eval::probe::{ProbeConfig, linear_probe};
use sapling::export::Export;
use sapling::model::MaskedAutoencoder;
use sapling::planner::{DeviceLimits, Levers, TrialOptions, fmt_bytes};
use sapling::progress::Progress;
use sapling::train::{Console, RunOptions, RunSummary};

/// Reuses freed blocks instead of handing them back to the kernel (see `sapling::alloc`).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: sapling::alloc::MiMalloc = sapling::alloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`; no other thread exists yet.
    unsafe { sapling::device::quiet_headless_vulkan() };
    #[cfg(feature = "mimalloc")]
    sapling::alloc::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour_on_stderr())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,sapling=info".into()),
        )
        .init();
    let command = Cli::parse()
        .command
        .unwrap_or(Command::Train(TrainCommandArgs::default()));
    on_rayon_pool(move || run_command(command))
}

/// Colours in log lines only for a person at a terminal: not in a file or a pipe, and not when
/// `NO_COLOR` is set (<https://no-color.org>).
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Runs `work` on a thread of rayon's global pool rather than on the process's main thread.
///
/// Why: the CPU kernels, gemm and Flex split their work with rayon. Called from outside the
/// pool, every split hands its work to the pool and puts the caller to sleep until a pool
/// thread wakes it (hundreds of times a step), and the caller is a third busy thread on a
/// two-core machine. Called from a pool thread, a split is a `join` whose first half the
/// caller runs itself. The pool's threads get a main thread's stack (8 MiB), as the command
/// now runs on one of them.
fn on_rayon_pool<R: Send>(work: impl FnOnce() -> anyhow::Result<R> + Send) -> anyhow::Result<R> {
    rayon::ThreadPoolBuilder::new()
        .stack_size(8 << 20)
        .build_global()?;
    rayon::scope(move |_| work())
}

fn run_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Train(args) => train(args),
        Command::Reconstruct(args) => reconstruct(args),
        Command::Eval(EvalCommand::LinearProbe(args)) => eval_linear_probe(args),
        Command::Eval(EvalCommand::Knn(args)) => eval_knn(args),
        Command::Export(args) => export(args),
        Command::Plot(args) => plot_runs(args),
        Command::Data(DataCommand::Pack(args)) => data_pack(args),
        Command::Plan(args) => plan(args),
        Command::Hypothetical(args) => plan_hypothetical(args),
        Command::Bench(command) => bench(command),
        Command::Info(args) => info(args),
    }
}

/// `sapling train`: MPI (a world of one without `mpirun`), Ctrl-C, the loop, the last words.
fn train(args: TrainCommandArgs) -> anyhow::Result<()> {
    let (config, resume) = args.run.resolve_run()?;
    // MPI is started before any device work.
    let world = sapling::dist::world::init();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            // A second Ctrl-C does not wait for the checkpoint.
            std::process::exit(130);
        }
        eprintln!(
            "\nCtrl-C: stopping after this step and writing a checkpoint (again to quit now)"
        );
    })?;
    let options = RunOptions {
        console: if args.json {
            Console::Json
        } else {
            Console::People
        },
        resume: resume.map(Arc::new),
        overwrite: args.run.overwrite,
        stop: Some(stop),
        world: Some(world.clone()),
    };
    let summary = match sapling::train::train(&config, options) {
        Ok(summary) => summary,
        // Every rank finds it complete alike (they agreed on the checkpoint first).
        Err(e @ sapling::SaplingError::Complete { .. }) => {
            if world.rank() == 0 {
                println!("{e}");
            }
            return Ok(());
        }
        Err(e) => {
            let e = anyhow::Error::from(e).context(format!("training {}", config.preset.name()));
            if world.size() > 1 {
                // The other ranks may be waiting for this one in a collective: end them all.
                eprintln!(
                    "Error on MPI rank {} of {}: {e:#}",
                    world.rank(),
                    world.size()
                );
                world.abort(1);
            }
            return Err(e);
        }
    };
    report_run(&summary, &world, args.json);
    Ok(())
}

/// What a finished (or interrupted) run prints: where to continue, each rank's agreement, the
/// loss and speed; on stderr where stdout is kept for JSON (`json`).
fn report_run(summary: &RunSummary, world: &World, json: bool) {
    let say = |line: String| {
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    if summary.interrupted {
        let checkpoint = summary.checkpoint.as_ref().map(|p| p.display().to_string());
        say(format!(
            "interrupted at step {}; checkpoint in {}; continue with `sapling train --resume --out {}`",
            summary.steps,
            checkpoint.unwrap_or_default(),
            summary.out.display()
        ));
        return;
    }
    if world.size() > 1 {
        say(format!(
            "rank {} of {}: weights crc32 {:08x}, max difference from rank 0 {:e}, all-reduce {:.1} ms and {} per step",
            world.rank(),
            world.size(),
            summary.weights_crc32,
            summary.max_diff_from_rank0,
            summary.reduce_seconds * 1e3,
            fmt_bytes(summary.reduce_bytes)
        ));
        if world.rank() != 0 {
            return;
        }
    }
    let loss = |l: Option<&(u64, f64)>| l.map_or(f64::NAN, |l| l.1);
    // The first step compiles kernels and is not timed, so a one-step run has no speed.
    let speed = if summary.images_per_sec > 0.0 {
        format!("{:.1} images/s", summary.images_per_sec)
    } else {
        "too few steps to time".to_string()
    };
    say(format!(
        "done: {} steps on {}, loss {:.4} -> {:.4}, {speed}; outputs in {}",
        summary.steps,
        summary.device,
        loss(summary.losses.first()),
        loss(summary.losses.last()),
        summary.out.display()
    ));
}

fn reconstruct(args: ReconstructArgs) -> anyhow::Result<()> {
    let (config, model) = model_of(&args.weights, &burn::tensor::Device::flex())?;
    let grid = sapling::viz::recon::reconstruct_file(
        &config,
        &model,
        &args.image,
        args.mask_ratio,
        args.seed,
    )?;
    let figure = sapling::viz::plot::with_column_titles(&grid, &sapling::viz::recon::COLUMN_TITLES);
    sapling::viz::save_png(&figure, &args.out)?;
    println!("wrote {}", args.out.display());
    Ok(())
}

/// The model `--checkpoint` or `--weights` names, on `device`, and its config.
fn model_of(
    args: &WeightsArgs,
    device: &burn::tensor::Device,
) -> anyhow::Result<(Config, MaskedAutoencoder)> {
    if let Some(path) = &args.weights {
        let phase = Progress::stderr().phase(format!("importing {}", path.display()), 0);
        let (config, model, report) = sapling::import::model_for(path, args.preset, device)?;
        drop(phase);
        eprintln!("{report}");
        return Ok((config, model));
    }
    let Some(path) = &args.checkpoint else {
        anyhow::bail!("give --checkpoint DIR (a sapling checkpoint) or --weights FILE");
    };
    let loaded = sapling::checkpoint::load(path)?;
    let model = loaded.model(device)?;
    Ok((loaded.state.config, model))
}

fn eval_linear_probe(args: LinearProbeArgs) -> anyhow::Result<()> {
    let device = sapling::device::select(args.device)?;
    let (config, model) = model_of(&args.weights, &device.device)?;
    let probe = ProbeConfig {
        pool: args.labelled.pool,
        train_limit: args.labelled.train_limit,
        test_limit: args.labelled.test_limit,
        iterations: args.iterations,
        lr: 1e-2,
        seed: 0,
    };
    let progress = Progress::stderr();
    let report = linear_probe(
        &config,
        &model,
        &args.labelled.data,
        &probe,
        &device.device,
        &progress,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "linear probe ({}, {} train / {} test images): pretrained top-1 {:.2}%, random encoder {:.2}%",
        report.pool.describe(),
        report.train_images,
        report.test_images,
        100.0 * report.pretrained_top1,
        100.0 * report.random_top1
    );
    Ok(())
}

/// `sapling data pack`: shards and sizes.json from an image folder or IDX files, and a summary.
fn data_pack(args: PackArgs) -> anyhow::Result<()> {
    use sapling::data::shards::pack::{PackOptions, pack};
    let source = sapling::data::ImageSource::folder(&args.data)?;
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let options = PackOptions {
        out: args.out,
        shard_size: args.shard_size,
        max_side: args.max_side,
        quality: args.quality,
        workers,
        overwrite: args.overwrite,
    };
    let summary = pack(&source, &options, Progress::stderr())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "packed {} images ({} JPEGs kept as they were, {} shrunk to a short side of {} px, {} encoded at quality {}) into {} shard(s), {}",
        summary.images,
        summary.kept,
        summary.resized,
        options.max_side,
        summary.encoded,
        options.quality,
        summary.shards.len(),
        fmt_bytes(summary.bytes)
    );
    if summary.skipped_count > 0 {
        println!("skipped {} file(s):", summary.skipped_count);
        for why in &summary.skipped {
            println!("  {why}");
        }
    }
    println!("train on them with --data {}", summary.data);
    Ok(())
}

/// `sapling eval knn`: the encoder's k-NN top-1 and a random encoder's beside it.
fn eval_knn(args: KnnArgs) -> anyhow::Result<()> {
    use sapling::eval::knn::{KnnConfig, KnnData, knn};
    let device = sapling::device::select(args.device)?;
    let (config, model) = model_of(&args.weights, &device.device)?;
    let settings = KnnConfig {
        k: args.k,
        temperature: args.temperature,
        pool: args.labelled.pool,
        train_limit: args.labelled.train_limit,
        test_limit: args.labelled.test_limit,
    };
    let data = KnnData::open(&args.labelled.data)?;
    let progress = Progress::stderr();
    let pretrained = knn(&config, &model, &data, &settings, &progress)?;
    let random_model = sapling::model::init::seeded(&device.device, 0, || {
        MaskedAutoencoder::new(&config.model, &device.device)
    });
    let random = knn(&config, &random_model, &data, &settings, &progress)?;
    if args.json {
        let both = serde_json::json!({ "pretrained": pretrained, "random_top1": random.top1 });
        println!("{}", serde_json::to_string_pretty(&both)?);
        return Ok(());
    }
    println!(
        "k-NN (k {}, T {}, {}, {} train / {} test images): pretrained top-1 {:.2}%, random encoder {:.2}%",
        pretrained.k,
        pretrained.temperature,
        pretrained.pool.describe(),
        pretrained.train_images,
        pretrained.test_images,
        100.0 * pretrained.top1,
        100.0 * random.top1
    );
    Ok(())
}

fn export(args: ExportArgs) -> anyhow::Result<()> {
    let loaded = sapling::checkpoint::load(&args.checkpoint)?;
    let model = loaded.model(&burn::tensor::Device::flex())?;
    let preset = loaded.state.config.preset.name();
    let what = Export {
        layout: args.format,
        with_decoder: args.with_decoder,
        dtype: args.dtype,
    };
    let phase = Progress::stderr().phase(format!("writing {}", args.out.display()), 0);
    let n = sapling::export::write_weights(&model, preset, &args.out, what)?;
    drop(phase);
    let part = if args.with_decoder {
        "encoder and decoder"
    } else {
        "encoder"
    };
    println!(
        "wrote {n} {part} tensors ({} layout, {}) to {}",
        args.format.describe(),
        args.dtype,
        args.out.display()
    );
    Ok(())
}

/// `sapling plot`: the loss curves of several runs in one picture.
fn plot_runs(args: PlotArgs) -> anyhow::Result<()> {
    sapling::viz::plot::compare_losses(&args.runs, &args.out)?;
    println!("wrote {}", args.out.display());
    Ok(())
}

/// `sapling probe`: the batch plan `train` would make, with the limits it was made under.
fn plan(args: PlanArgs) -> anyhow::Result<()> {
    let mut config = args.run.resolve()?;
    let ranks = args.ranks.max(1);
    if !config.train.effective_batch.is_multiple_of(ranks) {
        anyhow::bail!(
            "--ranks {ranks} must divide the effective batch {}",
            config.train.effective_batch
        );
    }
    config.train.effective_batch /= ranks;
    let selected = sapling::device::select_for(&config.train)?;
    let limits = DeviceLimits::of(&selected, config.train.memory_budget_mib)
        .simulated(args.simulate_binding.map(|m| m << 20), None);
    let options = TrialOptions {
        sizes: args.trial_sizes,
        steps: args.trial_steps,
    };
    let device = &selected.device;
    let plan = sapling::train::plan_in_world(&config, device, &limits, options, ranks)?;
    print_report(&plan, args.json)
}

/// `sapling plan`: every lever combination for hardware that is not here.
fn plan_hypothetical(args: HypotheticalArgs) -> anyhow::Result<()> {
    let config = args.run.resolve()?;
    let Some(budget) = config.train.memory_budget_mib else {
        anyhow::bail!("give --memory-budget MIB: the memory of the device to plan for");
    };
    if args.ranks == 0 || !config.train.effective_batch.is_multiple_of(args.ranks) {
        anyhow::bail!(
            "--ranks {} must be at least 1 and divide the effective batch {}",
            args.ranks,
            config.train.effective_batch
        );
    }
    let gpu = config.train.device != DeviceChoice::Cpu;
    let binding = gpu.then_some(args.binding << 20);
    let host = args
        .host_memory
        .map(|m| m << 20)
        .or_else(sapling::planner::host_memory);
    let limits = DeviceLimits::hypothetical(gpu, budget << 20, binding).with_host_memory(host);
    let table = sapling::planner::lever_table(&config, !gpu, &limits, args.ranks);
    print_report(&table, args.json)
}

fn bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Import(args) => bench_import(args),
        BenchCommand::Step(args) => bench_step(args),
        BenchCommand::Kernels(args) => bench_kernels(args),
        BenchCommand::Scaling(args) => bench_scaling(args),
        BenchCommand::ReferenceCase(args) => bench_reference_case(args),
        BenchCommand::BatchSweep(args) => bench_batch_sweep(args),
        BenchCommand::Loader(args) => bench_loader(args),
    }
}

/// The resolved config of a benchmark's flags and the device it runs on.
fn device_of(run: &TrainArgs) -> anyhow::Result<(Config, Selected)> {
    let config = run.resolve()?;
    let selected = sapling::device::select_for(&config.train)?;
    Ok((config, selected))
}

/// The micro-batch given, or the one `train` would plan, with its levers.
fn micro_batch_of(config: &Config, selected: &Selected) -> anyhow::Result<(usize, Levers)> {
    let on_flex = selected.adapter.is_none();
    Ok(match config.train.batch_size {
        BatchSize::Fixed(b) => (b, Levers::of(config, on_flex)),
        BatchSize::Auto => {
            let limits = DeviceLimits::of(selected, config.train.memory_budget_mib);
            let options = TrialOptions::default();
            let plan = sapling::train::plan(config, &selected.device, &limits, options)?;
            (
                plan.micro_batch,
                plan.levers.unwrap_or(Levers::of(config, on_flex)),
            )
        }
    })
}

/// `sapling bench step`: the micro-batch given, or the one `train` would plan.
fn bench_step(args: BenchStepArgs) -> anyhow::Result<()> {
    let (config, selected) = device_of(&args.run)?;
    let (micro, mut levers) = micro_batch_of(&config, &selected)?;
    if let Some(offload) = args.offload {
        levers.offload = offload;
    }
    let timed = args.timed_steps;
    let matmul = sapling::bench::matmul_rate(&selected.device, 1024, timed.max(3))?;
    let describe = selected.describe();
    let shape = (micro, args.accum.max(1), levers);
    let result =
        sapling::bench::bench_step(&config, &selected.device, &describe, shape, timed, matmul)?;
    print_report(&result, args.json)
}

/// `sapling bench loader`: the loader alone against the step's images/s, measured first on
/// the run's device (or given with `--demand`).
fn bench_loader(args: BenchLoaderArgs) -> anyhow::Result<()> {
    let (config, selected) = device_of(&args.run)?;
    let (micro, levers) = micro_batch_of(&config, &selected)?;
    let demand = match args.demand {
        Some(d) if d > 0.0 && d.is_finite() => (d, "given with --demand".to_string()),
        Some(d) => anyhow::bail!("--demand must be a positive number of images/s, got {d}"),
        None => {
            let describe = selected.describe();
            let step = (micro, 1, levers);
            // The FLOP rate is not reported here, so the device's matmul rate is not measured.
            let bench = sapling::bench::bench_step(
                &config,
                &selected.device,
                &describe,
                step,
                3,
                f64::NAN,
            )?;
            let by = format!("a training step on {describe}, median of 3");
            (bench.images_per_sec, by)
        }
    };
    let report = sapling::bench::bench_loader(&config, micro, &args.workers, args.batches, demand)?;
    print_report(&report, args.json)
}

/// `sapling bench kernels`: both arms of every op sapling has a kernel for on the device (WGSL
/// on wgpu, Rust on the CPU), at micro-batch 1 unless one is given.
fn bench_kernels(args: BenchKernelsArgs) -> anyhow::Result<()> {
    let config = args.run.resolve()?;
    let selected = sapling::device::select_for(&config.train)?;
    let kernels = sapling::ops::Kernels::resolve(config.train.kernels, &selected.device)?;
    let micro = match config.train.batch_size {
        BatchSize::Fixed(b) => b,
        BatchSize::Auto => 1,
    };
    let describe = selected.describe();
    let report = sapling::bench::bench_kernels(
        &config,
        &selected.device,
        kernels,
        &describe,
        micro,
        args.reps,
    )?;
    print_report(&report, args.json)
}

fn bench_scaling(args: BenchScalingArgs) -> anyhow::Result<()> {
    let (config, selected) = device_of(&args.run)?;
    let sweeps = sapling::bench::Sweeps {
        batches: args.batches,
        sizes: args.img_sizes,
        batch_for_sizes: args.size_batch,
        timed: args.timed_steps,
    };
    let describe = selected.describe();
    let result =
        sapling::bench::scaling(&config, &selected.device, &describe, &sweeps, &args.plots)?;
    println!(
        "{:>8} {:>6} {:>8} {:>10} {:>10}",
        "micro", "px", "tokens", "steps/s", "images/s"
    );
    for p in result.by_batch.iter().chain(&result.by_tokens) {
        println!(
            "{:>8} {:>6} {:>8} {:>10.3} {:>10.1}",
            p.micro_batch, p.img_size, p.tokens, p.steps_per_sec, p.images_per_sec
        );
    }
    for p in &result.plots {
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// `sapling bench reference-case`: a few steps recorded for `benches/torch_mae.py`.
fn bench_reference_case(args: ReferenceCaseArgs) -> anyhow::Result<()> {
    let (config, selected) = device_of(&args.run)?;
    let (micro, steps) = (args.micro_batch, args.record_steps);
    let case = sapling::bench::write_reference_case(
        &config,
        &selected.device,
        micro,
        steps,
        args.lr,
        &args.dir,
    )?;
    println!(
        "wrote {steps} steps to {}: losses {:?}, grad norms {:?}",
        args.dir.display(),
        case.losses,
        case.grad_norms
    );
    Ok(())
}

/// `sapling bench import`: a weights file's import, phase by phase.
fn bench_import(args: BenchImportArgs) -> anyhow::Result<()> {
    let t = sapling::bench::time_import(&args.weights, args.preset)?;
    println!("{}", t.report);
    println!(
        "{}: {} into {}: read {:.2} s, init {:.2} s, load {:.2} s, total {:.2} s",
        args.weights.display(),
        fmt_bytes(t.file_bytes),
        t.preset.name(),
        t.read_s,
        t.init_s,
        t.load_s,
        t.read_s + t.init_s + t.load_s
    );
    Ok(())
}

/// `sapling bench batch-sweep`: the planner's choice against every micro-batch that fits.
fn bench_batch_sweep(args: BatchSweepArgs) -> anyhow::Result<()> {
    let (config, selected) = device_of(&args.run)?;
    let limits = DeviceLimits::of(&selected, config.train.memory_budget_mib);
    let (timed, max_accum) = (args.timed_steps, args.max_accum);
    let report = sapling::bench::batch_sweep(&config, &selected.device, &limits, timed, max_accum)?;
    print_report(&report, args.json)
}

/// `sapling info`: the WebGPU adapters wgpu sees, and what to do where none is a GPU.
fn info(args: InfoArgs) -> anyhow::Result<()> {
    let adapters = sapling::device::adapters();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&adapters)?);
        return Ok(());
    }
    for a in &adapters {
        println!("{a}");
    }
    if let Some(advice) = sapling::device::missing_gpu_advice(&adapters) {
        println!("{advice}");
    }
    Ok(())
}

/// A report as people read it, or as JSON for scripts.
fn print_report<T: serde::Serialize + std::fmt::Display>(
    report: &T,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}
