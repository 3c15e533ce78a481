//! Step 3: fixed 2-D sin-cos position embeddings.
//!
//! Once patches are shuffled and dropped, the encoder only knows where a patch was from its
//! position embedding. MAE uses fixed (not learned) sin-cos tables: half of each vector encodes
//! the row, half the column, at geometrically spaced frequencies. Nearby positions get similar
//! vectors — the picture shows, for a few positions, the cosine similarity to every other.
//!
//! Run: `cargo run --release --example 03_position_embeddings`

mod common;

use image::{Rgb, RgbImage};
use sapling::model::pos_embed::sincos_2d;
use sapling::viz::save_png;

fn main() -> anyhow::Result<()> {
    let (dim, grid) = (64, 14);
    // Row 0 is the cls token's (all zeros); rows 1.. are the grid in raster order.
    let table = sincos_2d(dim, grid, true);
    let row = |i: usize| &table[(1 + i) * dim..(2 + i) * dim];
    let cosine = |a: &[f32], b: &[f32]| {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (norm(a) * norm(b))
    };
    let probes = [
        0,
        grid / 2 * grid + grid / 2,
        grid * grid - 1,
        3 * grid + 10,
    ];
    let (cell, gap) = (10u32, 6u32);
    let side = grid as u32 * cell;
    let mut picture = RgbImage::from_pixel(
        probes.len() as u32 * (side + gap) + gap,
        side + 2 * gap,
        Rgb([255; 3]),
    );
    for (n, &probe) in probes.iter().enumerate() {
        let right = probe + 1 - usize::from(probe % grid == grid - 1) * 2;
        let below = if probe + grid < grid * grid {
            probe + grid
        } else {
            probe - grid
        };
        let far = grid * grid - 1 - probe;
        println!(
            "position ({}, {}): similarity {:.2} to its horizontal neighbour, {:.2} to its vertical one, {:.2} to the opposite corner",
            probe / grid,
            probe % grid,
            cosine(row(probe), row(right)),
            cosine(row(probe), row(below)),
            cosine(row(probe), row(far)),
        );
        let sims: Vec<f32> = (0..grid * grid)
            .map(|o| cosine(row(probe), row(o)))
            .collect();
        let lo = sims.iter().copied().fold(f32::INFINITY, f32::min);
        for (other, &c) in sims.iter().enumerate() {
            // Each map stretched from its least similar position (dark blue) to the most
            // similar (yellow): every position is fairly similar to every other in absolute terms.
            let t = (c - lo) / (1.0 - lo);
            let colour = if other == probe {
                Rgb([0, 0, 0])
            } else {
                Rgb([
                    (255.0 * t) as u8,
                    (64.0 + 160.0 * t) as u8,
                    (160.0 * (1.0 - t)) as u8,
                ])
            };
            let (y, x) = ((other / grid) as u32, (other % grid) as u32);
            for dy in 0..cell {
                for dx in 0..cell {
                    picture.put_pixel(
                        gap + n as u32 * (side + gap) + x * cell + dx,
                        gap + y * cell + dy,
                        colour,
                    );
                }
            }
        }
    }
    let path = common::out_dir("03_position_embeddings").join("similarity.png");
    save_png(&picture, &path)?;
    println!(
        "wrote {} (black: the position compared; yellow: most similar, blue: least)",
        path.display()
    );
    println!("try: dim 16 — fewer frequencies, blurrier maps");
    Ok(())
}
