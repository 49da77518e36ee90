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

impl HfTokenizer {
    pub fn from_file(path: &Path) -> Result<HfTokenizer, TokenizerError> {
        let bytes = std::fs::read(path).map_err(|e| TokenizerError::Io { path: path.to_path_buf(), source: e })?;
        HfTokenizer::from_slice(&bytes).map_err(|e| match e {
            TokenizerError::Hf(msg) => TokenizerError::InFile { path: path.to_path_buf(), msg },
            other => other.in_file(path),
        })
    }

    /// A Mistral `tokenizer.json`: BOS and EOS are its `<s>` and `</s>`.
    pub fn from_slice(json: &[u8]) -> Result<HfTokenizer, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_bytes(json).map_err(|e| TokenizerError::Hf(e.to_string()))?;
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
        let vocab_size = inner.get_vocab_size(true);
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
