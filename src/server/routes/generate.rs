//! What both generation endpoints do around the engine: read the body within its limit, check
//! the model name, size `max_tokens`, submit, and map how a request ended to the API's terms.

use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};

use super::AppState;
use crate::scheduler::{FinishReason, Request, RequestError};
use crate::server::choices::{ChoiceEvent, Choices};
use crate::server::engine_loop::GenEvent;
use crate::server::engine_handle::SubmitError;
use crate::server::error::ApiError;
use crate::server::output::OutputSpec;
use crate::server::params::{resolve_max_tokens, GenerationParams};
use crate::server::structured::compile;

/// The body, refused with 413 past `--max-body-bytes` (by its Content-Length before reading
/// any of it, or while reading when it has none).
pub async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<bytes::Bytes, ApiError> {
    let limit = state.config.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the server's limit of {limit} bytes (--max-body-bytes)"),
        )
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            source = s.source();
        }
        ApiError::bad_request(format!("could not read the request body: {e}"))
    })
}

pub fn check_model(state: &AppState, model: &str) -> Result<(), ApiError> {
    let served = state.model.name();
    if model == served {
        return Ok(());
    }
    Err(ApiError::new(StatusCode::NOT_FOUND, format!("the model `{model}` does not exist; this server serves `{served}`"))
        .with_code("model_not_found"))
}

/// For a whole (not streamed) answer: the next event of any choice, `None` once every choice
/// has finished, an error if the engine went away first.
pub async fn next_choice(choices: &mut Choices) -> Result<Option<(usize, GenEvent)>, ApiError> {
    match choices.next().await {
        Some(ChoiceEvent::Event(index, event)) => Ok(Some((index, event))),
        Some(ChoiceEvent::EngineGone) => Err(engine_gone()),
        None => Ok(None),
    }
}

/// Most choices one request may ask for (prompts x `n`).
pub const MAX_REQUEST_CHOICES: usize = 1024;

/// Refuses more than [`MAX_REQUEST_CHOICES`] choices (`prompts` x `n`).
pub fn check_choice_count(prompts: usize, n: usize) -> Result<(), ApiError> {
    let total = prompts.saturating_mul(n);
    if total > MAX_REQUEST_CHOICES {
        let why = format!("{prompts} prompts x n = {n} make {total} choices; at most {MAX_REQUEST_CHOICES} a request");
        return Err(ApiError::invalid_param("n", why));
    }
    Ok(())
}

/// Submits `n` choices of each prompt (choice `i` seeded with the seed + i, as vLLM does;
/// prompt `p`'s choice `i` is choice `p * n + i`); resolves once the engine has accepted them
/// all, or refused one (the others are then cancelled).
pub async fn start(
    state: &AppState,
    prompts: Vec<Vec<u32>>,
    params: &GenerationParams,
    logprobs: Option<usize>,
    output: OutputSpec,
    arrived: Instant,
) -> Result<Choices, ApiError> {
    check_choice_count(prompts.len(), params.n)?;
    let total = prompts.len() * params.n;
    let max_waiting = state.engine.info().max_waiting;
    if total > max_waiting {
        // Its choices queue as requests of their own: more than may wait could never start.
        let why = format!("n = {} choices exceed the {max_waiting} requests this server lets wait (--max-waiting)", total);
        return Err(ApiError::invalid_param("n", why));
    }
    let stop_token_ids = if params.ignore_eos { Vec::new() } else { state.model.stop_token_ids().to_vec() };
    // Compiled once; each choice starts from a copy of the fresh state.
    let grammar = match &params.constraint {
        Some(requested) => Some(compile(state.model.grammars(), requested.clone()).await?),
        None => None,
    };
    let mut requests = Vec::with_capacity(total);
    for prompt in prompts {
        if prompt.is_empty() {
            return Err(ApiError::bad_request("the prompt is empty"));
        }
        let max_tokens = resolve_max_tokens(params.max_tokens, prompt.len(), &state.engine.info().limits)?;
        let min_tokens = params.min_tokens;
        let request = Request { prompt, sampling: params.sampling, penalties: params.penalties.clone(), max_tokens, min_tokens, stop_token_ids: stop_token_ids.clone(), logprobs, grammar: grammar.clone() };
        for i in 0..params.n {
            let mut request = request.clone();
            request.sampling.seed = params.sampling.seed.wrapping_add(i as u64);
            requests.push(request);
        }
    }
    // All at once, so that the engine takes them in the same loop turn.
    let submissions = requests.into_iter().map(|request| state.engine.submit(request, output.clone(), arrived));
    let mut generations = Vec::with_capacity(total);
    for submitted in futures_util::future::join_all(submissions).await {
        match submitted {
            Ok(generation) => generations.push(generation),
            Err(SubmitError::Rejected(e)) => return Err(rejection(e)),
            Err(SubmitError::Stopped) => return Err(ApiError::unavailable("the engine has stopped")),
        }
    }
    Ok(Choices::new(generations, params.n))
}

fn rejection(e: RequestError) -> ApiError {
    match e {
        RequestError::QueueFull { .. } => {
            return ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()).with_code("rate_limit_exceeded")
        }
        RequestError::BackendUnusable(_) => return ApiError::unavailable(e.to_string()),
        _ => {}
    }
    let too_long = matches!(e, RequestError::ContextTooLong { .. } | RequestError::TooLargeForCache { .. });
    let error = ApiError::bad_request(e.to_string());
    if too_long {
        error.with_code("context_length_exceeded")
    } else {
        error
    }
}

/// The API's `finish_reason`, or the error a request that did not finish normally gets.
pub fn finish_reason(reason: &FinishReason, tool_calls: bool) -> Result<&'static str, ApiError> {
    match reason {
        FinishReason::Stop if tool_calls => Ok("tool_calls"),
        FinishReason::Stop => Ok("stop"),
        FinishReason::Length => Ok("length"),
        FinishReason::Cancelled => {
            Err(ApiError::unavailable("the request was cancelled: the server is shutting down"))
        }
        FinishReason::Error(message) => Err(ApiError::internal(format!("generation failed: {message}"))),
    }
}

pub fn engine_gone() -> ApiError {
    ApiError::internal("the engine stopped before the request finished")
}
