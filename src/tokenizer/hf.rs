//! The HF layout: `tokenizer.json` through the `tokenizers` crate.
//!
//! Two settings make it behave like mistral_common's Tekken:
//! - `encode_special_tokens = true`: special-token text in the input ("[INST]", "<s>") is
//!   tokenized as ordinary text instead of becoming a control id (the HF default turns it into
//!   one, which lets user text inject turns: transformers #42589).
//! - no post-processor specials: `encode(text, add_special_tokens = false)`; the chat template
//!   adds BOS and the control tokens itself.
//!
//! Decoding goes through the token bytes (the byte-level alphabet mapped back to bytes), so
//! runs of ordinary ids decode with the same UTF-8 replacement rule as [`super::Tekken`].

use std::collections::HashMap;
use std::path::Path;

use super::{SpecialTokenPolicy, TokenizerError};

pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    /// Ids of added tokens marked special, with their text.
    specials: HashMap<u32, String>,
    special_ids: HashMap<String, u32>,
    bos_id: u32,
    eos_id: u32,
    vocab_size: usize,
    /// GPT-2 byte-level alphabet, char -> byte.
    char_bytes: HashMap<char, u8>,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("specials", &self.specials.len())
            .finish()
    }
}

/// GPT-2's `bytes_to_unicode`: printable bytes map to themselves, the others to U+0100 onwards.
fn byte_level_alphabet() -> HashMap<char, u8> {
    let mut printable: Vec<u8> = (b'!'..=b'~').chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut chars: Vec<u32> = printable.iter().map(|&b| b as u32).collect();
    let mut n = 0;
    for b in 0..=255u8 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    printable.into_iter().zip(chars).map(|(b, c)| (char::from_u32(c).expect("valid char"), b)).collect()
}

/// The library reports a missing or unknown `model` as "Model missing." or "data did not match
/// any variant of untagged enum ModelUntagged", a bad added token by line and column: say which
/// field instead.
fn check_model_section(file: &serde_json::Value) -> Result<(), TokenizerError> {
    const MODELS: [&str; 4] = ["BPE", "WordPiece", "WordLevel", "Unigram"];
    let bad = |msg: String| Err(TokenizerError::Format(msg));
    let Some(root) = file.as_object() else {
        return bad("expected a JSON object (a tokenizer.json)".into());
    };
    match root.get("model") {
        None | Some(serde_json::Value::Null) => bad("`model` is missing (not a tokenizer.json?)".into()),
        Some(serde_json::Value::Object(model)) => match model.get("type") {
            Some(t) if !t.as_str().is_some_and(|t| MODELS.contains(&t)) => {
                bad(format!("`model.type` is {t}; expected one of {MODELS:?}"))
            }
            _ => Ok(()),
        },
        Some(other) => bad(format!("`model` is {other}, expected an object")),
    }?;
    let Some(added) = root.get("added_tokens").filter(|v| !v.is_null()) else { return Ok(()) };
    let Some(added) = added.as_array() else { return bad(format!("`added_tokens` is {added}, expected a list")) };
    for (i, token) in added.iter().enumerate() {
        let id = token.get("id").and_then(serde_json::Value::as_u64).filter(|&id| id <= u32::MAX as u64);
        if id.is_none() || !token.get("content").is_some_and(serde_json::Value::is_string) {
            return bad(format!("`added_tokens[{i}]` is {token}; expected an object with a u32 `id` and a string `content`"));
        }
    }
    Ok(())
}

/// Which top-level section the library refused, with its message: its whole-file error gives
/// only a line and column ("data did not match any variant of untagged enum ..."). Runs only
/// after a failure.
fn failing_section(file: &serde_json::Value) -> Option<String> {
    fn check<T: serde::de::DeserializeOwned>(file: &serde_json::Value, key: &str) -> Option<String> {
        let section = file.get(key).filter(|v| !v.is_null())?;
        serde_json::from_value::<T>(section.clone()).err().map(|e| format!("`{key}`: {e}"))
    }
    check::<tokenizers::NormalizerWrapper>(file, "normalizer")
        .or_else(|| check::<tokenizers::PreTokenizerWrapper>(file, "pre_tokenizer"))
        .or_else(|| check::<tokenizers::ModelWrapper>(file, "model"))
        .or_else(|| check::<tokenizers::PostProcessorWrapper>(file, "post_processor"))
        .or_else(|| check::<tokenizers::DecoderWrapper>(file, "decoder"))
}

/// Runs `f`, turning a panic inside the `tokenizers` crate into an error: it has several on
/// inconsistent files (e.g. a `continuing_subword_prefix` longer than a merge's second token).
fn without_panics<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> Result<T, TokenizerError> {
    std::panic::catch_unwind(f).map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        TokenizerError::Hf(format!("the tokenizers library failed on this file: {why}"))
    })
}

impl HfTokenizer {
    pub fn from_file(path: &Path) -> Result<HfTokenizer, TokenizerError> {
        let bytes = std::fs::read(path).map_err(|e| TokenizerError::Io { path: path.to_path_buf(), source: e })?;
        HfTokenizer::from_bytes(path, &bytes)
    }

    /// [`HfTokenizer::from_slice`] with errors naming `path`, the file the bytes came from.
    pub fn from_bytes(path: &Path, json: &[u8]) -> Result<HfTokenizer, TokenizerError> {
        HfTokenizer::from_slice(json).map_err(|e| match e {
            TokenizerError::Hf(msg) => TokenizerError::InFile { path: path.to_path_buf(), msg },
            other => other.in_file(path),
        })
    }

    /// A Mistral `tokenizer.json`: BOS and EOS are its `<s>` and `</s>`.
    pub fn from_slice(json: &[u8]) -> Result<HfTokenizer, TokenizerError> {
        // The `tokenizers` crate panics (`expect("Helper")` in its decoder deserializer) on a
        // syntax error or invalid UTF-8 inside some sections instead of returning its error:
        // check the whole file is JSON first (strings decoded: lone surrogates and bad UTF-8
        // too; ~0.1 s for Nemo's 9 MB file), then keep any panic it still raises contained.
        let value = serde_json::from_slice::<serde_json::Value>(json)
            .map_err(|e| TokenizerError::Format(format!("not valid JSON: {e}")))?;
        check_model_section(&value)?;
        let inner = without_panics(|| tokenizers::Tokenizer::from_bytes(json))?.map_err(|e| {
            // Deserializing a section on its own reaches the same panicking code.
            match without_panics(|| failing_section(&value)) {
                Ok(section) => TokenizerError::Hf(section.unwrap_or_else(|| e.to_string())),
                Err(panicked) => panicked,
            }
        })?;
        let find = |name: &str| -> Result<u32, TokenizerError> {
            inner
                .get_added_tokens_decoder()
                .into_iter()
                .find(|(_, t)| t.special && t.content == name)
                .map(|(id, _)| id)
                .ok_or_else(|| TokenizerError::Format(format!("no special token {name:?}")))
        };
        let (bos_id, eos_id) = (find("<s>")?, find("</s>")?);
        Ok(HfTokenizer::from_tokenizer(inner, bos_id, eos_id))
    }

    /// Any byte-level `tokenizers::Tokenizer` (e.g. one built from GGUF metadata) with the BOS
    /// and EOS ids its model names. Special-token text in input becomes ordinary text here too.
    pub fn from_tokenizer(mut inner: tokenizers::Tokenizer, bos_id: u32, eos_id: u32) -> HfTokenizer {
        inner.set_encode_special_tokens(true);
        let mut specials = HashMap::new();
        let mut special_ids = HashMap::new();
        for (id, tok) in inner.get_added_tokens_decoder() {
            if tok.special {
                special_ids.insert(tok.content.clone(), id);
                specials.insert(id, tok.content);
            }
        }
        // The id space, not the entry count: a file whose ids leave holes (or that numbers an
        // added token past the end) would otherwise produce ids at or above `vocab_size`, which
        // every caller takes as the bound of valid ids (the embedding rows, the CLI's checks).
        let max_id = inner.get_vocab(true).into_values().max();
        let vocab_size = max_id.map_or(0, |m| m as usize + 1).max(inner.get_vocab_size(true));
        HfTokenizer { inner, specials, special_ids, bos_id, eos_id, vocab_size, char_bytes: byte_level_alphabet() }
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self.inner.encode_fast(text, false).map_err(|e| TokenizerError::Hf(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.specials.contains_key(&id)
    }
    pub fn special_id(&self, token: &str) -> Option<u32> {
        self.special_ids.get(token).copied()
    }
    pub fn special_text(&self, id: u32) -> Option<String> {
        self.specials.get(&id).cloned()
    }
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }
    /// One past the highest id the tokenizer can produce (its entry count for a dense file).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Bytes of an ordinary token: its byte-level string mapped back; a token outside that
    /// alphabet (a non-byte-level tokenizer) falls back to the library's own decoding.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        if self.is_special(id) {
            return None;
        }
        let tok = self.inner.id_to_token(id)?;
        let mapped: Option<Vec<u8>> = tok.chars().map(|c| self.char_bytes.get(&c).copied()).collect();
        match mapped {
            Some(b) => Some(b),
            None => self.inner.decode(&[id], false).ok().map(String::into_bytes),
        }
    }

    pub fn decode(&self, ids: &[u32], policy: SpecialTokenPolicy) -> Result<String, TokenizerError> {
        let mut out = String::new();
        let mut run = Vec::new();
        for &id in ids {
            if let Some(text) = self.specials.get(&id) {
                out.push_str(&String::from_utf8_lossy(&run));
                run.clear();
                match policy {
                    SpecialTokenPolicy::Ignore => {}
                    SpecialTokenPolicy::Keep => out.push_str(text),
                    SpecialTokenPolicy::Raise => return Err(TokenizerError::SpecialInDecode(id)),
                }
            } else {
                let b = self.token_bytes(id).ok_or(TokenizerError::UnknownId { id, vocab_size: self.vocab_size })?;
                run.extend_from_slice(&b);
            }
        }
        out.push_str(&String::from_utf8_lossy(&run));
        Ok(out)
    }
}
