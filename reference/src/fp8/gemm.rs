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
use crate::backend::cpu::product::product;
use crate::error::{Error, Result};
use ndarray::{s, Array2, Axis};
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
///
/// Where the accumulator adds exactly between promotions (`exact`, or any model that keeps
/// every bit), the partials come from f64 matrix products: the same bits as
/// [`gemm_simulated`], at BLAS speed. When the operands' values make every partial sum exact
/// in f64 (E4M3 always does) that is immediate; otherwise (E5M6's 36 binades) each f64
/// partial carries an error bound, and the rare output whose rounding to f32 the bound
/// leaves undecided is summed exactly on its own. Every other accumulator runs the
/// bit-level simulation.
pub fn gemm(a: &Quantized, b: &Quantized, accumulator: &Accumulator) -> Result<Array2<f32>> {
    check_inner(a, b)?;
    let segments = segments(a.codes.ncols(), a.block.1, b.block.1);
    let longest = segments.iter().map(|&(k0, k1)| k1 - k0).max().unwrap_or(0);
    let chunk = accumulator.promote_every.map_or(longest, |nc| nc.clamp(1, longest.max(1)));
    if accumulator.adds_exactly() {
        // The formats' whole ranges decide it for E4M3 without reading a code; only wider
        // formats (E5M6) look at the codes actually present.
        let exact_in_f64 = sums_exact_in_f64(&format_span(a.format), &format_span(b.format), chunk)
            || sums_exact_in_f64(&code_span(a), &code_span(b), chunk);
        Ok(exact_partials(a, b, &segments, accumulator.promote_every, exact_in_f64))
    } else {
        Ok(simulated(a, b, &a.values(), &b.values(), &segments, accumulator))
    }
}

/// [`gemm`] always through the bit-level simulation of `accumulator` (what the fast path
/// is tested against, and what its speed is compared with).
pub fn gemm_simulated(a: &Quantized, b: &Quantized, accumulator: &Accumulator) -> Result<Array2<f32>> {
    let (a_values, b_values) = operand_values(a, b)?;
    let segments = segments(a.codes.ncols(), a.block.1, b.block.1);
    Ok(simulated(a, b, &a_values, &b_values, &segments, accumulator))
}

/// An error unless the operands' inner dimensions agree.
fn check_inner(a: &Quantized, b: &Quantized) -> Result<()> {
    let ((m, k), (n, kb)) = (a.codes.dim(), b.codes.dim());
    if k != kb {
        return Err(Error::shape("fp8 gemm", format!("a is [{m}, {k}] but b is [{n}, {kb}]: inner dimensions differ")));
    }
    Ok(())
}

/// The decoded values of both operands, once their inner dimensions agree.
fn operand_values(a: &Quantized, b: &Quantized) -> Result<(Array2<f32>, Array2<f32>)> {
    check_inner(a, b)?;
    Ok((a.values(), b.values()))
}

/// The largest exponent floor(log2 |v|) and the smallest exponent of a lowest set bit over
/// the non-zero values of `q` (None when all are zero), read off the distinct codes present
/// (decoded FP8 values are normal f32s).
fn code_span(q: &Quantized) -> Option<(i32, i32)> {
    let mut present = vec![false; 1 << q.format.bits()];
    for &c in &q.codes {
        present[c as usize] = true;
    }
    let values = present.iter().enumerate().filter(|(_, &p)| p).map(|(c, _)| q.format.decode(c as u32));
    values.filter(|v| *v != 0.0).fold(None, |span, v| {
        let bits = v.to_bits();
        let exp = ((bits >> 23) & 0xff) as i32 - 127;
        let lsb = exp - 23 + ((bits & 0x7f_ffff) | 0x80_0000).trailing_zeros() as i32;
        Some(span.map_or((exp, lsb), |(e, l): (i32, i32)| (e.max(exp), l.min(lsb))))
    })
}

/// [`code_span`] of every finite non-zero value `format` holds: a bound on any tensor's.
fn format_span(format: Minifloat) -> Option<(i32, i32)> {
    let exp = |v: f32| ((v.to_bits() >> 23) & 0xff) as i32 - 127;
    Some((exp(format.max_finite()), exp(format.min_subnormal())))
}

/// Whether every sum of up to `len` products `a[i][k] · b[j][k]` is exact in f64: each
/// product is a multiple of 2^(lsb_a + lsb_b) below 2^(e_a + e_b + 2), so a sum of `len` of
/// them needs at most (e_a + e_b + 2 + ⌈log2 len⌉) − (lsb_a + lsb_b) bits, in any order.
/// E4M3 needs 36 + ⌈log2 len⌉ bits at worst, so this always holds for it below K = 2^17.
fn sums_exact_in_f64(a: &Option<(i32, i32)>, b: &Option<(i32, i32)>, len: usize) -> bool {
    match (*a, *b) {
        (Some((ea, la)), Some((eb, lb))) => {
            let growth = usize::BITS - len.max(1).saturating_sub(1).leading_zeros();
            ea + eb + 2 + growth as i32 - (la + lb) <= f64::MANTISSA_DIGITS as i32
        }
        _ => true, // an all-zero operand: every product is zero
    }
}

/// The fast path: each promotion chunk of each segment summed by an f64 product (the gemm
/// crate, threaded), rounded once to f32 (as the simulation reads a partial out), the
/// chunks added in f32, then scaled and added into the output exactly as [`simulated`]
/// does. `exact_in_f64`: every chunk sum is exact in f64 (else [`correctly_rounded`]
/// checks each one).
fn exact_partials(
    a: &Quantized,
    b: &Quantized,
    segments: &[(usize, usize)],
    promote_every: Option<usize>,
    exact_in_f64: bool,
) -> Array2<f32> {
    let (m, n) = (a.codes.nrows(), b.codes.nrows());
    let (a64, b64) = (a.values_f64(), b.values_f64());
    let (ar, br) = (a.block.0, b.block.0);
    let mut c = Array2::<f32>::zeros((m, n));
    // The running f32 sum of a segment's chunks, only kept when a segment has several
    // (else its rows are empty: no allocation).
    let mut partial = Array2::<f32>::zeros((m, 0));
    for (s, &(k0, k1)) in segments.iter().enumerate() {
        let step = promote_every.unwrap_or(k1 - k0).max(1);
        let chunks: Vec<usize> = (k0..k1).step_by(step).collect();
        if chunks.len() > 1 && partial.ncols() != n {
            partial = Array2::zeros((m, n));
        }
        let b_scales: Vec<f32> = (0..n).map(|j| b.scales[[j / br, k0 / b.block.1]]).collect();
        for (t, &c0) in chunks.iter().enumerate() {
            let c1 = (c0 + step).min(k1);
            let (a_chunk, b_chunk) = (a64.slice(s![.., c0..c1]), b64.slice(s![.., c0..c1]));
            let sums = product(a_chunk, b_chunk.t());
            let bounds = (!exact_in_f64).then(|| (row_norms(a_chunk), row_norms(b_chunk), dot_error_factor(c1 - c0)));
            let last = t + 1 == chunks.len();
            // One pass per chunk: round each sum to f32, add it to the segment's running sum,
            // and after the last chunk scale the segment and add it into the output.
            let rows = c.axis_iter_mut(Axis(0)).into_par_iter().zip(sums.axis_iter(Axis(0)));
            let with_partial = rows.zip(partial.axis_iter_mut(Axis(0)));
            with_partial.enumerate().for_each(|(i, ((mut c_row, sums_row), mut p_row))| {
                let sa = a.scales[[i / ar, k0 / a.block.1]];
                if chunks.len() == 1 && bounds.is_none() {
                    // The common case (E4M3, a chunk per segment), kept simple enough to vectorise.
                    for ((out, &x), &sb) in c_row.iter_mut().zip(sums_row).zip(&b_scales) {
                        let scaled = x as f32 * sa * sb;
                        *out = if s == 0 { scaled } else { *out + scaled };
                    }
                    return;
                }
                for (j, ((out, &x), &sb)) in c_row.iter_mut().zip(sums_row).zip(&b_scales).enumerate() {
                    let chunk = match &bounds {
                        None => x as f32,
                        Some((a_norms, b_norms, gamma)) => correctly_rounded(x, gamma * a_norms[i] * b_norms[j])
                            .unwrap_or_else(|| exact_chunk(a, b, i, j, c0..c1)),
                    };
                    let segment = if chunks.len() == 1 {
                        chunk
                    } else {
                        let p = &mut p_row[j];
                        *p = if t == 0 { chunk } else { *p + chunk };
                        *p
                    };
                    if last {
                        let scaled = segment * sa * sb;
                        *out = if s == 0 { scaled } else { *out + scaled };
                    }
                }
            });
        }
    }
    c
}

/// The Euclidean norm of each row, rounded up far enough to bound the true norm.
fn row_norms(m: ndarray::ArrayView2<'_, f64>) -> Vec<f64> {
    m.rows().into_iter().map(|r| r.iter().map(|v| v * v).sum::<f64>().sqrt() * (1.0 + 2f64.powi(-40))).collect()
}

/// γ_L = L·u / (1 − L·u), u = 2⁻⁵³: an f64 dot product of length L computed in any order
/// (fused or not) is within γ_L · Σ|aₖbₖ| of the exact sum (Higham, *Accuracy and Stability
/// of Numerical Algorithms*, §3.1), and Σ|aₖbₖ| ≤ ‖a‖₂‖b‖₂ (Cauchy–Schwarz).
fn dot_error_factor(len: usize) -> f64 {
    let lu = len as f64 * f64::EPSILON / 2.0;
    lu / (1.0 - lu) * (1.0 + 2f64.powi(-40))
}

/// `sum` rounded to f32 when every value within `bound` of it rounds to the same f32 (so the
/// exact sum, which lies there, does too); `None` when a rounding boundary is that close.
fn correctly_rounded(sum: f64, bound: f64) -> Option<f32> {
    let x = sum as f32;
    let (down, up) = (x.next_down(), x.next_up());
    if !(down.is_finite() && up.is_finite()) {
        return None;
    }
    // Midpoints of adjacent f32s are exact in f64; near them the differences are exact
    // (Sterbenz), far from them their rounding cannot matter.
    let (lo, hi) = ((x as f64 + down as f64) / 2.0, (x as f64 + up as f64) / 2.0);
    (sum - lo > bound && hi - sum > bound).then_some(x)
}

/// One chunk of one output summed exactly and rounded once to f32 (the undecided case of
/// [`correctly_rounded`]).
fn exact_chunk(a: &Quantized, b: &Quantized, i: usize, j: usize, ks: std::ops::Range<usize>) -> f32 {
    let values = |q: &Quantized, row: usize| -> Vec<f32> {
        q.codes.slice(s![row, ks.clone()]).iter().map(|&c| q.format.decode(c as u32)).collect()
    };
    Accumulator::EXACT.dot(&values(a, i), &values(b, j))
}

/// The bit-level path: every output's segments through `accumulator.dot`.
fn simulated(
    a: &Quantized,
    b: &Quantized,
    a_values: &Array2<f32>,
    b_values: &Array2<f32>,
    segments: &[(usize, usize)],
    accumulator: &Accumulator,
) -> Array2<f32> {
    let (m, n) = (a_values.nrows(), b_values.nrows());
    let (ar, br) = (a.block.0, b.block.0);
    let mut c = Array2::<f32>::zeros((m, n));
    c.axis_iter_mut(Axis(0)).into_par_iter().enumerate().for_each(|(i, mut row)| {
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
    c
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
    use crate::fp8::{Minifloat, Overflow, E4M3};

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

    /// Random codes of `format` over its whole finite range.
    fn random_codes(format: Minifloat, rows: usize, cols: usize, seed: u64) -> Array2<u16> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Array2::from_shape_fn((rows, cols), |_| loop {
            let code = rng.random_range(0..1u32 << format.bits());
            if format.decode(code).is_finite() {
                break code as u16;
            }
        })
    }

    #[test]
    fn the_fast_path_gives_the_simulations_bits() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (m, n, k) = (37, 45, 300);
        for (a_format, b_format) in [(E4M3, E4M3), (crate::fp8::E5M6, E4M3), (crate::fp8::E5M2, crate::fp8::E5M2)] {
            for scaling in [Scaling::Tensor, Scaling::Block] {
                let (sa, sb) = scaling.scale_shapes(m, n, k);
                let scale = |shape: (usize, usize), rng: &mut rand_chacha::ChaCha8Rng| {
                    Array2::from_shape_fn(shape, |_| 2f32.powf(rng.random_range(-12.0..4.0)))
                };
                let a = Quantized {
                    format: a_format,
                    block: scaling.granularities().0.block_shape(m, k),
                    codes: random_codes(a_format, m, k, 1),
                    scales: scale(sa, &mut rng),
                };
                let b = Quantized {
                    format: b_format,
                    block: scaling.granularities().1.block_shape(n, k),
                    codes: random_codes(b_format, n, k, 2),
                    scales: scale(sb, &mut rng),
                };
                for acc in [Accumulator::EXACT, Accumulator { promote_every: Some(32), ..Accumulator::EXACT }] {
                    let fast = gemm(&a, &b, &acc).unwrap();
                    let simulated = gemm_simulated(&a, &b, &acc).unwrap();
                    let differ = fast.iter().zip(&simulated).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
                    assert_eq!(differ, 0, "{a_format:?} × {b_format:?}, {scaling:?}, {acc:?}: {differ} outputs differ");
                }
            }
        }
    }

    #[test]
    fn an_f64_sum_that_lands_on_a_tie_is_summed_exactly() {
        // 2^30 + 2^6 + 2^-32 in E5M2 (2^15·2^15 + 2^3·2^3 + 2^-16·2^-16): f64 keeps 2^30 … 2^-22,
        // drops the 2^-32 and lands exactly halfway between the f32s 2^30 and 2^30 + 2^7,
        // where ties-to-even picks 2^30; the exact sum lies above the midpoint.
        let e5m2 = crate::fp8::E5M2;
        let code = |x: f32| e5m2.encode(x, Overflow::Saturate) as u16;
        let a = Array2::from_shape_vec((1, 3), vec![code(32768.0), code(8.0), code(2f32.powi(-16))]).unwrap();
        let (qa, qb) =
            Scaling::Tensor.operands(e5m2, (a.clone(), Array2::ones((1, 1))), (a, Array2::ones((1, 1)))).unwrap();
        let want = 2f32.powi(30) + 128.0;
        assert_eq!(gemm_simulated(&qa, &qb, &Accumulator::EXACT).unwrap()[[0, 0]], want);
        assert_eq!(gemm(&qa, &qb, &Accumulator::EXACT).unwrap()[[0, 0]], want);
        assert_eq!(correctly_rounded(2f64.powi(30) + 64.0, 1e-9), None, "a tie is undecided");
        assert_eq!(correctly_rounded(2f64.powi(30) + 65.0, 0.5), Some(want));
    }

    #[test]
    fn f64_sums_are_exact_for_e4m3_but_not_for_the_whole_e5m2_range() {
        let span = |format: Minifloat, k: usize| {
            let codes = random_codes(format, 4, k, 3);
            code_span(&Quantized { format, block: (1, k), codes, scales: Array2::ones((4, 1)) })
        };
        // E4M3 spans 2^-9 … 448: 36 bits per product, 12 more for K = 4096.
        assert!(sums_exact_in_f64(&span(E4M3, 4096), &span(E4M3, 4096), 4096));
        // E5M2 spans 2^-16 … 57,344: 64 bits per product, more than f64 holds.
        let e5m2 = span(crate::fp8::E5M2, 512);
        assert!(!sums_exact_in_f64(&e5m2, &e5m2, 512));
        assert!(sums_exact_in_f64(&None, &e5m2, 2));
        // The format-wide shortcut is the span of a tensor holding every finite code.
        for format in [E4M3, crate::fp8::E5M2, crate::fp8::E5M6] {
            let every: Vec<u16> = (0..1u16 << format.bits()).filter(|&c| format.decode(c as u32).is_finite()).collect();
            let codes = Array2::from_shape_vec((1, every.len()), every).unwrap();
            let all = code_span(&Quantized { format, block: (1, codes.ncols()), codes, scales: Array2::ones((1, 1)) });
            assert_eq!(format_span(format), all, "{format:?}");
        }
        assert!(sums_exact_in_f64(&format_span(E4M3), &format_span(E4M3), 128));
        assert!(!sums_exact_in_f64(&format_span(crate::fp8::E5M6), &format_span(E4M3), 128));
    }
}
