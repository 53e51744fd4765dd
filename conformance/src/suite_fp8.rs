//! FP8 checks of the CUDA backend's inherent methods (`fp8_quantize`, `fp8_gemm`) against
//! a host oracle built independently on the reference's E4M3 codec: encoding by exhaustive
//! nearest search over the finite codes (ties to the even code), not by bit tricks.

use ndarray::{Array2, ArrayD, IxDyn};
use v3lab_reference::backend::prelude::*;
use v3lab_reference::fp8::{scale_for, ScaleMode, E4M3};

/// Scaling groups are 128 wide (the paper's N_C).
pub const BLOCK: usize = 128;

/// The E4M3 code nearest to `x` (ties to even), saturating at ±448; NaN → 0x7f.
pub fn e4m3_encode(x: f32) -> u8 {
    let sign = if x.is_sign_negative() { 0x80u8 } else { 0 };
    if x.is_nan() {
        return sign | 0x7f;
    }
    let a = x.abs() as f64;
    let mut best = 0u8;
    for code in 1..=0x7eu8 {
        let (d_new, d_best) =
            ((E4M3.decode(code as u32) as f64 - a).abs(), (E4M3.decode(best as u32) as f64 - a).abs());
        if d_new < d_best || (d_new == d_best && code % 2 == 0) {
            best = code;
        }
    }
    sign | best
}

/// Quantises `x [rows, cols]` in groups of `group_rows × 128` (1 for activation tiles, 128
/// for weight blocks): (codes, scales), as the kernels do.
pub fn quantize(x: &Array2<f32>, group_rows: usize) -> (Array2<u8>, ArrayD<f32>) {
    let (rows, cols) = x.dim();
    let (gr, gc) = (rows.div_ceil(group_rows), cols.div_ceil(BLOCK));
    let mut codes = Array2::<u8>::zeros((rows, cols));
    let mut scales = ArrayD::<f32>::zeros(IxDyn(&[gr, gc]));
    for i in 0..gr {
        for j in 0..gc {
            let (r0, r1) = (i * group_rows, ((i + 1) * group_rows).min(rows));
            let (c0, c1) = (j * BLOCK, ((j + 1) * BLOCK).min(cols));
            let block = x.slice(ndarray::s![r0..r1, c0..c1]);
            // The reference's scale (amax floored, times the f32 reciprocal of 448), which
            // is bit-exact against the public kernel.
            let s = scale_for(block.iter().fold(0.0f32, |m, v| m.max(v.abs())), E4M3, ScaleMode::F32);
            scales[[i, j]] = s;
            for r in r0..r1 {
                for c in c0..c1 {
                    codes[[r, c]] = e4m3_encode(x[[r, c]] / s);
                }
            }
        }
    }
    (codes, scales)
}

/// `a · bᵀ` in f64 from codes and scales (a in 1×128 tiles, b in 128×128 blocks), each
/// 128-wide K block scaled by its two scales.
pub fn gemm(a: &(Array2<u8>, ArrayD<f32>), b: &(Array2<u8>, ArrayD<f32>)) -> ArrayD<f64> {
    let ((ac, asc), (bc, bsc)) = (a, b);
    let (m, k) = ac.dim();
    let n = bc.nrows();
    let dec = |c: u8| E4M3.decode(c as u32) as f64;
    let mut out = ArrayD::<f64>::zeros(IxDyn(&[m, n]));
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0;
            for kb in 0..k.div_ceil(BLOCK) {
                let part: f64 =
                    (kb * BLOCK..((kb + 1) * BLOCK).min(k)).map(|t| dec(ac[[i, t]]) * dec(bc[[j, t]])).sum();
                acc += part * asc[[i, kb]] as f64 * bsc[[j / BLOCK, kb]] as f64;
            }
            out[[i, j]] = acc;
        }
    }
    out
}

/// CUDA: both quantisations bit for bit, the GEMM within its bound.
pub fn check_fp8_cuda(b: &v3lab_gpu::CudaBackend) {
    use crate::suite::{rand_array, rng_for};
    use crate::tolerance::{FP8_BITS, FP8_GEMM_VS_HOST};
    use v3lab_gpu::Fp8Blocks;

    let mut rng = rng_for("fp8");
    let mut quantized = |rows: usize, cols: usize, blocks: Fp8Blocks| {
        // A wide dynamic range (×1e-3..×1e2 per row) and an all-zero row.
        let mut x = rand_array(&mut rng, &[rows, cols]).into_dimensionality::<ndarray::Ix2>().unwrap();
        for (r, mut row) in x.rows_mut().into_iter().enumerate() {
            row *= 10f32.powi((r % 6) as i32 - 3);
            if r == 2 {
                row.fill(0.0);
            }
        }
        let group_rows = if blocks == Fp8Blocks::Tile1x128 { 1 } else { BLOCK };
        let want = quantize(&x, group_rows);
        let q = b.fp8_quantize(&b.upload(x.view().into_dyn()).unwrap(), blocks).unwrap();
        let (bits, scales) = b.fp8_download(&q).unwrap();
        let tag = format!("fp8 {blocks:?} [{rows}, {cols}]");
        if let Some(((r, c), got)) = bits.indexed_iter().find(|&((r, c), g)| *g != want.0[[r, c]]) {
            panic!("{tag}: code {got:#04x} at [{r}, {c}] vs {:#04x} (x = {})", want.0[[r, c]], x[[r, c]]);
        }
        crate::assert_close(&format!("{tag} scales"), &scales, &want.1.mapv(f64::from), FP8_BITS);
        (q, want)
    };
    for (rows, cols) in [(1, 1), (7, 130), (257, 300), (128, 128), (3, 7168)] {
        quantized(rows, cols, Fp8Blocks::Tile1x128);
        quantized(rows, cols, Fp8Blocks::Block128x128);
    }
    for (m, n, k) in [(1, 1, 1), (7, 130, 300), (128, 256, 512), (65, 129, 1000)] {
        let (qa, ha) = quantized(m, k, Fp8Blocks::Tile1x128);
        let (qb, hb) = quantized(n, k, Fp8Blocks::Block128x128);
        let got = b.download(&b.fp8_gemm(&qa, &qb).unwrap()).unwrap();
        crate::assert_close(&format!("fp8 gemm {m}×{n}×{k}"), &got, &gemm(&ha, &hb), FP8_GEMM_VS_HOST);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oracle_round_trips_every_finite_code() {
        for code in (0u8..=0xff).filter(|c| c & 0x7f != 0x7f) {
            let v = E4M3.decode(code as u32);
            assert_eq!(e4m3_encode(v), code, "code {code:#04x} = {v}");
        }
    }

    #[test]
    fn oracle_rounds_ties_to_even_and_saturates() {
        // 1.0 = 0x38, 1.125 = 0x39, 1.25 = 0x3a: 1.0625 ties to 0x38 (even), 1.1875 to 0x3a.
        assert_eq!(e4m3_encode(1.0625), 0x38);
        assert_eq!(e4m3_encode(1.1875), 0x3a);
        assert_eq!(e4m3_encode(1.07), 0x39);
        // Smallest subnormal 2^-9: half of it ties to zero, a bit more rounds up.
        assert_eq!(e4m3_encode(2f32.powi(-10)), 0x00);
        assert_eq!(e4m3_encode(1.01 * 2f32.powi(-10)), 0x01);
        assert_eq!(e4m3_encode(1e6), 0x7e);
        assert_eq!(e4m3_encode(-1e6), 0xfe);
        assert_eq!(e4m3_encode(-0.0), 0x80);
    }

    #[test]
    fn oracle_quantization_bounds_the_error() {
        // Each dequantised value is within half a step (2^-4 relative) of the input.
        let x = Array2::from_shape_fn((5, 300), |(r, c)| ((r * 300 + c) as f32 * 0.37).sin() * (r + 1) as f32);
        let (codes, scales) = quantize(&x, 1);
        for ((r, c), &v) in x.indexed_iter() {
            let back = E4M3.decode(codes[[r, c]] as u32) * scales[[r, c / BLOCK]];
            assert!((back - v).abs() <= v.abs() / 16.0 + scales[[r, c / BLOCK]] * 2f32.powi(-9), "{v} → {back}");
        }
    }

    #[test]
    fn oracle_quantizes_as_the_reference() {
        // The reference's quantize is bit-exact against the public kernels (goldens); the
        // oracle, with its own encoder, must give the same codes and scales, tiles and blocks.
        use v3lab_reference::fp8::{quantize as reference, Granularity};
        let x = Array2::from_shape_fn((130, 300), |(r, c)| ((r * 300 + c) as f32 * 0.37).sin() * (r % 7 + 1) as f32);
        for (group_rows, granularity) in [(1, Granularity::Tile(BLOCK)), (BLOCK, Granularity::Block(BLOCK))] {
            let (codes, scales) = quantize(&x, group_rows);
            let want = reference(x.view(), E4M3, granularity, ScaleMode::F32);
            assert_eq!(codes, want.bytes(), "codes, {group_rows}×128 groups");
            assert_eq!(scales.into_dimensionality().unwrap(), want.scales, "scales, {group_rows}×128 groups");
        }
    }
}
