//! Training data: sources, augmentation, the background loader.

/// RandomResizedCrop, flip, normalisation.
pub mod augment;
/// IDX (MNIST-style) files.
pub mod idx;
/// Deterministic background batching.
pub mod loader;
/// WebDataset tar shards (natively: a page has no files).
#[cfg(not(target_arch = "wasm32"))]
pub mod shards;
/// Image folders and the embedded photos.
pub mod source;
/// Which image and augmentation each sample of the stream gets.
pub mod stream;

pub use loader::Loader;
pub use source::ImageSource;
pub use stream::{Batch, Shard, Stream};
