//! Data-parallel training: the all-reduce and broadcast in process, and real MPI worlds of two
//! processes (with `--features mpi`, `mpirun` on the PATH).

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use sapling::dist::flat::{flat_grads, flat_params, with_flat_params};
use sapling::dist::{Collective, all_reduce_grads, broadcast_weights};
use sapling::model::MaskedAutoencoder;
use sapling::train::Trainer;

use crate::common::{flex, micro_config};

/// A stand-in for a world of two identical ranks: sums double, broadcasts keep the buffer.
struct Twins;

impl Collective for Twins {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        2
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) {
        buf.iter_mut().for_each(|v| *v *= 2.0);
    }
    fn all_reduce_min(&self, value: u64) -> u64 {
        value
    }
    fn broadcast(&self, _: &mut [f32], _: usize) {}
    fn reduce_scatter_sum(&self, send: &[f32], recv: &mut [f32]) {
        recv.iter_mut().zip(send).for_each(|(r, s)| *r = 2.0 * s);
    }
    fn all_gather(&self, send: &[f32], recv: &mut [f32]) {
        for block in recv.chunks_mut(send.len()) {
            block.copy_from_slice(send);
        }
    }
    fn all_gather_u64(&self, value: u64) -> Vec<u64> {
        vec![value; 2]
    }
    fn barrier(&self) {}
    fn describe(&self) -> String {
        "twins".into()
    }
}

fn grads_of(model: &MaskedAutoencoder) -> GradientsParams {
    let cfg = micro_config("dist-grads");
    let trainer = Trainer::from_model(&cfg, model.clone(), &flex().autodiff()).unwrap();
    let plan = trainer.mask_for(0, 2);
    let batch = sapling::data::Batch::synthetic(2, 32, 7);
    let images = Tensor::<4>::from_data(
        burn::tensor::TensorData::new(batch.images, [2, 3, 32, 32]),
        &flex().autodiff(),
    );
    let loss = model.forward(images, &plan).loss;
    GradientsParams::from_grads(loss.backward(), model)
}

fn ids(model: &MaskedAutoencoder) -> Vec<burn::module::ParamId> {
    struct Ids(Vec<burn::module::ParamId>);
    impl burn::module::ModuleVisitor for Ids {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            self.0.push(p.id);
        }
    }
    let mut v = Ids(Vec::new());
    model.visit(&mut v);
    v.0
}

fn host(ts: Vec<Tensor<1>>) -> Vec<f32> {
    Tensor::cat(ts, 0)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap()
}

#[test]
fn the_mean_of_identical_gradients_is_unchanged_for_any_bucketing() {
    let cfg = micro_config("dist-buckets");
    let model = MaskedAutoencoder::new(&cfg.model, &flex().autodiff());
    let want = host(flat_grads(&model, &grads_of(&model)));
    // 1 KiB buckets split the model into many; 1 GiB keeps it whole.
    for (bucket, overlap) in [(1 << 10, false), (1 << 10, true), (1 << 30, true)] {
        let mut grads = grads_of(&model);
        let stats = all_reduce_grads(&model, &mut grads, &Twins, bucket, overlap);
        assert_eq!(stats.bytes, want.len() as u64 * 4);
        assert!(stats.buckets >= 1);
        if bucket == 1 << 10 {
            assert!(stats.buckets > 10, "{stats:?}");
        }
        let got = host(flat_grads(&model, &grads));
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-6, "bucket {bucket} overlap {overlap}: {worst}");
    }
}

#[test]
fn weights_travel_by_module_order_and_keep_their_ids() {
    let cfg = micro_config("dist-weights");
    let dev = flex().autodiff();
    let a = MaskedAutoencoder::new(&cfg.model, &dev);
    dev.seed(99);
    let b = MaskedAutoencoder::new(&cfg.model, &dev);
    let (wa, wb) = (flat_params(&a), flat_params(&b));
    assert_ne!(wa, wb);
    let ids_before = ids(&b);
    let moved = with_flat_params(b, &wa);
    assert_eq!(flat_params(&moved), wa);
    assert_eq!(ids(&moved), ids_before);
    // Still trainable: a loss through it has a gradient for every parameter.
    let n = flat_grads(&moved, &grads_of(&moved)).len();
    assert_eq!(n, ids_before.len());
    // A world of one leaves the model alone.
    let solo = broadcast_weights(moved, &sapling::dist::Solo);
    assert_eq!(flat_params(&solo), wa);
}
