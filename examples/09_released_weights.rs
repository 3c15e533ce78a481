//! Step 9: starting from released weights.
//!
//! Pretraining rarely starts from nothing: Meta released MAE's and Sapiens' weights, and
//! continuing from them on your own images is one flag, `sapling train --init-from FILE`. The
//! same tensors are published under three families of names (timm's, as MAE's `.pth` files;
//! mmpretrain's, as Sapiens'; Hugging Face's, with q, k and v apart), and sapling reads each as
//! it is, mapping it to one canonical set of names by a table of prefix rules.
//!
//! This step shows how one tensor is named in each layout, then opens the same small MAE saved
//! three ways by PyTorch (the test fixtures in `tests/fixtures/import/`), loads each into the
//! same model and scores one masked batch: MAE's `.pth` and Hugging Face's safetensors give the
//! same loss to the last bit; Sapiens' file was trained with row-first position tables, which
//! sapling adopts from the file, so its model (and loss) differs.
//!
//! Run: `cargo run --release --example 09_released_weights`

mod common;

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use sapling::config::{Config, Preset};
use sapling::layout::Layout;
use sapling::model::{MaskPlan, MaskedAutoencoder, init};

fn main() -> anyhow::Result<()> {
    let name = "blocks.0.mlp.fc1.weight";
    println!("`{name}` in each layout, as a full checkpoint names it:");
    for layout in Layout::ALL {
        let external = layout
            .placement(true)
            .external(name)
            .expect("every layout has it");
        println!("  {:<22} {external}", layout.describe());
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import");
    // The fixtures' model: 16-px images, patch 4, 16 wide, 2 blocks, decoder 16 wide, 1 block.
    let config = Config::from_toml_file(&fixtures.join("micro.toml"), Preset::Tiny)?.model;
    let device = Device::flex();
    let images: Vec<f32> = common::photo(0, 16)
        .into_iter()
        .chain(common::photo(1, 16))
        .collect();
    let plan = MaskPlan::random(2, config.num_patches(), config.num_visible(), 0);
    for file in ["mae_full.pth", "hf_vitmae.safetensors", "sapiens_full.pth"] {
        let imported = sapling::import::read(&fixtures.join(file))?;
        let mut c = config.clone();
        c.pos_embed = imported.pos_embed()?.unwrap_or_default();
        let model = MaskedAutoencoder::new(&c, &device);
        init::materialize(&model);
        let (model, report) = imported.load(model, "micro")?;
        println!("{report}");
        let imgs = Tensor::from_data(TensorData::new(images.clone(), [2, 3, 16, 16]), &device);
        let loss: f32 = model.forward(imgs, &plan).loss.into_scalar();
        println!("  -> loss of two photos with 75 % of their patches masked: {loss:.7}");
    }
    Ok(())
}
