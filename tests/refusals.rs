//! Refuse before crashing (issue 20): sizes checked before anything is allocated, outputs
//! that never clobber, no stale temporaries, resumes that are honest, and messages that
//! name the flag, field or file at fault. Each case is one that a hostile or careless input
//! once broke: a panic, an allocation abort, a clobbered file, or a message naming nothing.

mod common;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn golden() -> PathBuf {
    common::goldens().join("train-v3-tiny")
}

/// A folder with the golden's `config.json` changed by `changes` (no weights).
fn config_only(dir: &Path, name: &str, changes: Value) -> PathBuf {
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(golden().join("config.json")).unwrap()).unwrap();
    for (k, v) in changes.as_object().unwrap() {
        config[k] = v.clone();
    }
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("config.json"), config.to_string()).unwrap();
    folder
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `v3lab train --init-seed 1` of `model` on the golden's batch into `out`.
fn train_from_scratch(model: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    train_from_scratch_with(&golden().join("train.json"), model, out, extra)
}

fn train_from_scratch_with(config: &Path, model: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let g = golden();
    let tokens = g.join("expected.safetensors");
    let mut args = vec!["train", "--quiet", "--init-seed", "1", "--checkpoint", s(model), "--tokens", s(&tokens)];
    args.extend(["--config", s(config), "--out", s(out)]);
    args.extend(extra);
    let (ok, _, stderr) = common::v3lab(&args);
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    (ok, stderr)
}

#[test]
fn sizes_that_overflow_are_refused_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (json!({"hidden_size": 1u64 << 60}), "hidden_size"),
        (json!({"vocab_size": 1u64 << 62}), "vocab_size"),
        (json!({"hidden_size": u64::MAX}), "hidden_size"),
        (json!({"intermediate_size": u64::MAX}), "intermediate_size"),
        (json!({"num_nextn_predict_layers": u64::MAX}), "num_nextn_predict_layers"),
    ];
    for (i, (change, field)) in cases.into_iter().enumerate() {
        let model = config_only(tmp.path(), &format!("m{i}"), change.clone());
        for command in ["inspect", "train"] {
            let (ok, stderr) = match command {
                "inspect" => {
                    let (ok, _, e) = common::v3lab(&["inspect", "--checkpoint", s(&model)]);
                    (ok, e)
                }
                _ => train_from_scratch(&model, &tmp.path().join("out"), &[]),
            };
            assert!(
                !ok && stderr.contains(&format!("`{field}`")) && stderr.contains("overflow"),
                "{command} {change}: {stderr}"
            );
            assert!(!stderr.contains("panicked") && !stderr.contains("memory allocation"), "{stderr}");
        }
    }
}

/// `inspect` is a calculator: big but valid configurations get their numbers.
#[test]
fn inspect_answers_big_valid_configurations() {
    let tmp = tempfile::tempdir().unwrap();
    let base: Value = serde_json::from_str(&std::fs::read_to_string(golden().join("config.json")).unwrap()).unwrap();
    for (i, change) in [
        json!({"hidden_size": 1_000_000_000u64}),
        json!({"vocab_size": 1_000_000_000_000u64}),
        json!({"n_routed_experts": 1_000_000_000u64, "n_group": 1, "topk_group": 1}),
        json!({"num_hidden_layers": 1_000_000_000u64}),
        json!({"max_position_embeddings": 1_000_000_000_000_000u64}),
    ]
    .into_iter()
    .enumerate()
    {
        let model = config_only(tmp.path(), &format!("m{i}"), change.clone());
        let (ok, stdout, stderr) = common::v3lab(&["inspect", "--json", "--checkpoint", s(&model)]);
        assert!(ok, "{change}: {stderr}");
        let report: Value = serde_json::from_str(&stdout).unwrap();
        let (total, activated) =
            (report["parameters"]["total"].as_u64().unwrap(), report["parameters"]["activated"].as_u64().unwrap());
        assert!(activated <= total, "{change}: activated {activated} > total {total}");
        // The part the change scales, from the config alone: at least V·d for the embedding
        // and head, L·(attention) for the layers, and so on: here, more than the base model.
        let (_, base_out, _) = common::v3lab(&["inspect", "--json", "--checkpoint", s(&golden())]);
        let base_total = serde_json::from_str::<Value>(&base_out).unwrap()["parameters"]["total"].as_u64().unwrap();
        if change.get("max_position_embeddings").is_none() {
            assert!(total > 1000 * base_total, "{change}: {total}");
        }
        let _ = &base;
    }
    // Exact: a vocabulary of 10¹² adds (10¹² − V₀) rows to the embedding and to the head.
    let (_, big, _) = common::v3lab(&["inspect", "--json", "--checkpoint", s(&tmp.path().join("m1"))]);
    let (_, small, _) = common::v3lab(&["inspect", "--json", "--checkpoint", s(&golden())]);
    let total = |t: &str| serde_json::from_str::<Value>(t).unwrap()["parameters"]["total"].as_u64().unwrap();
    let (v0, d) = (base["vocab_size"].as_u64().unwrap(), base["hidden_size"].as_u64().unwrap());
    assert_eq!(total(&big) - total(&small), 2 * (1_000_000_000_000 - v0) * d);
}

#[test]
fn sizes_that_cannot_fit_are_refused_before_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (json!({"hidden_size": 1_000_000_000u64, "num_nextn_predict_layers": 0}), "hidden_size"),
        (json!({"vocab_size": 1_000_000_000_000u64}), "vocab_size"),
        (json!({"num_attention_heads": 1_000_000_000u64}), "num_attention_heads"),
        (json!({"max_position_embeddings": 1_000_000_000_000_000u64}), "max_position_embeddings"),
        (json!({"n_routed_experts": 1_000_000_000u64, "n_group": 1, "topk_group": 1}), "n_routed_experts"),
        (json!({"num_hidden_layers": 1_000_000_000u64}), "num_hidden_layers"),
        (json!({"num_nextn_predict_layers": 1_000_000u64}), "num_nextn_predict_layers"),
    ];
    // Without MTP where the config has none (train.json's mtp_depth must agree).
    let mut no_mtp: Value =
        serde_json::from_str(&std::fs::read_to_string(golden().join("train.json")).unwrap()).unwrap();
    no_mtp["mtp_depth"] = 0.into();
    let no_mtp_path = tmp.path().join("no-mtp.json");
    std::fs::write(&no_mtp_path, no_mtp.to_string()).unwrap();
    for (i, (change, field)) in cases.into_iter().enumerate() {
        let model = config_only(tmp.path(), &format!("m{i}"), change.clone());
        let train = if change.get("num_nextn_predict_layers") == Some(&json!(0)) {
            no_mtp_path.clone()
        } else {
            golden().join("train.json")
        };
        let (ok, stderr) = train_from_scratch_with(&train, &model, &tmp.path().join(format!("out{i}")), &[]);
        assert!(!ok, "{change}");
        // The MTP mismatch (train.json asks for 1) is caught first where the depth changed.
        let named = stderr.contains(field) || (field == "num_nextn_predict_layers" && stderr.contains("mtp_depth"));
        assert!(named && !stderr.contains("memory allocation"), "{change}: {stderr}");
        if field != "num_nextn_predict_layers" {
            assert!(stderr.contains("this machine has") && stderr.contains("--no-memory-check"), "{stderr}");
        }
        assert!(!tmp.path().join(format!("out{i}")).exists(), "{change}: a refused run created its --out");
    }
}

#[test]
fn outputs_go_only_to_regular_files_or_new_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let g = golden();
    let tokens = tmp.path().join("tokens.safetensors");
    std::fs::copy(g.join("expected.safetensors"), &tokens).unwrap();
    let before = std::fs::read(&tokens).unwrap();
    let logits =
        |out: &Path| common::v3lab(&["logits", "--checkpoint", s(&g), "--tokens", s(&tokens), "--out", s(out)]);
    // A device node is never replaced (the final rename would have replaced /dev/full).
    if Path::new("/dev/full").exists() {
        let (ok, _, stderr) = logits(Path::new("/dev/full"));
        assert!(!ok && stderr.contains("/dev/full") && stderr.contains("regular file"), "{stderr}");
        assert!(!std::fs::metadata("/dev/full").unwrap().is_file());
    }
    // A symbolic link is not followed nor replaced.
    let elsewhere = tmp.path().join("elsewhere.safetensors");
    std::fs::write(&elsewhere, b"not v3lab's to replace").unwrap();
    let link = tmp.path().join("link.safetensors");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let (ok, _, stderr) = logits(&link);
    assert!(!ok && stderr.contains("symbolic link"), "{stderr}");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(&elsewhere).unwrap(), b"not v3lab's to replace");
    // An output that is an input is refused, for logits and train alike.
    let (ok, _, stderr) = logits(&tokens);
    assert!(!ok && stderr.contains("--out is also the input --tokens"), "{stderr}");
    let (ok, stderr) = train_from_scratch(&g, &tokens, &[]);
    assert!(!ok && stderr.contains("tokens.safetensors") && stderr.contains("not a folder"), "{stderr}");
    assert_eq!(std::fs::read(&tokens).unwrap(), before, "the input was changed");
    let (ok, stderr) = train_from_scratch(&g, &g, &[]);
    assert!(!ok && stderr.contains("--out is also the input --checkpoint"), "{stderr}");
}

#[test]
fn a_folder_being_written_is_refused_to_a_second_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let held = v3lab::io::OutputDir::lock(&out).unwrap();
    let (ok, stderr) = train_from_scratch(&golden(), &out, &[]);
    assert!(!ok && stderr.contains("another v3lab run is writing"), "{stderr}");
    assert!(!out.join("model.safetensors").exists());
    drop(held);
    assert!(train_from_scratch(&golden(), &out, &[]).0);
}

#[test]
fn stale_temporaries_are_swept_and_a_failed_first_step_leaves_no_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let stale = [
        out.join("checkpoints/.step-000002.tmp-4242"),
        out.join(".metrics.jsonl.4242.tmp"),
        out.join(".curves.4242.tmp.png"),
    ];
    std::fs::create_dir_all(&stale[0]).unwrap();
    std::fs::write(stale[0].join("model.safetensors"), b"half a checkpoint").unwrap();
    std::fs::write(&stale[1], b"{\"step\": 0").unwrap();
    std::fs::write(&stale[2], b"\x89PNG").unwrap();
    assert!(train_from_scratch(&golden(), &out, &[]).0);
    for path in &stale {
        assert!(!path.exists(), "{} was left behind", path.display());
    }
}

/// What a checkpoint remembers refuses a resume that would not continue the same run.
#[test]
fn resumes_with_other_data_fewer_steps_or_an_edited_model_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let g = golden();
    let run = |checkpoint: &Path, tokens: &Path, config: &Path, out: &Path, resume: bool| {
        let mut args =
            vec!["train", "--quiet", "--checkpoint", s(checkpoint), "--tokens", s(tokens), "--config", s(config)];
        args.extend(["--out", s(out)]);
        if resume {
            args.push("--resume");
        }
        let (ok, _, stderr) = common::v3lab(&args);
        assert!(!stderr.contains("panicked"), "{stderr}");
        (ok, stderr)
    };
    let train = |steps: usize| {
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(g.join("train.json")).unwrap()).unwrap();
        v["steps"] = steps.into();
        let path = tmp.path().join(format!("train{steps}.json"));
        std::fs::write(&path, v.to_string()).unwrap();
        path
    };
    let tokens = g.join("expected.safetensors");
    let first = tmp.path().join("first");
    assert!(run(&g, &tokens, &train(3), &first, false).0);
    let ckpt = first.join("checkpoints/step-000003");
    // Other tokens: the same shape, one id changed.
    let file = v3lab::io::MappedFile::open(&tokens).unwrap();
    let mut ids = file.i64("tokens").unwrap();
    ids[[0, 0]] = (ids[[0, 0]] + 1) % 100;
    let other = tmp.path().join("other.safetensors");
    v3lab::io::write_safetensors(&other, &[v3lab::io::OwnedTensor::i64("tokens", ids.view())]).unwrap();
    let (ok, stderr) = run(&ckpt, &other, &train(5), &tmp.path().join("a"), true);
    assert!(!ok && stderr.contains("--tokens") && stderr.contains("fingerprint"), "{stderr}");
    let (ok, stderr) = run(&ckpt, &tokens, &train(2), &tmp.path().join("b"), true);
    assert!(!ok && stderr.contains("`steps`") && stderr.contains("below"), "{stderr}");
    // An edited config.json in the checkpoint (one more shared expert's worth of nothing:
    // a changed routed scaling factor changes no shape, only the model).
    let config_path = ckpt.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["routed_scaling_factor"] = json!(config["routed_scaling_factor"].as_f64().unwrap() * 2.0);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let (ok, stderr) = run(&ckpt, &tokens, &train(5), &tmp.path().join("c"), true);
    assert!(!ok && stderr.contains("config.json") && stderr.contains("differs"), "{stderr}");
}

/// Point 6 of the issue: each message names the flag, field or file at fault.
#[test]
fn messages_name_what_is_at_fault() {
    let tmp = tempfile::tempdir().unwrap();
    let g = golden();
    let train_json = |name: &str, changes: Value| {
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(g.join("train.json")).unwrap()).unwrap();
        for (k, val) in changes.as_object().unwrap() {
            v[k] = val.clone();
        }
        let path = tmp.path().join(name);
        std::fs::write(&path, v.to_string()).unwrap();
        path
    };
    let corpus = tmp.path().join("corpus.txt");
    let docs: Vec<String> = (0..30).map(|i| format!("document {i} {}", "words ".repeat(30))).collect();
    std::fs::write(&corpus, docs.join("\n\n")).unwrap();
    let out = tmp.path().join("out");
    let fails = |args: &[&str], needles: &[&str]| {
        let (ok, _, stderr) = common::v3lab(args);
        assert!(!ok && !stderr.contains("panicked"), "{args:?}: {stderr}");
        for n in needles {
            assert!(stderr.contains(n), "{args:?} should name `{n}`: {stderr}");
        }
    };
    // data.seq_len beyond the context (64): named before step 0, with the file.
    let long = train_json("long.json", json!({"data": {"seq_len": 72, "batch_size": 2}}));
    fails(
        &["train", "--quiet", "--checkpoint", s(&g), "--corpus", s(&corpus), "--config", s(&long), "--out", s(&out)],
        &["long.json", "data.seq_len", "72", "64"],
    );
    // An MTP depth mismatch blames train.json and the model, not the tokens.
    let tokens = g.join("expected.safetensors");
    let mtp0 = train_json("mtp0.json", json!({"mtp_depth": 0}));
    // `v3lab train` of the golden checkpoint on its own batch.
    let train_on_tokens = |config: &Path, out: &Path| {
        common::v3lab(&[
            "train",
            "--quiet",
            "--checkpoint",
            s(&g),
            "--tokens",
            s(&tokens),
            "--config",
            s(config),
            "--out",
            s(out),
        ])
    };
    let (ok, _, stderr) = train_on_tokens(&mtp0, &out);
    assert!(
        !ok && stderr.contains("mtp0.json") && stderr.contains("mtp_depth") && !stderr.contains("expected.safetensors"),
        "{stderr}"
    );
    // Two positions with MTP: the tokens file is named before step 0.
    let two = tmp.path().join("two.safetensors");
    v3lab::io::write_safetensors(
        &two,
        &[v3lab::io::OwnedTensor::i64("tokens", ndarray::arr2(&[[1i64, 2]]).into_dyn().view())],
    )
    .unwrap();
    fails(
        &[
            "train",
            "--quiet",
            "--checkpoint",
            s(&g),
            "--tokens",
            s(&two),
            "--config",
            s(&g.join("train.json")),
            "--out",
            s(&out),
        ],
        &["two.safetensors", "positions", "mtp_depth"],
    );
    // A link loop names the link; a folder or /dev/null names what it is.
    let looped = tmp.path().join("looped");
    std::fs::create_dir_all(&looped).unwrap();
    std::fs::copy(g.join("config.json"), looped.join("config.json")).unwrap();
    std::os::unix::fs::symlink("model.safetensors", looped.join("model.safetensors")).unwrap();
    fails(
        &["logits", "--checkpoint", s(&looped), "--tokens", s(&tokens), "--out", s(&tmp.path().join("l.st"))],
        &["looped/model.safetensors", "symbolic links"],
    );
    fails(
        &["logits", "--checkpoint", s(&g), "--tokens", "/dev/null", "--out", s(&tmp.path().join("l.st"))],
        &["/dev/null", "not a regular file"],
    );
    fails(
        &["logits", "--checkpoint", s(&g), "--tokens", s(tmp.path()), "--out", s(&tmp.path().join("l.st"))],
        &["is a folder"],
    );
    // A missing corpus is missing, not empty.
    fails(
        &[
            "train",
            "--quiet",
            "--checkpoint",
            s(&g),
            "--corpus",
            "/nonexistent",
            "--config",
            s(&g.join("train.json")),
            "--out",
            s(&out),
        ],
        &["/nonexistent", "No such file"],
    );
    // Config fields: a missing n_group, a rotary type that is not a string, a YaRN that
    // makes the rotary amplitude infinite.
    for (name, change, needles) in [
        ("a", json!({"n_group": null, "topk_group": 2}), vec!["`n_group`", "missing", "topk_group"]),
        ("b", json!({"rope_scaling": {"type": 5}}), vec!["rope_scaling.type", "expected a string"]),
        (
            "c",
            // m(s, mscale) = 0.1 · mscale · ln s + 1 overflows f32 for s = 10³⁰, mscale = 10³⁸.
            json!({"rope_scaling": {"type": "yarn", "factor": 1e30, "original_max_position_embeddings": 16, "mscale": 1e38, "mscale_all_dim": 1.0}}),
            vec!["attention_factor", "finite"],
        ),
    ] {
        let model = config_only(tmp.path(), name, change);
        fails(&["inspect", "--checkpoint", s(&model)], &needles);
    }
    // A NaN in a saved AdamW moment is reported against optimizer.safetensors.
    let run = tmp.path().join("run");
    let (ok, _, stderr) = train_on_tokens(&train_json("t2.json", json!({"steps": 2})), &run);
    assert!(ok, "{stderr}");
    let ckpt = run.join("checkpoints/step-000002");
    let opt = ckpt.join("optimizer.safetensors");
    let file = v3lab::io::MappedFile::open(&opt).unwrap();
    let names: Vec<String> = file.tensors().names().into_iter().map(str::to_string).collect();
    let mut tensors: Vec<v3lab::io::OwnedTensor> =
        names.iter().map(|n| v3lab::io::OwnedTensor::f32(n.clone(), file.f32(n).unwrap().view())).collect();
    drop(file);
    let victim = tensors.iter().position(|t| t.name.starts_with("exp_avg_sq.")).unwrap();
    tensors[victim].bytes[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    let victim_name = tensors[victim].name.clone();
    v3lab::io::write_safetensors(&opt, &tensors).unwrap();
    fails(
        &[
            "train",
            "--quiet",
            "--resume",
            "--checkpoint",
            s(&ckpt),
            "--tokens",
            s(&tokens),
            "--config",
            s(&train_json("t4.json", json!({"steps": 4}))),
            "--out",
            s(&tmp.path().join("r")),
        ],
        &["optimizer.safetensors", &victim_name, "NaN"],
    );
}

/// A config.json describing far more than its weights is refused before any shape is
/// built (10⁹ experts' shapes alone would exhaust memory), even past the memory check.
#[test]
fn a_config_larger_than_its_weights_is_refused_before_building_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let model =
        config_only(tmp.path(), "m", json!({"n_routed_experts": 1_000_000_000u64, "n_group": 1, "topk_group": 1}));
    std::fs::copy(golden().join("model.safetensors"), model.join("model.safetensors")).unwrap();
    let tokens = golden().join("expected.safetensors");
    let out = tmp.path().join("logits.safetensors");
    let (ok, _, stderr) = common::v3lab(&[
        "logits",
        "--no-memory-check",
        "--checkpoint",
        s(&model),
        "--tokens",
        s(&tokens),
        "--out",
        s(&out),
    ]);
    assert!(!ok && stderr.contains("describes") && stderr.contains("not this model's weights"), "{stderr}");
    assert!(!stderr.contains("memory allocation") && !out.exists(), "{stderr}");
}
