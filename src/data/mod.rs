//! Training data: sources, augmentation, the background loader.

/// RandomResizedCrop, flip, normalisation.
pub mod augment;
/// IDX (MNIST-style) files.
pub mod idx;
/// Deterministic background batching.
pub mod loader;
/// Image folders and the embedded photos.
pub mod source;

pub use loader::{Batch, Loader, Shard};
pub use source::ImageSource;
