//! `v3lab fp8 gemm` end to end: the goldens' fp8_gemm inputs through the CLI, and bad
//! inputs that must fail with a message naming the file and tensor (never a panic).

use assert_cmd::Command;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// As in the reference's golden test: the H100 kernel's in-slice rounding plus f32
/// roundings of the scaled partials stay at a few 1e-8; 1e-6 catches any wrong block.
const GEMM_VS_TRITON: f64 = 1e-6;

fn goldens_dir() -> PathBuf {
    match std::env::var_os("V3LAB_GOLDENS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/goldens"),
    }
}

struct T {
    name: &'static str,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn write(path: &Path, tensors: &[T]) {
    let views: Vec<_> = tensors
        .iter()
        .map(|t| {
            (t.name.to_string(), safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap())
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None::<HashMap<String, String>>).unwrap()).unwrap();
}

fn golden_inputs() -> (Vec<T>, Vec<f32>) {
    let bytes = std::fs::read(goldens_dir().join("fp8/fp8.safetensors")).expect("goldens (set V3LAB_GOLDENS)");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let get = |src: &str, name: &'static str| {
        let v = st.tensor(src).unwrap();
        T { name, dtype: v.dtype(), shape: v.shape().to_vec(), bytes: v.data().to_vec() }
    };
    let c = st.tensor("gemm_c").unwrap();
    let c: Vec<f32> = c.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    (vec![get("gemm_a_bits", "a"), get("gemm_b_bits", "b"), get("gemm_a_s", "a_scale"), get("gemm_b_s", "b_scale")], c)
}

fn v3lab() -> Command {
    Command::cargo_bin("v3lab").unwrap()
}

#[test]
fn gemm_reproduces_the_h100_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, want) = golden_inputs();
    let input = dir.path().join("in.safetensors");
    let out = dir.path().join("out.safetensors");
    write(&input, &inputs);
    v3lab()
        .args(["fp8", "gemm", "--accumulator", "exact", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let c = st.tensor("c").unwrap();
    assert_eq!(c.dtype(), Dtype::F32);
    assert_eq!(c.shape(), &[64, 256]);
    let got: Vec<f32> = c.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let (mut d, mut n) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(&want) {
        d += (g as f64 - w as f64).powi(2);
        n += (w as f64).powi(2);
    }
    let err = (d / n).sqrt();
    eprintln!("v3lab fp8 gemm vs H100: rel err {err:.3e}");
    assert!(err <= GEMM_VS_TRITON, "rel err {err:e}");
}

/// Runs the gemm on `tensors` and expects a failure whose message names `needles`.
fn expect_failure(tensors: &[T], accumulator: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.safetensors");
    write(&input, tensors);
    let out = dir.path().join("out.safetensors");
    let result = v3lab()
        .args(["fp8", "gemm", "--accumulator", accumulator, "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&result.get_output().stderr).to_string();
    assert!(!stderr.contains("panicked"), "panic instead of an error: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "stderr lacks `{needle}`: {stderr}");
    }
    assert!(!out.exists(), "a failed run left an output behind");
}

#[test]
fn bad_inputs_fail_with_the_tensor_named() {
    let (inputs, _) = golden_inputs();
    let [a, b, a_scale, b_scale]: [T; 4] = inputs.try_into().ok().unwrap();
    let clone = |t: &T| T { name: t.name, dtype: t.dtype, shape: t.shape.clone(), bytes: t.bytes.clone() };
    // Missing b.
    expect_failure(&[clone(&a)], "exact", &["bad.safetensors", "`b`"]);
    // a_scale of the wrong shape.
    let wrong =
        T { name: "a_scale", dtype: Dtype::F32, shape: vec![64, 3], bytes: a_scale.bytes[..64 * 3 * 4].to_vec() };
    expect_failure(&[clone(&a), clone(&b), wrong, clone(&b_scale)], "exact", &["`a_scale`", "[64, 4]"]);
    // b as F32 instead of U8 bit patterns.
    let b_f32 = T { name: "b", dtype: Dtype::F32, shape: vec![256, 128], bytes: b.bytes.clone() };
    expect_failure(&[clone(&a), b_f32], "exact", &["`b`", "U8"]);
    // K mismatch.
    let b_short = T { name: "b", dtype: Dtype::U8, shape: vec![512, 256], bytes: b.bytes.clone() };
    expect_failure(&[clone(&a), b_short], "exact", &["differ in K"]);
    // Unknown preset.
    expect_failure(&[clone(&a), clone(&b)], "bf16-accum", &["--accumulator", "unknown", "h100-promote-128"]);
    // Scales of 0, below 0, or so large that the output overflows f32.
    for (bad, needles) in [
        (0.0f32, &["`a_scale`", "element 5 is 0", "positive"][..]),
        (-1.0, &["`a_scale`", "element 5 is -1", "positive"][..]),
        (3e38, &["`a_scale`", "beyond f32"][..]),
    ] {
        let mut bytes = a_scale.bytes.clone();
        bytes[5 * 4..6 * 4].copy_from_slice(&bad.to_le_bytes());
        let scale = T { name: "a_scale", dtype: Dtype::F32, shape: a_scale.shape.clone(), bytes };
        expect_failure(&[clone(&a), clone(&b), scale, clone(&b_scale)], "exact", needles);
    }
}

#[test]
fn a_gemm_beyond_max_products_is_refused_before_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, _) = golden_inputs();
    let input = dir.path().join("in.safetensors");
    let out = dir.path().join("out.safetensors");
    write(&input, &inputs);
    let failed = v3lab()
        .args(["fp8", "gemm", "--max-products", "1000000", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&failed.get_output().stderr).to_string();
    // a [64, 512] · b [256, 512]ᵀ: 8,388,608 products.
    assert!(stderr.contains("8388608 products") && stderr.contains("--max-products 1000000"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn missing_input_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let result = v3lab()
        .args(["fp8", "gemm", "--input"])
        .arg(dir.path().join("nope.safetensors"))
        .arg("--out")
        .arg(dir.path().join("o.safetensors"))
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&result.get_output().stderr).to_string();
    assert!(stderr.contains("nope.safetensors") && !stderr.contains("panicked"), "{stderr}");
}

/// `fp8 probe`, then outputs "measured" by a model that is not a preset, then `fp8 fit`:
/// the fit must reproduce every output, and the presets must not.
#[test]
fn fit_finds_the_model_behind_measurements_of_the_probes() {
    use v3lab::fp8::fit::{simulate, ProbeSet};
    use v3lab::fp8::{Accumulator, Rounding};
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe.safetensors");
    v3lab().args(["fp8", "probe", "--max-k", "64", "--out"]).arg(&probe).assert().success();
    let bytes = std::fs::read(&probe).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let matrix = |name: &str| {
        let v = st.tensor(name).unwrap();
        ndarray::Array2::from_shape_vec((v.shape()[0], v.shape()[1]), v.data().to_vec()).unwrap()
    };
    let set = ProbeSet { a: matrix("k64.a"), b: matrix("k64.b") };
    let hidden =
        Accumulator { group: 8, kept_bits: Some(12), term_rounding: Rounding::NearestEven, ..Accumulator::FAST_ACCUM };
    let c = simulate(&set, &hidden);
    let tensor =
        |name: &'static str, dtype, shape: &[usize], bytes: Vec<u8>| T { name, dtype, shape: shape.to_vec(), bytes };
    let measured = dir.path().join("measured.safetensors");
    write(
        &measured,
        &[
            tensor("k64.a", Dtype::U8, &[set.a.nrows(), 64], set.a.iter().copied().collect()),
            tensor("k64.b", Dtype::U8, &[set.b.nrows(), 64], set.b.iter().copied().collect()),
            tensor(
                "k64.c_model",
                Dtype::F32,
                &[c.nrows(), c.ncols()],
                c.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
        ],
    );
    let out = v3lab().args(["fp8", "fit", "--measurements"]).arg(&measured).assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let total = c.len();
    let best = text.lines().find(|l| l.starts_with("| best fit")).expect("a best-fit row");
    assert!(best.contains(&format!("| {total} / {total} |")), "{text}");
    assert!(text.contains("The best fit reproduces every output bit for bit."), "{text}");
    let fast = text.lines().find(|l| l.starts_with("| fast-accum |")).unwrap();
    assert!(!fast.contains(&format!("| {total} / {total} |")), "{text}");

    // Without measured outputs there is nothing to fit: the file is named.
    let failed = v3lab().args(["fp8", "fit", "--measurements"]).arg(&probe).assert().failure();
    let stderr = String::from_utf8(failed.get_output().stderr.clone()).unwrap();
    assert!(stderr.contains("probe.safetensors") && stderr.contains("no measured outputs"), "{stderr}");
}

/// The H100's K = 4096 GEMM from the goldens, as `v3lab fp8 gemm --scaling tensor` input.
fn h100_gemm_input(dir: &Path) -> (PathBuf, Vec<f32>, Vec<f32>) {
    let path = v3lab::lab::goldens_dir().join("fp8-hardware/h100_scaled_mm_normal_K4096.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; set V3LAB_GOLDENS", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let get = |src: &str, name: &'static str| {
        let v = st.tensor(src).unwrap();
        T { name, dtype: v.dtype(), shape: v.shape().to_vec(), bytes: v.data().to_vec() }
    };
    let floats = |name: &str| -> Vec<f32> {
        st.tensor(name).unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    };
    let input = dir.join("h100.safetensors");
    // Scalar scales, as PyTorch stores them for `torch._scaled_mm`.
    let one = |name: &'static str| T { name, dtype: Dtype::F32, shape: vec![], bytes: 1f32.to_le_bytes().to_vec() };
    write(&input, &[get("a", "a"), get("b", "b"), one("a_scale"), one("b_scale")]);
    (input, floats("c_fast_accum"), floats("c_promoted"))
}

fn gemm_output(input: &Path, out: &Path, args: &[&str]) -> Vec<f32> {
    v3lab().args(["fp8", "gemm"]).args(args).arg("--input").arg(input).arg("--out").arg(out).assert().success();
    let bytes = std::fs::read(out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensor("c").unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn share_same(x: &[f32], y: &[f32]) -> f64 {
    x.iter().zip(y).filter(|(a, b)| a.to_bits() == b.to_bits()).count() as f64 / x.len() as f64
}

#[test]
fn tensor_scaling_asks_for_the_h100s_unpromoted_path() {
    let dir = tempfile::tempdir().unwrap();
    let (input, fast, promoted) = h100_gemm_input(dir.path());
    let out = dir.path().join("c.safetensors");
    let c = gemm_output(&input, &out, &["--scaling", "tensor", "--accumulator", "h100"]);
    let got = share_same(&c, &fast);
    eprintln!("fp8 gemm --scaling tensor --accumulator h100 vs use_fast_accum=True: {:.2}% bit for bit", 100.0 * got);
    assert!(got >= 0.999);
    let c = gemm_output(&input, &out, &["--scaling", "tensor", "--accumulator", "h100-promote-128"]);
    assert!(share_same(&c, &promoted) >= 0.999);
    // A hypothesis says so on stderr; a wrong scaling name or scale shape is an error.
    let run = |args: &[&str]| {
        v3lab().args(["fp8", "gemm"]).args(args).arg("--input").arg(&input).arg("--out").arg(&out).assert()
    };
    let noted = run(&["--scaling", "tensor", "--accumulator", "fast-accum"]).success();
    assert!(String::from_utf8_lossy(&noted.get_output().stderr).contains("hypothesis"));
    let failed = run(&["--scaling", "per-warp"]).failure();
    assert!(String::from_utf8_lossy(&failed.get_output().stderr).contains("--scaling per-warp"));
    let failed = run(&["--scaling", "block"]).failure();
    let stderr = String::from_utf8_lossy(&failed.get_output().stderr).to_string();
    assert!(stderr.contains("`a_scale`") && stderr.contains("[128, 32]"), "{stderr}");
}

#[test]
fn fit_scores_the_presets_on_the_measured_instructions() {
    let path = v3lab::lab::goldens_dir().join("fp8-hardware/mma_m16n8k32_e4m3.safetensors");
    let out = v3lab().args(["fp8", "fit", "--search-outputs", "500", "--measurements"]).arg(&path).assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    for chip in ["ada", "b200", "h100"] {
        let section =
            text.split(&format!("## `{chip}`")).nth(1).unwrap_or_else(|| panic!("no `{chip}` section: {text}"));
        let row = section.lines().find(|l| l.starts_with(&format!("| {chip} |"))).expect("the chip's preset row");
        assert!(row.contains("| measured | 5000 / 5000 |"), "{row}");
    }
}
