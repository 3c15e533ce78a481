//! The gradient all-reduce: buckets of tens of MB are read back, summed over ranks by MPI on
//! the host, averaged, and uploaded again; and the broadcast of rank 0's initial weights.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use web_time::Instant;

use super::flat::{PlacedGrad, flat_grads, flat_params, set_flat_grads, with_flat_params};
use super::world::Collective;

/// What one all-reduce cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReduceStats {
    /// Seconds from the first readback to the last upload.
    pub seconds: f64,
    /// Gradient bytes this rank sent (and received) through MPI.
    pub bytes: u64,
    pub buckets: usize,
}

/// Replaces `grads` by their mean over the ranks of `world`.
///
/// Gradients are grouped, in module order, into buckets of about `bucket_bytes`; each bucket
/// is one readback, one MPI all-reduce and one upload. With `overlap`, a second thread reads
/// bucket `k + 1` back while MPI reduces bucket `k`.
pub fn all_reduce_grads<M: Module>(
    module: &M,
    grads: &mut GradientsParams,
    world: &dyn Collective,
    bucket_bytes: usize,
    overlap: bool,
) -> ReduceStats {
    let started = Instant::now();
    let flat = flat_grads(module, grads);
    let Some(device) = flat.first().map(|t| t.device()) else {
        return ReduceStats::default();
    };
    let lengths: Vec<usize> = flat.iter().map(|t| t.dims()[0]).collect();
    let buckets = bucketize(flat, bucket_bytes / 4, |t| t.dims()[0]);
    let n_buckets = buckets.len();
    let scale = 1.0 / world.size() as f32;
    let mut reduced: Vec<Vec<f32>> = Vec::with_capacity(n_buckets);
    let mut reduce = |mut host: Vec<f32>| {
        world.all_reduce_sum(&mut host);
        host.iter_mut().for_each(|v| *v *= scale);
        reduced.push(host);
    };
    if overlap {
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<f32>>(1);
            s.spawn(move || {
                for b in buckets {
                    if tx.send(read_back(b)).is_err() {
                        return;
                    }
                }
            });
            for host in rx {
                reduce(host);
            }
        });
    } else {
        for b in buckets {
            reduce(read_back(b));
        }
    }
    let bytes = reduced.iter().map(|b| b.len() as u64 * 4).sum();
    let flat = split(reduced, &lengths, &device);
    set_flat_grads(module, grads, flat);
    ReduceStats {
        seconds: started.elapsed().as_secs_f64(),
        bytes,
        buckets: n_buckets,
    }
}

/// Adds placed gradients (all of a module's, or one stage's: see
/// [`super::flat::flat_grads_at`]) into the host buffer `acc` (as long as all parameters
/// together) at their parameters' places, reading them back one bucket of about `bucket_bytes`
/// at a time. A parameter whose `fresh` flag is set gets its gradient written instead (its
/// first of the step: burn's accumulator moves a first gradient too, so the sums are the same
/// bits) and the flag is cleared. Returns the bytes read back.
pub fn add_placed_into(
    placed: Vec<PlacedGrad>,
    acc: &mut [f32],
    fresh: &mut [bool],
    bucket_bytes: usize,
) -> u64 {
    let mut bytes = 0;
    for bucket in bucketize(placed, bucket_bytes / 4, |p| p.grad.dims()[0]) {
        if bucket.is_empty() {
            continue; // no gradients at all
        }
        let values = read_back(bucket.iter().map(|p| p.grad.clone()).collect());
        bytes += values.len() as u64 * 4;
        let mut at = 0;
        for p in &bucket {
            let n = p.grad.dims()[0];
            let (dst, src) = (&mut acc[p.offset..p.offset + n], &values[at..at + n]);
            if std::mem::take(&mut fresh[p.index]) {
                dst.copy_from_slice(src);
            } else {
                dst.iter_mut().zip(src).for_each(|(a, g)| *a += g);
            }
            at += n;
        }
    }
    bytes
}

/// Rank 0's parameter values on every rank (initialisation differs per process and backend).
pub fn broadcast_weights<M: Module>(module: M, world: &dyn Collective) -> M {
    if world.size() == 1 {
        return module;
    }
    let mut values = flat_params(&module);
    world.broadcast(&mut values, 0);
    with_flat_params(module, &values)
}

/// Groups flat tensors (or items holding one, `len` long), in order, into buckets of at least
/// `elements` (the last may be smaller); a tensor is never split.
fn bucketize<T>(flat: Vec<T>, elements: usize, len: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut buckets = vec![Vec::new()];
    let mut filled = 0;
    for t in flat {
        if filled >= elements.max(1) {
            buckets.push(Vec::new());
            filled = 0;
        }
        filled += len(&t);
        buckets.last_mut().expect("non-empty").push(t);
    }
    buckets
}

/// One readback for a whole bucket.
fn read_back(bucket: Vec<Tensor<1>>) -> Vec<f32> {
    crate::counts::read_back();
    Tensor::cat(bucket, 0)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 gradients")
}

/// Uploads the reduced buckets as one tensor each and cuts them back into per-parameter
/// pieces of `lengths`.
fn split(reduced: Vec<Vec<f32>>, lengths: &[usize], device: &Device) -> Vec<Tensor<1>> {
    let mut out = Vec::with_capacity(lengths.len());
    let mut lengths = lengths.iter();
    for host in reduced {
        let n = host.len();
        crate::counts::uploaded(n * size_of::<f32>());
        let whole = Tensor::<1>::from_data(TensorData::new(host, [n]), device);
        let mut at = 0;
        while at < n {
            let len = *lengths.next().expect("lengths cover the buckets");
            out.push(whole.clone().narrow(0, at, len));
            at += len;
        }
    }
    out
}
