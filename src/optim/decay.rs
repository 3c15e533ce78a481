//! Which parameters get weight decay.
//!
//! One rule, as MAE and Sapiens: only the weight matrices of linear layers decay. Biases,
//! LayerNorm scale and shift, the cls and mask tokens get none (the position embeddings are
//! fixed tables, not parameters, so they get none either).

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;

/// A parameter's dotted path, e.g. `blocks.3.attn.qkv.weight`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedParam {
    pub path: String,
    pub id: ParamId,
    pub shape: Vec<usize>,
}

/// Whether the parameter at `path` decays.
pub fn decays(path: &str) -> bool {
    // burn names a Linear's matrix `weight`; LayerNorm uses `gamma`/`beta`, tokens their own names.
    path.ends_with(".weight")
}

/// Every float parameter of `module` with its path.
pub fn named_params<M: Module>(module: &M) -> Vec<NamedParam> {
    let mut visitor = PathVisitor::default();
    module.visit(&mut visitor);
    visitor.params
}

/// Ids of the parameters that must not decay.
pub fn no_decay_ids<M: Module>(module: &M) -> Vec<ParamId> {
    named_params(module)
        .into_iter()
        .filter(|p| !decays(&p.path))
        .map(|p| p.id)
        .collect()
}

#[derive(Default)]
struct PathVisitor {
    stack: Vec<String>,
    params: Vec<NamedParam>,
}

impl ModuleVisitor for PathVisitor {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.params.push(NamedParam {
            path: self.stack.join("."),
            id: param.id,
            shape: param.lazy_shape().to_vec(),
        });
    }
}
