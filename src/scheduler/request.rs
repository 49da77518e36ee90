//! What a caller asks the engine for, and the up-front checks that refuse what can never run.

use crate::sampling::{Penalties, SamplingError, SamplingParams};
use crate::structured::Grammar;

/// Assigned by the engine in arrival order: a larger id arrived later (the preemption policy
/// uses this as the sequence's age).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One generation. Token ids only: stop *strings* need the tokenizer and are the caller's job
/// (docs/scheduler.md, "Stop strings"): it watches the text of the streamed tokens and calls
/// [`super::Engine::finish_stopped`] when one appears.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    /// Logit bias and repetition, frequency and presence penalties (default: none).
    pub penalties: Penalties,
    /// At least 1. The stop token, when one ends the run, counts and is emitted.
    pub max_tokens: usize,
    /// vLLM's `min_tokens`: the stop tokens cannot be drawn before this many are generated
    /// (at most `max_tokens`; 0 = off).
    pub min_tokens: usize,
    /// Token ids that end the run. The engine knows no EOS of its own: the caller lists the
    /// tokenizer's EOS here (unless the user asked to ignore it).
    pub stop_token_ids: Vec<u32>,
    /// `Some(k)`: every token event carries the chosen token's logprob and the top `k`.
    pub logprobs: Option<usize>,
    /// Structured output: only tokens this grammar allows are drawn, and the request stops with
    /// `Stop` once the grammar is complete (`crate::structured`).
    pub grammar: Option<Grammar>,
}

impl Request {
    /// Greedy, no stop tokens, no logprobs.
    pub fn new(prompt: Vec<u32>, max_tokens: usize) -> Self {
        Request { prompt, sampling: SamplingParams::greedy(), penalties: Penalties::default(), max_tokens, min_tokens: 0, stop_token_ids: Vec::new(), logprobs: None, grammar: None }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("prompt token {token} at index {index} is outside the vocabulary (size {vocab_size})")]
    TokenOutOfRange { index: usize, token: u32, vocab_size: usize },
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[error(
        "prompt of {prompt} tokens + max_tokens {max_tokens} exceed the model's {max_context}-token context; \
         shorten the prompt or lower max_tokens"
    )]
    ContextTooLong { prompt: usize, max_tokens: usize, max_context: usize },
    #[error(
        "prompt of {prompt} tokens + max_tokens {max_tokens} need {blocks} KV blocks of {block_size} tokens, \
         but the whole cache has {num_blocks}; lower max_tokens or start the engine with a larger KV cache"
    )]
    TooLargeForCache { prompt: usize, max_tokens: usize, blocks: usize, block_size: usize, num_blocks: usize },
    #[error("stop token {token} is outside the vocabulary (size {vocab_size})")]
    StopTokenOutOfRange { token: u32, vocab_size: usize },
    #[error("min_tokens {min_tokens} exceeds max_tokens {max_tokens}")]
    MinTokensAboveMax { min_tokens: usize, max_tokens: usize },
    #[error("{waiting} requests are already waiting (the limit is {limit}); retry later")]
    QueueFull { waiting: usize, limit: usize },
    #[error("the engine cannot run any more steps ({0}); it must be restarted")]
    BackendUnusable(String),
}

/// What a request is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub vocab_size: usize,
    pub max_context: usize,
    pub block_size: usize,
    pub num_blocks: usize,
}

/// KV positions a sequence of `prompt` tokens may fill: the last generated token is never run.
pub fn max_kv_positions(prompt: usize, max_tokens: usize) -> usize {
    prompt + max_tokens - 1
}

impl Request {
    /// Refuses, with the reason, any request that could never complete, so that one admitted
    /// request alone in the cache always can (which is what makes preemption terminate).
    pub fn validate(&self, limits: &Limits) -> Result<(), RequestError> {
        if self.prompt.is_empty() {
            return Err(RequestError::EmptyPrompt);
        }
        if let Some((index, &token)) = self.prompt.iter().enumerate().find(|(_, &t)| t as usize >= limits.vocab_size) {
            return Err(RequestError::TokenOutOfRange { index, token, vocab_size: limits.vocab_size });
        }
        if self.max_tokens == 0 {
            return Err(SamplingError::ZeroMaxTokens.into());
        }
        self.sampling.validate()?;
        self.penalties.validate(limits.vocab_size)?;
        if let Some(&token) = self.stop_token_ids.iter().find(|&&t| t as usize >= limits.vocab_size) {
            return Err(RequestError::StopTokenOutOfRange { token, vocab_size: limits.vocab_size });
        }
        if self.min_tokens > self.max_tokens {
            return Err(RequestError::MinTokensAboveMax { min_tokens: self.min_tokens, max_tokens: self.max_tokens });
        }
        let (prompt, max_tokens) = (self.prompt.len(), self.max_tokens);
        if prompt + max_tokens > limits.max_context {
            return Err(RequestError::ContextTooLong { prompt, max_tokens, max_context: limits.max_context });
        }
        let blocks = max_kv_positions(prompt, max_tokens).div_ceil(limits.block_size);
        if blocks > limits.num_blocks {
            let (block_size, num_blocks) = (limits.block_size, limits.num_blocks);
            return Err(RequestError::TooLargeForCache { prompt, max_tokens, blocks, block_size, num_blocks });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { vocab_size: 10, max_context: 40, block_size: 4, num_blocks: 5 };

    #[test]
    fn a_request_that_exactly_fills_the_cache_is_accepted() {
        // 12 + 9 - 1 = 20 positions = 5 blocks of 4.
        assert_eq!(Request::new(vec![1; 12], 9).validate(&LIMITS), Ok(()));
        assert_eq!(
            Request::new(vec![1; 12], 10).validate(&LIMITS),
            Err(RequestError::TooLargeForCache { prompt: 12, max_tokens: 10, blocks: 6, block_size: 4, num_blocks: 5 })
        );
    }

    #[test]
    fn each_impossible_request_is_refused_with_its_reason() {
        let check = |r: Request| r.validate(&LIMITS).unwrap_err();
        assert_eq!(check(Request::new(vec![], 1)), RequestError::EmptyPrompt);
        assert_eq!(
            check(Request::new(vec![1, 10], 1)),
            RequestError::TokenOutOfRange { index: 1, token: 10, vocab_size: 10 }
        );
        assert_eq!(check(Request::new(vec![1], 0)), RequestError::Sampling(SamplingError::ZeroMaxTokens));
        let mut hot = Request::new(vec![1], 1);
        hot.sampling.temperature = -1.0;
        assert_eq!(check(hot), RequestError::Sampling(SamplingError::InvalidTemperature(-1.0)));
        let stop = Request { stop_token_ids: vec![3, 10], ..Request::new(vec![1], 1) };
        assert_eq!(check(stop), RequestError::StopTokenOutOfRange { token: 10, vocab_size: 10 });
        let big = Limits { num_blocks: 100, ..LIMITS };
        assert_eq!(
            Request::new(vec![1; 30], 11).validate(&big),
            Err(RequestError::ContextTooLong { prompt: 30, max_tokens: 11, max_context: 40 })
        );
        let msg = check(Request::new(vec![1; 30], 1)).to_string();
        assert!(msg.contains("need 8 KV blocks") && msg.contains("larger KV cache"), "{msg}");
    }
}
