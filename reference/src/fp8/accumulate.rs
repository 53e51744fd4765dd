//! The GEMM accumulation simulator (DeepSeek-V3 §3.3.2 "Increasing Accumulation
//! Precision", §3.5.2 "Higher FP8 GEMM Accumulation Precision in Tensor Cores").
//!
//! The product of two E4M3 values is exact (4-bit significands give an 8-bit product). What
//! loses precision is how the tensor core adds those products: the paper measured that the
//! FP8 GEMM on H800 "is limited to retaining around 14 bits", which at K = 4096 gives "a
//! maximum relative error of nearly 2%", and describes the mechanism: "After aligning 32
//! mantissa products by right-shifting based on the maximum exponent, the Tensor Core only
//! uses the highest 14 bits of each mantissa product for addition, and truncates bits
//! exceeding this range." Its fix is to copy the partial sums to FP32 registers on the CUDA
//! cores every N_C = 128 elements of K ("promotion").
//!
//! # The model, and what it rests on
//!
//! [`Accumulator`] makes every choice of that mechanism a field, so that a measurement on
//! the hardware can pin it down (see `README.md` in this folder for the experiment):
//! 1. `group`: how many products one hardware step aligns together (the paper: 32, one
//!    `wgmma` of K = 32 for FP8);
//! 2. `align_accumulator`: whether the running sum takes part in that alignment (a fused
//!    multi-term add, as Fasi, Higham, Mikaitis and Pranesh found for V100/T4/A100 tensor
//!    cores in "Numerical behavior of NVIDIA tensor cores", PeerJ CS 7:e330, 2021) or is
//!    added to the group's sum afterwards (the paper's text names only the 32 products);
//! 3. `kept_bits` and `term_rounding`: how many bits of each aligned term survive, counted
//!    from the leading bit of the largest (the paper: 14, truncated); `anchor`: whether
//!    "the largest" is read off each product's value or, before normalisation, off the sum
//!    of its factors' exponents (see [`Anchor`]);
//! 4. `acc_bits` and `acc_rounding`: the significant bits of the accumulator register
//!    after each step (14 = FP22 e8m13, which Zhang et al., "SageAttention2", arXiv
//!    2411.10958, report for `mma.f32.f8.f8.f32` on Hopper; truncated, as Fasi et al. found
//!    normalisation to truncate on earlier generations);
//! 5. `promote_every`: N_C, after which the partial sum is added (f32, round to nearest
//!    even) into an FP32 register and the tensor-core accumulator restarts from zero.
//!
//! # Presets: measured, and hypotheses
//!
//! Four presets are the hardware, fitted to FP8 outputs measured on real chips (the data in
//! `shared/goldens/fp8-hardware/`, the experiment in `docs/fp8-accumulators.md`, the tests
//! in `tests/fp8_hardware.rs`): `h100` (Hopper without promotion: 5,000 of 5,000 `mma.sync`
//! instructions and 16,384 of 16,384 outputs of cuBLAS's K = 4096 GEMM with
//! `use_fast_accum=True`, bit for bit), `h100-promote-128` (the same tensor core promoted
//! every 128 products: cuBLAS's default path, 16,384 of 16,384), `ada` (5,000 of 5,000) and
//! `b200` (5,000 of 5,000). `fast-accum`, `promote-128` and `fast-accum-aligned` are built
//! from the paper's words and are **hypotheses**: the measurements rule them out for the
//! H100 (see [`provenance`]).
//!
//! Arithmetic is exact: values are fixed-point integers (`i128`, 64 fraction bits), which
//! holds every product of two E4M3 or E5M2 values and their sums exactly, so each rounding
//! in the result is one the model asked for.

/// Fraction bits of the fixed-point representation: the least significant bit is 2^-64.
/// E4M3 products are multiples of 2^-18 and E5M2 products of 2^-32; both fit exactly.
const FRAC: i32 = 64;

/// A rounding rule for dropping low bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// Drop the bits of the magnitude (sign-magnitude truncation).
    TowardZero,
    /// Drop the bits of the two's complement value (arithmetic right shift with sign fill).
    Floor,
    /// Round to nearest, ties to even.
    NearestEven,
}

/// The exponent by which the alignment step places a product `x·y`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// floor(log2 |x·y|): the product is normalised before it is aligned.
    Product,
    /// e(x) + e(y), each floor(log2 |·|) but never below `emin`, the input format's least
    /// normal exponent (−6 for E4M3, −14 for E5M2): the product's significand, in [1, 4), is
    /// aligned as the multiplier leaves it, so a product whose significand reached 2 sits one
    /// place higher than its anchor says. Khattak and Mikaitis's toolbox models the H100's
    /// FP8 inner product this way.
    FactorExponents { emin: i32 },
}

impl Anchor {
    /// The exponent the alignment step reads for the product `value` = x·y (≠ 0).
    fn exponent(self, x: f32, y: f32, value: i128) -> i32 {
        match self {
            Anchor::Product => exponent(value),
            Anchor::FactorExponents { emin } => float_exponent(x).max(emin) + float_exponent(y).max(emin),
        }
    }
}

/// floor(log2 |x|) of a finite, non-zero f32 (exact: every f32 is normal as an f64).
fn float_exponent(x: f32) -> i32 {
    ((x as f64).abs().to_bits() >> 52) as i32 - 1023
}

/// A product as the accumulator sees it: its exact value and the exponent the alignment
/// step reads for it (unused when the value is zero).
#[derive(Debug, Clone, Copy)]
struct Term {
    value: i128,
    anchor: i32,
}

/// How the tensor core (or any accumulator) adds a stream of exact products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accumulator {
    /// Products aligned and added together in one step (≥ 1).
    pub group: usize,
    /// Whether the running sum is aligned together with the group's products.
    pub align_accumulator: bool,
    /// Bits kept of each aligned term, counted from the largest term's anchor (its leading
    /// bit, with [`Anchor::Product`]); `None` keeps every bit.
    pub kept_bits: Option<u32>,
    pub term_rounding: Rounding,
    /// Which exponent of a product "the largest term" is measured by.
    pub anchor: Anchor,
    /// Significant bits of the accumulator after each step; `None` is unbounded.
    pub acc_bits: Option<u32>,
    pub acc_rounding: Rounding,
    /// N_C: add the partial sum into an f32 register every this many products and restart.
    pub promote_every: Option<usize>,
}

/// The named presets of the CLI and the study: the three references, the four fitted to
/// hardware, then the three hypotheses built from the paper's description.
pub const PRESETS: [&str; 10] = [
    "exact",
    "exact-promote-128",
    "fp32",
    "h100",
    "h100-promote-128",
    "ada",
    "b200",
    "fast-accum",
    "promote-128",
    "fast-accum-aligned",
];

/// Where a preset comes from: measured on a chip, or a reading of a description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// Not a chip: the exact sum, or plain sequential f32.
    Reference,
    /// Fitted to a chip's measured outputs; the text says which and how many matched.
    Measured(&'static str),
    /// Not fitted to any measurement; the text says what it rests on.
    Hypothesis(&'static str),
}

impl Provenance {
    /// "measured", "hypothesis" or "reference", the label every listing of presets shows.
    pub fn label(&self) -> &'static str {
        match self {
            Provenance::Reference => "reference",
            Provenance::Measured(_) => "measured",
            Provenance::Hypothesis(_) => "hypothesis",
        }
    }
}

/// The provenance of the preset `name` (None for an unknown name).
pub fn provenance(name: &str) -> Option<Provenance> {
    Some(match name {
        "exact" | "exact-promote-128" | "fp32" => Provenance::Reference,
        "h100" => Provenance::Measured(
            "H100: 5,000/5,000 mma.sync m16n8k32 E4M3 dot products and 16,384/16,384 outputs of \
             torch._scaled_mm (cuBLAS, use_fast_accum=True, K = 4096), bit for bit",
        ),
        "h100-promote-128" => Provenance::Measured(
            "H100: 16,384/16,384 outputs of torch._scaled_mm (cuBLAS, use_fast_accum=False, K = 4096), bit for bit",
        ),
        "ada" => Provenance::Measured(
            "Ada: 5,000/5,000 mma.sync m16n8k32 E4M3 dot products with a non-zero accumulator input; \
             longer K not measured",
        ),
        "b200" => Provenance::Measured(
            "B200: 5,000/5,000 mma.sync m16n8k32 E4M3 dot products; any rule keeping >= 22 bits per product \
             fits them as well (all bits kept here); longer K not measured",
        ),
        "fast-accum" => Provenance::Hypothesis(
            "the paper's description (32 products, 14 bits truncated); reproduces 137 of cuBLAS's 16,384 H100 fast-accumulation outputs",
        ),
        "promote-128" => Provenance::Hypothesis("fast-accum promoted every 128 (the paper's fix); not the H100"),
        "fast-accum-aligned" => Provenance::Hypothesis(
            "fast-accum with the running sum in the alignment; not the H100 (it anchors differently)",
        ),
        _ => return None,
    })
}

impl Accumulator {
    /// The exact sum, rounded once to f32 at the end.
    pub const EXACT: Accumulator = Accumulator {
        group: 1,
        align_accumulator: false,
        kept_bits: None,
        term_rounding: Rounding::TowardZero,
        anchor: Anchor::Product,
        acc_bits: None,
        acc_rounding: Rounding::NearestEven,
        promote_every: None,
    };

    /// The paper's promotion on an ideal tensor core: each run of N_C = 128 products summed
    /// exactly, rounded to f32 and added into the f32 total. With 1×128 scales every segment
    /// is one such run, so this is the FP8 training recipe less the chip's own truncation
    /// (which [`Accumulator::H100_PROMOTE_128`] adds, at bit-level cost), and it runs at BLAS
    /// speed (`gemm`'s exact f64 partials).
    pub const EXACT_PROMOTE_128: Accumulator = Accumulator { promote_every: Some(128), ..Accumulator::EXACT };

    /// Sequential FP32: `acc = fl32(acc + a·b)` product after product (the products are
    /// exact in f32, so this is also FMA order).
    pub const FP32: Accumulator = Accumulator { acc_bits: Some(24), ..Accumulator::EXACT };

    /// A hypothesis: the Hopper FP8 path with no promotion as the paper describes it
    /// (the measured rule is [`Accumulator::H100`]): 32 products aligned to the largest, 14 bits each kept by truncation,
    /// the sum added into a 14-significant-bit (e8m13) accumulator, truncated.
    pub const FAST_ACCUM: Accumulator = Accumulator {
        group: 32,
        align_accumulator: false,
        kept_bits: Some(14),
        term_rounding: Rounding::TowardZero,
        anchor: Anchor::Product,
        acc_bits: Some(14),
        acc_rounding: Rounding::TowardZero,
        promote_every: None,
    };

    /// A hypothesis, the other reading of the mechanism: the accumulator is one more term of the
    /// aligned group (a fused 33-term add), so late products lose bits against a large sum.
    pub const FAST_ACCUM_ALIGNED: Accumulator = Accumulator { align_accumulator: true, ..Accumulator::FAST_ACCUM };

    /// The H100's FP8 tensor core, measured (see [`provenance`]): 32 products and the
    /// running sum aligned together, each product placed by its factors' exponents
    /// ([`Anchor::FactorExponents`]), every term truncated to 13 bits below the largest
    /// anchor, the terms summed exactly and truncated to e8m13 (14 significant bits). No
    /// promotion: all of K accumulates in the tensor core, as cuBLAS runs the GEMM with
    /// `use_fast_accum=True`. This is the model of Khattak and Mikaitis's MATLAB toolbox
    /// (`models/H100TC.m` of north-numerical-computing/MATLAB-tensor-core: `fma = 32`,
    /// `neab = -10`, `rz`, `global_alignment = 1`), which they validated on single K = 32
    /// steps from a zero accumulator; the K = 4096 GEMM confirms how the running sum joins.
    /// `mma.sync` (the instruction data) and cuBLAS's `wgmma` (the GEMM) follow the same rule.
    pub const H100: Accumulator = Accumulator {
        align_accumulator: true,
        anchor: Anchor::FactorExponents { emin: -6 },
        ..Accumulator::FAST_ACCUM
    };

    /// The H100's tensor core promoted every N_C = 128 products: the paper's fix, and what
    /// cuBLAS's default FP8 path (`use_fast_accum=False`) measurably does.
    pub const H100_PROMOTE_128: Accumulator = Accumulator { promote_every: Some(128), ..Accumulator::H100 };

    /// Ada's FP8 tensor core, measured: the H100's rule on groups of 16 products (an
    /// `m16n8k32` instruction is two steps), the running sum in each step's alignment.
    pub const ADA: Accumulator = Accumulator { group: 16, ..Accumulator::H100 };

    /// The B200's FP8 tensor core, measured on single instructions: the 32 products summed
    /// exactly (the data require at least 22 bits per product below the largest; we keep all),
    /// then added to the running sum and rounded to nearest f32.
    pub const B200: Accumulator = Accumulator {
        group: 32,
        align_accumulator: false,
        kept_bits: None,
        term_rounding: Rounding::TowardZero,
        anchor: Anchor::Product,
        acc_bits: Some(24),
        acc_rounding: Rounding::NearestEven,
        promote_every: None,
    };

    /// A hypothesis: the paper's fix on the paper's description, `fast-accum` promoted
    /// every N_C = 128 products.
    pub const PROMOTE_128: Accumulator = Accumulator { promote_every: Some(128), ..Accumulator::FAST_ACCUM };

    /// A preset by its CLI name.
    pub fn preset(name: &str) -> Option<Accumulator> {
        Some(match name {
            "exact" => Accumulator::EXACT,
            "exact-promote-128" => Accumulator::EXACT_PROMOTE_128,
            "fp32" => Accumulator::FP32,
            "fast-accum" => Accumulator::FAST_ACCUM,
            "promote-128" => Accumulator::PROMOTE_128,
            "fast-accum-aligned" => Accumulator::FAST_ACCUM_ALIGNED,
            "h100" => Accumulator::H100,
            "h100-promote-128" => Accumulator::H100_PROMOTE_128,
            "ada" => Accumulator::ADA,
            "b200" => Accumulator::B200,
            _ => return None,
        })
    }

    /// Whether the tensor core adds exactly (no bits dropped per term or in the running
    /// sum): then only the promotions round, and a GEMM may take its partials from exact
    /// f64 products (`gemm`'s fast path).
    pub fn adds_exactly(&self) -> bool {
        self.kept_bits.is_none() && self.acc_bits.is_none()
    }

    /// `Σ_k a[k]·b[k]` as this accumulator computes it, rounded to f32 at the end (a no-op
    /// when the accumulator keeps ≤ 24 bits). `a` and `b` hold the decoded FP8 values (any
    /// f32 whose products are multiples of 2^-64 below 2^62 is simulated exactly).
    pub fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        self.dot_from(0.0, a, b)
    }

    /// `c + Σ_k a[k]·b[k]` with `c` the tensor core's accumulator input, as one
    /// `mma … d, a, b, c` instruction computes it (with promotion, `c` starts the first
    /// segment's tensor-core sum). `c` is held exactly down to 2^-64.
    pub fn dot_from(&self, c: f32, a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "dot of vectors of different lengths");
        let terms: Vec<Term> = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| {
                let value = to_fixed(x as f64 * y as f64);
                Term { value, anchor: if value == 0 { 0 } else { self.anchor.exponent(x, y, value) } }
            })
            .collect();
        to_f32(self.sum_fixed(&terms, to_fixed(c as f64)))
    }

    /// The simulated sum of exact fixed-point products (before the final f32 rounding),
    /// the tensor core starting from `init`.
    fn sum_fixed(&self, products: &[Term], init: i128) -> i128 {
        if products.is_empty() {
            return init;
        }
        match self.promote_every {
            None => self.tensor_core(products, init),
            Some(nc) => {
                let mut register = 0i128; // the FP32 register on the CUDA cores
                for (i, chunk) in products.chunks(nc.max(1)).enumerate() {
                    // The partial is read out of the tensor core as an f32 (a no-op when
                    // the accumulator keeps ≤ 24 bits), then added in f32.
                    let start = if i == 0 { init } else { 0 };
                    let partial = round_sig(self.tensor_core(chunk, start), 24, Rounding::NearestEven);
                    register = round_sig(register + partial, 24, Rounding::NearestEven);
                }
                register
            }
        }
    }

    /// One run of the tensor-core accumulator over `products`, starting from `init`.
    fn tensor_core(&self, products: &[Term], init: i128) -> i128 {
        if self.kept_bits.is_none() && self.acc_bits.is_none() {
            return init + products.iter().map(|t| t.value).sum::<i128>(); // nothing is rounded: grouping cannot matter
        }
        let mut acc = init;
        for group in products.chunks(self.group.max(1)) {
            // Without the accumulator in the alignment it is added after the group's sum.
            let (own, mut addend) = if self.align_accumulator { (acc, 0) } else { (0, acc) };
            // The running sum is normalised: its anchor is its own exponent.
            let own_term = Term { value: own, anchor: if own == 0 { 0 } else { exponent(own) } };
            let e_max = match self.kept_bits {
                Some(_) => group.iter().chain([&own_term]).filter(|t| t.value != 0).map(|t| t.anchor).max(),
                None => None,
            };
            let sum: i128 = match (self.kept_bits, e_max) {
                (Some(kept), Some(e_max)) => {
                    // Align to the largest anchor: keep `kept` bits below and including
                    // its place, i.e. a quantum of 2^(e_max − kept + 1).
                    let quantum = e_max - kept as i32 + 1;
                    let own = round_to_quantum(own, quantum, self.term_rounding);
                    group.iter().map(|t| round_to_quantum(t.value, quantum, self.term_rounding)).sum::<i128>() + own
                }
                _ => group.iter().map(|t| t.value).sum::<i128>() + own,
            };
            addend += sum;
            acc = match self.acc_bits {
                Some(bits) => round_sig(addend, bits, self.acc_rounding),
                None => addend,
            };
        }
        acc
    }
}

/// The exact value of `x` in fixed point (2^-64 units); rounds to nearest even when `x`
/// has bits below 2^-64 (never for products of FP8 values).
pub(crate) fn to_fixed(x: f64) -> i128 {
    if x == 0.0 || !x.is_finite() {
        assert!(x.is_finite(), "non-finite product in the accumulator");
        return 0;
    }
    // Fast path: x·2^64 is exact in f64 (a power-of-two scaling), and when it is an
    // integer the cast is exact too.
    let scaled = x * 2f64.powi(FRAC);
    if scaled.abs() < 2f64.powi(126) && scaled.fract() == 0.0 {
        return scaled as i128;
    }
    let bits = x.abs().to_bits();
    let biased = (bits >> 52) as i32;
    let (significand, lsb_exp) =
        if biased == 0 { (bits as i128, -1074) } else { ((bits & ((1 << 52) - 1) | 1 << 52) as i128, biased - 1075) };
    let shift = lsb_exp + FRAC;
    assert!(shift + 53 < 126, "product {x} is too large for the accumulator simulator");
    let magnitude = if shift >= 0 {
        significand << shift
    } else {
        round_to_quantum(significand, -shift - FRAC, Rounding::NearestEven) >> -shift
    };
    if x < 0.0 {
        -magnitude
    } else {
        magnitude
    }
}

/// floor(log2 |v|) of a fixed-point value, in value units (v ≠ 0).
fn exponent(v: i128) -> i32 {
    127 - v.unsigned_abs().leading_zeros() as i32 - FRAC
}

/// `v` rounded to a multiple of 2^quantum_exp (value units).
fn round_to_quantum(v: i128, quantum_exp: i32, rounding: Rounding) -> i128 {
    let shift = quantum_exp + FRAC;
    if shift <= 0 {
        return v; // the fixed point is already at least this fine
    }
    if shift >= 126 {
        // Everything lies below the quantum.
        return match rounding {
            Rounding::Floor if v < 0 => panic!("quantum 2^{quantum_exp} beyond the simulator's range"),
            _ => 0,
        };
    }
    let q = 1i128 << shift;
    let floor = (v >> shift) << shift; // arithmetic shift: rounds toward −∞
    let rest = v - floor; // in [0, q)
    match rounding {
        Rounding::Floor => floor,
        Rounding::TowardZero => {
            if v < 0 && rest != 0 {
                floor + q
            } else {
                floor
            }
        }
        Rounding::NearestEven => {
            let half = q / 2;
            let up = rest > half || (rest == half && (floor >> shift) & 1 == 1);
            if up {
                floor + q
            } else {
                floor
            }
        }
    }
}

/// `v` rounded to `bits` significant bits.
pub(crate) fn round_sig(v: i128, bits: u32, rounding: Rounding) -> i128 {
    if v == 0 {
        return 0;
    }
    round_to_quantum(v, exponent(v) - bits as i32 + 1, rounding)
}

/// A fixed-point value rounded once to the nearest f32 (exact when it has ≤ 24 bits).
pub(crate) fn to_f32(v: i128) -> f32 {
    let r = round_sig(v, 24, Rounding::NearestEven);
    // ≤ 24 significant bits: the conversion below is exact (i128 → f64 keeps 53 bits).
    (r as f64 * 2f64.powi(-FRAC)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One 32-product step keeping 14 bits per term, no limit on the accumulator.
    fn aligner(anchor: Anchor) -> Accumulator {
        Accumulator { acc_bits: None, anchor, ..Accumulator::FAST_ACCUM }
    }

    #[test]
    fn factor_exponents_keep_one_more_bit_when_the_top_significand_reaches_two() {
        // 1.5 · 1.5 = 2.25 has leading bit 2^1 but factor exponents 0 + 0. Kept 14 bits:
        // the quantum is 2^(1 − 13) by the product, 2^(0 − 13) by the factors, so the
        // second product, 2^-6 · 2^-7 = 2^-13, survives only in the second reading.
        let (a, b) = ([1.5, 2f32.powi(-6)], [1.5, 2f32.powi(-7)]);
        assert_eq!(aligner(Anchor::Product).dot(&a, &b), 2.25);
        assert_eq!(aligner(Anchor::FactorExponents { emin: -6 }).dot(&a, &b), 2.25 + 2f32.powi(-13));
    }

    #[test]
    fn a_subnormal_factor_counts_at_the_least_normal_exponent() {
        // 2^-8 (an E4M3 subnormal) · 2^8 = 1: anchor 0 by the product, −6 + 8 = 2 by the
        // clamped factors, so the quantum is 2^-13 or 2^-11 and 2^-12 survives only in the first.
        let (a, b) = ([2f32.powi(-8), 2f32.powi(-6)], [256.0, 2f32.powi(-6)]);
        assert_eq!(aligner(Anchor::Product).dot(&a, &b), 1.0 + 2f32.powi(-12));
        assert_eq!(aligner(Anchor::FactorExponents { emin: -6 }).dot(&a, &b), 1.0);
        // Without the clamp (an E5M2-like emin) the anchor is −8 + 8 = 0 again.
        assert_eq!(aligner(Anchor::FactorExponents { emin: -14 }).dot(&a, &b), 1.0 + 2f32.powi(-12));
    }
}
