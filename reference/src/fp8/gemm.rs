//! The scaled FP8 GEMM, `C = A · Bᵀ` with fine-grained scales (DeepSeek-V3 §3.3.2, Figure
//! 7a: "scaling factors are applied per group along the inner dimension K"; the public
//! code's `fp8_gemm` in `inference/kernel.py`).
//!
//! Along K the product is cut into segments on which both operands' scales are constant
//! (128 long when either side has 1×128 tiles or 128×128 blocks). On each segment the
//! [`Accumulator`] sums the exact products of the FP8 values; the segment's result is then
//! scaled and added into the f32 output as the public kernel does,
//! `acc += dot(a, b) * a_s * b_s`, i.e. `fl(acc + fl(fl(dot · a_s) · b_s))`.
//!
//! So with a K-varying scale every preset restarts at each scale boundary: fine-grained
//! scaling forces promotion at least that often, which is why the paper pairs 1×128 tiles
//! with N_C = 128. With scales constant along K (per tensor, per row) there is one segment
//! and a preset without promotion really accumulates all of K inside the tensor core.

use super::accumulate::Accumulator;
use super::scaling::Quantized;
use crate::error::{Error, Result};
use ndarray::Array2;
use rayon::prelude::*;

/// `C [M, N] = A [M, K] · B [N, K]ᵀ` with `a`'s and `b`'s group scales, accumulated as
/// `accumulator` says. Errors when the inner dimensions differ.
pub fn gemm(a: &Quantized, b: &Quantized, accumulator: &Accumulator) -> Result<Array2<f32>> {
    let (m, k) = a.codes.dim();
    let (n, kb) = b.codes.dim();
    if k != kb {
        return Err(Error::shape("fp8 gemm", format!("a is [{m}, {k}] but b is [{n}, {kb}]: inner dimensions differ")));
    }
    let segments = segments(k, a.block.1, b.block.1);
    let a_values = a.values();
    let b_values = b.values();
    let (ar, _) = a.block;
    let (br, _) = b.block;
    let mut c = Array2::<f32>::zeros((m, n));
    c.axis_iter_mut(ndarray::Axis(0)).into_par_iter().enumerate().for_each(|(i, mut row)| {
        let a_row = a_values.row(i);
        let a_row = a_row.as_slice().expect("standard layout");
        for (j, out) in row.iter_mut().enumerate() {
            let b_row = b_values.row(j);
            let b_row = b_row.as_slice().expect("standard layout");
            let mut acc = 0.0f32;
            for (s, &(k0, k1)) in segments.iter().enumerate() {
                let partial = accumulator.dot(&a_row[k0..k1], &b_row[k0..k1]);
                let sa = a.scales[[i / ar, k0 / a.block.1]];
                let sb = b.scales[[j / br, k0 / b.block.1]];
                let scaled = partial * sa * sb;
                acc = if s == 0 { scaled } else { acc + scaled };
            }
            *out = acc;
        }
    });
    Ok(c)
}

/// `[k0, k1)` ranges of K on which both operands' scales are constant.
fn segments(k: usize, a_cols: usize, b_cols: usize) -> Vec<(usize, usize)> {
    let mut cuts: Vec<usize> = (0..k).filter(|&i| i % a_cols == 0 || i % b_cols == 0).collect();
    cuts.push(k);
    if k == 0 {
        return vec![];
    }
    cuts.windows(2).map(|w| (w[0], w[1])).collect()
}

/// C = A · Bᵀ of plain f32 matrices accumulated in f64, rounded once (the reference the
/// study and tests compare against: what an infinitely precise GEMM of the same inputs
/// gives).
pub fn matmul_nt_f64(a: &Array2<f32>, b: &Array2<f32>) -> Array2<f64> {
    let (m, k) = a.dim();
    let n = b.nrows();
    assert_eq!(k, b.ncols());
    Array2::from_shape_fn((m, n), |(i, j)| (0..k).map(|t| a[[i, t]] as f64 * b[[j, t]] as f64).sum())
}

#[cfg(test)]
mod tests {
    use super::segments;

    #[test]
    fn segments_follow_both_operands() {
        assert_eq!(segments(300, 128, 128), vec![(0, 128), (128, 256), (256, 300)]);
        assert_eq!(segments(300, 300, 128), vec![(0, 128), (128, 256), (256, 300)]);
        assert_eq!(segments(300, 300, 300), vec![(0, 300)]);
        assert_eq!(segments(256, 64, 128), vec![(0, 64), (64, 128), (128, 192), (192, 256)]);
    }
}
