//! Tokenizers and the chat template of Mistral Nemo, matched token for token with mistral_common.
//!
//! - [`tekken`]: `tekken.json` (the Mistral layout), tiktoken-style byte-level BPE.
//! - [`hf`]: `tokenizer.json` (the HF layout) through the `tokenizers` crate.
//! - [`template_v3`]: mistral_common's `InstructTokenizerV3` (Nemo's), rendering a
//!   [`ChatRequest`] to ids; [`request`] holds the OpenAI-shaped request types.
//! - [`json_py`]: JSON written and read exactly as Python's `json` module does.
//! - [`tool_calls`]: `[TOOL_CALLS][...]` in generated ids to structured calls, whole or streamed.
//! - [`stream`]: a streaming detokenizer that never emits half a UTF-8 character.
//!
//! See docs/tokenizer.md for the decisions and what mistral_common does in edge cases.

pub mod bpe;
pub mod error;
pub mod hf;
pub mod json_py;
pub mod json_schema;
pub mod request;
pub mod stream;
pub mod tekken;
pub mod template_v3;
pub mod tool_calls;
pub mod validate;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

pub use error::{ChatError, TokenizerError};
pub use hf::HfTokenizer;
pub use request::{ChatMessage, ChatRequest, Content, Role, Tool, ToolCall};
pub use stream::StreamDecoder;
pub use tekken::Tekken;
pub use template_v3::encode_chat;
pub use tool_calls::{parse_tool_calls, AssistantOutput, ParsedToolCall, ToolCallStreamParser, ToolStreamEvent};

/// What decoding does with special ids (mistral_common's `SpecialTokenPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpecialTokenPolicy {
    /// Drop them (mistral_common's default).
    #[default]
    Ignore,
    /// Write their text (`<s>`, `[INST]`, ...).
    Keep,
    /// Refuse to decode.
    Raise,
}

/// Either tokenizer layout behind one interface.
#[derive(Debug)]
pub enum Tokenizer {
    // Boxed: both are large (compiled regexes, vocabularies) and rarely moved.
    Tekken(Box<Tekken>),
    Hf(Box<HfTokenizer>),
}

impl Tokenizer {
    /// Loads a `tekken.json`, a `tokenizer.json`, or the one found in a model directory
    /// (`tekken.json` first: it is Mistral's own and what mistral_common reads).
    pub fn from_path(path: &Path) -> Result<Tokenizer, TokenizerError> {
        let file = if path.is_dir() { find_in_dir(path)? } else { path.to_path_buf() };
        if !file.is_file() {
            return Err(TokenizerError::NotFound(path.to_path_buf()));
        }
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.contains("tekken") && name.ends_with(".json") {
            return Ok(Tokenizer::Tekken(Box::new(Tekken::from_file(&file)?)));
        }
        if name.ends_with(".json") {
            return Ok(Tokenizer::Hf(Box::new(HfTokenizer::from_file(&file)?)));
        }
        Err(TokenizerError::NotFound(path.to_path_buf()))
    }

    /// Text to ids without BOS/EOS. Special-token text in `text` is ordinary text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        match self {
            Tokenizer::Tekken(t) => t.encode(text),
            Tokenizer::Hf(t) => t.encode(text),
        }
    }

    /// `encode` with optional BOS / EOS around it (mistral_common `encode(s, bos, eos)`).
    pub fn encode_with(&self, text: &str, bos: bool, eos: bool) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::new();
        if bos {
            ids.push(self.bos_id());
        }
        ids.extend(self.encode(text)?);
        if eos {
            ids.push(self.eos_id());
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32], policy: SpecialTokenPolicy) -> Result<String, TokenizerError> {
        match self {
            Tokenizer::Tekken(t) => t.decode(ids, policy),
            Tokenizer::Hf(t) => t.decode(ids, policy),
        }
    }

    /// The bytes of an ordinary token (`None` for special ids and ids out of range).
    pub fn token_bytes(&self, id: u32) -> Option<Cow<'_, [u8]>> {
        match self {
            Tokenizer::Tekken(t) => t.token_bytes(id).map(Cow::Borrowed),
            Tokenizer::Hf(t) => t.token_bytes(id).map(Cow::Owned),
        }
    }

    pub fn is_special(&self, id: u32) -> bool {
        match self {
            Tokenizer::Tekken(t) => t.is_special(id),
            Tokenizer::Hf(t) => t.is_special(id),
        }
    }

    /// Id of a special token by its text (`"[INST]"` -> 3).
    pub fn special_id(&self, token: &str) -> Option<u32> {
        match self {
            Tokenizer::Tekken(t) => t.special_id(token),
            Tokenizer::Hf(t) => t.special_id(token),
        }
    }

    /// Text of a special id (3 -> `"[INST]"`).
    pub fn special_text(&self, id: u32) -> Option<String> {
        match self {
            Tokenizer::Tekken(t) => t.special_text(id).map(str::to_string),
            Tokenizer::Hf(t) => t.special_text(id),
        }
    }

    /// Like [`Tokenizer::special_id`], as an error naming the token when it is absent.
    pub fn require_special(&self, token: &str) -> Result<u32, TokenizerError> {
        self.special_id(token).ok_or_else(|| TokenizerError::MissingSpecial(token.to_string()))
    }

    pub fn bos_id(&self) -> u32 {
        match self {
            Tokenizer::Tekken(t) => t.special_id("<s>").expect("tekken always has <s>"),
            Tokenizer::Hf(t) => t.bos_id(),
        }
    }

    pub fn eos_id(&self) -> u32 {
        match self {
            Tokenizer::Tekken(t) => t.special_id("</s>").expect("tekken always has </s>"),
            Tokenizer::Hf(t) => t.eos_id(),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Tekken(t) => t.vocab_size(),
            Tokenizer::Hf(t) => t.vocab_size(),
        }
    }

    /// The tekken version (`"v3"` for Nemo); `None` for the HF layout, which does not say.
    pub fn tekken_version(&self) -> Option<&str> {
        match self {
            Tokenizer::Tekken(t) => Some(t.version()),
            Tokenizer::Hf(_) => None,
        }
    }
}

fn find_in_dir(dir: &Path) -> Result<PathBuf, TokenizerError> {
    let tekken = dir.join("tekken.json");
    if tekken.is_file() {
        return Ok(tekken);
    }
    let mut other_tekken: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| TokenizerError::Io { path: dir.to_path_buf(), source: e })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.contains("tekken") && n.ends_with(".json")
        })
        .collect();
    other_tekken.sort();
    if let Some(p) = other_tekken.into_iter().next() {
        return Ok(p);
    }
    let hf = dir.join("tokenizer.json");
    if hf.is_file() {
        return Ok(hf);
    }
    Err(TokenizerError::NotFound(dir.to_path_buf()))
}
