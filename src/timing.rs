//! Timing work on a device: warm-up runs left out, medians of the rest, and waiting for the
//! device where a browser cannot block.
//!
//! One loop ([`repeat`]) serves every measurement sapling makes: the batch planner's trial
//! steps and the step, kernel and matmul benchmarks.

use burn::tensor::{Device, Tensor};

use crate::error::{Result, SaplingError};

/// Runs `work` `warmup + timed` times and returns the results of the last `timed` runs: the
/// first runs compile kernels and fill allocator pools, which is not what is measured.
pub async fn repeat<T>(
    warmup: usize,
    timed: usize,
    mut work: impl AsyncFnMut() -> Result<T>,
) -> Result<Vec<T>> {
    for _ in 0..warmup {
        work().await?;
    }
    let mut out = Vec::with_capacity(timed);
    for _ in 0..timed {
        out.push(work().await?);
    }
    Ok(out)
}

/// Waits until `device` has finished everything queued so far. Natively that is burn's
/// blocking sync; a browser cannot block, so there the read-back of `witness` (queued last) is
/// awaited instead: a WebGPU queue runs in order.
pub async fn drain<const D: usize>(device: &Device, witness: Tensor<D>) -> Result<()> {
    #[cfg(not(target_family = "wasm"))]
    {
        let _ = witness;
        device
            .sync()
            .map_err(|e| SaplingError::Device(e.to_string()))
    }
    #[cfg(target_family = "wasm")]
    {
        let _ = device;
        let n = witness.shape().num_elements();
        let one = witness.reshape([n]).narrow(0, 0, n.min(1));
        one.into_data_async()
            .await
            .map(|_| ())
            .map_err(|e| SaplingError::Device(e.to_string()))
    }
}

/// The median of a non-empty list (a shared machine's hiccups move the mean, not the median).
pub fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "the median of nothing");
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
