//! Tekken, Mistral's tiktoken-style tokenizer, loaded from `tekken.json` as mistral_common's
//! `Tekkenizer.from_file` loads it.
//!
//! File layout: `config` (`pattern`: the pre-split regex, `default_vocab_size` (131072 for
//! Nemo), `default_num_special_tokens` (1000), `version`), `vocab` (entries `{rank,
//! token_bytes: base64, token_str}`), and optionally `special_tokens` (`{rank, token_str,
//! is_control}`). Nemo's `tekken_240718.json` has no `special_tokens`: mistral_common then uses
//! its built-in list of 20 (ranks 0..19, [`DEFAULT_SPECIAL_TOKENS`]) and fills the rest of the
//! 1000 with `<SPECIAL_n>`; a file newer than v7 must list them.
//!
//! Ids: special tokens are 0..num_special; a vocab entry of rank r has id r + num_special. Only
//! the first `vocab_size - num_special` vocab entries are used (130072 of Nemo's 150000).
//!
//! Encoding: the regex splits the text into pieces, each piece is byte-level BPE'd by rank
//! ([`super::bpe`]). Special-token text inside the input is ordinary text: tiktoken is built
//! with no special tokens, so "[INST]" in a user message never becomes id 3.

use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use super::bpe::{self, RankMap};
use super::{SpecialTokenPolicy, TokenizerError};

/// mistral_common's `Tekkenizer.DEPRECATED_SPECIAL_TOKENS`: the special tokens of files that
/// do not list their own (versions up to v7, Nemo's among them).
pub const DEFAULT_SPECIAL_TOKENS: [&str; 20] = [
    "<unk>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
    "[TOOL_CALLS]",
    "[IMG]",
    "<pad>",
    "[IMG_BREAK]",
    "[IMG_END]",
    "[PREFIX]",
    "[MIDDLE]",
    "[SUFFIX]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
];

/// Letters, digits, punctuation, symbols, whitespace and control characters of several
/// scripts: a split pattern must match all of it.
const PATTERN_PROBE: &str = "Hello, World! 12345 3.14 héllo wörld — ünïcödé ✓ 日本語 Ελληνικά 🙂\t\n\r\n  \u{0}\u{7f}[INST] <s> $x = a_b + c; // ok?\n";

/// Far above any real tokenizer (Nemo reserves 1000): the count sizes a list made at load.
const MAX_SPECIAL_TOKENS: usize = 1 << 20;

#[derive(Deserialize)]
struct TekkenFile {
    config: TekkenConfig,
    vocab: Vec<VocabEntry>,
    #[serde(default)]
    special_tokens: Option<Vec<SpecialEntry>>,
}

#[derive(Deserialize)]
struct TekkenConfig {
    pattern: String,
    default_vocab_size: usize,
    default_num_special_tokens: usize,
    version: String,
}

#[derive(Deserialize)]
struct VocabEntry {
    rank: usize,
    token_bytes: String,
}

#[derive(Deserialize)]
struct SpecialEntry {
    rank: usize,
    token_str: String,
}

pub struct Tekken {
    /// Pre-split regex (tiktoken's `pat_str`); fancy-regex is the engine tiktoken itself uses.
    split: fancy_regex::Regex,
    ranks: RankMap,
    /// Token bytes by rank.
    pieces: Vec<Vec<u8>>,
    specials: Vec<String>,
    special_ids: std::collections::HashMap<String, u32>,
    num_special: usize,
    vocab_size: usize,
    version: String,
}

impl std::fmt::Debug for Tekken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tekken")
            .field("version", &self.version)
            .field("vocab_size", &self.vocab_size)
            .field("num_special", &self.num_special)
            .finish()
    }
}

impl Tekken {
    pub fn from_file(path: &Path) -> Result<Tekken, TokenizerError> {
        let bytes = std::fs::read(path).map_err(|e| TokenizerError::Io { path: path.to_path_buf(), source: e })?;
        Tekken::from_bytes(path, &bytes)
    }

    /// [`Tekken::from_slice`] with errors naming `path`, the file the bytes came from.
    pub fn from_bytes(path: &Path, json: &[u8]) -> Result<Tekken, TokenizerError> {
        Tekken::from_slice(json).map_err(|e| e.in_file(path))
    }

    pub fn from_slice(json: &[u8]) -> Result<Tekken, TokenizerError> {
        // The path in a serde error (`vocab[262].rank`) names the broken field.
        let file: TekkenFile = serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(json))
            .map_err(|e| {
                let at = e.path().to_string();
                let at = if at == "." { String::new() } else { format!("`{at}`: ") };
                TokenizerError::Format(format!("not a tekken.json: {at}{}", e.inner()))
            })?;
        let cfg = file.config;
        let bad = |msg: String| TokenizerError::Format(msg);
        let version_num: u32 = cfg
            .version
            .strip_prefix('v')
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(format!("config.version: unknown tokenizer version {:?}", cfg.version)))?;

        let num_special = cfg.default_num_special_tokens;
        // Checked before the filler names below are made: the count comes from the file.
        if num_special > MAX_SPECIAL_TOKENS {
            return Err(bad(format!(
                "config.default_num_special_tokens is {num_special}, implausibly many (limit {MAX_SPECIAL_TOKENS})"
            )));
        }
        let specials: Vec<String> = match file.special_tokens {
            Some(list) => {
                for (i, s) in list.iter().enumerate() {
                    if s.rank != i {
                        return Err(bad(format!(
                            "special_tokens[{i}] ({:?}) has rank {}, expected {i}",
                            s.token_str, s.rank
                        )));
                    }
                }
                list.into_iter().map(|s| s.token_str).collect()
            }
            None if version_num <= 7 => DEFAULT_SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect(),
            None => return Err(bad(format!("tokenizer {} must list its special_tokens", cfg.version))),
        };
        if specials.len() > num_special {
            return Err(bad(format!(
                "{} special tokens listed, but config.default_num_special_tokens reserves only {num_special}",
                specials.len()
            )));
        }
        let mut specials = specials;
        for i in specials.len()..num_special {
            specials.push(format!("<SPECIAL_{i}>"));
        }
        let mut special_ids = std::collections::HashMap::new();
        for (i, s) in specials.iter().enumerate() {
            if special_ids.insert(s.clone(), i as u32).is_some() {
                return Err(bad(format!("special token {s:?} listed twice")));
            }
        }
        // Every text starts and ends with these (`bos_id`, `eos_id`); mistral_common refuses a
        // file without them when it first asks for them.
        for required in ["<s>", "</s>"] {
            if !special_ids.contains_key(required) {
                return Err(bad(format!("special_tokens has no {required:?} (needed as BOS / EOS)")));
            }
        }

        let vocab_size = cfg.default_vocab_size;
        let inner = vocab_size.checked_sub(num_special).ok_or_else(|| {
            bad(format!(
                "config.default_vocab_size {vocab_size} is smaller than config.default_num_special_tokens {num_special}"
            ))
        })?;
        if inner > file.vocab.len() {
            return Err(bad(format!(
                "config.default_vocab_size {vocab_size} minus {num_special} special tokens needs {inner} vocab \
                 entries, but the file has only {} entries",
                file.vocab.len()
            )));
        }
        // Byte-level BPE falls back to single bytes: without all 256 of them, some text has no
        // encoding at all.
        if inner < 256 {
            return Err(bad(format!(
                "config.default_vocab_size {vocab_size} minus {num_special} special tokens leaves {inner} ordinary \
                 tokens; byte-level BPE needs at least the 256 single bytes"
            )));
        }
        let mut ranks = RankMap::default();
        ranks.reserve(inner);
        let mut pieces = Vec::with_capacity(inner);
        for (i, entry) in file.vocab.iter().take(inner).enumerate() {
            if entry.rank != i {
                return Err(bad(format!("vocab[{i}] has rank {}, expected {i}", entry.rank)));
            }
            let b = base64::engine::general_purpose::STANDARD
                .decode(&entry.token_bytes)
                .map_err(|e| bad(format!("vocab[{i}].token_bytes: bad base64: {e}")))?;
            if i < 256 && b != [i as u8] {
                return Err(bad(format!("vocab[{i}] must be the single byte {i}")));
            }
            if ranks.insert(b.clone(), i as u32).is_some() {
                return Err(bad(format!("vocab[{i}] repeats an earlier token")));
            }
            pieces.push(b);
        }
        let split = fancy_regex::Regex::new(&cfg.pattern)
            .map_err(|e| bad(format!("config.pattern: bad split pattern: {e}")))?;
        let tekken = Tekken { split, ranks, pieces, specials, special_ids, num_special, vocab_size, version: cfg.version };
        // A pattern that skips some kind of character is refused here, by name, rather than at
        // the first prompt holding one (encode checks every text as well).
        if let Err(TokenizerError::PatternGap { at }) = tekken.encode(PATTERN_PROBE) {
            return Err(bad(format!(
                "config.pattern does not match every character: it skips {:?} in a probe text",
                PATTERN_PROBE[at..].chars().next().unwrap_or_default()
            )));
        }
        Ok(tekken)
    }

    /// Text to ids, no BOS/EOS (mistral_common `encode(s, bos=False, eos=False)`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let offset = self.num_special as u32;
        let mut ranks = Vec::new();
        let mut covered = 0;
        for m in self.split.find_iter(text) {
            let m = m.map_err(|e| TokenizerError::Regex(e.to_string()))?;
            // Text between two matches would be dropped without a trace (tiktoken drops it):
            // only a broken `config.pattern` leaves any, and it is refused rather than lost.
            if m.start() != covered {
                return Err(TokenizerError::PatternGap { at: covered });
            }
            covered = m.end();
            ranks.clear();
            bpe::encode_piece(m.as_str().as_bytes(), &self.ranks, &mut ranks);
            out.extend(ranks.iter().map(|r| r + offset));
        }
        if covered != text.len() {
            return Err(TokenizerError::PatternGap { at: covered });
        }
        Ok(out)
    }

    pub fn version(&self) -> &str {
        &self.version
    }
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    pub fn num_special(&self) -> usize {
        self.num_special
    }
    pub fn is_special(&self, id: u32) -> bool {
        (id as usize) < self.num_special
    }
    pub fn special_id(&self, token: &str) -> Option<u32> {
        self.special_ids.get(token).copied()
    }
    pub fn special_text(&self, id: u32) -> Option<&str> {
        self.specials.get(id as usize).map(|s| s.as_str())
    }

    /// The bytes of an ordinary token; `None` for special or out-of-range ids.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        let id = id as usize;
        if id < self.num_special {
            return None;
        }
        self.pieces.get(id - self.num_special).map(|v| v.as_slice())
    }

    /// mistral_common's `decode`: runs of ordinary ids are decoded together as UTF-8 with
    /// replacement (U+FFFD per invalid sequence, as Python's `errors="replace"`); special ids
    /// are dropped (Ignore), written as their text (Keep) or refused (Raise). A special id
    /// between two halves of a character splits the run, so each half becomes U+FFFD, exactly
    /// as in mistral_common.
    pub fn decode(&self, ids: &[u32], policy: SpecialTokenPolicy) -> Result<String, TokenizerError> {
        let mut out = String::new();
        let mut run: Vec<u8> = Vec::new();
        for &id in ids {
            if self.is_special(id) {
                out.push_str(&String::from_utf8_lossy(&run));
                run.clear();
                match policy {
                    SpecialTokenPolicy::Ignore => {}
                    SpecialTokenPolicy::Keep => out.push_str(&self.specials[id as usize]),
                    SpecialTokenPolicy::Raise => return Err(TokenizerError::SpecialInDecode(id)),
                }
            } else {
                let b = self.token_bytes(id).ok_or(TokenizerError::UnknownId { id, vocab_size: self.vocab_size })?;
                run.extend_from_slice(b);
            }
        }
        out.push_str(&String::from_utf8_lossy(&run));
        Ok(out)
    }
}
