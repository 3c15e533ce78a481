//! What a weights file's shapes say about its model, checked against the run's model before a
//! value is read: one message listing every mismatch, naming the preset the file is.

use super::Imported;
use crate::config::{ModelConfig, PosEmbed, Preset};
use crate::error::{Result, SaplingError};
use crate::layout::{Part, canonical_shapes};
use crate::model::pos_embed::sincos_2d_in;

/// The model a file's tensors describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileShape {
    pub dim: usize,
    pub depth: usize,
    pub patch_size: usize,
    pub mlp_hidden: usize,
    /// `(width, blocks)` of the decoder, if the file has one.
    pub decoder: Option<(usize, usize)>,
    /// Patches per side of its position table.
    pub grid: Option<usize>,
}

impl FileShape {
    /// Read off the file's canonical shapes.
    pub fn of(imported: &Imported) -> Result<FileShape> {
        let patch = imported.shape("patch_embed.proj.weight").unwrap_or(&[]);
        let [dim, _, patch_size, _] = patch[..] else {
            return Err(SaplingError::import(
                &imported.path,
                format!("the patch embedding has shape {patch:?}, not [D, C, p, p]"),
            ));
        };
        let blocks = |prefix: &str| {
            imported
                .entries
                .keys()
                .filter_map(|n| {
                    n.strip_prefix(prefix)?
                        .split('.')
                        .next()?
                        .parse::<usize>()
                        .ok()
                })
                .max()
                .map_or(0, |i| i.saturating_add(1))
        };
        let first = |name: &str| imported.shape(name).and_then(|s| s.first().copied());
        let decoder = first("decoder_embed.weight").map(|w| (w, blocks("decoder_blocks.")));
        let grid = imported
            .shape("pos_embed")
            .and_then(|s| s.len().checked_sub(2).map(|rows| s[rows]))
            .map(|n| ((n.saturating_sub(1)) as f64).sqrt().round() as usize);
        Ok(FileShape {
            dim,
            depth: blocks("blocks."),
            patch_size,
            mlp_hidden: first("blocks.0.mlp.fc1.weight").unwrap_or(0),
            decoder,
            grid,
        })
    }

    /// The presets of this shape (the heads cannot be read from weights; presets fix them),
    /// those of the file's resolution first (`vit-l` and `sapiens-0.3b` differ only there).
    pub fn presets(&self) -> Vec<Preset> {
        let mut found: Vec<Preset> = Preset::ALL
            .into_iter()
            .filter(|p| {
                let m = p.config().model;
                (m.dim, m.depth, m.patch_size, m.dim * m.mlp_ratio)
                    == (self.dim, self.depth, self.patch_size, self.mlp_hidden)
                    && self
                        .decoder
                        .is_none_or(|d| d == (m.decoder_dim, m.decoder_depth))
            })
            .collect();
        found.sort_by_key(|p| self.grid != Some(p.config().model.grid()));
        found
    }

    pub fn describe(&self) -> String {
        let decoder = match self.decoder {
            Some((w, d)) => format!("decoder dim {w}, depth {d}"),
            None => "no decoder".into(),
        };
        format!(
            "dim {}, depth {}, MLP {}, patch {}, {decoder}",
            self.dim, self.depth, self.mlp_hidden, self.patch_size
        )
    }
}

fn describe_config(c: &ModelConfig) -> String {
    format!(
        "dim {}, depth {}, MLP {}, patch {}, decoder dim {}, depth {}",
        c.dim,
        c.depth,
        c.dim * c.mlp_ratio,
        c.patch_size,
        c.decoder_dim,
        c.decoder_depth
    )
}

/// The position tables are fixed (not loaded): checked apart.
pub(super) fn is_position_table(name: &str) -> bool {
    name == "pos_embed" || name == "decoder_pos_embed"
}

/// Every mismatch between the file and a model of `c`, as one error; `Ok(true)` when the file
/// has the whole decoder, `Ok(false)` when it has none.
pub(super) fn shapes(imported: &Imported, c: &ModelConfig, preset: &str) -> Result<bool> {
    let expected = canonical_shapes(c);
    let mut problems = Vec::new();
    let mut decoder_missing = Vec::new();
    for (name, shape, part) in &expected {
        if is_position_table(name) {
            continue;
        }
        match imported.shape(name) {
            Some(s) if s == shape.as_slice() => {}
            Some(s) => problems.push(format!("`{name}` is {s:?} in the file, {shape:?} here")),
            None if *part == Part::Decoder => decoder_missing.push(name.clone()),
            None => problems.push(format!("`{name}` is missing")),
        }
    }
    let known = |n: &String| expected.iter().any(|(e, _, _)| e == n);
    for name in imported.entries.keys().filter(|n| !known(n)) {
        problems.push(format!("`{name}` has no place in this model"));
    }
    let has_decoder = imported.has_decoder();
    if has_decoder && !decoder_missing.is_empty() {
        problems.push(format!(
            "the decoder lacks {} of its tensors, e.g. `{}`",
            decoder_missing.len(),
            decoder_missing[0]
        ));
    }
    if problems.is_empty() {
        return Ok(has_decoder);
    }
    let file = FileShape::of(imported)?;
    let matching = file.presets();
    let which = match matching.as_slice() {
        [] => "no preset".to_string(),
        presets => {
            let names: Vec<_> = presets.iter().map(|p| p.name()).collect();
            format!("preset {}", names.join(" / "))
        }
    };
    let shown = problems.len().min(6);
    let more = match problems.len() - shown {
        0 => String::new(),
        n => format!("; and {n} more"),
    };
    let listed = format!("{}{more}", problems[..shown].join("; "));
    let same_shape = (file.dim, file.depth, file.mlp_hidden, file.patch_size)
        == (c.dim, c.depth, c.dim * c.mlp_ratio, c.patch_size)
        && file
            .decoder
            .is_none_or(|d| d == (c.decoder_dim, c.decoder_depth));
    let message = if same_shape {
        format!(
            "its shapes are this model's ({}), but not its tensors: {listed}. sapling reads \
             plain ViT/MAE weights (no layer scale, no classifier-only norms)",
            file.describe()
        )
    } else {
        format!(
            "its model does not fit the one chosen: the file has {} (= {which}); you chose \
             {preset}: {}. {listed}. Choose the preset (or a [model] config) with the file's \
             shapes",
            file.describe(),
            describe_config(c),
        )
    };
    Err(SaplingError::import(&imported.path, message))
}

/// The most values a position table may hold (Sapiens-2B's at 1024 px holds 7.9 M).
const MAX_TABLE: usize = 1 << 26;

/// Which sin-cos layout the file's position tables are in; an error when they are neither
/// (a learned table cannot be kept fixed as sapling's are).
pub(super) fn pos_layout(imported: &Imported) -> Result<Option<PosEmbed>> {
    let mut found = None;
    for name in ["pos_embed", "decoder_pos_embed"] {
        let Some(shape) = imported.shape(name) else {
            continue;
        };
        let (n, dim) = match shape {
            [1, n, d] | [n, d] => (*n, *d),
            _ => {
                return Err(SaplingError::import(
                    &imported.path,
                    format!("`{name}` has shape {shape:?}, not [1, 1 + L, D]"),
                ));
            }
        };
        let grid = ((n.saturating_sub(1)) as f64).sqrt().round() as usize;
        // Checked before a value is read: a table is as wide as the tokens it is added to,
        // and no larger than a model sapling builds (its values would be read whole).
        let width = match name {
            "pos_embed" => imported
                .shape("patch_embed.proj.weight")
                .and_then(|s| s.first()),
            _ => imported
                .shape("decoder_embed.weight")
                .and_then(|s| s.first()),
        };
        if width.is_some_and(|&w| w != dim) || n.saturating_mul(dim) > MAX_TABLE {
            return Err(SaplingError::import(
                &imported.path,
                format!(
                    "`{name}` is {n} x {dim}: not as wide as the tokens it is added to ({}), or \
                     larger than any position table sapling builds ({MAX_TABLE} values)",
                    width.map_or("none".into(), |w| w.to_string())
                ),
            ));
        }
        let square = grid * grid + 1 == n;
        if !square || dim == 0 || !dim.is_multiple_of(4) {
            return Err(SaplingError::import(
                &imported.path,
                format!(
                    "`{name}` has {n} rows of width {dim}: not a cls row and a square grid of \
                     sin-cos positions"
                ),
            ));
        }
        let table = imported.values(name)?;
        let distance = |layout| {
            let want = sincos_2d_in(layout, dim, grid, true);
            want.iter()
                .zip(&table)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max)
        };
        let (mae, mmpretrain) = (distance(PosEmbed::Mae), distance(PosEmbed::Mmpretrain));
        // The two layouts differ by O(1); a bf16 file's table is within 2^-8 of values below
        // one, and float32 sin-cos as PyTorch computes it within 1e-5.
        let tolerance = 1e-2;
        let layout = if mae < tolerance {
            PosEmbed::Mae
        } else if mmpretrain < tolerance {
            PosEmbed::Mmpretrain
        } else {
            return Err(SaplingError::import(
                &imported.path,
                format!(
                    "`{name}` is not a fixed 2-D sin-cos table (largest difference {mae:.3} from \
                     MAE's layout, {mmpretrain:.3} from mmpretrain's): it was learned or built \
                     otherwise, and sapling keeps its position tables fixed, as MAE and Sapiens \
                     pretraining do"
                ),
            ));
        };
        if found.is_some_and(|f| f != layout) {
            return Err(SaplingError::import(
                &imported.path,
                "its encoder and decoder position tables are in different layouts",
            ));
        }
        found = Some(layout);
    }
    Ok(found)
}
