//! The renaming tables: each rule maps a canonical name prefix to a layout's, both possibly
//! holding a block index `{i}`, and reads in either direction.

use super::{Layout, Part};

/// A canonical prefix and a layout's prefix for the same tensors; whatever follows the prefix
/// (`weight`, `bias`) is kept as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub canonical: String,
    pub external: String,
    pub part: Part,
}

impl Rule {
    /// The canonical name of `name` (relative to its part's prefix), if this rule covers it.
    pub fn to_canonical(&self, name: &str) -> Option<String> {
        rewrite(&self.external, &self.canonical, name)
    }

    /// A canonical name in this layout (relative to its part's prefix), if this rule covers it.
    pub fn to_external(&self, name: &str) -> Option<String> {
        rewrite(&self.canonical, &self.external, name)
    }
}

/// `name` matched against the pattern `from` and rewritten by `to`: the block index and the
/// rest after the prefix carried over. A pattern without a trailing dot names one tensor and
/// matches it only exactly.
fn rewrite(from: &str, to: &str, name: &str) -> Option<String> {
    let (index, rest) = match from.split_once("{i}") {
        None => (None, name.strip_prefix(from)?),
        Some((before, after)) => {
            let tail = name.strip_prefix(before)?;
            let digits = tail.len() - tail.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let index: usize = tail[..digits].parse().ok()?;
            (Some(index), tail[digits..].strip_prefix(after)?)
        }
    };
    if !from.ends_with('.') && !rest.is_empty() {
        return None;
    }
    let to = match index {
        Some(i) => to.replace("{i}", &i.to_string()),
        None => to.to_string(),
    };
    Some(format!("{to}{rest}"))
}

/// Inside a block: canonical (timm) names and the layout's.
fn block_inner(layout: Layout) -> &'static [(&'static str, &'static str)] {
    match layout {
        Layout::Timm => &[("", "")],
        Layout::Mmpretrain => &[
            ("norm1.", "ln1."),
            ("attn.qkv.", "attn.qkv."),
            ("attn.proj.", "attn.proj."),
            ("norm2.", "ln2."),
            ("mlp.fc1.", "ffn.layers.0.0."),
            ("mlp.fc2.", "ffn.layers.1."),
        ],
        Layout::HuggingFace => &[
            ("norm1.", "layernorm_before."),
            ("attn.q.", "attention.attention.query."),
            ("attn.k.", "attention.attention.key."),
            ("attn.v.", "attention.attention.value."),
            ("attn.proj.", "attention.output.dense."),
            ("norm2.", "layernorm_after."),
            ("mlp.fc1.", "intermediate.dense."),
            ("mlp.fc2.", "output.dense."),
            // transformers 5 renamed the modules (its `from_pretrained` still maps the Hub's
            // names above, which export writes); its own `state_dict()` is read too.
            ("attn.q.", "attention.q_proj."),
            ("attn.k.", "attention.k_proj."),
            ("attn.v.", "attention.v_proj."),
            ("attn.proj.", "attention.o_proj."),
            ("mlp.fc1.", "mlp.fc1."),
            ("mlp.fc2.", "mlp.fc2."),
        ],
    }
}

/// Outside the blocks: canonical names and the layout's, with their part.
fn outer(layout: Layout) -> &'static [(&'static str, &'static str, Part)] {
    use Part::{Decoder as D, Encoder as E};
    match layout {
        Layout::Timm => &[
            ("cls_token", "cls_token", E),
            ("pos_embed", "pos_embed", E),
            ("patch_embed.proj.", "patch_embed.proj.", E),
            ("blocks.{i}.", "blocks.{i}.", E),
            ("norm.", "norm.", E),
            ("decoder_embed.", "decoder_embed.", D),
            ("mask_token", "mask_token", D),
            ("decoder_pos_embed", "decoder_pos_embed", D),
            ("decoder_blocks.{i}.", "decoder_blocks.{i}.", D),
            ("decoder_norm.", "decoder_norm.", D),
            ("decoder_pred.", "decoder_pred.", D),
        ],
        Layout::Mmpretrain => &[
            ("cls_token", "cls_token", E),
            ("pos_embed", "pos_embed", E),
            ("patch_embed.proj.", "patch_embed.projection.", E),
            ("blocks.{i}.", "layers.{i}.", E),
            ("norm.", "ln1.", E),
            ("decoder_embed.", "neck.decoder_embed.", D),
            ("mask_token", "neck.mask_token", D),
            ("decoder_pos_embed", "neck.decoder_pos_embed", D),
            ("decoder_blocks.{i}.", "neck.decoder_blocks.{i}.", D),
            ("decoder_norm.", "neck.ln1.", D),
            ("decoder_pred.", "neck.decoder_pred.", D),
        ],
        Layout::HuggingFace => &[
            ("cls_token", "embeddings.cls_token", E),
            ("pos_embed", "embeddings.position_embeddings", E),
            (
                "patch_embed.proj.",
                "embeddings.patch_embeddings.projection.",
                E,
            ),
            ("blocks.{i}.", "encoder.layer.{i}.", E),
            ("blocks.{i}.", "layers.{i}.", E),
            ("norm.", "layernorm.", E),
            ("decoder_embed.", "decoder.decoder_embed.", D),
            ("mask_token", "decoder.mask_token", D),
            ("decoder_pos_embed", "decoder.decoder_pos_embed", D),
            ("decoder_blocks.{i}.", "decoder.decoder_layers.{i}.", D),
            ("decoder_norm.", "decoder.decoder_norm.", D),
            ("decoder_pred.", "decoder.decoder_pred.", D),
        ],
    }
}

/// Every rule of `layout`, a block's inner names joined to its prefix.
pub(super) fn rules(layout: Layout) -> Vec<Rule> {
    let mut out = Vec::new();
    for &(canonical, external, part) in outer(layout) {
        let inner: &[(&str, &str)] = if canonical.contains("{i}") {
            block_inner(layout)
        } else {
            &[("", "")]
        };
        for (c, e) in inner {
            out.push(Rule {
                canonical: format!("{canonical}{c}"),
                external: format!("{external}{e}"),
                part,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_both_ways() {
        let cases = [
            (
                Layout::Mmpretrain,
                "blocks.3.mlp.fc1.weight",
                "layers.3.ffn.layers.0.0.weight",
            ),
            (Layout::Mmpretrain, "norm.bias", "ln1.bias"),
            (Layout::Mmpretrain, "decoder_norm.weight", "neck.ln1.weight"),
            (
                Layout::HuggingFace,
                "decoder_blocks.0.attn.k.bias",
                "decoder.decoder_layers.0.attention.attention.key.bias",
            ),
            (
                Layout::HuggingFace,
                "blocks.11.mlp.fc2.weight",
                "encoder.layer.11.output.dense.weight",
            ),
            (
                Layout::Timm,
                "blocks.2.attn.qkv.weight",
                "blocks.2.attn.qkv.weight",
            ),
        ];
        for (layout, canonical, external) in cases {
            let rules = rules(layout);
            let there = rules.iter().find_map(|r| r.to_external(canonical));
            assert_eq!(there.as_deref(), Some(external), "{layout:?} {canonical}");
            let back = rules.iter().find_map(|r| r.to_canonical(external));
            assert_eq!(back.as_deref(), Some(canonical), "{layout:?} {external}");
        }
        // transformers 5's own module names read as the Hub's.
        let hf = rules(Layout::HuggingFace);
        for (v5, canonical) in [
            ("layers.2.attention.q_proj.bias", "blocks.2.attn.q.bias"),
            (
                "layers.2.attention.o_proj.weight",
                "blocks.2.attn.proj.weight",
            ),
            ("layers.0.mlp.fc2.weight", "blocks.0.mlp.fc2.weight"),
            (
                "decoder.decoder_layers.1.mlp.fc1.bias",
                "decoder_blocks.1.mlp.fc1.bias",
            ),
        ] {
            let back = hf.iter().find_map(|r| r.to_canonical(v5));
            assert_eq!(back.as_deref(), Some(canonical), "{v5}");
        }
        // Exact names match only exactly; other names match nothing.
        let timm = rules(Layout::Timm);
        assert!(timm.iter().all(|r| r.to_canonical("cls_token_x").is_none()));
        assert!(timm.iter().all(|r| r.to_canonical("head.weight").is_none()));
        assert!(
            timm.iter()
                .all(|r| r.to_canonical("blocks.x.norm1.weight").is_none())
        );
    }
}
