//! Fitting the accumulator model ([`Accumulator`]) to an FP8 GEMM measured on hardware, so
//! that `fast-accum` reproduces the tensor core's outputs rather than only their order of
//! magnitude (DeepSeek-V3 §3.3.2 describes the mechanism; it does not give the rule).
//!
//! Three steps, the middle one on the GPU machine:
//! 1. [`probe_sets`] designs E4M3 operands whose dot products tell the model's choices apart
//!    (`v3lab fp8 probe --out FILE` writes them);
//! 2. `gpu/experiments/fp8_accum_probe.py` multiplies them with `torch._scaled_mm`, with and
//!    without `use_fast_accum`, and adds the outputs to the file;
//! 3. [`search`] finds the accumulator that reproduces the most outputs bit for bit
//!    (`v3lab fp8 fit --measurements FILE`).

use super::accumulate::{Accumulator, Anchor, Rounding};
use super::codec::{Overflow, E4M3};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

/// Rows of `a` (M) and of `b` (N) in every probe GEMM; both multiples of 16, as cuBLASLt's
/// FP8 path wants.
pub const PROBE_M: usize = 128;
pub const PROBE_N: usize = 16;

/// The K of the probe GEMMs: short ones to read the rule, long ones to validate it. K = 32
/// is a single FP8 `wgmma` step from a zero accumulator, the case Khattak and Mikaitis
/// validate their H100 model on (and the one the goldens' Triton GEMM says is nearly exact).
pub const PROBE_KS: [usize; 7] = [32, 64, 128, 256, 1024, 4096, 16384];

/// One probe GEMM: `c = a · bᵀ` of E4M3 codes `a` [M, K] and `b` [N, K], scales 1.
#[derive(Debug, Clone)]
pub struct ProbeSet {
    pub a: Array2<u8>,
    pub b: Array2<u8>,
}

impl ProbeSet {
    pub fn k(&self) -> usize {
        self.a.ncols()
    }
}

/// The probe GEMM of length `k` (a multiple of 32).
///
/// Column 0 of `b` is all ones, so that row `i` of `c`'s first column is the plain sum of
/// row `i` of `a`; the first rows of `a` are designed, the rest random:
/// - one large term (2^8) among K−1 small ones (2^(8−s), s = 1…17), the large one first,
///   32nd, 33rd or last: the smallest small term that still counts gives the bits kept
///   per term, and where the large term must sit to hide them gives the group length;
/// - the same with negative small terms: how dropped bits of negative terms are rounded;
/// - a first group of 32 large terms followed by small ones: whether the running sum
///   takes part in the alignment of the next group (when K > 32).
///
/// The other columns of `b` are normal, all-positive and wide-ranged random values, so
/// that every row of `a` also gives ordinary dot products.
pub fn probe_set(k: usize, seed: u64) -> ProbeSet {
    assert!(k >= 32 && k.is_multiple_of(32), "probe length {k}: a multiple of 32");
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9).wrapping_add(k as u64));
    let big = 256.0f32;
    let small = |s: i32| big * 2f32.powi(-s);
    let mut rows: Vec<Vec<f32>> = Vec::new();
    let mut positions: Vec<usize> = [0, 31, 32, k - 1].into_iter().filter(|&p| p < k).collect();
    positions.dedup();
    for position in positions {
        for s in 1..=17 {
            let mut row = vec![small(s); k];
            row[position] = big;
            rows.push(row);
        }
    }
    for s in 1..=17 {
        let mut row = vec![-small(s); k];
        row[0] = big;
        rows.push(row);
    }
    for s in (4..=17).filter(|_| k > 32) {
        let mut row = vec![small(s); k];
        row[..32].fill(big);
        rows.push(row);
    }
    while rows.len() < PROBE_M {
        let scale = 2f32.powi(rng.random_range(-6..=4));
        rows.push((0..k).map(|_| scale * rng.sample::<f32, _>(StandardNormal)).collect());
    }
    let mut cols = vec![vec![1.0f32; k]];
    while cols.len() < PROBE_N {
        let kind = cols.len() % 3;
        cols.push(
            (0..k)
                .map(|_| {
                    let x: f32 = rng.sample(StandardNormal);
                    match kind {
                        0 => x,
                        1 => x.abs(),
                        _ => x * 2f32.powi(rng.random_range(-8..=6)),
                    }
                })
                .collect(),
        );
    }
    let codes = |m: Vec<Vec<f32>>| {
        let (r, c) = (m.len(), m[0].len());
        Array2::from_shape_vec(
            (r, c),
            m.into_iter().flatten().map(|x| E4M3.encode(x, Overflow::Saturate) as u8).collect(),
        )
        .expect("rows of equal length")
    };
    ProbeSet { a: codes(rows), b: codes(cols) }
}

/// Every probe GEMM with `k ≤ max_k`.
pub fn probe_sets(max_k: usize, seed: u64) -> Vec<ProbeSet> {
    PROBE_KS.iter().filter(|&&k| k <= max_k).map(|&k| probe_set(k, seed)).collect()
}

/// Outputs measured on hardware (or produced by a known model), with their inputs.
#[derive(Debug, Clone)]
pub enum Measured {
    /// A GEMM `c = a · bᵀ` (scales 1), every output measured: a probe set or a whole GEMM.
    Gemm { a: Array2<f32>, b: Array2<f32>, c: Array2<f32> },
    /// Single instructions: `d[i] = c[i] + a[i] · b[i]`, one tensor-core step from the
    /// accumulator input `c[i]` per row (the `mma … m16n8k32` data).
    Dots { a: Array2<f32>, b: Array2<f32>, c: Vec<f32>, d: Vec<f32> },
}

/// The values of E4M3 codes.
pub fn decode(codes: &Array2<u8>) -> Array2<f32> {
    codes.mapv(|code| E4M3.decode(code as u32))
}

impl Measured {
    /// A probe GEMM and its measured output.
    pub fn new(set: &ProbeSet, c: Array2<f32>) -> Measured {
        Measured::Gemm { a: decode(&set.a), b: decode(&set.b), c }
    }

    /// The inner dimension K.
    pub fn k(&self) -> usize {
        match self {
            Measured::Gemm { a, .. } | Measured::Dots { a, .. } => a.ncols(),
        }
    }

    /// How many outputs were measured.
    pub fn len(&self) -> usize {
        match self {
            Measured::Gemm { c, .. } => c.len(),
            Measured::Dots { d, .. } => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// At least `outputs` of the measured outputs (all when there are fewer), for a search
    /// that cannot afford them all: the leading whole rows of a GEMM (a probe's designed
    /// rows come first), the first instructions of a `Dots`.
    pub fn head(&self, outputs: usize) -> Measured {
        match self {
            Measured::Gemm { a, b, c } => {
                let rows = outputs.div_ceil(b.nrows().max(1)).clamp(1, a.nrows());
                Measured::Gemm {
                    a: a.slice(ndarray::s![..rows, ..]).to_owned(),
                    b: b.clone(),
                    c: c.slice(ndarray::s![..rows, ..]).to_owned(),
                }
            }
            Measured::Dots { a, b, c, d } => {
                let n = outputs.min(d.len());
                Measured::Dots {
                    a: a.slice(ndarray::s![..n, ..]).to_owned(),
                    b: b.slice(ndarray::s![..n, ..]).to_owned(),
                    c: c[..n].to_vec(),
                    d: d[..n].to_vec(),
                }
            }
        }
    }

    /// The outputs `acc` gives for these inputs, in the order of [`Measured::outputs`].
    pub fn simulate(&self, acc: &Accumulator) -> Vec<f32> {
        match self {
            Measured::Gemm { a, b, .. } => simulate_decoded(a, b, acc).into_iter().collect(),
            Measured::Dots { a, b, c, .. } => (0..a.nrows())
                .into_par_iter()
                .map(|i| {
                    let (x, y) = (a.row(i), b.row(i));
                    acc.dot_from(c[i], x.as_slice().expect("standard layout"), y.as_slice().expect("standard layout"))
                })
                .collect(),
        }
    }

    /// The measured outputs, row-major.
    pub fn outputs(&self) -> Vec<f32> {
        match self {
            Measured::Gemm { c, .. } => c.iter().copied().collect(),
            Measured::Dots { d, .. } => d.clone(),
        }
    }
}

/// `a · bᵀ` of a probe GEMM as `acc` computes it.
pub fn simulate(set: &ProbeSet, acc: &Accumulator) -> Array2<f32> {
    simulate_decoded(&decode(&set.a), &decode(&set.b), acc)
}

fn simulate_decoded(a: &Array2<f32>, b: &Array2<f32>, acc: &Accumulator) -> Array2<f32> {
    let values: Vec<f32> = (0..a.nrows())
        .into_par_iter()
        .flat_map_iter(|i| {
            let row = a.row(i).to_vec();
            (0..b.nrows()).map(move |j| acc.dot(&row, b.row(j).as_slice().expect("standard layout")))
        })
        .collect();
    Array2::from_shape_vec((a.nrows(), b.nrows()), values).expect("M × N values")
}

/// How well a model reproduces measured outputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Outputs reproduced bit for bit.
    pub exact: usize,
    pub total: usize,
    /// Σ over outputs of log2(1 + distance in f32 units in the last place): what the
    /// search descends (a count of exact outputs alone has plateaus a search cannot cross).
    pub log_ulps: f64,
    /// Largest |model − measured| / |measured|.
    pub max_rel: f64,
}

impl Score {
    /// Better: closer in log ulps, then more outputs exact.
    fn better_than(&self, other: &Score) -> bool {
        (-self.log_ulps, self.exact) > (-other.log_ulps, other.exact)
    }
}

/// An f32's position on the number line in units in the last place.
fn ordinal(x: f32) -> i64 {
    let bits = x.to_bits() as i32 as i64;
    if bits < 0 {
        i32::MIN as i64 - bits
    } else {
        bits
    }
}

pub fn score(acc: &Accumulator, measured: &[Measured]) -> Score {
    let mut s = Score { exact: 0, total: 0, log_ulps: 0.0, max_rel: 0.0 };
    for m in measured {
        for (x, y) in m.simulate(acc).into_iter().zip(m.outputs()) {
            s.total += 1;
            s.exact += (x.to_bits() == y.to_bits()) as usize;
            s.log_ulps += ((ordinal(x) - ordinal(y)).unsigned_abs() as f64).ln_1p() / std::f64::consts::LN_2;
            if y != 0.0 {
                s.max_rel = s.max_rel.max(((x - y) / y).abs() as f64);
            } else if x != 0.0 {
                s.max_rel = f64::INFINITY;
            }
        }
    }
    s
}

// The values each field of [`Accumulator`] may take in the search.
const GROUPS: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, 128];
const ROUNDINGS: [Rounding; 3] = [Rounding::TowardZero, Rounding::Floor, Rounding::NearestEven];
/// The probes are E4M3, whose least normal exponent is −6.
const ANCHORS: [Anchor; 2] = [Anchor::Product, Anchor::FactorExponents { emin: -6 }];

fn bits(lo: u32, hi: u32) -> Vec<Option<u32>> {
    std::iter::once(None).chain((lo..=hi).map(Some)).collect()
}

/// Every model that differs from `acc` in one field.
fn neighbours(acc: &Accumulator) -> Vec<Accumulator> {
    let mut out = Vec::new();
    out.extend(GROUPS.map(|group| Accumulator { group, ..*acc }));
    out.extend([false, true].map(|align_accumulator| Accumulator { align_accumulator, ..*acc }));
    out.extend(bits(8, 28).into_iter().map(|kept_bits| Accumulator { kept_bits, ..*acc }));
    out.extend(ROUNDINGS.map(|term_rounding| Accumulator { term_rounding, ..*acc }));
    out.extend(ANCHORS.map(|anchor| Accumulator { anchor, ..*acc }));
    out.extend(bits(10, 28).into_iter().map(|acc_bits| Accumulator { acc_bits, ..*acc }));
    out.extend(ROUNDINGS.map(|acc_rounding| Accumulator { acc_rounding, ..*acc }));
    out.extend(
        [None, Some(32), Some(64), Some(128), Some(256), Some(512)]
            .map(|promote_every| Accumulator { promote_every, ..*acc }),
    );
    out.retain(|candidate| candidate != acc);
    out
}

/// Models searched: first every alignment (group, accumulator in it or not, bits kept per
/// term and their rounding) with an unbounded accumulator and no promotion, which is what
/// dominates the error; then, from the best few of those and from `starts`, a coordinate
/// search over every field: one field at a time changes to the value that scores best,
/// until no single change improves. Returns the best model found and its score.
pub fn search(measured: &[Measured], starts: &[Accumulator]) -> (Accumulator, Score) {
    let mut alignments = Vec::new();
    for group in GROUPS {
        for align_accumulator in [false, true] {
            for term_rounding in ROUNDINGS {
                for kept_bits in bits(8, 28) {
                    alignments.push(Accumulator {
                        group,
                        align_accumulator,
                        kept_bits,
                        term_rounding,
                        ..Accumulator::EXACT
                    });
                }
            }
        }
    }
    let mut scored: Vec<(Accumulator, Score)> = alignments.into_iter().map(|a| (a, score(&a, measured))).collect();
    scored.sort_by(|x, y| x.1.log_ulps.total_cmp(&y.1.log_ulps));
    let mut best: Option<(Accumulator, Score)> = None;
    let from_starts = starts.iter().map(|s| (*s, score(s, measured)));
    for mut current in scored.into_iter().take(4).chain(from_starts) {
        loop {
            let improved = neighbours(&current.0)
                .into_iter()
                .map(|candidate| (candidate, score(&candidate, measured)))
                .filter(|(_, s)| s.better_than(&current.1))
                .reduce(|a, b| if b.1.better_than(&a.1) { b } else { a });
            match improved {
                Some(next) => current = next,
                None => break,
            }
            if current.1.exact == current.1.total {
                break;
            }
        }
        if best.as_ref().is_none_or(|b| current.1.better_than(&b.1)) {
            best = Some(current);
        }
    }
    best.expect("at least one start")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model none of the presets is: the search must find one that reproduces it exactly.
    const HIDDEN: Accumulator = Accumulator {
        group: 16,
        align_accumulator: true,
        kept_bits: Some(13),
        term_rounding: Rounding::Floor,
        anchor: Anchor::Product,
        acc_bits: Some(14),
        acc_rounding: Rounding::NearestEven,
        promote_every: None,
    };

    fn measured_by(acc: &Accumulator) -> Vec<Measured> {
        probe_sets(64, 7).iter().map(|set| Measured::new(set, simulate(set, acc))).collect()
    }

    #[test]
    fn the_design_tells_the_presets_apart_and_the_search_recovers_a_hidden_model() {
        let measured = measured_by(&HIDDEN);
        for preset in [Accumulator::FAST_ACCUM, Accumulator::FAST_ACCUM_ALIGNED, Accumulator::EXACT] {
            let s = score(&preset, &measured);
            assert!(s.exact < s.total * 9 / 10, "{preset:?} already reproduces {} of {}", s.exact, s.total);
        }
        let (found, s) = search(&measured, &[Accumulator::FAST_ACCUM, Accumulator::EXACT]);
        assert_eq!(s.exact, s.total, "best model {found:?} reproduces {} of {}", s.exact, s.total);
        assert_eq!((found.kept_bits, found.acc_bits), (HIDDEN.kept_bits, HIDDEN.acc_bits));
    }

    #[test]
    fn the_search_recovers_the_toolbox_model_with_its_factor_exponent_anchor() {
        let measured = measured_by(&Accumulator::H100);
        let (found, s) = search(&measured, &[Accumulator::FAST_ACCUM, Accumulator::EXACT]);
        assert_eq!(s.exact, s.total, "best model {found:?} reproduces {} of {}", s.exact, s.total);
        assert_eq!(found.anchor, Accumulator::H100.anchor);
        // Anchoring on the product instead misses some outputs: the probes tell them apart.
        let by_product = Accumulator { anchor: Anchor::Product, ..Accumulator::H100 };
        let s = score(&by_product, &measured);
        assert!(s.exact < s.total, "the anchor is invisible to the probes");
    }

    #[test]
    fn a_dot_measurement_starts_from_its_accumulator_input() {
        // 1 + 2^-12 in the accumulator, one product 2^4: the H100 aligns the accumulator
        // with the product (quantum 2^(4 − 13)), so 2^-12 truncates away; the exact sum keeps it.
        let one = |x: f32| Array2::from_elem((1, 1), x);
        let m = Measured::Dots { a: one(4.0), b: one(4.0), c: vec![1.0 + 2f32.powi(-12)], d: vec![17.0] };
        assert_eq!(m.simulate(&Accumulator::H100), vec![17.0]);
        assert_eq!(m.simulate(&Accumulator::EXACT), vec![17.0 + 2f32.powi(-12)]);
        assert_eq!(score(&Accumulator::H100, std::slice::from_ref(&m)).exact, 1);
        assert_eq!(m.head(10).len(), 1);
    }

    #[test]
    fn probe_values_are_exact_in_e4m3() {
        let set = probe_set(64, 1);
        let (a, b) = (decode(&set.a), decode(&set.b));
        // The designed rows: 2^8 and 2^(8 − s) survive the encoding unchanged.
        assert_eq!(a[[0, 0]], 256.0);
        assert_eq!(a[[16, 1]], 2f32.powi(-9));
        assert!(b.row(0).iter().all(|&x| x == 1.0));
        assert!(a.iter().chain(b.iter()).all(|x| x.is_finite()));
    }
}
