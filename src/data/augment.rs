//! MAE's training augmentation: RandomResizedCrop (bicubic), horizontal flip, normalisation.

use image::{RgbImage, imageops};
use rand::Rng;

use super::ImageSource;
use crate::config::DataConfig;

/// A crop rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crop {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// torchvision's `RandomResizedCrop.get_params`: ten tries at a random area and log-uniform
/// aspect ratio, then a centre crop clamped to the ratio range.
pub fn random_crop(
    width: u32,
    height: u32,
    scale: [f64; 2],
    ratio: [f64; 2],
    rng: &mut impl Rng,
) -> Crop {
    let area = (width * height) as f64;
    let (log_lo, log_hi) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale[0]..=scale[1]);
        let aspect = rng.random_range(log_lo..=log_hi).exp();
        let w = (target * aspect).sqrt().round() as u32;
        let h = (target / aspect).sqrt().round() as u32;
        if 0 < w && w <= width && 0 < h && h <= height {
            return Crop {
                x: rng.random_range(0..=width - w),
                y: rng.random_range(0..=height - h),
                w,
                h,
            };
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio[0] {
        (width, ((width as f64 / ratio[0]).round() as u32).max(1))
    } else if in_ratio > ratio[1] {
        (((height as f64 * ratio[1]).round() as u32).max(1), height)
    } else {
        (width, height)
    };
    Crop {
        x: (width - w) / 2,
        y: (height - h) / 2,
        w,
        h,
    }
}

/// Crops, resizes to `size × size` (bicubic), maybe flips, and writes normalised CHW floats.
pub fn augment(
    img: &RgbImage,
    size: u32,
    config: &DataConfig,
    rng: &mut impl Rng,
    out: &mut Vec<f32>,
) {
    let crop = random_crop(
        img.width(),
        img.height(),
        config.crop_scale,
        config.crop_ratio,
        rng,
    );
    let region = imageops::crop_imm(img, crop.x, crop.y, crop.w, crop.h).to_image();
    let mut resized = imageops::resize(&region, size, size, imageops::FilterType::CatmullRom);
    if rng.random_bool(config.hflip) {
        imageops::flip_horizontal_in_place(&mut resized);
    }
    to_chw(&resized, config, out);
}

/// Resizes the whole image to `size × size` without randomness (for fixed evaluation images).
pub fn center_resize(img: &RgbImage, size: u32, config: &DataConfig, out: &mut Vec<f32>) {
    let resized = imageops::resize(img, size, size, imageops::FilterType::CatmullRom);
    to_chw(&resized, config, out);
}

/// The first `n` decodable images of `source`, resized whole to `size`: a fixed batch for
/// pictures. Returns `[B, 3, S, S]` values and `B`.
pub fn fixed_batch(
    source: &ImageSource,
    n: usize,
    size: u32,
    config: &DataConfig,
) -> (Vec<f32>, usize) {
    let mut out = Vec::new();
    let mut count = 0;
    for i in 0..source.len() {
        if count == n {
            break;
        }
        if let Ok(img) = source.load(i) {
            center_resize(&img, size, config, &mut out);
            count += 1;
        }
    }
    (out, count)
}

/// Appends `[3, H, W]` values `(pixel / 255 - mean) / std`.
fn to_chw(img: &RgbImage, config: &DataConfig, out: &mut Vec<f32>) {
    for c in 0..3 {
        let (mean, std) = (config.mean[c], config.std[c]);
        out.extend(img.pixels().map(|p| (p.0[c] as f32 / 255.0 - mean) / std));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn crops_stay_inside_and_respect_the_ranges() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for _ in 0..500 {
            let c = random_crop(300, 200, [0.2, 1.0], [0.75, 4.0 / 3.0], &mut rng);
            assert!(c.x + c.w <= 300 && c.y + c.h <= 200 && c.w > 0 && c.h > 0);
            let frac = (c.w * c.h) as f64 / 60000.0;
            assert!(frac > 0.18 && frac <= 1.0, "area fraction {frac}");
        }
    }

    #[test]
    fn normalises_with_mean_and_std() {
        let img = RgbImage::from_pixel(4, 4, image::Rgb([255, 0, 128]));
        let config = DataConfig::default();
        let mut out = Vec::new();
        center_resize(&img, 2, &config, &mut out);
        assert_eq!(out.len(), 3 * 2 * 2);
        assert!((out[0] - (1.0 - 0.485) / 0.229).abs() < 1e-4);
        assert!((out[4] - (0.0 - 0.456) / 0.224).abs() < 1e-4);
    }
}
