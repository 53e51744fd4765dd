//! Fuzz targets for every file v3lab reads from a user: safetensors files, checkpoint
//! folders (`config.json` + weights, sharded or not), `config.json` alone, token files and
//! `train.json`. Each target takes arbitrary bytes, lays them where the loader expects a
//! file (a scratch folder per thread) and calls the loader the CLI calls. A target returns
//! normally on every input: an `Err` is the expected answer to a bad file; a panic, an
//! abort (a huge allocation) or a hang is a finding.
//!
//! The targets are driven by cargo-fuzz (`fuzz/`, nightly, libFuzzer) and by this crate's
//! stable-toolchain fuzzer (`src/bin/fuzz.rs`); `fuzz/README.md` tells how to run both and
//! what the runs found.

use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use v3lab_reference::checkpoint::{self, Opened, SaveDtype};
use v3lab_reference::config::size::training_need;
use v3lab_reference::fp8::codec::{Overflow, E4M3};
use v3lab_reference::io::{read_tokens, MappedFile};
use v3lab_reference::mla::CacheValues;
use v3lab_reference::params::{Layout, Params};
use v3lab_reference::train::TrainConfig;
use v3lab_reference::ModelConfig;

pub mod mutate;

/// A fuzz target: arbitrary bytes in, normal return out.
pub type Target = fn(&[u8]);

/// Every target by name (the name of its seed folder `fuzz/corpus/<name>/` and of its
/// cargo-fuzz target).
pub const TARGETS: &[(&str, Target)] = &[
    ("safetensors_file", safetensors_file),
    ("safetensors_checkpoint", safetensors_checkpoint),
    ("checkpoint_folder", checkpoint_folder),
    ("checkpoint_header", checkpoint_header),
    ("config_json", config_json),
    ("token_file", token_file),
    ("train_json", train_json),
];

pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

// ---------------------------------------------------------------------------------------
// Scratch folders

thread_local! {
    static SCRATCH: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Where scratch files go: `$V3LAB_FUZZ_TMP`, else `/dev/shm` (rewriting a file on a disk
/// can cost milliseconds), else the temporary folder.
pub fn scratch_base() -> PathBuf {
    if let Some(dir) = std::env::var_os("V3LAB_FUZZ_TMP") {
        return dir.into();
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

/// This thread's scratch folder, emptied: one per thread and process, reused by every run.
fn scratch() -> PathBuf {
    let dir = SCRATCH.with(|s| {
        s.borrow_mut()
            .get_or_insert_with(|| {
                let base = scratch_base();
                let id = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric(), "");
                base.join(format!("v3lab-fuzz-{}-{id}", std::process::id()))
            })
            .clone()
    });
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    } else {
        std::fs::create_dir_all(&dir).expect("creating the fuzz scratch folder");
    }
    dir
}

/// Removes this thread's scratch folder (the fuzzer calls it before it exits).
pub fn remove_scratch() {
    SCRATCH.with(|s| {
        if let Some(dir) = s.borrow_mut().take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    });
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).expect("writing a fuzz input to the scratch folder");
    path
}

thread_local! {
    static OUTCOME: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Formats an error as the CLI would print it (its Display must not panic either), and
/// records it for [`run_with_outcome`].
fn shown<E: std::fmt::Display>(e: E) {
    note(&e.to_string());
}

/// Records a step of a run for [`run_with_outcome`]: digits and the scratch folder removed,
/// cut to 100 characters, so that one kind of error is one outcome.
fn note(msg: &str) {
    OUTCOME.with(|o| {
        let mut o = o.borrow_mut();
        if o.len() >= 8 {
            return;
        }
        let scratch = SCRATCH.with(|s| s.borrow().as_ref().map(|p| p.display().to_string()));
        let msg = match scratch {
            Some(dir) => msg.replace(&dir, ""),
            None => msg.to_string(),
        };
        let mut out = String::new();
        for c in msg.chars().take(100) {
            if c.is_ascii_digit() {
                if !out.ends_with('#') {
                    out.push('#');
                }
            } else {
                out.push(c);
            }
        }
        o.push(out);
    });
}

/// Runs `target` on `data` and returns what happened, as one line: each error shown and
/// each stage passed, normalised (the stable fuzzer keeps an input whose outcome is new).
pub fn run_with_outcome(target: Target, data: &[u8]) -> String {
    OUTCOME.with(|o| o.borrow_mut().clear());
    target(data);
    OUTCOME.with(|o| o.borrow_mut().join(" | "))
}

// ---------------------------------------------------------------------------------------
// Targets

/// Any bytes as a `.safetensors` file: `MappedFile::open`, then every reader on every tensor.
pub fn safetensors_file(data: &[u8]) {
    let dir = scratch();
    read_every_tensor(&write(&dir, "file.safetensors", data));
}

fn read_every_tensor(path: &Path) {
    let file = match MappedFile::open(path) {
        Ok(f) => f,
        Err(e) => return shown(e),
    };
    note("opened");
    let names: Vec<String> = file.tensors().names().into_iter().map(String::from).collect();
    // Every tensor as f32; the other readers in turn (each read parses the header again).
    for (k, name) in names.iter().take(64).enumerate() {
        let _ = file.f32(name).map_err(shown);
        match k % 3 {
            0 => drop(file.f64(name).map_err(shown)),
            1 => drop(file.i64(name).map_err(shown)),
            _ => drop(file.bytes(name).map_err(shown)),
        }
    }
    let _ = file.f32("absent tensor").map_err(shown);
}

/// Any bytes as the `model.safetensors` of a checkpoint folder whose `config.json` is the
/// seed checkpoint's ([`seed_config`]): `checkpoint::load`, as `v3lab logits` and
/// `generate` call it, and `Opened::open` as `v3lab inspect`.
pub fn safetensors_checkpoint(data: &[u8]) {
    let dir = scratch();
    write(&dir, "config.json", &serde_json::to_vec_pretty(&seed_config()).unwrap());
    write(&dir, "model.safetensors", data);
    load_folder(&dir);
}

/// The files a checkpoint folder may hold, by the index byte of [`pack_folder`]'s entries.
pub const FOLDER_FILES: &[&str] = &[
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
];

/// A checkpoint folder packed into one input: entries `[file index: u8][length: u32 LE][bytes]`,
/// the index taken modulo [`FOLDER_FILES`]' length, a length past the end meaning "to the end".
pub fn pack_folder(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, bytes) in files {
        let index = FOLDER_FILES.iter().position(|f| f == name).expect("a known checkpoint file name");
        out.push(index as u8);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// The entries of a [`pack_folder`] input (a later entry of the same file replaces an earlier one).
pub fn unpack_folder(mut data: &[u8]) -> Vec<(&'static str, &[u8])> {
    let mut files: Vec<(&'static str, &[u8])> = Vec::new();
    while data.len() >= 5 {
        let name = FOLDER_FILES[data[0] as usize % FOLDER_FILES.len()];
        let len = u32::from_le_bytes(data[1..5].try_into().unwrap()) as usize;
        let body = &data[5..];
        let len = len.min(body.len());
        files.retain(|(n, _)| *n != name);
        files.push((name, &body[..len]));
        data = &body[len..];
    }
    files
}

/// A whole checkpoint folder (config, weights, shard index, shards) packed as [`pack_folder`]
/// says: `checkpoint::load` and `Opened::open`.
pub fn checkpoint_folder(data: &[u8]) {
    let dir = scratch();
    for (name, bytes) in unpack_folder(data) {
        write(&dir, name, bytes);
    }
    load_folder(&dir);
}

/// The seed checkpoint (`seed_checkpoint`) with its safetensors header and config.json
/// changed structurally, as the bytes direct ([`mutate::header_program`]): shapes, dtypes,
/// offsets, names, config fields, FP8 blocks and scales; the tensor data repacked to fit
/// the new header or not.
pub fn checkpoint_header(data: &[u8]) {
    let (config, weights) = mutate::header_program(data);
    let dir = scratch();
    write(&dir, "config.json", &config);
    write(&dir, "model.safetensors", &weights);
    load_folder(&dir);
}

fn load_folder(dir: &Path) {
    match Opened::open(dir) {
        Ok(opened) => {
            note("opened");
            let _ = opened.dtype_counts();
            let cfg = opened.config.clone();
            drop(opened);
            match checkpoint::load(dir) {
                Ok(ckpt) => {
                    note(&format!("loaded {}", ckpt.stored_dtype));
                    let _ = ckpt.no_mtp_error(dir, "fuzzing").to_string();
                    exercise_config(&ckpt.config);
                }
                Err(e) => shown(e),
            }
            exercise_config(&cfg);
        }
        Err(e) => shown(e),
    }
}

/// Any bytes as `config.json`: `ModelConfig::from_file_with_notes` (with `validate`), and
/// what `v3lab inspect` derives from a valid config.
pub fn config_json(data: &[u8]) {
    let dir = scratch();
    let path = write(&dir, "config.json", data);
    match ModelConfig::from_file_with_notes(&path) {
        Ok((cfg, notes)) => {
            note(&format!("valid, {} notes", notes.len()));
            exercise_config(&cfg)
        }
        Err(e) => shown(e),
    }
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        if let Ok(cfg) = ModelConfig::from_json(&value).map_err(shown) {
            exercise_config(&cfg);
        }
    }
}

/// What the CLI computes from a config that loaded: parameter shapes and counts (`inspect`,
/// `checkpoint::load`), cache sizes, softmax scale, routing, and the released JSON.
fn exercise_config(cfg: &ModelConfig) {
    let _ = cfg.validate().map_err(shown);
    let _ = cfg.softmax_scale();
    let _ = cfg.route_spec();
    let _ = CacheValues::of(cfg);
    for layer in 0..cfg.n_layers.min(4) {
        let _ = cfg.is_moe_layer(layer);
    }
    // What `inspect` computes, for any size; the shapes themselves only where the CLI would
    // build them: `checkpoint::load` for weights that can hold the model, `train
    // --init-seed` after the memory check (here: what fits in a gigabyte).
    let Ok(sizes) = cfg.sizes(Layout::default()).map_err(shown) else { return };
    let _ = sizes.parts.len();
    let fits = training_need(cfg, Layout::default(), 1, 16).is_ok_and(|need| need.bytes <= 1 << 30);
    if fits {
        let shapes = Params::shapes(cfg, Layout::default());
        let counts = shapes.counts(cfg);
        assert_eq!(
            (counts.total as u64, counts.mtp as u64),
            (sizes.total, sizes.mtp),
            "closed form against the shapes"
        );
    }
    let json = cfg.to_released_json();
    let _ = serde_json::to_string(&json).unwrap();
    let _ = ModelConfig::from_json(&json).map_err(shown);
}

/// Any bytes as a token file (`v3lab logits --tokens`, `v3lab train --tokens`): `io::read_tokens`.
pub fn token_file(data: &[u8]) {
    let dir = scratch();
    let path = write(&dir, "tokens.safetensors", data);
    match read_tokens(&path) {
        Ok(tokens) => {
            note("tokens");
            let _ = (tokens.nrows(), tokens.ncols(), tokens.iter().max());
        }
        Err(e) => shown(e),
    }
}

/// Any bytes as `train.json`: `TrainConfig::from_file` (with `validate`), and what training
/// derives from a valid one (precision, AdamW, the schedule's factors, the batch warm-up).
pub fn train_json(data: &[u8]) {
    let dir = scratch();
    let path = write(&dir, "train.json", data);
    match TrainConfig::from_file(&path) {
        Ok(cfg) => {
            note(&format!("valid {:?}", cfg.precision));
            exercise_train(&cfg)
        }
        Err(e) => shown(e),
    }
}

fn exercise_train(cfg: &TrainConfig) {
    let _ = cfg.model_precision().map_err(shown);
    let _ = cfg.adamw();
    let last = cfg.steps.saturating_sub(1);
    for step in [0, 1, last / 2, last, cfg.steps] {
        let _ = cfg.schedule.lr(cfg.lr, step);
    }
    if let Some(w) = &cfg.data.batch_warmup {
        for seen in [0, 1, w.tokens / 2, w.tokens, u64::MAX] {
            let _ = w.batch_size(cfg.data.batch_size, seen);
        }
    }
    let text = serde_json::to_string(cfg).unwrap();
    let _ = TrainConfig::from_json_str(&text).map_err(shown);
}

// ---------------------------------------------------------------------------------------
// Seeds

/// A tiny released-layout config.json: 2 layers (1 dense, 1 MoE), 1 MTP module, YaRN,
/// grouped sigmoid routing with the selection bias, low-rank queries.
pub fn seed_config() -> Value {
    json!({
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "vocab_size": 16,
        "hidden_size": 8,
        "intermediate_size": 12,
        "moe_intermediate_size": 4,
        "num_hidden_layers": 2,
        "num_nextn_predict_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "n_shared_experts": 1,
        "n_routed_experts": 4,
        "routed_scaling_factor": 2.5,
        "kv_lora_rank": 4,
        "q_lora_rank": 4,
        "qk_rope_head_dim": 2,
        "v_head_dim": 2,
        "qk_nope_head_dim": 2,
        "n_group": 2,
        "topk_group": 1,
        "num_experts_per_tok": 2,
        "first_k_dense_replace": 1,
        "norm_topk_prob": true,
        "scoring_func": "sigmoid",
        "topk_method": "noaux_tc",
        "moe_layer_freq": 1,
        "hidden_act": "silu",
        "max_position_embeddings": 32,
        "rms_norm_eps": 1e-06,
        "rope_theta": 10000.0,
        "rope_scaling": {
            "type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 8,
            "beta_fast": 32,
            "beta_slow": 1,
            "mscale": 1.0,
            "mscale_all_dim": 1.0
        },
        "attention_bias": false,
        "tie_word_embeddings": false,
        "torch_dtype": "float32"
    })
}

/// Storage of a seed checkpoint's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedDtype {
    F32,
    Bf16,
    /// Every 2-D weight in E4M3 with one `weight_scale_inv` per 128×128 block.
    Fp8,
}

/// The `model.safetensors` of the seed checkpoint (config [`seed_config`], random weights).
pub fn seed_checkpoint(dtype: SeedDtype) -> Vec<u8> {
    thread_local! {
        static CACHE: RefCell<Vec<(SeedDtype, Vec<u8>)>> = const { RefCell::new(Vec::new()) };
    }
    if let Some(bytes) = CACHE.with(|c| c.borrow().iter().find(|(d, _)| *d == dtype).map(|(_, b)| b.clone())) {
        return bytes;
    }
    let cfg = ModelConfig::from_json(&seed_config()).expect("the seed config is valid");
    let params = v3lab_reference::train::init::init_params(&cfg, 0.5, 7).expect("random weights");
    let dir = scratch_base().join(format!("v3lab-fuzz-seed-{}-{dtype:?}", std::process::id()));
    let save = if dtype == SeedDtype::Bf16 { SaveDtype::Bf16 } else { SaveDtype::F32 };
    checkpoint::save(&dir, &cfg, &params, save).expect("writing the seed checkpoint");
    let mut bytes = std::fs::read(dir.join("model.safetensors")).expect("reading the seed checkpoint");
    let _ = std::fs::remove_dir_all(&dir);
    if dtype == SeedDtype::Fp8 {
        bytes = to_fp8(&bytes);
    }
    CACHE.with(|c| c.borrow_mut().push((dtype, bytes.clone())));
    bytes
}

/// Every 2-D F32 weight of a safetensors file in E4M3 with its block scales (128×128 blocks).
fn to_fp8(f32_file: &[u8]) -> Vec<u8> {
    let (header, data) = mutate::split_safetensors(f32_file).expect("a valid file");
    let mut tensors: Vec<(String, Value, Vec<u8>)> = Vec::new();
    for (name, info) in &header {
        if name == "__metadata__" {
            continue;
        }
        let (a, b) = mutate::offsets(info).expect("valid offsets");
        let bytes = &data[a..b];
        let shape: Vec<usize> =
            info["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let is_matrix =
            shape.len() == 2 && name.ends_with(".weight") && !name.contains("embed") && !name.contains("norm");
        if !is_matrix {
            tensors.push((name.clone(), info.clone(), bytes.to_vec()));
            continue;
        }
        let values: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        let (rows, cols) = (shape[0], shape[1]);
        let (br, bc) = (rows.div_ceil(128), cols.div_ceil(128));
        let mut scales = vec![0f32; br * bc];
        for (k, v) in values.iter().enumerate() {
            let s = &mut scales[(k / cols / 128) * bc + (k % cols) / 128];
            *s = s.max(v.abs() / 448.0);
        }
        let scales: Vec<f32> = scales.into_iter().map(|s| if s > 0.0 { s } else { 1.0 }).collect();
        let codes: Vec<u8> = (values.iter().enumerate())
            .map(|(k, v)| E4M3.encode(v / scales[(k / cols / 128) * bc + (k % cols) / 128], Overflow::Saturate) as u8)
            .collect();
        tensors.push((name.clone(), json!({"dtype": "F8_E4M3", "shape": [rows, cols]}), codes));
        let scale_bytes = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        let scale_name = name.replace(".weight", ".weight_scale_inv");
        tensors.push((scale_name, json!({"dtype": "F32", "shape": [br, bc]}), scale_bytes));
    }
    mutate::build_safetensors(header.get("__metadata__").cloned(), tensors)
}

/// A token file: I64 `tokens` of `shape` holding `values` (cycled).
pub fn token_seed(shape: &[usize], values: &[i64], dtype: &str) -> Vec<u8> {
    let n: usize = shape.iter().product();
    let bytes: Vec<u8> = (0..n)
        .flat_map(|k| {
            let v = values[k % values.len()];
            if dtype == "I32" {
                (v as i32).to_le_bytes().to_vec()
            } else {
                v.to_le_bytes().to_vec()
            }
        })
        .collect();
    mutate::build_safetensors(None, vec![("tokens".into(), json!({"dtype": dtype, "shape": shape}), bytes)])
}

/// The seed inputs of `target`, built here (the committed `fuzz/corpus/<target>/` holds these
/// and the configuration files of the repository and its goldens).
pub fn builtin_seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let cfg = serde_json::to_vec_pretty(&seed_config()).unwrap();
    let f32 = seed_checkpoint(SeedDtype::F32);
    let bf16 = seed_checkpoint(SeedDtype::Bf16);
    let fp8 = seed_checkpoint(SeedDtype::Fp8);
    let tokens = token_seed(&[2, 5], &[1, 2, 3, 15, 0], "I64");
    match target {
        "safetensors_file" | "safetensors_checkpoint" => {
            vec![
                ("tiny-f32".into(), f32),
                ("tiny-bf16".into(), bf16),
                ("tiny-fp8".into(), fp8),
                ("tokens".into(), tokens),
            ]
        }
        "checkpoint_folder" => {
            let (sharded, index) = shard(&f32);
            let mut fp8_cfg = seed_config();
            fp8_cfg["quantization_config"] = json!({
                "activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]
            });
            let fp8_cfg = serde_json::to_vec_pretty(&fp8_cfg).unwrap();
            vec![
                ("tiny-f32".into(), pack_folder(&[("config.json", &cfg), ("model.safetensors", &f32)])),
                ("tiny-fp8".into(), pack_folder(&[("config.json", &fp8_cfg), ("model.safetensors", &fp8)])),
                (
                    "tiny-sharded".into(),
                    pack_folder(&[
                        ("config.json", &cfg),
                        ("model.safetensors.index.json", &index),
                        ("model-00001-of-00002.safetensors", &sharded[0]),
                        ("model-00002-of-00002.safetensors", &sharded[1]),
                    ]),
                ),
            ]
        }
        "checkpoint_header" => {
            (0u8..8).map(|k| (format!("program-{k}"), vec![k, k.wrapping_mul(37), 3, 1, 4, 1, 5, 9])).collect()
        }
        "config_json" => vec![("tiny".into(), cfg)],
        "token_file" => vec![
            ("i64-2x5".into(), tokens),
            ("i32-1x3".into(), token_seed(&[1, 3], &[0, 7, 255], "I32")),
            ("i64-out-of-range".into(), token_seed(&[1, 4], &[-1, i64::MAX, i64::MIN, 1 << 40], "I64")),
        ],
        "train_json" => vec![
            ("tiny".into(), TRAIN_SEED.as_bytes().to_vec()),
            ("full".into(), TRAIN_FULL_SEED.as_bytes().to_vec()),
            ("fp8-cosine".into(), TRAIN_FP8_SEED.as_bytes().to_vec()),
        ],
        _ => Vec::new(),
    }
}

/// The weights of `file` split into two shards and their `model.safetensors.index.json`.
fn shard(file: &[u8]) -> ([Vec<u8>; 2], Vec<u8>) {
    let (header, data) = mutate::split_safetensors(file).expect("a valid file");
    let mut parts: [Vec<(String, Value, Vec<u8>)>; 2] = [Vec::new(), Vec::new()];
    let mut weight_map = Map::new();
    for (k, (name, info)) in header.iter().filter(|(n, _)| *n != "__metadata__").enumerate() {
        let (a, b) = mutate::offsets(info).expect("valid offsets");
        let info = json!({"dtype": info["dtype"], "shape": info["shape"]});
        parts[k % 2].push((name.clone(), info, data[a..b].to_vec()));
        weight_map.insert(name.clone(), json!(FOLDER_FILES[3 + k % 2]));
    }
    let [a, b] = parts;
    let index = json!({"metadata": {"total_size": data.len()}, "weight_map": weight_map});
    (
        [mutate::build_safetensors(None, a), mutate::build_safetensors(None, b)],
        serde_json::to_vec_pretty(&index).unwrap(),
    )
}

/// `../shared/goldens/train-v3-tiny/train.json`.
pub const TRAIN_SEED: &str = r#"{
  "steps": 5, "lr": 0.001, "beta1": 0.9, "beta2": 0.95, "eps": 1e-08, "weight_decay": 0.1,
  "clip_norm": 1.0, "mtp_depth": 1, "mtp_lambda": 0.3,
  "balance": {"bias_gamma": 0.05, "aux": "sequence", "aux_alpha": 0.01}
}"#;

/// Every section: schedule, data (batch warm-up, tokenizer), evaluation, checkpoints.
pub const TRAIN_FULL_SEED: &str = r#"{
  "steps": 3000, "lr": 0.001, "beta1": 0.9, "beta2": 0.95, "eps": 1e-08, "weight_decay": 0.1,
  "clip_norm": 1.0, "mtp_depth": 1, "mtp_lambda": 0.3,
  "balance": {"bias_gamma": 0.001, "aux": "batch", "aux_alpha": 0.0001},
  "schedule": {"kind": "multi_step", "warmup_steps": 100, "milestones": [[1000, 0.316], [2000, 0.1]]},
  "data": {"seq_len": 256, "batch_size": 4, "batch_warmup": {"start": 1, "tokens": 200000},
           "fim_rate": 0.1, "val_fraction": 0.01, "seed": 0, "tokenizer": {"bpe": {"path": "tokenizer.json"}}},
  "eval_every": 250, "eval_batches": 8, "checkpoint_every": 500, "precision": "bf16"
}"#;

/// FP8 precision with its options, a cosine schedule.
pub const TRAIN_FP8_SEED: &str = r#"{
  "steps": 100, "lr": 0.002, "beta1": 0.9, "beta2": 0.95, "eps": 1e-08, "weight_decay": 0.0,
  "clip_norm": 0.0, "mtp_depth": 0, "mtp_lambda": 0.0,
  "balance": {"bias_gamma": 0.0, "aux": "none", "aux_alpha": 0.0},
  "schedule": {"kind": "cosine", "warmup_steps": 10, "decay_steps": 90, "min_ratio": 0.1},
  "precision": "fp8",
  "fp8": {"accumulator": "h100-promote-128", "scaling": "block", "gradient_blocks": true, "attention_output_e5m6": false}
}"#;
