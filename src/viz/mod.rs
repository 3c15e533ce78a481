//! Pictures of a run: reconstruction grids and metric plots.

/// Loss and learning-rate plots (files; the browser page draws its own).
#[cfg(not(target_family = "wasm"))]
pub mod plot;
/// MAE's reconstruction figure.
pub mod recon;

#[cfg(not(target_family = "wasm"))]
pub use recon::recon_grid;
pub use recon::{image_grid, recon_grid_async};

use std::path::Path;

use crate::atomic;
use crate::error::{Result, SaplingError};

/// Encodes `img` as PNG and writes it atomically.
pub fn save_png(img: &image::RgbImage, path: &Path) -> Result<()> {
    let bytes = png_bytes(img).map_err(|message| SaplingError::Data {
        path: path.to_path_buf(),
        message,
    })?;
    atomic::write(path, &bytes)
}

/// `img` encoded as PNG (for a file, or a browser's `<img>`).
pub fn png_bytes(img: &image::RgbImage) -> std::result::Result<Vec<u8>, String> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| format!("cannot encode PNG: {e}"))?;
    Ok(bytes.into_inner())
}
