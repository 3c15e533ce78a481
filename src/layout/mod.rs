//! The layouts released ViT/MAE weights come in, and sapling's canonical one between them.
//!
//! Canonical names are timm's ViT names with MAE's decoder names (`cls_token`, `pos_embed`,
//! `patch_embed.proj.*`, `blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.*`,
//! `norm.*`, `decoder_embed.*`, `mask_token`, `decoder_pos_embed`, `decoder_blocks.i.*`,
//! `decoder_norm.*`, `decoder_pred.*`), with PyTorch's shapes (linear weights `[out, in]`, the
//! patch embedding a `[D, C, p, p]` convolution): what `export` writes and what
//! facebookresearch/mae's `.pth` files hold. Every other layout is a renaming of it (and, for
//! Hugging Face, q, k and v apart instead of one fused qkv), written once as a table of
//! [`rules`] that reads both ways: files in (`import`) and files out (`export`).

mod rules;

pub use rules::Rule;

use crate::config::ModelConfig;

/// One tensor in PyTorch's layout: name, shape, row-major values.
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// A family of names for the same ViT/MAE weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// timm's ViT with MAE's decoder: facebookresearch/mae's `.pth` files, timm's safetensors
    /// and what `sapling export` writes by default.
    Timm,
    /// mmpretrain's (Sapiens): `patch_embed.projection`, `layers.i.{ln1, attn, ln2, ffn}`, the
    /// final norm `ln1`; in full checkpoints the encoder under `backbone.`, the decoder under
    /// `neck.`.
    Mmpretrain,
    /// Hugging Face transformers' `ViTMAEForPreTraining`: the encoder under `vit.`, the decoder
    /// under `decoder.`, q, k and v as three linears.
    #[value(name = "hf")]
    HuggingFace,
}

/// Which half of the model a name belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    Encoder,
    Decoder,
}

impl Layout {
    /// Every layout, in the order [`Layout::detect`] tries them.
    pub const ALL: [Layout; 3] = [Layout::HuggingFace, Layout::Mmpretrain, Layout::Timm];

    /// The name people know it by.
    pub fn describe(self) -> &'static str {
        match self {
            Layout::Timm => "timm / MAE",
            Layout::Mmpretrain => "mmpretrain / Sapiens",
            Layout::HuggingFace => "Hugging Face ViTMAE",
        }
    }

    /// The patch embedding's weight, relative to the encoder: the one name every file of the
    /// layout has, so it also tells where the encoder sits in the file.
    fn anchor(self) -> &'static str {
        match self {
            Layout::Timm => "patch_embed.proj.weight",
            Layout::Mmpretrain => "patch_embed.projection.weight",
            Layout::HuggingFace => "embeddings.patch_embeddings.projection.weight",
        }
    }

    /// What a full checkpoint of the layout puts in front of the encoder's names (absent from
    /// encoder-only files: Sapiens' `_clean.pth`, Hugging Face's `ViTMAEModel`).
    fn encoder_wrapper(self) -> &'static str {
        match self {
            Layout::Timm => "",
            Layout::Mmpretrain => "backbone.",
            Layout::HuggingFace => "vit.",
        }
    }

    /// The layout of a file with these tensor names, and where its encoder and its model sit
    /// (the prefixes in front of the encoder's names and of the whole model's, e.g.
    /// `state_dict.backbone.` and `state_dict.`).
    pub fn detect<'a>(names: impl IntoIterator<Item = &'a str> + Clone) -> Option<Placement> {
        Self::ALL.into_iter().find_map(|layout| {
            let anchor = layout.anchor();
            let encoder = names.clone().into_iter().find_map(|name| {
                let prefix = name.strip_suffix(anchor)?;
                (prefix.is_empty() || prefix.ends_with('.')).then(|| prefix.to_string())
            })?;
            let root = encoder
                .strip_suffix(layout.encoder_wrapper())
                .unwrap_or(&encoder)
                .to_string();
            Some(Placement {
                layout,
                encoder,
                root,
            })
        })
    }

    /// Where this layout's names go in a file written with or without the decoder.
    pub fn placement(self, with_decoder: bool) -> Placement {
        let encoder = if with_decoder {
            self.encoder_wrapper()
        } else {
            ""
        };
        Placement {
            layout: self,
            encoder: encoder.to_string(),
            root: String::new(),
        }
    }
}

/// A layout and where its names sit in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub layout: Layout,
    /// In front of every encoder name.
    pub encoder: String,
    /// In front of every decoder name (the model's root in the file).
    pub root: String,
}

impl Placement {
    /// The canonical name of a file's tensor, and its part; `None` for a name this layout does
    /// not know (a classifier head, optimizer state, a buffer).
    pub fn canonical(&self, name: &str) -> Option<(String, Part)> {
        let rules = rules::rules(self.layout);
        let within = |prefix: &str, part| {
            let rest = name.strip_prefix(prefix)?;
            rules
                .iter()
                .filter(|r| r.part == part)
                .find_map(|r| r.to_canonical(rest))
                .map(|c| (c, part))
        };
        within(&self.encoder, Part::Encoder).or_else(|| within(&self.root, Part::Decoder))
    }

    /// The file's name of a canonical tensor; `None` if the layout has no such name.
    pub fn external(&self, canonical: &str) -> Option<String> {
        rules::rules(self.layout).iter().find_map(|r| {
            let rest = r.to_external(canonical)?;
            let prefix = match r.part {
                Part::Encoder => &self.encoder,
                Part::Decoder => &self.root,
            };
            Some(format!("{prefix}{rest}"))
        })
    }
}

/// The canonical names and shapes of a model of `c`: encoder, then decoder, in module order.
pub fn canonical_shapes(c: &ModelConfig) -> Vec<(String, Vec<usize>, Part)> {
    let (d, dd, p, ch, l) = (
        c.dim,
        c.decoder_dim,
        c.patch_size,
        c.in_chans,
        c.num_patches(),
    );
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, part| out.push((name, shape, part));
    let linear = |name: &str, d_in: usize, d_out: usize| {
        [
            (format!("{name}.weight"), vec![d_out, d_in]),
            (format!("{name}.bias"), vec![d_out]),
        ]
    };
    let norm = |name: &str, dim: usize| {
        [
            (format!("{name}.weight"), vec![dim]),
            (format!("{name}.bias"), vec![dim]),
        ]
    };
    let block = |name: &str, dim: usize| {
        let h = dim * c.mlp_ratio;
        [
            norm(&format!("{name}.norm1"), dim),
            linear(&format!("{name}.attn.qkv"), dim, 3 * dim),
            linear(&format!("{name}.attn.proj"), dim, dim),
            norm(&format!("{name}.norm2"), dim),
            linear(&format!("{name}.mlp.fc1"), dim, h),
            linear(&format!("{name}.mlp.fc2"), h, dim),
        ]
        .concat()
    };
    use Part::{Decoder, Encoder};
    push("cls_token".into(), vec![1, 1, d], Encoder);
    push("pos_embed".into(), vec![1, 1 + l, d], Encoder);
    push("patch_embed.proj.weight".into(), vec![d, ch, p, p], Encoder);
    push("patch_embed.proj.bias".into(), vec![d], Encoder);
    for i in 0..c.depth {
        for (n, s) in block(&format!("blocks.{i}"), d) {
            push(n, s, Encoder);
        }
    }
    for (n, s) in norm("norm", d) {
        push(n, s, Encoder);
    }
    for (n, s) in linear("decoder_embed", d, dd) {
        push(n, s, Decoder);
    }
    push("mask_token".into(), vec![1, 1, dd], Decoder);
    push("decoder_pos_embed".into(), vec![1, 1 + l, dd], Decoder);
    for i in 0..c.decoder_depth {
        for (n, s) in block(&format!("decoder_blocks.{i}"), dd) {
            push(n, s, Decoder);
        }
    }
    for (n, s) in norm("decoder_norm", dd) {
        push(n, s, Decoder);
    }
    for (n, s) in linear("decoder_pred", dd, c.patch_dim()) {
        push(n, s, Decoder);
    }
    out
}

/// Hugging Face keeps q, k and v apart: the fused `attn.qkv` tensors become `attn.q`, `attn.k`
/// and `attn.v` (rows `[0, D)`, `[D, 2D)`, `[2D, 3D)`, as timm's qkv reshape reads them).
pub fn split_qkv(tensors: Vec<Named>) -> Vec<Named> {
    let mut out = Vec::with_capacity(tensors.len() + 16);
    for t in tensors {
        let Some((block, leaf)) = t.name.split_once(".attn.qkv.") else {
            out.push(t);
            continue;
        };
        let rows = t.shape[0] / 3;
        let per = t.values.len() / 3;
        for (k, part) in ["q", "k", "v"].into_iter().enumerate() {
            let mut shape = t.shape.clone();
            shape[0] = rows;
            out.push(Named {
                name: format!("{block}.attn.{part}.{leaf}"),
                shape,
                values: t.values[k * per..(k + 1) * per].to_vec(),
            });
        }
    }
    out
}
