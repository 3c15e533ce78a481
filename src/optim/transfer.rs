//! AdamW's moments handed between burn's optimizer and the host optimizer, so a checkpoint
//! written with the optimizer on the device resumes with it offloaded or sharded, and back.
//!
//! burn keeps each parameter's state inside `ModuleOptimizer`, reachable only through its
//! `step`. So the moments go in and out through one step with zero gradients, during which
//! sapling's AdamW neither updates nor reads the gradient: it takes each parameter's state
//! from a queue (seeding) or copies it out (harvesting). The step visits parameters in module
//! order, the order of the host optimizer's flat vectors.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamWState, AdaptiveMomentumState, GradientsParams, ModuleOptimizer};
use burn::tensor::{Tensor, TensorData};

/// One parameter's moments, flattened, and the steps they have seen.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamMoments {
    pub time: usize,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

/// What sapling's AdamW does on its next step (shared by both parameter groups).
#[derive(Debug, Clone, Default)]
pub struct MomentsTransfer(Arc<Mutex<Mode>>);

#[derive(Debug, Default)]
enum Mode {
    /// Train.
    #[default]
    Off,
    /// Take each parameter's state from the front of the queue; leave the weights.
    Seed(VecDeque<Option<ParamMoments>>),
    /// Copy each parameter's state out; leave the weights.
    Harvest(Vec<Option<ParamMoments>>),
}

impl MomentsTransfer {
    /// During a seeding or harvesting step, `Break` with the state a parameter leaves the
    /// step with, its weights untouched; while training, `Continue` with `state`.
    pub(super) fn intercept<const D: usize>(
        &self,
        tensor: &Tensor<D>,
        state: Option<AdamWState<D>>,
    ) -> ControlFlow<Option<AdamWState<D>>, Option<AdamWState<D>>> {
        let mut mode = self.0.lock().expect("the transfer is never poisoned");
        match &mut *mode {
            Mode::Off => ControlFlow::Continue(state),
            Mode::Seed(queue) => {
                let seeded = queue.pop_front().flatten().map(|p| {
                    let shape = tensor.shape();
                    let device = tensor.device();
                    let of = |values: Vec<f32>| {
                        Tensor::<D>::from_data(TensorData::new(values, shape.clone()), &device)
                    };
                    AdamWState::new(AdaptiveMomentumState::new(p.time, of(p.m), of(p.v)))
                });
                ControlFlow::Break(seeded)
            }
            Mode::Harvest(out) => {
                out.push(state.as_ref().map(|s| ParamMoments {
                    time: s.momentum.time,
                    m: values(&s.momentum.moment_1),
                    v: values(&s.momentum.moment_2),
                }));
                ControlFlow::Break(state)
            }
        }
    }
}

fn values<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 moments")
}

/// `optim` holding `moments` (one entry per parameter of `module`, in module order; `None`
/// starts that parameter afresh), `module`'s weights untouched.
pub fn seed<M: Module>(
    optim: &mut ModuleOptimizer,
    transfer: &MomentsTransfer,
    module: M,
    moments: Vec<Option<ParamMoments>>,
) -> M {
    *transfer.0.lock().expect("never poisoned") = Mode::Seed(moments.into());
    let module = optim.step(0.0, module.clone(), zero_grads(&module));
    *transfer.0.lock().expect("never poisoned") = Mode::Off;
    module
}

/// The moments `optim` holds for each parameter of `module`, in module order (`None` for a
/// parameter it has not stepped), `module`'s weights untouched.
pub fn harvest<M: Module>(
    optim: &mut ModuleOptimizer,
    transfer: &MomentsTransfer,
    module: M,
) -> (M, Vec<Option<ParamMoments>>) {
    *transfer.0.lock().expect("never poisoned") = Mode::Harvest(Vec::new());
    let module = optim.step(0.0, module.clone(), zero_grads(&module));
    let mode = std::mem::take(&mut *transfer.0.lock().expect("never poisoned"));
    let Mode::Harvest(out) = mode else {
        unreachable!("harvest mode is set above");
    };
    (module, out)
}

/// A zero gradient for every float parameter, so the step visits each one.
fn zero_grads<M: Module>(module: &M) -> GradientsParams {
    struct Zeros(GradientsParams);
    impl ModuleVisitor for Zeros {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0
                .register::<D>(param.id, param.val().inner().zeros_like());
        }
    }
    let mut z = Zeros(GradientsParams::new());
    module.visit(&mut z);
    z.0
}
