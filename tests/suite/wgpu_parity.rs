//! The WebGPU path against the CPU path: same weights, batches and masks, same losses.

use sapling::model::MaskedAutoencoder;
use sapling::train::Trainer;

use crate::common::{copy_model, flex, lockstep, micro_config, wgpu_or_skip};

#[test]
fn wgpu_and_flex_agree_on_the_first_steps() {
    let Some(gpu) = wgpu_or_skip("wgpu_and_flex_agree_on_the_first_steps") else {
        return;
    };
    eprintln!("wgpu parity on {}", gpu.describe());
    let cfg = micro_config("parity");
    let cpu = flex().autodiff();
    cpu.seed(11);
    let model = MaskedAutoencoder::new(&cfg.model, &cpu);
    let gpu_dev = gpu.device.clone().autodiff();
    let gpu_model = copy_model(&model, &gpu_dev);
    let mut on_cpu = Trainer::from_model(&cfg, model, &cpu).unwrap();
    let mut on_gpu = Trainer::from_model(&cfg, gpu_model, &gpu_dev).unwrap();
    lockstep(("flex", &mut on_cpu), ("wgpu", &mut on_gpu), 4, 1e-3, 1e-2);
}
