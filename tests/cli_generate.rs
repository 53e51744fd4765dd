//! `v3lab generate` end to end: transformers' greedy generations on checkpoints that
//! transformers wrote, text in and text out on a model `v3lab train` wrote (tokenizer and
//! generation config beside it), MTP speculative decoding, and every bad input refused by
//! the flag that is at fault.

mod common;

use common::{assert_fails_with, v3lab};
use std::path::{Path, PathBuf};

fn transformers_golden(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("goldens/transformers").join(case)
}

fn i64s(path: &Path, name: &str) -> Vec<i64> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensor(name).unwrap().data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
}

fn json_run(args: &[&str]) -> serde_json::Value {
    let (ok, stdout, stderr) = v3lab(args);
    assert!(ok, "{args:?}: {stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn ids(v: &serde_json::Value) -> Vec<i64> {
    v["ids"].as_array().unwrap().iter().map(|i| i.as_i64().unwrap()).collect()
}

#[test]
fn greedy_equals_transformers_generate() {
    for case in ["yarn", "yarn-equal"] {
        let dir = transformers_golden(case);
        let expected = dir.join("expected.safetensors");
        for p in 0..2 {
            let prompt: Vec<String> = i64s(&expected, &format!("prompt{p}")).iter().map(i64::to_string).collect();
            let prompt = prompt.join(",");
            let out = json_run(&[
                "generate",
                "--checkpoint",
                dir.to_str().unwrap(),
                "--prompt-ids",
                &prompt,
                "--max-new-tokens",
                "20",
                "--json",
            ]);
            assert_eq!(ids(&out), i64s(&expected, &format!("greedy{p}")), "{case} prompt {p}");
            assert_eq!(out["forwards"], out["new_tokens"], "plain decoding: one forward per token");
        }
        // Streaming: the ids on stdout, the MTP note and the summary on stderr.
        let (ok, stdout, stderr) =
            v3lab(&["generate", "--checkpoint", dir.to_str().unwrap(), "--prompt-ids", "3,4", "--max-new-tokens", "5"]);
        assert!(ok, "{stderr}");
        assert_eq!(stdout.split_whitespace().count(), 5, "{stdout}");
        assert!(stderr.contains("loaded without MTP") && stderr.contains("prompt 2 tokens, 5 new"), "{stderr}");
    }
}

#[test]
fn text_in_text_out_with_speculative_decoding() {
    let tmp = tempfile::tempdir().unwrap();
    let run = common::tiny_corpus_run(tmp.path());
    let out = tmp.path().join("out");
    let (ok, _, stderr) = v3lab(&[
        "train",
        "--quiet",
        "--init-seed",
        "7",
        "--checkpoint",
        run.model.to_str().unwrap(),
        "--corpus",
        run.corpus.to_str().unwrap(),
        "--config",
        run.train.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let generation: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("generation_config.json")).unwrap()).unwrap();
    assert_eq!(generation["eos_token_id"], 256, "the end-of-document token ends a generation");
    let dir = out.to_str().unwrap();
    let base = ["generate", "--checkpoint", dir, "--prompt", "doc 1: ab", "--max-new-tokens", "6", "--json"];
    let plain = json_run(&base);
    let speculative = json_run(&[&base[..], &["--speculative", "mtp"]].concat());
    assert_eq!(ids(&plain), ids(&speculative), "greedy speculative decoding is greedy decoding");
    assert_eq!(plain["prompt_tokens"], 9);
    assert!(plain["text"].is_string() && speculative["drafted"].as_u64().unwrap() > 0, "{speculative}");
    let text: String = ids(&plain).iter().filter(|&&i| i < 256).map(|&i| i as u8 as char).collect();
    if ids(&plain).iter().all(|&i| i < 128) {
        assert_eq!(plain["text"], text, "ASCII ids decode to their bytes");
    }
    // Sampling is seeded: the same seed, the same ids.
    let sampled = [&base[..], &["--temperature", "0.8", "--top-k", "20", "--seed", "5"]].concat();
    assert_eq!(ids(&json_run(&sampled)), ids(&json_run(&sampled)));
    // Streamed text, and the summary with the MTP statistics.
    let (ok, stdout, stderr) =
        v3lab(&["generate", "--checkpoint", dir, "--prompt", "doc", "--max-new-tokens", "4", "--speculative", "mtp"]);
    assert!(ok && !stdout.is_empty(), "{stderr}");
    assert!(stderr.contains("MTP acceptance") && stderr.contains("tokens per main forward"), "{stderr}");

    // Bad input, named by its flag.
    let fails = |extra: &[&str], needle: &str| {
        let args = [&["generate", "--checkpoint", dir][..], extra].concat();
        assert_fails_with(&args, needle);
    };
    fails(&["--prompt", ""], "--prompt: empty");
    fails(&["--prompt", &"a".repeat(17)], "--prompt: 17 tokens exceed the context of 16");
    fails(&["--prompt-ids", "1,260"], "--prompt-ids: token id 260");
    fails(&["--prompt-ids", "-1"], "--prompt-ids: token id -1");
    fails(&["--prompt", "ab", "--temperature", "-0.1"], "--temperature: must be a finite number ≥ 0");
    fails(&["--prompt", "ab", "--top-p", "1.5"], "--top-p: must lie in (0, 1]");
    fails(&["--prompt", "ab", "--top-p", "0"], "--top-p: must lie in (0, 1]");
    fails(&["--prompt", "ab", "--max-new-tokens", "15"], "--max-new-tokens: 2 prompt tokens + 15 new");
    fails(&["--prompt", "a", "--prompt-ids", "1"], "cannot be used with");
    let golden = transformers_golden("yarn");
    let golden = golden.to_str().unwrap();
    assert_fails_with(
        &["generate", "--checkpoint", golden, "--prompt-ids", "1", "--speculative", "mtp"],
        "--speculative mtp needs MTP weights; the checkpoint has none",
    );
    assert_fails_with(&["generate", "--checkpoint", golden, "--prompt", "hi"], "has no tokenizer.json");
}

/// Training with an MTP objective from a checkpoint that has no MTP weights is refused,
/// saying so (here: one transformers wrote).
#[test]
fn mtp_training_needs_mtp_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = tmp.path().join("tokens.safetensors");
    let values: Vec<i64> = (0..16).map(|i| i % 96).collect();
    common::write_file(&tokens, &[("tokens".to_string(), common::i64_tensor(&[2, 8], &values))].into_iter().collect());
    let run = common::tiny_corpus_run(tmp.path());
    let golden = transformers_golden("yarn");
    let out = tmp.path().join("out");
    assert_fails_with(
        &[
            "train",
            "--quiet",
            "--checkpoint",
            golden.to_str().unwrap(),
            "--tokens",
            tokens.to_str().unwrap(),
            "--config",
            run.train.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        "train.json `mtp_depth` 1 needs MTP weights; the checkpoint has none",
    );
    assert!(!out.join("model.safetensors").exists(), "nothing written");
}
