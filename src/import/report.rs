//! What an import did, for people: loaded, newly initialised and ignored, by group.

use std::fmt;
use std::path::PathBuf;

use crate::config::PosEmbed;
use crate::layout::Layout;

/// What [`super::Imported::load`] loaded.
#[derive(Debug, Clone)]
pub struct Report {
    pub path: PathBuf,
    pub layout: Layout,
    /// Encoder tensors loaded (cls token, patch embedding, blocks, final norm).
    pub encoder: usize,
    /// Decoder tensors loaded; 0 when the file has none and the decoder keeps MAE's
    /// initialisation.
    pub decoder: usize,
    /// The layout of the file's fixed position tables, if it has them.
    pub pos: Option<PosEmbed>,
    /// Patches per side of the file's position table and of this run's.
    pub grids: Option<(usize, usize)>,
    /// The file's names that were not used.
    pub ignored: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "weights from {} ({} layout): encoder {} tensors loaded; ",
            self.path.display(),
            self.layout.describe(),
            self.encoder
        )?;
        if self.decoder > 0 {
            write!(f, "decoder {} tensors loaded", self.decoder)?;
        } else {
            write!(
                f,
                "decoder newly initialised (the file has none; MAE's initialisation, so \
                 reconstructions stay grey until it trains)"
            )?;
        }
        match (self.pos, self.grids) {
            (Some(pos), Some((file, run))) if file != run => write!(
                f,
                "; position tables: fixed sin-cos in {}, built for this run's \
                 {run}×{run} grid (the file's is {file}×{file})",
                describe(pos)
            )?,
            (Some(pos), _) => write!(
                f,
                "; position tables: fixed sin-cos in {}, as the file's",
                describe(pos)
            )?,
            (None, _) => write!(f, "; the file has no position tables")?,
        }
        if !self.ignored.is_empty() {
            let shown: Vec<_> = self.ignored.iter().take(4).map(String::as_str).collect();
            let more = self.ignored.len() - shown.len();
            write!(f, "; ignored {}: {}", self.ignored.len(), shown.join(", "))?;
            if more > 0 {
                write!(f, ", …")?;
            }
        }
        Ok(())
    }
}

fn describe(pos: PosEmbed) -> &'static str {
    match pos {
        PosEmbed::Mae => "MAE's layout (column first)",
        PosEmbed::Mmpretrain => "mmpretrain's layout (row first)",
    }
}
