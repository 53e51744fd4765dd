//! JSON-aware mutations: a random node replaced by an interesting number or type, keys
//! added and removed.

use super::dictionary::*;
use super::Source;
use serde_json::{json, Value};

pub(super) fn interesting_value(src: &mut impl Source) -> Value {
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
