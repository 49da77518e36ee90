//! Structured outputs: a JSON schema, a regular expression, a list of choices or a Lark grammar
//! constrains every draw to the tokens that keep the output a prefix of what the grammar accepts.
//! llguidance compiles the grammar and computes each step's token mask (docs/structured.md);
//! the sampler sets the masked logits to -inf (`sampling::mask`, and `apply_token_mask_f32` on
//! the GPU). The grammar ends the request when it can take no more tokens.

mod cache;
mod tok_env;

use std::sync::{Arc, Mutex};

use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::{Matcher, ParserFactory};

use crate::sampling::mask_words;
use crate::tokenizer::Tokenizer;
use cache::GrammarCache;
pub use cache::{GRAMMAR_CACHE_ENTRIES, GRAMMAR_CACHE_MAX_SOURCE};
pub use tok_env::NemoTokEnv;

/// What the output must be.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`).
    JsonObject,
    /// A JSON value valid under this schema (llguidance's subset of JSON Schema).
    JsonSchema(serde_json::Value),
    /// Text the regular expression (Rust `regex` syntax) matches whole.
    Regex(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
    /// A grammar in llguidance's Lark syntax (which may embed `%json { schema }`).
    Lark(String),
}

impl Constraint {
    /// The kind, for messages and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Constraint::JsonObject => "json_object",
            Constraint::JsonSchema(_) => "json_schema",
            Constraint::Regex(_) => "regex",
            Constraint::Choice(_) => "choice",
            Constraint::Lark(_) => "grammar",
        }
    }

    /// The constraint as one string: equal keys, equal constraints (the cache's key).
    fn key(&self) -> String {
        match self {
            Constraint::JsonObject => "json_object".into(),
            Constraint::JsonSchema(schema) => format!("json_schema {schema}"),
            Constraint::Regex(rx) => format!("regex {rx}"),
            // Each choice's length first, so that no two lists make one key.
            Constraint::Choice(choices) => choices.iter().fold("choice".to_string(), |k, c| format!("{k} {}:{c}", c.len())),
            Constraint::Lark(text) => format!("grammar {text}"),
        }
    }

    /// The source's size in bytes (a schema as compact JSON).
    fn source_bytes(&self) -> usize {
        match self {
            Constraint::JsonObject => 0,
            Constraint::JsonSchema(schema) => serde_json::to_string(schema).map_or(usize::MAX, |s| s.len()),
            Constraint::Regex(text) | Constraint::Lark(text) => text.len(),
            Constraint::Choice(choices) => choices.iter().map(|c| c.len() + 1).sum(),
        }
    }

    fn to_grammar(&self) -> Result<TopLevelGrammar, GrammarError> {
        let invalid = |why: String| Err(GrammarError::Invalid { kind: self.kind(), why });
        let bytes = self.source_bytes();
        if bytes > MAX_SOURCE_BYTES {
            return invalid(format!("the constraint is {bytes} bytes; at most {MAX_SOURCE_BYTES}"));
        }
        if let Constraint::JsonSchema(schema) = self {
            let depth = json_depth(schema);
            if depth > MAX_SCHEMA_DEPTH {
                return invalid(format!("the schema nests {depth} levels deep; at most {MAX_SCHEMA_DEPTH}"));
            }
        }
        Ok(match self {
            Constraint::JsonObject => TopLevelGrammar::from_json_schema(serde_json::json!({"type": "object"})),
            Constraint::JsonSchema(schema) => TopLevelGrammar::from_json_schema(schema.clone()),
            Constraint::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Constraint::Choice(choices) => {
                if choices.is_empty() {
                    return Err(GrammarError::Invalid { kind: "choice", why: "the list of choices is empty".into() });
                }
                let alternatives: Vec<String> = choices.iter().map(|c| regex_syntax::escape(c)).collect();
                TopLevelGrammar::from_regex(&format!("(?:{})", alternatives.join("|")))
            }
            Constraint::Lark(text) => TopLevelGrammar::from_lark(text.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Constraint;

    #[test]
    fn different_constraints_have_different_keys() {
        let choices = |c: &[&str]| Constraint::Choice(c.iter().map(|s| s.to_string()).collect());
        let keys = [
            choices(&["a b", "c"]).key(),
            choices(&["a", "b c"]).key(),
            choices(&["a b c"]).key(),
            Constraint::Regex("x".into()).key(),
            Constraint::Lark("x".into()).key(),
            Constraint::JsonObject.key(),
            Constraint::JsonSchema(serde_json::json!({"type": "object"})).key(),
        ];
        let distinct: std::collections::BTreeSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
        assert_eq!(Constraint::Regex("x".into()).key(), Constraint::Regex("x".into()).key());
    }
}

/// Deepest nesting of arrays and objects a JSON schema may have (JSON read from text stops at
/// 128 levels anyway, serde_json's limit).
pub const MAX_SCHEMA_DEPTH: usize = 256;

/// Largest constraint source (a schema as compact JSON, a regex, a Lark grammar, the choices).
/// llguidance's compiler recurses along chains of rules and `$ref`s: on a 2 MiB stack a chain of
/// 1000 overflowed (which aborts the process), so compiling runs on a thread of
/// [`COMPILE_STACK_BYTES`], where a 20,000-rule chain (300 KB) compiled and a 100,000-rule one
/// (1.5 MB) overflowed. This bound keeps every source well inside that stack.
pub const MAX_SOURCE_BYTES: usize = 256 * 1024;

/// The stack of the thread that compiles (address space: pages are touched only as used).
pub const COMPILE_STACK_BYTES: usize = 256 << 20;

/// Nesting depth of a JSON value, counted without recursion (a deep value must not overflow
/// the stack that checks it).
fn json_depth(v: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &serde_json::Value>> = match v {
            serde_json::Value::Array(a) => Box::new(a.iter()),
            serde_json::Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        deepest = deepest.max(d);
        stack.extend(children.map(|c| (c, d + 1)));
    }
    deepest
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GrammarError {
    #[error("invalid {kind} constraint: {why}")]
    Invalid { kind: &'static str, why: String },
    #[error("the {kind} constraint failed during generation: {why}")]
    Failed { kind: &'static str, why: String },
    #[error("structured outputs need end token {eos} inside the vocabulary ({vocab} tokens in both the model and the tokenizer)")]
    EosOutsideVocabulary { eos: u32, vocab: usize },
    #[error("building the token trie failed: {0}")]
    Trie(String),
}

/// Compiles constraints for one tokenizer and model; built once at start-up (the token trie
/// over the whole vocabulary takes a moment), shared by every request.
#[derive(Clone)]
pub struct Grammars {
    factory: Arc<ParserFactory>,
    /// The model's vocabulary, which sizes the masks (it may exceed the tokenizer's).
    vocab: usize,
    tokenizer_vocab: usize,
    /// The last constraints compiled, in their start state: a server's requests tend to send
    /// the same schema again and again.
    cache: Arc<Mutex<GrammarCache<Grammar>>>,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars").field("vocab", &self.vocab).finish_non_exhaustive()
    }
}

impl Grammars {
    /// `end_tokens`: the ids that end an answer (the model's stop ids), which a grammar allows
    /// once it is complete; empty means the tokenizer's EOS.
    pub fn new(tokenizer: Arc<Tokenizer>, model_vocab: usize, end_tokens: &[u32]) -> Result<Self, GrammarError> {
        let ends = if end_tokens.is_empty() { vec![tokenizer.eos_id()] } else { end_tokens.to_vec() };
        let tokenizer_vocab = tokenizer.vocab_size();
        let vocab = model_vocab.min(tokenizer.vocab_size());
        if let Some(&eos) = ends.iter().find(|&&t| t as usize >= vocab) {
            return Err(GrammarError::EosOutsideVocabulary { eos, vocab });
        }
        // toktrie asserts on what it cannot hold (a token past its length limit): a tokenizer
        // file is untrusted, so a panic here is an error, not a crash.
        let built = std::panic::catch_unwind(move || {
            let env: toktrie::TokEnv = Arc::new(NemoTokEnv::new(tokenizer, &ends));
            ParserFactory::new_simple(&env)
        });
        let mut factory = match built {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return Err(GrammarError::Trie(e.to_string())),
            Err(_) => return Err(GrammarError::Trie("the tokenizer's vocabulary cannot be put in a token trie".into())),
        };
        factory.quiet();
        // Errors go back to the client: the reason, not the parser's whole state.
        *factory.limits_mut() = ParserLimits { verbose_errors: false, ..ParserLimits::default() };
        let cache = Arc::new(Mutex::new(GrammarCache::new(GRAMMAR_CACHE_ENTRIES, GRAMMAR_CACHE_MAX_SOURCE)));
        Ok(Grammars { factory: Arc::new(factory), vocab: model_vocab, tokenizer_vocab, cache })
    }

    /// A fresh matcher for one output; an invalid constraint is refused here, before any step.
    /// A constraint compiled recently is a copy of the cached start state; others are compiled
    /// (and cached) by [`Self::compile_uncached`].
    pub fn compile(&self, constraint: &Constraint) -> Result<Grammar, GrammarError> {
        let key = constraint.key();
        let cached = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key);
        if let Some(start) = cached {
            return Ok(start.as_ref().clone());
        }
        let grammar = self.compile_uncached(constraint)?;
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(key, Arc::new(grammar.clone()));
        Ok(grammar)
    }

    /// Constraints served from the cache and compiled, since start-up.
    pub fn cache_counts(&self) -> (u64, u64) {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        (cache.hits, cache.misses)
    }

    /// Compiles without the cache. Runs on a thread of its own with a large stack (llguidance
    /// recurses along the source, see [`MAX_SOURCE_BYTES`]), and computes the first mask there,
    /// so the lexer states it needs are built before the engine thread asks.
    pub fn compile_uncached(&self, constraint: &Constraint) -> Result<Grammar, GrammarError> {
        let kind = constraint.kind();
        let source = constraint.to_grammar()?;
        let compile = || {
            let matcher = Matcher::new(self.factory.create_parser(source));
            if let Some(why) = matcher.get_error() {
                return Err(GrammarError::Invalid { kind, why });
            }
            let mut grammar = Grammar { matcher, kind, vocab: self.vocab, tokenizer_vocab: self.tokenizer_vocab, consumed: 0 };
            grammar.fill_mask(&mut Vec::new()).map_err(|e| match e {
                GrammarError::Failed { why, .. } => GrammarError::Invalid { kind, why },
                other => other,
            })?;
            Ok(grammar)
        };
        std::thread::scope(|s| {
            let thread = std::thread::Builder::new().name("nemo-grammar".into()).stack_size(COMPILE_STACK_BYTES);
            match thread.spawn_scoped(s, compile) {
                // A panic is our (or llguidance's) fault, not the request's.
                Ok(handle) => handle.join().unwrap_or_else(|_| Err(GrammarError::Failed { kind, why: "the grammar compiler panicked".into() })),
                Err(e) => Err(GrammarError::Failed { kind, why: format!("no thread to compile on: {e}") }),
            }
        })
    }
}

/// One output's grammar state: which tokens may come next, advanced by each drawn token.
pub struct Grammar {
    matcher: Matcher,
    kind: &'static str,
    /// The model's vocabulary (the mask's size) and the tokenizer's (the trie's).
    vocab: usize,
    tokenizer_vocab: usize,
    consumed: usize,
}

/// An independent copy: llguidance's own `clone` shares the lexer behind a lock, which would
/// make the copies' masks (the `n` choices of one request) wait for each other.
impl Clone for Grammar {
    fn clone(&self) -> Self {
        Grammar { matcher: self.matcher.deep_clone(), kind: self.kind, vocab: self.vocab, tokenizer_vocab: self.tokenizer_vocab, consumed: self.consumed }
    }
}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammar").field("kind", &self.kind).field("consumed", &self.consumed).finish_non_exhaustive()
    }
}

/// Two states are equal when they follow the same kind of constraint over as many tokens
/// (requests compare equal in tests; a matcher has no equality of its own).
impl PartialEq for Grammar {
    fn eq(&self, other: &Self) -> bool {
        (self.kind, self.vocab, self.consumed) == (other.kind, other.vocab, other.consumed)
    }
}

impl Grammar {
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Writes the tokens that may come next into `mask` (`sampling::mask` layout over the
    /// model's vocabulary); the tokenizer's EOS is among them once the grammar is complete.
    pub fn fill_mask(&mut self, mask: &mut Vec<u32>) -> Result<(), GrammarError> {
        let allowed = self.matcher.compute_mask().map_err(|e| self.failed(e))?;
        let words = allowed.as_slice();
        mask.clear();
        mask.resize(mask_words(self.vocab), 0);
        // Only ids both the model and the tokenizer have may be drawn: whatever llguidance's
        // set holds past that (its padding word) is cleared.
        let limit = self.vocab.min(self.tokenizer_vocab);
        let full = limit / 32;
        let n = words.len().min(full);
        mask[..n].copy_from_slice(&words[..n]);
        if !limit.is_multiple_of(32) {
            mask[full] = words.get(full).copied().unwrap_or(0) & ((1u32 << (limit % 32)) - 1);
        }
        if mask.iter().all(|&w| w == 0) {
            return Err(self.failed(anyhow::anyhow!("no token of the vocabulary can continue the output")));
        }
        Ok(())
    }

    /// Advances past a drawn token (one the mask allowed).
    pub fn consume(&mut self, token: u32) -> Result<(), GrammarError> {
        self.matcher.consume_token(token).map_err(|e| self.failed(e))?;
        self.consumed += 1;
        Ok(())
    }

    /// The grammar can take no more tokens: the output is complete.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped() && !self.matcher.is_error()
    }

    fn failed(&self, e: anyhow::Error) -> GrammarError {
        GrammarError::Failed { kind: self.kind, why: self.matcher.get_error().unwrap_or_else(|| e.to_string()) }
    }
}
