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

use super::codec::{Minifloat, Overflow, E4M3};
use ndarray::{Array2, ArrayView2};

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
        self.codes.mapv(|c| table.decode(c))
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
    let (rows, cols) = x.dim();
    let (br, bc) = granularity.block_shape(rows, cols);
    let (gr, gc) = (rows.div_ceil(br), cols.div_ceil(bc));
    let mut scales = Array2::<f32>::zeros((gr, gc));
    for ((g, h), s) in scales.indexed_iter_mut() {
        let block = x.slice(ndarray::s![g * br..((g + 1) * br).min(rows), h * bc..((h + 1) * bc).min(cols)]);
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        *s = scale_for(amax, format, mode);
    }
    let codes = Array2::from_shape_fn((rows, cols), |(i, j)| {
        format.encode(x[[i, j]] / scales[[i / br, j / bc]], Overflow::Saturate) as u16
    });
    Quantized { format, codes, scales, block: (br, bc) }
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
