//! The WebGPU path against the CPU path: same weights, batches and masks, same losses.

use burn::module::Module;
use burn::store::ModuleRecord;
use sapling::config::DataConfig;
use sapling::data::{ImageSource, Loader};
use sapling::model::MaskedAutoencoder;
use sapling::train::Trainer;

use crate::common::{flex, micro_config, wgpu_or_skip};

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
    let bytes = model.clone().into_record().into_bytes().unwrap();
    let gpu_dev = gpu.device.clone().autodiff();
    let gpu_model = MaskedAutoencoder::new(&cfg.model, &gpu_dev)
        .load_record(ModuleRecord::from_bytes(bytes).unwrap());

    let mut on_cpu = Trainer::from_model(&cfg, model, &cpu);
    let mut on_gpu = Trainer::from_model(&cfg, gpu_model, &gpu_dev);
    let data = DataConfig {
        workers: 1,
        ..DataConfig::default()
    };
    let mut loader = Loader::new(ImageSource::Embedded, &data, cfg.model.img_size, 4, 0, 0);
    for step in 0..4 {
        let batch = loader.next_batch().unwrap();
        let a = on_cpu.step(step, 1e-3, vec![batch.clone()]).unwrap();
        let b = on_gpu.step(step, 1e-3, vec![batch]).unwrap();
        eprintln!(
            "step {step}: flex loss {:.6} norm {:.6} | wgpu loss {:.6} norm {:.6}",
            a.loss, a.grad_norm, b.loss, b.grad_norm
        );
        assert!(
            (a.loss - b.loss).abs() <= 1e-3 * a.loss.abs(),
            "step {step}: {a:?} vs {b:?}"
        );
        assert!(
            (a.grad_norm - b.grad_norm).abs() <= 1e-2 * a.grad_norm,
            "step {step}: {a:?} vs {b:?}"
        );
    }
}
