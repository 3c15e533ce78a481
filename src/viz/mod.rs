//! Pictures of a run: reconstruction grids and metric plots.

/// Loss and learning-rate plots.
pub mod plot;
/// MAE's reconstruction figure.
pub mod recon;

pub use recon::{image_grid, recon_grid};

use std::path::Path;

use crate::atomic;
use crate::error::{Result, SaplingError};

/// Encodes `img` as PNG and writes it atomically.
pub fn save_png(img: &image::RgbImage, path: &Path) -> Result<()> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| SaplingError::Data {
            path: path.to_path_buf(),
            message: format!("cannot encode PNG: {e}"),
        })?;
    atomic::write(path, bytes.get_ref())
}
