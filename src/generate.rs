//! The generation loop for one sequence over any [`Backend`]: prompt -> prefill -> sample ->
//! decode, until a stop/EOS token or the token budget. What the CLI runs, and what the server's
//! scheduler will run per request; the tests drive it with a fake backend.
//!
//! Per step it reports the chosen token and, when asked, its logprob and the top-K logprobs:
//! natural-log softmax of the raw logits, before temperature and filters (as vLLM and OpenAI
//! report them, and as transformers' fixtures record them).

use std::io;
use std::time::{Duration, Instant};

use crate::engine::{Backend, EngineError};
use crate::sampling::{
    sample_at, token_logprobs, FinishReason, SamplingError, SamplingParams, StopCriteria,
    TokenLogprobs,
};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub stop: StopCriteria,
    /// `Some(k)`: report each chosen token's logprob and the `k` most probable (k may be 0).
    pub logprobs: Option<usize>,
}

/// One generated token, as handed to the streaming callback.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedToken {
    /// 0 for the first generated token.
    pub index: usize,
    pub token: u32,
    pub logprobs: Option<TokenLogprobs>,
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub prompt_tokens: Vec<u32>,
    /// Leading prompt tokens the backend already held (not prefilled by this run).
    pub reused_tokens: usize,
    pub tokens: Vec<u32>,
    /// One entry per generated token when the request asked for logprobs.
    pub logprobs: Option<Vec<TokenLogprobs>>,
    pub finish_reason: FinishReason,
    pub timing: Timing,
}

/// Wall time of the two phases. `prefill` ends with the first token's logits; `decode` covers
/// the forward passes of every later token (the first generated token costs no decode step).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    pub prefill: Duration,
    pub decode: Duration,
    /// Forward passes in `decode` (generated tokens - 1).
    pub decode_steps: usize,
}

impl Timing {
    pub fn prefill_tokens_per_s(&self, prompt_len: usize) -> f64 {
        prompt_len as f64 / self.prefill.as_secs_f64().max(1e-9)
    }

    pub fn decode_tokens_per_s(&self) -> f64 {
        self.decode_steps as f64 / self.decode.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("the prompt is empty: give at least one token")]
    EmptyPrompt,
    #[error(
        "the {prompt}-token prompt plus --max-tokens {max_tokens} exceed the model's \
         {context}-token context"
    )]
    ContextTooSmall {
        prompt: usize,
        max_tokens: usize,
        context: usize,
    },
    #[error(
        "cannot reuse {reused} held tokens: the backend holds {held}, the prompt has {prompt}"
    )]
    BadReuse {
        reused: usize,
        held: usize,
        prompt: usize,
    },
    #[error("invalid sampling parameters")]
    Params(#[source] SamplingError),
    #[error("prefill of the {prompt}-token prompt on {device}")]
    Prefill {
        prompt: usize,
        device: &'static str,
        #[source]
        source: EngineError,
    },
    #[error("decode step {step} on {device}")]
    Decode {
        step: usize,
        device: &'static str,
        #[source]
        source: EngineError,
    },
    #[error("sampling generated token {step}")]
    Sampling {
        step: usize,
        #[source]
        source: SamplingError,
    },
    #[error("streaming generated token {step}")]
    Output {
        step: usize,
        #[source]
        source: io::Error,
    },
}

/// Runs `request` on `backend` from an empty sequence (the backend is reset first), calling
/// `on_token` once per generated token, in order, before the next forward pass. An error from
/// `on_token` (e.g. a closed pipe) stops generation.
pub fn generate(
    backend: &mut dyn Backend,
    request: &GenerateRequest,
    on_token: &mut dyn FnMut(&GeneratedToken) -> io::Result<()>,
) -> Result<Generation, GenerateError> {
    if request.prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    backend.reset();
    generate_after(backend, 0, request, on_token)
}

/// Like [`generate`], but the backend already holds the first `reused` prompt tokens (a chat's
/// earlier turns, when the new prompt extends them): only the rest is prefilled. The caller
/// vouches that the held tokens are `prompt[..reused]`; `reused` must be what the backend holds
/// and shorter than the prompt. After a run the backend holds the prompt and every generated
/// token but the last (which was sampled, never run).
pub fn generate_after(
    backend: &mut dyn Backend,
    reused: usize,
    request: &GenerateRequest,
    on_token: &mut dyn FnMut(&GeneratedToken) -> io::Result<()>,
) -> Result<Generation, GenerateError> {
    let prompt = &request.prompt;
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    if reused != backend.len() || reused >= prompt.len() {
        return Err(GenerateError::BadReuse { reused, held: backend.len(), prompt: prompt.len() });
    }
    let max_tokens = request.stop.max_tokens();
    let context = backend.config().max_context;
    // As vLLM: the whole sequence must fit, so a run never fails half-way for lack of room.
    if prompt.len() + max_tokens > context {
        return Err(GenerateError::ContextTooSmall { prompt: prompt.len(), max_tokens, context });
    }
    request.params.validate().map_err(GenerateError::Params)?;
    let device = backend.device();

    // Without logprobs the backend may sample where the logits are (on the GPU); with them the
    // logits come back and are sampled and reported here.
    let mut timing = Timing::default();
    let mut tokens = Vec::with_capacity(max_tokens);
    let mut all_logprobs = request.logprobs.map(|_| Vec::with_capacity(max_tokens));
    let mut input = prompt[reused..].to_vec();
    let finish_reason = loop {
        let step = tokens.len();
        let t = Instant::now();
        let forward_error = |source: EngineError| match source {
            EngineError::Sampling(source) => GenerateError::Sampling { step, source },
            source if step == 0 => GenerateError::Prefill { prompt: prompt.len() - reused, device, source },
            source => GenerateError::Decode { step, device, source },
        };
        let (token, logprobs) = match request.logprobs {
            None => (backend.forward_sampled(&input, &request.params, step as u64).map_err(forward_error)?, None),
            Some(k) => {
                let logits = backend.forward(&input).map_err(forward_error)?;
                let sampling = |source| GenerateError::Sampling { step, source };
                let token = sample_at(&request.params, &logits, step as u64).map_err(sampling)?;
                (token, Some(token_logprobs(&logits, token, k).map_err(sampling)?))
            }
        };
        if step == 0 {
            timing.prefill = t.elapsed();
        } else {
            timing.decode += t.elapsed();
            timing.decode_steps += 1;
        }
        tokens.push(token);
        let generated = GeneratedToken { index: step, token, logprobs };
        on_token(&generated).map_err(|source| GenerateError::Output { step, source })?;
        if let (Some(all), Some(lp)) = (all_logprobs.as_mut(), generated.logprobs) {
            all.push(lp);
        }
        if let Some(reason) = request.stop.check(token, tokens.len()) {
            break reason;
        }
        input = vec![token];
    };

    Ok(Generation {
        prompt_tokens: prompt.clone(),
        reused_tokens: reused,
        tokens,
        logprobs: all_logprobs,
        finish_reason,
        timing,
    })
}

#[cfg(test)]
mod tests;
