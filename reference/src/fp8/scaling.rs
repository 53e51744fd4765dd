//! Fine-grained quantization (DeepSeek-V3 §3.3.2 "Improved Precision from Quantization and
//! Multiplication", Figure 7a): one scale per group of elements, from that group's max-abs,
//! computed online (no delayed scaling).
//!
//! Granularities: per tensor (the usual FP8 recipe the paper improves on), per row, 1×128
//! tiles (activations: per token per 128 channels), 128×1 tiles (the same activations
//! re-tiled for Wgrad, §3.3.3) and 128×128 blocks (weights: per 128 input channels per 128
//! output channels). Scales are f32 or powers of two rounded up ("ue8m0", §3.3.3: "round
//! scaled, i.e., integral power of 2").
//!
//! The scale rule is the public code's `act_quant` (`inference/kernel.py`):
//! `s = max(amax, 1e-4) / 448`, `y = cast(x / s)`. The compiled Triton kernel folds the
//! division by the constant into a product with its f32 reciprocal, `amax × (1/448)`,
//! which differs from an IEEE division by one ulp in about half of the tiles; [`scale_for`]
//! reproduces the kernel (bit-exact against the goldens), not the source text.

use super::codec::{Minifloat, SaturatingEncoder, E4M3};
use ndarray::{s, Array2, ArrayView2, Axis, CowArray, Ix2};
use rayon::prelude::*;

/// The public kernel's floor on the max-abs of a group, so that an all-zero tile gets a
/// finite, non-zero scale (`tl.maximum(amax, 1e-4)`).
pub const MIN_AMAX: f32 = 1e-4;

/// The public code's block edge: activations in 1×128 tiles, weights in 128×128 blocks.
pub const BLOCK: usize = 128;

/// Which elements share one scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// One scale for the whole tensor.
    Tensor,
    /// One scale per row.
    Row,
    /// 1×n tiles: per row, per n columns (activations along K, n = 128 in the paper).
    Tile(usize),
    /// n×1 tiles: per column, per n rows (activations re-tiled for Wgrad, §3.3.3).
    ColumnTile(usize),
    /// n×n blocks (weights, n = 128 in the paper).
    Block(usize),
}

impl Granularity {
    /// The (rows, cols) of one group for a `[rows, cols]` tensor (edge groups may be smaller).
    pub fn block_shape(&self, rows: usize, cols: usize) -> (usize, usize) {
        match *self {
            Granularity::Tensor => (rows.max(1), cols.max(1)),
            Granularity::Row => (1, cols.max(1)),
            Granularity::Tile(n) => (1, n),
            Granularity::ColumnTile(n) => (n, 1),
            Granularity::Block(n) => (n, n),
        }
    }

    pub fn name(&self) -> String {
        match *self {
            Granularity::Tensor => "per-tensor".into(),
            Granularity::Row => "per-row".into(),
            Granularity::Tile(n) => format!("1x{n} tiles"),
            Granularity::ColumnTile(n) => format!("{n}x1 tiles"),
            Granularity::Block(n) => format!("{n}x{n} blocks"),
        }
    }
}

/// How a scale is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleMode {
    /// Any f32 (`act_quant(scale_fmt=None)`).
    F32,
    /// The f32 scale rounded up to a power of two (`scale_fmt="ue8m0"`, §3.3.3); rounding
    /// up keeps |x/s| within the format's range.
    PowerOfTwo,
}

/// The scale of a group with max-abs `amax`, as the public kernel computes it.
///
/// `max(amax, 1e-4) × (1/fmax)` in f32 (see the module docs for why a product), then for
/// [`ScaleMode::PowerOfTwo`] the smallest power of two ≥ that value (the kernel's
/// `exp2(ceil(log2(s)))`, done here on the bits so that no approximate log can misround).
pub fn scale_for(amax: f32, format: Minifloat, mode: ScaleMode) -> f32 {
    let reciprocal = 1.0f32 / format.max_finite();
    let s = amax.max(MIN_AMAX) * reciprocal;
    match mode {
        ScaleMode::F32 => s,
        ScaleMode::PowerOfTwo => next_power_of_two(s),
    }
}

/// The smallest power of two ≥ `s` (s positive, finite, normal).
fn next_power_of_two(s: f32) -> f32 {
    let bits = s.to_bits();
    if bits & 0x7f_ffff == 0 {
        s
    } else {
        f32::from_bits((bits & 0x7f80_0000) + 0x80_0000)
    }
}

/// A tensor quantized group by group: `x ≈ decode(codes) × scale of its group`.
#[derive(Debug, Clone)]
pub struct Quantized {
    pub format: Minifloat,
    /// Bit patterns of `x / s` in `format` (u16 so that E5M6 and BF16 fit too).
    pub codes: Array2<u16>,
    /// `[ceil(rows / br), ceil(cols / bc)]`, one per group.
    pub scales: Array2<f32>,
    /// (br, bc): the group shape.
    pub block: (usize, usize),
}

impl Quantized {
    /// The decoded codes, without their scales (what the tensor core multiplies).
    pub fn values(&self) -> Array2<f32> {
        let table = DecodeTable::new(self.format);
        let mut out = Array2::zeros(self.codes.dim());
        ndarray::Zip::from(&mut out).and(&self.codes).par_for_each(|v, &c| *v = table.decode(c));
        out
    }

    /// The decoded codes widened to f64 (what the exact fast path of `gemm` multiplies).
    pub fn values_f64(&self) -> Array2<f64> {
        let table: Vec<f64> = DecodeTable::new(self.format).0.into_iter().map(f64::from).collect();
        let mut out = Array2::zeros(self.codes.dim());
        ndarray::Zip::from(&mut out).and(&self.codes).par_for_each(|v, &c| *v = table[c as usize]);
        out
    }

    /// `decode(code) × scale` in f32, the public `weight_dequant` (`y = x * s`).
    pub fn dequantize(&self) -> Array2<f32> {
        let table = DecodeTable::new(self.format);
        let (br, bc) = self.block;
        Array2::from_shape_fn(self.codes.dim(), |(i, j)| {
            table.decode(self.codes[[i, j]]) * self.scales[[i / br, j / bc]]
        })
    }

    /// The codes as bytes, for 8-bit formats.
    pub fn bytes(&self) -> Array2<u8> {
        assert!(self.format.bits() <= 8, "codes of a {}-bit format do not fit a byte", self.format.bits());
        self.codes.mapv(|c| c as u8)
    }

    pub fn rows(&self) -> usize {
        self.codes.nrows()
    }

    pub fn cols(&self) -> usize {
        self.codes.ncols()
    }
}

/// Decoding by table for formats up to 16 bits.
struct DecodeTable(Vec<f32>);

impl DecodeTable {
    fn new(format: Minifloat) -> Self {
        DecodeTable((0..1u32 << format.bits()).map(|b| format.decode(b)).collect())
    }
    fn decode(&self, code: u16) -> f32 {
        self.0[code as usize]
    }
}

/// Quantizes `x` group by group (§3.3.2): per group `s = scale_for(amax)`, then each
/// element `x / s` (IEEE f32 division, as the kernel's `y = x / s`) is rounded to nearest
/// even in `format`, saturating (a scale from the group's own max-abs keeps |x/s| at most
/// a rounding step above the max, which saturation clamps back).
pub fn quantize(x: ArrayView2<'_, f32>, format: Minifloat, granularity: Granularity, mode: ScaleMode) -> Quantized {
    // Row-major rows (a transposed view, as Wgrad quantizes, is copied once), scaled and
    // encoded in parallel.
    let x = standard_layout(x);
    let (rows, cols) = x.dim();
    let (br, bc) = granularity.block_shape(rows, cols);
    let (gr, gc) = (rows.div_ceil(br), cols.div_ceil(bc));
    let mut scales = Array2::<f32>::zeros((gr, gc));
    let mut codes = Array2::<u16>::zeros((rows, cols));
    if rows == 0 || cols == 0 {
        return Quantized { format, codes, scales, block: (br, bc) };
    }
    // Each row's max-abs per column group, in parallel; a group's is the max over its rows.
    // Rows per parallel task: enough values that a task outweighs handing it out.
    let rows_per_task = (1usize << 14).div_ceil(cols);
    let mut row_amax = Array2::<f32>::zeros((rows, gc));
    let row_tasks = row_amax.axis_iter_mut(Axis(0)).into_par_iter().with_min_len(rows_per_task);
    row_tasks.zip(x.axis_iter(Axis(0))).for_each(|(mut amax, x_row)| {
        let x_row = x_row.to_slice().expect("standard layout");
        for (m, xc) in amax.iter_mut().zip(x_row.chunks(bc)) {
            *m = max_abs(xc);
        }
    });
    for ((g, h), s) in scales.indexed_iter_mut() {
        let group = row_amax.slice(s![g * br..((g + 1) * br).min(rows), h]);
        *s = scale_for(group.iter().fold(0.0f32, |m, &v| m.max(v)), format, mode);
    }
    let encoder = SaturatingEncoder::new(format);
    let code_tasks = codes.axis_iter_mut(Axis(0)).into_par_iter().with_min_len(rows_per_task);
    code_tasks.zip(x.axis_iter(Axis(0))).enumerate().for_each(|(i, (mut code_row, x_row))| {
        let (x_row, code_row) = (x_row.to_slice().expect("standard layout"), code_row.as_slice_mut().expect("fresh"));
        let scales = scales.row(i / br);
        encode_row(&encoder, x_row, code_row, scales.as_slice().expect("standard layout"), bc);
    });
    Quantized { format, codes, scales, block: (br, bc) }
}

/// `codes[j] = encode(x[j] / scales[j / group])`: with AVX2 where the CPU has it (the
/// same instructions' results, eight lanes at a time), else baseline x86-64 or any target.
fn encode_row(encoder: &SaturatingEncoder, x: &[f32], codes: &mut [u16], scales: &[f32], group: usize) {
    #[inline(always)]
    fn body(encoder: &SaturatingEncoder, x: &[f32], codes: &mut [u16], scales: &[f32], group: usize) {
        for ((xc, cc), &s) in x.chunks(group).zip(codes.chunks_mut(group)).zip(scales) {
            for (&v, c) in xc.iter().zip(cc) {
                *c = encoder.encode(v / s) as u16;
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn avx2(encoder: &SaturatingEncoder, x: &[f32], codes: &mut [u16], scales: &[f32], group: usize) {
            body(encoder, x, codes, scales, group)
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { avx2(encoder, x, codes, scales, group) };
        }
    }
    body(encoder, x, codes, scales, group)
}

/// `max |v|` over the non-NaN values (0 for none), as `f32::max` folds it, on the bits:
/// for non-negative floats the order of their bit patterns is their order, and an
/// integer max vectorises where a float one does not.
fn max_abs(values: &[f32]) -> f32 {
    let bits = values.iter().map(|v| v.to_bits() & 0x7fff_ffff).map(|b| if b > 0x7f80_0000 { 0 } else { b });
    f32::from_bits(bits.fold(0, u32::max))
}

/// `x` in row-major order: itself when it is, a blocked transpose when it is the transpose
/// of a row-major array (Wgrad's operands), an element-by-element copy otherwise.
fn standard_layout<'a>(x: ArrayView2<'a, f32>) -> CowArray<'a, f32, Ix2> {
    if x.is_standard_layout() {
        return CowArray::from(x);
    }
    if !x.t().is_standard_layout() {
        return CowArray::from(x.as_standard_layout().into_owned());
    }
    // Bands of 32 rows of the result are 32 columns of the source, copied 32×32 tile by
    // tile so that the tile's source and destination lines stay in cache.
    const TILE: usize = 32;
    let (rows, cols) = x.dim();
    let source = x.t(); // row-major [cols, rows]
    let src = source.as_slice().expect("row-major transpose");
    let mut out = Array2::<f32>::zeros((rows, cols));
    out.axis_chunks_iter_mut(Axis(0), TILE).into_par_iter().enumerate().for_each(|(bi, mut band)| {
        let (r0, height) = (bi * TILE, band.nrows());
        let band = band.as_slice_mut().expect("whole rows");
        for c0 in (0..cols).step_by(TILE) {
            for c in c0..(c0 + TILE).min(cols) {
                let column = &src[c * rows + r0..c * rows + r0 + height];
                for (r, &v) in column.iter().enumerate() {
                    band[r * cols + c] = v;
                }
            }
        }
    });
    CowArray::from(out)
}

/// The public code's `act_quant(x, block_size=128, scale_fmt)`: E4M3 in 1×128 tiles.
pub fn act_quant(x: ArrayView2<'_, f32>, mode: ScaleMode) -> Quantized {
    quantize(x, E4M3, Granularity::Tile(BLOCK), mode)
}

/// The public code's `weight_dequant(x, s, block_size=128)`: E4M3 bytes `[M, N]` with one
/// scale per 128×128 block, `y = x * s` in f32. Shapes are the caller's to check.
pub fn weight_dequant(codes: ArrayView2<'_, u8>, scales: ArrayView2<'_, f32>) -> Array2<f32> {
    let q = Quantized { format: E4M3, codes: codes.mapv(u16::from), scales: scales.to_owned(), block: (BLOCK, BLOCK) };
    q.dequantize()
}

/// `‖dequantize(quantize(x)) − x‖ / ‖x‖` in f64: the quantization error the study reports.
pub fn quantization_error(x: ArrayView2<'_, f32>, q: &Quantized) -> f64 {
    let y = q.dequantize();
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&a, &b) in x.iter().zip(y.iter()) {
        diff += (a as f64 - b as f64).powi(2);
        norm += (a as f64).powi(2);
    }
    (diff / norm).sqrt()
}
