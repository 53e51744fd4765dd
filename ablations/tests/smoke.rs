//! Each ablation binary's smoke preset, end to end: the report's structure, and the sanity
//! checks that must hold at any scale (every variant learns; balancing lowers MaxVio
//! against no balancing; the MTP draft beats chance and a trivial draft).

use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn run_study(bin: &str, exe: &str, tmp: &Path) -> (Value, String) {
    let out = tmp.join(bin);
    let status = Command::new(exe)
        .args(["--preset", "smoke", "--seeds", "2", "--out"])
        .arg(&out)
        .arg("--cache-dir")
        .arg(tmp.join("cache"))
        .status()
        .expect("run the study");
    assert!(status.success(), "{bin} failed");
    let results: Value = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for section in ["## Corpus", "## Results", "### Reading", "## The paper", "## Figures"] {
        assert!(report.contains(section), "{bin}: report lacks {section}");
    }
    for figure in report
        .lines()
        .filter_map(|l| l.strip_prefix("![").and_then(|l| l.split("](").nth(1)))
        .map(|f| f.trim_end_matches(')'))
    {
        for ext in ["png", "svg"] {
            let path = out.join(Path::new(figure).with_extension(ext));
            assert!(
                path.metadata().map(|m| m.len() > 1000).unwrap_or(false),
                "{bin}: figure {} missing or empty",
                path.display()
            );
        }
    }
    let variants = results["configs"].as_array().unwrap().len();
    let runs = results["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2 * variants, "{bin}: every variant with every seed");
    let uniform = (260f64).ln();
    for run in runs {
        assert_eq!(run["curve"].as_array().unwrap().len() as u64, run["steps"].as_u64().unwrap());
        for domain in ["prose", "code", "math"] {
            let loss = run["domains"][domain]["loss"].as_f64().unwrap();
            assert!(loss > 0.0 && loss < uniform, "{bin} {}: {domain} loss {loss} does not beat ln V", run["variant"]);
            assert!(run["domains"][domain]["bits_per_byte"].as_f64().unwrap() > 0.0);
        }
    }
    (results, report)
}

/// The report written again from `results.json` alone (it must equal the original).
fn rerendered(bin: &str, exe: &str, tmp: &Path) -> String {
    let again = tmp.join(format!("{bin}-again"));
    let status = Command::new(exe)
        .arg("--from-results")
        .arg(tmp.join(bin).join("results.json"))
        .arg("--out")
        .arg(&again)
        .status()
        .unwrap();
    assert!(status.success(), "{bin} --from-results failed");
    std::fs::read_to_string(again.join("report.md")).unwrap()
}

fn mean_of(results: &Value, variant: &str, f: impl Fn(&Value) -> f64) -> f64 {
    let values: Vec<f64> =
        results["runs"].as_array().unwrap().iter().filter(|r| r["variant"] == variant).map(f).collect();
    values.iter().sum::<f64>() / values.len() as f64
}

#[test]
fn ablate_aux_free_smoke() {
    let tmp = tempfile::tempdir().unwrap();
    let (results, _) = run_study("ablate-aux-free", env!("CARGO_BIN_EXE_ablate-aux-free"), tmp.path());
    let vio = |v: &str| mean_of(&results, v, |r| r["max_vio_global"].as_f64().unwrap());
    for balanced in ["aux-free", "aux-loss-1e-2", "aux-loss-1e-3"] {
        assert!(
            vio(balanced) < vio("no-balance"),
            "{balanced}: MaxVio_global {} vs no balancing {}",
            vio(balanced),
            vio("no-balance")
        );
    }
}

#[test]
fn ablate_mtp_smoke() {
    let tmp = tempfile::tempdir().unwrap();
    let (results, report) = run_study("ablate-mtp", env!("CARGO_BIN_EXE_ablate-mtp"), tmp.path());
    assert!(report.contains("Acceptance of the MTP draft"));
    assert_eq!(rerendered("ablate-mtp", env!("CARGO_BIN_EXE_ablate-mtp"), tmp.path()), report);
    for run in results["runs"].as_array().unwrap() {
        let spec = &run["speculative"];
        if run["variant"] == "baseline" {
            assert!(spec.is_null(), "the baseline has no MTP module");
            continue;
        }
        let acceptance = spec["acceptance"].as_f64().unwrap();
        assert!(spec["drafted"].as_u64().unwrap() > 0);
        assert!(acceptance > spec["chance"].as_f64().unwrap(), "acceptance {acceptance} does not beat chance");
        let per_step = spec["tokens_per_step"].as_f64().unwrap();
        assert!((1.0..=2.0).contains(&per_step), "tokens per main step {per_step}");
    }
}

#[test]
fn ablate_balance_scope_smoke() {
    let tmp = tempfile::tempdir().unwrap();
    let (results, report) = run_study("ablate-balance-scope", env!("CARGO_BIN_EXE_ablate-balance-scope"), tmp.path());
    assert_eq!(rerendered("ablate-balance-scope", env!("CARGO_BIN_EXE_ablate-balance-scope"), tmp.path()), report);
    // The α search: four probes per auxiliary-loss variant on seed 0, the chosen one is
    // that seed's run and its α is the variant's configuration.
    assert!(report.contains("### Matching the balance"));
    let probes = results["calibration"]["probes"].as_array().unwrap();
    for variant in ["sequence-wise", "batch-wise"] {
        let mine: Vec<&Value> = probes.iter().filter(|p| p["variant"] == variant).collect();
        assert_eq!(mine.len(), 4, "{variant}: probes");
        let chosen: Vec<&&Value> = mine.iter().filter(|p| p["chosen"] == true).collect();
        assert_eq!(chosen.len(), 1, "{variant}: one chosen probe");
        let config = results["configs"].as_array().unwrap().iter().find(|c| c["variant"]["name"] == variant).unwrap();
        assert_eq!(config["variant"]["balance"]["aux_alpha"], chosen[0]["alpha"]);
        let seed0 = results["runs"].as_array().unwrap().iter().find(|r| r["variant"] == variant && r["seed"] == 0);
        assert_eq!(seed0.unwrap()["max_vio_global"], chosen[0]["max_vio_global"]);
    }
    for run in results["runs"].as_array().unwrap() {
        let bits = run["specialisation_bits"].as_f64().unwrap();
        // I(domain; expert) lies between 0 and log2(3 domains).
        assert!((0.0..=3f64.log2()).contains(&bits), "specialisation {bits}");
        let load = &run["domains"]["code"]["relative_load"][0];
        let mean: f64 = load.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).sum::<f64>()
            / load.as_array().unwrap().len() as f64;
        assert!((mean - 1.0).abs() < 1e-9, "relative loads average to 1, got {mean}");
    }
}

#[test]
fn ablate_fp8_smoke() {
    let tmp = tempfile::tempdir().unwrap();
    let (results, report) = run_study("ablate-fp8", env!("CARGO_BIN_EXE_ablate-fp8"), tmp.path());
    assert_eq!(rerendered("ablate-fp8", env!("CARGO_BIN_EXE_ablate-fp8"), tmp.path()), report);
    assert!(report.contains("### Relative loss gap to BF16") && report.contains("0.25%"));
    // Each variant's configuration says its precision, as train.json would.
    let configs = results["configs"].as_array().unwrap();
    let precision = |v: &str| {
        let c = configs.iter().find(|c| c["variant"]["name"] == v).unwrap();
        (c["train"]["precision"].clone(), c["train"]["fp8"].clone())
    };
    assert_eq!(precision("bf16").0, "bf16");
    assert_eq!(precision("fp8-tensor-scaling").1["scaling"], "tensor");
    // The precision reached the GEMMs: from the same weights on the same batches every
    // variant's training curve differs from every other's, but stays near f32's (each
    // format's rounding moves a loss of ~5 nats by a few percent at most).
    let curve = |v: &str, seed: u64| -> Vec<f64> {
        let run = results["runs"].as_array().unwrap().iter().find(|r| r["variant"] == v && r["seed"] == seed).unwrap();
        run["curve"].as_array().unwrap().iter().map(|p| p["train_loss"].as_f64().unwrap()).collect()
    };
    // Without --only the bit-level variant is left out, and the report says so.
    assert!(results["runs"].as_array().unwrap().iter().all(|r| r["variant"] != "fp8-h100-no-promotion"));
    assert!(report.contains("Promotion to FP32 every 128") && report.contains("not measured"));
    let names = ["f32", "bf16", "fp8", "fp8-tensor-scaling", "fp8-gradient-blocks"];
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            assert_ne!(curve(a, 0), curve(b, 0), "{a} and {b} trained identically");
        }
        let first_gap = (curve(a, 0)[0] - curve("f32", 0)[0]).abs() / curve("f32", 0)[0];
        assert!(first_gap < 0.05, "{a}: first loss {first_gap} away from f32's");
    }
}

#[test]
fn only_names_a_studys_variants() {
    let tmp = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ablate-fp8"))
        .args(["--preset", "smoke", "--only", "fp8,fp9", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("--only") && stderr.contains("`fp9`") && stderr.contains("fp8-tensor-scaling"), "{stderr}");
}

/// An argument error leaves no output folder behind, and a folder another study is
/// writing is refused before any training (issue 20).
#[test]
fn argument_errors_leave_nothing_and_a_locked_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("never");
    for args in [["--steps", "0"], ["--minutes", "-1"], ["--only", "fp9"]] {
        let output = Command::new(env!("CARGO_BIN_EXE_ablate-fp8"))
            .args(["--preset", "smoke"])
            .args(args)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        assert!(!out.exists(), "{args:?} left {}", out.display());
    }
    let busy = tmp.path().join("busy");
    let _held = v3lab_reference::io::OutputDir::lock(&busy).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ablate-mtp"))
        .args(["--preset", "smoke", "--steps", "2", "--out"])
        .arg(&busy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("another v3lab run is writing"), "{stderr}");
}
