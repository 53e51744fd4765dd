//! Byte-level mutations: bit flips, inserts, deletes, splices, interesting integers.

use super::dictionary::*;
use super::Source;

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
