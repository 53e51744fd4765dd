//! Mutations: byte-level (bit flips, inserts, deletes, splices, interesting integers),
//! JSON-aware (values replaced by interesting numbers and types, keys added and removed)
//! and safetensors-aware (the header's shapes, dtypes, offsets and names changed, the data
//! repacked to fit or not). The stable fuzzer draws them from a random generator; the
//! `checkpoint_header` target draws them from its input bytes ([`header_program`]).

use serde_json::{json, Map, Value};

/// Where a mutation's choices come from.
pub trait Source {
    fn u64(&mut self) -> u64;
    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.u64() % n as u64) as usize
        }
    }
    /// True once in `one_in` (never for a [`ByteSource`] that has run out).
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == one_in.saturating_sub(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// SplitMix64: the stable fuzzer's generator.
pub struct Rng(pub u64);

impl Source for Rng {
    fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Choices read from a fuzz input, one byte each (0 once it runs out).
pub struct ByteSource<'a>(pub &'a [u8]);

impl Source for ByteSource<'_> {
    fn u64(&mut self) -> u64 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                u64::from(*b)
            }
            None => 0,
        }
    }
    fn below(&mut self, n: usize) -> usize {
        if n <= 256 {
            return if n == 0 { 0 } else { self.u64() as usize % n };
        }
        let wide = (self.u64() << 24) | (self.u64() << 16) | (self.u64() << 8) | self.u64();
        (wide % n as u64) as usize
    }
}

/// Integers at the edges: of sizes, of the integer types, of float precision.
pub const INTERESTING_U64: &[u64] = &[
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    15,
    16,
    31,
    32,
    64,
    127,
    128,
    129,
    255,
    256,
    1000,
    1024,
    4096,
    65535,
    65536,
    1_000_000_000,
    (1 << 31) - 1,
    1 << 31,
    (1 << 32) - 1,
    1 << 32,
    (1 << 32) + 1,
    1 << 40,
    1 << 48,
    (1 << 53) + 1,
    1 << 62,
    (1 << 63) - 1,
    1 << 63,
    u64::MAX - 1,
    u64::MAX,
];

/// JSON values that no well-formed field holds, as JSON text.
pub const INTERESTING_JSON: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "-0.0",
    "0.5",
    "1.5",
    "-1e9",
    "1e9",
    "1e-320",
    "1e38",
    "3.5e38",
    "1e300",
    "-1e300",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "null",
    "true",
    "false",
    "\"\"",
    "\"NaN\"",
    "\"inf\"",
    "\"x\"",
    "[]",
    "[0]",
    "[1, 1]",
    "[0, 0]",
    "[128, 128]",
    "[18446744073709551615, 1]",
    "{}",
    "{\"kind\": \"constant\"}",
];

/// Text that JSON numbers become: NaN and infinities (not JSON), overflowing exponents.
pub const NUMBER_TEXT: &[&str] = &[
    "NaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "1e-999",
    "00",
    "-0",
    "1.",
    ".5",
    "0x10",
    "+1",
    "1e",
    "184467440737095516160000",
    "-18446744073709551616",
    "99999999999999999999999999999999999999999999999999",
];

/// Keys v3lab's files hold (config.json in both layouts, train.json, safetensors headers).
pub const KEYS: &[&str] = &[
    "hidden_size",
    "dim",
    "vocab_size",
    "intermediate_size",
    "inter_dim",
    "moe_intermediate_size",
    "moe_inter_dim",
    "num_hidden_layers",
    "n_layers",
    "num_nextn_predict_layers",
    "n_mtp_layers",
    "num_attention_heads",
    "n_heads",
    "num_key_value_heads",
    "n_shared_experts",
    "n_routed_experts",
    "n_activated_experts",
    "num_experts_per_tok",
    "routed_scaling_factor",
    "route_scale",
    "kv_lora_rank",
    "q_lora_rank",
    "qk_rope_head_dim",
    "qk_nope_head_dim",
    "v_head_dim",
    "n_group",
    "n_expert_groups",
    "topk_group",
    "n_limited_groups",
    "first_k_dense_replace",
    "n_dense_layers",
    "norm_topk_prob",
    "scoring_func",
    "score_func",
    "topk_method",
    "moe_layer_freq",
    "max_position_embeddings",
    "max_seq_len",
    "original_seq_len",
    "rope_factor",
    "mscale",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "factor",
    "original_max_position_embeddings",
    "beta_fast",
    "beta_slow",
    "mscale_all_dim",
    "attention_factor",
    "truncate",
    "rope_type",
    "type",
    "quantization_config",
    "weight_block_size",
    "quant_method",
    "fmt",
    "activation_scheme",
    "tie_word_embeddings",
    "torch_dtype",
    "steps",
    "lr",
    "beta1",
    "beta2",
    "eps",
    "weight_decay",
    "clip_norm",
    "mtp_depth",
    "mtp_lambda",
    "balance",
    "bias_gamma",
    "aux",
    "aux_alpha",
    "schedule",
    "kind",
    "warmup_steps",
    "decay_steps",
    "min_ratio",
    "milestones",
    "total_steps",
    "data",
    "seq_len",
    "batch_size",
    "batch_warmup",
    "start",
    "tokens",
    "fim_rate",
    "val_fraction",
    "seed",
    "tokenizer",
    "bpe",
    "path",
    "eval_every",
    "eval_batches",
    "checkpoint_every",
    "precision",
    "fp8",
    "accumulator",
    "scaling",
    "gradient_blocks",
    "attention_output_e5m6",
    "dtype",
    "shape",
    "data_offsets",
    "__metadata__",
    "weight_map",
];

/// String values the files hold.
pub const WORDS: &[&str] = &[
    "sigmoid",
    "softmax",
    "noaux_tc",
    "greedy",
    "group_limited_greedy",
    "yarn",
    "default",
    "fp8",
    "e4m3",
    "dynamic",
    "f32",
    "bf16",
    "sequence",
    "batch",
    "none",
    "constant",
    "cosine",
    "multi_step",
    "deepseek_v3",
    "byte",
    "exact-promote-128",
    "h100-promote-128",
    "h100",
    "tile",
    "tensor",
    "block",
    "F32",
    "F16",
    "BF16",
    "F64",
    "F8_E4M3",
    "I64",
    "I32",
    "U8",
    "model.safetensors",
    "../model.safetensors",
    "/etc/passwd",
];

/// Dtype names of safetensors headers (valid and not).
pub const DTYPES: &[&str] = &[
    "F32", "F16", "BF16", "F64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "I64", "I32", "I16", "I8", "U8",
    "U16", "U32", "U64", "BOOL", "C64", "X",
];

fn interesting_value(src: &mut impl Source) -> Value {
    match src.below(4) {
        0 => json!(*src.pick(INTERESTING_U64)),
        1 => json!(src.pick(WORDS).to_string()),
        _ => {
            let text: &&str = src.pick(INTERESTING_JSON);
            serde_json::from_str(text).unwrap()
        }
    }
}

// ---------------------------------------------------------------------------------------
// Bytes

/// One byte-level mutation of `data`; `other` is another input to splice from.
pub fn mutate_bytes(data: &mut Vec<u8>, other: &[u8], src: &mut impl Source) {
    let len = data.len();
    match src.below(12) {
        0 if len > 0 => {
            let i = src.below(len);
            data[i] ^= 1 << src.below(8);
        }
        1 if len > 0 => {
            let i = src.below(len);
            data[i] = *src.pick(&[0u8, 1, 0x7f, 0x80, 0xff, b'0', b'9', b'"', b'{', b'}', b'[', b']', b',', b'-']);
        }
        2 => {
            let i = src.below(len + 1);
            let n = 1 + src.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| src.u64() as u8).collect();
            data.splice(i..i, bytes);
        }
        3 if len > 0 => {
            let i = src.below(len);
            let n = 1 + src.below((len - i).min(64));
            data.drain(i..i + n);
        }
        4 if len > 0 => {
            // An interesting integer, little-endian, over 1, 2, 4 or 8 bytes.
            let width = *src.pick(&[1usize, 2, 4, 8]);
            let v = *src.pick(INTERESTING_U64);
            let v = if src.chance(3) { v.wrapping_neg() } else { v };
            let i = src.below(len);
            for (k, b) in v.to_le_bytes().iter().take(width).enumerate() {
                if let Some(slot) = data.get_mut(i + k) {
                    *slot = *b;
                }
            }
        }
        5 if !other.is_empty() => {
            // Splice: a prefix of this input, a suffix of the other.
            let cut = src.below(len + 1);
            let from = src.below(other.len());
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        6 if !other.is_empty() => {
            let from = src.below(other.len());
            let n = 1 + src.below((other.len() - from).min(256));
            let at = src.below(len + 1);
            data.splice(at..at, other[from..from + n].iter().copied());
        }
        7 if len > 0 => {
            // Duplicate a chunk within the input.
            let i = src.below(len);
            let n = 1 + src.below((len - i).min(128));
            let chunk = data[i..i + n].to_vec();
            let at = src.below(len + 1);
            data.splice(at..at, chunk);
        }
        8 if len > 0 => {
            let i = src.below(len);
            let delta = 1 + src.below(16) as u8;
            data[i] = if src.chance(2) { data[i].wrapping_add(delta) } else { data[i].wrapping_sub(delta) };
        }
        9 => {
            // Text tokens: numbers JSON cannot hold, keys, words.
            let text = match src.below(3) {
                0 => src.pick(NUMBER_TEXT).to_string(),
                1 => format!("\"{}\"", src.pick(KEYS)),
                _ => src.pick(INTERESTING_JSON).to_string(),
            };
            let i = src.below(len + 1);
            data.splice(i..i, text.into_bytes());
        }
        10 if len > 0 => {
            // Replace a run of digits (a JSON number) with number text.
            if let Some((a, b)) = find_number(data, src.below(len)) {
                let text = match src.below(2) {
                    0 => src.pick(NUMBER_TEXT).to_string(),
                    _ => src.pick(INTERESTING_U64).to_string(),
                };
                data.splice(a..b, text.into_bytes());
            }
        }
        _ if len > 0 => {
            let at = src.below(len + 1);
            data.truncate(at);
        }
        _ => data.push(src.u64() as u8),
    }
}

/// The number (digits, sign, point, exponent) at or after `from`.
fn find_number(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let is_num = |b: u8| b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'e' || b == b'E' || b == b'+';
    let a = (from..data.len()).find(|&i| data[i].is_ascii_digit())?;
    let a = (0..a).rev().take_while(|&i| is_num(data[i])).last().unwrap_or(a);
    let b = (a..data.len()).find(|&i| !is_num(data[i])).unwrap_or(data.len());
    Some((a, b))
}

// ---------------------------------------------------------------------------------------
// JSON

/// One JSON-aware mutation: a random node of `value` replaced, removed, retyped, or a key
/// added.
pub fn mutate_json(value: &mut Value, src: &mut impl Source) {
    let count = count_nodes(value);
    let target = src.below(count);
    let mut seen = 0;
    mutate_node(value, target, &mut seen, src);
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count_nodes).sum(),
        Value::Object(o) => o.values().map(count_nodes).sum(),
        _ => 0,
    }
}

fn mutate_node(v: &mut Value, target: usize, seen: &mut usize, src: &mut impl Source) -> bool {
    if *seen == target {
        apply_node_mutation(v, src);
        return true;
    }
    *seen += 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|c| mutate_node(c, target, seen, src)),
        Value::Object(o) => o.values_mut().any(|c| mutate_node(c, target, seen, src)),
        _ => false,
    }
}

fn apply_node_mutation(v: &mut Value, src: &mut impl Source) {
    match v {
        Value::Object(o) if src.chance(2) => match src.below(4) {
            0 if !o.is_empty() => {
                let key = o.keys().nth(src.below(o.len())).unwrap().clone();
                o.remove(&key);
            }
            1 => {
                o.insert(src.pick(KEYS).to_string(), interesting_value(src));
            }
            2 if !o.is_empty() => {
                // Rename a key (keeping its value).
                let key = o.keys().nth(src.below(o.len())).unwrap().clone();
                let value = o.remove(&key).unwrap();
                o.insert(src.pick(KEYS).to_string(), value);
            }
            _ if !o.is_empty() => {
                let key = o.keys().nth(src.below(o.len())).unwrap().clone();
                o[&key] = interesting_value(src);
            }
            _ => *v = interesting_value(src),
        },
        Value::Array(a) if src.chance(2) => match src.below(3) {
            0 if !a.is_empty() => {
                a.remove(src.below(a.len()));
            }
            1 if !a.is_empty() => {
                let c = a[src.below(a.len())].clone();
                a.insert(src.below(a.len() + 1), c);
            }
            _ => a.push(interesting_value(src)),
        },
        Value::Number(n) if src.chance(2) => {
            // Nearby numbers: off by one, doubled, negated, scaled by 1e9.
            let x = n.as_f64().unwrap_or(0.0);
            let u = n.as_u64();
            *v = match (src.below(5), u) {
                (0, Some(u)) => json!(u.wrapping_add(1)),
                (1, Some(u)) => json!(u.wrapping_sub(1)),
                (2, Some(u)) => json!(u.wrapping_mul(2)),
                (3, _) => json!(-x),
                _ => json!(x * 1e9),
            };
        }
        _ => *v = interesting_value(src),
    }
}

/// JSON text of `value`, compact or pretty.
pub fn json_text(value: &Value, src: &mut impl Source) -> Vec<u8> {
    if src.chance(2) {
        serde_json::to_vec(value).unwrap()
    } else {
        serde_json::to_vec_pretty(value).unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// Safetensors

/// The header (parsed) and the data section of a safetensors file.
pub fn split_safetensors(file: &[u8]) -> Option<(Map<String, Value>, &[u8])> {
    let n = u64::from_le_bytes(file.get(..8)?.try_into().ok()?);
    let n = usize::try_from(n).ok()?;
    let header = file.get(8..8usize.checked_add(n)?)?;
    let Value::Object(map) = serde_json::from_slice(header).ok()? else { return None };
    Some((map, &file[8 + n..]))
}

/// A tensor's `data_offsets`.
pub fn offsets(info: &Value) -> Option<(usize, usize)> {
    let o = info.get("data_offsets")?.as_array()?;
    let a = usize::try_from(o.first()?.as_u64()?).ok()?;
    let b = usize::try_from(o.get(1)?.as_u64()?).ok()?;
    Some((a, b))
}

/// A safetensors file of `tensors` (name, `{dtype, shape}`, bytes) in this order, their
/// offsets laid end to end.
pub fn build_safetensors(metadata: Option<Value>, tensors: Vec<(String, Value, Vec<u8>)>) -> Vec<u8> {
    let mut header = Map::new();
    if let Some(m) = metadata {
        header.insert("__metadata__".into(), m);
    }
    let mut data = Vec::new();
    for (name, mut info, bytes) in tensors {
        info["data_offsets"] = json!([data.len(), data.len() + bytes.len()]);
        data.extend_from_slice(&bytes);
        header.insert(name, info);
    }
    assemble(&serde_json::to_vec(&Value::Object(header)).unwrap(), &data)
}

/// `[header length: u64 LE][header, padded with spaces to 8 bytes][data]`.
fn assemble(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut header = header.to_vec();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out
}

/// Bytes per element of a dtype name (None for sub-byte and unknown ones).
fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" | "F8_E4M3FNUZ" | "F8_E5M2FNUZ" => 1,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "F32" | "I32" | "U32" => 4,
        "F64" | "I64" | "U64" | "C64" => 8,
        _ => return None,
    })
}

const MAX_REPACKED: usize = 16 << 20;

/// Lays every tensor's data end to end after a header change, each resized to what its
/// dtype and shape need (old bytes kept where they were, then cycled). Tensors whose size
/// cannot be known keep their offsets (shifted); nothing is repacked past 16 MiB.
fn repack(header: &mut Map<String, Value>, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, info) in header.iter_mut() {
        if name == "__metadata__" || !info.is_object() {
            continue;
        }
        let old = offsets(info).and_then(|(a, b)| data.get(a..b)).unwrap_or(&[]);
        let shape =
            info.get("shape").and_then(Value::as_array).map(|s| s.iter().map(Value::as_u64).collect::<Vec<_>>());
        let size = info.get("dtype").and_then(Value::as_str).and_then(dtype_size);
        let nbytes = match (shape, size) {
            (Some(dims), Some(size)) => dims
                .iter()
                .try_fold(size, |acc, d| d.and_then(|d| usize::try_from(d).ok()).and_then(|d| acc.checked_mul(d))),
            _ => None,
        };
        let Some(n) = nbytes.filter(|n| *n <= MAX_REPACKED.saturating_sub(out.len())) else { continue };
        let start = out.len();
        if old.is_empty() {
            out.resize(start + n, 0);
        } else {
            out.extend((0..n).map(|k| old[k % old.len()]));
        }
        info["data_offsets"] = json!([start, start + n]);
    }
    out
}

/// Float bit patterns that a loader must reject or carry: NaN, infinities, extremes.
const SPECIAL_F32: &[f32] = &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, f32::MIN_POSITIVE, -0.0, 1e-45];

/// One structural change of a safetensors header (and data), and of the folder's config
/// when there is one.
pub fn mutate_header(
    header: &mut Map<String, Value>,
    data: &mut Vec<u8>,
    config: Option<&mut Map<String, Value>>,
    src: &mut impl Source,
) {
    let names: Vec<String> = header.keys().filter(|k| *k != "__metadata__").cloned().collect();
    let name = if names.is_empty() { None } else { Some(names[src.below(names.len())].clone()) };
    let op = src.below(16);
    // Ops that write into a tensor's entry need it to be an object (op 7 may have made it
    // a number).
    let name = name.filter(|n| header[n].is_object() || [4, 5, 6, 7].contains(&op));
    match (op, name) {
        (0, Some(n)) => {
            // A dimension set to an interesting size.
            if let Some(shape) = header[&n].get_mut("shape").and_then(Value::as_array_mut) {
                if !shape.is_empty() {
                    let i = src.below(shape.len());
                    shape[i] = json!(*src.pick(INTERESTING_U64));
                }
            }
        }
        (1, Some(n)) => {
            if let Some(shape) = header[&n].get_mut("shape").and_then(Value::as_array_mut) {
                if src.chance(2) && !shape.is_empty() {
                    shape.remove(src.below(shape.len()));
                } else {
                    shape.insert(src.below(shape.len() + 1), json!(*src.pick(&[0u64, 1, 2, 3, 128])));
                }
            }
        }
        (2, Some(n)) => header[&n]["dtype"] = json!(*src.pick(DTYPES)),
        (3, Some(n)) => {
            if let Some(o) = header[&n].get_mut("data_offsets").and_then(Value::as_array_mut) {
                if !o.is_empty() {
                    let i = src.below(o.len());
                    let old = o[i].as_u64().unwrap_or(0);
                    o[i] = match src.below(3) {
                        0 => json!(*src.pick(INTERESTING_U64)),
                        1 => json!(old.wrapping_add(1 + src.below(8) as u64)),
                        _ => json!(old.wrapping_sub(1 + src.below(8) as u64)),
                    };
                }
            }
        }
        (4, Some(n)) => {
            header.remove(&n);
        }
        (5, Some(n)) => {
            // Renamed: public naming, a scale, another layer, an MTP layer, nonsense.
            let info = header.remove(&n).unwrap();
            let renamed = match src.below(6) {
                0 => n.trim_start_matches("model.").to_string(),
                1 => n.replace(".weight", ".weight_scale_inv"),
                2 => n.replace(".weight", ".scale"),
                3 => n.replacen(".0.", &format!(".{}.", src.pick(INTERESTING_U64)), 1),
                4 => n.replacen(".1.", ".2.", 1),
                _ => names[src.below(names.len())].clone(),
            };
            header.insert(renamed, info);
        }
        (6, Some(n)) => {
            // A copy under another name (a duplicate under either naming).
            let info = header[&n].clone();
            let copy = match src.below(3) {
                0 => n.trim_start_matches("model.").to_string(),
                1 => n.replace("layers.1.", "layers.3."),
                _ => format!("{n}.extra"),
            };
            header.insert(copy, info);
        }
        (7, Some(n)) => header[&n] = interesting_value(src),
        (8, _) => match src.below(3) {
            0 => {
                header.remove("__metadata__");
            }
            1 => {
                header.insert("__metadata__".into(), interesting_value(src));
            }
            _ => {
                header.insert("__metadata__".into(), json!({"format": "pt", src.pick(KEYS).to_string(): "x"}));
            }
        },
        (9, Some(n)) => {
            // Values set to NaN, infinities, extremes (F32 storage, in place).
            if let (Some((a, b)), Some("F32")) = (offsets(&header[&n]), header[&n]["dtype"].as_str()) {
                if a < b && b <= data.len() && b - a >= 4 {
                    let k = a + 4 * src.below((b - a) / 4);
                    data[k..k + 4].copy_from_slice(&src.pick(SPECIAL_F32).to_le_bytes());
                }
            }
        }
        (10, Some(n)) => {
            // An FP8 weight: E4M3 storage (repack resizes it) with a scale of any shape.
            header[&n]["dtype"] = json!("F8_E4M3");
            let shape: Vec<u64> =
                header[&n]["shape"].as_array().map_or(Vec::new(), |s| s.iter().filter_map(Value::as_u64).collect());
            let scale_shape: Vec<u64> = match src.below(3) {
                0 => shape.iter().map(|d| d.div_ceil(128)).collect(),
                1 => shape.iter().map(|d| d.div_ceil(*src.pick(&[1u64, 2, 3, 4]))).collect(),
                _ => vec![*src.pick(&[0u64, 1, 2]); src.below(3)],
            };
            let scale = json!({"dtype": *src.pick(&["F32", "BF16", "F8_E4M3", "I64"]), "shape": scale_shape, "data_offsets": [0, 0]});
            header.insert(n.replace(".weight", ".weight_scale_inv"), scale);
        }
        (11, _) if !data.is_empty() => {
            if src.chance(2) {
                data.truncate(src.below(data.len()));
            } else {
                data.extend(std::iter::repeat_n(0x7f, 1 + src.below(64)));
            }
        }
        (12, _) => {
            if let Some(cfg) = config {
                let key = src.pick(KEYS).to_string();
                cfg.insert(key, interesting_value(src));
            }
        }
        (13, _) => {
            if let Some(cfg) = config {
                if !cfg.is_empty() {
                    let key = cfg.keys().nth(src.below(cfg.len())).unwrap().clone();
                    cfg.remove(&key);
                }
            }
        }
        (14, _) => {
            if let Some(cfg) = config {
                let block = json!([
                    *src.pick(&[0u64, 1, 2, 3, 4, 128, 1 << 32, u64::MAX]),
                    *src.pick(&[0u64, 1, 2, 4, 128, u64::MAX])
                ]);
                cfg.insert(
                    "quantization_config".into(),
                    json!({"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": block}),
                );
            }
        }
        (15, _) => {
            if let Some(cfg) = config {
                let mut value = Value::Object(std::mem::take(cfg));
                mutate_json(&mut value, src);
                if let Value::Object(o) = value {
                    *cfg = o;
                }
            }
        }
        _ => {}
    }
}

/// A safetensors file with its header changed by `rounds` structural mutations (repacked
/// to fit or not), or byte-mutated when it has no readable header.
pub fn mutate_safetensors(file: &[u8], src: &mut impl Source) -> Vec<u8> {
    let Some((mut header, data)) = split_safetensors(file) else {
        let mut out = file.to_vec();
        mutate_bytes(&mut out, &[], src);
        return out;
    };
    let mut data = data.to_vec();
    let rounds = 1 + src.below(3);
    for _ in 0..rounds {
        mutate_header(&mut header, &mut data, None, src);
    }
    finish(header, data, src)
}

fn finish(mut header: Map<String, Value>, data: Vec<u8>, src: &mut impl Source) -> Vec<u8> {
    let data = if src.below(3) != 2 { repack(&mut header, &data) } else { data };
    let mut out = assemble(&serde_json::to_vec(&Value::Object(header)).unwrap(), &data);
    if src.chance(16) {
        // The header's length prefix itself.
        let v = *src.pick(INTERESTING_U64);
        out[..8].copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// The `checkpoint_header` target's input read as a program: which seed checkpoint (F32,
/// BF16, FP8), then up to 8 structural mutations of its header and config.json, then
/// whether to repack. Returns the folder's `config.json` and `model.safetensors`.
pub fn header_program(input: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut src = ByteSource(input);
    let dtype = [crate::SeedDtype::F32, crate::SeedDtype::Bf16, crate::SeedDtype::Fp8][src.below(3)];
    let file = crate::seed_checkpoint(dtype);
    let (mut header, data) = split_safetensors(&file).expect("the seed is valid");
    let mut data = data.to_vec();
    let Value::Object(mut config) = crate::seed_config() else { unreachable!() };
    let rounds = src.below(9);
    for _ in 0..rounds {
        mutate_header(&mut header, &mut data, Some(&mut config), &mut src);
    }
    let weights = finish(header, data, &mut src);
    (serde_json::to_vec_pretty(&Value::Object(config)).unwrap(), weights)
}
