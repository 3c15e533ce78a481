//! `sapling`: the command-line entry point. All work lives in the library.

use anyhow::Context;
use clap::Parser;
use sapling::cli::{Cli, Command, TrainArgs};
use sapling::train::{RunOptions, train};

fn main() -> anyhow::Result<()> {
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
            let config = args.resolve()?;
            let summary = train(&config, RunOptions { interactive: true })
                .with_context(|| format!("training {}", config.preset.name()))?;
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
