//! safetensors-aware mutations: the header's shapes, dtypes, offsets and names changed,
//! the data repacked to fit or not; and the `checkpoint_header` target's program.

use super::dictionary::*;
use super::Source;
use serde_json::{json, Map, Value};

use super::json::{interesting_value, mutate_json};
use super::{mutate_bytes, ByteSource};

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
