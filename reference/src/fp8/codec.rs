//! Minifloat formats (DeepSeek-V3 §3.3: E4M3 for every GEMM input, with fine-grained
//! scaling; E5M2 and E5M6 discussed; BF16 for comparison).
//!
//! A format is `1 + exponent_bits + mantissa_bits` wide with an exponent bias. "fn"
//! formats (E4M3 as on Hopper) have no infinities and spend only the all-ones pattern on
//! NaN; IEEE-style formats (E5M2, BF16) reserve the top exponent for Inf and NaN.

/// A binary floating-point format narrower than f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Minifloat {
    pub exponent_bits: u32,
    pub mantissa_bits: u32,
    pub bias: i32,
    /// No infinities; only the all-ones exponent and mantissa pattern is NaN (OCP "fn").
    pub finite_only: bool,
}

/// E4M3, the "fn" variant of the OCP FP8 spec and Hopper: max 448, no infinities.
pub const E4M3: Minifloat = Minifloat { exponent_bits: 4, mantissa_bits: 3, bias: 7, finite_only: true };
/// E5M2, IEEE-style: max 57344, with infinities.
pub const E5M2: Minifloat = Minifloat { exponent_bits: 5, mantissa_bits: 2, bias: 15, finite_only: false };
/// E5M6, the 12-bit format the paper proposes for the accumulator-side experiments.
pub const E5M6: Minifloat = Minifloat { exponent_bits: 5, mantissa_bits: 6, bias: 15, finite_only: false };
/// bfloat16.
pub const BF16: Minifloat = Minifloat { exponent_bits: 8, mantissa_bits: 7, bias: 127, finite_only: false };

impl Minifloat {
    pub fn bits(&self) -> u32 {
        1 + self.exponent_bits + self.mantissa_bits
    }

    /// The value of bit pattern `bits` (the low `self.bits()` bits), exactly.
    pub fn decode(&self, bits: u32) -> f32 {
        let m_bits = self.mantissa_bits;
        let exp_max = (1u32 << self.exponent_bits) - 1;
        let sign = if (bits >> (self.exponent_bits + m_bits)) & 1 == 1 { -1.0f32 } else { 1.0 };
        let exponent = (bits >> m_bits) & exp_max;
        let mantissa = bits & ((1u32 << m_bits) - 1);
        if self.finite_only {
            if exponent == exp_max && mantissa == (1u32 << m_bits) - 1 {
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
}
