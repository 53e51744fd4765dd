//! v3lab's conformance suites: every backend held to the CPU reference, and the reference
//! held to the golden outputs of the public DeepSeek-V3 PyTorch code.
//!
//! Errors are measured as `‖out − ref‖ / ‖ref‖` over a whole tensor; a failing check
//! prints its evidence (relative and max abs error, where, the first differing pairs).

pub mod suite;
mod suite_faulty;
pub mod suite_fp8;
mod suite_model;
mod suite_ops;
mod suite_train;
pub mod tolerance;

use ndarray::ArrayD;

/// `$V3LAB_GOLDENS` when set (the GPU machine), else `../shared/goldens` beside the repository.
pub use v3lab_reference::lab::goldens_dir;

/// `‖out − ref‖ / ‖ref‖` in f64: equal (empty or all-zero tensors included) is no error; any
/// difference from an all-zero reference is an infinite one.
pub fn rel_err(out: &ArrayD<f32>, reference: &ArrayD<f64>) -> f64 {
    v3lab_reference::lab::rel_err(out.iter().map(|&o| f64::from(o)), reference.iter().copied())
}

/// Compares `out` with `reference` and panics with the evidence when the relative error
/// exceeds `tolerance`; returns the error otherwise.
pub fn assert_close(what: &str, out: &ArrayD<f32>, reference: &ArrayD<f64>, tolerance: f64) -> f64 {
    assert_eq!(out.shape(), reference.shape(), "{what}: shape");
    let err = rel_err(out, reference);
    // A NaN error must fail too.
    if err.is_nan() || err > tolerance {
        let (worst, abs) = out
            .iter()
            .zip(reference.iter())
            .map(|(&o, &r)| (o as f64 - r).abs())
            .enumerate()
            .fold((0, 0.0), |best, (i, d)| if d > best.1 { (i, d) } else { best });
        let pairs: Vec<String> = out.iter().zip(reference.iter()).take(4).map(|(o, r)| format!("({o}, {r})")).collect();
        panic!(
            "{what}: relative error {err:.3e} > {tolerance:.1e}; max abs error {abs:.3e} at flat index {worst}; first pairs {}",
            pairs.join(" ")
        );
    }
    err
}

/// Reads an F64 golden tensor.
pub fn read_f64(file: &safetensors::SafeTensors<'_>, name: &str) -> ArrayD<f64> {
    let view = file.tensor(name).unwrap_or_else(|_| panic!("golden `{name}` missing"));
    assert_eq!(view.dtype(), safetensors::Dtype::F64, "golden `{name}` dtype");
    let data = view.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
    ArrayD::from_shape_vec(view.shape(), data).unwrap()
}
