//! The FP8 study at a small setting: it writes its table, JSON and figure, and its numbers
//! behave as arithmetic says they must.

use v3lab_reference::fp8::study::{run, write, StudyConfig};

/// The exact preset is exact up to the final rounding of each output to f32: relative
/// error at most the f32 unit roundoff.
const EXACT_PRESET: f64 = 6.0e-8; // 2^-24 ≈ 5.96e-8

#[test]
fn small_study_writes_its_outputs_and_its_numbers_hold() {
    let cfg = StudyConfig::small();
    let r = run(&cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &r).unwrap();
    for name in ["study.md", "study.json", "accumulation.svg", "accumulation.png"] {
        let len = std::fs::metadata(dir.path().join(name)).unwrap().len();
        assert!(len > 1000, "{name} is only {len} bytes");
    }
    let svg = std::fs::read_to_string(dir.path().join("accumulation.svg")).unwrap();
    assert!(svg.contains("fast-accum") && svg.contains("positive inputs"), "the figure lacks its labels");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("study.json")).unwrap()).unwrap();
    assert_eq!(json["accumulation"].as_array().unwrap().len(), 2 * cfg.ks.len() * cfg.presets.len());

    let get = |inputs: &str, k: usize, preset: &str| {
        r.accumulation.iter().find(|x| x.inputs == inputs && x.k == k && x.preset == preset).unwrap().clone()
    };
    for inputs in ["normal", "positive"] {
        for &k in &cfg.ks {
            let exact = get(inputs, k, "exact");
            assert!(exact.max_rel <= EXACT_PRESET, "{inputs} K={k}: exact preset off by {:e}", exact.max_rel);
        }
    }
    // All-positive inputs: truncation never cancels, so the error of the unpromoted 14-bit
    // accumulator grows with K, and promotion every 128 bounds it (the paper's fix).
    // The same holds for the measured H100 rule and the paper's reading of it.
    let kmax = *cfg.ks.last().unwrap();
    for (unpromoted, promoted) in [("h100", "h100-promote-128"), ("fast-accum", "promote-128")] {
        let fast = get("positive", kmax, unpromoted);
        let promoted_row = get("positive", kmax, promoted);
        assert!(
            fast.rel_fro > get("positive", cfg.ks[0], unpromoted).rel_fro,
            "{unpromoted}: error does not grow with K"
        );
        assert!(
            promoted_row.rel_fro < fast.rel_fro / 2.0,
            "{promoted}: {:e} vs {:e}",
            promoted_row.rel_fro,
            fast.rel_fro
        );
        // Truncation toward zero of positive terms can only lose: the sum is never too large.
        assert!(fast.rel_fro > 0.0);
    }
    let md = std::fs::read_to_string(dir.path().join("study.md")).unwrap();
    assert!(md.contains("| fast-accum | **hypothesis** |") && md.contains("| h100 | measured |"), "{md}");

    // Outliers ×1e4 (the last scale): one per-tensor scale ≈ 1e4·3.5/448 pushes the regular
    // N(0, 1) channels into E4M3's subnormals (below 2^-6 after scaling), where relative
    // precision drops; 1×128 tiles without an outlier channel keep E4M3's full precision.
    let q = |g: &str| r.quantization.iter().rfind(|x| x.granularity == g && x.scales == "f32").unwrap().rel_err_regular;
    assert!(q("1x128 tiles") < 0.8 * q("per-tensor"), "tiles {:e} vs tensor {:e}", q("1x128 tiles"), q("per-tensor"));
    assert!(!r.paper.is_empty());
}
