//! The encoder as a `safetensors` file in timm's ViT layout, for fine-tuning in PyTorch.
//!
//! Names and layouts are those of `timm.models.vision_transformer.VisionTransformer` (the same as
//! MAE's encoder): `cls_token [1, 1, D]`, `pos_embed [1, 1 + L, D]` (the fixed sin-cos table,
//! cls row zero), `patch_embed.proj.weight [D, C, p, p]` (a convolution), then per block
//! `blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.{weight, bias}` with linear
//! weights as `[out, in]`, and the final `norm.{weight, bias}`. Load with
//! `timm.create_model("vit_base_patch16_224", num_classes=0).load_state_dict(..., strict=False)`
//! (strict fails only on the classifier head, which pretraining does not have).

use std::collections::HashMap;
use std::path::Path;

use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;

use crate::atomic;
use crate::error::{Result, SaplingError};
use crate::model::MaskedAutoencoder;

/// One exported tensor: name, shape, row-major values.
pub struct Exported {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 tensor")
}

/// The encoder's tensors under timm's names.
pub fn encoder_tensors(model: &MaskedAutoencoder) -> Vec<Exported> {
    let c = &model.config;
    let (d, p, ch, l) = (c.dim, c.patch_size, c.in_chans, c.num_patches());
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, values: Vec<f32>| {
        out.push(Exported {
            name,
            shape,
            values,
        });
    };
    push(
        "cls_token".into(),
        vec![1, 1, d],
        host(model.cls_token.val()),
    );
    push(
        "pos_embed".into(),
        vec![1, 1 + l, d],
        host(model.pos_embed.clone()),
    );
    // sapling's patch vector is (row, column, channel); the convolution is [D, C, row, column].
    let w = model
        .patch_embed
        .weight
        .val()
        .reshape([p, p, ch, d])
        .permute([3, 2, 0, 1]);
    push("patch_embed.proj.weight".into(), vec![d, ch, p, p], host(w));
    push(
        "patch_embed.proj.bias".into(),
        vec![d],
        host(bias(&model.patch_embed)),
    );
    let linear =
        |name: String, lin: &Linear, push: &mut dyn FnMut(String, Vec<usize>, Vec<f32>)| {
            let [d_in, d_out] = lin.weight.val().dims();
            push(
                format!("{name}.weight"),
                vec![d_out, d_in],
                host(lin.weight.val().transpose()),
            );
            push(format!("{name}.bias"), vec![d_out], host(bias(lin)));
        };
    let norm = |name: String, n: &LayerNorm, push: &mut dyn FnMut(String, Vec<usize>, Vec<f32>)| {
        push(format!("{name}.weight"), vec![d], host(n.gamma.val()));
        let beta = n
            .beta
            .as_ref()
            .map(|b| b.val())
            .expect("LayerNorm has a bias");
        push(format!("{name}.bias"), vec![d], host(beta));
    };
    for (i, b) in model.blocks.iter().enumerate() {
        norm(format!("blocks.{i}.norm1"), &b.norm1, &mut push);
        linear(format!("blocks.{i}.attn.qkv"), &b.attn.qkv, &mut push);
        linear(format!("blocks.{i}.attn.proj"), &b.attn.proj, &mut push);
        norm(format!("blocks.{i}.norm2"), &b.norm2, &mut push);
        linear(format!("blocks.{i}.mlp.fc1"), &b.mlp.fc1, &mut push);
        linear(format!("blocks.{i}.mlp.fc2"), &b.mlp.fc2, &mut push);
    }
    norm("norm".into(), &model.norm, &mut push);
    out
}

fn bias(lin: &Linear) -> Tensor<1> {
    lin.bias
        .as_ref()
        .map(|b| b.val())
        .expect("sapling's linears have biases")
}

/// Writes the encoder of `model` to `path` (atomically), with the preset in the metadata.
pub fn write_encoder(model: &MaskedAutoencoder, preset: &str, path: &Path) -> Result<usize> {
    let tensors = encoder_tensors(model);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|t| {
            let raw = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (t.name, t.shape, raw)
        })
        .collect();
    let views = bytes.iter().map(|(name, shape, raw)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), raw)
                .expect("shape matches data");
        (name.clone(), view)
    });
    let metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("layout".to_string(), "timm-vit".to_string()),
        ("sapling_preset".to_string(), preset.to_string()),
    ]);
    let file = safetensors::tensor::serialize(views, Some(metadata)).map_err(|e| {
        SaplingError::Checkpoint {
            path: path.to_path_buf(),
            message: format!("cannot serialise: {e}"),
        }
    })?;
    atomic::write(path, &file)?;
    Ok(bytes.len())
}
