//! `v3lab plan` on DeepSeek-V3's released `config.json`: the paper's statements beside the
//! numbers (§3.2.2, §3.4), and bad input refused naming the flag or file.

mod common;

const V3_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/deepseek-v3/config.json");

#[test]
fn paper_units_on_deepseek_v3() {
    let (ok, stdout, stderr) = common::v3lab(&["plan", "--config", V3_CONFIG, "--json"]);
    assert!(ok, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    // §3.2.2: NVLink 160 GB/s is "roughly 3.2 times" IB's 50; 4 nodes × 3.2 = "13 experts".
    assert!((doc["experts_per_node_for_one_ib_hop"].as_f64().unwrap() - 3.2).abs() < 1e-9);
    assert_eq!(doc["max_experts_at_the_cost_of_m_ib_hops"].as_f64().unwrap().round(), 13.0);
    let (prefill, decode) = (&doc["plans"][0], &doc["plans"][1]);
    // §3.4.1: 8 experts + 1 redundant per GPU; §3.4.2: one expert per GPU, 9 per token.
    assert_eq!((prefill["experts_per_gpu"].as_u64(), prefill["attention_dp"].as_u64()), (Some(9), Some(8)));
    assert_eq!((decode["experts_per_gpu"].as_u64(), decode["experts_per_token"].as_u64()), (Some(1), Some(9)));
    // §3.4.2: "usually within 256 tokens", memory-bound: the default decode micro-batch.
    let mb = &decode["micro_batch"];
    assert!((mb["tokens_per_expert"].as_f64().unwrap() - 256.0).abs() < 1e-9);
    assert!(mb["expert_weight_read_s"].as_f64().unwrap() > mb["expert_compute_s"].as_f64().unwrap());
    // Both units' weights fit an 80 GB GPU, with room for cache.
    for plan in [prefill, decode] {
        assert!(plan["weights"]["total"].as_f64().unwrap() < 80e9, "{plan}");
        assert!(plan["kv_cache_tokens_per_gpu"].as_f64().unwrap() > 0.0, "{plan}");
    }
    let (ok, text, _) = common::v3lab(&["plan", "--config", V3_CONFIG]);
    assert!(ok && text.contains("3.20") && text.contains("a maximum of 13 experts"), "{text}");
}

#[test]
fn flags_change_the_unit_and_bad_ones_name_the_flag() {
    // With IB as fast as NVLink, one expert per node costs as much as one IB hop.
    let (ok, stdout, stderr) = common::v3lab(&["plan", "--config", V3_CONFIG, "--ib-gbps", "160", "--json"]);
    assert!(ok, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["experts_per_node_for_one_ib_hop"].as_f64(), Some(1.0));
    let args = ["plan", "--config", V3_CONFIG, "--unit", "prefill", "--redundant-experts", "30"];
    common::assert_fails_with(&args, "--redundant-experts");
    common::assert_fails_with(&["plan", "--config", V3_CONFIG, "--gpus", "64"], "--unit");
    common::assert_fails_with(&["plan", "--config", V3_CONFIG, "--ib-gbps", "0"], "--ib-gbps");
    common::assert_fails_with(&["plan", "--config", "/nonexistent/config.json"], "/nonexistent/config.json");
    let tmp = tempfile::tempdir().unwrap();
    common::assert_fails_with(&["plan", "--checkpoint", tmp.path().to_str().unwrap()], "config.json");
}
