//! The accumulator presets against FP8 outputs measured on real GPUs
//! (`../shared/goldens/fp8-hardware`, see its README): 5,000 single `mma.sync m16n8k32`
//! E4M3 instructions on an H100, an Ada GPU and a B200, and a whole K = 4096 GEMM of
//! `torch._scaled_mm` on an H100 with and without fast accumulation.
//!
//! A preset fitted to a chip must reproduce at least 99.9% of its outputs bit for bit. The
//! alternatives it was chosen over are scored too and must fall short, so the data tell the
//! rules apart (the numbers are printed with `--nocapture`; `docs/fp8-accumulators.md`
//! discusses them).

use ndarray::Array2;
use v3lab_reference::fp8::accumulate::{Accumulator, Anchor, Rounding};
use v3lab_reference::fp8::fit::{self, Measured};
use v3lab_reference::fp8::hardware::{self, Measurement};
use v3lab_reference::fp8::{gemm, Scaling, E4M3};
use v3lab_reference::io::MappedFile;
use v3lab_reference::lab::goldens_dir;

/// The share of a chip's outputs a fitted preset must reproduce exactly (the bar).
const FITTED_SHARE: f64 = 0.999;

fn read(file: &str) -> Vec<Measurement> {
    let path = goldens_dir().join("fp8-hardware").join(file);
    hardware::read(&path).unwrap_or_else(|e| panic!("goldens missing ({e}); set V3LAB_GOLDENS"))
}

fn instructions(chip: &str) -> Vec<Measured> {
    let all = read("mma_m16n8k32_e4m3.safetensors");
    all.into_iter().find(|m| m.name == chip).unwrap_or_else(|| panic!("no `{chip}` instructions")).sets
}

/// The share reproduced bit for bit, printed.
fn share(what: &str, acc: &Accumulator, measured: &[Measured]) -> f64 {
    let s = fit::score(acc, measured);
    let share = s.exact as f64 / s.total as f64;
    eprintln!(
        "{what}: {} / {} bit for bit ({:.2}%), max rel. error {:.2e}",
        s.exact,
        s.total,
        100.0 * share,
        s.max_rel
    );
    share
}

/// The preset reproduces the chip; each alternative (a one-field change that was ruled out)
/// reproduces less than the bar.
fn fitted(chip: &str, preset: &str, measured: &[Measured], ruled_out: &[(&str, Accumulator)]) {
    let acc = Accumulator::preset(preset).unwrap();
    let got = share(&format!("{chip}: `{preset}`"), &acc, measured);
    assert!(got >= FITTED_SHARE, "`{preset}` reproduces only {:.2}% of the {chip}'s outputs", 100.0 * got);
    for (what, alternative) in ruled_out {
        let alt = share(&format!("{chip}: {what}"), alternative, measured);
        assert!(alt < FITTED_SHARE, "{what} fits the {chip} as well: the data do not decide it");
    }
}

/// One-field changes of `acc`, each a rival reading of the mechanism.
fn rivals(acc: Accumulator) -> Vec<(&'static str, Accumulator)> {
    vec![
        ("products anchored by their own exponent", Accumulator { anchor: Anchor::Product, ..acc }),
        ("running sum added after the aligned group", Accumulator { align_accumulator: false, ..acc }),
        ("one more bit kept per term", Accumulator { kept_bits: acc.kept_bits.map(|b| b + 1), ..acc }),
        ("one bit fewer kept per term", Accumulator { kept_bits: acc.kept_bits.map(|b| b - 1), ..acc }),
        ("terms rounded to nearest", Accumulator { term_rounding: Rounding::NearestEven, ..acc }),
        ("terms rounded toward −∞", Accumulator { term_rounding: Rounding::Floor, ..acc }),
        ("accumulator rounded to nearest", Accumulator { acc_rounding: Rounding::NearestEven, ..acc }),
        ("accumulator one bit wider", Accumulator { acc_bits: acc.acc_bits.map(|b| b + 1), ..acc }),
        ("groups of 8", Accumulator { group: 8, ..acc }),
        ("groups of 16", Accumulator { group: 16, ..acc }),
        ("groups of 32", Accumulator { group: 32, ..acc }),
    ]
    .into_iter()
    .filter(|(_, rival)| *rival != acc)
    .collect()
}

#[test]
fn h100_instructions_follow_the_h100_preset() {
    let measured = instructions("h100");
    // These instructions start from c = 0, so whether the running sum joins the alignment
    // is invisible in them (the GEMM below decides it).
    let mut rivals = rivals(Accumulator::H100);
    rivals.retain(|(_, rival)| rival.align_accumulator);
    fitted("h100", "h100", &measured, &rivals);
    let unaligned = Accumulator { align_accumulator: false, ..Accumulator::H100 };
    assert!(share("h100: running sum added after the group (undecided here)", &unaligned, &measured) >= FITTED_SHARE);
    for hypothesis in ["fast-accum", "fast-accum-aligned", "exact"] {
        let acc = Accumulator::preset(hypothesis).unwrap();
        assert!(share(&format!("h100: `{hypothesis}`"), &acc, &measured) < 0.95);
    }
}

#[test]
fn ada_instructions_follow_the_ada_preset() {
    // The Ada data carry a non-zero accumulator input, so they also show that the running
    // sum takes part in each step's alignment.
    let measured = instructions("ada");
    fitted("ada", "ada", &measured, &rivals(Accumulator::ADA));
    assert!(share("ada: `h100`", &Accumulator::H100, &measured) < 0.9);
}

#[test]
fn b200_instructions_follow_the_b200_preset() {
    let measured = instructions("b200");
    fitted(
        "b200",
        "b200",
        &measured,
        &[
            ("16 products per step", Accumulator { group: 16, ..Accumulator::B200 }),
            ("sequential f32", Accumulator::FP32),
            ("14 bits kept per product", Accumulator { kept_bits: Some(14), ..Accumulator::B200 }),
            ("the accumulator truncated", Accumulator { acc_rounding: Rounding::TowardZero, ..Accumulator::B200 }),
            (
                "the running sum aligned with 26-bit products",
                Accumulator { kept_bits: Some(26), align_accumulator: true, ..Accumulator::B200 },
            ),
        ],
    );
    // What the data cannot decide: any product alignment keeping ≥ 22 bits fits as well.
    let wide = Accumulator { kept_bits: Some(22), ..Accumulator::B200 };
    assert!(share("b200: 22 bits kept per product", &wide, &measured) >= FITTED_SHARE);
}

/// The K = 4096 GEMM through `gemm` as `v3lab fp8 gemm` runs it.
fn scaled_mm(scaling: Scaling, acc: &Accumulator) -> (Array2<f32>, Array2<f32>, Array2<f32>) {
    let path = goldens_dir().join("fp8-hardware/h100_scaled_mm_normal_K4096.safetensors");
    let file = MappedFile::open(&path).unwrap_or_else(|e| panic!("goldens missing ({e}); set V3LAB_GOLDENS"));
    let a = hardware::codes(&file, "a").unwrap().mapv(u16::from);
    let b = hardware::codes(&file, "b").unwrap().mapv(u16::from);
    let (sa, sb) = scaling.scale_shapes(a.nrows(), b.nrows(), a.ncols());
    let (qa, qb) = scaling.operands(E4M3, (a, Array2::ones(sa)), (b, Array2::ones(sb))).unwrap();
    let c = gemm(&qa, &qb, acc).unwrap();
    let f32_2d = |name: &str| file.f32(name).unwrap().into_dimensionality().unwrap();
    (c, f32_2d("c_fast_accum"), f32_2d("c_promoted"))
}

/// The share of outputs equal bit for bit, printed as a count.
fn same_bits(x: &Array2<f32>, y: &Array2<f32>) -> f64 {
    let same = x.iter().zip(y).filter(|(a, b)| a.to_bits() == b.to_bits()).count();
    eprint!("{same} / {} = ", x.len());
    same as f64 / x.len() as f64
}

#[test]
fn the_h100_gemm_is_the_h100_preset_without_promotion_and_with_it() {
    // One scale per operand: all of K = 4096 accumulates in the tensor core.
    let (c, fast, promoted) = scaled_mm(Scaling::Tensor, &Accumulator::H100);
    let got = same_bits(&c, &fast);
    eprintln!("h100 GEMM, use_fast_accum=True: `h100`, tensor scaling: {:.2}% bit for bit", 100.0 * got);
    assert!(got >= FITTED_SHARE);
    let (c, _, _) = scaled_mm(Scaling::Tensor, &Accumulator::H100_PROMOTE_128);
    let got = same_bits(&c, &promoted);
    eprintln!("h100 GEMM, use_fast_accum=False: `h100-promote-128`: {:.2}% bit for bit", 100.0 * got);
    assert!(got >= FITTED_SHARE);
    // Block scaling restarts the tensor core every 128 even with unit scales: that is the
    // promoted path, never the fast one (why the CLI needs `--scaling tensor`).
    let (c, _, _) = scaled_mm(Scaling::Block, &Accumulator::H100);
    assert_eq!(c, scaled_mm(Scaling::Tensor, &Accumulator::H100_PROMOTE_128).0);
    // What the single instructions could not show (their accumulator input is zero): the
    // running sum joins each step's alignment, as the toolbox's model says.
    let rivals = [
        ("`fast-accum` (the paper's reading)", Accumulator::FAST_ACCUM),
        ("running sum added after the aligned group", Accumulator { align_accumulator: false, ..Accumulator::H100 }),
        ("products anchored by their own exponent", Accumulator { anchor: Anchor::Product, ..Accumulator::H100 }),
        ("groups of 16", Accumulator { group: 16, ..Accumulator::H100 }),
    ];
    for (what, acc) in rivals {
        let (c, _, _) = scaled_mm(Scaling::Tensor, &acc);
        let got = same_bits(&c, &fast);
        eprintln!("h100 GEMM, use_fast_accum=True: {what}: {:.2}% bit for bit", 100.0 * got);
        assert!(got < FITTED_SHARE, "{what} fits the GEMM as well");
    }
}

#[test]
fn the_search_finds_the_h100_and_ada_rules_from_the_hypotheses() {
    // The tool that identified the rules, started only from presets not fitted to a chip.
    let starts = [Accumulator::FAST_ACCUM, Accumulator::FAST_ACCUM_ALIGNED, Accumulator::EXACT];
    for chip in ["h100", "ada"] {
        let measured = instructions(chip);
        let train: Vec<Measured> = measured.iter().map(|m| m.head(1000)).collect();
        let (found, _) = fit::search(&train, &starts);
        let got = share(&format!("{chip}: the search's model {found:?}"), &found, &measured);
        assert!(got >= FITTED_SHARE, "the search found {found:?}, which reproduces {:.2}%", 100.0 * got);
    }
}
