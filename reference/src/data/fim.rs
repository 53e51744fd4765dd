//! Fill-in-the-Middle (DeepSeek-V3 §4.1, after DeepSeekCoder-V2): a document is cut at two
//! random points into prefix, middle and suffix and trained in the Prefix-Suffix-Middle
//! layout
//!
//! `<|fim_begin|> f_pre <|fim_hole|> f_suf <|fim_end|> f_middle <|eos_token|>`,
//!
//! at the document level, for a share `rate` of the documents (the paper: 0.1). The cut
//! points are uniform over the document's character boundaries, so the pieces stay valid
//! text for any tokenizer.

use super::tokenizer::{Special, Tokenizer};
use crate::error::Result;
use rand::Rng;

/// The ids of one document closed by the end-of-document token, in PSM layout with
/// probability `rate` (drawn from `rng`), otherwise as it is.
pub fn encode_document(tok: &dyn Tokenizer, text: &str, rate: f64, rng: &mut impl Rng) -> Result<Vec<u32>> {
    let eos = tok.special(Special::EndOfDocument);
    if rate <= 0.0 || !rng.random_bool(rate.min(1.0)) {
        let mut ids = tok.encode(text)?;
        ids.push(eos);
        return Ok(ids);
    }
    let (prefix, middle, suffix) = split_psm(text, rng);
    let mut ids = vec![tok.special(Special::FimBegin)];
    ids.extend(tok.encode(prefix)?);
    ids.push(tok.special(Special::FimHole));
    ids.extend(tok.encode(suffix)?);
    ids.push(tok.special(Special::FimEnd));
    ids.extend(tok.encode(middle)?);
    ids.push(eos);
    Ok(ids)
}

/// `(prefix, middle, suffix)` cut at two uniform character boundaries (0 and the end
/// included, so any piece may be empty).
pub fn split_psm<'t>(text: &'t str, rng: &mut impl Rng) -> (&'t str, &'t str, &'t str) {
    let mut bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    bounds.push(text.len());
    let mut a = bounds[rng.random_range(0..bounds.len())];
    let mut b = bounds[rng.random_range(0..bounds.len())];
    if a > b {
        std::mem::swap(&mut a, &mut b);
    }
    (&text[..a], &text[a..b], &text[b..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ByteTokenizer;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn psm_layout_reassembles_the_document() {
        let t = ByteTokenizer;
        let text = "fn main() { println!(\"héllo\"); }";
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..50 {
            let ids = encode_document(&t, text, 1.0, &mut rng).unwrap();
            let pos = |s: Special| ids.iter().position(|&i| i == t.special(s)).unwrap();
            let (begin, hole, end, eos) =
                (pos(Special::FimBegin), pos(Special::FimHole), pos(Special::FimEnd), pos(Special::EndOfDocument));
            assert!(begin == 0 && begin < hole && hole < end && end < eos && eos == ids.len() - 1);
            let piece = |r: std::ops::Range<usize>| t.decode(&ids[r]);
            let (prefix, suffix, middle) = (piece(1..hole), piece(hole + 1..end), piece(end + 1..eos));
            assert_eq!(format!("{prefix}{middle}{suffix}"), text);
        }
    }

    #[test]
    fn rate_is_respected() {
        let t = ByteTokenizer;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = 20_000;
        let fim = (0..n)
            .filter(|_| encode_document(&t, "abcdef", 0.1, &mut rng).unwrap()[0] == t.special(Special::FimBegin))
            .count();
        // Binomial(20000, 0.1): sd ≈ 42; 5 sd either way.
        assert!((1790..=2210).contains(&fim), "{fim} of {n} documents in FIM layout");
        let plain = encode_document(&t, "abc", 0.0, &mut rng).unwrap();
        assert_eq!(plain, [97, 98, 99, t.special(Special::EndOfDocument)]);
    }
}
