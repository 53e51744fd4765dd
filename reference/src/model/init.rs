//! Random initialisation (DeepSeek-V3 §4.2: "all learnable parameters are randomly
//! initialized with a standard deviation of 0.006"): normal weights, unit norm gains,
//! zero selection biases. Deterministic from a seed.

use super::config::ModelConfig;
use super::params::{Layout, ParamKind, Params};
use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

/// The paper's initialisation standard deviation.
pub const INIT_STD: f32 = 0.006;

/// Every tensor of `cfg`'s model, drawn from N(0, std²) (matrices), 1 (norms) or 0 (biases).
pub fn init_params(cfg: &ModelConfig, layout: Layout, seed: u64, std: f32) -> Params<ArrayD<f32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, std).expect("a positive standard deviation");
    let shapes = Params::shapes(cfg, layout);
    let init = shapes.try_map(|_, kind, shape| {
        Ok::<_, std::convert::Infallible>(match kind {
            ParamKind::Matrix => ArrayD::from_shape_simple_fn(IxDyn(shape), || normal.sample(&mut rng)),
            ParamKind::Norm => ArrayD::ones(IxDyn(shape)),
            ParamKind::SelectionBias => ArrayD::zeros(IxDyn(shape)),
        })
    });
    match init {
        Ok(params) => params,
        Err(never) => match never {},
    }
}
