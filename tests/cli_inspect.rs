//! `v3lab inspect` at DeepSeek-V3's own size (its released config.json, no weights), held to
//! the numbers the paper and the release state: 671B total, 36.7B activated (without the
//! embedding table), an MTP module of 11.5B unique parameters, and the KV cache of 576
//! values per token and layer against 2 × 128 × 128 for multi-head attention.

mod common;

/// DeepSeek-V3's released `config.json`, as the project ships it.
const V3_CONFIG: &str = include_str!("../configs/deepseek-v3/config.json");

fn within(value: f64, paper: f64, rel: f64) -> bool {
    (value - paper).abs() <= rel * paper
}

#[test]
fn deepseek_v3_counts_match_the_paper() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("config.json"), V3_CONFIG).unwrap();
    let (ok, stdout, stderr) = common::v3lab(&["inspect", "--checkpoint", tmp.path().to_str().unwrap(), "--json"]);
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let p = &report["parameters"];
    let total = p["total"].as_f64().unwrap();
    let activated_without_embedding = p["activated"].as_f64().unwrap() - 129280.0 * 7168.0;
    // The paper rounds to 671B and 36.7B; the MTP module's "11.5B unique" excludes the shared embedding and head.
    assert!(within(total, 671e9, 0.001), "total {total}");
    assert!(within(activated_without_embedding, 36.7e9, 0.005), "activated {activated_without_embedding}");
    assert!(within(p["mtp"].as_f64().unwrap(), 11.5e9, 0.02), "mtp {}", p["mtp"]);
    let cache = &report["cache_values_per_token_per_layer"];
    assert_eq!(cache["mla_latent"], 576);
    assert_eq!(cache["mha"], 2 * 128 * 128);

    let (ok, text, _) = common::v3lab(&["inspect", "--checkpoint", tmp.path().to_str().unwrap()]);
    assert!(ok && text.contains("671.03B") && text.contains("576"), "{text}");
}

#[test]
fn inspecting_a_folder_without_config_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    common::assert_fails_with(&["inspect", "--checkpoint", tmp.path().to_str().unwrap()], "config.json");
}
