//! Structured outputs: a JSON schema, a regular expression, a list of choices or a Lark grammar
//! constrains every draw to the tokens that keep the output a prefix of what the grammar accepts.
//! llguidance compiles the grammar and computes each step's token mask (docs/structured.md);
//! the sampler sets the masked logits to -inf (`sampling::mask`, and `apply_token_mask_f32` on
//! the GPU). The grammar ends the request when it can take no more tokens.

mod tok_env;

use std::sync::Arc;

use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::{Matcher, ParserFactory};

use crate::sampling::mask_words;
use crate::tokenizer::Tokenizer;
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

    fn to_grammar(&self) -> Result<TopLevelGrammar, GrammarError> {
        if let Constraint::JsonSchema(schema) = self {
            let depth = json_depth(schema);
            if depth > MAX_SCHEMA_DEPTH {
                let why = format!("the schema nests {depth} levels deep; at most {MAX_SCHEMA_DEPTH}");
                return Err(GrammarError::Invalid { kind: "json_schema", why });
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

/// Deepest nesting of arrays and objects a JSON schema may have. llguidance's schema compiler
/// recurses per level and overflowed a 2 MiB thread stack (tokio's blocking threads' size) at
/// 1000 levels in our probe, fine at 600; JSON read from text stops at 128 (serde_json), so only
/// a schema built in code can come near this.
pub const MAX_SCHEMA_DEPTH: usize = 256;

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
    #[error("structured outputs need token {eos} (the tokenizer's EOS) inside the model's vocabulary of {vocab}")]
    EosOutsideVocabulary { eos: u32, vocab: usize },
}

/// Compiles constraints for one tokenizer and model; built once at start-up (the token trie
/// over the whole vocabulary takes a moment), shared by every request.
#[derive(Clone)]
pub struct Grammars {
    factory: Arc<ParserFactory>,
    /// The model's vocabulary, which sizes the masks (it may exceed the tokenizer's).
    vocab: usize,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars").field("vocab", &self.vocab).finish_non_exhaustive()
    }
}

impl Grammars {
    pub fn new(tokenizer: Arc<Tokenizer>, model_vocab: usize) -> Result<Self, GrammarError> {
        let eos = tokenizer.eos_id();
        if eos as usize >= model_vocab {
            return Err(GrammarError::EosOutsideVocabulary { eos, vocab: model_vocab });
        }
        let env: toktrie::TokEnv = Arc::new(NemoTokEnv::new(tokenizer));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| GrammarError::Invalid { kind: "tokenizer", why: e.to_string() })?;
        factory.quiet();
        // Errors go back to the client: the reason, not the parser's whole state.
        *factory.limits_mut() = ParserLimits { verbose_errors: false, ..ParserLimits::default() };
        Ok(Grammars { factory: Arc::new(factory), vocab: model_vocab })
    }

    /// A fresh matcher for one output; an invalid constraint is refused here, before any step.
    pub fn compile(&self, constraint: &Constraint) -> Result<Grammar, GrammarError> {
        let kind = constraint.kind();
        let parser = self.factory.create_parser(constraint.to_grammar()?);
        let matcher = Matcher::new(parser);
        if let Some(why) = matcher.get_error() {
            return Err(GrammarError::Invalid { kind, why });
        }
        Ok(Grammar { matcher, kind, vocab: self.vocab, consumed: 0 })
    }
}

/// One output's grammar state: which tokens may come next, advanced by each drawn token.
#[derive(Clone)]
pub struct Grammar {
    matcher: Matcher,
    kind: &'static str,
    vocab: usize,
    consumed: usize,
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
        let n = words.len().min(mask.len());
        mask[..n].copy_from_slice(&words[..n]);
        // The trie's last word may carry bits past the tokenizer's vocabulary; the model's last
        // word must carry none past its own.
        if self.vocab % 32 != 0 && n == mask.len() {
            mask[n - 1] &= (1u32 << (self.vocab % 32)) - 1;
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
