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
//! [`Scaling`] names the two cases a user asks for: one scale per operand (`torch._scaled_mm`
//! with scalar scales: no segments) or the paper's 1×128 / 128×128 groups.

use super::accumulate::Accumulator;
use super::codec::Minifloat;
use super::scaling::{Granularity, Quantized, BLOCK};
use crate::error::{Error, Result};
use ndarray::Array2;
use rayon::prelude::*;

/// How the operands of a scaled GEMM are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scaling {
    /// One scale per operand, so all of K is one segment: what `torch._scaled_mm` computes
    /// with scalar scales, and the only way to ask for the hardware's unpromoted path.
    Tensor,
    /// DeepSeek-V3's fine-grained scaling: `a` in 1×128 tiles, `b` in 128×128 blocks, so K
    /// is cut every 128 (the public `fp8_gemm`).
    Block,
}

impl Scaling {
    pub const NAMES: [&'static str; 2] = ["tensor", "block"];

    pub fn parse(name: &str) -> Option<Scaling> {
        match name {
            "tensor" => Some(Scaling::Tensor),
            "block" => Some(Scaling::Block),
            _ => None,
        }
    }

    /// The groups of `a` [M, K] and of `b` [N, K].
    pub fn granularities(self) -> (Granularity, Granularity) {
        match self {
            Scaling::Tensor => (Granularity::Tensor, Granularity::Tensor),
            Scaling::Block => (Granularity::Tile(BLOCK), Granularity::Block(BLOCK)),
        }
    }

    /// The shapes of the scale tensors of `a` [M, K] and `b` [N, K]: `[1, 1]` each, or
    /// `[M, ⌈K/128⌉]` and `[⌈N/128⌉, ⌈K/128⌉]`.
    pub fn scale_shapes(self, m: usize, n: usize, k: usize) -> ((usize, usize), (usize, usize)) {
        let (ga, gb) = self.granularities();
        let groups = |g: Granularity, rows: usize| {
            let (br, bc) = g.block_shape(rows, k);
            (rows.div_ceil(br), k.div_ceil(bc))
        };
        (groups(ga, m), groups(gb, n))
    }

    /// Operands from their codes and scales (shapes as [`Scaling::scale_shapes`] says).
    pub fn operands(
        self,
        format: Minifloat,
        (a_codes, a_scales): (Array2<u16>, Array2<f32>),
        (b_codes, b_scales): (Array2<u16>, Array2<f32>),
    ) -> Result<(Quantized, Quantized)> {
        let (ga, gb) = self.granularities();
        let ((m, k), n) = (a_codes.dim(), b_codes.nrows());
        let (sa, sb) = self.scale_shapes(m, n, k);
        for (name, want, got) in [("a_scale", sa, a_scales.dim()), ("b_scale", sb, b_scales.dim())] {
            if want != got {
                return Err(Error::shape(
                    "fp8 gemm",
                    format!("{name} is {got:?}, but {self:?} scaling of a [{m}, {k}], b [{n}, {k}] wants {want:?}"),
                ));
            }
        }
        let a = Quantized { format, block: ga.block_shape(m, k), codes: a_codes, scales: a_scales };
        let b = Quantized { format, block: gb.block_shape(n, k), codes: b_codes, scales: b_scales };
        Ok((a, b))
    }
}

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
    use super::*;
    use crate::fp8::{Overflow, E4M3};

    #[test]
    fn segments_follow_both_operands() {
        assert_eq!(segments(300, 128, 128), vec![(0, 128), (128, 256), (256, 300)]);
        assert_eq!(segments(300, 300, 128), vec![(0, 128), (128, 256), (256, 300)]);
        assert_eq!(segments(300, 300, 300), vec![(0, 300)]);
        assert_eq!(segments(256, 64, 128), vec![(0, 64), (64, 128), (128, 192), (192, 256)]);
    }

    #[test]
    fn tensor_scaling_is_one_segment_and_block_scaling_restarts_every_128() {
        // 256 first, then 255 products of 2^-6: in one H100 tensor-core run each small term
        // lies below the quantum 2^(8 − 13) of the running sum and truncates away, so the
        // sum stays 256; cut at 128, the second segment starts from zero and keeps its
        // 128 · 2^-6 = 2. The exact sum is 256 + 255/64.
        let k = 256;
        let code = |x: f32| E4M3.encode(x, Overflow::Saturate) as u16;
        let a = Array2::from_shape_fn((1, k), |(_, i)| code(if i == 0 { 256.0 } else { 2f32.powi(-6) }));
        let b = Array2::from_elem((1, k), code(1.0));
        let run = |scaling: Scaling| {
            let (sa, sb) = scaling.scale_shapes(1, 1, k);
            let (qa, qb) =
                scaling.operands(E4M3, (a.clone(), Array2::ones(sa)), (b.clone(), Array2::ones(sb))).unwrap();
            gemm(&qa, &qb, &Accumulator::H100).unwrap()[[0, 0]]
        };
        assert_eq!(run(Scaling::Tensor), 256.0);
        assert_eq!(run(Scaling::Block), 258.0);
        assert_eq!(Scaling::Tensor.scale_shapes(4, 8, 300), ((1, 1), (1, 1)));
        assert_eq!(Scaling::Block.scale_shapes(4, 300, 300), ((4, 3), (3, 3)));
        let wrong = Scaling::Tensor.operands(E4M3, (a.clone(), Array2::ones((1, 2))), (b, Array2::ones((1, 1))));
        assert!(wrong.unwrap_err().to_string().contains("a_scale"));
    }
}
