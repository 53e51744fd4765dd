//! `v3lab eplb` on the EPLB README's example: the output file holds the `phy2log` the README
//! prints, and errors name the flag.

mod common;

use std::collections::BTreeMap;

fn readme_weights(dir: &std::path::Path) -> std::path::PathBuf {
    let weight = [
        90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86, //
        20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27,
    ];
    let path = dir.join("loads.safetensors");
    common::write_file(&path, &BTreeMap::from([("weight".to_string(), common::i64_tensor(&[2, 12], &weight))]));
    path
}

#[test]
fn readme_example_writes_the_readmes_placement() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = readme_weights(tmp.path());
    let out = tmp.path().join("placement.safetensors");
    let args = ["eplb", "--weights", weights.to_str().unwrap(), "--replicas", "16", "--groups", "4"];
    let mut args = args.to_vec();
    args.extend(["--nodes", "2", "--gpus", "8", "--out", out.to_str().unwrap()]);
    let (ok, stdout, stderr) = common::v3lab(&args);
    assert!(ok && stdout.contains("hierarchical"), "{stdout}{stderr}");
    let bytes = std::fs::read(&out).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ints = |name: &str| {
        let t = file.tensor(name).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::I64, "{name}");
        (
            t.shape().to_vec(),
            t.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>(),
        )
    };
    let readme =
        [[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1], [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]];
    assert_eq!(ints("phy2log"), (vec![2, 16], readme.concat()));
    assert_eq!(ints("logcnt").0, [2, 12]);
    assert_eq!(ints("log2phy").0, [2, 12, 2]);
}

#[test]
fn experts_not_divisible_by_groups_names_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = readme_weights(tmp.path());
    let out = tmp.path().join("placement.safetensors");
    let args = ["eplb", "--weights", weights.to_str().unwrap(), "--replicas", "16", "--groups", "5"];
    let mut args = args.to_vec();
    args.extend(["--nodes", "1", "--gpus", "8", "--out", out.to_str().unwrap()]);
    common::assert_fails_with(&args, "--groups");
    assert!(!out.exists());
}

fn placement_args<'a>(weights: &'a str, out: &'a str, replicas: &'a str, gpus: &'a str) -> Vec<&'a str> {
    let args = ["eplb", "--weights", weights, "--replicas", replicas, "--groups", "4", "--nodes", "2"];
    let mut args = args.to_vec();
    args.extend(["--gpus", gpus, "--out", out]);
    args
}

#[test]
fn bad_input_is_refused_naming_the_file_tensor_or_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let good = readme_weights(tmp.path());
    let out = tmp.path().join("placement.safetensors");
    let (good_s, out_s) = (good.to_str().unwrap(), out.to_str().unwrap());
    // 18 replicas on 8 GPUs.
    common::assert_fails_with(&placement_args(good_s, out_s, "18", "8"), "--replicas");
    // A file without `weight`, one with `weight` in F32, one with a negative load.
    let write = |name: &str, tensor: &str, stored: common::Stored| {
        let path = tmp.path().join(name);
        common::write_file(&path, &BTreeMap::from([(tensor.to_string(), stored)]));
        path.to_str().unwrap().to_string()
    };
    let missing = write("missing.safetensors", "loads", common::i64_tensor(&[1, 12], &[1; 12]));
    common::assert_fails_with(
        &placement_args(&missing, out_s, "16", "8"),
        "missing.safetensors: tensor `weight`: missing",
    );
    let floats = ndarray::ArrayD::from_elem(vec![1, 12], 1.0f32);
    let float = write("float.safetensors", "weight", common::f32_tensor(&floats));
    common::assert_fails_with(
        &placement_args(&float, out_s, "16", "8"),
        "float.safetensors: tensor `weight`: dtype F32",
    );
    let mut loads = [5; 12];
    loads[3] = -1;
    let negative = write("negative.safetensors", "weight", common::i64_tensor(&[1, 12], &loads));
    common::assert_fails_with(&placement_args(&negative, out_s, "16", "8"), "tensor `weight`: [0, 3] is -1");
    let flat = write("flat.safetensors", "weight", common::i64_tensor(&[12], &[1; 12]));
    common::assert_fails_with(&placement_args(&flat, out_s, "16", "8"), "expected [layers, experts]");
    common::assert_fails_with(
        &placement_args("/nonexistent/loads.safetensors", out_s, "16", "8"),
        "/nonexistent/loads",
    );
    assert!(!out.exists());
}

/// A `results.json` in the ablations' layout: one run, one domain, one MoE layer of 4
/// experts with loads 30, 10, 10, 10 (top-1, 30 sequences of 2 tokens: 60 routed, 15 per
/// expert when balanced, so `relative_load` is load / 15).
fn results_json(dir: &std::path::Path) -> std::path::PathBuf {
    let doc = serde_json::json!({
        "study": "toy",
        "preset": { "seq_len": 2, "model": { "n_activated_experts": 1, "n_routed_experts": 4 } },
        "runs": [{ "variant": "skewed", "seed": 0, "domains": {
            "prose": { "tokens": 30, "relative_load": [[2.0, 10.0 / 15.0, 10.0 / 15.0, 10.0 / 15.0]] }
        }}]
    });
    let path = dir.join("results.json");
    std::fs::write(&path, serde_json::to_string(&doc).unwrap()).unwrap();
    path
}

#[test]
fn study_places_measured_loads_and_writes_its_figure() {
    let tmp = tempfile::tempdir().unwrap();
    let results = results_json(tmp.path());
    let out = tmp.path().join("study");
    let (ok, stdout, stderr) =
        common::v3lab(&["eplb", "--study", results.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("skewed"), "{stdout}");
    assert!(std::fs::read_to_string(out.join("eplb-study.svg")).unwrap().contains("<svg"));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eplb-study.json")).unwrap()).unwrap();
    let point = |gpus: u64, redundant: u64| {
        let points = doc["points"].as_array().unwrap();
        let p = points.iter().find(|p| p["gpus"] == gpus && p["redundant"] == redundant).unwrap();
        (p["max_over_mean"][0].as_f64().unwrap(), p["index_order"][0].as_f64().unwrap())
    };
    // By hand. 2 GPUs, no redundancy: heaviest first into the lighter GPU with room gives
    // {30, 10} and {10, 10}: 40 against a mean of 30; index order is the same split.
    let (placed, index_order) = point(2, 0);
    assert!((placed - 4.0 / 3.0).abs() < 1e-12 && (index_order - 4.0 / 3.0).abs() < 1e-12, "{placed} {index_order}");
    // One redundant expert per GPU (6 replicas): the 30 gets two more copies (15 > 10, then
    // 10 is the first of equal maxima), six replicas of 10, three per GPU: balanced.
    assert_eq!(point(2, 2).0, 1.0);
    // 4 GPUs, no redundancy: one expert each, 30 against a mean of 15.
    assert_eq!(point(4, 0).0, 2.0);
}

#[test]
fn study_refuses_loads_that_are_not_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("results.json");
    let doc = serde_json::json!({
        "preset": { "seq_len": 2, "model": { "n_activated_experts": 1, "n_routed_experts": 4 } },
        "runs": [{ "variant": "v", "domains": { "prose": { "tokens": 30, "relative_load": [[1.01, 1.0, 1.0, 0.99]] } } }]
    });
    std::fs::write(&path, doc.to_string()).unwrap();
    let out = tmp.path().join("study");
    common::assert_fails_with(
        &["eplb", "--study", path.to_str().unwrap(), "--out", out.to_str().unwrap()],
        "runs[0].domains.prose.relative_load[0][0]",
    );
}

#[test]
fn study_also_places_each_domain_by_the_other_domains_loads() {
    // Two domains, loads 30, 10, 10, 10 and 10, 10, 10, 30 (15 per expert when balanced).
    let tmp = tempfile::tempdir().unwrap();
    let third = 10.0 / 15.0;
    let doc = serde_json::json!({
        "preset": { "seq_len": 2, "model": { "n_activated_experts": 1, "n_routed_experts": 4 } },
        "runs": [{ "variant": "v", "domains": {
            "code": { "tokens": 30, "relative_load": [[2.0, third, third, third]] },
            "prose": { "tokens": 30, "relative_load": [[third, third, third, 2.0]] }
        }}]
    });
    let path = tmp.path().join("results.json");
    std::fs::write(&path, doc.to_string()).unwrap();
    let out = tmp.path().join("study");
    let (ok, stdout, stderr) =
        common::v3lab(&["eplb", "--study", path.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eplb-study.json")).unwrap()).unwrap();
    let point = doc["points"].as_array().unwrap().iter().find(|p| p["gpus"] == 2 && p["redundant"] == 2).unwrap();
    // By hand, 2 GPUs and 6 replicas. Placed by prose's loads, the 30 of expert 3 gets three
    // copies; the six equal replicas go 0, 2, 3 | 1, 3, 3 (lighter GPU first, the first on
    // a tie). Code's loads on that: 30 + 10 + 10/3 against 10 + 20/3, so 43.3 over a mean
    // of 30; the mirror image for prose.
    let held_out: Vec<f64> =
        point["held_out_by_domain"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(held_out.len(), 2);
    for value in held_out {
        assert!((value - 13.0 / 9.0).abs() < 1e-12, "{value}");
    }
}
