//! Property tests of the FP8 simulation: every representable value round-trips, rounding
//! is monotonic and nearest, a scale chosen from a group's max-abs never overflows, and the
//! accumulator simulator with unbounded precision is the exact sum. Expected values come
//! from independent computations (the `half` crate, integer sums), never from the code
//! under test.

use ndarray::Array2;
use proptest::prelude::*;
use v3lab_reference::fp8::accumulate::{Accumulator, Anchor, Rounding};
use v3lab_reference::fp8::{quantize, Granularity, Minifloat, Overflow, ScaleMode, BF16, E4M3, E5M2, E5M6};

const FORMATS: [(&str, Minifloat); 4] = [("e4m3", E4M3), ("e5m2", E5M2), ("e5m6", E5M6), ("bf16", BF16)];

#[test]
fn every_representable_value_round_trips() {
    for (name, f) in FORMATS {
        let mut checked = 0;
        for code in 0..1u32 << f.bits() {
            let v = f.decode(code);
            if v.is_nan() {
                assert!(f.is_nan_bits(code), "{name}: {code:#x} decodes to NaN but is not a NaN pattern");
                continue;
            }
            assert_eq!(f.encode(v, Overflow::NonSaturating), code, "{name}: {code:#x} = {v:e}");
            if v.is_finite() {
                assert_eq!(f.encode(v, Overflow::Saturate), code, "{name}: {code:#x} = {v:e} (saturating)");
            }
            checked += 1;
        }
        assert!(checked > (1 << f.bits()) * 9 / 10, "{name}: only {checked} values checked");
    }
}

#[test]
fn format_constants_are_the_published_ones() {
    assert_eq!(E4M3.max_finite(), 448.0);
    assert_eq!(E4M3.min_subnormal(), 2f32.powi(-9));
    assert_eq!(E5M2.max_finite(), 57344.0);
    assert_eq!(E5M2.min_subnormal(), 2f32.powi(-16));
    assert_eq!(BF16.max_finite(), f32::from_bits(0x7f7f_0000));
    // PyTorch's E4M3 cast: 464 is the tie between 448 and the NaN slot, and goes to even.
    assert_eq!(E4M3.encode(463.9, Overflow::NonSaturating), 0x7e);
    assert_eq!(E4M3.encode(464.0, Overflow::NonSaturating), 0x7e);
    assert_eq!(E4M3.encode(464.1, Overflow::NonSaturating), 0x7f);
    assert_eq!(E4M3.encode(-1e6, Overflow::Saturate), 0xfe);
    assert_eq!(E5M2.encode(61440.0, Overflow::NonSaturating), 0x7c);
    assert_eq!(E5M2.encode(f32::INFINITY, Overflow::Saturate), 0x7b);
}

fn finite_f32() -> impl Strategy<Value = f32> {
    any::<u32>().prop_map(f32::from_bits).prop_filter("finite", |x| x.is_finite())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// BF16 against an independent implementation (the `half` crate).
    #[test]
    fn bf16_matches_the_half_crate(x in finite_f32()) {
        let want = half::bf16::from_f32(x);
        prop_assume!(want.is_finite());
        prop_assert_eq!(BF16.encode(x, Overflow::NonSaturating), want.to_bits() as u32);
    }

    /// Rounding is monotonic: x ≤ y ⇒ round(x) ≤ round(y), in every format.
    #[test]
    fn rounding_is_monotonic(x in finite_f32(), y in finite_f32()) {
        let (lo, hi) = if x <= y { (x, y) } else { (y, x) };
        for (name, f) in FORMATS {
            let (a, b) = (f.round(lo, Overflow::Saturate), f.round(hi, Overflow::Saturate));
            prop_assert!(a <= b, "{}: round({:e}) = {:e} > round({:e}) = {:e}", name, lo, a, hi, b);
        }
    }

    /// Rounding is to the nearest representable value: no neighbour of the result is closer.
    #[test]
    fn rounding_is_nearest(x in -500.0f32..500.0) {
        for (name, f) in FORMATS {
            let code = f.encode(x, Overflow::Saturate);
            let got = f.decode(code) as f64;
            let err = (got - x as f64).abs();
            for neighbour in [code.wrapping_sub(1), code + 1, code ^ (1 << (f.bits() - 1))] {
                let v = f.decode(neighbour & ((1 << f.bits()) - 1)) as f64;
                if v.is_finite() {
                    prop_assert!(err <= (v - x as f64).abs(), "{}: {:e} → {:e}, but {:e} is closer", name, x, got, v);
                }
            }
        }
    }

}

proptest! {
    // Each case quantizes 20 ways; fewer cases keep the file under a few seconds.
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A scale from the group's own max-abs never overflows: even without saturation no
    /// scaled element becomes NaN or Inf, at every granularity, f32 or power-of-two.
    #[test]
    fn scale_choice_never_overflows(
        rows in 1usize..40, cols in 1usize..300, seed in any::<u64>(), log_mag in -30i32..30, outlier in 0.0f32..1e4,
    ) {
        let mut state = seed | 1;
        let mut next = || { state ^= state << 13; state ^= state >> 7; state ^= state << 17; (state >> 11) as f32 / (1u64 << 53) as f32 };
        let mag = 2f32.powi(log_mag);
        let mut x = Array2::from_shape_fn((rows, cols), |_| (next() * 2.0 - 1.0) * mag);
        x[[rows / 2, cols / 3]] = outlier * mag;
        for format in [E4M3, E5M2] {
            for g in [Granularity::Tensor, Granularity::Row, Granularity::Tile(128), Granularity::ColumnTile(128), Granularity::Block(128)] {
                for mode in [ScaleMode::F32, ScaleMode::PowerOfTwo] {
                    let q = quantize(x.view(), format, g, mode);
                    let (br, bc) = q.block;
                    for ((i, j), &v) in x.indexed_iter() {
                        let s = q.scales[[i / br, j / bc]];
                        let code = format.encode(v / s, Overflow::NonSaturating);
                        prop_assert!(format.decode(code).is_finite(), "{:?} {:?} {:?}: {:e}/{:e} overflows", format, g, mode, v, s);
                        prop_assert_eq!(code as u16, q.codes[[i, j]]);
                    }
                }
            }
        }
    }

    /// With unbounded precision the simulator is the exact sum, whatever its grouping.
    #[test]
    fn unbounded_simulator_is_exact(
        codes in prop::collection::vec((0u8..=0x7e, 0u8..=0x7e, any::<bool>()), 1..700),
        group in 1usize..70, align in any::<bool>(), promote in prop::option::of(1usize..300),
    ) {
        let a: Vec<f32> = codes.iter().map(|&(x, _, neg)| if neg { -E4M3.decode(x as u32) } else { E4M3.decode(x as u32) }).collect();
        let b: Vec<f32> = codes.iter().map(|&(_, y, _)| E4M3.decode(y as u32)).collect();
        // Independent exact sum: E4M3 products are integer multiples of 2^-18 below 2^18.
        let units: i64 = a.iter().zip(&b).map(|(&x, &y)| (x as f64 * y as f64 * 2f64.powi(18)) as i64).sum();
        let want = (units as f64 * 2f64.powi(-18)) as f32; // |units| < 2^53: one rounding
        let unbounded = Accumulator {
            group, align_accumulator: align, kept_bits: None, term_rounding: Rounding::TowardZero, anchor: Anchor::Product,
            acc_bits: None, acc_rounding: Rounding::TowardZero, promote_every: None,
        };
        prop_assert_eq!(unbounded.dot(&a, &b), want);
        prop_assert_eq!(Accumulator::EXACT.dot(&a, &b), want);
        // 60 kept bits cover every E4M3 product's range (2^-18 .. 2^18): also exact.
        let wide = Accumulator { kept_bits: Some(60), ..unbounded };
        prop_assert_eq!(wide.dot(&a, &b), want);
        // Promotion adds partial sums in f32; with unbounded partials it is a blocked f32 sum.
        if let Some(nc) = promote {
            let promoted = Accumulator { promote_every: Some(nc), ..unbounded };
            let mut reg = 0.0f32;
            for (ca, cb) in a.chunks(nc).zip(b.chunks(nc)) {
                let u: i64 = ca.iter().zip(cb).map(|(&x, &y)| (x as f64 * y as f64 * 2f64.powi(18)) as i64).sum();
                reg += (u as f64 * 2f64.powi(-18)) as f32;
            }
            prop_assert_eq!(promoted.dot(&a, &b), reg);
        }
        // The fp32 preset is a plain sequential f32 loop.
        let mut seq = 0.0f32;
        for (&x, &y) in a.iter().zip(&b) { seq += x * y; }
        prop_assert_eq!(Accumulator::FP32.dot(&a, &b), seq);
    }
}

/// The fast-accum model on a case worked by hand: 1.0 and 31 products of 2^-14 in one
/// group of 32. Aligned to the largest (exponent 0), 14 kept bits leave a quantum of
/// 2^-13, so each 2^-14 truncates to zero and the sum is 1.0, where exact is 1 + 31·2^-14.
#[test]
fn fast_accum_truncates_small_terms_against_a_large_one() {
    let small = 2f32.powi(-7); // an E4M3 subnormal; small² = 2^-14
    assert_eq!(E4M3.round(small, Overflow::Saturate), small);
    let mut a = vec![small; 32];
    let mut b = vec![small; 32];
    a[0] = 1.0;
    b[0] = 1.0;
    assert_eq!(Accumulator::FAST_ACCUM.dot(&a, &b), 1.0);
    assert_eq!(Accumulator::EXACT.dot(&a, &b), 1.0 + 31.0 * 2f32.powi(-14));
    // Split over two groups of 16, the small terms meet no large one in the second group.
    let sixteen = Accumulator { group: 16, ..Accumulator::FAST_ACCUM };
    // Group 1: 1 + 15 truncated terms = 1. Group 2: 16·2^-14 = 2^-10 exactly; 1 + 2^-10
    // needs 11 significant bits, within the 14 of the accumulator.
    assert_eq!(sixteen.dot(&a, &b), 1.0 + 2f32.powi(-10));
}

/// The two readings of the mechanism on a case worked by hand: a first group whose sum is
/// 1.0, then a group of 32 products of 2^-14. Added among themselves they make 2^-9, and
/// 1 + 2^-9 fits 14 bits (`fast-accum`); aligned together with the running sum 1.0 each
/// 2^-14 is below the quantum 2^-13 and truncates away (`fast-accum-aligned`).
#[test]
fn aligned_accumulator_loses_small_groups_against_a_large_sum() {
    let small = 2f32.powi(-7);
    let mut a = vec![0.0f32; 64];
    let mut b = vec![0.0f32; 64];
    a[0] = 1.0;
    b[0] = 1.0;
    for k in 32..64 {
        a[k] = small;
        b[k] = small;
    }
    assert_eq!(Accumulator::EXACT.dot(&a, &b), 1.0 + 2f32.powi(-9));
    assert_eq!(Accumulator::FAST_ACCUM.dot(&a, &b), 1.0 + 2f32.powi(-9));
    assert_eq!(Accumulator::FAST_ACCUM_ALIGNED.dot(&a, &b), 1.0);
}

/// Truncation toward zero vs the accumulator's 14 bits, by hand: 2^13 + 1 needs 14 bits
/// (kept), 2^14 + 1 needs 15 (the 1 is dropped); promotion after the first product keeps it
/// in f32.
#[test]
fn fourteen_bit_accumulator_by_hand() {
    // 2^13 = 64·128 and 2^14 = 128·128: both products of E4M3 values (64, 128 ≤ 448).
    for (big, kept) in [(64.0f32, true), (128.0, false)] {
        let a = [big, 1.0];
        let b = [128.0f32, 1.0];
        let exact = big * 128.0 + 1.0;
        // Two groups of one product each, so the 1 meets the large sum in the accumulator.
        let one_by_one = Accumulator { group: 1, ..Accumulator::FAST_ACCUM };
        let want = if kept { exact } else { big * 128.0 };
        assert_eq!(one_by_one.dot(&a, &b), want, "2^{} + 1", (big * 128.0).log2());
        let promoted = Accumulator { promote_every: Some(1), ..one_by_one };
        assert_eq!(promoted.dot(&a, &b), exact);
    }
}

/// f32 bit patterns spread over every exponent (a stride through all 2^32), plus every
/// pattern around each format's subnormal quantum, smallest normal and largest finite value
/// (where the fast encoder switches rule or saturates), plus the specials.
fn encoder_inputs(format: Minifloat) -> Vec<f32> {
    let mut xs: Vec<f32> = (0..=u32::MAX).step_by(4099).map(f32::from_bits).collect();
    for edge in [format.min_subnormal(), format.min_subnormal() * 0.5, 2f32.powi(1 - format.bias), format.max_finite()]
    {
        let bits = edge.to_bits();
        for d in 0..=4096u32 {
            for b in [bits.wrapping_add(d), bits.wrapping_sub(d)] {
                xs.push(f32::from_bits(b));
                xs.push(-f32::from_bits(b));
            }
        }
    }
    xs.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, f32::MIN_POSITIVE, 1e-45]);
    xs
}

#[test]
fn the_fast_saturating_encoder_is_the_codec() {
    use v3lab_reference::fp8::codec::SaturatingEncoder;
    // BF16 shares f32's exponent range, so its rounding is `round_to_bf16` (next test).
    for format in [E4M3, E5M2, E5M6] {
        let fast = SaturatingEncoder::new(format);
        for x in encoder_inputs(format) {
            let (want, got) = (format.encode(x, Overflow::Saturate), fast.encode(x));
            assert_eq!(
                got,
                want,
                "{format:?}: {x:e} ({:#010x}) encodes to {got:#x}, the codec says {want:#x}",
                x.to_bits()
            );
        }
    }
}

#[test]
fn bf16_rounding_on_the_bits_is_the_codec() {
    for x in encoder_inputs(BF16) {
        let (want, got) = (BF16.round(x, Overflow::NonSaturating), v3lab_reference::fp8::round_to_bf16(x));
        assert!(
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
            "{x:e}: {got:e} vs the codec's {want:e}"
        );
    }
}
