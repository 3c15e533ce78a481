//! What every walkthrough step shares: where it writes its pictures, and the fast mode the test
//! suite runs it in (`SAPLING_EXAMPLE_FAST=1`: smaller, so a test can run every step).

#![allow(dead_code)]

use std::path::PathBuf;

/// `runs/walkthrough/NAME`, or `$SAPLING_EXAMPLE_OUT/NAME` when set; created.
pub fn out_dir(name: &str) -> PathBuf {
    let root = std::env::var_os("SAPLING_EXAMPLE_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("runs/walkthrough"));
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("cannot create the example's output folder");
    dir
}

/// Whether the step runs in its quick mode (set by the test suite).
pub fn fast() -> bool {
    std::env::var("SAPLING_EXAMPLE_FAST").is_ok_and(|v| v == "1")
}

/// One embedded photo, resized whole to `size` and normalised: `[3, size, size]` values.
pub fn photo(index: usize, size: usize) -> Vec<f32> {
    let source = sapling::data::ImageSource::Embedded;
    let img = source.load(index).expect("embedded photos decode");
    let mut out = Vec::new();
    sapling::data::augment::center_resize(&img, size as u32, &Default::default(), &mut out);
    out
}
