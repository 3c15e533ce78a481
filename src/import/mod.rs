//! Released weights in: facebookresearch/mae and timm (`.pth`, safetensors), Sapiens'
//! mmpretrain checkpoints (`_clean.pth` encoders and full `state_dict` files with the decoder
//! under `neck.`), Hugging Face's ViTMAE, and what `sapling export` writes.
//!
//! [`read`] opens a file, detects its layout from its names ([`Layout::detect`]) and maps every
//! tensor it knows to sapling's canonical name, reading no values yet; [`Imported::load`]
//! checks the shapes against the model (one message listing every mismatch, and the preset
//! the file's shapes are), the fixed position tables against sapling's two sin-cos layouts,
//! then puts the values into the model. A file without a decoder leaves MAE's initialisation
//! in the decoder, and says so.

mod check;
mod files;
mod load;
#[cfg(not(target_family = "wasm"))]
mod pth;
mod report;
mod safetensors_file;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use check::FileShape;
pub use report::Report;

use crate::config::{Config, PosEmbed, Preset};
use crate::error::{Result, SaplingError};
use crate::layout::{Layout, Part, Placement};
use files::FileTensor;

/// A weights file, its tensors mapped to sapling's names.
pub struct Imported {
    pub path: PathBuf,
    pub placement: Placement,
    files: Vec<FileTensor>,
    /// Canonical name → the file's tensors that make it.
    entries: BTreeMap<String, Entry>,
    /// The file's names sapling does not use (a classifier head, optimizer state, buffers).
    pub ignored: Vec<String>,
}

/// A canonical tensor: its shape and the file tensors joined along the first axis to make it
/// (three for Hugging Face's q, k and v; one otherwise).
struct Entry {
    shape: Vec<usize>,
    parts: Vec<usize>,
    part: Part,
}

/// Opens `path` and maps its tensors; reads no values yet.
#[cfg(not(target_family = "wasm"))]
pub fn read(path: &Path) -> Result<Imported> {
    imported(path, files::open(path)?)
}

/// A safetensors file's bytes, already in memory (a file dropped on the browser page), named
/// `name` in messages; mapped as [`read`] maps a file.
pub fn read_safetensors_bytes(name: &str, bytes: Vec<u8>) -> Result<Imported> {
    let path = Path::new(name);
    imported(path, safetensors_file::from_bytes(path, bytes)?)
}

fn imported(path: &Path, files: Vec<files::FileTensor>) -> Result<Imported> {
    if files.is_empty() {
        return Err(SaplingError::import(
            path,
            "holds no tensors: sapling reads state dicts (a dictionary of tensors, possibly under \
             `model` or `state_dict`), not other pickled objects",
        ));
    }
    let names = files
        .iter()
        .filter(|t| t.is_float())
        .map(|t| t.name.as_str());
    let placement = Layout::detect(names).ok_or_else(|| {
        let some: Vec<_> = files.iter().take(4).map(|t| t.name.as_str()).collect();
        SaplingError::import(
            path,
            format!(
                "no ViT patch embedding found, so this is not a ViT/MAE checkpoint sapling knows \
                 (looked for `patch_embed.proj.weight` (timm, MAE), \
                 `patch_embed.projection.weight` (mmpretrain, Sapiens) and \
                 `embeddings.patch_embeddings.projection.weight` (Hugging Face)); it holds {}, …",
                some.join(", ")
            ),
        )
    })?;
    let mut imported = Imported {
        path: path.to_path_buf(),
        placement,
        files,
        entries: BTreeMap::new(),
        ignored: Vec::new(),
    };
    imported.map_names()?;
    Ok(imported)
}

impl Imported {
    /// Every float tensor the layout names gets its canonical entry; q, k and v are gathered
    /// into one qkv entry.
    fn map_names(&mut self) -> Result<()> {
        let mut qkv: BTreeMap<(String, Part), [Option<usize>; 3]> = BTreeMap::new();
        for (index, t) in self.files.iter().enumerate() {
            let mapped = t
                .is_float()
                .then(|| self.placement.canonical(&t.name))
                .flatten();
            let Some((name, part)) = mapped else {
                self.ignored.push(t.name.clone());
                continue;
            };
            let split = ["q", "k", "v"].into_iter().enumerate().find_map(|(k, p)| {
                let (block, leaf) = name.split_once(&format!(".attn.{p}."))?;
                Some((k, format!("{block}.attn.qkv.{leaf}")))
            });
            if let Some((k, joined)) = split {
                let slot = &mut qkv.entry((joined, part)).or_default()[k];
                if slot.replace(index).is_some() {
                    return Err(self.twice(&name));
                }
                continue;
            }
            let entry = Entry {
                shape: t.shape.clone(),
                parts: vec![index],
                part,
            };
            if self.entries.insert(name.clone(), entry).is_some() {
                return Err(self.twice(&name));
            }
        }
        self.join_qkv(qkv)
    }

    /// Hugging Face's query, key and value of each block become one qkv entry (rows q, k, v).
    fn join_qkv(&mut self, groups: BTreeMap<(String, Part), [Option<usize>; 3]>) -> Result<()> {
        for ((name, part), slots) in groups {
            let [Some(q), Some(k), Some(v)] = slots else {
                return Err(SaplingError::import(
                    &self.path,
                    format!("`{name}` lacks one of query, key and value"),
                ));
            };
            let shapes = [q, k, v].map(|i| self.files[i].shape.clone());
            if shapes[0].is_empty() {
                let message = format!("`{name}`: query, key and value are scalars, not weights");
                return Err(SaplingError::import(&self.path, message));
            }
            if shapes[0] != shapes[1] || shapes[0] != shapes[2] {
                return Err(SaplingError::import(
                    &self.path,
                    format!("`{name}`: query, key and value differ in shape ({shapes:?})"),
                ));
            }
            let mut shape = shapes[0].clone();
            shape[0] *= 3;
            let entry = Entry {
                shape,
                parts: vec![q, k, v],
                part,
            };
            if self.entries.insert(name.clone(), entry).is_some() {
                return Err(self.twice(&name));
            }
        }
        Ok(())
    }

    /// Two of the file's tensors (two namings of one, or a fused qkv beside its parts) would
    /// become the same one.
    fn twice(&self, name: &str) -> SaplingError {
        SaplingError::import(
            &self.path,
            format!("two of its tensors map to `{name}`; the file mixes two namings or models"),
        )
    }

    /// The layout the file was detected as.
    pub fn layout(&self) -> Layout {
        self.placement.layout
    }

    /// Whether the file holds a decoder (any of its tensors).
    pub fn has_decoder(&self) -> bool {
        self.entries.values().any(|e| e.part == Part::Decoder)
    }

    /// The shape of a canonical tensor in the file.
    fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// The values of a canonical tensor (its parts joined), as f32.
    fn values(&self, name: &str) -> Result<Vec<f32>> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| SaplingError::import(&self.path, format!("has no `{name}`")))?;
        let mut out = Vec::new();
        for &i in &entry.parts {
            out.extend(self.files[i].values(&self.path)?);
        }
        let bad = out.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(SaplingError::import(
                &self.path,
                format!(
                    "`{name}` holds {bad} non-finite values (NaN or infinity) of {}: the file is \
                     damaged, or the run that wrote it diverged; start from another file",
                    out.len()
                ),
            ));
        }
        Ok(out)
    }

    /// The layout of the file's fixed position tables (`None` when it has none: a timm
    /// encoder without `pos_embed` is not something MAE writes, but nothing needs it).
    pub fn pos_embed(&self) -> Result<Option<PosEmbed>> {
        check::pos_layout(self)
    }

    /// The config of `preset` (by default the preset the file's shapes are) with its position
    /// tables in the file's layout: the model to evaluate or time the file in.
    pub fn config_for(&self, preset: Option<Preset>) -> Result<Config> {
        let preset = match preset {
            Some(p) => p,
            None => self.preset()?,
        };
        let mut config = preset.config();
        if let Some(layout) = self.pos_embed()? {
            config.model.pos_embed = layout;
        }
        Ok(config)
    }

    /// The preset the file's shapes are (the first, if several share them).
    pub fn preset(&self) -> Result<Preset> {
        let shape = FileShape::of(self)?;
        shape.presets().first().copied().ok_or_else(|| {
            SaplingError::import(
                &self.path,
                format!(
                    "its shapes ({}) are no preset's; give --preset, or train with a [model] \
                     config of these shapes and --init-from",
                    shape.describe()
                ),
            )
        })
    }
}

/// The model of the file at `path` on `device`, for evaluation (native: a file on disk): the
/// shapes of `preset` (by default the preset the file's shapes are), the position tables in the
/// file's layout, the file's weights (a decoder it lacks drawn as MAE's, from seed 0).
#[cfg(not(target_family = "wasm"))]
pub fn model_for(
    path: &Path,
    preset: Option<Preset>,
    device: &burn::tensor::Device,
) -> Result<(Config, crate::model::MaskedAutoencoder, Report)> {
    use crate::model::{MaskedAutoencoder, init};
    let imported = read(path)?;
    let config = imported.config_for(preset)?;
    let model = init::seeded(device, 0, || MaskedAutoencoder::new(&config.model, device));
    let (model, report) = imported.load(model, config.preset.name())?;
    Ok((config, model, report))
}
