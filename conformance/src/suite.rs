//! The generic conformance suite: each check is written once, as `fn check_x<B: Backend>(b: &B)`,
//! and compares `b` against `CpuBackend` on random inputs of several shapes (including
//! sizes that are not multiples of any kernel's tile). [`crate::conformance_tests!`] stamps out,
//! per check:
//! - `cuda`: the check on the CUDA backend; it prints "skipped: no CUDA device (..)" and
//!   returns where there is none (it never claims to have compared anything then);
//! - `cpu_catches_fault`: the check on the CPU reference wrapped in [`Faulty`], first with
//!   no fault (it must pass: the check itself is sound) and then with a small fault
//!   injected into each operation it covers, one at a time (each must fail). CPU against
//!   itself alone would be a test that cannot fail; this one shows that the check can.

use crate::assert_close;
use ndarray::{ArrayD, IxDyn};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use v3lab_reference::Backend;

pub use crate::suite_faulty::{all_ops, Faulty, UNPERTURBED_OPS};
pub use crate::suite_model::*;
pub use crate::suite_ops::*;
pub use crate::suite_train::*;

/// A deterministic generator per check (seeded by the check's name).
pub fn rng_for(name: &str) -> StdRng {
    let seed = name.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    StdRng::seed_from_u64(seed)
}

/// Uniform in [-1, 1): never zeros (DESIGN: never test on zeros).
pub fn rand_array(rng: &mut StdRng, shape: &[usize]) -> ArrayD<f32> {
    ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.random_range(-1.0f32..1.0))
}

/// Downloads `got` and holds it to `want` (CPU result) within `tolerance` (relative, see
/// `crate::tolerance`).
pub fn expect_close<B: Backend>(b: &B, what: &str, got: &B::Tensor, want: &ArrayD<f32>, tolerance: f64) -> f64 {
    let got = b.download(got).unwrap_or_else(|e| panic!("{what}: download: {e}"));
    assert_close(&format!("{} {what}", b.name()), &got, &want.mapv(f64::from), tolerance)
}

/// Downloads indices and requires them equal to the CPU's.
pub fn expect_indices<B: Backend>(b: &B, what: &str, got: &B::Indices, want: &ArrayD<i64>) {
    let got = b.download_indices(got).unwrap_or_else(|e| panic!("{what}: download: {e}"));
    assert_eq!(got.shape(), want.shape(), "{} {what}: shape", b.name());
    if let Some((i, (g, w))) = got.iter().zip(want.iter()).enumerate().find(|(_, (g, w))| g != w) {
        panic!("{} {what}: indices differ first at flat index {i}: {g} vs {w} (must be exact)", b.name());
    }
}

/// Uploads a host array to `b`.
pub fn up<B: Backend>(b: &B, a: &ArrayD<f32>) -> B::Tensor {
    b.upload(a.view()).expect("upload")
}
pub fn up_idx<B: Backend>(b: &B, a: &ArrayD<i64>) -> B::Indices {
    b.upload_indices(a.view()).expect("upload indices")
}

/// Runs `check` and requires it to panic (the fault must be caught).
pub fn expect_failure(what: &str, check: impl FnOnce() + std::panic::UnwindSafe) {
    let caught = std::panic::catch_unwind(check);
    assert!(caught.is_err(), "{what}: the check passed although a fault was injected; it cannot catch errors");
}

/// Stamps out the two tests of each check (see the module doc), given the operations whose
/// faults the check must catch (`"op"`, or `"op:i"` for its i-th output only):
/// `conformance_tests! { norm_swiglu: check_norm_swiglu, ["rms_norm_forward", "swiglu_forward"]; ... }`,
/// and `every_op_has_a_check`: each operation of the backend (`suite_faulty::all_ops`) is
/// named by some check, so a new operation cannot go untested.
#[macro_export]
macro_rules! conformance_tests {
    ($($name:ident : $check:path, [$($fault:literal),+ $(,)?];)+) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[test]
                fn cuda() {
                    let Some(b) = v3lab_gpu::cuda_or_skip() else { return };
                    $check(&b);
                    println!("{}: CUDA matches the CPU reference on {}", stringify!($name), b.device_name());
                }

                #[test]
                fn cpu_catches_fault() {
                    $check(&$crate::suite::Faulty::new(None));
                    for fault in [$($fault),+] {
                        let faulty = $crate::suite::Faulty::new(Some(fault));
                        let what = format!("{} with a fault in {fault}", stringify!($name));
                        $crate::suite::expect_failure(&what, move || $check(&faulty));
                    }
                }
            }
        )+

        #[test]
        fn every_op_has_a_check() {
            let checked: Vec<&str> = [$($($fault),+),+].iter().map(|f| f.split(':').next().unwrap_or(f)).collect();
            let unchecked: Vec<&str> = $crate::suite::all_ops()
                .into_iter()
                .filter(|op| !$crate::suite::UNPERTURBED_OPS.contains(op) && !checked.contains(op))
                .collect();
            assert!(unchecked.is_empty(), "no conformance check catches a fault in {unchecked:?}");
        }
    };
}
