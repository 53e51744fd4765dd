//! The FP8-simulated linear layer (Figure 6) against exact f64 products, with error bounds
//! derived from the formats, not measured from the code.

use ndarray::Array2;
use rand::{rngs::StdRng, Rng, SeedableRng};
use v3lab_reference::fp8::accumulate::Accumulator;
use v3lab_reference::fp8::{Fp8Linear, LinearPrecision, ScaleMode, E4M3, E5M6};

/// E4M3's unit roundoff: 3 mantissa bits, round to nearest → relative error ≤ 2^-4 for
/// values in the normal range (the inputs below never scale into subnormals).
const E4M3_UNIT: f64 = 0.0625;
/// E5M6's: 6 mantissa bits → 2^-7 (its inputs here are scaled into its normal range too).
const E5M6_UNIT: f64 = 1.0 / 128.0;

/// The 14-bit accumulator with promotion every 128: in one group of 32 each term loses less
/// than 2^-13 of the group's largest term (≤ 32·2^-13 = 2^-8 of the group's Σ|t|) and the
/// accumulator less than 2^-13 of itself; over a chunk that is below 2^-7 of Σ|products|.
const PROMOTE_128_ACCUMULATION: f64 = 1.0 / 128.0;

/// f32 accumulation of K terms in any order: |error| ≤ K·2^-24·Σ|terms| to first order; a
/// factor 2 covers the second-order terms and the scaling products.
fn f32_gemm_bound(k: usize) -> f64 {
    2.0 * k as f64 * 2f64.powi(-24)
}

fn rand_matrix(rng: &mut StdRng, rows: usize, cols: usize, lo: f32, hi: f32) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |_| {
        let v = rng.random_range(lo..hi);
        if rng.random::<bool>() {
            v
        } else {
            -v
        }
    })
}

/// Entries are ±E4M3 normal values in [1, 448]: with power-of-two scales every scaled
/// value stays exactly representable, so quantization is lossless.
fn e4m3_matrix(rng: &mut StdRng, rows: usize, cols: usize) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |_| {
        let v = E4M3.decode(rng.random_range(0x38u32..=0x7e));
        if rng.random::<bool>() {
            v
        } else {
            -v
        }
    })
}

/// Σ a·b and Σ |a·b| in f64: products of f32 are exact in f64, and the sums' rounding
/// (≤ K·2^-53 relative) is negligible against every bound below.
fn matmul_nt(a: &Array2<f32>, b: &Array2<f32>) -> (Array2<f64>, Array2<f64>) {
    let (a, b) = (a.as_standard_layout(), b.as_standard_layout());
    let (m, n) = (a.nrows(), b.nrows());
    let (mut exact, mut abs) = (Array2::zeros((m, n)), Array2::zeros((m, n)));
    for (i, ra) in a.rows().into_iter().enumerate() {
        for (j, rb) in b.rows().into_iter().enumerate() {
            let (mut s, mut sa) = (0.0f64, 0.0f64);
            for (&x, &y) in ra.iter().zip(rb.iter()) {
                let p = x as f64 * y as f64;
                s += p;
                sa += p.abs();
            }
            exact[[i, j]] = s;
            abs[[i, j]] = sa;
        }
    }
    (exact, abs)
}

/// Checks |c − exact| ≤ rel · Σ|a·b| elementwise and reports the worst ratio.
fn check(what: &str, c: &Array2<f32>, a: &Array2<f32>, b: &Array2<f32>, rel: f64) {
    let (exact, abs) = matmul_nt(a, b);
    assert_eq!(c.dim(), exact.dim(), "{what}: shape");
    let mut worst = (0.0f64, (0, 0));
    for ((idx, &x), (&e, &s)) in c.indexed_iter().zip(exact.iter().zip(abs.iter())) {
        let ratio = (x as f64 - e).abs() / (rel * s);
        if ratio > worst.0 {
            worst = (ratio, idx);
        }
    }
    eprintln!("{what}: worst |c − exact| / bound = {:.3} at {:?}", worst.0, worst.1);
    assert!(worst.0 <= 1.0, "{what}: error beyond the bound at {:?}", worst.1);
}

/// Fprop, Dgrad and Wgrad with the paper's recipe stay within the bound that E4M3 rounding
/// of both operands plus the promoted 14-bit accumulator allow.
#[test]
fn paper_recipe_is_within_format_bounds() {
    let mut rng = StdRng::seed_from_u64(6);
    let (t, d_in, d_out) = (256, 300, 136); // ragged last blocks in both channel dims
                                            // Magnitudes in [0.5, 1]: every 1×128 tile's max is ≥ 0.5, so scaled values stay ≥ 224
                                            // /2 … 448: normal E4M3, where the unit roundoff bound holds.
    let x = rand_matrix(&mut rng, t, d_in, 0.5, 1.0);
    let w = rand_matrix(&mut rng, d_out, d_in, 0.5, 1.0);
    let dy = rand_matrix(&mut rng, t, d_out, 0.5, 1.0);
    // Relative error of a product of two rounded operands: (1 + u_a)(1 + u_b) − 1.
    let both = |ua: f64, ub: f64| ua + ub + ua * ub;
    let promoted = PROMOTE_128_ACCUMULATION * (1.0 + E4M3_UNIT).powi(2);
    let e4m3 = Fp8Linear::default();
    let e5m6 = Fp8Linear::attention_output();
    for (name, cfg, extra) in [
        ("exact", Fp8Linear { accumulator: Accumulator::EXACT, ..e4m3 }, 0.0),
        ("the recipe's default (exact-promote-128)", e4m3, 0.0),
        ("promote-128", Fp8Linear { accumulator: Accumulator::PROMOTE_128, ..e4m3 }, promoted),
        ("h100-promote-128", Fp8Linear { accumulator: Accumulator::H100_PROMOTE_128, ..e4m3 }, promoted),
        ("attention-output (E5M6 inputs)", e5m6, 0.0),
    ] {
        let ux = if cfg.activation_format == E5M6 { E5M6_UNIT } else { E4M3_UNIT };
        let rel = |k: usize, ua: f64, ub: f64| both(ua, ub) + extra + f32_gemm_bound(k);
        let y = cfg.forward(x.view(), w.view()).unwrap();
        check(&format!("fprop {name}"), &y, &x, &w, rel(d_in, ux, E4M3_UNIT));
        let wt = w.t().to_owned();
        let dx = cfg.backward_input(dy.view(), w.view()).unwrap();
        check(&format!("dgrad {name}"), &dx, &dy, &wt, rel(d_out, E4M3_UNIT, E4M3_UNIT));
        let (dyt, xt) = (dy.t().to_owned(), x.t().to_owned());
        let dw = cfg.backward_weight(dy.view(), x.view()).unwrap();
        check(&format!("wgrad {name}"), &dw, &dyt, &xt, rel(t, E4M3_UNIT, ux));
    }
}

/// The two variants the training loop chooses between agree on inputs FP8 represents
/// exactly: with power-of-two scales and exact accumulation the FP8 path loses nothing, so
/// both are the exact product up to f32 accumulation.
#[test]
fn f32_and_lossless_fp8_variants_agree() {
    let mut rng = StdRng::seed_from_u64(7);
    let (t, d_in, d_out) = (256, 300, 130);
    let x = e4m3_matrix(&mut rng, t, d_in);
    let w = e4m3_matrix(&mut rng, d_out, d_in);
    let dy = e4m3_matrix(&mut rng, t, d_out);
    let fp8 = LinearPrecision::Fp8(Fp8Linear {
        accumulator: Accumulator::EXACT,
        scale_mode: ScaleMode::PowerOfTwo,
        ..Fp8Linear::default()
    });
    for (name, v) in [("f32", LinearPrecision::F32), ("fp8 lossless", fp8)] {
        let y = v.forward(x.view(), w.view()).unwrap();
        check(&format!("{name} forward"), &y, &x, &w, f32_gemm_bound(d_in));
        let (dx, dw) = v.backward(dy.view(), x.view(), w.view()).unwrap();
        check(&format!("{name} dx"), &dx, &dy, &w.t().to_owned(), f32_gemm_bound(d_out));
        check(&format!("{name} dw"), &dw, &dy.t().to_owned(), &x.t().to_owned(), f32_gemm_bound(t));
    }
}

/// The paper's BF16 baseline through the `Backend` seam the model uses: `linear_mixed` and
/// `linear_backward_mixed` with `Bf16` are the f64 products of the inputs rounded by the
/// `half` crate, up to f32 accumulation, and within BF16's unit roundoff (2⁻⁸ per operand)
/// of the unrounded products.
#[test]
fn bf16_through_the_backend_is_the_product_of_rounded_inputs() {
    use v3lab_reference::backend::prelude::*;
    let b = v3lab_reference::CpuBackend::default();
    let mut rng = StdRng::seed_from_u64(8);
    let (t, d_in, d_out) = (70, 200, 33);
    let x = rand_matrix(&mut rng, t, d_in, 0.01, 3.0);
    let w = rand_matrix(&mut rng, d_out, d_in, 0.01, 3.0);
    let dy = rand_matrix(&mut rng, t, d_out, 0.01, 3.0);
    let bf16 = |a: &Array2<f32>| a.mapv(|v| half::bf16::from_f32(v).to_f32());
    let on = |a: &Array2<f32>| b.upload(a.view().into_dyn()).unwrap();
    let off = |a: ndarray::ArrayD<f32>| a.into_dimensionality::<ndarray::Ix2>().unwrap();
    let y = off(b.linear_mixed(&on(&x), &on(&w), &LinearPrecision::Bf16).unwrap());
    let (dx, dw) = b.linear_backward_mixed(&on(&x), &on(&w), &on(&dy), &LinearPrecision::Bf16).unwrap();
    let (dx, dw) = (off(dx), off(dw));
    let (wt, dyt, xt) = (w.t().to_owned(), dy.t().to_owned(), x.t().to_owned());
    check("bf16 forward, rounded inputs", &y, &bf16(&x), &bf16(&w), f32_gemm_bound(d_in));
    check("bf16 dx, rounded inputs", &dx, &bf16(&dy), &bf16(&wt), f32_gemm_bound(d_out));
    check("bf16 dw, rounded inputs", &dw, &bf16(&dyt), &bf16(&xt), f32_gemm_bound(t));
    let unit = 2f64.powi(-8);
    let rel = |k: usize| 2.0 * unit + unit * unit + f32_gemm_bound(k);
    check("bf16 forward", &y, &x, &w, rel(d_in));
    check("bf16 dx", &dx, &dy, &wt, rel(d_out));
    check("bf16 dw", &dw, &dyt, &xt, rel(t));
    // …and not the f32 product: the rounding happened.
    let exact = b.linear(&on(&x), &on(&w)).unwrap();
    assert!(off(exact).iter().zip(y.iter()).any(|(a, c)| a != c));
}
