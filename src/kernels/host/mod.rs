//! Kernels on plain host slices, with no burn backend under them: AdamW's one-pass update (the
//! CPU kernels' and the sharded optimizer's), the task sizes every CPU kernel splits its rows
//! by, and a transpose. Compiled for every target, the browser's included, where the Flex
//! kernels ([`super::cpu`]) are not.

/// One fused AdamW update per parameter, on slices.
pub mod adamw;

/// Below this many elements a kernel's loop runs on the calling thread: waking the pool costs
/// more than it saves.
pub const PARALLEL_MIN: usize = 1 << 14;

/// Rows of `row_len` elements per rayon task (elements: `row_len` 1): a few tasks per thread,
/// each at least [`PARALLEL_MIN`] elements, or one row where a row is longer.
pub fn rows_per_task(rows: usize, row_len: usize) -> usize {
    rows.div_ceil(4 * rayon::current_num_threads())
        .max(PARALLEL_MIN / row_len.max(1))
        .max(1)
}

/// A row-major `rows × cols` matrix transposed on the host (PyTorch's `[out, in]` linear
/// weights are burn's `[in, out]`).
pub fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; a.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = a[r * cols + c];
        }
    }
    t
}
