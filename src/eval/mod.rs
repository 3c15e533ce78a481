//! Evaluating what pretraining learned.

/// Linear probe on a labelled IDX data set.
pub mod probe;
