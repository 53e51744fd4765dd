//! Minifloat formats (DeepSeek-V3 §3.3.2 "Mixed Precision Framework" and §3.3.3: E4M3 for
//! every GEMM input, with fine-grained scaling; E5M2 as the format prior work used for
//! gradients; E5M6 for the inputs of the linear after attention; BF16 for comparison).
//!
//! A format is `1 + exponent_bits + mantissa_bits` wide with an exponent bias. "fn"
//! formats (E4M3 as on Hopper) have no infinities and spend only the all-ones pattern on
//! NaN; IEEE-style formats (E5M2, E5M6, BF16) reserve the top exponent for Inf and NaN.
//!
//! # Encoding and where PyTorch differs
//!
//! [`Minifloat::encode`] rounds to nearest, ties to even, with subnormals, and treats
//! overflow in one of two ways ([`Overflow`]):
//! - [`Overflow::NonSaturating`] is what PyTorch's `tensor.to(torch.float8_e4m3fn)` and
//!   `.to(torch.float8_e5m2)` do: a finite value whose rounded magnitude exceeds the largest
//!   finite value becomes NaN (`0x7f`/`0xff`) in E4M3 — so 464.0 and above, and ±Inf, turn
//!   into NaN — and ±Inf in E5M2 (61440.0 and above). The goldens' `to_e4m3fn_bits` hold
//!   exactly this behaviour.
//! - [`Overflow::Saturate`] clamps to ±max finite (448 in E4M3), as CUDA's
//!   `__NV_SATFINITE` conversions and the public `act_quant` kernel (whose inputs are
//!   already scaled into range) do; ±Inf also saturates, NaN stays NaN. Users of PyTorch get
//!   this only by clamping first (the goldens' `rand_to_e4m3fn_bits` were made that way).
//!
//! NaN keeps its sign and becomes the all-ones pattern (`0x7f`/`0xff` for both FP8
//! formats, as PyTorch's c10 conversions produce).

/// A binary floating-point format narrower than f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Minifloat {
    pub exponent_bits: u32,
    pub mantissa_bits: u32,
    pub bias: i32,
    /// No infinities; only the all-ones exponent and mantissa pattern is NaN (OCP "fn").
    pub finite_only: bool,
}

/// What [`Minifloat::encode`] does with a value beyond the largest finite magnitude.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Clamp to ±max finite (CUDA `satfinite`, the public `act_quant`).
    Saturate,
    /// NaN in "fn" formats, ±Inf in IEEE-style ones (PyTorch's cast).
    NonSaturating,
}

/// E4M3, the "fn" variant of the OCP FP8 spec and Hopper: max 448, no infinities.
pub const E4M3: Minifloat = Minifloat { exponent_bits: 4, mantissa_bits: 3, bias: 7, finite_only: true };
/// E5M2, IEEE-style: max 57344, with infinities.
pub const E5M2: Minifloat = Minifloat { exponent_bits: 5, mantissa_bits: 2, bias: 15, finite_only: false };
/// E5M6, the 12-bit format the paper uses for the inputs of the linear after attention
/// (§3.3.3); IEEE-style here (the paper does not say how it spends the top exponent).
pub const E5M6: Minifloat = Minifloat { exponent_bits: 5, mantissa_bits: 6, bias: 15, finite_only: false };
/// bfloat16.
pub const BF16: Minifloat = Minifloat { exponent_bits: 8, mantissa_bits: 7, bias: 127, finite_only: false };

impl Minifloat {
    pub fn bits(&self) -> u32 {
        1 + self.exponent_bits + self.mantissa_bits
    }

    fn exp_all_ones(&self) -> u32 {
        (1u32 << self.exponent_bits) - 1
    }

    fn mantissa_mask(&self) -> u32 {
        (1u32 << self.mantissa_bits) - 1
    }

    fn sign_bit(&self) -> u32 {
        1u32 << (self.exponent_bits + self.mantissa_bits)
    }

    /// The bit pattern of the largest finite magnitude (0x7e for E4M3, 0x7b for E5M2).
    pub fn max_finite_bits(&self) -> u32 {
        if self.finite_only {
            // All-ones exponent is a normal binade; only its all-ones mantissa is NaN.
            (self.exp_all_ones() << self.mantissa_bits) | (self.mantissa_mask() - 1)
        } else {
            ((self.exp_all_ones() - 1) << self.mantissa_bits) | self.mantissa_mask()
        }
    }

    /// The largest finite value (448 for E4M3, 57344 for E5M2).
    pub fn max_finite(&self) -> f32 {
        self.decode(self.max_finite_bits())
    }

    /// The smallest positive subnormal, 2^(1 − bias − mantissa_bits).
    pub fn min_subnormal(&self) -> f32 {
        self.decode(1)
    }

    /// The NaN pattern of the given sign (all ones).
    pub fn nan_bits(&self, negative: bool) -> u32 {
        let pattern = (self.exp_all_ones() << self.mantissa_bits) | self.mantissa_mask();
        pattern | if negative { self.sign_bit() } else { 0 }
    }

    /// True when `bits` encodes NaN.
    pub fn is_nan_bits(&self, bits: u32) -> bool {
        let magnitude = bits & (self.sign_bit() - 1);
        let exponent = magnitude >> self.mantissa_bits;
        let mantissa = magnitude & self.mantissa_mask();
        if self.finite_only {
            magnitude == self.nan_bits(false)
        } else {
            exponent == self.exp_all_ones() && mantissa != 0
        }
    }

    /// The value of bit pattern `bits` (the low `self.bits()` bits), exactly.
    pub fn decode(&self, bits: u32) -> f32 {
        let m_bits = self.mantissa_bits;
        let exp_max = self.exp_all_ones();
        let sign = if (bits >> (self.exponent_bits + m_bits)) & 1 == 1 { -1.0f32 } else { 1.0 };
        let exponent = (bits >> m_bits) & exp_max;
        let mantissa = bits & self.mantissa_mask();
        if self.finite_only {
            if exponent == exp_max && mantissa == self.mantissa_mask() {
                return f32::NAN;
            }
        } else if exponent == exp_max {
            return if mantissa == 0 { sign * f32::INFINITY } else { f32::NAN };
        }
        let fraction = mantissa as f32 / (1u32 << m_bits) as f32;
        let magnitude = if exponent == 0 {
            fraction * 2f32.powi(1 - self.bias)
        } else {
            (1.0 + fraction) * 2f32.powi(exponent as i32 - self.bias)
        };
        sign * magnitude
    }

    /// The bit pattern nearest to `x` (ties to even), with subnormals, overflow handled as
    /// `overflow` says. Exact integer arithmetic on the f32 bits: no double rounding.
    pub fn encode(&self, x: f32, overflow: Overflow) -> u32 {
        let negative = x.is_sign_negative();
        let sign = if negative { self.sign_bit() } else { 0 };
        if x.is_nan() {
            return self.nan_bits(negative);
        }
        let overflowed = match overflow {
            Overflow::Saturate => sign | self.max_finite_bits(),
            Overflow::NonSaturating if self.finite_only => self.nan_bits(negative),
            Overflow::NonSaturating => sign | (self.exp_all_ones() << self.mantissa_bits),
        };
        if x.is_infinite() {
            return overflowed;
        }
        let f_bits = x.to_bits() & 0x7fff_ffff;
        if f_bits == 0 {
            return sign;
        }
        // |x| = significand · 2^lsb_exp with an integer significand (implicit bit included).
        let f_exp = (f_bits >> 23) as i32;
        let (significand, lsb_exp) =
            if f_exp == 0 { (f_bits as u64, -149) } else { ((f_bits & 0x7f_ffff | 0x80_0000) as u64, f_exp - 150) };
        // Unbiased exponent of the leading bit: floor(log2 |x|).
        let lead = lsb_exp + 63 - significand.leading_zeros() as i32;
        let min_normal_exp = 1 - self.bias;
        // The target's quantum at this magnitude: normals keep `mantissa_bits` bits below
        // the leading one, subnormals share the quantum of the smallest normal binade.
        let quantum_exp = lead.max(min_normal_exp) - self.mantissa_bits as i32;
        let n = round_shift_nearest_even(significand, quantum_exp - lsb_exp);
        // n · 2^quantum_exp is the rounded value, n ≤ 2^(mantissa_bits+1). One formula
        // covers normals (n ≥ 2^m, carry into the next binade included) and subnormals
        // (biased exponent 0 when n < 2^m, the smallest normal when n = 2^m).
        let biased = (lead.max(min_normal_exp) + self.bias - 1) as i64;
        let magnitude = (biased << self.mantissa_bits) + n as i64;
        if magnitude > self.max_finite_bits() as i64 {
            return overflowed;
        }
        sign | magnitude as u32
    }

    /// `x` rounded to the nearest value of the format (`decode(encode(x))`).
    pub fn round(&self, x: f32, overflow: Overflow) -> f32 {
        self.decode(self.encode(x, overflow))
    }
}

/// [`Minifloat::encode`] with [`Overflow::Saturate`], specialised to one format: the same
/// bit patterns (tested against it on every format), an order of magnitude faster, for
/// quantizing every GEMM input of a training step. Normal targets round the f32 mantissa
/// in place (the carry may move the exponent, as it should); targets in the subnormal range
/// share one quantum, so `x / quantum` (exact: a power of two) is rounded to an integer.
#[derive(Debug, Clone, Copy)]
pub struct SaturatingEncoder {
    /// f32 bits of the smallest normal value of the format.
    min_normal_bits: i32,
    /// Mantissa bits f32 has beyond the format's.
    shift: u32,
    /// f32's biased exponent minus the format's, in place above the mantissa.
    rebias: i32,
    /// 1 / the subnormal quantum, a power of two.
    inv_quantum: f32,
    max_finite_bits: i32,
    /// The sign bit's position in the format.
    sign_position: u32,
    /// The NaN pattern without its sign.
    nan_magnitude: i32,
}

impl SaturatingEncoder {
    pub fn new(format: Minifloat) -> Self {
        let m = format.mantissa_bits;
        assert!(m < 23 && format.bias < 127 && format.bias > 0, "{format:?}: not a narrower format than f32");
        let min_normal_exp = 1 - format.bias;
        SaturatingEncoder {
            min_normal_bits: (min_normal_exp + 127) << 23,
            shift: 23 - m,
            rebias: (127 - format.bias) << m,
            inv_quantum: 2f32.powi(format.bias - 1 + m as i32),
            max_finite_bits: format.max_finite_bits() as i32,
            sign_position: format.exponent_bits + m,
            nan_magnitude: format.nan_bits(false) as i32,
        }
    }

    /// Branch-free (every rule computed, one selected) and in i32 (magnitudes fit, and
    /// baseline x86-64 compares and takes minima of signed lanes only), so that loops over
    /// it vectorise.
    #[inline]
    pub fn encode(&self, x: f32) -> u32 {
        let bits = x.to_bits();
        let sign = (bits >> 31) << self.sign_position;
        let magnitude_bits = (bits & 0x7fff_ffff) as i32;
        let half_minus_one = (1i32 << (self.shift - 1)) - 1;
        let odd = (magnitude_bits >> self.shift) & 1;
        let normal = (magnitude_bits.wrapping_add(half_minus_one + odd) >> self.shift).wrapping_sub(self.rebias);
        // A subnormal code is `v = |x| / quantum` rounded to nearest even: adding 1.5·2^23
        // rounds it so (v < 2^m ≤ 2^22, so the sum's unit is 1) and leaves the integer in
        // the low mantissa bits. No `round_ties_even` (a libm call on baseline x86-64) and
        // no float-to-int cast (scalar there).
        const ROUNDER: f32 = 12_582_912.0;
        let rounded = f32::from_bits(magnitude_bits as u32) * self.inv_quantum + ROUNDER;
        let subnormal = (rounded.to_bits() as i32).wrapping_sub(ROUNDER.to_bits() as i32);
        let magnitude =
            if magnitude_bits >= self.min_normal_bits { normal.min(self.max_finite_bits) } else { subnormal };
        let magnitude = if magnitude_bits > 0x7f80_0000 { self.nan_magnitude } else { magnitude };
        sign | magnitude as u32
    }
}

/// `x` rounded to BF16 (nearest, ties to even; overflow to infinity, NaN kept): the same
/// value as `BF16.round(x, Overflow::NonSaturating)`, on the f32 bits directly (BF16 is
/// f32's upper half), fast enough for every GEMM input of a training step.
pub fn round_to_bf16(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let bits = x.to_bits();
    let round_bit = (bits >> 16) & 1;
    f32::from_bits(bits.wrapping_add(0x7fff + round_bit) & 0xffff_0000)
}

/// `value / 2^shift` rounded to nearest, ties to even (`shift ≤ 0` multiplies exactly).
fn round_shift_nearest_even(value: u64, shift: i32) -> u64 {
    if shift <= 0 {
        // Only reached when the target's quantum is finer than the input's; the caller's
        // formats keep this far below 64 bits.
        return value << (-shift) as u32;
    }
    if shift >= 64 {
        return 0; // below half the quantum: value < 2^24 ≤ 2^(shift−1)
    }
    let quotient = value >> shift;
    let remainder = value & ((1u64 << shift) - 1);
    let half = 1u64 << (shift - 1);
    if remainder > half || (remainder == half && quotient & 1 == 1) {
        quotient + 1
    } else {
        quotient
    }
}
