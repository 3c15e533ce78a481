//! A module's float parameters (or their gradients) as one flat sequence, in module order.
//!
//! Module order is the same in every process, whereas `ParamId`s are random per process, so
//! ranks agree on which value is which by position.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};

/// The gradients of `module`'s parameters, flattened, in module order (parameters without a
/// gradient are skipped).
pub fn flat_grads<M: Module>(module: &M, grads: &GradientsParams) -> Vec<Tensor<1>> {
    flat_grads_at(module, grads)
        .into_iter()
        .map(|p| p.grad)
        .collect()
}

/// The gradients `grads` holds for `module`'s parameters (all of them, or one stage's),
/// flattened, each with its parameter's index and offset in the flat parameter sequence of
/// [`flat_params`].
pub fn flat_grads_at<M: Module>(module: &M, grads: &GradientsParams) -> Vec<PlacedGrad> {
    struct Collect<'a> {
        grads: &'a GradientsParams,
        index: usize,
        offset: usize,
        out: Vec<PlacedGrad>,
    }
    impl ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let n = param.lazy_shape().num_elements();
            if let Some(g) = self.grads.get::<D>(param.id) {
                self.out.push(PlacedGrad {
                    index: self.index,
                    offset: self.offset,
                    grad: g.reshape([n]),
                });
            }
            self.index += 1;
            self.offset += n;
        }
    }
    let mut v = Collect {
        grads,
        index: 0,
        offset: 0,
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}

/// One parameter's flattened gradient and where its values sit in the flat sequence.
pub struct PlacedGrad {
    /// The parameter's position in module order.
    pub index: usize,
    /// Its first value's position in the flat sequence.
    pub offset: usize,
    pub grad: Tensor<1>,
}

/// Replaces the gradients of `module`'s parameters, in module order, by `flat` (as returned by
/// [`flat_grads`], same lengths).
pub fn set_flat_grads<M: Module>(module: &M, grads: &mut GradientsParams, flat: Vec<Tensor<1>>) {
    struct Put<'a> {
        grads: &'a mut GradientsParams,
        next: std::vec::IntoIter<Tensor<1>>,
    }
    impl ModuleVisitor for Put<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(old) = self.grads.remove::<D>(param.id) {
                let dims = old.dims();
                let new = self.next.next().expect("one flat gradient per parameter");
                self.grads.register::<D>(param.id, new.reshape(dims));
            }
        }
    }
    let mut v = Put {
        grads,
        next: flat.into_iter(),
    };
    module.visit(&mut v);
}

/// Every float parameter value of `module`, flattened and concatenated in module order.
pub fn flat_params<M: Module>(module: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let values = param
                .val()
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("f32 parameter");
            self.0.extend(values);
        }
    }
    let mut v = Collect(Vec::new());
    module.visit(&mut v);
    v.0
}

/// `module` with its float parameters taken from `values` (module order, as
/// [`flat_params`]); ids and trainability are kept.
pub fn with_flat_params<M: Module>(module: M, values: &[f32]) -> M {
    struct Load<'a> {
        values: &'a [f32],
        at: usize,
    }
    impl ModuleMapper for Load<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let values = self.values;
            let at = &mut self.at;
            param.map(|old| {
                let shape = old.shape();
                let n = shape.num_elements();
                let data = TensorData::new(values[*at..*at + n].to_vec(), shape);
                *at += n;
                let new = Tensor::<D>::from_data(data, &old.device());
                if old.is_require_grad() {
                    new.require_grad()
                } else {
                    new
                }
            })
        }
    }
    let mut m = Load { values, at: 0 };
    let module = module.map(&mut m);
    assert_eq!(m.at, values.len(), "parameter count differs");
    module
}
