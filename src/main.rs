//! `sapling`: the command-line entry point. All work lives in the library.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::Parser;
use sapling::cli::{BenchCommand, Cli, Command, EvalCommand, TrainArgs};
use sapling::config::BatchSize;
use sapling::eval::probe::{ProbeConfig, linear_probe};
use sapling::probe::{DeviceLimits, ProbeOptions};
use sapling::train::{RunOptions, train};

/// Reuses freed blocks instead of handing them back to the kernel (see `sapling::alloc`).
#[global_allocator]
static ALLOCATOR: sapling::alloc::MiMalloc = sapling::alloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    sapling::alloc::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,sapling=info".into()),
        )
        .init();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Train(TrainArgs::default())) {
        Command::Train(args) => {
            let (config, resume) = args.resolve_run()?;
            // MPI is started before any device work; without `mpirun` this is a world of one.
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
                interactive: true,
                resume: resume.map(Arc::new),
                stop: Some(stop),
                world: Some(world.clone()),
            };
            let summary = train(&config, options)
                .with_context(|| format!("training {}", config.preset.name()))?;
            if summary.interrupted {
                println!(
                    "interrupted at step {}; checkpoint in {}; continue with `sapling train --resume --out {}`",
                    summary.steps,
                    summary
                        .checkpoint
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    summary.out.display()
                );
                return Ok(());
            }
            if world.size() > 1 {
                println!(
                    "rank {} of {}: weights crc32 {:08x}, max difference from rank 0 {:e}, all-reduce {:.1} ms and {} per step",
                    world.rank(),
                    world.size(),
                    summary.weights_crc32,
                    summary.max_diff_from_rank0,
                    summary.reduce_seconds * 1e3,
                    sapling::probe::fmt_bytes(summary.reduce_bytes)
                );
                if world.rank() != 0 {
                    return Ok(());
                }
            }
            let first = summary.losses.first().map(|l| l.1).unwrap_or(f64::NAN);
            let last = summary.losses.last().map(|l| l.1).unwrap_or(f64::NAN);
            println!(
                "done: {} steps on {}, loss {first:.4} -> {last:.4}, {:.1} images/s; outputs in {}",
                summary.steps,
                summary.device,
                summary.images_per_sec,
                summary.out.display()
            );
        }
        Command::Reconstruct {
            checkpoint,
            image,
            mask_ratio,
            seed,
            out,
        } => {
            let loaded = sapling::checkpoint::load(&checkpoint)?;
            let grid = sapling::viz::recon::reconstruct_file(&loaded, &image, mask_ratio, seed)?;
            sapling::viz::save_png(&grid, &out)?;
            println!("wrote {}", out.display());
        }
        Command::Eval(EvalCommand::LinearProbe(args)) => {
            let loaded = sapling::checkpoint::load(&args.checkpoint)?;
            let device = sapling::device::select(args.device)?;
            let probe = ProbeConfig {
                pool: args.pool,
                train_limit: args.train_limit,
                test_limit: args.test_limit,
                iterations: args.iterations,
                lr: 1e-2,
                seed: 0,
            };
            let report = linear_probe(&loaded, &args.data, &probe, &device.device)?;
            println!(
                "linear probe ({:?} token, {} train / {} test images): pretrained top-1 {:.2}%, random encoder {:.2}%",
                report.pool,
                report.train_images,
                report.test_images,
                100.0 * report.pretrained_top1,
                100.0 * report.random_top1
            );
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Export { checkpoint, out } => {
            let loaded = sapling::checkpoint::load(&checkpoint)?;
            let model = loaded.model(&burn::tensor::Device::flex())?;
            let n =
                sapling::export::write_encoder(&model, loaded.state.config.preset.name(), &out)?;
            println!(
                "wrote {n} encoder tensors (timm ViT layout) to {}",
                out.display()
            );
        }
        Command::Probe(args) => {
            let config = args.run.resolve()?;
            let selected = sapling::device::select_for(&config.train)?;
            let limits = DeviceLimits::of(&selected, config.train.memory_budget_mib)
                .simulated(args.simulate_binding.map(|m| m << 20), None);
            let options = ProbeOptions {
                sizes: args.trial_sizes,
                steps: args.trial_steps,
            };
            let plan = sapling::probe::plan(&config, &selected.device, &limits, options)?;
            print_report(&plan, args.json)?;
        }
        Command::Bench(BenchCommand::Step {
            run,
            timed_steps,
            json,
        }) => {
            let config = run.resolve()?;
            let selected = sapling::device::select_for(&config.train)?;
            let micro = match config.train.batch_size {
                BatchSize::Fixed(b) => b,
                BatchSize::Auto => {
                    let limits = DeviceLimits::of(&selected, config.train.memory_budget_mib);
                    sapling::probe::plan(
                        &config,
                        &selected.device,
                        &limits,
                        ProbeOptions::default(),
                    )?
                    .micro_batch
                }
            };
            let matmul = sapling::bench::matmul_rate(&selected.device, 1024, timed_steps.max(3))?;
            let result = sapling::bench::bench_step(
                &config,
                &selected.device,
                &selected.describe(),
                micro,
                timed_steps,
                matmul,
            )?;
            print_report(&result, json)?;
        }
        Command::Bench(BenchCommand::Kernels { run, reps, json }) => {
            let mut config = run.resolve()?;
            // Both paths run in the benchmark; it needs the device the kernels run on.
            config.train.kernels = sapling::kernels::KernelPath::Wgsl;
            let selected = sapling::device::select_for(&config.train)?;
            let micro = match config.train.batch_size {
                BatchSize::Fixed(b) => b,
                BatchSize::Auto => 1,
            };
            let report = sapling::bench::bench_kernels(
                &config,
                &selected.device,
                &selected.describe(),
                micro,
                reps,
            )?;
            print_report(&report, json)?;
        }
        Command::Bench(BenchCommand::Scaling {
            run,
            batches,
            img_sizes,
            size_batch,
            timed_steps,
            plots,
        }) => {
            let config = run.resolve()?;
            let selected = sapling::device::select_for(&config.train)?;
            let result = sapling::bench::scaling(
                &config,
                &selected.device,
                &selected.describe(),
                &sapling::bench::Sweeps {
                    batches,
                    sizes: img_sizes,
                    batch_for_sizes: size_batch,
                    timed: timed_steps,
                },
                &plots,
            )?;
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
        }
        Command::Bench(BenchCommand::ReferenceCase {
            run,
            dir,
            micro_batch,
            record_steps,
            lr,
        }) => {
            let config = run.resolve()?;
            let selected = sapling::device::select_for(&config.train)?;
            let case = sapling::bench::write_reference_case(
                &config,
                &selected.device,
                micro_batch,
                record_steps,
                lr,
                &dir,
            )?;
            println!(
                "wrote {} steps to {}: losses {:?}, grad norms {:?}",
                record_steps,
                dir.display(),
                case.losses,
                case.grad_norms
            );
        }
        Command::Bench(BenchCommand::BatchSweep {
            run,
            timed_steps,
            max_accum,
            json,
        }) => {
            let config = run.resolve()?;
            let selected = sapling::device::select_for(&config.train)?;
            let limits = DeviceLimits::of(&selected, config.train.memory_budget_mib);
            let report = sapling::bench::batch_sweep(
                &config,
                &selected.device,
                &limits,
                timed_steps,
                max_accum,
            )?;
            print_report(&report, json)?;
        }
        Command::Info => {
            let adapters = sapling::device::adapters();
            if adapters.is_empty() {
                println!("no WebGPU adapter found; sapling trains on the CPU (burn Flex)");
            }
            for a in adapters {
                println!("{}", serde_json::to_string_pretty(&a)?);
            }
        }
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
