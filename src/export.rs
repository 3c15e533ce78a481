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
use crate::layout::{Layout, split_qkv};
use crate::model::MaskedAutoencoder;
use crate::model::block::Block;
use crate::ops::Precision;

/// One exported tensor: name, shape, row-major values.
pub use crate::layout::Named as Exported;

/// A tensor to export, still on the device (flattened).
struct OnDevice {
    name: String,
    shape: Vec<usize>,
    values: Tensor<1>,
}

impl OnDevice {
    /// The values, read back without blocking.
    async fn read(self) -> Result<Exported> {
        let data = self
            .values
            .into_data_async()
            .await
            .map_err(|e| SaplingError::Device(e.to_string()))?;
        Ok(Exported {
            values: f32s(data),
            name: self.name,
            shape: self.shape,
        })
    }
}

/// Every tensor of `on_device`, read back in order.
async fn read_all(on_device: Vec<OnDevice>) -> Result<Vec<Exported>> {
    let mut out = Vec::with_capacity(on_device.len());
    for t in on_device {
        out.push(t.read().await?);
    }
    Ok(out)
}

fn f32s(data: burn::tensor::TensorData) -> Vec<f32> {
    data.convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 tensor")
}

fn flat<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    let n = t.shape().num_elements();
    t.reshape([n])
}

/// The encoder's tensors under timm's names.
pub async fn encoder_tensors_async(model: &MaskedAutoencoder) -> Result<Vec<Exported>> {
    read_all(encoder_on_device(model)).await
}

/// [`encoder_tensors_async`], blocking.
#[cfg(not(target_family = "wasm"))]
pub fn encoder_tensors(model: &MaskedAutoencoder) -> Result<Vec<Exported>> {
    pollster::block_on(encoder_tensors_async(model))
}

/// The encoder as the bytes of a safetensors file in timm's layout, with the preset in its
/// metadata: what [`write_encoder`] writes.
pub async fn encoder_safetensors_async(model: &MaskedAutoencoder, preset: &str) -> Result<Vec<u8>> {
    let what = Export {
        layout: Layout::Timm,
        with_decoder: false,
        dtype: Precision::F32,
    };
    weights_safetensors_async(model, preset, what).await
}

/// `model`'s weights as the bytes of a safetensors file as `what` says, with the layout and the
/// preset in the metadata: what [`write_weights`] writes and the browser downloads.
pub async fn weights_safetensors_async(
    model: &MaskedAutoencoder,
    preset: &str,
    what: Export,
) -> Result<Vec<u8>> {
    Ok(weights_file(model, preset, what).await?.0)
}

/// The file's bytes and how many tensors it holds.
async fn weights_file(
    model: &MaskedAutoencoder,
    preset: &str,
    what: Export,
) -> Result<(Vec<u8>, usize)> {
    let tensors = if what.with_decoder {
        model_tensors_async(model).await?
    } else {
        encoder_tensors_async(model).await?
    };
    let tensors = in_layout(tensors, what.layout, what.with_decoder);
    let layout = match what.layout {
        Layout::Timm => "timm-vit",
        Layout::HuggingFace => "hf-vitmae",
        Layout::Mmpretrain => "mmpretrain-vit",
    };
    let metadata = [("layout", layout), ("sapling_preset", preset)];
    let n = tensors.len();
    let bytes = safetensors_bytes(&raw(tensors, what.dtype), &metadata).map_err(|message| {
        SaplingError::Data {
            path: "<weights.safetensors>".into(),
            message,
        }
    })?;
    Ok((bytes, n))
}

fn encoder_on_device(model: &MaskedAutoencoder) -> Vec<OnDevice> {
    let c = &model.config;
    let (d, p, ch, l) = (c.dim, c.patch_size, c.in_chans, c.num_patches());
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, values: Tensor<1>| {
        out.push(OnDevice {
            name,
            shape,
            values,
        });
    };
    push(
        "cls_token".into(),
        vec![1, 1, d],
        flat(model.cls_token.val()),
    );
    push(
        "pos_embed".into(),
        vec![1, 1 + l, d],
        flat(model.pos_embed.clone()),
    );
    // sapling's patch vector is (row, column, channel); the convolution is [D, C, row, column].
    let w = model
        .patch_embed
        .weight
        .val()
        .reshape([p, p, ch, d])
        .permute([3, 2, 0, 1]);
    push("patch_embed.proj.weight".into(), vec![d, ch, p, p], flat(w));
    push(
        "patch_embed.proj.bias".into(),
        vec![d],
        flat(bias(&model.patch_embed)),
    );
    for (i, b) in model.blocks.iter().enumerate() {
        push_block(&format!("blocks.{i}"), b, &mut out);
    }
    push_norm("norm", &model.norm, &mut out);
    out
}

/// Every trained tensor of the model (encoder as [`encoder_tensors_async`], then MAE's decoder
/// names: `decoder_embed`, `mask_token`, `decoder_pos_embed`, `decoder_blocks.i.*`,
/// `decoder_norm`, `decoder_pred`), e.g. to start a PyTorch reference from the same weights.
pub async fn model_tensors_async(model: &MaskedAutoencoder) -> Result<Vec<Exported>> {
    let c = &model.config;
    let (dd, l) = (c.decoder_dim, c.num_patches());
    let mut out = encoder_on_device(model);
    push_linear("decoder_embed", &model.decoder_embed, &mut out);
    out.push(OnDevice {
        name: "mask_token".into(),
        shape: vec![1, 1, dd],
        values: flat(model.mask_token.val()),
    });
    out.push(OnDevice {
        name: "decoder_pos_embed".into(),
        shape: vec![1, 1 + l, dd],
        values: flat(model.decoder_pos_embed.clone()),
    });
    for (i, b) in model.decoder_blocks.iter().enumerate() {
        push_block(&format!("decoder_blocks.{i}"), b, &mut out);
    }
    push_norm("decoder_norm", &model.decoder_norm, &mut out);
    push_linear("decoder_pred", &model.decoder_pred, &mut out);
    read_all(out).await
}

/// [`model_tensors_async`], blocking.
#[cfg(not(target_family = "wasm"))]
pub fn model_tensors(model: &MaskedAutoencoder) -> Result<Vec<Exported>> {
    pollster::block_on(model_tensors_async(model))
}

fn push_block(name: &str, b: &Block, out: &mut Vec<OnDevice>) {
    push_norm(&format!("{name}.norm1"), &b.norm1, out);
    push_linear(&format!("{name}.attn.qkv"), &b.attn.qkv, out);
    push_linear(&format!("{name}.attn.proj"), &b.attn.proj, out);
    push_norm(&format!("{name}.norm2"), &b.norm2, out);
    push_linear(&format!("{name}.mlp.fc1"), &b.mlp.fc1, out);
    push_linear(&format!("{name}.mlp.fc2"), &b.mlp.fc2, out);
}

/// A linear as PyTorch stores it: weight `[out, in]`, bias `[out]`.
fn push_linear(name: &str, lin: &Linear, out: &mut Vec<OnDevice>) {
    let [d_in, d_out] = lin.weight.val().dims();
    out.push(OnDevice {
        name: format!("{name}.weight"),
        shape: vec![d_out, d_in],
        values: flat(lin.weight.val().transpose()),
    });
    out.push(OnDevice {
        name: format!("{name}.bias"),
        shape: vec![d_out],
        values: flat(bias(lin)),
    });
}

fn push_norm(name: &str, n: &LayerNorm, out: &mut Vec<OnDevice>) {
    let [d] = n.gamma.val().dims();
    let beta = n
        .beta
        .as_ref()
        .map(|b| b.val())
        .expect("LayerNorm has a bias");
    out.push(OnDevice {
        name: format!("{name}.weight"),
        shape: vec![d],
        values: flat(n.gamma.val()),
    });
    out.push(OnDevice {
        name: format!("{name}.bias"),
        shape: vec![d],
        values: flat(beta),
    });
}

fn bias(lin: &Linear) -> Tensor<1> {
    lin.bias
        .as_ref()
        .map(|b| b.val())
        .expect("sapling's linears have biases")
}

/// Writes the encoder of `model` to `path` (atomically), with the preset in the metadata;
/// returns how many tensors it holds.
#[cfg(not(target_family = "wasm"))]
pub fn write_encoder(model: &MaskedAutoencoder, preset: &str, path: &Path) -> Result<usize> {
    write_encoder_as(model, preset, path, Precision::F32)
}

/// [`write_encoder`] with every tensor stored as `dtype` (f16: half the file, values rounded
/// to nearest as `tensor.half()` does).
#[cfg(not(target_family = "wasm"))]
pub fn write_encoder_as(
    model: &MaskedAutoencoder,
    preset: &str,
    path: &Path,
    dtype: Precision,
) -> Result<usize> {
    let what = Export {
        layout: Layout::Timm,
        with_decoder: false,
        dtype,
    };
    write_weights(model, preset, path, what)
}

/// What [`write_weights`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Export {
    /// Names and layout (timm's, Hugging Face's, mmpretrain's).
    pub layout: Layout,
    /// The whole MAE, or the encoder alone.
    pub with_decoder: bool,
    /// Element type of every tensor.
    pub dtype: Precision,
}

/// Writes `model`'s weights to `path` (atomically) as `what` says, with the layout and the
/// preset in the metadata; returns how many tensors the file holds.
#[cfg(not(target_family = "wasm"))]
pub fn write_weights(
    model: &MaskedAutoencoder,
    preset: &str,
    path: &Path,
    what: Export,
) -> Result<usize> {
    let (file, n) = pollster::block_on(weights_file(model, preset, what))?;
    atomic::write(path, &file)?;
    Ok(n)
}

/// Canonical (timm) tensors renamed into `layout`; Hugging Face's q, k and v split apart.
pub fn in_layout(tensors: Vec<Exported>, layout: Layout, with_decoder: bool) -> Vec<Exported> {
    let tensors = match layout {
        Layout::HuggingFace => split_qkv(tensors),
        Layout::Timm | Layout::Mmpretrain => tensors,
    };
    let placement = layout.placement(with_decoder);
    tensors
        .into_iter()
        .map(|mut t| {
            t.name = placement
                .external(&t.name)
                .expect("every canonical name has a place in every layout");
            t
        })
        .collect()
}

/// Writes f32 tensors as one safetensors file (atomically), with `format = pt` and `metadata`.
pub fn write_f32_tensors(
    tensors: Vec<Exported>,
    metadata: &[(&str, &str)],
    path: &Path,
) -> Result<()> {
    write_safetensors(&raw(tensors, Precision::F32), metadata, path)
}

/// Tensors as little-endian bytes of `dtype`.
fn raw(tensors: Vec<Exported>, dtype: Precision) -> Vec<RawTensor> {
    let half = |v: &f32| burn::tensor::f16::from_f32(*v).to_le_bytes();
    tensors
        .into_iter()
        .map(|t| {
            let (dtype, bytes) = match dtype {
                Precision::F32 => {
                    let bytes = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
                    (safetensors::Dtype::F32, bytes)
                }
                Precision::F16 => (
                    safetensors::Dtype::F16,
                    t.values.iter().flat_map(half).collect(),
                ),
            };
            RawTensor {
                name: t.name,
                dtype,
                shape: t.shape,
                bytes,
            }
        })
        .collect()
}

/// A tensor already in little-endian bytes.
pub struct RawTensor {
    pub name: String,
    pub dtype: safetensors::Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// Writes tensors of any dtype as one safetensors file (atomically).
pub fn write_safetensors(
    tensors: &[RawTensor],
    metadata: &[(&str, &str)],
    path: &Path,
) -> Result<()> {
    let file =
        safetensors_bytes(tensors, metadata).map_err(|message| SaplingError::Checkpoint {
            path: path.to_path_buf(),
            message,
        })?;
    atomic::write(path, &file)
}

/// Tensors of any dtype as the bytes of one safetensors file, with `format = pt`.
pub fn safetensors_bytes(
    tensors: &[RawTensor],
    metadata: &[(&str, &str)],
) -> std::result::Result<Vec<u8>, String> {
    let views = tensors.iter().map(|t| {
        let view = safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
            .expect("shape matches data");
        (t.name.clone(), view)
    });
    let mut meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    meta.extend(metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    safetensors::tensor::serialize(views, Some(meta)).map_err(|e| format!("cannot serialise: {e}"))
}
