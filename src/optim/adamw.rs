//! AdamW with MAE's settings and two parameter groups: decayed linear weights, and the rest.

use burn::module::{Module, ParamGroup};
use burn::optim::{AdamWConfig, ModuleOptimizer};

use super::decay::no_decay_ids;
use crate::config::OptimConfig;

/// AdamW over `module`'s parameters; the no-decay group is fixed by [`super::decay::decays`].
pub fn adamw<M: Module>(config: &OptimConfig, module: &M) -> ModuleOptimizer {
    let with_decay = |wd: f64| {
        AdamWConfig::new()
            .with_beta_1(config.beta1 as f32)
            .with_beta_2(config.beta2 as f32)
            // burn's default epsilon is 1e-5; MAE and Sapiens use 1e-8.
            .with_epsilon(config.eps as f32)
            .with_weight_decay(wd as f32)
    };
    with_decay(config.weight_decay).init().with_group(
        ParamGroup::from_ids(no_decay_ids(module)),
        with_decay(0.0).build(),
        None,
    )
}
