//! Evaluating what pretraining learned: the frozen encoder's features scored by a linear probe
//! and by a k-NN classifier, on IDX data sets or image folders.

/// Features of whole images from a frozen encoder (cls or mean pooling).
pub mod features;
/// The weighted k-NN classifier (DINO's monitor).
pub mod knn;
/// Labelled splits: IDX data sets and `ImageFolder` layouts.
pub mod labelled;
/// Linear probe.
pub mod probe;
