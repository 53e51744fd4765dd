//! Conformance checks of the primitives (layout, elementwise, products, norms, rotary,
//! embedding, rows, attention, latent attention, routing, dispatch), each generic over the
//! backend and compared with [`CpuBackend`].

use crate::suite::{expect_close, expect_indices, rand_array, rng_for, up, up_idx};
use crate::tolerance::*;
use ndarray::{ArrayD, IxDyn};
use rand::seq::SliceRandom;
use rand::Rng;
use v3lab_reference::backend::prelude::*;
use v3lab_reference::{Backend, CpuBackend, RouteSpec, ScoreFunc};

const CPU: CpuBackend = CpuBackend;

/// The host copies (f32 both ways, f64 widened and narrowed), zeros, and reshape, permute,
/// narrow, concat, expand, write_at: pure copies, bit-exact.
pub fn check_layout<B: Backend>(b: &B) {
    let mut rng = rng_for("layout");
    for shape in [vec![2, 3, 4], vec![1, 7, 5, 3], vec![33, 1, 130], vec![3, 2, 4, 5]] {
        let x = rand_array(&mut rng, &shape);
        let xb = up(b, &x);
        let tag = |op: &str| format!("{op} of {shape:?}");
        let n: usize = shape.iter().product();
        expect_close(b, &tag("upload, download"), &xb, &x, COPY_EXACT);
        let x64 = x.mapv(f64::from);
        assert_eq!(b.download_f64(&xb).unwrap(), x64, "{} {}: widened exactly", b.name(), tag("download_f64"));
        expect_close(b, &tag("upload_f64"), &b.upload_f64(x64.view()).unwrap(), &x, COPY_EXACT);
        expect_close(b, &tag("zeros"), &b.zeros(&shape).unwrap(), &ArrayD::zeros(IxDyn(&shape)), COPY_EXACT);
        expect_close(b, &tag("reshape"), &b.reshape(&xb, &[n]).unwrap(), &CPU.reshape(&x, &[n]).unwrap(), COPY_EXACT);
        let mut axes: Vec<usize> = (0..shape.len()).collect();
        axes.reverse();
        for perm in [axes.clone(), {
            axes.rotate_left(1);
            axes.clone()
        }] {
            let want = CPU.permute(&x, &perm).unwrap();
            expect_close(b, &tag(&format!("permute {perm:?}")), &b.permute(&xb, &perm).unwrap(), &want, COPY_EXACT);
        }
        for axis in 0..shape.len() {
            let (start, len) = (shape[axis] / 2, shape[axis] - shape[axis] / 2);
            let want = CPU.narrow(&x, axis, start, len).unwrap();
            expect_close(
                b,
                &tag(&format!("narrow {axis}")),
                &b.narrow(&xb, axis, start, len).unwrap(),
                &want,
                COPY_EXACT,
            );
            let mut other = shape.clone();
            other[axis] = 3;
            let y = rand_array(&mut rng, &other);
            let yb = up(b, &y);
            let want = CPU.concat(&[&x, &y, &x], axis).unwrap();
            expect_close(
                b,
                &tag(&format!("concat {axis}")),
                &b.concat(&[&xb, &yb, &xb], axis).unwrap(),
                &want,
                COPY_EXACT,
            );
            // write_at into a tensor that a clone still shares: the clone must not change.
            let mut dst = CPU.concat(&[&y, &x], axis).unwrap();
            let mut dst_b = up(b, &dst);
            let kept = dst_b.clone();
            b.write_at(&mut dst_b, &xb, axis, 1).unwrap();
            CPU.write_at(&mut dst, &x, axis, 1).unwrap();
            expect_close(b, &tag(&format!("write_at {axis}")), &dst_b, &dst, COPY_EXACT);
            expect_close(
                b,
                &tag("write_at leaves clones alone"),
                &kept,
                &CPU.concat(&[&y, &x], axis).unwrap(),
                COPY_EXACT,
            );
        }
        let mut one = shape.clone();
        one[1] = 1;
        let y = rand_array(&mut rng, &one);
        let want = CPU.expand(&y, 1, 5).unwrap();
        expect_close(b, &tag("expand"), &b.expand(&up(b, &y), 1, 5).unwrap(), &want, COPY_EXACT);
    }
}

/// add and mul with every broadcast the model uses (same shape, trailing row, column,
/// middle axis), and scale: one f32 operation per element, bit-exact.
pub fn check_elementwise<B: Backend>(b: &B) {
    let mut rng = rng_for("elementwise");
    let a_shape = [5, 7, 33];
    let a = rand_array(&mut rng, &a_shape);
    for b_shape in [vec![5, 7, 33], vec![33], vec![7, 33], vec![5, 7, 1], vec![5, 1, 33], vec![1]] {
        let y = rand_array(&mut rng, &b_shape);
        let (ab, yb) = (up(b, &a), up(b, &y));
        expect_close(b, &format!("add {b_shape:?}"), &b.add(&ab, &yb).unwrap(), &CPU.add(&a, &y).unwrap(), COPY_EXACT);
        expect_close(b, &format!("mul {b_shape:?}"), &b.mul(&ab, &yb).unwrap(), &CPU.mul(&a, &y).unwrap(), COPY_EXACT);
    }
    expect_close(b, "scale", &b.scale(&up(b, &a), -2.5).unwrap(), &CPU.scale(&a, -2.5).unwrap(), COPY_EXACT);
    assert!(b.add(&up(b, &a), &up(b, &rand_array(&mut rng, &[6]))).is_err(), "add must reject a bad broadcast");
    // Sums over each axis (the MoE combines a token's K expert outputs with one), empty ones too.
    // Long axes too (a weight's gradient sums over every token): a GPU may sum those in
    // chunks, one or two levels deep.
    for (shape, axis) in [
        (vec![5, 7, 33], 0),
        (vec![5, 7, 33], 1),
        (vec![5, 7, 33], 2),
        (vec![4, 0, 3], 1),
        (vec![0, 3], 1),
        (vec![3, 200, 5], 1),
        (vec![5000, 2], 0),
    ] {
        let x = rand_array(&mut rng, &shape);
        let tag = format!("sum_axis {shape:?} over {axis}");
        expect_close(b, &tag, &b.sum_axis(&up(b, &x), axis).unwrap(), &CPU.sum_axis(&x, axis).unwrap(), F32_REDUCTION);
    }
}

/// linear (rank 2 and 3 inputs) with its backward, and batched matmul with every
/// transpose combination.
pub fn check_products<B: Backend>(b: &B) {
    let mut rng = rng_for("products");
    for (lead, k, m) in [(vec![1], 1, 1), (vec![7], 33, 5), (vec![130], 257, 65), (vec![2, 3], 128, 200)] {
        let mut xs = lead.clone();
        xs.push(k);
        let (x, w) = (rand_array(&mut rng, &xs), rand_array(&mut rng, &[m, k]));
        let want = CPU.linear(&x, &w).unwrap();
        expect_close(
            b,
            &format!("linear {xs:?}·[{m},{k}]ᵀ"),
            &b.linear(&up(b, &x), &up(b, &w)).unwrap(),
            &want,
            F32_REDUCTION,
        );
        let mut ys = lead.clone();
        ys.push(m);
        let dy = rand_array(&mut rng, &ys);
        let (want_dx, want_dw) = CPU.linear_backward(&x, &w, &dy).unwrap();
        let (dx, dw) = b.linear_backward(&up(b, &x), &up(b, &w), &up(b, &dy)).unwrap();
        expect_close(b, &format!("linear_backward dx {xs:?}"), &dx, &want_dx, F32_REDUCTION);
        expect_close(b, &format!("linear_backward dw [{m},{k}]"), &dw, &want_dw, F32_REDUCTION);
    }
    for (bt, m, k, n) in [(1, 1, 1, 1), (3, 7, 33, 5), (2, 65, 130, 31), (16, 9, 64, 128)] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = rand_array(&mut rng, &if ta { [bt, k, m] } else { [bt, m, k] });
            let c = rand_array(&mut rng, &if tb { [bt, n, k] } else { [bt, k, n] });
            let want = CPU.matmul(&a, &c, ta, tb).unwrap();
            let got = b.matmul(&up(b, &a), &up(b, &c), ta, tb).unwrap();
            expect_close(b, &format!("matmul {bt}×{m}×{k}×{n} trans ({ta}, {tb})"), &got, &want, F32_REDUCTION);
        }
    }
}

/// The mixed-precision linear (`linear_mixed`, `linear_backward_mixed`) in BF16 and in the
/// FP8 recipe (E4M3, and E5M6 for the attention output), against the CPU's host simulation.
/// A backend with real FP8 GEMMs must agree to f32 reduction error: the recipe fixes the
/// codes, the scales and where the sum is promoted, and within a promotion the default
/// accumulator adds exactly.
pub fn check_mixed_products<B: Backend>(b: &B) {
    use v3lab_reference::fp8::{Fp8Linear, LinearPrecision};
    let mut rng = rng_for("mixed_products");
    let precisions = [
        ("bf16", LinearPrecision::Bf16),
        ("fp8", LinearPrecision::Fp8(Fp8Linear::default())),
        ("fp8 attention output", LinearPrecision::Fp8(Fp8Linear::attention_output())),
    ];
    for (lead, k, m) in [(vec![1], 1, 1), (vec![7], 33, 5), (vec![2, 70], 257, 130)] {
        let mut xs = lead.clone();
        xs.push(k);
        let mut ys = lead.clone();
        ys.push(m);
        let (x, w, dy) = (rand_array(&mut rng, &xs), rand_array(&mut rng, &[m, k]), rand_array(&mut rng, &ys));
        for (name, precision) in &precisions {
            let want = CPU.linear_mixed(&x, &w, precision).unwrap();
            let got = b.linear_mixed(&up(b, &x), &up(b, &w), precision).unwrap();
            expect_close(b, &format!("linear_mixed {name} {xs:?}·[{m},{k}]ᵀ"), &got, &want, F32_REDUCTION);
            let (want_dx, want_dw) = CPU.linear_backward_mixed(&x, &w, &dy, precision).unwrap();
            let (dx, dw) = b.linear_backward_mixed(&up(b, &x), &up(b, &w), &up(b, &dy), precision).unwrap();
            expect_close(b, &format!("linear_backward_mixed {name} dx {xs:?}"), &dx, &want_dx, F32_REDUCTION);
            expect_close(b, &format!("linear_backward_mixed {name} dw [{m},{k}]"), &dw, &want_dw, F32_REDUCTION);
        }
    }
}

/// RMSNorm (output and reciprocal RMS) and SwiGLU.
pub fn check_norm_swiglu<B: Backend>(b: &B) {
    let mut rng = rng_for("norm_swiglu");
    for shape in [vec![1, 1], vec![7, 33], vec![2, 65, 257], vec![3, 1024], vec![4, 7168]] {
        let d = *shape.last().unwrap();
        let (x, w) = (rand_array(&mut rng, &shape), rand_array(&mut rng, &[d]));
        let (y, r) = CPU.rms_norm_forward(&x, &w, 1e-6).unwrap();
        let (yb, rb) = b.rms_norm_forward(&up(b, &x), &up(b, &w), 1e-6).unwrap();
        expect_close(b, &format!("rms_norm {shape:?}"), &yb, &y, F32_REDUCTION);
        expect_close(b, &format!("rms_norm rstd {shape:?}"), &rb, &r, F32_REDUCTION);
        let g = rand_array(&mut rng, &shape).mapv(|v| 6.0 * v);
        let want = CPU.swiglu_forward(&g, &x).unwrap();
        expect_close(
            b,
            &format!("swiglu {shape:?}"),
            &b.swiglu_forward(&up(b, &g), &up(b, &x)).unwrap(),
            &want,
            F32_TRANSCENDENTAL,
        );
    }
    // No rows is an empty result; rows of width 0 have no RMS and are an error.
    let (x, w) = (rand_array(&mut rng, &[0, 8]), rand_array(&mut rng, &[8]));
    let (y, r) = b.rms_norm_forward(&up(b, &x), &up(b, &w), 1e-6).unwrap();
    assert_eq!((b.shape(&y), b.shape(&r)), (vec![0, 8], vec![0]), "{}: rms_norm of no rows", b.name());
    let (x, w) = (rand_array(&mut rng, &[3, 0]), rand_array(&mut rng, &[0]));
    assert!(b.rms_norm_forward(&up(b, &x), &up(b, &w), 1e-6).is_err(), "{}: rows of width 0 must fail", b.name());
}

/// Rotary embedding on interleaved pairs at several start positions, forward and backward.
pub fn check_rope<B: Backend>(b: &B) {
    let mut rng = rng_for("rope");
    for (bsz, seq, heads, r, t, start) in [(1, 1, 1, 2, 1, 0), (2, 5, 3, 8, 9, 4), (1, 33, 16, 64, 40, 7)] {
        let x = rand_array(&mut rng, &[bsz, seq, heads, r]);
        let angles = rand_array(&mut rng, &[t, r / 2]).mapv(|a| 3.0 * a);
        let (cos, sin) = (angles.mapv(f32::cos), angles.mapv(f32::sin));
        let (xb, cos_b, sin_b) = (up(b, &x), up(b, &cos), up(b, &sin));
        let tag = format!("rope [{bsz},{seq},{heads},{r}] at {start}");
        let want = CPU.rope_forward(&x, &cos, &sin, start).unwrap();
        expect_close(b, &tag, &b.rope_forward(&xb, &cos_b, &sin_b, start).unwrap(), &want, F32_ELEMENTWISE);
        // The backward: the transposed rotation, here applied to x as the incoming gradient.
        let want = CPU.rope_backward(&x, &cos, &sin, start).unwrap();
        let got = b.rope_backward(&xb, &cos_b, &sin_b, start).unwrap();
        expect_close(b, &format!("{tag} backward"), &got, &want, F32_ELEMENTWISE);
    }
}

/// Embedding lookup, row gather, per-token row sums and scatter-add (with repeated rows);
/// bad ids fail.
pub fn check_embedding_rows<B: Backend>(b: &B) {
    let mut rng = rng_for("embedding_rows");
    for (vocab, d, n) in [(1, 1, 1), (37, 33, 13), (1000, 257, 130)] {
        let table = rand_array(&mut rng, &[vocab, d]);
        let tokens = ArrayD::from_shape_simple_fn(IxDyn(&[2, n]), || rng.random_range(0..vocab as i64));
        let want = CPU.embedding_forward(&table, &tokens).unwrap();
        let got = b.embedding_forward(&up(b, &table), &up_idx(b, &tokens)).unwrap();
        expect_close(b, &format!("embedding {vocab}×{d}"), &got, &want, COPY_EXACT);
        let rows = ArrayD::from_shape_simple_fn(IxDyn(&[3 * n]), || rng.random_range(0..vocab as i64));
        let got = b.gather_rows(&up(b, &table), &up_idx(b, &rows)).unwrap();
        expect_close(
            b,
            &format!("gather_rows {vocab}×{d}"),
            &got,
            &CPU.gather_rows(&table, &rows).unwrap(),
            COPY_EXACT,
        );
        // Each group of 3 rows summed in order (the MoE's way back to the tokens).
        let got = b.sum_rows_in_order(&up(b, &table), &up_idx(b, &rows), 3).unwrap();
        let want = CPU.sum_rows_in_order(&table, &rows, 3).unwrap();
        expect_close(b, &format!("sum_rows_in_order {vocab}×{d}"), &got, &want, F32_ELEMENTWISE);
        let src = rand_array(&mut rng, &[3 * n, d]);
        let want = CPU.scatter_add_rows(&table, &rows, &src).unwrap();
        let got = b.scatter_add_rows(&up(b, &table), &up_idx(b, &rows), &up(b, &src)).unwrap();
        expect_close(b, &format!("scatter_add_rows {vocab}×{d}"), &got, &want, F32_ELEMENTWISE);
    }
    // An id outside the vocabulary is an error, at the call or at the next download.
    let table = rand_array(&mut rng, &[5, 4]);
    let bad = ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![1i64, 5]).unwrap();
    let outcome = b.embedding_forward(&up(b, &table), &up_idx(b, &bad)).and_then(|t| b.download(&t));
    assert!(outcome.is_err(), "{}: token id 5 of vocabulary 5 must fail", b.name());
    let ok = b.embedding_forward(&up(b, &table), &up_idx(b, &bad.mapv(|t| t % 5))).and_then(|t| b.download(&t));
    assert!(ok.is_ok(), "{}: an error must not outlive its report", b.name());
}

/// Causal attention with an offset (prefill, chunked prefill and decode shapes; key counts
/// above and below the kernel's 64-key tile; widths from 1 to 192; keys that no query sees),
/// output and LSE, then the backward (dq, dk, dv) from them.
pub fn check_attention<B: Backend>(b: &B) {
    let mut rng = rng_for("attention");
    for (bsz, seq, heads, keys, dk, dv, off) in [
        (1, 1, 1, 1, 1, 1, 0),
        (2, 5, 3, 5, 16, 12, 0),
        (2, 3, 4, 70, 33, 20, 67),
        (2, 3, 4, 70, 33, 20, 60),
        (1, 130, 2, 130, 64, 32, 0),
        (1, 1, 16, 300, 192, 128, 299),
        (1, 4, 16, 300, 192, 128, 296),
    ] {
        let q = rand_array(&mut rng, &[bsz, seq, heads, dk]).mapv(|v| 2.0 * v);
        let k = rand_array(&mut rng, &[bsz, keys, heads, dk]);
        let v = rand_array(&mut rng, &[bsz, keys, heads, dv]);
        let scale = 1.0 / (dk as f32).sqrt();
        let (want, want_lse) = CPU.attention_forward(&q, &k, &v, scale, off).unwrap();
        let (qb, kb, vb) = (up(b, &q), up(b, &k), up(b, &v));
        let (got, got_lse) = b.attention_forward(&qb, &kb, &vb, scale, off).unwrap();
        let tag = format!("attention q [{bsz},{seq},{heads},{dk}] T {keys} dv {dv} offset {off}");
        expect_close(b, &tag, &got, &want, F32_REDUCTION);
        expect_close(b, &format!("{tag} lse"), &got_lse, &want_lse, F32_REDUCTION);

        let dout = rand_array(&mut rng, &[bsz, seq, heads, dv]);
        let grads = CPU.attention_backward(&q, &k, &v, &want, &want_lse, &dout, scale, off).unwrap();
        let (ob, lb, db) = (up(b, &want), up(b, &want_lse), up(b, &dout));
        let got = b.attention_backward(&qb, &kb, &vb, &ob, &lb, &db, scale, off).unwrap();
        for (name, got, want) in [("dq", &got.0, &grads.0), ("dk", &got.1, &grads.1), ("dv", &got.2, &grads.2)] {
            expect_close(b, &format!("{tag} backward {name}"), got, want, F32_REDUCTION);
        }
    }
}

/// MLA's attention over the latent cache against the trait's default (concat + expand +
/// attention on the CPU), including a V3-sized latent (C 512, R 64) decode step.
pub fn check_latent_attention<B: Backend>(b: &B) {
    let mut rng = rng_for("latent_attention");
    for (bsz, seq, heads, keys, c, r, off) in
        [(1, 1, 1, 1, 2, 2, 0), (2, 4, 3, 9, 40, 8, 5), (2, 7, 5, 7, 33, 6, 0), (1, 1, 16, 300, 512, 64, 299)]
    {
        let ql = rand_array(&mut rng, &[bsz, seq, heads, c]);
        let qp = rand_array(&mut rng, &[bsz, seq, heads, r]);
        let kv = rand_array(&mut rng, &[bsz, keys, c]);
        let kp = rand_array(&mut rng, &[bsz, keys, r]);
        let scale = 1.0 / ((c + r) as f32).sqrt();
        let want = CPU.latent_attention_forward(&ql, &qp, &kv, &kp, scale, off).unwrap();
        let got = b.latent_attention_forward(&up(b, &ql), &up(b, &qp), &up(b, &kv), &up(b, &kp), scale, off).unwrap();
        let tag = format!("latent attention [{bsz},{seq},{heads}] C {c} R {r} T {keys} offset {off}");
        expect_close(b, &tag, &got, &want, F32_REDUCTION);
    }
}

pub(crate) fn spec(score_func: ScoreFunc, top_k: usize, n_groups: usize, topk_groups: usize) -> RouteSpec {
    RouteSpec {
        score_func,
        top_k,
        n_groups,
        topk_groups,
        normalize: score_func == ScoreFunc::Sigmoid,
        route_scale: 2.5,
    }
}

/// The gate: indices exact (incl. ties, which go to the lower index), weights and scores
/// within f32 rounding; V3 (sigmoid, bias, groups), V2 (softmax), edge cases.
pub fn check_route<B: Backend>(b: &B) {
    let mut rng = rng_for("route");
    let cases = [
        (48, 64, spec(ScoreFunc::Sigmoid, 6, 8, 4), true, false),
        (48, 256, spec(ScoreFunc::Sigmoid, 8, 8, 4), true, false),
        (33, 16, spec(ScoreFunc::Softmax, 4, 1, 1), false, false),
        (7, 6, spec(ScoreFunc::Sigmoid, 6, 3, 3), true, false),
        (9, 12, spec(ScoreFunc::Softmax, 3, 4, 2), false, false),
        (20, 32, spec(ScoreFunc::Sigmoid, 4, 4, 2), true, true),
        (20, 32, spec(ScoreFunc::Softmax, 5, 1, 1), false, true),
    ];
    for (n, e, spec, with_bias, ties) in cases {
        // With `ties`, logits take 3 values only: many exact ties to break by index.
        let logits = if ties {
            ArrayD::from_shape_simple_fn(IxDyn(&[n, e]), || rng.random_range(-1i32..=1) as f32)
        } else {
            rand_array(&mut rng, &[n, e]).mapv(|v| 3.0 * v)
        };
        let bias = if ties { ArrayD::zeros(IxDyn(&[e])) } else { rand_array(&mut rng, &[e]).mapv(|v| 0.1 * v) };
        let want = CPU.route(&logits, with_bias.then_some(&bias), &spec).unwrap();
        let bias_b = up(b, &bias);
        let got = b.route(&up(b, &logits), with_bias.then_some(&bias_b), &spec).unwrap();
        let tag = format!("route {n}×{e} {spec:?} bias {with_bias} ties {ties}");
        expect_indices(b, &format!("{tag} indices"), &got.indices, &want.indices);
        expect_close(b, &format!("{tag} weights"), &got.weights, &want.weights, F32_TRANSCENDENTAL);
        expect_close(b, &format!("{tag} scores"), &got.scores, &want.scores, F32_TRANSCENDENTAL);
    }
    // The order ties are broken by, from its definition (the IEEE total order, ties to the
    // lower index): every score ties (logits 0), a NaN bias makes a choice +NaN, above the
    // +inf of an infinite bias. With 2 groups of 4 keeping 1, both group scores are NaN and
    // the lower group wins.
    let logits = ArrayD::zeros(IxDyn(&[3, 8]));
    let bias = ArrayD::from_shape_vec(IxDyn(&[8]), vec![0.0, f32::NAN, 0.0, 0.0, f32::NAN, f32::INFINITY, 0.0, 0.0])
        .expect("8 values");
    for (spec, chosen) in
        [(spec(ScoreFunc::Sigmoid, 4, 1, 1), vec![1i64, 4, 5, 0]), (spec(ScoreFunc::Sigmoid, 3, 2, 1), vec![1, 0, 2])]
    {
        let k = chosen.len();
        let want = ArrayD::from_shape_vec(IxDyn(&[3, k]), chosen.repeat(3)).expect("3 rows");
        let got = b.route(&up(b, &logits), Some(&up(b, &bias)), &spec).unwrap();
        let tag = format!("route order (ties, NaN, inf) {spec:?}");
        expect_indices(b, &tag, &got.indices, &want);
        // The weights come from the unbiased scores, all 0.5: the route scale split evenly.
        let even = ArrayD::from_elem(IxDyn(&[3, k]), spec.route_scale / k as f32);
        expect_close(b, &format!("{tag} weights"), &got.weights, &even, F32_TRANSCENDENTAL);
    }
}

/// Token permutation by expert: rows, slots and offsets exact (stable in token order),
/// with empty experts; an expert id out of range fails.
pub fn check_dispatch<B: Backend>(b: &B) {
    let mut rng = rng_for("dispatch");
    for (n, k, e) in [(1, 1, 1), (13, 2, 8), (300, 6, 64), (1000, 8, 256), (5, 3, 40)] {
        let mut rows = Vec::new();
        let mut experts: Vec<i64> = (0..e as i64).collect();
        for _ in 0..n {
            experts.shuffle(&mut rng);
            rows.extend_from_slice(&experts[..k]);
        }
        let idx = ArrayD::from_shape_vec(IxDyn(&[n, k]), rows).unwrap();
        let want = CPU.expert_dispatch(&idx, e).unwrap();
        let got = b.expert_dispatch(&up_idx(b, &idx), e).unwrap();
        let tag = format!("dispatch {n}×{k} over {e}");
        assert_eq!(got.offsets, want.offsets, "{} {tag}: offsets", b.name());
        expect_indices(b, &format!("{tag} token rows"), &got.token_rows, &want.token_rows);
        expect_indices(b, &format!("{tag} slots"), &got.slots, &want.slots);
        expect_indices(b, &format!("{tag} rows by token"), &got.rows_by_token, &want.rows_by_token);
    }
    let bad = ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![0i64, 9]).unwrap();
    assert!(b.expert_dispatch(&up_idx(b, &bad), 9).is_err(), "{}: expert 9 of 9 must fail", b.name());
}
