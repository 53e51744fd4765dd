//! FP8 codecs, `act_quant`, `weight_dequant` and `fp8_gemm` against the goldens made by
//! PyTorch and the public Triton kernels on an H100 (`../shared/goldens/fp8`).

use ndarray::{Array2, Ix1, Ix2};
use std::path::PathBuf;
use v3lab_reference::fp8::accumulate::Accumulator;
use v3lab_reference::fp8::{
    act_quant, gemm, weight_dequant, Granularity, Overflow, Quantized, ScaleMode, E4M3, E5M2, PRESETS,
};
use v3lab_reference::io::MappedFile;

/// Bit patterns and f32 values that must match exactly (ARCHITECTURE.md: named tolerances; `FP8_BITS` is exact).
const FP8_BITS: usize = 0;

/// `fp8_gemm` against the H100 output, `‖c − ref‖ / ‖ref‖`. The Triton kernel adds each
/// 128-long slice of K inside the tensor core (the goldens README measures 4.9e-8 from the
/// exact product) and then scales and adds in f32 as we do; what is left is the tensor
/// core's in-slice rounding plus f32 roundings of the scaled partials: a few 1e-8. 1e-6
/// leaves room for that and still catches any wrong scale or block index (those give ≥ 1e-3).
const GEMM_VS_TRITON: f64 = 1e-6;

fn goldens_dir() -> PathBuf {
    match std::env::var_os("V3LAB_GOLDENS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/goldens"),
    }
}

fn fp8_file() -> MappedFile {
    let path = goldens_dir().join("fp8/fp8.safetensors");
    MappedFile::open(&path).unwrap_or_else(|e| panic!("goldens missing ({e}); set V3LAB_GOLDENS"))
}

fn bytes(f: &MappedFile, name: &str) -> Vec<u8> {
    f.bytes(name).unwrap().2.to_vec()
}

fn f32_1d(f: &MappedFile, name: &str) -> Vec<f32> {
    f.f32(name).unwrap().into_dimensionality::<Ix1>().unwrap().to_vec()
}

fn f32_2d(f: &MappedFile, name: &str) -> Array2<f32> {
    f.f32(name).unwrap().into_dimensionality::<Ix2>().unwrap()
}

fn u8_2d(f: &MappedFile, name: &str) -> Array2<u8> {
    let (shape, _, data) = f.bytes(name).unwrap();
    Array2::from_shape_vec((shape[0], shape[1]), data.to_vec()).unwrap()
}

/// Encodes every input and counts mismatching bytes; prints the first ones as evidence.
fn check_cast(inputs: &[f32], expected: &[u8], encode: impl Fn(f32) -> u32, what: &str) {
    assert_eq!(inputs.len(), expected.len());
    let mut bad = Vec::new();
    for (&x, &e) in inputs.iter().zip(expected) {
        let got = encode(x) as u8;
        if got != e {
            bad.push((x, got, e));
        }
    }
    for (x, got, e) in bad.iter().take(10) {
        eprintln!("{what}: x = {x:e} ({:#010x}): got {got:#04x}, expected {e:#04x}", x.to_bits());
    }
    eprintln!("{what}: {} of {} bit-exact", inputs.len() - bad.len(), inputs.len());
    assert_eq!(bad.len(), FP8_BITS, "{what}: {} mismatches", bad.len());
}

#[test]
fn every_bf16_value_casts_like_pytorch() {
    let f = fp8_file();
    let x = f32_1d(&f, "bf16_as_f32");
    assert_eq!(x.len(), 65536);
    // PyTorch's cast does not saturate: the non-saturating mode must reproduce it.
    check_cast(&x, &bytes(&f, "to_e4m3fn_bits"), |v| E4M3.encode(v, Overflow::NonSaturating), "bf16 → e4m3fn");
    check_cast(&x, &bytes(&f, "to_e5m2_bits"), |v| E5M2.encode(v, Overflow::NonSaturating), "bf16 → e5m2");
}

#[test]
fn random_values_cast_like_pytorch() {
    let f = fp8_file();
    let x = f32_1d(&f, "rand_f32");
    assert_eq!(x.len(), 100_000);
    // The E4M3 column was clamped to ±448 before the cast, which is what saturation does.
    check_cast(&x, &bytes(&f, "rand_to_e4m3fn_bits"), |v| E4M3.encode(v, Overflow::Saturate), "rand → e4m3fn");
    check_cast(&x, &bytes(&f, "rand_to_e5m2_bits"), |v| E5M2.encode(v, Overflow::NonSaturating), "rand → e5m2");
}

fn check_act_quant(mode: ScaleMode, tag: &str) {
    let f = fp8_file();
    let x = f32_2d(&f, "act_quant_x");
    let q = act_quant(x.view(), mode);
    let want_s = f32_2d(&f, &format!("act_quant_{tag}_s"));
    let want_y = u8_2d(&f, &format!("act_quant_{tag}_y_bits"));
    let bad_s: Vec<_> = q.scales.iter().zip(want_s.iter()).filter(|(a, b)| a.to_bits() != b.to_bits()).collect();
    let bad_y = q.bytes().iter().zip(want_y.iter()).filter(|(a, b)| a != b).count();
    for (got, want) in bad_s.iter().take(5) {
        eprintln!("act_quant {tag}: scale {got:e} vs {want:e}");
    }
    eprintln!(
        "act_quant {tag}: scales {}/{} bit-exact, codes {}/{} bit-exact",
        want_s.len() - bad_s.len(),
        want_s.len(),
        want_y.len() - bad_y,
        want_y.len()
    );
    assert_eq!(bad_s.len(), FP8_BITS);
    assert_eq!(bad_y, FP8_BITS);
}

#[test]
fn act_quant_plain_is_bit_exact() {
    check_act_quant(ScaleMode::F32, "plain");
}

#[test]
fn act_quant_ue8m0_is_bit_exact() {
    check_act_quant(ScaleMode::PowerOfTwo, "ue8m0");
}

#[test]
fn weight_dequant_is_bit_exact() {
    let f = fp8_file();
    let y = weight_dequant(u8_2d(&f, "wd_w_bits").view(), f32_2d(&f, "wd_s").view());
    let want = f32_2d(&f, "wd_y");
    let bad = y.iter().zip(want.iter()).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    eprintln!("weight_dequant: {}/{} bit-exact", want.len() - bad, want.len());
    assert_eq!(bad, FP8_BITS);
}

fn golden_gemm(accumulator: &Accumulator) -> (f64, usize, usize) {
    let f = fp8_file();
    let a = Quantized {
        format: E4M3,
        codes: u8_2d(&f, "gemm_a_bits").mapv(u16::from),
        scales: f32_2d(&f, "gemm_a_s"),
        block: Granularity::Tile(128).block_shape(64, 512),
    };
    let b = Quantized {
        format: E4M3,
        codes: u8_2d(&f, "gemm_b_bits").mapv(u16::from),
        scales: f32_2d(&f, "gemm_b_s"),
        block: Granularity::Block(128).block_shape(256, 512),
    };
    let c = gemm(&a, &b, accumulator).unwrap();
    let want = f32_2d(&f, "gemm_c");
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    let mut same = 0;
    for (&x, &y) in c.iter().zip(want.iter()) {
        diff += (x as f64 - y as f64).powi(2);
        norm += (y as f64).powi(2);
        same += (x.to_bits() == y.to_bits()) as usize;
    }
    ((diff / norm).sqrt(), same, want.len())
}

#[test]
fn fp8_gemm_within_tolerance_of_the_h100() {
    let (err, same, n) = golden_gemm(&Accumulator::EXACT);
    eprintln!("fp8_gemm (exact per 128, f32 epilogue): rel err {err:.3e}, {same}/{n} outputs bit-identical");
    assert!(err <= GEMM_VS_TRITON, "fp8_gemm relative error {err:e} > {GEMM_VS_TRITON:e}");
    // The other hypotheses, as evidence for fitting the accumulator (no pass/fail: the
    // Triton kernel may promote more often than the cuBLAS fast path does).
    let mut hypotheses: Vec<(String, Accumulator)> =
        PRESETS.iter().filter(|&&n| n != "exact").map(|n| (n.to_string(), Accumulator::preset(n).unwrap())).collect();
    // Triton may add each wgmma's (K = 32) result into f32: the 14-bit models per 32, promoted.
    for (name, acc) in [("fast-accum", Accumulator::FAST_ACCUM), ("h100", Accumulator::H100)] {
        hypotheses.push((format!("{name} promoted every 32"), Accumulator { promote_every: Some(32), ..acc }));
    }
    hypotheses.push(("exact per 32, promoted".into(), Accumulator { promote_every: Some(32), ..Accumulator::EXACT }));
    for (name, acc) in hypotheses {
        let (err, same, n) = golden_gemm(&acc);
        eprintln!("fp8_gemm with {name}: rel err {err:.3e}, {same}/{n} outputs bit-identical");
    }
}
