//! Request fields -> what the engine runs, with every check that can be made before the
//! prompt is encoded: ranges of sampling values, limits on stop strings, refusal of OpenAI
//! features this server does not implement (never silently ignored).

use std::hash::{BuildHasher, Hasher};

use super::error::ApiError;
use super::model::SamplingDefaults;
use super::openai::request::SharedFields;
use super::structured::{requested, Requested};
use crate::sampling::{Penalties, SamplingParams};
use crate::scheduler::{max_kv_positions, Limits};

/// More would make the per-token search a cost and a hostile request's lever; OpenAI allows 4.
pub const MAX_STOP_STRINGS: usize = 32;
/// Bytes per stop string.
pub const MAX_STOP_STRING_BYTES: usize = 256;
/// OpenAI's limit for `n` (choices per request; each is a sequence of its own in the engine).
pub const MAX_CHOICES: i64 = 128;
/// OpenAI's limit for `top_logprobs`.
pub const MAX_TOP_LOGPROBS: i64 = 20;
/// Tokens one `logit_bias` may name: each costs every step of the request an edit of its
/// logits row (16 bytes uploaded on the GPU); 1024 covers banning or forcing any word list.
pub const MAX_LOGIT_BIAS: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    pub sampling: SamplingParams,
    /// `logit_bias` and the penalties; token ids are checked against the vocabulary when the
    /// engine validates the request.
    pub penalties: Penalties,
    /// `None`: as many as fit in the context and the KV cache.
    pub max_tokens: Option<usize>,
    pub stop_strings: Vec<String>,
    /// Choices to generate (OpenAI's `n`), at least 1.
    pub n: usize,
    /// vLLM's `min_tokens` (0 = off): checked against max_tokens once that is resolved.
    pub min_tokens: usize,
    pub ignore_eos: bool,
    pub stream: bool,
    pub include_usage: bool,
    /// A structured-output constraint (`server::structured`), compiled when the request starts.
    pub constraint: Option<Requested>,
}

/// Checks the shared fields; `max_tokens` is the endpoint's choice of field.
pub fn generation_params(
    f: &SharedFields,
    max_tokens: Option<(&'static str, i64)>,
    defaults: SamplingDefaults,
) -> Result<GenerationParams, ApiError> {
    let temperature = match f.temperature {
        Some(t) if !(0.0..=2.0).contains(&t) => {
            return Err(ApiError::invalid_param("temperature", format!("temperature must be in [0, 2], got {t}")))
        }
        Some(t) => t as f32,
        None => defaults.temperature,
    };
    let top_p = match f.top_p {
        Some(p) if !(p > 0.0 && p <= 1.0) => {
            return Err(ApiError::invalid_param("top_p", format!("top_p must be in (0, 1], got {p}")))
        }
        Some(p) => p as f32,
        None => defaults.top_p,
    };
    let top_k = match f.top_k {
        Some(-1 | 0) => 0,
        Some(k) if k < 0 => {
            return Err(ApiError::invalid_param("top_k", format!("top_k must be -1 or 0 (off) or positive, got {k}")))
        }
        Some(k) => k as usize,
        None => defaults.top_k,
    };
    let min_p = match f.min_p {
        Some(p) if !(0.0..=1.0).contains(&p) => {
            return Err(ApiError::invalid_param("min_p", format!("min_p must be in [0, 1], got {p}")))
        }
        Some(p) => p as f32,
        None => defaults.min_p,
    };
    let max_tokens = match max_tokens {
        Some((name, n)) if n < 1 => return Err(ApiError::invalid_param(name, format!("{name} must be at least 1, got {n}"))),
        Some((_, n)) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        None => None,
    };
    let n = match f.n {
        Some(n) if !(1..=MAX_CHOICES).contains(&n) => {
            return Err(ApiError::invalid_param("n", format!("n must be in [1, {MAX_CHOICES}], got {n}")))
        }
        Some(n) => n as usize,
        None => 1,
    };
    let penalties = penalties(f)?;
    let min_tokens = match f.min_tokens {
        Some(m) if m < 0 => return Err(ApiError::invalid_param("min_tokens", format!("min_tokens must be >= 0, got {m}"))),
        Some(m) => usize::try_from(m).unwrap_or(usize::MAX),
        None => 0,
    };
    if let Some(max) = max_tokens.filter(|&max| min_tokens > max) {
        return Err(ApiError::invalid_param("min_tokens", format!("min_tokens {min_tokens} exceeds max_tokens {max}")));
    }
    let stream = f.stream.unwrap_or(false);
    if f.stream_options.is_some() && !stream {
        return Err(ApiError::invalid_param("stream_options", "stream_options is only allowed when stream is true"));
    }
    let include_usage = f.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false);
    let seed = match f.seed {
        Some(s) => s as u64,
        // OpenAI samples differently each time unless a seed is given.
        None => std::collections::hash_map::RandomState::new().build_hasher().finish(),
    };
    Ok(GenerationParams {
        sampling: SamplingParams { temperature, top_k, top_p, min_p, seed },
        penalties,
        max_tokens,
        stop_strings: stop_strings(f)?,
        n,
        min_tokens,
        ignore_eos: f.ignore_eos.unwrap_or(false),
        stream,
        include_usage,
        constraint: requested(f)?,
    })
}

/// `frequency_penalty` and `presence_penalty` in [-2, 2] (OpenAI), `repetition_penalty` in
/// [0.01, 100] (vLLM's extension; 1 = off), `logit_bias` as OpenAI's map of token id (a
/// decimal string) to a bias in [-100, 100].
fn penalties(f: &SharedFields) -> Result<Penalties, ApiError> {
    let mut p = Penalties::default();
    let limit = crate::sampling::penalties::PENALTY_LIMIT as f64;
    for (name, value, out) in [
        ("frequency_penalty", f.frequency_penalty, &mut p.frequency),
        ("presence_penalty", f.presence_penalty, &mut p.presence),
    ] {
        match value {
            Some(v) if !(-limit..=limit).contains(&v) => {
                return Err(ApiError::invalid_param(name, format!("{name} must be in [-2, 2], got {v}")))
            }
            Some(v) => *out = v as f32,
            None => {}
        }
    }
    let (lo, hi) = crate::sampling::penalties::REPETITION_RANGE;
    match f.repetition_penalty {
        Some(r) if !(lo as f64..=hi as f64).contains(&r) => {
            return Err(ApiError::invalid_param(
                "repetition_penalty",
                format!("repetition_penalty must be in [0.01, 100] (1 = off), got {r}"),
            ))
        }
        Some(r) => p.repetition = r as f32,
        None => {}
    }
    if let Some(map) = &f.logit_bias {
        p.logit_bias = logit_bias(map)?;
    }
    Ok(p)
}

fn logit_bias(map: &serde_json::Map<String, serde_json::Value>) -> Result<Vec<(u32, f32)>, ApiError> {
    let bad = |what: String| Err(ApiError::invalid_param("logit_bias", what));
    if map.len() > MAX_LOGIT_BIAS {
        return bad(format!("logit_bias may name at most {MAX_LOGIT_BIAS} tokens, got {}", map.len()));
    }
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        let Ok(token) = key.parse::<u32>() else {
            return bad(format!("logit_bias keys must be token ids (decimal integers), got {key:?}"));
        };
        let bias = match value.as_f64() {
            Some(b) if (-100.0..=100.0).contains(&b) => b as f32,
            _ => return bad(format!("logit_bias[{key:?}] must be a number in [-100, 100], got {value}")),
        };
        out.push((token, bias));
    }
    out.sort_unstable_by_key(|&(t, _)| t);
    if let Some(w) = out.windows(2).find(|w| w[0].0 == w[1].0) {
        return bad(format!("logit_bias names token {} twice (as two spellings of one id)", w[0].0));
    }
    Ok(out)
}

fn stop_strings(f: &SharedFields) -> Result<Vec<String>, ApiError> {
    let stops = f.stop.clone().map(|s| s.into_vec()).unwrap_or_default();
    if stops.len() > MAX_STOP_STRINGS {
        return Err(ApiError::invalid_param(
            "stop",
            format!("at most {MAX_STOP_STRINGS} stop strings are allowed, got {}", stops.len()),
        ));
    }
    for (i, s) in stops.iter().enumerate() {
        if s.is_empty() {
            return Err(ApiError::invalid_param(format!("stop[{i}]"), "a stop string must not be empty"));
        }
        if s.len() > MAX_STOP_STRING_BYTES {
            return Err(ApiError::invalid_param(
                format!("stop[{i}]"),
                format!("a stop string may have at most {MAX_STOP_STRING_BYTES} bytes, this one has {}", s.len()),
            ));
        }
    }
    Ok(stops)
}

/// The number of tokens to generate for a prompt of `prompt` tokens: the one asked for when
/// it fits, else as many as the context and the KV cache allow. Refusals say what to change.
pub fn resolve_max_tokens(asked: Option<usize>, prompt: usize, limits: &Limits) -> Result<usize, ApiError> {
    let context_room = limits.max_context.saturating_sub(prompt);
    // KV positions are prompt + max_tokens - 1 (the last token is never run).
    let cache_room = (limits.num_blocks * limits.block_size + 1).saturating_sub(prompt);
    let too_long = |what: String| ApiError::bad_request(what).with_code("context_length_exceeded");
    match asked {
        Some(n) if prompt.saturating_add(n) > limits.max_context => Err(too_long(format!(
            "this model's context is {} tokens, but the prompt has {prompt} and max_tokens asks for {n} more \
             ({} in all); shorten the prompt or lower max_tokens",
            limits.max_context,
            prompt.saturating_add(n)
        ))),
        Some(n) if n > cache_room => Err(too_long(format!(
            "the prompt ({prompt} tokens) plus max_tokens ({n}) need {} KV cache positions, but the server's \
             whole cache holds {}; lower max_tokens or start the server with a larger --kv-tokens",
            max_kv_positions(prompt, n),
            limits.num_blocks * limits.block_size
        ))),
        Some(n) => Ok(n),
        None if context_room.min(cache_room) == 0 => Err(too_long(format!(
            "the prompt has {prompt} tokens, which leaves no room to generate (context {} tokens, KV cache {} \
             positions); shorten the prompt",
            limits.max_context,
            limits.num_blocks * limits.block_size
        ))),
        None => Ok(context_room.min(cache_room)),
    }
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;
