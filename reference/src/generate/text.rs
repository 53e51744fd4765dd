//! Text around generation: a checkpoint folder's tokenizer (`tokenizer.json`, read by the
//! `tokenizers` crate as transformers' fast tokenizers are), its end-of-sequence ids
//! (`generation_config.json`, else `config.json`, as transformers' `generate`, else the
//! tokenizer's `eos_token`), and text
//! decoded as tokens arrive without splitting a UTF-8 character.

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// `dir/tokenizer.json`, when the folder has one.
pub fn load_tokenizer(dir: &Path) -> Result<Option<tokenizers::Tokenizer>> {
    let path = dir.join("tokenizer.json");
    if !path.exists() {
        return Ok(None);
    }
    tokenizers::Tokenizer::from_file(&path).map(Some).map_err(|e| Error::file(&path, e))
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    serde_json::from_str(&text).map(Some).map_err(|e| Error::file(path, format!("malformed JSON: {e}")))
}

/// The end-of-sequence ids of the checkpoint in `dir`: `eos_token_id` (one id or a list) of
/// `generation_config.json`, else of `config.json`, else the id of `tokenizer_config.json`'s
/// `eos_token` in `tokenizer.json`, else none.
pub fn eos_ids(dir: &Path) -> Result<Vec<i64>> {
    for name in ["generation_config.json", "config.json"] {
        let path = dir.join(name);
        let Some(json) = read_json(&path)? else { continue };
        let bad = |v: &Value| Error::file(&path, format!("`eos_token_id` {v}: expected an id or a list of ids"));
        match json.get("eos_token_id") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(ids)) => return ids.iter().map(|v| v.as_i64().ok_or_else(|| bad(v))).collect(),
            Some(v) => return Ok(vec![v.as_i64().ok_or_else(|| bad(v))?]),
        }
    }
    let path = dir.join("tokenizer_config.json");
    let Some(json) = read_json(&path)? else { return Ok(Vec::new()) };
    // A string, or an AddedToken object with its `content`.
    let eos = json.get("eos_token").and_then(|v| v.as_str().or_else(|| v.get("content").and_then(Value::as_str)));
    match (eos, load_tokenizer(dir)?) {
        (Some(token), Some(tok)) => match tok.token_to_id(token) {
            Some(id) => Ok(vec![id as i64]),
            None => Err(Error::file(&path, format!("`eos_token` {token:?} is not in tokenizer.json's vocabulary"))),
        },
        _ => Ok(Vec::new()),
    }
}

/// The text of `ids` (special tokens skipped), naming an id the tokenizer cannot hold.
pub fn decode(tokenizer: &tokenizers::Tokenizer, ids: &[i64]) -> Result<String> {
    let ids: Vec<u32> = ids
        .iter()
        .map(|&id| u32::try_from(id).map_err(|_| Error::Input(format!("token id {id} is not a tokenizer id"))))
        .collect::<Result<_>>()?;
    tokenizer.decode(&ids, true).map_err(|e| Error::Input(format!("decoding ids: {e}")))
}

/// The `tokenizers` crate's incremental decoder for a [`tokenizers::Tokenizer`].
type DecodeStream<'t> = tokenizers::DecodeStream<
    't,
    tokenizers::ModelWrapper,
    tokenizers::NormalizerWrapper,
    tokenizers::PreTokenizerWrapper,
    tokenizers::PostProcessorWrapper,
    tokenizers::DecoderWrapper,
>;

/// Turns a growing list of ids into text pieces: each call returns what the new id added,
/// holding back an incomplete UTF-8 character until its remaining bytes arrive (the
/// `tokenizers` crate's `DecodeStream`, which decodes a short window, not the whole text).
/// Special tokens are skipped, as `skip_special_tokens=True`.
pub struct TextStream<'t> {
    tokenizer: &'t tokenizers::Tokenizer,
    stream: DecodeStream<'t>,
    ids: Vec<u32>,
    /// Bytes of text returned so far.
    shown: usize,
}

impl<'t> TextStream<'t> {
    pub fn new(tokenizer: &'t tokenizers::Tokenizer) -> Self {
        TextStream { tokenizer, stream: tokenizer.decode_stream(true), ids: Vec::new(), shown: 0 }
    }

    /// The text all ids so far decode to.
    pub fn text(&self) -> Result<String> {
        self.tokenizer.decode(&self.ids, true).map_err(|e| Error::Input(format!("decoding ids: {e}")))
    }

    /// Adds `id`; returns the text that is now complete and was not returned before.
    pub fn push(&mut self, id: i64) -> Result<String> {
        let id = u32::try_from(id).map_err(|_| Error::Input(format!("token id {id} is not a tokenizer id")))?;
        self.ids.push(id);
        let piece = self.stream.step(id).map_err(|e| Error::Input(format!("decoding id {id}: {e}")))?;
        let piece = piece.unwrap_or_default();
        self.shown += piece.len();
        Ok(piece)
    }

    /// Whatever is left (an incomplete character at the end, as the decoder shows it).
    pub fn finish(&mut self) -> Result<String> {
        let text = self.text()?;
        let rest = text.get(self.shown..).unwrap_or_default().to_string();
        self.shown = text.len();
        Ok(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tokenizer::{ByteTokenizer, Tokenizer};

    #[test]
    fn streams_whole_characters_and_reads_eos() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), ByteTokenizer.to_json().unwrap()).unwrap();
        let tok = load_tokenizer(dir.path()).unwrap().unwrap();
        let text = "añb日🦀";
        let mut stream = TextStream::new(&tok);
        let mut pieces = Vec::new();
        for b in text.bytes() {
            pieces.push(stream.push(b as i64).unwrap());
        }
        pieces.push(stream.finish().unwrap());
        assert_eq!(pieces.concat(), text);
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
        // The end-of-document token is special: skipped in the text.
        assert_eq!(stream.push(256).unwrap(), "");
        assert_eq!(eos_ids(dir.path()).unwrap(), Vec::<i64>::new());
        let eod = crate::data::tokenizer::Special::EndOfDocument.text();
        std::fs::write(dir.path().join("tokenizer_config.json"), format!(r#"{{"eos_token": "{eod}"}}"#)).unwrap();
        assert_eq!(eos_ids(dir.path()).unwrap(), [256]);
        std::fs::write(dir.path().join("config.json"), r#"{"eos_token_id": 7}"#).unwrap();
        assert_eq!(eos_ids(dir.path()).unwrap(), [7]);
        std::fs::write(dir.path().join("generation_config.json"), r#"{"eos_token_id": [1, 2]}"#).unwrap();
        assert_eq!(eos_ids(dir.path()).unwrap(), [1, 2]);
        std::fs::write(dir.path().join("generation_config.json"), r#"{"eos_token_id": "x"}"#).unwrap();
        let e = eos_ids(dir.path()).unwrap_err().to_string();
        assert!(e.contains("generation_config.json") && e.contains("eos_token_id"), "{e}");
    }
}
