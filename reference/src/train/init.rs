//! Random initialisation for training from scratch (DeepSeek-V3 §4.2, "Hyper-Parameters":
//! "we randomly initialize all learnable parameters with a standard deviation of 0.006").
//! Matrices are drawn from N(0, std²), norm gains start at 1, selection biases at 0.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::params::{Layout, ParamKind, Params};
use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// The paper's initialisation standard deviation.
pub const INIT_STD: f32 = 0.006;

/// Host weights for `cfg` (MTP modules included, sharing the main embedding and head),
/// drawn from `seed` in the fixed leaf order of [`Params::try_map`].
pub fn init_params(cfg: &ModelConfig, std: f32, seed: u64) -> Result<Params<ArrayD<f32>>> {
    let normal = Normal::new(0.0f32, std).map_err(|e| Error::config("init std", e.to_string()))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Params::shapes(cfg, Layout::default()).try_map(|_, kind, shape| {
        let n = shape.iter().product();
        let data: Vec<f32> = match kind {
            ParamKind::Matrix => (0..n).map(|_| normal.sample(&mut rng)).collect(),
            ParamKind::Norm => vec![1.0; n],
            ParamKind::SelectionBias => vec![0.0; n],
        };
        Ok(ArrayD::from_shape_vec(IxDyn(shape), data).expect("n elements"))
    })
}
