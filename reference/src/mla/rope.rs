//! Decoupled rotary position embedding with YaRN frequency blending
//! (DeepSeek-V3 eqs. 3 and 8 apply it to `k^R` and `q^R`; the public code's
//! `precompute_freqs_cis` and `apply_rotary_emb`, interleaved pairs).
//!
//! The public code evaluates the table in float32 (`torch.float32`, `complex64`); so does
//! this one, step by step in the same order, so that the angles agree to the last bits
//! that matter.

use crate::config::ModelConfig;
use ndarray::Array2;

/// `cos` and `sin` of `position · frequency_i`, `[max_seq_len, R/2]`, each multiplied by
/// YaRN's rotary amplitude ([`YarnConfig::rotary_amplitude`](crate::config::YarnConfig)).
#[derive(Debug, Clone)]
pub struct RopeTable {
    pub cos: Array2<f32>,
    pub sin: Array2<f32>,
}

/// The `R/2` rotary frequencies `θ^(-2i/R)`, blended toward `freq / factor` by YaRN when
/// the configured context exceeds the original one.
pub fn frequencies(cfg: &ModelConfig) -> Vec<f32> {
    let dim = cfg.qk_rope_head_dim;
    let base = cfg.rope_theta;
    let plain: Vec<f32> = (0..dim / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / dim as f32)).collect();
    let Some(yarn) = cfg.yarn else { return plain };
    // The dimension at which `num_rotations` full turns fit in the original context (f64,
    // as Python's math module).
    let correction_dim = |num_rotations: f64| {
        dim as f64 * (yarn.original_seq_len as f64 / (num_rotations * 2.0 * std::f64::consts::PI)).ln()
            / (2.0 * (base as f64).ln())
    };
    let (low, high) = (correction_dim(yarn.beta_fast as f64), correction_dim(yarn.beta_slow as f64));
    let (low, high) = if yarn.truncate { (low.floor(), high.ceil()) } else { (low, high) };
    let (low, high) = (low.max(0.0), high.min(dim as f64 - 1.0));
    let (low, high) = (low as f32, if low == high { high as f32 + 0.001 } else { high as f32 });
    plain
        .iter()
        .enumerate()
        .map(|(i, &f)| {
            let ramp = ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
            let smooth = 1.0 - ramp;
            f / yarn.factor * (1.0 - smooth) + f * smooth
        })
        .collect()
}

/// A rotary table on a backend, borrowed: `cos`/`sin` `[max_seq_len, R/2]` as
/// [`RopeTable`] computes them.
pub struct Rope<'a, T> {
    pub cos: &'a T,
    pub sin: &'a T,
}

// By hand: a derive would ask `T: Copy`, and only the references are copied.
impl<T> Clone for Rope<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Rope<'_, T> {}

impl RopeTable {
    pub fn new(cfg: &ModelConfig) -> Self {
        let freqs = frequencies(cfg);
        let amplitude = cfg.yarn.map_or(1.0, |y| y.rotary_amplitude);
        let angle = Array2::from_shape_fn((cfg.max_seq_len, freqs.len()), |(t, i)| t as f32 * freqs[i]);
        RopeTable { cos: angle.mapv(|a| a.cos() * amplitude), sin: angle.mapv(|a| a.sin() * amplitude) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::prelude::*;
    use crate::config::YarnConfig;
    use proptest::prelude::*;

    fn config(rope_dim: usize, max_seq_len: usize, yarn: Option<YarnConfig>) -> ModelConfig {
        let json = serde_json::json!({
            "vocab_size": 8, "dim": 8, "inter_dim": 8, "moe_inter_dim": 8, "n_layers": 1, "n_heads": 1,
            "n_routed_experts": 2, "n_activated_experts": 1, "kv_lora_rank": 4, "qk_nope_head_dim": 4,
            "qk_rope_head_dim": rope_dim, "v_head_dim": 4, "max_seq_len": max_seq_len, "original_seq_len": max_seq_len,
        });
        let mut cfg = ModelConfig::from_json(&json).unwrap();
        cfg.yarn = yarn;
        cfg
    }

    /// YaRN written directly from its definition (Peng et al. 2023, eq. 17–19), in f64.
    fn yarn_direct(i: usize, dim: usize, base: f64, y: &YarnConfig) -> f64 {
        let theta = base.powf(-(2.0 * i as f64) / dim as f64);
        let wavelength_dim = |rot: f64| {
            dim as f64 * (y.original_seq_len as f64 / (rot * 2.0 * std::f64::consts::PI)).ln() / (2.0 * base.ln())
        };
        let low = wavelength_dim(y.beta_fast as f64).floor().max(0.0);
        let high = wavelength_dim(y.beta_slow as f64).ceil().min(dim as f64 - 1.0);
        let high = if low == high { high + 0.001 } else { high };
        let gamma = 1.0 - ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
        (1.0 - gamma) * theta / y.factor as f64 + gamma * theta
    }

    proptest! {
        #[test]
        fn frequencies_match_the_direct_formula(half in 1usize..40, factor in 1.0f32..64.0, orig in 4usize..4096,
                                                beta_fast in 8.0f32..64.0, beta_slow in 0.5f32..4.0) {
            let dim = 2 * half;
            let y = YarnConfig { factor, original_seq_len: orig, beta_fast, beta_slow, mscale: Some(1.0), mscale_all_dim: 1.0, rotary_amplitude: 1.0, truncate: true };
            let cfg = config(dim, orig * 2, Some(y));
            for (i, f) in frequencies(&cfg).into_iter().enumerate() {
                let want = yarn_direct(i, dim, 10000.0, &y);
                prop_assert!(((f as f64) - want).abs() <= 1e-5 * want, "i={i}: {f} vs {want}");
            }
            let plain = config(dim, 64, None);
            for (i, f) in frequencies(&plain).into_iter().enumerate() {
                let want = 10000f64.powf(-(2.0 * i as f64) / dim as f64);
                prop_assert!(((f as f64) - want).abs() <= 1e-6 * want);
            }
        }

        /// `apply_rotary_emb`: each interleaved pair (x[2i], x[2i+1]) is the complex number
        /// x[2i] + i·x[2i+1], multiplied by e^{i·(start + s)·θ_i}.
        #[test]
        fn rope_rotates_interleaved_pairs_as_complex_numbers(half in 1usize..6, seq in 1usize..6, heads in 1usize..3,
                                                             start in 0usize..8, seed in 0u64..100) {
            use crate::backend::CpuBackend;
            use rand::{Rng, SeedableRng};
            let cfg = config(2 * half, 16, None);
            let table = RopeTable::new(&cfg);
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let x = ndarray::ArrayD::from_shape_simple_fn(ndarray::IxDyn(&[2, seq, heads, 2 * half]), || rng.random_range(-2.0f32..2.0));
            let b = CpuBackend;
            let y = b.rope_forward(&x, &table.cos.clone().into_dyn(), &table.sin.clone().into_dyn(), start).unwrap();
            let freqs = frequencies(&cfg);
            for ((bb, s, h, d), &out) in y.clone().into_dimensionality::<ndarray::Ix4>().unwrap().indexed_iter() {
                let i = d / 2;
                let angle = (start + s) as f64 * freqs[i] as f64;
                let (re, im) = (x[[bb, s, h, 2 * i]] as f64, x[[bb, s, h, 2 * i + 1]] as f64);
                let want = if d % 2 == 0 { re * angle.cos() - im * angle.sin() } else { re * angle.sin() + im * angle.cos() };
                prop_assert!((out as f64 - want).abs() < 1e-5 * (1.0 + angle.abs()), "[{bb},{s},{h},{d}]: {out} vs {want}");
            }
        }

        #[test]
        fn table_holds_cos_and_sin_of_position_times_frequency(half in 1usize..16, seq in 1usize..64) {
            let cfg = config(2 * half, seq, None);
            let table = RopeTable::new(&cfg);
            let freqs = frequencies(&cfg);
            for t in 0..seq {
                for (i, f) in freqs.iter().enumerate() {
                    let angle = t as f64 * *f as f64;
                    prop_assert!((table.cos[[t, i]] as f64 - angle.cos()).abs() < 1e-5 * (1.0 + angle.abs()));
                    prop_assert!((table.sin[[t, i]] as f64 - angle.sin()).abs() < 1e-5 * (1.0 + angle.abs()));
                }
            }
        }
    }
}
