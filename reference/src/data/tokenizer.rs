//! Tokenizers. DeepSeek-V3 uses byte-level BPE with a 128K vocabulary (§4.1); v3lab's
//! default is the plain byte-level tokenizer (ids 0..255 are the bytes) plus the special
//! tokens the data pipeline needs, so a model of vocabulary 260 can read any text. Any
//! Hugging Face `tokenizer.json` (e.g. a byte-level BPE) is read through the `tokenizers`
//! crate, and every tokenizer can be written as one ([`Tokenizer::to_json`]), so that a
//! trained model's folder opens in transformers with `AutoTokenizer` unchanged.

use crate::error::{Error, Result};

/// Special tokens, named as in DeepSeek's tokenizer (`<｜end▁of▁sentence｜>`, `<｜fim▁begin｜>`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    /// Closes every document in a packed sequence.
    EndOfDocument,
    /// Opens a Fill-in-the-Middle document (PSM: before the prefix).
    FimBegin,
    /// Marks where the middle was cut out (PSM: between prefix and suffix).
    FimHole,
    /// Ends the suffix; the middle follows (PSM).
    FimEnd,
}

impl Special {
    pub const ALL: [Special; 4] = [Special::EndOfDocument, Special::FimBegin, Special::FimHole, Special::FimEnd];

    /// The token's text in DeepSeek's vocabulary.
    pub fn text(self) -> &'static str {
        match self {
            Special::EndOfDocument => "<｜end▁of▁sentence｜>",
            Special::FimBegin => "<｜fim▁begin｜>",
            Special::FimHole => "<｜fim▁hole｜>",
            Special::FimEnd => "<｜fim▁end｜>",
        }
    }
}

/// Text to ids and back.
pub trait Tokenizer: Send + Sync {
    /// Ids of `text`; special-token text inside `text` is ordinary text, never a special id.
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    /// Text of `ids` (special tokens spelled out; invalid UTF-8 replaced).
    fn decode(&self, ids: &[u32]) -> String;
    fn vocab_size(&self) -> usize;
    fn special(&self, s: Special) -> u32;
    /// The tokenizer as a `tokenizer.json` giving the same ids (what `v3lab train` writes
    /// beside a model). There, as in every Hugging Face tokenizer, special-token text inside
    /// a text is read as the special token.
    fn to_json(&self) -> Result<String>;
}

/// Bytes are ids 0..255; the special tokens follow in the order of [`Special::ALL`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ByteTokenizer;

impl Tokenizer for ByteTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(text.bytes().map(u32::from).collect())
    }

    fn decode(&self, ids: &[u32]) -> String {
        let mut out = String::new();
        let mut bytes = Vec::new();
        for &id in ids {
            if id < 256 {
                bytes.push(id as u8);
                continue;
            }
            out.push_str(&String::from_utf8_lossy(&std::mem::take(&mut bytes)));
            out.push_str(Special::ALL.get(id as usize - 256).map_or("<｜unk｜>", |s| s.text()));
        }
        out.push_str(&String::from_utf8_lossy(&bytes));
        out
    }

    fn vocab_size(&self) -> usize {
        256 + Special::ALL.len()
    }

    fn special(&self, s: Special) -> u32 {
        256 + Special::ALL.iter().position(|&x| x == s).expect("listed") as u32
    }

    /// A byte-level BPE without merges: GPT-2's byte-to-character map (what the `ByteLevel`
    /// pre-tokenizer and decoder apply), the character of byte `b` at id `b`, the special
    /// tokens after them.
    fn to_json(&self) -> Result<String> {
        use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        let vocab: tokenizers::models::bpe::Vocab =
            byte_chars().iter().enumerate().map(|(b, c)| (c.to_string(), b as u32)).collect();
        let bpe = tokenizers::models::bpe::BPE::builder()
            .vocab_and_merges(vocab, Vec::new())
            .build()
            .map_err(|e| Error::Input(format!("byte-level tokenizer.json: {e}")))?;
        let mut hf = tokenizers::Tokenizer::new(bpe);
        // No regex split: with no merges every byte is its own token whatever the words.
        hf.with_pre_tokenizer(Some(ByteLevel::new(false, false, false)));
        hf.with_decoder(Some(ByteLevelDecoder::default()));
        let specials: Vec<_> = Special::ALL.iter().map(|s| tokenizers::AddedToken::from(s.text(), true)).collect();
        hf.add_special_tokens(&specials);
        hf.to_string(true).map_err(|e| Error::Input(format!("byte-level tokenizer.json: {e}")))
    }
}

/// GPT-2's map from bytes to printable characters (`bytes_to_unicode`): printable Latin-1
/// bytes stand for themselves, the other 68 take the characters from U+0100 on, in order.
fn byte_chars() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut out = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        out[b as usize] = if printable(b) {
            b as char
        } else {
            next += 1;
            char::from_u32(next - 1).expect("U+0100..U+0143 are characters")
        };
    }
    out
}

/// A `tokenizer.json` (Hugging Face `tokenizers`), e.g. a byte-level BPE. Its vocabulary must
/// hold the four special tokens under their DeepSeek spellings.
pub struct BpeTokenizer {
    inner: tokenizers::Tokenizer,
    specials: [u32; 4],
}

impl BpeTokenizer {
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| Error::file(path, e))?;
        let mut specials = [0; 4];
        for (slot, s) in specials.iter_mut().zip(Special::ALL) {
            *slot = inner
                .token_to_id(s.text())
                .ok_or_else(|| Error::file(path, format!("vocabulary lacks the special token `{}`", s.text())))?;
        }
        Ok(BpeTokenizer { inner, specials })
    }
}

impl Tokenizer for BpeTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Input(format!("BPE encoding failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }
    fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, false).unwrap_or_default()
    }
    fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
    fn special(&self, s: Special) -> u32 {
        self.specials[Special::ALL.iter().position(|&x| x == s).expect("listed")]
    }
    fn to_json(&self) -> Result<String> {
        self.inner.to_string(true).map_err(|e| Error::Input(format!("tokenizer.json: {e}")))
    }
}

/// The tokenizer a [`TokenizerSpec`](crate::data::config::TokenizerSpec) names.
pub fn from_spec(spec: &crate::data::config::TokenizerSpec) -> Result<Box<dyn Tokenizer>> {
    match spec {
        crate::data::config::TokenizerSpec::Byte => Ok(Box::new(ByteTokenizer)),
        crate::data::config::TokenizerSpec::Bpe { path } => Ok(Box::new(BpeTokenizer::from_file(path)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_specials_are_distinct() {
        let t = ByteTokenizer;
        let text = "héllo, wörld ✓";
        let ids = t.encode(text).unwrap();
        assert_eq!(ids.len(), text.len());
        assert_eq!(t.decode(&ids), text);
        let specials: Vec<u32> = Special::ALL.iter().map(|&s| t.special(s)).collect();
        assert_eq!(specials, [256, 257, 258, 259]);
        assert_eq!(t.vocab_size(), 260);
        let with_eos = [ids.clone(), vec![t.special(Special::EndOfDocument)]].concat();
        assert_eq!(t.decode(&with_eos), format!("{text}<｜end▁of▁sentence｜>"));
        // Special-token text inside a document stays bytes.
        assert!(t.encode(Special::FimHole.text()).unwrap().iter().all(|&i| i < 256));
    }

    #[test]
    fn the_byte_tokenizer_json_gives_the_same_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, ByteTokenizer.to_json().unwrap()).unwrap();
        let hf = BpeTokenizer::from_file(&path).unwrap();
        let every_byte: String = (0..=255u8).map(|b| b as char).collect();
        for text in ["héllo, wörld ✓", "  two  spaces\n\ttab\r\n", "fn main() { let x = 1; }", "日本語 🦀", &every_byte]
        {
            let ids = ByteTokenizer.encode(text).unwrap();
            assert_eq!(hf.encode(text).unwrap(), ids, "{text:?}");
            assert_eq!(hf.decode(&ids), text, "{text:?}");
        }
        assert_eq!(hf.vocab_size(), 260);
        for s in Special::ALL {
            assert_eq!(hf.special(s), ByteTokenizer.special(s), "{}", s.text());
        }
    }
}

#[cfg(test)]
mod bpe_tests {
    use super::*;
    use tokenizers::models::bpe::BPE;
    use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

    #[test]
    fn bpe_file_round_trips_and_finds_the_specials() {
        // A tiny BPE: the letters of "abc" and one merge "a b" -> "ab".
        let vocab: tokenizers::models::bpe::Vocab =
            [("a", 0u32), ("b", 1), ("c", 2), ("ab", 3)].map(|(t, i)| (t.to_string(), i)).into_iter().collect();
        let bpe = BPE::builder().vocab_and_merges(vocab, vec![("a".into(), "b".into())]).build().unwrap();
        let mut hf = HfTokenizer::new(bpe);
        let specials: Vec<AddedToken> = Special::ALL.iter().map(|s| AddedToken::from(s.text(), true)).collect();
        hf.add_special_tokens(&specials);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        hf.save(&path, false).unwrap();

        let t = BpeTokenizer::from_file(&path).unwrap();
        assert_eq!(t.encode("abcab").unwrap(), [3, 2, 3]);
        assert_eq!(t.vocab_size(), 8);
        let specials: Vec<u32> = Special::ALL.iter().map(|&s| t.special(s)).collect();
        assert_eq!(specials, [4, 5, 6, 7]);
        let missing = dir.path().join("plain.json");
        HfTokenizer::new(BPE::default()).save(&missing, false).unwrap();
        let e = BpeTokenizer::from_file(&missing).err().unwrap().to_string();
        assert!(e.contains("plain.json") && e.contains("end▁of▁sentence"), "{e}");
    }
}
